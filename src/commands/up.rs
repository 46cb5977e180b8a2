//! `skiff up`: a whole cluster in one process — the control plane on the embedded store and
//! one local node — with the example modules in its module store and manifests applied.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
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
            result = bring_up(&kubeconfig_path, &node_name, modules, &manifests) => result,
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

/// Pushes the example modules, waits for the node, applies the manifests and shows their pods
/// coming up.
async fn bring_up(
    kubeconfig_path: &std::path::Path,
    node_name: &str,
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
    // Pods applied before the node is Ready would first be refused by the scheduler.
    let nodes = kube::Api::<Node>::all(client.clone());
    kube::runtime::wait::await_condition(nodes, node_name, |node: Option<&Node>| {
        node.and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await
    .context("cannot watch the node")?;
    let mut applier = Applier::new(client.clone());
    let mut applied = Vec::new();
    for m in manifests {
        let done = applier.apply(m, "default").await?;
        println!("{done}");
        applied.push(done);
    }
    show_pods(client, manifests, &applied).await
}

/// Prints the pods of the applied objects as their status changes, until they are up: the
/// applied Pods themselves, the pods of applied workloads (ReplicaSets, Deployments, through
/// the ReplicaSets they make, ReplicationControllers, StatefulSets: by their selector; Jobs: by
/// owner), and pods other applied objects own.
async fn show_pods(
    client: kube::Client,
    manifests: &[Manifest],
    applied: &[Applied],
) -> anyhow::Result<()> {
    let mut tracker = Tracker::new(manifests, applied);
    if tracker.done() {
        println!("Ready. Ctrl-C stops Skiff.");
        return Ok(());
    }
    let stream =
        watcher(kube::Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.try_next().await.context("cannot watch pods")? {
        let changed = match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => tracker.update(&pod),
            watcher::Event::Delete(pod) => {
                tracker.remove(&pod);
                None
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        };
        if let Some(line) = changed {
            println!("{line}");
        }
        if tracker.done() {
            break;
        }
    }
    println!("Ready. Ctrl-C stops Skiff.");
    Ok(())
}

/// Which pods `skiff up` shows, and whether they are all up.
struct Tracker {
    /// The applied Pods: (namespace, name).
    pods: HashSet<(String, String)>,
    /// Applied workloads whose pods are waited for.
    workloads: Vec<Workload>,
    /// The uids of every applied object: pods they own are shown too.
    owners: HashSet<String>,
    /// The pods shown and their last status.
    shown: BTreeMap<(String, String), Shown>,
}

struct Workload {
    namespace: String,
    pods: PodsOf,
    /// How many of its pods must be up.
    replicas: usize,
}

enum PodsOf {
    Selector(skiff_api::labels::Selector),
    Owner(String),
}

struct Shown {
    status: String,
    labels: BTreeMap<String, String>,
    owners: Vec<String>,
}

impl Shown {
    fn up(&self) -> bool {
        ["Running", "Succeeded", "Failed"].contains(&self.status.as_str())
    }
}

impl Tracker {
    fn new(manifests: &[Manifest], applied: &[Applied]) -> Self {
        let mut pods = HashSet::new();
        let mut workloads = Vec::new();
        for (m, a) in manifests.iter().zip(applied) {
            let namespace = a.namespace.clone().unwrap_or_default();
            let spec = &m.object["spec"];
            let count = |v: &serde_json::Value, default: u64| v.as_u64().unwrap_or(default);
            match (m.object["apiVersion"].as_str(), a.kind.as_str()) {
                (Some("v1"), "Pod") => {
                    pods.insert((namespace, a.name.clone()));
                }
                (Some("apps/v1"), "Deployment" | "ReplicaSet" | "StatefulSet")
                | (Some("v1"), "ReplicationController") => {
                    let selector = if a.kind == "ReplicationController" {
                        let labels = spec["selector"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default();
                        skiff_api::labels::Selector::parse(&labels).ok()
                    } else {
                        serde_json::from_value(spec["selector"].clone())
                            .ok()
                            .and_then(|s| skiff_api::labels::Selector::from_label_selector(&s).ok())
                    };
                    // A workload that selects nothing, or everything, is not waited for.
                    if let Some(selector) = selector.filter(|s| !s.is_empty()) {
                        workloads.push(Workload {
                            namespace,
                            pods: PodsOf::Selector(selector),
                            replicas: count(&spec["replicas"], 1) as usize,
                        });
                    }
                }
                (Some("batch/v1"), "Job") => {
                    let parallelism = count(&spec["parallelism"], 1);
                    let completions = count(&spec["completions"], parallelism);
                    workloads.push(Workload {
                        namespace,
                        pods: PodsOf::Owner(a.uid.clone()),
                        replicas: parallelism.min(completions) as usize,
                    });
                }
                _ => {}
            }
        }
        Self {
            pods,
            workloads,
            owners: applied.iter().map(|a| a.uid.clone()).collect(),
            shown: BTreeMap::new(),
        }
    }

    fn workload_has(w: &Workload, namespace: &str, shown: &Shown) -> bool {
        w.namespace == namespace
            && match &w.pods {
                PodsOf::Selector(s) => s.matches(&shown.labels),
                PodsOf::Owner(uid) => shown.owners.contains(uid),
            }
    }

    /// Records the pod's status; the line to print when it is one of ours and changed.
    fn update(&mut self, pod: &Pod) -> Option<String> {
        let key = key(pod);
        let shown = Shown {
            status: status(pod),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            owners: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .collect(),
        };
        let ours = self.pods.contains(&key)
            || shown.owners.iter().any(|o| self.owners.contains(o))
            || self
                .workloads
                .iter()
                .any(|w| Self::workload_has(w, &key.0, &shown));
        if !ours {
            return None;
        }
        if self
            .shown
            .get(&key)
            .is_some_and(|s| s.status == shown.status)
        {
            return None;
        }
        let ns = if key.0 == "default" {
            String::new()
        } else {
            format!(" -n {}", key.0)
        };
        let line = format!("pod/{}{ns} {}", key.1, shown.status);
        self.shown.insert(key, shown);
        Some(line)
    }

    fn remove(&mut self, pod: &Pod) {
        self.shown.remove(&key(pod));
    }

    /// Whether every applied pod is up, every workload has its replicas up, and no pod shown is
    /// still on its way up or down.
    fn done(&self) -> bool {
        self.pods
            .iter()
            .all(|k| self.shown.get(k).is_some_and(Shown::up))
            && self.workloads.iter().all(|w| {
                self.shown
                    .iter()
                    .filter(|((ns, _), s)| s.up() && Self::workload_has(w, ns, s))
                    .count()
                    >= w.replicas
            })
            && self.shown.values().all(Shown::up)
    }
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
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
    use crate::commands::manifest::Outcome;

    fn applied(text: &str) -> (Vec<Manifest>, Vec<Applied>) {
        let manifests = manifest::parse("test.yaml", text).unwrap();
        let applied = manifests
            .iter()
            .enumerate()
            .map(|(i, m)| Applied {
                resource: String::new(),
                kind: m.object["kind"].as_str().unwrap().to_string(),
                namespace: Some("default".into()),
                name: m.object["metadata"]["name"].as_str().unwrap().to_string(),
                uid: format!("uid-{i}"),
                outcome: Outcome::Created,
            })
            .collect();
        (manifests, applied)
    }

    fn pod(name: &str, labels: serde_json::Value, owner: Option<&str>, phase: &str) -> Pod {
        let owners: Vec<serde_json::Value> = owner
            .map(|uid| {
                serde_json::json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                   "uid": uid, "controller": true})
            })
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                         "ownerReferences": owners},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn deployment_pods_are_shown_until_the_replicas_run() {
        let (manifests, applied) = applied(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  \
             selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}}\n",
        );
        let mut t = Tracker::new(&manifests, &applied);
        assert!(!t.done());
        // Pods of the Deployment's ReplicaSet: owned by an object skiff up never saw.
        let a = pod(
            "web-1",
            serde_json::json!({"app": "web"}),
            Some("rs-uid"),
            "Pending",
        );
        assert_eq!(t.update(&a).as_deref(), Some("pod/web-1 Pending"));
        assert_eq!(
            t.update(&a),
            None,
            "an unchanged status is not printed again"
        );
        assert!(
            t.update(&pod(
                "other",
                serde_json::json!({"app": "db"}),
                None,
                "Running"
            ))
            .is_none()
        );
        let a = pod(
            "web-1",
            serde_json::json!({"app": "web"}),
            Some("rs-uid"),
            "Running",
        );
        assert_eq!(t.update(&a).as_deref(), Some("pod/web-1 Running"));
        assert!(!t.done(), "one of two replicas");
        let b = pod(
            "web-2",
            serde_json::json!({"app": "web"}),
            Some("rs-uid"),
            "Running",
        );
        t.update(&b);
        assert!(t.done());
        // A pod on its way out holds things up until it is gone.
        let old = pod(
            "web-0",
            serde_json::json!({"app": "web"}),
            Some("old-rs"),
            "Pending",
        );
        t.update(&old);
        assert!(!t.done());
        t.remove(&old);
        assert!(t.done());
    }

    #[test]
    fn pods_jobs_and_owned_pods() {
        let (manifests, applied) = applied(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\n\
             apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        );
        let mut t = Tracker::new(&manifests, &applied);
        t.update(&pod("p", serde_json::json!({}), None, "Running"));
        assert!(!t.done(), "the job's pod has not run");
        let j = pod("j-x", serde_json::json!({}), Some("uid-1"), "Succeeded");
        assert_eq!(t.update(&j).as_deref(), Some("pod/j-x Succeeded"));
        assert!(t.done());
    }

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
