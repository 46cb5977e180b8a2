//! `meta.k8s.io/v1` Table output: the columns `kubectl get` prints, per kind, as upstream's
//! printers define them.

use serde_json::{Value, json};

use skiff_api::age::human_duration;

use crate::api::object::{self, meta_str};
use crate::api::resources::ResourceDef;

/// What each row carries as its `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// A PartialObjectMetadata (the default).
    Metadata,
    /// The whole object (`includeObject=Object`, used by `--sort-by`).
    Object,
    /// Nothing.
    None,
}

/// Builds a Table of `items`.
pub fn table(
    res: &ResourceDef,
    items: &[Value],
    rv: u64,
    continue_token: Option<&str>,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    let rows: Vec<Value> = items.iter().map(|o| row(res, o, now, include)).collect();
    let mut t =
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = Value::Array(
            columns(res.kind)
                .iter()
                .map(|(name, ty, priority)| {
                    let format = if *name == "Name" { "name" } else { "" };
                    json!({"name": name, "type": ty, "format": format, "description": description(name), "priority": priority})
                })
                .collect(),
        );
    }
    t
}

fn description(column: &str) -> String {
    match column {
        "Name" => "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names".into(),
        "Age" => "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.".into(),
        other => other.to_string(),
    }
}

const S: &str = "string";
const I: &str = "integer";

