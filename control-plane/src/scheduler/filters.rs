//! Which nodes a pod fits on, why the others do not, and which fitting node is best.
//!
//! The filters and scores follow kube-scheduler's default plugins (their names are used for
//! the configurable weights); a pod's own requirements are parsed once per attempt and then
//! checked against as many nodes as placement needs to look at.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use serde_json::Value;
use skiff_api::labels::Selector;

use super::cache::{Cache, Node, PodTerm, Resources, Taint, required_terms, string_map};

/// How placement scores nodes that fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoring {
    /// How NodeResourcesFit scores free room.
    pub strategy: Strategy,
    /// What each score counts for.
    pub weights: Weights,
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            strategy: Strategy::LeastAllocated,
            weights: Weights::default(),
        }
    }
}

/// NodeResourcesFit's scoring strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Prefer the node with the most room left (spreads load; the default).
    LeastAllocated,
    /// Prefer the fullest node that fits (bin packing: frees whole nodes).
    MostAllocated,
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "LeastAllocated" => Ok(Self::LeastAllocated),
            "MostAllocated" => Ok(Self::MostAllocated),
            other => Err(format!(
                "unknown scoring strategy {other:?}: expected LeastAllocated or MostAllocated"
            )),
        }
    }
}

/// Score weights by kube-scheduler plugin name; the defaults are kube-scheduler's, with
/// ImageLocality scoring modules a node already holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// `NodeResourcesFit`: room left (or used, when bin packing) after placing the pod.
    pub node_resources_fit: f64,
    /// `NodeResourcesBalancedAllocation`: cpu and memory used in similar shares.
    pub balanced_allocation: f64,
    /// `NodeAffinity`: preferred node affinity terms the node matches.
    pub node_affinity: f64,
    /// `TaintToleration`: fewer untolerated PreferNoSchedule taints.
    pub taint_toleration: f64,
    /// `PodTopologySpread`: fewer matching pods in the node's domains (ScheduleAnyway).
    pub pod_topology_spread: f64,
    /// `ImageLocality`: the pod's modules already on the node.
    pub image_locality: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            node_resources_fit: 1.0,
            balanced_allocation: 1.0,
            node_affinity: 2.0,
            taint_toleration: 3.0,
            pod_topology_spread: 2.0,
            image_locality: 1.0,
        }
    }
}

impl FromStr for Weights {
    type Err = String;
    /// Parses `Plugin=weight,...` over the defaults, e.g. `ImageLocality=5,NodeResourcesFit=2`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut w = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("invalid weight {part:?}: expected PLUGIN=WEIGHT"))?;
            let value: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("invalid weight {part:?}: not a non-negative number"))?;
            let slot = match name.trim() {
                "NodeResourcesFit" => &mut w.node_resources_fit,
                "NodeResourcesBalancedAllocation" => &mut w.balanced_allocation,
                "NodeAffinity" => &mut w.node_affinity,
                "TaintToleration" => &mut w.taint_toleration,
                "PodTopologySpread" => &mut w.pod_topology_spread,
                "ImageLocality" => &mut w.image_locality,
                other => {
                    return Err(format!(
                        "unknown score plugin {other:?}: expected one of NodeResourcesFit, \
                         NodeResourcesBalancedAllocation, NodeAffinity, TaintToleration, \
                         PodTopologySpread, ImageLocality"
                    ));
                }
            };
            *slot = value;
        }
        Ok(w)
    }
}

/// The best node for `pod`, or the Kubernetes-style message saying why none fits.
///
/// Like kube-scheduler, a large cluster is not searched exhaustively: the search starts where
/// the previous one stopped (`start`) and ends once enough nodes fit (`nodes_to_find`).
pub fn place(
    pod: &Value,
    cache: &Cache,
    scoring: &Scoring,
    start: &mut usize,
) -> Result<String, String> {
    let nodes = cache.nodes();
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let c = Candidate::new(pod, cache);
    let wanted = nodes_to_find(nodes.len());
    let mut feasible = Vec::new();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    let mut checked = 0;
    for k in 0..nodes.len() {
        let node = &nodes[(*start + k) % nodes.len()];
        checked += 1;
        let refused = c.refuses(node);
        if refused.is_empty() {
            feasible.push(node);
            if feasible.len() >= wanted {
                break;
            }
        }
        for reason in refused {
            *reasons.entry(reason).or_default() += 1;
        }
    }
    *start = (*start + checked) % nodes.len();
    if feasible.is_empty() {
        let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        return Err(format!(
            "0/{} nodes are available: {}.",
            nodes.len(),
            parts.join(", ")
        ));
    }
    Ok(c.best(&feasible, scoring).name.clone())
}

