//! Which nodes a pod fits on, why the others do not, and which fitting node is best.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_api::quantity::parse_milli;

// Score weights, as kube-scheduler's default profile weighs the same plugins.
const WEIGHT_RESOURCES: f64 = 1.0;
const WEIGHT_NODE_AFFINITY: f64 = 2.0;
const WEIGHT_TAINTS: f64 = 3.0;
const WEIGHT_LOCALITY: f64 = 1.0;

/// A node as the scheduler sees it: the object and what its bound pods use.
pub struct NodeInfo {
    /// The Node object.
    pub node: Value,
    /// Requests of the unfinished pods bound to it.
    pub used: Resources,
}

/// The best node for `pod`, or the Kubernetes-style message saying why none fits.
/// `pods` lists every pod; `guarded` the bound pods that have required anti-affinity terms
/// (which the newcomer must respect too).
pub fn place<'a>(
    pod: &Value,
    nodes: &BTreeMap<String, NodeInfo>,
    pods: impl Fn() -> Box<dyn Iterator<Item = &'a Value> + 'a>,
    guarded: impl Iterator<Item = &'a Value>,
) -> Result<String, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let want = requests(pod);
    let mut inter_pod = InterPod::of(pod, nodes, pods);
    // Existing pods' anti-affinity keeps the newcomer away from their topology domains.
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    for other in guarded {
        let Some(node) = holds_resources(other).and_then(|n| nodes.get(n)) else {
            continue;
        };
        let other_ns = other
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        for term in anti_affinity_terms(other) {
            let namespaces: Vec<&str> = term["namespaces"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_else(|| vec![other_ns]);
            let selects = serde_json::from_value(term["labelSelector"].clone())
                .ok()
                .and_then(|s| skiff_api::labels::Selector::from_label_selector(&s).ok())
                .is_some_and(|s| s.matches_json(pod.pointer("/metadata/labels")));
            let key = term["topologyKey"].as_str().unwrap_or("");
            if selects
                && namespaces.contains(&ns)
                && let Some(v) = topology(&node.node, key)
            {
                let terms = &mut inter_pod
                    .get_or_insert_with(|| InterPod { terms: Vec::new() })
                    .terms;
                terms.push((key.to_string(), [v.to_string()].into(), false));
            }
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(f64, &str)> = None;
    for (name, info) in nodes {
        let mut failed = filter(pod, &info.node, &want, &info.used);
        if let Some(reason) = inter_pod.as_ref().and_then(|r| r.refuses(&info.node)) {
            failed.push(reason);
        }
        if failed.is_empty() {
            let score = WEIGHT_RESOURCES * least_allocated(&info.node, &want, &info.used)
                + WEIGHT_NODE_AFFINITY * preferred_affinity(pod, &info.node)
                + WEIGHT_TAINTS * prefer_no_schedule(pod, &info.node)
                + WEIGHT_LOCALITY * module_locality(pod, &info.node);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, name));
            }
        }
        for reason in failed {
            *reasons.entry(reason).or_default() += 1;
        }
    }
    if let Some((_, name)) = best {
        return Ok(name.to_string());
    }
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        parts.join(", ")
    ))
}

/// Required pod affinity and anti-affinity: for each term, the topology values (of its
/// `topologyKey`) where pods matching it run.
struct InterPod {
    /// (topology key, values where matching pods run, affinity (true) or anti-affinity).
    terms: Vec<(String, std::collections::HashSet<String>, bool)>,
}

