//! Pods and pod templates, as kubectl's pod describer prints them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, Pod, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::text::{self, Text};

/// Name, node, status, IPs, containers, conditions, volumes, QoS, tolerations of a pod.
pub fn pod(t: &mut Text, pod: &Pod) {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    if let Some(p) = spec.priority {
        t.field(0, "Priority", p);
    }
    if let Some(p) = spec
        .priority_class_name
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        t.field(0, "Priority Class Name", p);
    }
    if let Some(r) = spec.runtime_class_name.as_deref().filter(|r| !r.is_empty()) {
        t.field(0, "Runtime Class Name", r);
    }
    t.field(
        0,
        "Service Account",
        spec.service_account_name.as_deref().unwrap_or_default(),
    );
    match spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        None => t.field(0, "Node", "<none>"),
        Some(node) => t.field(
            0,
            "Node",
            format!("{node}/{}", status.host_ip.as_deref().unwrap_or_default()),
        ),
    }
    if let Some(start) = &status.start_time {
        t.field(0, "Start Time", text::time(start));
    }
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    let phase = status.phase.as_deref().unwrap_or_default();
    match &meta.deletion_timestamp {
        Some(deleted) if !["Failed", "Succeeded"].contains(&phase) => {
            t.field(
                0,
                "Status",
                format!("Terminating (lasts {})", text::since(Some(deleted))),
            );
            t.field(
                0,
                "Termination Grace Period",
                format!("{}s", meta.deletion_grace_period_seconds.unwrap_or(0)),
            );
        }
        _ => t.field(0, "Status", phase),
    }
    if let Some(r) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        t.field(0, "Reason", r);
    }
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        t.field(0, "Message", m);
    }
    t.field(0, "IP", status.pod_ip.as_deref().unwrap_or_default());
    match status.pod_ips.as_deref().unwrap_or_default() {
        [] => t.field(0, "IPs", "<none>"),
        ips => {
            t.line(0, "IPs:");
            for ip in ips {
                t.field(1, "IP", &ip.ip);
            }
        }
    }
    if let Some(c) = controlled_by(meta) {
        t.field(0, "Controlled By", c);
    }
    if let Some(n) = status
        .nominated_node_name
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        t.field(0, "NominatedNodeName", n);
    }
    let statuses = |s: &Option<Vec<ContainerStatus>>| s.clone().unwrap_or_default();
    if let Some(init) = spec.init_containers.as_ref().filter(|c| !c.is_empty()) {
        containers(
            t,
            "Init Containers",
            init,
            Some(&statuses(&status.init_container_statuses)),
            "",
        );
    }
    containers(
        t,
        "Containers",
        &spec.containers,
        Some(&statuses(&status.container_statuses)),
        "",
    );
    if let Some(conditions) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        t.line(0, "Conditions:");
        t.line(1, "Type\tStatus");
        for c in conditions {
            t.line(1, format!("{} \t{} ", c.type_, c.status));
        }
    }
    volumes(t, spec.volumes.as_deref().unwrap_or_default(), "");
    let qos = status.qos_class.clone().unwrap_or_else(|| qos_class(&spec));
    t.field(0, "QoS Class", qos);
    t.map(0, "Node-Selectors", spec.node_selector.as_ref());
    t.tolerations(0, "Tolerations", spec.tolerations.as_ref());
}

/// The pod template of a workload (kubectl's DescribePodTemplate).
pub fn template(t: &mut Text, template: Option<&PodTemplateSpec>) {
    t.line(0, "Pod Template:");
    let Some(template) = template else {
        t.line(1, "<unset>");
        return;
    };
    let meta = template.metadata.clone().unwrap_or_default();
    let spec = template.spec.clone().unwrap_or_default();
    t.map(0, "  Labels", meta.labels.as_ref());
    if meta.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        t.annotations(0, "  Annotations", &meta);
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        t.field(1, "Service Account", sa);
    }
    if let Some(init) = spec.init_containers.as_ref().filter(|c| !c.is_empty()) {
        containers(t, "Init Containers", init, None, "  ");
    }
    containers(t, "Containers", &spec.containers, None, "  ");
    volumes(t, spec.volumes.as_deref().unwrap_or_default(), "  ");
    if let Some(p) = spec
        .priority_class_name
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        t.field(1, "Priority Class Name", p);
    }
    t.map(0, "  Node-Selectors", spec.node_selector.as_ref());
    t.tolerations(0, "  Tolerations", spec.tolerations.as_ref());
}