fn columns(kind: &str) -> Vec<(&'static str, &'static str, u8)> {
    match kind {
        "Pod" => vec![
            ("Name", S, 0),
            ("Ready", S, 0),
            ("Status", S, 0),
            ("Restarts", S, 0),
            ("Age", S, 0),
            ("IP", S, 1),
            ("Node", S, 1),
            ("Nominated Node", S, 1),
            ("Readiness Gates", S, 1),
        ],
        "Deployment" => vec![
            ("Name", S, 0),
            ("Ready", S, 0),
            ("Up-to-date", I, 0),
            ("Available", I, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            ("Name", S, 0),
            ("Desired", I, 0),
            ("Current", I, 0),
            ("Ready", I, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        "Job" => vec![
            ("Name", S, 0),
            ("Status", S, 0),
            ("Completions", S, 0),
            ("Duration", S, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        "CronJob" => vec![
            ("Name", S, 0),
            ("Schedule", S, 0),
            ("Timezone", S, 0),
            ("Suspend", "boolean", 0),
            ("Active", I, 0),
            ("Last Schedule", S, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        "Service" => vec![
            ("Name", S, 0),
            ("Type", S, 0),
            ("Cluster-IP", S, 0),
            ("External-IP", S, 0),
            ("Port(s)", S, 0),
            ("Age", S, 0),
            ("Selector", S, 1),
        ],
        "Endpoints" => vec![("Name", S, 0), ("Endpoints", S, 0), ("Age", S, 0)],
        "EndpointSlice" => vec![
            ("Name", S, 0),
            ("AddressType", S, 0),
            ("Ports", S, 0),
            ("Endpoints", S, 0),
            ("Age", S, 0),
        ],
        "Node" => vec![
            ("Name", S, 0),
            ("Status", S, 0),
            ("Roles", S, 0),
            ("Age", S, 0),
            ("Version", S, 0),
            ("Internal-IP", S, 1),
            ("External-IP", S, 1),
            ("OS-Image", S, 1),
            ("Kernel-Version", S, 1),
            ("Container-Runtime", S, 1),
        ],
        "Namespace" => vec![("Name", S, 0), ("Status", S, 0), ("Age", S, 0)],
        "ConfigMap" => vec![("Name", S, 0), ("Data", I, 0), ("Age", S, 0)],
        "Secret" => vec![
            ("Name", S, 0),
            ("Type", S, 0),
            ("Data", I, 0),
            ("Age", S, 0),
        ],
        "ServiceAccount" => vec![("Name", S, 0), ("Secrets", I, 0), ("Age", S, 0)],
        "Event" => vec![
            ("Last Seen", S, 0),
            ("Type", S, 0),
            ("Reason", S, 0),
            ("Object", S, 0),
            ("Subobject", S, 1),
            ("Source", S, 1),
            ("Message", S, 0),
            ("First Seen", S, 1),
            ("Count", I, 1),
            ("Name", S, 1),
        ],
        "Role" | "ClusterRole" => vec![("Name", S, 0), ("Created At", "date", 0)],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            ("Name", S, 0),
            ("Role", S, 0),
            ("Age", S, 0),
            ("Users", S, 1),
            ("Groups", S, 1),
            ("ServiceAccounts", S, 1),
        ],
        "Lease" => vec![("Name", S, 0), ("Holder", S, 0), ("Age", S, 0)],
        "LimitRange" => vec![("Name", S, 0), ("Created At", S, 0)],
        "WasmPolicy" => vec![
            ("Name", S, 0),
            ("Publishers", S, 0),
            ("Host Paths", S, 0),
            ("Egress", S, 0),
            ("Age", S, 0),
        ],
        "HorizontalPodAutoscaler" => vec![
            ("Name", S, 0),
            ("Reference", S, 0),
            ("Targets", S, 0),
            ("MinPods", S, 0),
            ("MaxPods", I, 0),
            ("Replicas", I, 0),
            ("Age", S, 0),
        ],
        "ResourceQuota" => vec![
            ("Name", S, 0),
            ("Age", S, 0),
            ("Request", S, 0),
            ("Limit", S, 0),
        ],
        _ => vec![("Name", S, 0), ("Age", S, 0)],
    }
}

fn row(res: &ResourceDef, o: &Value, now: jiff::Timestamp, include: IncludeObject) -> Value {
    let cells = cells(res.kind, o, now);
    let object = match include {
        IncludeObject::Object => o.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
        }),
        IncludeObject::None => Value::Null,
    };
    let mut r = json!({"cells": cells});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn n(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.into()
    }
}

fn age(o: &Value, now: jiff::Timestamp) -> String {
    since(meta_str(o, "creationTimestamp"), now)
}

fn since(ts: &str, now: jiff::Timestamp) -> String {
    match object::parse_time(ts) {
        Some(t) => human_duration((now - t).get_seconds()),
        None => "<unknown>".into(),
    }
}

fn template_columns(o: &Value, template: &str) -> (String, String) {
    let containers = o
        .pointer(&format!("{template}/spec/containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let parsed = serde_json::from_value(sel.clone())
        .ok()
        .and_then(|s| skiff_api::labels::Selector::from_label_selector(&s).ok());
    match parsed {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".into(),
    }
}

fn map_selector_string(sel: Option<&Value>) -> String {
    match sel.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn cells(kind: &str, o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(object::name(o));
    let age = json!(age(o, now));
    match kind {
        "Pod" => {
            let (ready, status, restarts) = pod_summary(o, now);
            vec![
                name,
                json!(ready),
                json!(status),
                json!(restarts),
                age,
                json!(or_none(s(o, "/status/podIP"))),
                json!(or_none(s(o, "/spec/nodeName"))),
                json!(or_none(s(o, "/status/nominatedNodeName"))),
                json!("<none>"),
            ]
        }
        "Deployment" => {
            let (c, i) = template_columns(o, "/spec/template");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                json!(n(o, "/status/updatedReplicas")),
                json!(n(o, "/status/availableReplicas")),
                age,
                json!(c),
                json!(i),
                json!(label_selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "ReplicaSet" | "ReplicationController" => {
            let (c, i) = template_columns(o, "/spec/template");
            let sel = if kind == "ReplicaSet" {
                label_selector_string(o.pointer("/spec/selector"))
            } else {
                map_selector_string(o.pointer("/spec/selector"))
            };
            vec![
                name,
                json!(n(o, "/spec/replicas")),
                json!(n(o, "/status/replicas")),
                json!(n(o, "/status/readyReplicas")),
                age,
                json!(c),
                json!(i),
                json!(sel),
            ]
        }
        "Job" => {
            let (c, i) = template_columns(o, "/spec/template");
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("FailureTarget") {
                "FailureTarget"
            } else if has("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else if has("Suspended") || o.pointer("/spec/suspend") == Some(&json!(true)) {
                "Suspended"
            } else if object::is_terminating(o) {
                "Terminating"
            } else {
                "Running"
            };
            let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(c) => format!("{}/{c}", n(o, "/status/succeeded")),
                None => format!(
                    "{}/1 of {}",
                    n(o, "/status/succeeded"),
                    n(o, "/spec/parallelism").max(1)
                ),
            };
            let start = object::parse_time(s(o, "/status/startTime"));
            let end = object::parse_time(s(o, "/status/completionTime")).unwrap_or(now);
            let duration = start
                .map(|st| human_duration((end - st).get_seconds()))
                .unwrap_or_default();
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                age,
                json!(c),
                json!(i),
                json!(label_selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "CronJob" => {
            let (c, i) = template_columns(o, "/spec/jobTemplate/spec/template");
            let last = s(o, "/status/lastScheduleTime");
            let last = if last.is_empty() {
                "<none>".into()
            } else {
                since(last, now)
            };
            let active = o
                .pointer("/status/active")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                name,
                json!(s(o, "/spec/schedule")),
                json!(or_none(s(o, "/spec/timeZone"))),
                json!(
                    o.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(active),
                json!(last),
                age,
                json!(c),
                json!(i),
                json!(label_selector_string(
                    o.pointer("/spec/jobTemplate/spec/selector")
                )),
            ]
        }
        "Service" => {
            let ty = s(o, "/spec/type");
            let external = match ty {
                "ExternalName" => s(o, "/spec/externalName").to_string(),
                "LoadBalancer" => {
                    let ips: Vec<String> = o
                        .pointer("/status/loadBalancer/ingress")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|i| {
                            if s(i, "/ip").is_empty() {
                                s(i, "/hostname").to_string()
                            } else {
                                s(i, "/ip").to_string()
                            }
                        })
                        .collect();
                    if ips.is_empty() {
                        "<pending>".into()
                    } else {
                        ips.join(",")
                    }
                }
                _ => o
                    .pointer("/spec/externalIPs")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .filter(|x| !x.is_empty())
                    .unwrap_or_else(|| "<none>".into()),
            };
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let node = p
                        .get("nodePort")
                        .and_then(Value::as_i64)
                        .map(|np| format!(":{np}"))
                        .unwrap_or_default();
                    format!("{}{node}/{}", n(p, "/port"), s(p, "/protocol"))
                })
                .collect();
            let ports = if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(",")
            };
            vec![
                name,
                json!(ty),
                json!(or_none(s(o, "/spec/clusterIP"))),
                json!(external),
                json!(ports),
                age,
                json!(map_selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "Endpoints" => vec![name, json!(format_endpoints(o)), age],
        "EndpointSlice" => vec![
            name,
            json!(s(o, "/addressType")),
            json!(format_slice_ports(o)),
            json!(format_slice_endpoints(o)),
            age,
        ],
        "Node" => {
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut status = match conds
                .iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"].as_str().unwrap_or(""))
            {
                Some("True") => "Ready".to_string(),
                Some("False") => "NotReady".to_string(),
                _ => "Unknown".to_string(),
            };
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = object::labels(o)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .filter(|r| !r.is_empty())
                .collect();
            roles.sort();
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                name,
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".into()
                } else {
                    roles.join(",")
                }),
                age,
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(or_none(s(o, "/status/nodeInfo/osImage"))),
                json!(or_none(s(o, "/status/nodeInfo/kernelVersion"))),
                json!(or_none(s(o, "/status/nodeInfo/containerRuntimeVersion"))),
            ]
        }
        "Namespace" => vec![name, json!(s(o, "/status/phase")), age],
        "ConfigMap" => {
            let count = ["data", "binaryData"]
                .iter()
                .map(|f| o.get(*f).and_then(Value::as_object).map_or(0, |m| m.len()))
                .sum::<usize>();
            vec![name, json!(count), age]
        }
        "Secret" => vec![
            name,
            json!(s(o, "/type")),
            json!(
                o.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            ),
            age,
        ],
        "ServiceAccount" => vec![
            name,
            json!(
                o.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            age,
        ],
        "Event" => {
            let last = [
                s(o, "/lastTimestamp"),
                s(o, "/eventTime"),
                s(o, "/firstTimestamp"),
                meta_str(o, "creationTimestamp"),
            ]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or("");
            let first = [
                s(o, "/firstTimestamp"),
                s(o, "/eventTime"),
                meta_str(o, "creationTimestamp"),
            ]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or("");
            let obj = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            let source = [s(o, "/source/component"), s(o, "/reportingComponent")]
                .into_iter()
                .find(|t| !t.is_empty())
                .unwrap_or("");
            let source = if s(o, "/source/host").is_empty() {
                source.to_string()
            } else {
                format!("{source}, {}", s(o, "/source/host"))
            };
            vec![
                json!(since(last, now)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(obj),
                json!(s(o, "/involvedObject/fieldPath")),
                json!(source),
                json!(s(o, "/message").trim()),
                json!(since(first, now)),
                json!(n(o, "/count").max(1)),
                name,
            ]
        }
        "Role" | "ClusterRole" => vec![name, json!(s(o, "/metadata/creationTimestamp"))],
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = |kind: &str| -> String {
                o["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|sub| sub["kind"] == kind)
                    .map(|sub| match kind {
                        "ServiceAccount" => format!("{}/{}", s(sub, "/namespace"), s(sub, "/name")),
                        _ => s(sub, "/name").to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                age,
                json!(subjects("User")),
                json!(subjects("Group")),
                json!(subjects("ServiceAccount")),
            ]
        }
        "Lease" => vec![name, json!(s(o, "/spec/holderIdentity")), age],
        "LimitRange" => vec![name, json!(s(o, "/metadata/creationTimestamp"))],
        "WasmPolicy" => {
            let list = |pointer: &str, field: Option<&str>| match o.pointer(pointer) {
                Some(Value::Array(items)) if items.is_empty() => "<none>".to_string(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| field.map_or(i.as_str(), |f| i[f].as_str()))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => "<any>".to_string(),
            };
            let egress = if o.pointer("/spec/egress/allowed") == Some(&json!(false)) {
                "<none>".to_string()
            } else {
                list("/spec/egress/hosts", None)
            };
            vec![
                name,
                json!(list("/spec/publishers", Some("name"))),
                json!(list("/spec/hostPaths", None)),
                json!(egress),
                age,
            ]
        }
        "HorizontalPodAutoscaler" => {
            let reference = format!(
                "{}/{}",
                s(o, "/spec/scaleTargetRef/kind"),
                s(o, "/spec/scaleTargetRef/name")
            );
            let targets = hpa_targets(o);
            let min = o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "<unset>".into());
            vec![
                name,
                json!(reference),
                json!(targets),
                json!(min),
                json!(n(o, "/spec/maxReplicas")),
                json!(n(o, "/status/currentReplicas")),
                age,
            ]
        }
        "ResourceQuota" => {
            let hard = o
                .pointer("/status/hard")
                .or(o.pointer("/spec/hard"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let used = o
                .pointer("/status/used")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let (mut req, mut lim) = (Vec::new(), Vec::new());
            for (k, v) in &hard {
                let entry = format!(
                    "{k}: {}/{}",
                    used.get(k).and_then(Value::as_str).unwrap_or("0"),
                    v.as_str().unwrap_or("")
                );
                if k.starts_with("limits.") {
                    lim.push(entry)
                } else {
                    req.push(entry)
                }
            }
            vec![name, age, json!(req.join(", ")), json!(lim.join(", "))]
        }
        _ => vec![name, age],
    }
}

fn hpa_targets(o: &Value) -> String {
    // v1 view.
    if let Some(t) = o
        .pointer("/spec/targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
    {
        let cur = o
            .pointer("/status/currentCPUUtilizationPercentage")
            .and_then(Value::as_i64)
            .map(|c| format!("{c}%"))
            .unwrap_or_else(|| "<unknown>".into());
        return format!("cpu: {cur}/{t}%");
    }
    let metrics = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    metrics
        .iter()
        .map(|m| {
            let res = s(m, "/resource/name");
            match m
                .pointer("/resource/target/averageUtilization")
                .and_then(Value::as_i64)
            {
                Some(t) => format!("{res}: <unknown>/{t}%"),
                None => format!("{res}: <unknown>/{}", s(m, "/resource/target/averageValue")),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Endpoints column of `kubectl get endpoints` (upstream's `formatEndpoints`): the first
/// three ready `ip:port`s, then how many more.
fn format_endpoints(o: &Value) -> String {
    let subsets = o
        .pointer("/subsets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let (mut list, mut more, mut count) = (Vec::new(), false, 0);
    let host_port = |ip: &str, port: Option<i64>| match port {
        None => ip.to_string(),
        Some(p) if ip.contains(':') => format!("[{ip}]:{p}"),
        Some(p) => format!("{ip}:{p}"),
    };
    'subsets: for subset in &subsets {
        let addresses = subset["addresses"].as_array().cloned().unwrap_or_default();
        let ports: Vec<Option<i64>> = match subset["ports"].as_array() {
            Some(p) if !p.is_empty() => p.iter().map(|p| Some(n(p, "/port"))).collect(),
            // Headless Services may have no ports.
            _ => vec![None],
        };
        for port in ports {
            count += addresses.len();
            for a in &addresses {
                if list.len() == MAX {
                    more = true;
                    break 'subsets;
                }
                list.push(host_port(s(a, "/ip"), port));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

/// The Ports column of `kubectl get endpointslices` (upstream's `formatDiscoveryPorts`).
fn format_slice_ports(o: &Value) -> String {
    let ports = o
        .pointer("/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let list: Vec<String> = ports
        .iter()
        .map(
            |p| match (p.get("port").and_then(Value::as_i64), p["name"].as_str()) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".into(),
            },
        )
        .collect();
    with_more(&list)
}

/// The Endpoints column of `kubectl get endpointslices` (upstream's
/// `formatDiscoveryEndpoints`): every address, the first three shown.
fn format_slice_endpoints(o: &Value) -> String {
    let addresses: Vec<String> = o
        .pointer("/endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    with_more(&addresses)
}

/// Upstream's `listWithMoreString`: three items, then how many more; `<unset>` for none.
fn with_more(items: &[String]) -> String {
    match items.len() {
        0 => "<unset>".into(),
        1..=3 => items.join(","),
        k => format!("{} + {} more...", items[..3].join(","), k - 3),
    }
}

/// Ready, Status and Restarts of a pod, as `kubectl get pods` shows them.
fn pod_summary(o: &Value, now: jiff::Timestamp) -> (String, String, String) {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut reason = s(o, "/status/phase").to_string();
    if !s(o, "/status/reason").is_empty() {
        reason = s(o, "/status/reason").to_string();
    }
    let mut restarts = 0;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut note_restart = |c: &Value, restarts: &mut i64| {
        *restarts += n(c, "/restartCount");
        if let Some(t) = object::parse_time(s(c, "/lastState/terminated/finishedAt"))
            && last_restart.is_none_or(|l| t > l)
        {
            last_restart = Some(t);
        }
    };
    let mut initializing = false;
    let inits = o
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let init_total = o
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for (i, c) in inits.iter().enumerate() {
        note_restart(c, &mut restarts);
        let term = c.pointer("/state/terminated");
        if term.is_some_and(|t| n(t, "/exitCode") == 0) {
            continue;
        }
        initializing = true;
        reason = if let Some(t) = term {
            let r = s(t, "/reason");
            if r.is_empty() {
                format!("Init:ExitCode:{}", n(t, "/exitCode"))
            } else {
                format!("Init:{r}")
            }
        } else {
            let w = s(c, "/state/waiting/reason");
            if !w.is_empty() && w != "PodInitializing" {
                format!("Init:{w}")
            } else {
                format!("Init:{i}/{init_total}")
            }
        };
        break;
    }
    let mut ready = 0;
    if !initializing {
        let mut has_running = false;
        for c in o
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .rev()
        {
            note_restart(c, &mut restarts);
            let w = s(c, "/state/waiting/reason");
            let t = c.pointer("/state/terminated");
            if !w.is_empty() {
                reason = w.to_string();
            } else if let Some(t) = t {
                let r = s(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if n(t, "/signal") != 0 {
                    format!("Signal:{}", n(t, "/signal"))
                } else {
                    format!("ExitCode:{}", n(t, "/exitCode"))
                };
            } else if c.pointer("/ready") == Some(&json!(true))
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if object::is_terminating(o) {
        reason = if s(o, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration((now - t).get_seconds())
        ),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_columns_read_as_kubectl_prints_them() {
        assert_eq!(format_endpoints(&json!({})), "<none>");
        // Only not-ready addresses: an empty column, as upstream.
        let not_ready = json!({"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.1"}],
                                            "ports": [{"port": 80}]}]});
        assert_eq!(format_endpoints(&not_ready), "");
        let five = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"},
            {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}, {"ip": "fd00::5"}], "ports": [{"port": 80}, {"port": 81}]}]});
        assert_eq!(
            format_endpoints(&five),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
        );
        let headless = json!({"subsets": [{"addresses": [{"ip": "fd00::5"}]}]});
        assert_eq!(format_endpoints(&headless), "fd00::5");
        let v6 = json!({"subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]}]});
        assert_eq!(format_endpoints(&v6), "[fd00::5]:80");

        assert_eq!(format_slice_ports(&json!({"ports": []})), "<unset>");
        assert_eq!(format_slice_endpoints(&json!({"endpoints": []})), "<unset>");
        let slice = json!({"ports": [{"name": "http", "port": 8080}, {"name": "any"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
                          {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(format_slice_ports(&slice), "8080,any");
        assert_eq!(
            format_slice_endpoints(&slice),
            "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."
        );
    }
}
