//! The scheduler: places pods that name no node on one that fits, driven by the store's watch
//! streams of nodes and pods (nothing polls), binding through the API layer.
//!
//! This first version filters on node readiness and `unschedulable`, taints against
//! tolerations, resource requests (cpu, memory, pod count) against what is allocatable minus
//! what is bound, `nodeSelector`, required node affinity, required pod affinity and
//! anti-affinity by topology key, and the runtime a pod's `runtimeClassName` needs; it scores the least allocated node, preferred node affinity,
//! untolerated PreferNoSchedule taints and module locality (weighted as kube-scheduler does). A pod that fits nowhere gets a `FailedScheduling` event and a PodScheduled=False
//! condition that count the reasons as Kubernetes does, and is tried again when a node changes
//! or a pod goes away.

mod filters;

use std::collections::{BTreeMap, HashMap};

use filters::{NodeInfo, Resources};

use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{
    Api, ListOptions, PatchType, Target, WatchEvent, WriteOptions, object, resources,
};

/// The scheduler name this scheduler answers to.
pub const NAME: &str = "default-scheduler";

/// Node and pod state as the watches last reported it, with each node's bound requests kept
/// current as pods come and go (placing a pod costs one pass over the nodes, not the pods).
#[derive(Default)]
struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    /// Every pod, by `namespace/name`.
    pods: HashMap<String, Value>,
    /// Pods that did not fit; tried again when the cluster changes.
    unschedulable: BTreeMap<String, String>,
    /// Pods with required anti-affinity terms, which every newcomer must respect.
    guarded: std::collections::HashSet<String>,
}

impl Cache {
    /// Moves a pod's requests off its old node and onto its new one.
    fn account(&mut self, old: Option<&Value>, new: Option<&Value>) {
        for (pod, sign) in [(old, -1), (new, 1)] {
            let Some(pod) = pod else { continue };
            if let Some(info) = filters::holds_resources(pod).and_then(|n| self.nodes.get_mut(n)) {
                info.used.account(&filters::requests(pod), sign);
            }
        }
    }

    fn set_node(&mut self, node: Value) {
        let name = object::name(&node).to_string();
        match self.nodes.get_mut(&name) {
            Some(info) => info.node = node,
            None => {
                let mut used = Resources::default();
                for pod in self.pods.values() {
                    if filters::holds_resources(pod) == Some(name.as_str()) {
                        used.account(&filters::requests(pod), 1);
                    }
                }
                self.nodes.insert(name, NodeInfo { node, used });
            }
        }
    }

    fn set_pod(&mut self, key: String, pod: Value) {
        let old = self.pods.remove(&key);
        self.account(old.as_ref(), Some(&pod));
        if filters::anti_affinity_terms(&pod).next().is_some() {
            self.guarded.insert(key.clone());
        } else {
            self.guarded.remove(&key);
        }
        self.pods.insert(key, pod);
    }

    fn remove_pod(&mut self, key: &str) {
        let old = self.pods.remove(key);
        self.account(old.as_ref(), None);
        self.guarded.remove(key);
    }
}

