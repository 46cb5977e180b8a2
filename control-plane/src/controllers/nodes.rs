//! Node lifecycle: notices nodes that stop renewing their Lease, marks them, and evicts their
//! pods once the pods' tolerations run out, so their owners recreate them on healthy nodes.
//!
//! - A node whose Lease has not been renewed for `--node-monitor-grace-period` gets Ready
//!   Unknown ("Kubelet stopped posting node status."), its pods Ready False, and the
//!   `node.kubernetes.io/unreachable` taints; a node reporting Ready False gets
//!   `node.kubernetes.io/not-ready`. NoSchedule taints come at once; NoExecute ones at a
//!   limited rate per zone, as upstream: 0.1 nodes/s normally; when 55% or more of a zone's
//!   nodes are unhealthy, 0.01/s in zones larger than 50 nodes and none in smaller ones; and
//!   none at all while every zone is fully dark (an uplink outage, not node deaths).
//! - The taint manager evicts (deletes) pods that do not tolerate a node's NoExecute taints,
//!   at once or after their `tolerationSeconds` (admission defaults 300 s for both taints).
//! - A node labelled `skiff.dev/autonomous=true` runs its pods on its own while offline: it is
//!   marked Unknown and gets the NoSchedule taint like any other, but never the unreachable
//!   NoExecute taint, so nothing is evicted from it for being unreachable.
//!
//! Lease ages are measured by when this controller saw each renewal (not by the node's
//! clock), and a freshly started controller gives every node a full grace period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{
    Api, DeleteOptions, ListOptions, PatchType, Target, WatchEvent, WriteOptions, object, resources,
};

