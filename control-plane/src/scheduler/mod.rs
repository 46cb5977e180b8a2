//! The scheduler: places pods that name no node on one that fits, driven by the store's watch
//! streams of nodes and pods (nothing polls), binding through the API layer (`pods/binding`).
//!
//! - `cache` holds nodes and pods parsed from the watches, each node's bound requests kept
//!   current, and the pods it has bound but not yet seen confirmed ("assumed", so the next pod
//!   already counts them).
//! - `filters` decides where a pod fits and scores those nodes, as kube-scheduler's default
//!   plugins do, with configurable weights and strategy ([`Scoring`]).
//! - `queue` orders the attempts and holds pods that fit nowhere until a cluster change and
//!   their backoff let them try again.
//!
//! Bindings are written concurrently (each is acknowledged only when durable, so writing them
//! one at a time would cap placement at the store's flush rate) while placement goes on
//! against the assumed state. A pod that fits nowhere gets a `FailedScheduling` event and a
//! PodScheduled=False condition that count the reasons as Kubernetes does.

mod cache;
mod filters;
mod queue;

use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use filters::{Scoring, Strategy, Weights, own_architecture};

use crate::api::{
    Api, ApiError, ListOptions, PatchType, Target, WatchEvent, WriteOptions, object, resources,
};
use cache::Cache;
use queue::Queue;

/// The scheduler name this scheduler answers to.
pub const NAME: &str = "default-scheduler";

/// Bindings written at once. Each waits for a durable flush, which the store shares among all
/// writes that arrive meanwhile, so the more in flight, the fewer flushes per binding.
const MAX_BINDING: usize = 1024;
/// Pods placed between looks at the watch streams.
const BATCH: usize = 64;

/// Runs with the default scoring until `stop`.
pub async fn run(api: Api, stop: CancellationToken) {
    run_with(api, Scoring::default(), stop).await;
}

/// Runs with the given scoring until `stop`.
pub async fn run_with(api: Api, scoring: Scoring, stop: CancellationToken) {
    loop {
        let watch = |plural| {
            api.watch(
                resources::core(plural),
                None,
                &ListOptions::default(),
                None,
                false,
            )
        };
        let (Ok(nodes), Ok(pods)) = (watch("nodes"), watch("pods")) else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.cancelled() => return,
            }
        };
        let events = futures::stream::select(nodes.map(|e| (true, e)), pods.map(|e| (false, e)));
        let mut scheduler = Scheduler {
            api: api.clone(),
            scoring: scoring.clone(),
            cache: Cache::default(),
            queue: Queue::default(),
            start: 0,
            binding: FuturesUnordered::new(),
        };
        scheduler.serve(events, &stop).await;
        // The watches ended (compaction or shutdown): start over from a fresh list.
        if stop.is_cancelled() {
            return;
        }
    }
}

type Bound = (String, String, Result<(), ApiError>);

struct Scheduler {
    api: Api,
    scoring: Scoring,
    cache: Cache,
    queue: Queue,
    /// Where the next search over the nodes starts.
    start: usize,
    binding: FuturesUnordered<futures::future::BoxFuture<'static, Bound>>,
}