/// How many fitting nodes to find before choosing (kube-scheduler's adaptive
/// `percentageOfNodesToScore`: all of a small cluster, 10% of 5,000 nodes, never under 100).
fn nodes_to_find(total: usize) -> usize {
    const MIN: usize = 100;
    if total <= MIN {
        return total;
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(MIN)
}

/// Requests used for scoring: a pod that asks for nothing still takes some room, as in
/// kube-scheduler (100m cpu, 200Mi memory).
fn nonzero(r: Resources) -> Resources {
    Resources {
        cpu: if r.cpu == 0 { 100 } else { r.cpu },
        memory: if r.memory == 0 {
            200 * 1024 * 1024
        } else {
            r.memory
        },
        pods: r.pods,
    }
}

struct Toleration {
    key: String,
    exists: bool,
    value: String,
    effect: String,
}

impl Toleration {
    fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if self.key.is_empty() {
            return self.exists;
        }
        self.key == taint.key && (self.exists || self.value == taint.value)
    }
}

/// A node selector requirement (`matchExpressions` on labels, `matchFields` on the name).
struct NodeRequirement {
    key: String,
    field: bool,
    operator: String,
    values: Vec<String>,
}

impl NodeRequirement {
    fn parse_term(term: &Value) -> Vec<Self> {
        let parse = |field: bool| {
            move |e: &Value| Self {
                key: e["key"].as_str().unwrap_or("").to_string(),
                field,
                operator: e["operator"].as_str().unwrap_or("").to_string(),
                values: e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            }
        };
        let exprs = term["matchExpressions"].as_array().into_iter().flatten();
        let fields = term["matchFields"].as_array().into_iter().flatten();
        exprs
            .map(parse(false))
            .chain(fields.map(parse(true)))
            .collect()
    }

    fn holds(&self, node: &Node) -> bool {
        let value = if self.field {
            (self.key == "metadata.name").then_some(node.name.as_str())
        } else {
            node.topology(&self.key)
        };
        let number = |s: &str| s.parse::<i64>().ok();
        let bound = self.values.first().and_then(|v| number(v));
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "NotIn" => !value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" => matches!((value.and_then(number), bound), (Some(a), Some(b)) if a > b),
            "Lt" => matches!((value.and_then(number), bound), (Some(a), Some(b)) if a < b),
            _ => false,
        }
    }
}

/// A required pod (anti-)affinity term resolved against the cluster: the topology values
/// where pods it selects run.
struct InterPod {
    key: String,
    values: HashSet<String>,
    kind: InterPodKind,
}

#[derive(PartialEq)]
enum InterPodKind {
    Affinity {
        /// The pod matches its own term, so a first pod of a group may go anywhere.
        self_match: bool,
    },
    AntiAffinity,
    /// Another pod's anti-affinity term selects this pod.
    ExistingAntiAffinity,
}

/// A topology spread constraint resolved against the cluster.
struct Spread {
    key: String,
    max_skew: i64,
    hard: bool,
    /// Matching pods per eligible domain.
    counts: HashMap<String, i64>,
    /// The smallest count (0 while there are fewer domains than `minDomains`).
    min: i64,
    self_match: i64,
}

/// A pod's placement requirements, parsed once.
struct Candidate<'a> {
    want: Resources,
    tolerations: Vec<Toleration>,
    node_selector: BTreeMap<String, String>,
    /// Required node affinity: ORed terms of ANDed requirements.
    node_terms: Option<Vec<Vec<NodeRequirement>>>,
    preferred: Vec<(f64, Vec<NodeRequirement>)>,
    runtime: Option<&'a str>,
    /// Architectures an OCI image runs on (none: a Wasm pod, which runs anywhere).
    architectures: Option<Vec<String>>,
    images: Vec<&'a str>,
    inter_pod: Vec<InterPod>,
    spread: Vec<Spread>,
}

