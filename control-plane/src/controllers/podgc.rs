//! PodGC, as kube-controller-manager's: pods bound to a Node that no longer exists are deleted
//! (after a quarantine, in case the node is only being re-registered), and terminated pods
//! (Succeeded or Failed) beyond `--terminated-pod-gc-threshold` are deleted, oldest first.
//! Every pass starts from what is stored, so nothing is lost across restarts.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, DeleteOptions, ListOptions, object, resources};

/// The PodGC flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--terminated-pod-gc-threshold`: terminated pods kept; 0 keeps all.
    pub terminated_threshold: usize,
    /// How long a pod's node must have been missing before the pod is deleted (upstream's
    /// fixed 40 s quarantine).
    pub quarantine: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            terminated_threshold: 12_500,
            quarantine: Duration::from_secs(40),
        }
    }
}

impl Settings {
    /// How often pods are looked at: upstream's 20 s, sooner under a short quarantine.
    fn period(&self) -> Duration {
        (self.quarantine / 2).clamp(Duration::from_millis(100), Duration::from_secs(20))
    }
}

/// Runs PodGC until `stop`.
pub async fn run(api: Api, settings: Settings, stop: CancellationToken) {
    let mut missing: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(settings.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pass(&api, &settings, &mut missing).await {
            tracing::warn!(error = %e.message, "pod garbage collection failed");
        }
    }
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn node_name(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The pods to delete, by the rules above; `missing` remembers since when each pod's node has
/// been missing. Pure, for tests.
fn choose<'a, P: Borrow<Value>>(
    pods: &'a [P],
    nodes: &HashSet<String>,
    settings: &Settings,
    missing: &mut HashMap<String, Instant>,
    now: Instant,
) -> (Vec<&'a Value>, Vec<&'a Value>) {
    let mut orphaned = Vec::new();
    let mut still_missing = HashMap::new();
    for pod in pods.iter().map(Borrow::borrow) {
        let node = node_name(pod);
        if node.is_empty() || nodes.contains(node) {
            continue;
        }
        let uid = object::uid(pod).to_string();
        let since = missing.get(&uid).copied().unwrap_or(now);
        if now.duration_since(since) >= settings.quarantine {
            orphaned.push(pod);
        }
        still_missing.insert(uid, since);
    }
    *missing = still_missing;

    let mut terminated: Vec<&Value> = pods
        .iter()
        .map(Borrow::borrow)
        .filter(|p| matches!(phase(p), "Succeeded" | "Failed"))
        .collect();
    let excess = match settings.terminated_threshold {
        0 => 0,
        n => terminated.len().saturating_sub(n),
    };
    terminated.sort_by_key(|p| {
        (
            object::meta_str(p, "creationTimestamp").to_string(),
            object::name(p).to_string(),
        )
    });
    terminated.truncate(excess);
    (orphaned, terminated)
}

async fn force_delete(api: &Api, pod: &Value) -> Result<(), ApiError> {
    let opts = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: Some(object::uid(pod).to_string()),
        ..Default::default()
    };
    match api
        .delete(
            resources::core("pods"),
            Some(object::namespace(pod)),
            object::name(pod),
            &opts,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn pass(
    api: &Api,
    settings: &Settings,
    missing: &mut HashMap<String, Instant>,
) -> Result<(), ApiError> {
    let nodes_res = resources::core("nodes");
    let nodes: HashSet<String> = api
        .list(nodes_res, None, &ListOptions::default())?
        .items
        .iter()
        .map(|n| object::name(n).to_string())
        .collect();
    // Only the candidates, chosen from the cache's index without decoding the others: pods
    // bound to a node that is not there, and terminated pods.
    let pods = api.list_shared(resources::core("pods"), None, |i| {
        let node = i.field("spec.nodeName");
        (!node.is_empty() && !nodes.contains(node))
            || matches!(i.field("status.phase"), "Succeeded" | "Failed")
    })?;
    let (orphaned, terminated) = choose(&pods, &nodes, settings, missing, Instant::now());
    for pod in orphaned {
        // The node may have come back since the list.
        match api.get(nodes_res, None, node_name(pod)) {
            Ok(_) => continue,
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        tracing::info!(pod = %format!("{}/{}", object::namespace(pod), object::name(pod)),
            node = node_name(pod), "deleting a pod bound to a node that no longer exists");
        force_delete(api, pod).await?;
    }
    for pod in terminated {
        tracing::info!(pod = %format!("{}/{}", object::namespace(pod), object::name(pod)),
            "deleting a terminated pod beyond --terminated-pod-gc-threshold");
        force_delete(api, pod).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, phase: &str, created: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": name,
                            "creationTimestamp": created},
               "spec": {"nodeName": node}, "status": {"phase": phase}})
    }

    fn names(pods: &[&Value]) -> Vec<String> {
        pods.iter().map(|p| object::name(p).to_string()).collect()
    }

    #[test]
    fn pods_of_a_missing_node_go_after_the_quarantine() {
        let settings = Settings {
            terminated_threshold: 0,
            quarantine: Duration::from_secs(40),
        };
        let pods = [
            pod("on-gone", "gone", "Running", "2026-01-01T00:00:00Z"),
            pod("on-live", "live", "Running", "2026-01-01T00:00:00Z"),
            pod("unbound", "", "Pending", "2026-01-01T00:00:00Z"),
        ];
        let nodes: HashSet<String> = ["live".to_string()].into();
        let mut missing = HashMap::new();
        let t0 = Instant::now();
        let (orphaned, _) = choose(&pods, &nodes, &settings, &mut missing, t0);
        assert!(orphaned.is_empty(), "quarantined first");
        let (orphaned, _) = choose(
            &pods,
            &nodes,
            &settings,
            &mut missing,
            t0 + Duration::from_secs(39),
        );
        assert!(orphaned.is_empty());
        let (orphaned, _) = choose(
            &pods,
            &nodes,
            &settings,
            &mut missing,
            t0 + Duration::from_secs(40),
        );
        assert_eq!(names(&orphaned), ["on-gone"]);

        // A node that comes back ends the quarantine; missing again, it starts over.
        let back: HashSet<String> = ["live".to_string(), "gone".to_string()].into();
        choose(
            &pods,
            &back,
            &settings,
            &mut missing,
            t0 + Duration::from_secs(41),
        );
        let (orphaned, _) = choose(
            &pods,
            &nodes,
            &settings,
            &mut missing,
            t0 + Duration::from_secs(42),
        );
        assert!(orphaned.is_empty());
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_oldest_first() {
        let settings = Settings {
            terminated_threshold: 2,
            quarantine: Duration::from_secs(40),
        };
        let pods = [
            pod("new-done", "n", "Succeeded", "2026-01-03T00:00:00Z"),
            pod("old-failed", "n", "Failed", "2026-01-01T00:00:00Z"),
            pod("running", "n", "Running", "2025-01-01T00:00:00Z"),
            pod("mid-done", "n", "Succeeded", "2026-01-02T00:00:00Z"),
        ];
        let nodes: HashSet<String> = ["n".to_string()].into();
        let mut missing = HashMap::new();
        let (_, terminated) = choose(&pods, &nodes, &settings, &mut missing, Instant::now());
        assert_eq!(names(&terminated), ["old-failed"]);
        let keep_all = Settings {
            terminated_threshold: 0,
            ..settings
        };
        let (_, terminated) = choose(&pods, &nodes, &keep_all, &mut missing, Instant::now());
        assert!(terminated.is_empty());
    }
}