impl InterPod {
    fn of<'a>(
        pod: &Value,
        nodes: &BTreeMap<String, NodeInfo>,
        pods: impl Fn() -> Box<dyn Iterator<Item = &'a Value> + 'a>,
    ) -> Option<Self> {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut terms = Vec::new();
        for (path, affinity) in [
            (
                "/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                true,
            ),
            (
                "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                false,
            ),
        ] {
            for term in pod
                .pointer(path)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = term["topologyKey"].as_str().unwrap_or("").to_string();
                let selector = serde_json::from_value(term["labelSelector"].clone())
                    .ok()
                    .and_then(|s| skiff_api::labels::Selector::from_label_selector(&s).ok());
                let namespaces: Vec<&str> = term["namespaces"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_else(|| vec![ns]);
                let mut values = std::collections::HashSet::new();
                for other in pods() {
                    let Some(node) = holds_resources(other) else {
                        continue;
                    };
                    let other_ns = other.pointer("/metadata/namespace").and_then(Value::as_str);
                    let matches = selector
                        .as_ref()
                        .is_some_and(|s| s.matches_json(other.pointer("/metadata/labels")));
                    if matches
                        && other_ns.is_some_and(|n| namespaces.contains(&n))
                        && let Some(v) = nodes.get(node).and_then(|i| topology(&i.node, &key))
                    {
                        values.insert(v.to_string());
                    }
                }
                terms.push((key, values, affinity));
            }
        }
        (!terms.is_empty()).then_some(Self { terms })
    }

    /// Why `node` breaks a term, if it does.
    fn refuses(&self, node: &Value) -> Option<String> {
        for (key, values, affinity) in &self.terms {
            let here = topology(node, key).is_some_and(|v| values.contains(v));
            match affinity {
                // A first pod of a group may start anywhere its own term would later match.
                true if !here && !values.is_empty() => {
                    return Some("node(s) didn't match pod affinity rules".into());
                }
                false if here => {
                    return Some("node(s) didn't match pod anti-affinity rules".into());
                }
                _ => {}
            }
        }
        None
    }
}

/// A pod's required anti-affinity terms.
pub fn anti_affinity_terms(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn topology<'n>(node: &'n Value, key: &str) -> Option<&'n str> {
    node.pointer("/metadata/labels")?.get(key)?.as_str()
}

/// Whether a pod still holds its node's resources (bound and not finished).
pub fn holds_resources(pod: &Value) -> Option<&str> {
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
    let done = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    (!node.is_empty() && !done).then_some(node)
}

/// Requested cpu (millicores), memory (bytes) and pods.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    cpu: i128,
    memory: i128,
    pods: i128,
}

impl Resources {
    /// Adds (`sign` 1) or removes (`sign` -1) a pod's requests.
    pub fn account(&mut self, pod: &Resources, sign: i128) {
        self.cpu += sign * pod.cpu;
        self.memory += sign * pod.memory;
        self.pods += sign * pod.pods;
    }
}

/// A pod's requests (it counts as one pod).
pub fn requests(pod: &Value) -> Resources {
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

fn allocatable(node: &Value) -> Resources {
    let get = |name: &str| {
        node.pointer(&format!("/status/allocatable/{name}"))
            .and_then(Value::as_str)
            .and_then(|q| parse_milli(q).ok())
    };
    Resources {
        cpu: get("cpu").unwrap_or(0),
        memory: get("memory").map_or(0, |m| m / 1000),
        pods: get("pods").map_or(110, |p| p / 1000),
    }
}

/// The reasons `node` does not fit `pod` (none: it fits).
fn filter(pod: &Value, node: &Value, want: &Resources, used: &Resources) -> Vec<String> {
    let mut reasons = Vec::new();
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        reasons.push("node(s) were not ready".into());
    }
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        reasons.push("node(s) were unschedulable".into());
    }
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for taint in node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let effect = taint["effect"].as_str().unwrap_or("");
        if matches!(effect, "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
        {
            reasons.push(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint["key"].as_str().unwrap_or(""),
                taint["value"].as_str().unwrap_or("")
            ));
            break;
        }
    }
    let cap = allocatable(node);
    if used.pods + 1 > cap.pods {
        reasons.push("Too many pods".into());
    }
    if want.cpu > 0 && used.cpu + want.cpu > cap.cpu {
        reasons.push("Insufficient cpu".into());
    }
    if want.memory > 0 && used.memory + want.memory > cap.memory {
        reasons.push("Insufficient memory".into());
    }
    if let Some(runtime) = needed_runtime(pod) {
        let offered = node
            .pointer("/metadata/labels/skiff.dev~1runtimes")
            .and_then(Value::as_str)
            .unwrap_or("wasm");
        if !offered.split(',').any(|r| r.trim() == runtime) {
            reasons.push(format!("node(s) didn't have the pod's runtime ({runtime})"));
        }
    }
    if !matches_selector(pod, node) {
        reasons.push("node(s) didn't match Pod's node affinity/selector".into());
    }
    reasons
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

