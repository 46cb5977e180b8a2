//! Cluster-scoped objects as kubectl's describers print them: nodes (conditions, capacity, the
//! pods that run there and what they request) and namespaces (status, quotas).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, ResourceQuota};
use skiff_api::quantity::parse_milli;

use super::text::{self, Text};

/// A node, its lease and its non-terminated pods.
pub fn node(t: &mut Text, node: &Node, lease: Option<&Lease>, pods: &[Pod]) {
    let meta = &node.metadata;
    let spec = node.spec.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    let mut roles: Vec<&str> = meta
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role),
            _ if k == "kubernetes.io/role" && !v.is_empty() => Some(v.as_str()),
            _ => None,
        })
        .collect();
    roles.sort();
    roles.dedup();
    t.field(
        0,
        "Roles",
        if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(",")
        },
    );
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    if let Some(created) = &meta.creation_timestamp {
        t.field(0, "CreationTimestamp", text::time(created));
    }
    let taints: Vec<String> = spec
        .taints
        .iter()
        .flatten()
        .map(
            |taint| match taint.value.as_deref().filter(|v| !v.is_empty()) {
                Some(v) => format!("{}={v}:{}", taint.key, taint.effect),
                None => format!("{}:{}", taint.key, taint.effect),
            },
        )
        .collect();
    t.multiline(0, "Taints", &taints);
    t.field(0, "Unschedulable", spec.unschedulable.unwrap_or(false));
    if let Some(lease) = lease {
        let spec = lease.spec.clone().unwrap_or_default();
        let unset = || "<unset>".to_string();
        t.line(0, "Lease:");
        t.field(
            1,
            "HolderIdentity",
            spec.holder_identity.unwrap_or_else(unset),
        );
        t.field(
            1,
            "AcquireTime",
            spec.acquire_time.map_or_else(unset, |m| time_micro(&m.0)),
        );
        t.field(
            1,
            "RenewTime",
            spec.renew_time.map_or_else(unset, |m| time_micro(&m.0)),
        );
    }
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        t.line(0, "Conditions:");
        t.line(
            1,
            "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage",
        );
        t.line(
            1,
            "----\t------\t-----------------\t------------------\t------\t-------",
        );
        for c in conditions {
            let at = |ts: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                ts.as_ref().map(text::time).unwrap_or_default()
            };
            t.line(
                1,
                format!(
                    "{} \t{} \t{} \t{} \t{} \t{}",
                    c.type_,
                    c.status,
                    at(&c.last_heartbeat_time),
                    at(&c.last_transition_time),
                    c.reason.as_deref().unwrap_or_default(),
                    c.message.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    t.line(0, "Addresses:");
    for a in status.addresses.iter().flatten() {
        t.field(1, &a.type_, &a.address);
    }
    let capacity = status.capacity.clone().unwrap_or_default();
    let allocatable = status.allocatable.clone().unwrap_or_default();
    for (title, list) in [("Capacity", &capacity), ("Allocatable", &allocatable)] {
        if !list.is_empty() {
            t.line(0, format!("{title}:"));
            for (name, q) in list {
                t.field(1, name, text::quantity(q));
            }
        }
    }
    let info = status.node_info.clone().unwrap_or_default();
    t.line(0, "System Info:");
    for (key, value) in [
        ("Machine ID", &info.machine_id),
        ("System UUID", &info.system_uuid),
        ("Boot ID", &info.boot_id),
        ("Kernel Version", &info.kernel_version),
        ("OS Image", &info.os_image),
        ("Operating System", &info.operating_system),
        ("Architecture", &info.architecture),
        ("Container Runtime Version", &info.container_runtime_version),
        ("Kubelet Version", &info.kubelet_version),
        ("Kube-Proxy Version", &info.kube_proxy_version),
    ] {
        t.field(1, key, value);
    }
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        t.field(0, "PodCIDR", cidr);
    }
    if let Some(cidrs) = spec.pod_cidrs.as_ref().filter(|c| !c.is_empty()) {
        t.field(0, "PodCIDRs", cidrs.join(","));
    }
    if let Some(id) = spec.provider_id.as_deref().filter(|c| !c.is_empty()) {
        t.field(0, "ProviderID", id);
    }
    let allocatable = if allocatable.is_empty() {
        capacity
    } else {
        allocatable
    };
    let total = |name: &str| {
        allocatable
            .get(name)
            .and_then(|q| parse_milli(&q.0).ok())
            .unwrap_or(0)
    };
    let (cpu, memory) = (total("cpu"), total("memory"));
    t.field(
        0,
        "Non-terminated Pods",
        format!("({} in total)", pods.len()),
    );
    t.line(
        1,
        "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge",
    );
    t.line(
        1,
        "---------\t----\t\t------------\t----------\t---------------\t-------------\t---",
    );
    let mut sums = [0i128; 6];
    for pod in pods {
        let (requests, limits) = requests_and_limits(pod);
        let figures = [
            requests.get("cpu").copied().unwrap_or(0),
            limits.get("cpu").copied().unwrap_or(0),
            requests.get("memory").copied().unwrap_or(0),
            limits.get("memory").copied().unwrap_or(0),
            requests.get("ephemeral-storage").copied().unwrap_or(0),
            limits.get("ephemeral-storage").copied().unwrap_or(0),
        ];
        for (sum, f) in sums.iter_mut().zip(&figures) {
            *sum += f;
        }
        t.line(
            1,
            format!(
                "{}\t{}\t\t{}\t{}\t{}\t{}\t{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
                share(figures[0], cpu, false),
                share(figures[1], cpu, false),
                share(figures[2], memory, true),
                share(figures[3], memory, true),
                text::since(pod.metadata.creation_timestamp.as_ref())
            ),
        );
    }
    t.line(0, "Allocated resources:");
    t.line(
        1,
        "(Total limits may be over 100 percent, i.e., overcommitted.)",
    );
    t.line(1, "Resource\tRequests\tLimits");
    t.line(1, "--------\t--------\t------");
    t.line(
        1,
        format!(
            "cpu\t{}\t{}",
            share(sums[0], cpu, false),
            share(sums[1], cpu, false)
        ),
    );
    t.line(
        1,
        format!(
            "memory\t{}\t{}",
            share(sums[2], memory, true),
            share(sums[3], memory, true)
        ),
    );
    let storage = total("ephemeral-storage");
    t.line(
        1,
        format!(
            "ephemeral-storage\t{}\t{}",
            share(sums[4], storage, true),
            share(sums[5], storage, true)
        ),
    );
}