impl<'a> Candidate<'a> {
    fn new(pod: &'a Value, cache: &Cache) -> Self {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let labels = string_map(pod.pointer("/metadata/labels"));
        let str_of = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
        let runtime = needed_runtime(pod);
        let mut c = Self {
            want: Resources::requested_by(pod),
            tolerations: pod
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| Toleration {
                    key: str_of(t, "key"),
                    exists: t["operator"] == "Exists",
                    value: str_of(t, "value"),
                    effect: str_of(t, "effect"),
                })
                .collect(),
            node_selector: string_map(pod.pointer("/spec/nodeSelector")),
            node_terms: pod
                .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
                .and_then(Value::as_array)
                .map(|terms| terms.iter().map(NodeRequirement::parse_term).collect()),
            preferred: pod
                .pointer("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| {
                    (
                        t["weight"].as_f64().unwrap_or(0.0),
                        NodeRequirement::parse_term(&t["preference"]),
                    )
                })
                .collect(),
            runtime,
            architectures: runtime.map(|_| image_architectures(pod)),
            images: pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c["image"].as_str())
                .collect(),
            inter_pod: Vec::new(),
            spread: Vec::new(),
        };
        c.inter_pod = inter_pod(pod, ns, &labels, cache);
        c.spread = c.spread(pod, ns, &labels, cache);
        c
    }

    fn tolerated(&self, taint: &Taint) -> bool {
        self.tolerations.iter().any(|t| t.tolerates(taint))
    }

    fn matches_node_affinity(&self, node: &Node) -> bool {
        if self
            .node_selector
            .iter()
            .any(|(k, v)| node.topology(k) != Some(v.as_str()))
        {
            return false;
        }
        // Terms are ORed; the requirements within one term are ANDed; an empty term matches
        // nothing.
        self.node_terms.as_ref().is_none_or(|terms| {
            terms
                .iter()
                .any(|reqs| !reqs.is_empty() && reqs.iter().all(|r| r.holds(node)))
        })
    }

    /// The reasons `node` does not fit, as kube-scheduler words them: the first failing check
    /// in its plugin order (resources may name several); empty when it fits.
    fn refuses(&self, node: &Node) -> Vec<String> {
        if !node.ready {
            return vec!["node(s) were not ready".into()];
        }
        if node.unschedulable {
            return vec!["node(s) were unschedulable".into()];
        }
        if let Some(taint) = node
            .taints
            .iter()
            .find(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !self.tolerated(t))
        {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key, taint.value
            )];
        }
        if !self.matches_node_affinity(node) {
            return vec!["node(s) didn't match Pod's node affinity/selector".into()];
        }
        if let Some(runtime) = self.runtime {
            let offered = node.topology("skiff.dev/runtimes").unwrap_or("wasm");
            if !offered.split(',').any(|r| r.trim() == runtime) {
                return vec![format!("node(s) didn't have the pod's runtime ({runtime})")];
            }
        }
        if let Some(archs) = &self.architectures
            && !node
                .topology("kubernetes.io/arch")
                .is_some_and(|a| archs.iter().any(|x| x == a))
        {
            return vec![format!(
                "node(s) didn't match the image's architecture ({})",
                archs.join(", ")
            )];
        }
        let (cap, used, want) = (&node.allocatable, &node.used, &self.want);
        let mut short = Vec::new();
        if used.pods + 1 > cap.pods {
            short.push("Too many pods".to_string());
        }
        if want.cpu > 0 && used.cpu + want.cpu > cap.cpu {
            short.push("Insufficient cpu".into());
        }
        if want.memory > 0 && used.memory + want.memory > cap.memory {
            short.push("Insufficient memory".into());
        }
        if !short.is_empty() {
            return short;
        }
        for s in self.spread.iter().filter(|s| s.hard) {
            let Some(domain) = node.topology(&s.key) else {
                return vec![
                    "node(s) didn't match pod topology spread constraints (missing required label)"
                        .into(),
                ];
            };
            let count = s.counts.get(domain).copied().unwrap_or(0);
            if count + s.self_match - s.min > s.max_skew {
                return vec!["node(s) didn't match pod topology spread constraints".into()];
            }
        }
        for term in &self.inter_pod {
            let here = node
                .topology(&term.key)
                .is_some_and(|v| term.values.contains(v));
            let refused = match term.kind {
                InterPodKind::Affinity { self_match } => {
                    !here && (!self_match || !term.values.is_empty())
                }
                InterPodKind::AntiAffinity | InterPodKind::ExistingAntiAffinity => here,
            };
            if refused {
                return vec![
                    match term.kind {
                        InterPodKind::Affinity { .. } => "node(s) didn't match pod affinity rules",
                        InterPodKind::AntiAffinity => {
                            "node(s) didn't match pod anti-affinity rules"
                        }
                        InterPodKind::ExistingAntiAffinity => {
                            "node(s) didn't satisfy existing pods anti-affinity rules"
                        }
                    }
                    .into(),
                ];
            }
        }
        Vec::new()
    }

    /// The highest-scoring node of those that fit (the first of equals).
    fn best<'n>(&self, feasible: &[&'n Node], scoring: &Scoring) -> &'n Node {
        struct Raw {
            fit: f64,
            balanced: f64,
            affinity: f64,
            taints: f64,
            spread: f64,
            locality: f64,
        }
        let want = nonzero(self.want);
        let raw: Vec<Raw> = feasible
            .iter()
            .map(|node| {
                let cap = &node.allocatable;
                let share = |total: i128, taken: i128| {
                    (total > 0).then(|| (taken as f64 / total as f64).clamp(0.0, 1.0))
                };
                let shares: Vec<f64> = [
                    share(cap.cpu, node.used.cpu + want.cpu),
                    share(cap.memory, node.used.memory + want.memory),
                ]
                .into_iter()
                .flatten()
                .collect();
                let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
                let fit = match scoring.strategy {
                    Strategy::LeastAllocated if !shares.is_empty() => 1.0 - mean,
                    Strategy::MostAllocated => mean,
                    _ => 0.0,
                };
                let deviation = (shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>()
                    / shares.len().max(1) as f64)
                    .sqrt();
                Raw {
                    fit,
                    balanced: 1.0 - deviation,
                    affinity: self
                        .preferred
                        .iter()
                        .filter(|(_, reqs)| reqs.iter().all(|r| r.holds(node)))
                        .map(|(w, _)| w)
                        .sum(),
                    taints: node
                        .taints
                        .iter()
                        .filter(|t| t.effect == "PreferNoSchedule" && !self.tolerated(t))
                        .count() as f64,
                    spread: self
                        .spread
                        .iter()
                        .filter(|s| !s.hard)
                        .map(|s| match node.topology(&s.key) {
                            Some(d) => s.counts.get(d).copied().unwrap_or(0) as f64,
                            None => s.counts.values().sum::<i64>() as f64 + 1.0,
                        })
                        .sum(),
                    locality: if self.images.is_empty() {
                        0.0
                    } else {
                        self.images
                            .iter()
                            .filter(|i| node.images.contains(**i))
                            .count() as f64
                            / self.images.len() as f64
                    },
                }
            })
            .collect();
        let max = |f: fn(&Raw) -> f64| raw.iter().map(f).fold(0.0, f64::max);
        let min = |f: fn(&Raw) -> f64| raw.iter().map(f).fold(f64::INFINITY, f64::min);
        let (max_affinity, max_taints) = (max(|r| r.affinity), max(|r| r.taints));
        let (max_spread, min_spread) = (max(|r| r.spread), min(|r| r.spread));
        let w = &scoring.weights;
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, r) in raw.iter().enumerate() {
            // Normalized as kube-scheduler does: by the highest, reversed where fewer is better.
            let affinity = if max_affinity > 0.0 {
                r.affinity / max_affinity
            } else {
                0.0
            };
            let taints = if max_taints > 0.0 {
                1.0 - r.taints / max_taints
            } else {
                1.0
            };
            let spread = if max_spread > 0.0 {
                (max_spread + min_spread - r.spread) / max_spread
            } else {
                1.0
            };
            let score = w.node_resources_fit * r.fit
                + w.balanced_allocation * r.balanced
                + w.node_affinity * affinity
                + w.taint_toleration * taints
                + w.pod_topology_spread * spread
                + w.image_locality * r.locality;
            if score > best.0 {
                best = (score, i);
            }
        }
        feasible[best.1]
    }

    /// The pod's topology spread constraints, with matching pods counted per domain.
    fn spread(
        &self,
        pod: &Value,
        ns: &str,
        labels: &BTreeMap<String, String>,
        cache: &Cache,
    ) -> Vec<Spread> {
        let mut out = Vec::new();
        for c in pod
            .pointer("/spec/topologySpreadConstraints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = c["topologyKey"].as_str().unwrap_or("").to_string();
            let selector = serde_json::from_value(c["labelSelector"].clone())
                .ok()
                .and_then(|s| Selector::from_label_selector(&s).ok());
            // matchLabelKeys: the pod's own values for these keys narrow the selector.
            let own: Vec<(&String, &String)> = c["matchLabelKeys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|k| labels.get_key_value(k))
                .collect();
            let selects = |l: &BTreeMap<String, String>| {
                selector.as_ref().is_some_and(|s| s.matches(l))
                    && own.iter().all(|(k, v)| l.get(*k) == Some(*v))
            };
            let honor_affinity = c["nodeAffinityPolicy"].as_str() != Some("Ignore");
            let honor_taints = c["nodeTaintsPolicy"].as_str() == Some("Honor");
            let mut counts: HashMap<String, i64> = HashMap::new();
            let mut domain_of: HashMap<&str, &str> = HashMap::new();
            for node in cache.nodes() {
                let Some(domain) = node.topology(&key) else {
                    continue;
                };
                if honor_affinity && !self.matches_node_affinity(node) {
                    continue;
                }
                if honor_taints
                    && node.taints.iter().any(|t| {
                        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                            && !self.tolerated(t)
                    })
                {
                    continue;
                }
                counts.entry(domain.to_string()).or_insert(0);
                domain_of.insert(&node.name, domain);
            }
            for other in cache.pods() {
                if other.namespace != ns || !selects(&other.labels) {
                    continue;
                }
                if let Some(domain) = other.node.as_deref().and_then(|n| domain_of.get(n)) {
                    *counts.entry(domain.to_string()).or_insert(0) += 1;
                }
            }
            let min_domains = c["minDomains"].as_i64().unwrap_or(1);
            let min = if (counts.len() as i64) < min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            out.push(Spread {
                key,
                max_skew: c["maxSkew"].as_i64().unwrap_or(1).max(1),
                hard: c["whenUnsatisfiable"].as_str() != Some("ScheduleAnyway"),
                counts,
                min,
                self_match: i64::from(selects(labels)),
            });
        }
        out
    }
}