/// Preferred node affinity: the weight of the matching preferred terms, as a share of all.
fn preferred_affinity(pod: &Value, node: &Value) -> f64 {
    let Some(terms) = pod
        .pointer("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
    else {
        return 0.0;
    };
    let labels = node.pointer("/metadata/labels");
    let (mut matched, mut total) = (0.0, 0.0);
    for term in terms {
        let weight = term["weight"].as_f64().unwrap_or(0.0);
        total += weight;
        let exprs = term["preference"]["matchExpressions"].as_array();
        let ok = exprs.is_some_and(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or("");
                requirement(e, labels.and_then(|l| l[key].as_str()))
            })
        });
        if ok {
            matched += weight;
        }
    }
    if total > 0.0 { matched / total } else { 0.0 }
}

/// PreferNoSchedule taints the pod does not tolerate count against a node.
fn prefer_no_schedule(pod: &Value, node: &Value) -> f64 {
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let untolerated = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "PreferNoSchedule")
        .filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
        .count();
    1.0 / (1.0 + untolerated as f64)
}

/// Module locality: the share of the pod's modules the node already has (`status.images`), so
/// edge bandwidth goes to other things.
fn module_locality(pod: &Value, node: &Value) -> f64 {
    let images: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str())
        .collect();
    if images.is_empty() {
        return 0.0;
    }
    let cached: Vec<&str> = node
        .pointer("/status/images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|i| i["names"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    images.iter().filter(|i| cached.contains(i)).count() as f64 / images.len() as f64
}

fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = toleration["effect"].as_str().unwrap_or("");
    if !effect.is_empty() && Some(effect) != taint["effect"].as_str() {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or("");
    let op = toleration["operator"].as_str().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if Some(key) != taint["key"].as_str() {
        return false;
    }
    match op {
        "Exists" => true,
        _ => toleration["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""),
    }
}

fn matches_selector(pod: &Value, node: &Value) -> bool {
    let labels = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && selector.iter().any(|(k, v)| label(k) != v.as_str())
    {
        return false;
    }
    let Some(terms) = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    let name = node.pointer("/metadata/name").and_then(Value::as_str);
    // Terms are ORed; the requirements within one term are ANDed.
    terms.iter().any(|term| {
        let exprs = term["matchExpressions"].as_array().into_iter().flatten();
        let fields = term["matchFields"].as_array().into_iter().flatten();
        let mut any = false;
        let ok = exprs
            .map(|e| (e, label(e["key"].as_str().unwrap_or(""))))
            .chain(fields.map(|e| (e, name.filter(|_| e["key"] == "metadata.name"))))
            .all(|(e, value)| {
                any = true;
                requirement(e, value)
            });
        ok && any
    })
}

fn requirement(e: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = e["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let number = |s: &str| s.parse::<i64>().ok();
    match e["operator"].as_str().unwrap_or("") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => !value.is_some_and(|v| values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Higher for nodes with more cpu and memory left after placing the pod.
fn least_allocated(node: &Value, want: &Resources, used: &Resources) -> f64 {
    let cap = allocatable(node);
    let free = |total: i128, taken: i128| {
        if total <= 0 {
            0.0
        } else {
            (total - taken).max(0) as f64 / total as f64
        }
    };
    (free(cap.cpu, used.cpu + want.cpu)
        + free(cap.memory, used.memory + want.memory)
        + free(cap.pods, used.pods + 1))
        / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none<'a>() -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        Box::new(std::iter::empty())
    }

    fn nodes(list: Vec<(String, Value)>, bound: &[Value]) -> BTreeMap<String, NodeInfo> {
        let mut out: BTreeMap<String, NodeInfo> = list
            .into_iter()
            .map(|(n, node)| {
                (
                    n,
                    NodeInfo {
                        node,
                        used: Resources::default(),
                    },
                )
            })
            .collect();
        for p in bound {
            if let Some(info) = holds_resources(p).and_then(|n| out.get_mut(n)) {
                info.used.account(&requests(p), 1);
            }
        }
        out
    }

    fn node(name: &str, cpu: &str, extra: Value) -> (String, Value) {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"zone": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        crate::api::patch::apply(&mut n, crate::api::PatchType::Merge, &extra, "Node").unwrap();
        (name.into(), n)
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

    #[test]
    fn filters_and_counts_reasons() {
        let list = vec![
            node("a", "1", json!({})),
            node(
                "b",
                "4",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node("c", "4", json!({"spec": {"unschedulable": true}})),
        ];
        let nodes = nodes(list.clone(), &[]);
        let big = pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}}}]}),
        );
        assert_eq!(
            place(&big, &nodes, none, std::iter::empty()).unwrap_err(),
            "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable."
        );
        let tolerant = pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}}}],
                                  "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        );
        assert_eq!(
            place(&tolerant, &nodes, none, std::iter::empty()).unwrap(),
            "b"
        );
        let selected = pod(json!({"nodeSelector": {"zone": "a"}}));
        assert_eq!(
            place(&selected, &nodes, none, std::iter::empty()).unwrap(),
            "a"
        );
        let affinity = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}},
            "tolerations": [{"operator": "Exists"}]}),
        );
        assert_eq!(
            place(&affinity, &nodes, none, std::iter::empty()).unwrap(),
            "b"
        );
        // Bound pods use up what a node has.
        let bound: Vec<Value> = (0..10)
            .map(|_| json!({"spec": {"nodeName": "a", "containers": []}}))
            .collect();
        let err = place(
            &selected,
            &self::nodes(list, &bound),
            none,
            std::iter::empty(),
        )
        .unwrap_err();
        assert!(err.contains("1 Too many pods"), "{err}");
        assert_eq!(
            place(&pod(json!({})), &BTreeMap::new(), none, std::iter::empty()).unwrap_err(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn runtimes_preferences_and_locality() {
        let list = vec![
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
        ];
        let nodes = nodes(list, &[]);
        // An OCI pod goes only where containerd runs.
        let oci = pod(json!({"runtimeClassName": "containerd"}));
        assert_eq!(place(&oci, &nodes, none, std::iter::empty()).unwrap(), "b");
        let only_a = self::nodes(vec![node("a", "4", json!({}))], &[]);
        assert_eq!(
            place(&oci, &only_a, none, std::iter::empty()).unwrap_err(),
            "0/1 nodes are available: 1 node(s) didn't have the pod's runtime (containerd)."
        );
        // A node that has the module already, and no PreferNoSchedule taint, wins.
        let hello = pod(json!({"containers": [{"name": "c", "image": "hello:1.0"}]}));
        assert_eq!(
            place(&hello, &nodes, none, std::iter::empty()).unwrap(),
            "a"
        );
        // Preferred node affinity outweighs that.
        let prefers_b = pod(json!({"containers": [{"name": "c", "image": "hello:1.0"}],
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["b"]}]}}]}}}));
        assert_eq!(
            place(&prefers_b, &nodes, none, std::iter::empty()).unwrap(),
            "b"
        );
    }

    #[test]
    fn pod_anti_affinity_spreads_replicas_by_topology() {
        let nodes = nodes(
            vec![node("a", "4", json!({})), node("b", "4", json!({}))],
            &[],
        );
        let web_on_a = [
            json!({"metadata": {"namespace": "default", "labels": {"app": "web"}},
                               "spec": {"nodeName": "a", "containers": []}}),
        ];
        let existing = || -> Box<dyn Iterator<Item = &Value>> { Box::new(web_on_a.iter()) };
        let term = json!([{"labelSelector": {"matchLabels": {"app": "web"}},
                           "topologyKey": "kubernetes.io/hostname"}]);
        let mut labelled = nodes;
        for (name, info) in labelled.iter_mut() {
            info.node["metadata"]["labels"]["kubernetes.io/hostname"] = json!(name);
        }
        let anti = pod(
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}}),
        );
        assert_eq!(
            place(&anti, &labelled, existing, std::iter::empty()).unwrap(),
            "b"
        );
        let with = pod(
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}}),
        );
        assert_eq!(
            place(&with, &labelled, existing, std::iter::empty()).unwrap(),
            "a"
        );
        let only_a: BTreeMap<String, NodeInfo> =
            labelled.into_iter().filter(|(n, _)| n == "a").collect();
        assert_eq!(
            place(&anti, &only_a, existing, std::iter::empty()).unwrap_err(),
            "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."
        );
    }

    #[test]
    fn prefers_the_least_allocated_node() {
        let busy = [json!({"spec": {"nodeName": "a", "containers": [
            {"name": "c", "resources": {"requests": {"cpu": "3"}}}]}})];
        let nodes = nodes(
            vec![node("a", "4", json!({})), node("b", "4", json!({}))],
            &busy,
        );
        assert_eq!(
            place(&pod(json!({})), &nodes, none, std::iter::empty()).unwrap(),
            "b"
        );
    }
}