/// A namespace: its status and the quotas that apply in it.
pub fn namespace(t: &mut Text, ns: &Namespace, quotas: &[ResourceQuota]) {
    let meta = &ns.metadata;
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    t.field(
        0,
        "Status",
        ns.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or_default(),
    );
    t.line(0, "");
    if quotas.is_empty() {
        t.line(0, "No resource quota.");
        return;
    }
    t.line(0, "Resource Quotas");
    for q in quotas {
        let status = q.status.clone().unwrap_or_default();
        let used = status.used.unwrap_or_default();
        t.field(1, "Name", q.metadata.name.as_deref().unwrap_or_default());
        t.line(1, "Resource\tUsed\tHard");
        t.line(1, "--------\t---\t---");
        for (resource, hard) in status.hard.iter().flatten() {
            let used = used
                .get(resource)
                .map_or_else(|| "0".into(), text::quantity);
            t.line(1, format!("{resource}\t{used}\t{}", text::quantity(hard)));
        }
    }
}

fn time_micro(t: &jiff::Timestamp) -> String {
    text::time(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(*t))
}

/// `100m (5%)`: a quantity and its share of what the node offers.
fn share(milli: i128, of: i128, binary: bool) -> String {
    let percent = if of > 0 { milli * 100 / of } else { 0 };
    format!("{} ({percent}%)", text::quantity_milli(milli, binary))
}

/// What a pod requests and limits in milli-units, as kubectl counts it: the sum over its
/// containers, or the largest init container when that is more.
fn requests_and_limits(pod: &Pod) -> (BTreeMap<String, i128>, BTreeMap<String, i128>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let of = |c: &Container| {
        let r = c.resources.clone().unwrap_or_default();
        let parse = |m: Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            m.unwrap_or_default()
                .into_iter()
                .filter_map(|(k, q)| parse_milli(&q.0).ok().map(|v| (k, v)))
                .collect::<BTreeMap<String, i128>>()
        };
        let limits = parse(r.limits);
        let requests = parse(r.requests);
        (requests, limits)
    };
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for c in &spec.containers {
        let (r, l) = of(c);
        for (k, v) in r {
            *requests.entry(k).or_insert(0) += v;
        }
        for (k, v) in l {
            *limits.entry(k).or_insert(0) += v;
        }
    }
    for c in spec.init_containers.iter().flatten() {
        let (r, l) = of(c);
        for (k, v) in r {
            let e = requests.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
        for (k, v) in l {
            let e = limits.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    (requests, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_read_like_kubectl() {
        assert_eq!(share(100, 2000, false), "100m (5%)");
        assert_eq!(share(2000, 2000, false), "2 (100%)");
        assert_eq!(share(0, 2000, false), "0 (0%)");
        assert_eq!(
            share((32i128 << 20) * 1000, (1i128 << 30) * 1000, true),
            "32Mi (3%)"
        );
    }
}
