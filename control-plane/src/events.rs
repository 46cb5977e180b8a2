//! Events: what the in-process components tell users about the objects they act on
//! (`kubectl describe` and `kubectl get events` show them).
//!
//! Recording follows client-go's event correlator (tools/record/events_cache.go):
//! - the same event again (same source, involved object, type, reason and message) is one
//!   Event whose `count` grows and whose `lastTimestamp` moves, not a new object;
//! - many similar events (differing only in message: [`MAX_SIMILAR`] distinct messages within
//!   [`SIMILAR_WINDOW`]) are combined into one Event "(combined from similar events): ...",
//!   counted the same way.
//!
//! The Event of a repeated event is found by name: the name is derived from what makes events
//! the same, so it is found again after a restart too. Events expire after `--event-ttl`
//! (see [`crate::controllers::event_ttl`]).
//!
//! Events are off the durable path of the work they describe, as client-go's broadcaster keeps
//! them: [`record`] only queues the event (at most [`MAX_QUEUED`] per API; beyond that they are
//! dropped and counted, as client-go's `DropIfChannelFull`), and one writer task per API
//! writes what is queued in the background, the same event queued again meanwhile counted on
//! the queued one, so a burst of it is one write.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::api::{Api, PatchType, Target, WeakApi, WriteOptions, object, resources};

/// Distinct messages of similar events before they are combined (client-go's maxEvents).
pub const MAX_SIMILAR: usize = 10;
/// The window in which similar events are counted (client-go's 600 s).
pub const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// Similar-event records kept (client-go's LRU size).
const MAX_RECORDS: usize = 4096;
/// Events queued for writing before more are dropped (client-go's maxQueuedEvents).
pub const MAX_QUEUED: usize = 1000;
/// Events written at once by the writer task.
const WRITERS: usize = 32;

/// Records an Event about `involved` (any namespaced object) from `component`: queues it for
/// the background writer and returns. An event that cannot be written (or finds the queue
/// full) is logged and otherwise ignored, as in Kubernetes.
pub async fn record(
    api: &Api,
    involved: &Value,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = object::namespace(involved);
    let involved_ref = json!({
        "apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
        "namespace": ns, "name": object::name(involved),
        "uid": involved.pointer("/metadata/uid"),
    });
    // What makes events similar, and with the message what makes them the same.
    let similar = format!("{component}\0{involved_ref}\0{kind}\0{reason}");
    let (key, message) = if combine(api, &similar, message) {
        (
            similar.clone(),
            format!("(combined from similar events): {message}"),
        )
    } else {
        (format!("{similar}\0{message}"), message.to_string())
    };
    let name = format!("{}.{:016x}", object::name(involved), fnv1a(&key));
    let ts = object::now();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved_ref,
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": ts, "lastTimestamp": ts,
        "source": {"component": component},
        "reportingComponent": component,
    });
    api.events().queue(api, ns, name, event);
}

/// Waits until every event queued so far is written (or given up on); for tests and shutdown.
pub async fn flushed(api: &Api) {
    let recorder = api.events();
    loop {
        let idle = recorder.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if !recorder.busy() {
            return;
        }
        idle.await;
    }
}

/// Events not yet written, per API, and the writer task's state.
#[derive(Default)]
pub(crate) struct Recorder {
    state: Mutex<Queue>,
    /// Something was queued.
    wake: tokio::sync::Notify,
    /// The writer found the queue empty.
    idle: tokio::sync::Notify,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    /// By namespace and name: each Event as first queued, its `count` the occurrences queued
    /// since.
    pending: HashMap<(String, String), Value>,
    /// Being written now.
    writing: usize,
    /// Whether the writer task runs.
    writer: bool,
}

impl Recorder {
    /// Events dropped because the queue was full, for `/metrics`.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy(&self) -> bool {
        let q = self.lock();
        !q.pending.is_empty() || q.writing > 0
    }

    fn queue(self: &Arc<Self>, api: &Api, ns: &str, name: String, event: Value) {
        let mut q = self.lock();
        let key = (ns.to_string(), name);
        if let Some(queued) = q.pending.get_mut(&key) {
            let count = queued["count"].as_i64().unwrap_or(1).saturating_add(1);
            queued["count"] = json!(count);
            queued["lastTimestamp"] = event["lastTimestamp"].clone();
            queued["message"] = event["message"].clone();
            return;
        }
        if q.pending.len() >= MAX_QUEUED {
            drop(q);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(event = %key.1, "event queue full; event dropped");
            return;
        }
        q.pending.insert(key, event);
        if !std::mem::replace(&mut q.writer, true) {
            tokio::spawn(writer(self.clone(), api.downgrade()));
        }
        drop(q);
        self.wake.notify_one();
    }
}

/// Writes what is queued, [`WRITERS`] at once, until the API is gone.
async fn writer(recorder: Arc<Recorder>, api: WeakApi) {
    loop {
        let batch = {
            let mut q = recorder.lock();
            let batch = std::mem::take(&mut q.pending);
            q.writing = batch.len();
            batch
        };
        if batch.is_empty() {
            recorder.idle.notify_waiters();
            tokio::select! {
                _ = recorder.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if api.upgrade().is_none() {
                        recorder.lock().writer = false;
                        return;
                    }
                }
            }
            continue;
        }
        let Some(api) = api.upgrade() else {
            recorder.lock().writer = false;
            return;
        };
        futures::stream::iter(batch)
            .for_each_concurrent(WRITERS, |((ns, name), event)| {
                let api = &api;
                async move {
                    if let Err(e) = write(api, &ns, &name, event).await {
                        tracing::debug!(event = %name, error = %e.message, "cannot record event");
                    }
                }
            })
            .await;
        recorder.lock().writing = 0;
    }
}