impl Scheduler {
    async fn serve(
        &mut self,
        mut events: impl futures::Stream<Item = (bool, WatchEvent)> + Unpin,
        stop: &CancellationToken,
    ) {
        loop {
            let due = self.queue.next_due();
            let can_place = !self.queue.is_empty() && self.binding.len() < MAX_BINDING;
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => {
                    let Some((is_node, event)) = e else { return };
                    self.observe(is_node, event);
                    // Take whatever else is ready, so a burst is placed against one view.
                    while let Some(Some((is_node, event))) = events.next().now_or_never() {
                        self.observe(is_node, event);
                    }
                }
                Some((key, node, result)) = self.binding.next(), if !self.binding.is_empty() => {
                    self.bound(&key, &node, result);
                }
                _ = sleep_until(due), if due.is_some() => {
                    self.queue.release_due(Instant::now());
                }
                _ = std::future::ready(()), if can_place => {
                    for _ in 0..BATCH {
                        if self.binding.len() >= MAX_BINDING {
                            break;
                        }
                        let Some(key) = self.queue.pop() else { break };
                        self.schedule(&key);
                    }
                }
            }
        }
    }

    fn observe(&mut self, is_node: bool, event: WatchEvent) {
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) if is_node => {
                self.cache.set_node(&o);
                self.queue.cluster_changed();
            }
            WatchEvent::Deleted(o) if is_node => self.cache.remove_node(object::name(&o)),
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let key = key_of(&o);
                let change = self.cache.set_pod(&key, o);
                if change.pending {
                    self.queue.push(&key);
                } else {
                    self.queue.done(&key);
                }
                if change.freed {
                    self.queue.cluster_changed();
                }
            }
            WatchEvent::Deleted(o) => {
                let key = key_of(&o);
                self.cache.remove_pod(&key);
                self.queue.done(&key);
                self.queue.cluster_changed();
            }
            WatchEvent::Bookmark { .. } | WatchEvent::Error(_) => {}
        }
    }

    /// Places one pod: starts its binding, or records why it fits nowhere.
    fn schedule(&mut self, key: &str) {
        let Some(pod) = self.cache.pending(key) else {
            return;
        };
        match filters::place(pod, &self.cache, &self.scoring, &mut self.start) {
            Ok(node) => {
                let pod = pod.clone();
                self.cache.assume(key, &node);
                let (api, key) = (self.api.clone(), key.to_string());
                self.binding.push(Box::pin(async move {
                    let result = bind(&api, &pod, &node).await;
                    (key, node, result)
                }));
            }
            Err(message) => {
                if self.queue.failed(key, &message, Instant::now()) {
                    let (api, pod) = (self.api.clone(), pod.clone());
                    tokio::spawn(async move { unschedulable(&api, &pod, &message).await });
                }
            }
        }
    }

    fn bound(&mut self, key: &str, node: &str, result: Result<(), ApiError>) {
        match result {
            Ok(()) => self.queue.done(key),
            Err(e) => {
                tracing::debug!(pod = %key, %node, error = %e.message, "binding failed");
                // The watch tells what became of the pod; if it still waits, try again later.
                if self.cache.forget(key) {
                    self.queue.retry_later(key, Instant::now());
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

fn key_of(pod: &Value) -> String {
    format!("{}/{}", object::namespace(pod), object::name(pod))
}

/// Writes the binding, then the `Scheduled` event.
async fn bind(api: &Api, pod: &Value, node: &str) -> Result<(), ApiError> {
    let (ns, name) = (object::namespace(pod), object::name(pod));
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                         "metadata": {"name": name, "namespace": ns},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    api.bind(ns, name, &binding).await?;
    // Queued for the event writer: it does not hold up the next binding.
    let message = format!("Successfully assigned {ns}/{name} to {node}");
    event(api, pod, "Normal", "Scheduled", &message).await;
    Ok(())
}

/// Says why a pod fits nowhere: a `FailedScheduling` event and PodScheduled=False.
async fn unschedulable(api: &Api, pod: &Value, message: &str) {
    event(api, pod, "Warning", "FailedScheduling", message).await;
    let status = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }]}});
    let _ = api
        .patch(
            resources::core("pods"),
            Some(object::namespace(pod)),
            object::name(pod),
            PatchType::Strategic,
            status,
            Target::Status,
            &WriteOptions::default(),
        )
        .await;
}

