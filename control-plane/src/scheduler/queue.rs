//! The scheduling queue: pods to place now, and pods that did not fit, which wait for a
//! cluster change that could help (a node added or changed, a pod gone) and for their backoff
//! (1 s doubling to 10 s per failed attempt, as kube-scheduler's defaults). A pod nothing
//! helps is tried again after five minutes all the same.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

struct Waiting {
    retry_at: Instant,
    since: Instant,
    /// A cluster change since the attempt that failed.
    moved: bool,
}

/// Pods by `namespace/name`.
#[derive(Default)]
pub struct Queue {
    active: VecDeque<String>,
    queued: HashSet<String>,
    waiting: HashMap<String, Waiting>,
    /// Failed attempts and the last failure message, until the pod is placed or gone.
    failures: HashMap<String, (u32, String)>,
}

impl Queue {
    /// Queues a pod to be placed, unless it is queued or waiting already.
    pub fn push(&mut self, key: &str) {
        if !self.queued.contains(key) && !self.waiting.contains_key(key) {
            self.queued.insert(key.to_string());
            self.active.push_back(key.to_string());
        }
    }

    /// The next pod to place.
    pub fn pop(&mut self) -> Option<String> {
        let key = self.active.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Records a failed attempt; true when `message` differs from the last failure's (so the
    /// pod's condition and events are updated only when the reason changes).
    pub fn failed(&mut self, key: &str, message: &str, now: Instant) -> bool {
        let entry = self
            .failures
            .entry(key.to_string())
            .or_insert_with(|| (0, String::new()));
        entry.0 += 1;
        let backoff = INITIAL_BACKOFF
            .saturating_mul(1 << entry.0.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        let changed = entry.1 != message;
        entry.1 = message.to_string();
        self.waiting.insert(
            key.to_string(),
            Waiting {
                retry_at: now + backoff,
                since: now,
                moved: false,
            },
        );
        changed
    }

    /// Tries a pod again after its backoff (its binding failed for a passing reason).
    pub fn retry_later(&mut self, key: &str, now: Instant) {
        let message = self
            .failures
            .get(key)
            .map(|f| f.1.clone())
            .unwrap_or_default();
        self.failed(key, &message, now);
        if let Some(w) = self.waiting.get_mut(key) {
            w.moved = true;
        }
    }

    /// A cluster change that could let waiting pods fit.
    pub fn cluster_changed(&mut self) {
        for w in self.waiting.values_mut() {
            w.moved = true;
        }
    }

    /// Moves the waiting pods that are due to the active queue.
    pub fn release_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, w)| {
                (w.moved && w.retry_at <= now) || now.duration_since(w.since) >= MAX_UNSCHEDULABLE
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.waiting.remove(&key);
            self.push(&key);
        }
    }

    /// When the next waiting pod becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting
            .values()
            .map(|w| {
                if w.moved {
                    w.retry_at
                } else {
                    w.since + MAX_UNSCHEDULABLE
                }
            })
            .min()
    }

    /// Forgets a pod that was placed or is gone.
    pub fn done(&mut self, key: &str) {
        self.waiting.remove(key);
        self.failures.remove(key);
    }

    /// Number of pods waiting after a failed attempt.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unschedulable_pods_wait_for_a_change_and_their_backoff() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.push("ns/a");
        q.push("ns/a");
        assert_eq!(q.pop().as_deref(), Some("ns/a"));
        assert!(q.pop().is_none());
        assert!(q.failed("ns/a", "0/1 nodes are available", t0));
        // Nothing changed: it waits, even after its backoff.
        q.release_due(t0 + Duration::from_secs(2));
        assert!(q.is_empty());
        assert_eq!(q.next_due(), Some(t0 + MAX_UNSCHEDULABLE));
        // A change, but the 1 s backoff is not over yet.
        q.cluster_changed();
        q.release_due(t0 + Duration::from_millis(500));
        assert!(q.is_empty());
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(1)));
        q.release_due(t0 + Duration::from_secs(1));
        assert_eq!(q.pop().as_deref(), Some("ns/a"));
        // The second failure doubles the backoff; the same message is not news.
        assert!(!q.failed("ns/a", "0/1 nodes are available", t0));
        q.cluster_changed();
        q.release_due(t0 + Duration::from_millis(1500));
        assert!(q.is_empty());
        q.release_due(t0 + Duration::from_secs(2));
        assert_eq!(q.pop().as_deref(), Some("ns/a"));
        // Backoff stops growing at 10 s.
        for _ in 0..10 {
            q.failed("ns/a", "x", t0);
        }
        q.cluster_changed();
        assert_eq!(q.next_due(), Some(t0 + MAX_BACKOFF));
        // Without any change it is retried after five minutes.
        let mut q = Queue::default();
        q.failed("ns/b", "x", t0);
        q.release_due(t0 + MAX_UNSCHEDULABLE);
        assert_eq!(q.pop().as_deref(), Some("ns/b"));
        q.done("ns/b");
        assert_eq!(q.waiting(), 0);
    }
}
