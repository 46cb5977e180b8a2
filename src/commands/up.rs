//! `skiff up`: a whole cluster in one process — the control plane on the embedded store and
//! one local node — with the example modules in its module store and manifests applied.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio_util::sync::CancellationToken;

use super::kubeconfig::{self, Kubeconfig};
use super::manifest::{self, Applied, Applier, Manifest};
use super::server::{ControlPlane, Settings};

/// The modules the default manifests run, as WebAssembly text compiled at start, so no wasm32
/// toolchain is needed: (reference, source).
const MODULES: [(&str, &str); 3] = [
    (
        "ticker:1.0",
        include_str!("../../examples/up/modules/ticker.wat"),
    ),
    (
        "log-writer:1.0",
        include_str!("../../examples/up/modules/log-writer.wat"),
    ),
    (
        "log-tail:1.0",
        include_str!("../../examples/up/modules/log-tail.wat"),
    ),
];

/// The manifests applied when none are given: (file, text).
const DEFAULT_MANIFESTS: [(&str, &str); 2] = [
    (
        "examples/up/ticker.yaml",
        include_str!("../../examples/up/ticker.yaml"),
    ),
    (
        "examples/up/shared-log.yaml",
        include_str!("../../examples/up/shared-log.yaml"),
    ),
];

/// Run a whole cluster in this process: the control plane and one node, with the example
/// modules pushed and MANIFESTs applied (by default the example pods in examples/up). Ctrl-C
/// stops it; running it again on the same data directory resumes.
#[derive(Args)]
pub struct Up {
    /// Directory for the store, credentials, kubeconfig, modules and the node's pods
    /// (default: $XDG_DATA_HOME/skiff, or ~/.local/share/skiff).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve the Kubernetes API on (HTTPS); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Manifests to apply: files, directories or `-` for stdin (multi-document YAML or JSON).
    #[arg(value_name = "MANIFEST")]
    manifests: Vec<PathBuf>,
}

impl Up {
    pub async fn execute(self) -> anyhow::Result<()> {
        // Everything that can be wrong with the input fails before anything starts.
        let manifests = if self.manifests.is_empty() {
            let mut all = Vec::new();
            for (file, text) in DEFAULT_MANIFESTS {
                all.extend(manifest::parse(file, text)?);
            }
            all
        } else {
            manifest::read(&self.manifests)?
        };
        let modules = MODULES
            .iter()
            .map(|(reference, text)| {
                let bytes = wat::parse_str(text)
                    .with_context(|| format!("cannot compile the example module {reference}"))?;
                Ok((*reference, bytes))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let data_dir = self.data_dir.unwrap_or_else(kubeconfig::default_data_dir);

        let control_plane = ControlPlane::start(Settings::new(data_dir.clone(), self.listen))
            .await
            .context("cannot start the control plane")?;
        let node_name = super::agent::host_name();
        let token = std::fs::read_to_string(data_dir.join("node-token"))
            .context("cannot read the node token")?;
        let mut config = skiff_agent::Config::new(
            control_plane.url.clone(),
            token.trim().to_string(),
            data_dir.join("node"),
            node_name.clone(),
        );
        config.node_ip = Some("127.0.0.1".into());
        // The logs endpoint on any free port: another kubelet or Skiff may hold 10250.
        config.port = 0;
        let stop_node = CancellationToken::new();
        let mut node = tokio::spawn(skiff_agent::run(config, stop_node.clone()));

        let kubeconfig_path = control_plane.kubeconfig();
        println!(
            "Skiff is up: the API at {}, one node ({node_name}), data in {}.",
            control_plane.url,
            data_dir.display()
        );
        println!("kubeconfig: {}", kubeconfig_path.display());
        println!("To use kubectl, in another terminal:");
        println!("    export KUBECONFIG={}", kubeconfig_path.display());

        let signal = super::shutdown_signal();
        tokio::pin!(signal);
        let outcome = tokio::select! {
            result = bring_up(&kubeconfig_path, modules, &manifests) => result,
            result = &mut node => Err(node_ended(result)),
            _ = &mut signal => Ok(()),
        };
        let outcome = match outcome {
            Ok(()) => tokio::select! {
                result = &mut node => Err(node_ended(result)),
                _ = &mut signal => Ok(()),
            },
            Err(e) => Err(e),
        };
        println!(
            "Stopping: the node stops its pods, then the control plane stops (Ctrl-C again forces)."
        );
        stop_node.cancel();
        if !node.is_finished() {
            match node.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "the node stopped with an error")
                }
                Err(e) => tracing::warn!(error = %e, "the node task failed"),
            }
        }
        control_plane.stop().await?;
        outcome?;
        println!("Stopped. `skiff up` on the same data directory resumes.");
        Ok(())
    }
}

