//! The agent's Node object and its Lease heartbeat.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Config;

/// Registers the Node (or takes over the one left by an earlier run) and sets its status.
pub async fn register(client: &kube::Client, config: &Config, port: u16) -> anyhow::Result<()> {
    let labels = BTreeMap::from([
        (
            "kubernetes.io/hostname".to_string(),
            config.node_name.clone(),
        ),
        (
            "kubernetes.io/os".to_string(),
            std::env::consts::OS.to_string(),
        ),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("skiff.dev/runtimes".to_string(), "wasm".to_string()),
    ]);
    let nodes: Api<Node> = Api::all(client.clone());
    create_or_adopt(
        &nodes,
        &config.node_name,
        &labels,
        json!({}),
        status(config, port),
    )
    .await
}

/// Creates the Node `name` with `labels` and `spec` (or, when it exists, sets its labels), then
/// writes its `status`.
pub(crate) async fn create_or_adopt(
    nodes: &Api<Node>,
    name: &str,
    labels: &BTreeMap<String, String>,
    spec: serde_json::Value,
    status: serde_json::Value,
) -> anyhow::Result<()> {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            nodes
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// What the node reports: capacity, addresses, conditions, runtime info.
fn status(config: &Config, port: u16) -> serde_json::Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{memory_kib}Ki"),
        "pods": config.max_pods.to_string(),
    });
    let mut addresses = vec![json!({"type": "Hostname", "address": config.node_name})];
    if let Some(ip) = &config.node_ip {
        addresses.insert(0, json!({"type": "InternalIP", "address": ip}));
    }
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "conditions": conditions(&now),
        "nodeInfo": node_info("wasmtime://48.0.8"),
    })
}

/// The conditions of a node whose agent is healthy, as of `now`.
pub(crate) fn conditions(now: &str) -> serde_json::Value {
    json!([
        {"type": "Ready", "status": "True", "reason": "AgentReady",
         "message": "skiff agent is posting ready status", "lastHeartbeatTime": now,
         "lastTransitionTime": now},
        {"type": "MemoryPressure", "status": "False", "reason": "AgentHasSufficientMemory",
         "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "DiskPressure", "status": "False", "reason": "AgentHasNoDiskPressure",
         "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "PIDPressure", "status": "False", "reason": "AgentHasSufficientPID",
         "lastHeartbeatTime": now, "lastTransitionTime": now},
    ])
}

/// `status.nodeInfo` of a Skiff node whose runtime reports `runtime_version`.
pub(crate) fn node_info(runtime_version: &str) -> serde_json::Value {
    json!({
        "architecture": arch(),
        "operatingSystem": std::env::consts::OS,
        "kubeletVersion": concat!("v1.33.0-skiff.", env!("CARGO_PKG_VERSION")),
        "kubeProxyVersion": "",
        "containerRuntimeVersion": runtime_version,
        "kernelVersion": "",
        "osImage": "Skiff",
        "machineID": "",
        "systemUUID": "",
        "bootID": "",
    })
}

/// Renews the node's Lease in `kube-node-lease` every `config.heartbeat` until cancelled.
pub async fn heartbeat(
    client: kube::Client,
    config: std::sync::Arc<Config>,
    stop: tokio_util::sync::CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let duration = (config.heartbeat.as_secs() * 4).max(1);
    // Ready is posted again after an outage (the node controller marked it Unknown meanwhile)
    // and once a minute, as the kubelet's status report.
    let mut post_ready = false;
    let mut posted = std::time::Instant::now();
    loop {
        match renew_lease(&leases, &config.node_name, duration).await {
            Ok(()) => {
                if post_ready || posted.elapsed() >= std::time::Duration::from_secs(60) {
                    let now = jiff::Timestamp::now()
                        .strftime("%Y-%m-%dT%H:%M:%SZ")
                        .to_string();
                    let status = json!({"status": {"conditions": conditions(&now)}});
                    match nodes
                        .patch_status(
                            &config.node_name,
                            &PatchParams::default(),
                            &Patch::Merge(&status),
                        )
                        .await
                    {
                        Ok(_) => {
                            post_ready = false;
                            posted = std::time::Instant::now();
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot post node status"),
                    }
                }
            }
            Err(e) => {
                post_ready = true;
                tracing::warn!(error = %e, "cannot renew the node lease (the control plane may be unreachable)");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.heartbeat) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Sets the renew time of node `name`'s Lease to now, creating the Lease (held for
/// `duration_secs`) the first time.
pub(crate) async fn renew_lease(
    leases: &Api<Lease>,
    name: &str,
    duration_secs: u64,
) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    match leases
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": now}})),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": duration_secs,
                         "renewTime": now},
            }))
            .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// Keeps `status.images` (the modules cached on this node, which the scheduler prefers to
/// place pods near) current, writing only when the set changes.
pub async fn report_images(
    client: kube::Client,
    config: std::sync::Arc<Config>,
    runtime: std::sync::Arc<skiff_runtime::WasmRuntime>,
    stop: tokio_util::sync::CancellationToken,
) {
    use skiff_runtime::ContainerRuntime as _;
    let nodes: Api<Node> = Api::all(client);
    let mut reported = serde_json::Value::Null;
    loop {
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for image in runtime.list_images().await.unwrap_or_default() {
            if let Ok(Some(id)) = runtime.image_status(&image).await {
                by_id.entry(id).or_default().push(image);
            }
        }
        let images: Vec<serde_json::Value> = by_id
            .into_iter()
            .map(|(id, mut names)| {
                let hex = id.trim_start_matches("sha256:");
                let size = std::fs::metadata(
                    config
                        .data_dir
                        .join("cache/modules")
                        .join(format!("{hex}.wasm")),
                )
                .map_or(0, |m| m.len());
                names.push(id.clone());
                json!({"names": names, "sizeBytes": size})
            })
            .collect();
        let images = json!(images);
        if images != reported {
            match nodes
                .patch_status(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"images": images}})),
                )
                .await
            {
                Ok(_) => reported = images,
                Err(e) => tracing::debug!(error = %e, "cannot report cached modules"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.heartbeat.min(std::time::Duration::from_secs(5))) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The architecture as Kubernetes names it.
pub(crate) fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