const COMPONENT: &str = "node-controller";
/// Nodes labelled so run offline on their own and are never evicted for being unreachable.
pub const AUTONOMOUS_LABEL: &str = "skiff.dev/autonomous";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The node lifecycle flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--node-monitor-grace-period`: how long a Lease may go unrenewed.
    pub grace_period: Duration,
    /// `--node-eviction-rate`: nodes per second given NoExecute taints in a healthy zone.
    pub eviction_rate: f64,
    /// `--secondary-node-eviction-rate`: the same in a large, partly disrupted zone.
    pub secondary_eviction_rate: f64,
    /// `--unhealthy-zone-threshold`: the share of unhealthy nodes that disrupts a zone.
    pub unhealthy_zone_threshold: f64,
    /// `--large-cluster-size-threshold`: zones up to this size stop evicting when disrupted.
    pub large_cluster_size_threshold: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(40),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

/// One token bucket per zone (burst 1), for NoExecute taints.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        self.tokens = (self.tokens + rate * now.duration_since(self.at).as_secs_f64()).min(1.0);
        self.at = now;
        if rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Value>,
    /// Each node's last seen lease renewal and when this controller saw it.
    renewals: HashMap<String, (String, Instant)>,
    buckets: HashMap<String, Bucket>,
}

/// Runs until `stop`.
pub async fn run(api: Api, settings: Settings, stop: CancellationToken) {
    loop {
        let leases = resources::find("coordination.k8s.io", "v1", "leases").expect("leases");
        let nodes = api.watch(
            resources::core("nodes"),
            None,
            &ListOptions::default(),
            None,
            false,
        );
        let leases = api.watch(
            leases,
            Some("kube-node-lease"),
            &ListOptions::default(),
            None,
            false,
        );
        let (Ok(nodes), Ok(leases)) = (nodes, leases) else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.cancelled() => return,
            }
        };
        let mut events =
            futures::stream::select(nodes.map(|e| (true, e)), leases.map(|e| (false, e)));
        let mut state = State::default();
        // The monitor period: how often lease ages and tolerations are looked at.
        let mut tick = tokio::time::interval(
            (settings.grace_period / 8).clamp(Duration::from_millis(200), Duration::from_secs(5)),
        );
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => match e {
                    Some((is_node, event)) => state.observe(is_node, event),
                    None => break,
                },
                _ = tick.tick() => state.check(&api, &settings).await,
            }
        }
    }
}

fn condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind)
}

fn taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether `toleration` tolerates `taint` (any effect when the toleration names none).
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = toleration["effect"].as_str().unwrap_or("");
    if !effect.is_empty() && Some(effect) != taint["effect"].as_str() {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or("");
    let exists = toleration["operator"] == "Exists";
    if key.is_empty() {
        return exists;
    }
    key == taint["key"].as_str().unwrap_or("")
        && (exists
            || toleration["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""))
}

impl State {
    fn observe(&mut self, is_node: bool, event: WatchEvent) {
        let now = Instant::now();
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) if is_node => {
                let name = object::name(&o).to_string();
                self.renewals
                    .entry(name.clone())
                    .or_insert_with(|| (String::new(), now));
                self.nodes.insert(name, Value::clone(&o));
            }
            WatchEvent::Deleted(o) if is_node => {
                self.nodes.remove(object::name(&o));
            }
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let renew = o
                    .pointer("/spec/renewTime")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let seen = self
                    .renewals
                    .entry(object::name(&o).to_string())
                    .or_insert_with(|| (String::new(), now));
                if seen.0 != renew {
                    *seen = (renew, now);
                }
            }
            _ => {}
        }
    }

    async fn check(&mut self, api: &Api, settings: &Settings) {
        let now = Instant::now();
        // Nodes whose lease lapsed become Unknown.
        let lapsed: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, node)| {
                self.renewals
                    .get(*name)
                    .is_some_and(|(_, at)| now.duration_since(*at) > settings.grace_period)
                    && condition(node, "Ready").is_none_or(|c| c["status"] != "Unknown")
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in lapsed {
            self.mark_unknown(api, &name).await;
        }

        // Zone health decides the eviction rate.
        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        for node in self.nodes.values() {
            let zone = zone_of(node);
            let entry = zones.entry(zone).or_default();
            entry.0 += 1;
            if condition(node, "Ready").is_none_or(|c| c["status"] != "True") {
                entry.1 += 1;
            }
        }
        let rate = |zone: &str| eviction_rate(&zones, zone, settings);

        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            let Some(node) = self.nodes.get(&name).cloned() else {
                continue;
            };
            let ready = condition(&node, "Ready")
                .and_then(|c| c["status"].as_str())
                .unwrap_or("Unknown")
                .to_string();
            let wanted = match ready.as_str() {
                "True" => None,
                "False" => Some(NOT_READY),
                _ => Some(UNREACHABLE),
            };
            let mut current = taints(&node);
            let before = current.clone();
            // Drop the lifecycle taints that no longer apply.
            current.retain(|t| {
                let key = t["key"].as_str().unwrap_or("");
                !(key == UNREACHABLE || key == NOT_READY) || Some(key) == wanted
            });
            if let Some(key) = wanted {
                let has = |current: &[Value], effect: &str| {
                    current
                        .iter()
                        .any(|t| t["key"] == key && t["effect"] == effect)
                };
                if !has(&current, "NoSchedule") {
                    current.push(json!({"key": key, "effect": "NoSchedule"}));
                }
                // An autonomous node keeps its pods while unreachable: no NoExecute taint.
                let autonomous = key == UNREACHABLE
                    && node
                        .pointer("/metadata/labels")
                        .and_then(|l| l.get(AUTONOMOUS_LABEL))
                        == Some(&json!("true"));
                if !autonomous && !has(&current, "NoExecute") {
                    let zone = zone_of(&node);
                    let bucket = self.buckets.entry(zone.clone()).or_insert(Bucket {
                        tokens: 1.0,
                        at: now,
                    });
                    if bucket.take(rate(&zone), now) {
                        current.push(json!({"key": key, "effect": "NoExecute",
                                            "timeAdded": object::now()}));
                    }
                }
            }
            if current != before {
                let patch = json!({"spec": {"taints": current}});
                match api
                    .patch(
                        resources::core("nodes"),
                        None,
                        &name,
                        PatchType::Merge,
                        patch,
                        Target::Main,
                        &WriteOptions::default(),
                    )
                    .await
                {
                    Ok(w) => {
                        self.nodes.insert(name.clone(), w.object);
                    }
                    Err(e) => tracing::debug!(node = %name, error = %e.message, "cannot taint"),
                }
            }
            let node = self.nodes.get(&name).cloned().unwrap_or(node);
            if taints(&node).iter().any(|t| t["effect"] == "NoExecute") {
                evict(api, &node).await;
            }
        }
    }

    async fn mark_unknown(&mut self, api: &Api, name: &str) {
        let Some(node) = self.nodes.get(name) else {
            return;
        };
        let now = object::now();
        let conditions: Vec<Value> = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                if c["status"] != "Unknown" {
                    c["lastTransitionTime"] = json!(now);
                }
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c
            })
            .collect();
        let conditions = if conditions.iter().any(|c| c["type"] == "Ready") {
            conditions
        } else {
            let mut all = conditions;
            all.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                            "message": "Kubelet never posted node status.", "lastTransitionTime": now}));
            all
        };
        let patch = json!({"status": {"conditions": conditions}});
        match api
            .patch(
                resources::core("nodes"),
                None,
                name,
                PatchType::Merge,
                patch,
                Target::Status,
                &WriteOptions::default(),
            )
            .await
        {
            Ok(w) => {
                tracing::info!(node = %name, "node stopped renewing its lease: Ready is Unknown");
                self.nodes.insert(name.to_string(), w.object);
            }
            Err(e) => {
                tracing::debug!(node = %name, error = %e.message, "cannot mark node unknown");
                return;
            }
        }
        // Its pods are no longer known to be ready (endpoints drop them).
        for pod in pods_on(api, name) {
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "NodeNotReady",
                 "lastTransitionTime": now}]}});
            let _ = api
                .patch(
                    resources::core("pods"),
                    Some(object::namespace(&pod)),
                    object::name(&pod),
                    PatchType::Strategic,
                    patch,
                    Target::Status,
                    &WriteOptions::default(),
                )
                .await;
        }
    }
}

/// Nodes per second that may get NoExecute taints in `zone`, given (nodes, unhealthy nodes)
/// per zone: the normal rate while a zone is healthy (fewer than three or less than the
/// threshold share unhealthy) or fully dark on its own; the secondary rate in a large partly
/// disrupted zone; none in a small one, and none anywhere while every zone is dark.
fn eviction_rate(zones: &HashMap<String, (usize, usize)>, zone: &str, settings: &Settings) -> f64 {
    let all_dark = !zones.is_empty() && zones.values().all(|(n, bad)| n == bad);
    let (n, bad) = zones.get(zone).copied().unwrap_or((0, 0));
    if all_dark {
        0.0
    } else if bad == n || bad < 3 || (bad as f64) < settings.unhealthy_zone_threshold * n as f64 {
        settings.eviction_rate
    } else if n > settings.large_cluster_size_threshold {
        settings.secondary_eviction_rate
    } else {
        0.0
    }
}

fn zone_of(node: &Value) -> String {
    node.pointer("/metadata/labels/topology.kubernetes.io~1zone")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn pods_on(api: &Api, node: &str) -> Vec<Value> {
    let opts = ListOptions {
        fields: skiff_api::fields::FieldSelector::parse(&format!("spec.nodeName={node}"))
            .unwrap_or_default(),
        ..Default::default()
    };
    api.list(resources::core("pods"), None, &opts)
        .map(|l| l.items)
        .unwrap_or_default()
}

/// The taint manager for one node: deletes the pods whose tolerations of its NoExecute
/// taints are missing or have run out.
async fn evict(api: &Api, node: &Value) {
    let autonomous = node
        .pointer("/metadata/labels")
        .and_then(|l| l.get(AUTONOMOUS_LABEL))
        .and_then(Value::as_str)
        == Some("true");
    let taints: Vec<Value> = taints(node)
        .into_iter()
        .filter(|t| t["effect"] == "NoExecute")
        .filter(|t| !(autonomous && t["key"] == UNREACHABLE))
        .collect();
    if taints.is_empty() {
        return;
    }
    let now = jiff::Timestamp::now();
    for pod in pods_on(api, object::name(node)) {
        if object::is_terminating(&pod) {
            continue;
        }
        let tolerations: Vec<Value> = pod
            .pointer("/spec/tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let due = taints
            .iter()
            .any(|taint| eviction_due(&tolerations, taint, now));
        if !due {
            continue;
        }
        let (ns, name) = (object::namespace(&pod), object::name(&pod));
        match api
            .delete(
                resources::core("pods"),
                Some(ns),
                name,
                &DeleteOptions::default(),
            )
            .await
        {
            Ok(_) => {
                let mut involved = pod.clone();
                involved["apiVersion"] = json!("v1");
                involved["kind"] = json!("Pod");
                let message = format!("Marking for deletion Pod {ns}/{name}");
                crate::events::record(
                    api,
                    &involved,
                    "Normal",
                    "TaintManagerEviction",
                    &message,
                    COMPONENT,
                )
                .await;
            }
            Err(e) => tracing::debug!(pod = %name, error = %e.message, "cannot evict"),
        }
    }
}

/// Whether a pod with `tolerations` is due for eviction by `taint` at `now`: it does not
/// tolerate it, or only for a `tolerationSeconds` (the shortest that matches) that has passed.
/// Negative seconds mean at once, as upstream; none means forever.
fn eviction_due(tolerations: &[Value], taint: &Value, now: jiff::Timestamp) -> bool {
    let matching: Vec<&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        return true;
    }
    let Some(seconds) = matching
        .iter()
        .filter_map(|t| t["tolerationSeconds"].as_i64())
        .min()
    else {
        return false;
    };
    let added = taint["timeAdded"]
        .as_str()
        .and_then(object::parse_time)
        .unwrap_or(now);
    crate::clock::elapsed_seconds(added, now) >= seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_toleration_seconds_evict_at_once_or_never() {
        use crate::clock::tests::EXTREMES;
        let now: jiff::Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        for added in [
            "2025-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "x",
        ] {
            let taint = json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added});
            for &seconds in EXTREMES {
                let t = [
                    json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": seconds}),
                ];
                let due = eviction_due(&t, &taint, now);
                // Not at all tolerated once the taint is there (one added in the future is not
                // there yet).
                if seconds <= 0 && !added.starts_with("9999") {
                    assert!(due, "{added} {seconds}");
                }
                if seconds == i64::MAX {
                    assert!(!due, "{added} {seconds}");
                }
            }
        }
        let taint =
            json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"});
        let after = |s: i64| [json!({"operator": "Exists", "tolerationSeconds": s})];
        assert!(eviction_due(&after(600), &taint, now));
        assert!(!eviction_due(&after(601), &taint, now));
        assert!(!eviction_due(&[json!({"operator": "Exists"})], &taint, now));
    }

    #[test]
    fn tolerations_match_taints_as_upstream() {
        let taint = json!({"key": UNREACHABLE, "effect": "NoExecute"});
        assert!(tolerates(
            &json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}),
            &taint
        ));
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(!tolerates(
            &json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": NOT_READY, "operator": "Exists"}),
            &taint
        ));
        let valued = json!({"key": "k", "value": "v", "effect": "NoExecute"});
        assert!(tolerates(&json!({"key": "k", "value": "v"}), &valued));
        assert!(!tolerates(&json!({"key": "k", "value": "w"}), &valued));
    }

    #[test]
    fn disrupted_zones_slow_or_stop_evictions() {
        let s = Settings::default();
        let zones = |list: &[(&str, usize, usize)]| -> HashMap<String, (usize, usize)> {
            list.iter()
                .map(|(z, n, bad)| (z.to_string(), (*n, *bad)))
                .collect()
        };
        // Healthy, or only a few nodes down: the normal rate.
        assert_eq!(eviction_rate(&zones(&[("a", 10, 2)]), "a", &s), 0.1);
        assert_eq!(eviction_rate(&zones(&[("a", 10, 5)]), "a", &s), 0.1);
        // 60% of a small zone down: no evictions; of a large one: the secondary rate.
        assert_eq!(
            eviction_rate(&zones(&[("a", 10, 6), ("b", 5, 0)]), "a", &s),
            0.0
        );
        assert_eq!(
            eviction_rate(&zones(&[("a", 100, 60), ("b", 5, 0)]), "a", &s),
            0.01
        );
        // One zone fully dark while another is fine: that zone's nodes really are gone.
        assert_eq!(
            eviction_rate(&zones(&[("a", 10, 10), ("b", 5, 0)]), "a", &s),
            0.1
        );
        // Every zone dark: the control plane lost its uplink, not the nodes their lives.
        assert_eq!(
            eviction_rate(&zones(&[("a", 10, 10), ("b", 5, 5)]), "a", &s),
            0.0
        );
        assert_eq!(eviction_rate(&zones(&[("", 3, 3)]), "", &s), 0.0);
    }

    #[test]
    fn the_bucket_limits_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 1.0,
            at: t0,
        };
        assert!(b.take(0.1, t0));
        assert!(!b.take(0.1, t0 + Duration::from_secs(5)));
        assert!(b.take(0.1, t0 + Duration::from_secs(10)));
        assert!(!b.take(0.0, t0 + Duration::from_secs(100)));
    }
}
