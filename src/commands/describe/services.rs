//! Services, as kubectl's service describer prints them, with the endpoints their
//! EndpointSlices list.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::text::Text;

/// A Service: selector, type, addresses, each port with its endpoints, traffic policies.
pub fn service(t: &mut Text, svc: &Service, slices: &[EndpointSlice]) {
    let meta = &svc.metadata;
    let spec = svc.spec.clone().unwrap_or_default();
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    let selector: Vec<String> = spec
        .selector
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    t.field(
        0,
        "Selector",
        if selector.is_empty() {
            "<none>".into()
        } else {
            selector.join(",")
        },
    );
    t.field(0, "Type", spec.type_.as_deref().unwrap_or_default());
    if let Some(p) = &spec.ip_family_policy {
        t.field(0, "IP Family Policy", p);
    }
    let or_none = |list: Option<&Vec<String>>| match list.filter(|l| !l.is_empty()) {
        Some(l) => l.join(","),
        None => "<none>".into(),
    };
    t.field(0, "IP Families", or_none(spec.ip_families.as_ref()));
    t.field(0, "IP", spec.cluster_ip.as_deref().unwrap_or_default());
    t.field(0, "IPs", or_none(spec.cluster_ips.as_ref()));
    if let Some(ips) = spec.external_ips.as_ref().filter(|l| !l.is_empty()) {
        t.field(0, "External IPs", ips.join(","));
    }
    if let Some(name) = spec.external_name.as_deref().filter(|n| !n.is_empty()) {
        t.field(0, "External Name", name);
    }
    for p in spec.ports.iter().flatten() {
        let name = p.name.clone().filter(|n| !n.is_empty());
        let shown = name.clone().unwrap_or_else(|| "<unset>".into());
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        t.line(0, format!("Port:\t{shown}\t{}/{protocol}", p.port));
        let target = match &p.target_port {
            Some(IntOrString::Int(i)) => i.to_string(),
            Some(IntOrString::String(s)) => s.clone(),
            None => p.port.to_string(),
        };
        t.field(0, "TargetPort", format!("{target}/{protocol}"));
        if let Some(node_port) = p.node_port.filter(|n| *n != 0) {
            t.line(0, format!("NodePort:\t{shown}\t{node_port}/{protocol}"));
        }
        t.field(
            0,
            "Endpoints",
            endpoints(slices, name.as_deref().unwrap_or_default()),
        );
    }
    t.field(
        0,
        "Session Affinity",
        spec.session_affinity.as_deref().unwrap_or_default(),
    );
    if let Some(p) = spec
        .external_traffic_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        t.field(0, "External Traffic Policy", p);
    }
    if let Some(p) = &spec.internal_traffic_policy {
        t.field(0, "Internal Traffic Policy", p);
    }
}

/// The ready endpoints of port `port` as `ip:port`, at most three and a count of the rest;
/// `<none>` without slices.
fn endpoints(slices: &[EndpointSlice], port: &str) -> String {
    if slices.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    for slice in slices {
        for p in slice.ports.iter().flatten() {
            if p.name.as_deref().unwrap_or_default() != port {
                continue;
            }
            let Some(number) = p.port else { continue };
            for e in &slice.endpoints {
                if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for addr in &e.addresses {
                    if list.len() < MAX {
                        list.push(if addr.contains(':') {
                            format!("[{addr}]:{number}")
                        } else {
                            format!("{addr}:{number}")
                        });
                    }
                    count += 1;
                }
            }
        }
    }
    let shown = list.join(",");
    if count > MAX {
        format!("{shown} + {} more...", count - MAX)
    } else {
        shown
    }
}