async fn event(api: &Api, pod: &Value, kind: &str, reason: &str, message: &str) {
    let involved = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": object::name(pod), "namespace": object::namespace(pod),
        "uid": pod.pointer("/metadata/uid")}});
    crate::events::record(api, &involved, kind, reason, message, NAME).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::{Config, DeleteOptions};
    use crate::store::{SledConfig, SledStore};

    async fn node(api: &Api, name: &str, cpu: &str, taints: Value) {
        let nodes = resources::core("nodes");
        let obj = json!({"metadata": {"name": name}, "spec": {"taints": taints}});
        api.create(nodes, None, obj, &WriteOptions::default())
            .await
            .unwrap();
        let status = json!({"status": {
            "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}});
        api.patch(
            nodes,
            None,
            name,
            PatchType::Merge,
            status,
            Target::Status,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }

    async fn pod(api: &Api, name: &str, cpu: &str, scheduler: &str) {
        let obj = json!({"metadata": {"name": name}, "spec": {"schedulerName": scheduler,
            "containers": [{"name": "c", "image": "hello:1.0", "resources": {"requests": {"cpu": cpu}}}]}});
        api.create(
            resources::core("pods"),
            Some("default"),
            obj,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }

    /// Waits (up to 20 s) until `f` holds for the pod.
    async fn until(api: &Api, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..400 {
            let pod = api
                .get(resources::core("pods"), Some("default"), name)
                .unwrap();
            if f(&pod) {
                return pod;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name}: {what}");
    }

    fn scheduled_message(pod: &Value) -> &str {
        pod.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled")
            .and_then(|c| c["message"].as_str())
            .unwrap_or("")
    }

    fn node_of(pod: &Value) -> &str {
        pod.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    #[tokio::test]
    async fn unschedulable_pods_say_why_and_are_retried_when_the_cluster_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
        let api = Api::new(Arc::new(store), Config::default());
        api.bootstrap().await.unwrap();
        let stop = CancellationToken::new();
        let scheduler = tokio::spawn(run(api.clone(), stop.clone()));

        node(
            &api,
            "n1",
            "1",
            json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        )
        .await;
        pod(&api, "other", "100m", "someone-else").await;
        pod(&api, "big", "2", NAME).await;
        until(&api, "big", "an untolerated-taint message", |p| {
            scheduled_message(p)
                == "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: x}."
        })
        .await;
        crate::events::flushed(&api).await;
        let events = api
            .list(
                resources::core("events"),
                Some("default"),
                &ListOptions::default(),
            )
            .unwrap();
        assert!(
            events
                .items
                .iter()
                .any(|e| e["reason"] == "FailedScheduling"
                    && e["involvedObject"]["name"] == "big"
                    && e["type"] == "Warning"),
            "{:?}",
            events.items
        );

        // Removing the taint is a change: the pod is tried again and now lacks only cpu.
        let untaint = json!({"spec": {"taints": null}});
        api.patch(
            resources::core("nodes"),
            None,
            "n1",
            PatchType::Merge,
            untaint,
            Target::Main,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
        until(&api, "big", "an insufficient-cpu message", |p| {
            scheduled_message(p) == "0/1 nodes are available: 1 Insufficient cpu."
        })
        .await;

        // A node that fits arrives: the pod is bound to it.
        node(&api, "n2", "4", json!([])).await;
        until(&api, "big", "binding to n2", |p| node_of(p) == "n2").await;

        // A pod that fits only once another goes away.
        pod(&api, "second", "3", NAME).await;
        until(&api, "second", "an insufficient-cpu message", |p| {
            scheduled_message(p) == "0/2 nodes are available: 2 Insufficient cpu."
        })
        .await;
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        api.delete(resources::core("pods"), Some("default"), "big", &now)
            .await
            .unwrap();
        let second = until(&api, "second", "binding to n2", |p| node_of(p) == "n2").await;
        assert_eq!(scheduled_message(&second), "");

        // Pods for another scheduler are left alone.
        let other = api
            .get(resources::core("pods"), Some("default"), "other")
            .unwrap();
        assert_eq!(node_of(&other), "");
        stop.cancel();
        scheduler.await.unwrap();
    }
}