/// The pod's required (anti-)affinity and the existing pods' anti-affinity against it,
/// resolved to topology values.
fn inter_pod(
    pod: &Value,
    ns: &str,
    labels: &BTreeMap<String, String>,
    cache: &Cache,
) -> Vec<InterPod> {
    let mut out = Vec::new();
    for (kind, affinity) in [("podAffinity", true), ("podAntiAffinity", false)] {
        for term in required_terms(pod, kind) {
            let term = PodTerm::parse(term, ns);
            let values = cache
                .pods()
                .filter(|p| term.selects(&p.namespace, &p.labels))
                .filter_map(|p| cache.node(p.node.as_deref()?))
                .filter_map(|n| n.topology(&term.topology_key))
                .map(str::to_string)
                .collect();
            out.push(InterPod {
                values,
                kind: if affinity {
                    InterPodKind::Affinity {
                        self_match: term.selects(ns, labels),
                    }
                } else {
                    InterPodKind::AntiAffinity
                },
                key: term.topology_key,
            });
        }
    }
    for other in cache.guarded() {
        let Some(node) = other.node.as_deref().and_then(|n| cache.node(n)) else {
            continue;
        };
        for term in &other.anti_affinity {
            if term.selects(ns, labels)
                && let Some(v) = node.topology(&term.topology_key)
            {
                out.push(InterPod {
                    key: term.topology_key.clone(),
                    values: [v.to_string()].into(),
                    kind: InterPodKind::ExistingAntiAffinity,
                });
            }
        }
    }
    out
}