/// `Kind/name` of the object's controller, if it has one.
pub fn controlled_by(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
}

fn containers(
    t: &mut Text,
    label: &str,
    containers: &[Container],
    statuses: Option<&[ContainerStatus]>,
    space: &str,
) {
    t.line(0, format!("{space}{label}:"));
    let name_indent = if space.is_empty() { "" } else { " " };
    for c in containers {
        let status = statuses.and_then(|s| s.iter().find(|s| s.name == c.name));
        t.line(1, format!("{name_indent}{}:", c.name));
        if let Some(s) = status {
            t.field(
                2,
                "Container ID",
                s.container_id.as_deref().unwrap_or_default(),
            );
        }
        t.field(2, "Image", c.image.as_deref().unwrap_or_default());
        if let Some(s) = status {
            t.field(2, "Image ID", &s.image_id);
        }
        let ports = c.ports.as_deref().unwrap_or_default();
        let protocol = |p: &Option<String>| p.clone().unwrap_or_else(|| "TCP".into());
        let port_list: Vec<String> = ports
            .iter()
            .map(|p| format!("{}/{}", p.container_port, protocol(&p.protocol)))
            .collect();
        let host_list: Vec<String> = ports
            .iter()
            .map(|p| format!("{}/{}", p.host_port.unwrap_or(0), protocol(&p.protocol)))
            .collect();
        for (one, many, list) in [
            ("Port", "Ports", port_list),
            ("Host Port", "Host Ports", host_list),
        ] {
            match list.len() {
                0 => t.field(2, one, "<none>"),
                1 => t.field(2, one, &list[0]),
                _ => t.field(2, many, list.join(", ")),
            }
        }
        for (title, words) in [("Command", &c.command), ("Args", &c.args)] {
            if let Some(words) = words.as_ref().filter(|w| !w.is_empty()) {
                t.line(2, format!("{title}:"));
                for line in words.iter().flat_map(|w| w.split('\n')) {
                    t.line(3, line);
                }
            }
        }
        if let Some(s) = status {
            state(t, "State", s.state.as_ref());
            if let Some(last) = s.last_state.as_ref().filter(|l| l.terminated.is_some()) {
                state(t, "Last State", Some(last));
            }
            t.field(2, "Ready", if s.ready { "True" } else { "False" });
            t.field(2, "Restart Count", s.restart_count);
        }
        resources(t, c.resources.as_ref());
        for (title, probe) in [
            ("Liveness", &c.liveness_probe),
            ("Readiness", &c.readiness_probe),
            ("Startup", &c.startup_probe),
        ] {
            if let Some(p) = probe {
                t.field(2, title, describe_probe(p));
            }
        }
        if let Some(from) = c.env_from.as_ref().filter(|e| !e.is_empty()) {
            t.line(2, "Environment Variables from:");
            for e in from {
                let (name, kind, optional) = match (&e.config_map_ref, &e.secret_ref) {
                    (Some(cm), _) => (cm.name.clone(), "ConfigMap", cm.optional),
                    (None, Some(s)) => (s.name.clone(), "Secret", s.optional),
                    (None, None) => continue,
                };
                let optional = optional.unwrap_or(false);
                match e.prefix.as_deref().filter(|p| !p.is_empty()) {
                    None => t.line(3, format!("{name}\t{kind}\tOptional: {optional}")),
                    Some(p) => t.line(
                        3,
                        format!("{name}\t{kind} with prefix '{p}'\tOptional: {optional}"),
                    ),
                }
            }
        }
        match c.env.as_deref().unwrap_or_default() {
            [] => t.field(2, "Environment", "<none>"),
            env => {
                t.line(2, "Environment:");
                for e in env {
                    let line = match &e.value_from {
                        None => format!("{}:\t{}", e.name, e.value.as_deref().unwrap_or_default()),
                        Some(from) => {
                            if let Some(f) = &from.field_ref {
                                format!(
                                    "{}:\t ({}:{})",
                                    e.name,
                                    f.api_version.as_deref().unwrap_or("v1"),
                                    f.field_path
                                )
                            } else if let Some(r) = &from.resource_field_ref {
                                format!("{}:\t ({})", e.name, r.resource)
                            } else if let Some(k) = &from.config_map_key_ref {
                                format!(
                                    "{}:\t<set to the key '{}' of config map '{}'>\tOptional: {}",
                                    e.name,
                                    k.key,
                                    k.name,
                                    k.optional.unwrap_or(false)
                                )
                            } else if let Some(k) = &from.secret_key_ref {
                                format!(
                                    "{}:\t<set to the key '{}' in secret '{}'>\tOptional: {}",
                                    e.name,
                                    k.key,
                                    k.name,
                                    k.optional.unwrap_or(false)
                                )
                            } else {
                                format!("{}:\t", e.name)
                            }
                        }
                    };
                    t.line(3, line);
                }
            }
        }
        let mut mounts = c.volume_mounts.clone().unwrap_or_default();
        if mounts.is_empty() {
            t.field(2, "Mounts", "<none>");
        } else {
            mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
            t.line(2, "Mounts:");
            for m in mounts {
                let access = if m.read_only == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    None => t.line(3, format!("{} from {} ({access})", m.mount_path, m.name)),
                    Some(sub) => t.line(
                        3,
                        format!("{} from {} ({access},path={sub:?})", m.mount_path, m.name),
                    ),
                }
            }
        }
    }
}