fn node_ended(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match result {
        Ok(Ok(())) => anyhow::anyhow!("the node stopped unexpectedly"),
        Ok(Err(e)) => e.context("the node failed"),
        Err(e) => anyhow::Error::from(e).context("the node failed"),
    }
}

/// Pushes the example modules, applies the manifests and shows their pods coming up.
async fn bring_up(
    kubeconfig_path: &std::path::Path,
    modules: Vec<(&str, Vec<u8>)>,
    manifests: &[Manifest],
) -> anyhow::Result<()> {
    let config = Kubeconfig::load(Some(kubeconfig_path))?;
    for (reference, bytes) in modules {
        super::push::upload(&config, reference, bytes, None, false)
            .await
            .with_context(|| format!("cannot push the example module {reference}"))?;
    }
    let client = kubeconfig::client(Some(kubeconfig_path)).await?;
    let mut applier = Applier::new(client.clone());
    let mut applied = Vec::new();
    for m in manifests {
        let done = applier.apply(m, "default").await?;
        println!("{done}");
        applied.push(done);
    }
    show_pods(client, &applied).await
}

/// Prints the pods of the applied objects (the Pods themselves, and pods the others own) as
/// their status changes, until every one of them is Running (or has finished).
async fn show_pods(client: kube::Client, applied: &[Applied]) -> anyhow::Result<()> {
    let wanted: HashSet<(String, String)> = applied
        .iter()
        .filter(|a| a.kind == "Pod")
        .map(|a| (a.namespace.clone().unwrap_or_default(), a.name.clone()))
        .collect();
    let owners: HashSet<&str> = applied.iter().map(|a| a.uid.as_str()).collect();
    if wanted.is_empty() {
        println!("Ready. Ctrl-C stops Skiff.");
        return Ok(());
    }
    let mut shown: BTreeMap<(String, String), String> = BTreeMap::new();
    let stream = watcher(kube::Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(pod) = stream.try_next().await.context("cannot watch pods")? {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let owned = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| owners.contains(o.uid.as_str()));
        if !wanted.contains(&key) && !owned {
            continue;
        }
        let status = status(&pod);
        if shown.get(&key) != Some(&status) {
            let ns = if key.0 == "default" {
                String::new()
            } else {
                format!(" -n {}", key.0)
            };
            println!("pod/{}{ns} {status}", key.1);
            shown.insert(key, status);
        }
        let up = |s: &String| ["Running", "Succeeded", "Failed"].contains(&s.as_str());
        if wanted.iter().all(|k| shown.get(k).is_some_and(up)) && shown.values().all(up) {
            break;
        }
    }
    println!("Ready. Ctrl-C stops Skiff.");
    Ok(())
}

/// The pod's phase, with the reason a container is waiting or has stopped when there is one.
fn status(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let reason = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| {
            let state = c.state.as_ref()?;
            state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .or_else(|| state.terminated.as_ref().and_then(|t| t.reason.clone()))
                .map(|r| format!("{}: {r}", c.name))
        });
    match reason {
        Some(r) => format!("{phase} ({r})"),
        None => phase,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_modules_and_manifests_are_valid() {
        for (reference, text) in MODULES {
            let bytes = wat::parse_str(text).unwrap_or_else(|e| panic!("{reference}: {e}"));
            assert!(bytes.starts_with(b"\0asm"));
        }
        let images: Vec<String> = DEFAULT_MANIFESTS
            .iter()
            .flat_map(|(file, text)| manifest::parse(file, text).unwrap())
            .flat_map(|m| {
                m.object["spec"]["containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|c| c["image"].as_str().unwrap().to_string())
            .collect();
        assert!(!images.is_empty());
        for image in images {
            assert!(
                MODULES.iter().any(|(r, _)| *r == image),
                "{image} is not among the modules skiff up pushes"
            );
        }
    }
}