/// Creates the Event, or counts one more occurrence on the one already there.
async fn write(api: &Api, ns: &str, name: &str, event: Value) -> crate::api::Result<()> {
    let events = resources::core("events");
    for _ in 0..4 {
        match api.get(events, Some(ns), name) {
            Ok(cur) => {
                let queued = event["count"].as_i64().unwrap_or(1);
                let count = cur["count"].as_i64().unwrap_or(1).saturating_add(queued);
                let patch = json!({
                    "metadata": {"resourceVersion": object::meta_str(&cur, "resourceVersion")},
                    "count": count, "lastTimestamp": event["lastTimestamp"],
                    "message": event["message"],
                });
                let written = api
                    .patch(
                        events,
                        Some(ns),
                        name,
                        PatchType::Merge,
                        patch,
                        Target::Main,
                        &WriteOptions::default(),
                    )
                    .await;
                match written {
                    Ok(_) => return Ok(()),
                    // Counted by someone else meanwhile, or expired: look again.
                    Err(e) if e.code == 409 || e.code == 404 => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.code == 404 => {
                match api
                    .create(events, Some(ns), event.clone(), &WriteOptions::default())
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Distinct messages seen per similar-events key, per store (tests run several in one
/// process), within the window.
type Similar = HashMap<(usize, String), (Instant, HashSet<String>)>;

/// Notes `message` under `similar`; true once the events are to be combined.
fn combine(api: &Api, similar: &str, message: &str) -> bool {
    static SEEN: OnceLock<Mutex<Similar>> = OnceLock::new();
    let store = Arc::as_ptr(api.store()).cast::<()>() as usize;
    let now = Instant::now();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if seen.len() >= MAX_RECORDS {
        seen.retain(|_, (at, _)| now.duration_since(*at) < SIMILAR_WINDOW);
        if seen.len() >= MAX_RECORDS {
            seen.clear();
        }
    }
    let entry = seen
        .entry((store, similar.to_string()))
        .or_insert_with(|| (now, HashSet::new()));
    if now.duration_since(entry.0) >= SIMILAR_WINDOW {
        *entry = (now, HashSet::new());
    }
    entry.0 = now;
    if entry.1.len() < MAX_SIMILAR {
        entry.1.insert(message.to_string());
    }
    entry.1.len() >= MAX_SIMILAR
}

/// FNV-1a: a stable hash (names must come out the same after a restart and an upgrade).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::api::{Config, ListOptions};

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    async fn events(api: &Api) -> Vec<Value> {
        flushed(api).await;
        api.list(
            resources::core("events"),
            Some("default"),
            &ListOptions::default(),
        )
        .unwrap()
        .items
    }

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}})
    }

    #[tokio::test]
    async fn the_same_event_again_is_counted_on_one_event() {
        let (api, _dir) = api().await;
        for _ in 0..3 {
            record(
                &api,
                &pod("a"),
                "Warning",
                "BackOff",
                "restarting",
                "kubelet",
            )
            .await;
        }
        record(&api, &pod("a"), "Normal", "Pulled", "pulled", "kubelet").await;
        record(
            &api,
            &pod("b"),
            "Warning",
            "BackOff",
            "restarting",
            "kubelet",
        )
        .await;
        let all = events(&api).await;
        assert_eq!(all.len(), 3, "{all:?}");
        let backoff = all
            .iter()
            .find(|e| e["reason"] == "BackOff" && e["involvedObject"]["name"] == "a")
            .unwrap();
        assert_eq!(backoff["count"], 3);
        assert!(backoff["lastTimestamp"].as_str() >= backoff["firstTimestamp"].as_str());
        assert_eq!(backoff["message"], "restarting");
    }

    #[tokio::test]
    async fn many_similar_events_are_combined() {
        let (api, _dir) = api().await;
        for i in 0..15 {
            let msg = format!("failed to pull attempt {i}");
            record(&api, &pod("a"), "Warning", "Failed", &msg, "kubelet").await;
        }
        let all = events(&api).await;
        // Nine distinct ones, then one combined Event counting the rest.
        assert_eq!(all.len(), MAX_SIMILAR, "{all:?}");
        let combined = all
            .iter()
            .find(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("(combined from similar events): ")
            })
            .expect("a combined event");
        assert_eq!(combined["count"], 15 - (MAX_SIMILAR - 1));
        assert_eq!(
            combined["message"],
            "(combined from similar events): failed to pull attempt 14"
        );
    }

    #[tokio::test]
    async fn a_burst_of_the_same_event_is_one_write() {
        let (api, _dir) = api().await;
        let before = api.revision();
        // Queued without waiting for a write, so the burst meets one queued Event.
        for _ in 0..200 {
            record(&api, &pod("a"), "Warning", "BackOff", "again", "kubelet").await;
        }
        let all = events(&api).await;
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0]["count"], 200);
        assert!(
            api.revision() - before <= 2,
            "{} writes for one burst",
            api.revision() - before
        );
        // Counted onto the stored Event afterwards.
        record(&api, &pod("a"), "Warning", "BackOff", "again", "kubelet").await;
        assert_eq!(events(&api).await[0]["count"], 201);
    }

    #[tokio::test]
    async fn events_beyond_the_queue_are_dropped_and_counted_not_waited_for() {
        let (api, _dir) = api().await;
        // On this single-threaded runtime the writer cannot run before the loop yields, so the
        // queue fills: recording never waits for the store.
        for i in 0..MAX_QUEUED + 500 {
            record(
                &api,
                &pod(&format!("p{i}")),
                "Normal",
                "Started",
                "started",
                "kubelet",
            )
            .await;
        }
        assert_eq!(api.events_dropped(), 500);
        assert_eq!(events(&api).await.len(), MAX_QUEUED);
    }
}