fn state(t: &mut Text, title: &str, state: Option<&ContainerState>) {
    let state = state.cloned().unwrap_or_default();
    if let Some(r) = &state.running {
        t.field(2, title, "Running");
        if let Some(at) = &r.started_at {
            t.field(3, "Started", text::time(at));
        }
    } else if let Some(term) = &state.terminated {
        t.field(2, title, "Terminated");
        if let Some(r) = term.reason.as_deref().filter(|r| !r.is_empty()) {
            t.field(3, "Reason", r);
        }
        if let Some(m) = term.message.as_deref().filter(|m| !m.is_empty()) {
            t.field(3, "Message", m);
        }
        t.field(3, "Exit Code", term.exit_code);
        if let Some(s) = term.signal.filter(|s| *s > 0) {
            t.field(3, "Signal", s);
        }
        let at = |ts: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            ts.as_ref().map(text::time).unwrap_or_default()
        };
        t.field(3, "Started", at(&term.started_at));
        t.field(3, "Finished", at(&term.finished_at));
    } else {
        t.field(2, title, "Waiting");
        if let Some(r) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty())
        {
            t.field(3, "Reason", r);
        }
    }
}

fn resources(t: &mut Text, resources: Option<&ResourceRequirements>) {
    let Some(r) = resources else { return };
    for (title, map) in [("Limits", &r.limits), ("Requests", &r.requests)] {
        if let Some(map) = map.as_ref().filter(|m| !m.is_empty()) {
            t.line(2, format!("{title}:"));
            for (name, q) in map {
                t.field(3, name, text::quantity(q));
            }
        }
    }
}

fn describe_probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    );
    let port = |p: &IntOrString| match p {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    if let Some(e) = &p.exec {
        format!(
            "exec [{}] {attrs}",
            e.command.clone().unwrap_or_default().join(" ")
        )
    } else if let Some(h) = &p.http_get {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let host = h.host.as_deref().unwrap_or_default();
        let path = h.path.as_deref().unwrap_or_default();
        format!("http-get {scheme}://{host}:{}{path} {attrs}", port(&h.port))
    } else if let Some(s) = &p.tcp_socket {
        format!(
            "tcp-socket {}:{} {attrs}",
            s.host.as_deref().unwrap_or_default(),
            port(&s.port)
        )
    } else if let Some(g) = &p.grpc {
        format!(
            "grpc <pod>:{} {} {attrs}",
            g.port,
            g.service.as_deref().unwrap_or_default()
        )
    } else {
        format!("unknown {attrs}")
    }
}

