//! What the scheduler knows of nodes and pods: parsed once from the watch events into the few
//! fields placement reads, with each node's bound requests kept current as pods come and go
//! (placing a pod costs a pass over some nodes, never over all pods).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use skiff_api::labels::Selector;
use skiff_api::quantity::parse_milli;

/// Requested or allocatable cpu (millicores), memory (bytes) and pod count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub pods: i128,
}

impl Resources {
    /// Adds (`sign` 1) or removes (`sign` -1) `other`.
    pub fn account(&mut self, other: &Resources, sign: i128) {
        self.cpu += sign * other.cpu;
        self.memory += sign * other.memory;
        self.pods += sign * other.pods;
    }

    /// A pod's requests (it counts as one pod). A container without a request asks for its
    /// limit, as the API server defaults it.
    pub fn requested_by(pod: &Value) -> Self {
        let mut r = Resources {
            pods: 1,
            ..Default::default()
        };
        for c in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let res = &c["resources"];
            let get = |name: &str| {
                res["requests"][name]
                    .as_str()
                    .or_else(|| res["limits"][name].as_str())
                    .and_then(|q| parse_milli(q).ok())
                    .unwrap_or(0)
            };
            r.cpu += get("cpu");
            r.memory += get("memory") / 1000;
        }
        r
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// A node as placement sees it.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    /// Module and image names the node already holds (`status.images`).
    pub images: HashSet<String>,
    /// Requests of the unfinished pods bound to it.
    pub used: Resources,
}

impl Node {
    /// Reads the fields placement needs from a Node object.
    pub fn parse(node: &Value) -> Self {
        let quantity = |name: &str| {
            node.pointer(&format!("/status/allocatable/{name}"))
                .and_then(Value::as_str)
                .and_then(|q| parse_milli(q).ok())
        };
        let str_of = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
        Self {
            name: node
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            labels: string_map(node.pointer("/metadata/labels")),
            ready: node
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            unschedulable: node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)),
            taints: node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| Taint {
                    key: str_of(t, "key"),
                    value: str_of(t, "value"),
                    effect: str_of(t, "effect"),
                })
                .collect(),
            allocatable: Resources {
                cpu: quantity("cpu").unwrap_or(0),
                memory: quantity("memory").map_or(0, |m| m / 1000),
                pods: quantity("pods").map_or(110, |p| p / 1000),
            },
            images: node
                .pointer("/status/images")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|i| i["names"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            used: Resources::default(),
        }
    }

    /// The node's value for a topology key (a label), if it has one.
    pub fn topology(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A pod affinity term: which pods (selector, namespaces) and the topology key that groups
/// nodes into domains.
#[derive(Debug, Clone)]
pub struct PodTerm {
    /// `None` (no or an invalid `labelSelector`) selects no pods.
    pub selector: Option<Selector>,
    /// The namespaces whose pods count; `None` for all (an empty `namespaceSelector`).
    pub namespaces: Option<Vec<String>>,
    pub topology_key: String,
}

impl PodTerm {
    /// Parses a `PodAffinityTerm` of a pod in namespace `own`. A term whose selector does not
    /// parse selects nothing (validation rejects those at admission).
    pub fn parse(term: &Value, own: &str) -> Self {
        let selector = serde_json::from_value(term["labelSelector"].clone())
            .ok()
            .and_then(|s| Selector::from_label_selector(&s).ok());
        let listed: Vec<String> = term["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let all = term["namespaceSelector"].as_object().is_some_and(|s| {
            s.values()
                .all(|v| v.as_object().is_some_and(|m| m.is_empty()))
        });
        Self {
            selector,
            namespaces: if all {
                None
            } else if listed.is_empty() {
                Some(vec![own.to_string()])
            } else {
                Some(listed)
            },
            topology_key: term["topologyKey"].as_str().unwrap_or("").to_string(),
        }
    }

    /// Whether the term selects a pod with these namespace and labels.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.iter().any(|n| n == namespace))
            && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A pod as placement sees the pods already in the cluster.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The node whose resources it holds: bound and not finished.
    pub node: Option<String>,
    pub requests: Resources,
    /// Its required anti-affinity terms, which newcomers must respect too.
    pub anti_affinity: Vec<PodTerm>,
}

impl Pod {
    fn parse(pod: &Value) -> Self {
        let namespace = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && !finished(pod));
        Self {
            namespace: namespace.to_string(),
            labels: string_map(pod.pointer("/metadata/labels")),
            node: node.map(str::to_string),
            requests: Resources::requested_by(pod),
            anti_affinity: required_terms(pod, "podAntiAffinity")
                .map(|t| PodTerm::parse(t, namespace))
                .collect(),
        }
    }
}

/// A pod's required (anti-)affinity terms; `kind` is `podAffinity` or `podAntiAffinity`.
pub fn required_terms<'a>(pod: &'a Value, kind: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!(
        "/spec/affinity/{kind}/requiredDuringSchedulingIgnoredDuringExecution"
    ))
    .and_then(Value::as_array)
    .into_iter()
    .flatten()
}