/// The runtime a pod needs beyond Wasm: its `runtimeClassName` names it (`containerd` for OCI
/// images); Wasm pods (no class, or `wasm`/`wasmtime`) run on every node.
fn needed_runtime(pod: &Value) -> Option<&str> {
    match pod
        .pointer("/spec/runtimeClassName")
        .and_then(Value::as_str)?
    {
        "" | "wasm" | "wasmtime" => None,
        other => Some(other),
    }
}

/// The architectures an OCI pod's images run on: the `skiff.dev/image-architectures`
/// annotation (comma-separated, Kubernetes names) or else the control plane's own, since an
/// image built beside the cluster is built for it. Wasm modules need no such check.
fn image_architectures(pod: &Value) -> Vec<String> {
    match pod
        .pointer("/metadata/annotations/skiff.dev~1image-architectures")
        .and_then(Value::as_str)
    {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
        None => vec![own_architecture().to_string()],
    }
}

/// This machine's architecture as Kubernetes names it.
pub fn own_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, extra: Value) -> Value {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"zone": name, "kubernetes.io/hostname": name,
                                                  "kubernetes.io/arch": "amd64"}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        crate::api::patch::apply(&mut n, crate::api::PatchType::Merge, &extra, "Node").unwrap();
        n
    }

    fn pod(spec: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
                           "spec": {"containers": [{"name": "c", "image": "x"}]}});
        crate::api::patch::apply(
            &mut p,
            crate::api::PatchType::Merge,
            &json!({"spec": spec}),
            "Pod",
        )
        .unwrap();
        p
    }

    /// A bound pod with labels and requests.
    fn running(name: &str, node: &str, labels: Value, cpu: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "labels": labels},
               "spec": {"nodeName": node, "containers": [
                   {"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}})
    }

    fn cache(nodes: &[Value], pods: &[Value]) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.set_node(n);
        }
        for p in pods {
            c.set_pod(
                &format!("default/{}", p["metadata"]["name"].as_str().unwrap()),
                std::sync::Arc::new(p.clone()),
            );
        }
        c
    }

    fn place_in(pod: &Value, cache: &Cache) -> Result<String, String> {
        place(pod, cache, &Scoring::default(), &mut 0)
    }

    #[test]
    fn filters_and_counts_reasons() {
        let nodes = [
            node("a", "1", json!({})),
            node(
                "b",
                "4",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node(
                "c",
                "4",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]}}),
            ),
            node("d", "4", json!({"spec": {"unschedulable": true}})),
            node(
                "e",
                "4",
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
            ),
        ];
        let c = cache(&nodes, &[]);
        let big = pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}),
        );
        assert_eq!(
            place_in(&big, &c).unwrap_err(),
            "0/5 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) were not ready, \
             1 node(s) were unschedulable, 2 node(s) had untolerated taint {dedicated: gpu}."
        );
        let tolerant = pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}}}],
                   "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        );
        assert_eq!(place_in(&tolerant, &c).unwrap(), "b");
        let exists = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}],
                                "nodeSelector": {"zone": "c"}}),
        );
        assert_eq!(place_in(&exists, &c).unwrap(), "c");
        assert_eq!(
            place_in(&pod(json!({"nodeSelector": {"zone": "a"}})), &c).unwrap(),
            "a"
        );
        // Bound pods use up what a node has.
        let bound: Vec<Value> = (0..10)
            .map(|i| running(&format!("r{i}"), "a", json!({}), "10m"))
            .collect();
        let err = place_in(
            &pod(json!({"nodeSelector": {"zone": "a"}})),
            &cache(&nodes, &bound),
        )
        .unwrap_err();
        assert!(err.contains("1 Too many pods"), "{err}");
        assert_eq!(
            place_in(&pod(json!({})), &Cache::default()).unwrap_err(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn required_node_affinity_operators() {
        let nodes = [
            node(
                "a",
                "4",
                json!({"metadata": {"labels": {"cores": "2", "ssd": "yes"}}}),
            ),
            node("b", "4", json!({"metadata": {"labels": {"cores": "8"}}})),
            node("c", "4", json!({})),
        ];
        let c = cache(&nodes, &[]);
        let with = |exprs: Value| {
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs}]}}}}),
            )
        };
        let only = |exprs: Value| place_in(&with(exprs), &c);
        assert_eq!(
            only(json!([{"key": "cores", "operator": "Gt", "values": ["4"]}])).unwrap(),
            "b"
        );
        assert_eq!(
            only(json!([{"key": "cores", "operator": "Lt", "values": ["4"]}])).unwrap(),
            "a"
        );
        assert_eq!(
            only(json!([{"key": "cores", "operator": "DoesNotExist"}])).unwrap(),
            "c"
        );
        assert_eq!(
            only(json!([{"key": "ssd", "operator": "Exists"}])).unwrap(),
            "a"
        );
        assert_eq!(
            only(json!([{"key": "zone", "operator": "NotIn", "values": ["a", "b"]}])).unwrap(),
            "c"
        );
        assert_eq!(
            only(json!([{"key": "zone", "operator": "In", "values": ["b"]},
                        {"key": "cores", "operator": "Exists"}]))
            .unwrap(),
            "b"
        );
        assert_eq!(
            only(json!([{"key": "cores", "operator": "Gt", "values": ["100"]}])).unwrap_err(),
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
        );
        // Terms are ORed; matchFields selects by name.
        let either = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["100"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]}]}}}}),
        );
        assert_eq!(place_in(&either, &c).unwrap(), "c");
    }

    #[test]
    fn runtimes_architectures_preferences_and_locality() {
        let nodes = [
            node(
                "a",
                "4",
                json!({"metadata": {"labels": {"skiff.dev/runtimes": "wasm"}},
                       "status": {"images": [{"names": ["hello:1.0", "sha256:ab"]}]}}),
            ),
            node(
                "b",
                "4",
                json!({"metadata": {"labels": {"skiff.dev/runtimes": "wasm,containerd"}},
                       "spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
            ),
            node(
                "c",
                "4",
                json!({"metadata": {"labels": {"skiff.dev/runtimes": "wasm,containerd",
                                               "kubernetes.io/arch": "arm64"}}}),
            ),
        ];
        let c = cache(&nodes, &[]);
        // An OCI pod goes only where containerd runs, on its image's architecture.
        let oci = pod(json!({"runtimeClassName": "containerd"}));
        let expected = if own_architecture() == "arm64" {
            "c"
        } else {
            "b"
        };
        assert_eq!(place_in(&oci, &c).unwrap(), expected);
        let mut arm = oci.clone();
        arm["metadata"]["annotations"] = json!({"skiff.dev/image-architectures": "arm64"});
        assert_eq!(place_in(&arm, &c).unwrap(), "c");
        arm["metadata"]["annotations"] = json!({"skiff.dev/image-architectures": "riscv64"});
        assert_eq!(
            place_in(&arm, &c).unwrap_err(),
            "0/3 nodes are available: 1 node(s) didn't have the pod's runtime (containerd), \
             2 node(s) didn't match the image's architecture (riscv64)."
        );
        // A Wasm pod is architecture-independent: the arm64 node is as good as any.
        let wasm = pod(json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}}));
        assert_eq!(place_in(&wasm, &c).unwrap(), "c");
        // A node that has the module already, and no PreferNoSchedule taint, wins.
        let hello = pod(json!({"containers": [{"name": "c", "image": "hello:1.0"}]}));
        assert_eq!(place_in(&hello, &c).unwrap(), "a");
        // Preferred node affinity outweighs that.
        let prefers_b = pod(json!({"containers": [{"name": "c", "image": "hello:1.0"}],
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["b"]}]}}]}}}));
        assert_eq!(place_in(&prefers_b, &c).unwrap(), "b");
        // Locality weighs more when the operator says so.
        let scoring = Scoring {
            weights: "ImageLocality=10".parse().unwrap(),
            ..Default::default()
        };
        assert_eq!(place(&prefers_b, &c, &scoring, &mut 0).unwrap(), "a");
        // Without the PreferNoSchedule toleration, b loses its preference.
        let mut untolerated = prefers_b.clone();
        untolerated["spec"]["tolerations"] = json!([]);
        untolerated["spec"]["containers"][0]["image"] = json!("other:1.0");
        let scoring = Scoring {
            weights: "NodeAffinity=1,TaintToleration=3".parse().unwrap(),
            ..Default::default()
        };
        assert_ne!(place(&untolerated, &c, &scoring, &mut 0).unwrap(), "b");
    }

    #[test]
    fn least_most_and_balanced_allocation() {
        let busy = [running("busy", "a", json!({}), "3")];
        let c = cache(
            &[node("a", "4", json!({})), node("b", "4", json!({}))],
            &busy,
        );
        assert_eq!(place_in(&pod(json!({})), &c).unwrap(), "b");
        let packing = Scoring {
            strategy: "MostAllocated".parse().unwrap(),
            ..Default::default()
        };
        assert_eq!(place(&pod(json!({})), &c, &packing, &mut 0).unwrap(), "a");
        // Balanced allocation: with fit weighing nothing, the node whose cpu and memory shares
        // stay closest wins: b (half its cpu, 55% of its memory) over a (half, 5%).
        let nodes = [
            node(
                "a",
                "4",
                json!({"status": {"allocatable": {"memory": "4Gi"}}}),
            ),
            node(
                "b",
                "4",
                json!({"status": {"allocatable": {"memory": "4Gi"}}}),
            ),
        ];
        let memory_hog = json!({"metadata": {"name": "m", "namespace": "default"},
            "spec": {"nodeName": "b", "containers": [{"name": "c", "resources": {"requests": {"memory": "2Gi"}}}]}});
        let c = cache(&nodes, &[memory_hog]);
        let balanced = Scoring {
            weights: "NodeResourcesFit=0".parse().unwrap(),
            ..Default::default()
        };
        let cpu_heavy = pod(json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "2"}}}]}));
        assert_eq!(place(&cpu_heavy, &c, &balanced, &mut 0).unwrap(), "b");
        assert_eq!(place_in(&cpu_heavy, &c).unwrap(), "a");
        assert!(
            "Nope=1"
                .parse::<Weights>()
                .unwrap_err()
                .contains("unknown score plugin \"Nope\"")
        );
        assert!("Bin".parse::<Strategy>().is_err());
    }

    #[test]
    fn pod_affinity_and_anti_affinity_by_topology() {
        let nodes = [node("a", "4", json!({})), node("b", "4", json!({}))];
        let web_on_a = [running("web-1", "a", json!({"app": "web"}), "10m")];
        let c = cache(&nodes, &web_on_a);
        let term = json!([{"labelSelector": {"matchLabels": {"app": "web"}},
                           "topologyKey": "kubernetes.io/hostname"}]);
        let anti = pod(
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}}),
        );
        assert_eq!(place_in(&anti, &c).unwrap(), "b");
        let with = pod(
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}}),
        );
        assert_eq!(place_in(&with, &c).unwrap(), "a");
        let only_a = cache(&nodes[..1], &web_on_a);
        assert_eq!(
            place_in(&anti, &only_a).unwrap_err(),
            "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."
        );
        // Affinity to pods that run nowhere: only a pod that matches its own term may start.
        let empty = cache(&nodes, &[]);
        assert_eq!(
            place_in(&with, &empty).unwrap_err(),
            "0/2 nodes are available: 2 node(s) didn't match pod affinity rules."
        );
        let mut first = with.clone();
        first["metadata"]["labels"] = json!({"app": "web"});
        assert!(place_in(&first, &empty).is_ok());
        // Terms look only at their namespaces.
        let mut elsewhere = anti.clone();
        elsewhere["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0]["namespaces"] = json!(["other"]);
        assert_eq!(place_in(&elsewhere, &only_a).unwrap(), "a");

        // An existing pod's anti-affinity keeps matching newcomers away from its domain.
        let mut guard = running("guard", "a", json!({"app": "db"}), "10m");
        guard["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        let c = cache(&nodes, &[guard.clone()]);
        let mut web = pod(json!({}));
        web["metadata"]["labels"] = json!({"app": "web"});
        assert_eq!(place_in(&web, &c).unwrap(), "b");
        let c = cache(&nodes[..1], &[guard]);
        assert_eq!(
            place_in(&web, &c).unwrap_err(),
            "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."
        );
        // Others are not affected.
        assert_eq!(place_in(&pod(json!({})), &c).unwrap(), "a");
    }

    #[test]
    fn topology_spread_constraints() {
        let nodes = [
            node("a1", "4", json!({"metadata": {"labels": {"zone": "za"}}})),
            node("a2", "4", json!({"metadata": {"labels": {"zone": "za"}}})),
            node("b1", "4", json!({"metadata": {"labels": {"zone": "zb"}}})),
            node("x", "4", json!({"metadata": {"labels": {"zone": null}}})),
        ];
        let web = |name: &str, node: &str| running(name, node, json!({"app": "web"}), "10m");
        let spread = |when: &str| {
            let mut p = pod(json!({"topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": {"app": "web"}}}]}));
            p["metadata"]["labels"] = json!({"app": "web"});
            p
        };
        // Two in za, none in zb: a third may only go to zb.
        let c = cache(&nodes, &[web("w1", "a1"), web("w2", "a2")]);
        assert_eq!(place_in(&spread("DoNotSchedule"), &c).unwrap(), "b1");
        let full_b = node(
            "b1",
            "4",
            json!({"metadata": {"labels": {"zone": "zb"}},
                                            "spec": {"unschedulable": true}}),
        );
        let c = cache(
            &[nodes[0].clone(), nodes[1].clone(), full_b, nodes[3].clone()],
            &[web("w1", "a1"), web("w2", "a2")],
        );
        assert_eq!(
            place_in(&spread("DoNotSchedule"), &c).unwrap_err(),
            "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), \
             1 node(s) were unschedulable, 2 node(s) didn't match pod topology spread constraints."
        );
        // ScheduleAnyway only prefers the emptier domain.
        assert!(place_in(&spread("ScheduleAnyway"), &c).is_ok());
        let c = cache(&nodes, &[web("w1", "a1"), web("w2", "a2")]);
        assert_eq!(place_in(&spread("ScheduleAnyway"), &c).unwrap(), "b1");
        // minDomains: with fewer domains than asked for, the global minimum counts as zero.
        let mut wide = spread("DoNotSchedule");
        wide["spec"]["topologySpreadConstraints"][0]["minDomains"] = json!(3);
        let c = cache(&nodes, &[web("w1", "a1"), web("w3", "b1")]);
        assert_eq!(
            place_in(&wide, &c).unwrap_err(),
            "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), \
             3 node(s) didn't match pod topology spread constraints."
        );
    }

    #[test]
    fn large_clusters_are_sampled_from_a_rotating_start() {
        assert_eq!(nodes_to_find(3), 3);
        assert_eq!(nodes_to_find(100), 100);
        assert_eq!(nodes_to_find(1000), 420);
        assert_eq!(nodes_to_find(5000), 500);
        assert_eq!(nodes_to_find(100_000), 5000);
        let nodes: Vec<Value> = (0..1000)
            .map(|i| node(&format!("n{i:04}"), "4", json!({})))
            .collect();
        let c = cache(&nodes, &[]);
        let mut start = 0;
        place(&pod(json!({})), &c, &Scoring::default(), &mut start).unwrap();
        assert_eq!(start, 420);
        place(&pod(json!({})), &c, &Scoring::default(), &mut start).unwrap();
        assert_eq!(start, 840);
        // A pod that fits nowhere is checked against every node.
        let none = pod(json!({"nodeSelector": {"zone": "nowhere"}}));
        let err = place(&none, &c, &Scoring::default(), &mut start).unwrap_err();
        assert_eq!(
            err,
            "0/1000 nodes are available: 1000 node(s) didn't match Pod's node affinity/selector."
        );
    }
}