fn volumes(t: &mut Text, volumes: &[Volume], space: &str) {
    if volumes.is_empty() {
        t.field(0, &format!("{space}Volumes"), "<none>");
        return;
    }
    t.line(0, format!("{space}Volumes:"));
    let name_indent = if space.is_empty() { "" } else { " " };
    for v in volumes {
        t.line(1, format!("{name_indent}{}:", v.name));
        if let Some(e) = &v.empty_dir {
            t.field(
                2,
                "Type",
                "EmptyDir (a temporary directory that shares a pod's lifetime)",
            );
            t.field(2, "Medium", e.medium.as_deref().unwrap_or_default());
            let limit = e.size_limit.as_ref().map(text::quantity);
            t.field(2, "SizeLimit", limit.as_deref().unwrap_or("<unset>"));
        } else if let Some(h) = &v.host_path {
            t.field(2, "Type", "HostPath (bare host directory volume)");
            t.field(2, "Path", &h.path);
            t.field(2, "HostPathType", h.type_.as_deref().unwrap_or_default());
        } else if let Some(c) = &v.config_map {
            t.field(2, "Type", "ConfigMap (a volume populated by a ConfigMap)");
            t.field(2, "Name", &c.name);
            t.field(2, "Optional", c.optional.unwrap_or(false));
        } else if let Some(s) = &v.secret {
            t.field(2, "Type", "Secret (a volume populated by a Secret)");
            t.field(
                2,
                "SecretName",
                s.secret_name.as_deref().unwrap_or_default(),
            );
            t.field(2, "Optional", s.optional.unwrap_or(false));
        } else if let Some(d) = &v.downward_api {
            t.field(
                2,
                "Type",
                "DownwardAPI (a volume populated by information about the pod)",
            );
            t.line(2, "Items:");
            for item in d.items.iter().flatten() {
                let source = item
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.clone())
                    .or_else(|| item.resource_field_ref.as_ref().map(|r| r.resource.clone()))
                    .unwrap_or_default();
                t.line(3, format!("{source} -> {}", item.path));
            }
        } else if let Some(p) = &v.persistent_volume_claim {
            t.field(
                2,
                "Type",
                "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)",
            );
            t.field(2, "ClaimName", &p.claim_name);
            t.field(2, "ReadOnly", p.read_only.unwrap_or(false));
        } else if let Some(p) = &v.projected {
            t.field(
                2,
                "Type",
                "Projected (a volume that contains injected data from multiple sources)",
            );
            for s in p.sources.iter().flatten() {
                if let Some(s) = &s.secret {
                    t.field(2, "SecretName", &s.name);
                    t.field(2, "Optional", s.optional.unwrap_or(false));
                } else if s.downward_api.is_some() {
                    t.field(2, "DownwardAPI", "true");
                } else if let Some(c) = &s.config_map {
                    t.field(2, "ConfigMapName", &c.name);
                    t.field(2, "ConfigMapOptional", format!("{:?}", c.optional));
                } else if let Some(tok) = &s.service_account_token {
                    t.field(
                        2,
                        "TokenExpirationSeconds",
                        tok.expiration_seconds.unwrap_or(3607),
                    );
                }
            }
        } else {
            t.line(2, "<unknown>");
        }
    }
}

/// The QoS class the API server would give the pod: Guaranteed when every container limits cpu
/// and memory with requests equal to the limits, BestEffort when none asks for anything,
/// Burstable otherwise.
fn qos_class(spec: &PodSpec) -> String {
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let empty = BTreeMap::new();
    let maps = |c: &Container| {
        let r = c.resources.as_ref();
        (
            r.and_then(|r| r.requests.as_ref())
                .unwrap_or(&empty)
                .clone(),
            r.and_then(|r| r.limits.as_ref()).unwrap_or(&empty).clone(),
        )
    };
    let relevant = |k: &String| k == "cpu" || k == "memory";
    if all.iter().all(|c| {
        let (req, lim) = maps(c);
        !req.keys().any(relevant) && !lim.keys().any(relevant)
    }) {
        return "BestEffort".into();
    }
    let guaranteed = all.iter().all(|c| {
        let (req, lim) = maps(c);
        ["cpu", "memory"].iter().all(|r| {
            let limit = lim.get(*r).map(|q| q.0.as_str());
            let request = req.get(*r).map(|q| q.0.as_str()).or(limit);
            limit.is_some()
                && skiff_api::quantity::parse_milli(limit.unwrap_or_default()).ok()
                    == skiff_api::quantity::parse_milli(request.unwrap_or_default()).ok()
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
    .into()
}