fn finished(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Whether this scheduler should place the pod: it names no node, asks for this scheduler, and
/// is neither terminating nor finished.
pub fn wants_scheduling(pod: &Value) -> bool {
    let spec = &pod["spec"];
    spec["nodeName"].as_str().unwrap_or("").is_empty()
        && spec["schedulerName"].as_str().unwrap_or(super::NAME) == super::NAME
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && !finished(pod)
}

/// A JSON object of strings as a map (labels).
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// What a pod update changed, for the scheduling queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PodChange {
    /// The pod waits for a node.
    pub pending: bool,
    /// The pod gave its node's resources back (it finished or moved).
    pub freed: bool,
}

/// Nodes and pods, by name (`namespace/name` for pods).
#[derive(Default)]
pub struct Cache {
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    pods: HashMap<String, Pod>,
    /// Pods waiting for a node, as full objects.
    pending: HashMap<String, Arc<Value>>,
    /// Pods bound by this scheduler whose binding the watch has not confirmed yet, by node.
    assumed: HashMap<String, String>,
    /// Bound pods with required anti-affinity terms.
    guarded: HashSet<String>,
}

impl Cache {
    /// The nodes, in a stable order between changes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Every pod.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// Bound pods that have required anti-affinity terms.
    pub fn guarded(&self) -> impl Iterator<Item = &Pod> {
        self.guarded.iter().filter_map(|k| self.pods.get(k))
    }

    /// A pod waiting for a node (and not already being bound).
    pub fn pending(&self, key: &str) -> Option<&Value> {
        self.pending
            .get(key)
            .filter(|_| !self.assumed.contains_key(key))
            .map(|p| &**p)
    }

    pub fn set_node(&mut self, obj: &Value) {
        let mut node = Node::parse(obj);
        match self.index.get(&node.name) {
            Some(&i) => {
                node.used = self.nodes[i].used;
                self.nodes[i] = node;
            }
            None => {
                for pod in self.pods.values() {
                    if pod.node.as_deref() == Some(node.name.as_str()) {
                        node.used.account(&pod.requests, 1);
                    }
                }
                self.index.insert(node.name.clone(), self.nodes.len());
                self.nodes.push(node);
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            self.nodes.swap_remove(i);
            if let Some(moved) = self.nodes.get(i) {
                self.index.insert(moved.name.clone(), i);
            }
        }
    }

    fn account(&mut self, pod: &Pod, sign: i128) {
        account(&mut self.nodes, &self.index, pod, sign);
    }

    /// Records a pod as the watch reports it.
    pub fn set_pod(&mut self, key: &str, obj: Arc<Value>) -> PodChange {
        let mut pod = Pod::parse(&obj);
        let bound = !obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
        if bound {
            self.assumed.remove(key);
        } else if let Some(node) = self.assumed.get(key) {
            // An update that raced our binding: the pod is on its way to `node`.
            pod.node = Some(node.clone());
        }
        if !pod.anti_affinity.is_empty() && pod.node.is_some() {
            self.guarded.insert(key.to_string());
        } else {
            self.guarded.remove(key);
        }
        self.account(&pod, 1);
        let old_node = match self.pods.insert(key.to_string(), pod) {
            Some(old) => {
                self.account(&old, -1);
                old.node
            }
            None => None,
        };
        let freed = old_node.is_some() && old_node != self.pods[key].node;
        let pending = wants_scheduling(&obj);
        if pending {
            self.pending.insert(key.to_string(), obj);
        } else {
            self.pending.remove(key);
        }
        PodChange {
            pending: pending && !self.assumed.contains_key(key),
            freed,
        }
    }

    /// Forgets a deleted pod.
    pub fn remove_pod(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            self.account(&old, -1);
        }
        self.pending.remove(key);
        self.assumed.remove(key);
        self.guarded.remove(key);
    }

    /// Counts a pod on `node` while its binding is written.
    pub fn assume(&mut self, key: &str, node: &str) {
        let Some(mut pod) = self.pods.remove(key) else {
            return;
        };
        self.account(&pod, -1);
        pod.node = Some(node.to_string());
        self.account(&pod, 1);
        if !pod.anti_affinity.is_empty() {
            self.guarded.insert(key.to_string());
        }
        self.pods.insert(key.to_string(), pod);
        self.assumed.insert(key.to_string(), node.to_string());
    }

    /// Undoes [`Cache::assume`] after the binding failed; true when the pod still waits.
    pub fn forget(&mut self, key: &str) -> bool {
        if self.assumed.remove(key).is_some()
            && let Some(mut pod) = self.pods.remove(key)
        {
            self.account(&pod, -1);
            pod.node = None;
            self.guarded.remove(key);
            self.pods.insert(key.to_string(), pod);
        }
        self.pending.contains_key(key)
    }
}

fn account(nodes: &mut [Node], index: &HashMap<String, usize>, pod: &Pod, sign: i128) {
    if let Some(&i) = pod.node.as_ref().and_then(|n| index.get(n)) {
        nodes[i].used.account(&pod.requests, sign);
    }
}