/// Runs until `stop`.
pub async fn run(api: Api, stop: CancellationToken) {
    loop {
        let nodes = api.watch(
            resources::core("nodes"),
            None,
            &ListOptions::default(),
            None,
            false,
        );
        let pods = api.watch(
            resources::core("pods"),
            None,
            &ListOptions::default(),
            None,
            false,
        );
        let (Ok(nodes), Ok(pods)) = (nodes, pods) else {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        };
        let mut events =
            futures::stream::select(nodes.map(|e| (true, e)), pods.map(|e| (false, e)));
        let mut cache = Cache::default();
        loop {
            let (is_node, event) = tokio::select! {
                e = events.next() => match e {
                    Some(e) => e,
                    None => break,
                },
                _ = stop.cancelled() => return,
            };
            let mut retry = false;
            let mut fresh = Vec::new();
            let mut handle = |is_node: bool, event: WatchEvent, cache: &mut Cache| match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) if is_node => {
                    retry = true;
                    cache.set_node(o);
                }
                WatchEvent::Deleted(o) if is_node => {
                    cache.nodes.remove(object::name(&o));
                }
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    let key = format!("{}/{}", object::namespace(&o), object::name(&o));
                    if wants_scheduling(&o) && !cache.unschedulable.contains_key(&key) {
                        fresh.push(key.clone());
                    }
                    cache.set_pod(key, o);
                }
                WatchEvent::Deleted(o) => {
                    let key = format!("{}/{}", object::namespace(&o), object::name(&o));
                    cache.remove_pod(&key);
                    cache.unschedulable.remove(&key);
                    retry = true;
                }
                WatchEvent::Bookmark { .. } | WatchEvent::Error(_) => {}
            };
            handle(is_node, event, &mut cache);
            // Take whatever else is ready, so a burst is scheduled against one view.
            while let Some(Some((is_node, event))) = events.next().now_or_never() {
                handle(is_node, event, &mut cache);
            }
            let mut queue = fresh;
            if retry {
                queue.extend(cache.unschedulable.keys().cloned());
            }
            queue.sort();
            queue.dedup();
            for key in queue {
                schedule(&api, &mut cache, &key).await;
            }
        }
        // The watches ended (compaction or shutdown): start over from a fresh list.
        if stop.is_cancelled() {
            return;
        }
    }
}

fn wants_scheduling(pod: &Value) -> bool {
    let spec = &pod["spec"];
    spec["nodeName"].as_str().unwrap_or("").is_empty()
        && spec["schedulerName"].as_str().unwrap_or(NAME) == NAME
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

async fn schedule(api: &Api, cache: &mut Cache, key: &str) {
    let Some(pod) = cache.pods.get(key).cloned() else {
        return;
    };
    if !wants_scheduling(&pod) {
        cache.unschedulable.remove(key);
        return;
    }
    let (ns, name) = (
        object::namespace(&pod).to_string(),
        object::name(&pod).to_string(),
    );
    let all = &cache.pods;
    let guarded = cache.guarded.iter().filter_map(|k| all.get(k));
    match filters::place(&pod, &cache.nodes, || Box::new(all.values()), guarded) {
        Ok(node) => {
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                                 "metadata": {"name": name, "namespace": ns},
                                 "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            match api.bind(&ns, &name, &binding).await {
                Ok(_) => {
                    cache.unschedulable.remove(key);
                    // Count it on its node now; the watch confirms it soon.
                    let mut bound = pod.clone();
                    bound["spec"]["nodeName"] = json!(node);
                    cache.set_pod(key.to_string(), bound);
                    event(
                        api,
                        &pod,
                        "Normal",
                        "Scheduled",
                        &format!("Successfully assigned {ns}/{name} to {node}"),
                    )
                    .await;
                }
                Err(e) => tracing::debug!(pod = %key, error = %e.message, "binding failed"),
            }
        }
        Err(message) => {
            let first = cache.unschedulable.insert(key.to_string(), message.clone())
                != Some(message.clone());
            if first {
                event(api, &pod, "Warning", "FailedScheduling", &message).await;
                let status = json!({"status": {"conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                }]}});
                let _ = api
                    .patch(
                        resources::core("pods"),
                        Some(&ns),
                        &name,
                        PatchType::Strategic,
                        status,
                        Target::Status,
                        &WriteOptions::default(),
                    )
                    .await;
            }
        }
    }
}

async fn event(api: &Api, pod: &Value, kind: &str, reason: &str, message: &str) {
    let (ns, name) = (object::namespace(pod), object::name(pod));
    let now = jiff::Timestamp::now();
    let ts = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", now.as_nanosecond()), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                           "uid": pod.pointer("/metadata/uid")},
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": ts, "lastTimestamp": ts,
        "source": {"component": NAME},
        "reportingComponent": NAME,
    });
    let _ = api
        .create(
            resources::core("events"),
            Some(ns),
            ev,
            &WriteOptions::default(),
        )
        .await;
}
