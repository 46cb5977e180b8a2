//! Pods bound to this node: one worker per pod drives it through its lifecycle (volumes, image
//! pulls, init containers in order, containers, probes, restarts with back-off, graceful
//! deletion) and reports its status.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use skiff_runtime::{
    ContainerConfig, ContainerRuntime, ContainerState, ExitReason, Limits, Mount, MountSource,
    PodSandboxConfig, WasmRuntime,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::functions::{Functions, pod_ip};
use crate::probes::{self, Verdict};
use crate::status::Statuses;

/// Everything a pod worker needs.
pub struct Pods {
    client: kube::Client,
    /// Where the workers hand their pods' statuses to be written.
    statuses: Statuses,
    config: Arc<Config>,
    runtime: Arc<WasmRuntime>,
    /// The HTTP functions this node serves.
    functions: Arc<Functions>,
    /// The cluster's WasmPolicies, checked again before each container is created.
    policies: Arc<crate::policy::Policies>,
    /// The HTTP client of `httpGet` probes.
    probe_client: reqwest::Client,
    workers: Mutex<HashMap<String, Worker>>,
    /// Set when the agent stops: its pods stop with it but stay kept for the next start.
    stopping: std::sync::atomic::AtomicBool,
}

struct Worker {
    spec: watch::Sender<Pod>,
    gone: CancellationToken,
}

impl Pods {
    /// A pod manager for this node.
    pub fn new(
        client: kube::Client,
        statuses: Statuses,
        config: Arc<Config>,
        runtime: Arc<WasmRuntime>,
        functions: Arc<Functions>,
        policies: Arc<crate::policy::Policies>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            statuses,
            config,
            runtime,
            functions,
            policies,
            probe_client: probes::client(),
            workers: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Where the pods bound to this node are kept, so they run on while the control plane is
    /// out of reach, also across an agent restart.
    fn local_dir(&self) -> PathBuf {
        self.config.data_dir.join("state").join("pods")
    }

    fn keep_local(&self, pod: &Pod) {
        let (Some(uid), Ok(bytes)) = (&pod.metadata.uid, serde_json::to_vec(pod)) else {
            return;
        };
        let dir = self.local_dir();
        let path = dir.join(format!("{uid}.json"));
        let tmp = path.with_extension("tmp");
        let _ = std::fs::create_dir_all(&dir);
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    fn drop_local(&self, uid: &str) {
        let _ = std::fs::remove_file(self.local_dir().join(format!("{uid}.json")));
    }

    /// Starts the pods kept locally (after a restart, before the control plane answers).
    pub fn resume_local(self: Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(self.local_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pod) = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Pod>(&b).ok())
            {
                tracing::info!(pod = ?pod.metadata.name, "resuming a pod kept locally");
                self.clone().update(pod);
            }
        }
    }

    /// Watches the pods bound to this node (list, then watch, resuming after errors) and keeps
    /// one worker per pod until `stop`. After each (re)list, pods that are no longer bound here
    /// are stopped; the others go on without being recreated.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let stream = watcher(pods, watcher::Config::default().fields(&selector));
        let mut stream = std::pin::pin!(stream);
        let mut listed: Option<std::collections::HashSet<String>> = None;
        loop {
            let event = tokio::select! {
                e = stream.try_next() => e,
                _ = stop.cancelled() => break,
            };
            match event {
                Ok(Some(watcher::Event::Init)) => listed = Some(Default::default()),
                Ok(Some(watcher::Event::InitApply(pod))) => {
                    if let (Some(set), Some(uid)) = (&mut listed, &pod.metadata.uid) {
                        set.insert(uid.clone());
                    }
                    self.clone().update(pod)
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    if let Some(set) = listed.take() {
                        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
                        for (uid, worker) in workers.iter() {
                            if !set.contains(uid) {
                                worker.gone.cancel();
                            }
                        }
                    }
                }
                Ok(Some(watcher::Event::Apply(pod))) => self.clone().update(pod),
                Ok(Some(watcher::Event::Delete(pod))) => self.forget(&pod),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "watching pods failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        for worker in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            worker.gone.cancel();
        }
    }

    fn update(self: Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.keep_local(&pod);
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(worker) = workers.get(&uid) {
            worker.spec.send_replace(pod);
            return;
        }
        let (spec, rx) = watch::channel(pod);
        let gone = CancellationToken::new();
        workers.insert(
            uid.clone(),
            Worker {
                spec,
                gone: gone.clone(),
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            let mut worker = PodWorker::new(this.clone(), rx, gone);
            let result = worker.run().await;
            let stopping = this.stopping.load(std::sync::atomic::Ordering::Relaxed);
            match result {
                Ok(()) if !stopping => this.drop_local(&uid),
                Ok(()) => {}
                Err(e) => tracing::warn!(pod = %worker.key, error = %e, "pod worker failed"),
            }
            // When the agent stops, the writer still writes what was set before.
            if !stopping {
                this.statuses.forget(&uid);
            }
            this.workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        });
    }

    fn forget(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid
            && let Some(worker) = self
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(uid)
        {
            worker.gone.cancel();
        }
    }
}

/// One container of a pod, as the worker tracks it.
#[derive(Default)]
struct Slot {
    /// The runtime's container of the current attempt.
    id: Option<String>,
    image_id: String,
    restarts: u32,
    /// Why it is not running, while waiting (ErrImagePull, CrashLoopBackOff, ...).
    waiting: Option<(String, String)>,
    /// The previous attempt's end, shown as lastState.
    last: Option<Value>,
    /// When a restart is due.
    restart_at: Option<Instant>,
    /// Consecutive failed pull attempts.
    pull_failures: u32,
    /// Consecutive attempts the runtime refused to create the container (a policy, a volume).
    create_failures: u32,
    /// Its probes' results for the current attempt.
    health: probes::Health,
}

/// A probe attempt's outcome: container index, probe, container id, result.
type Probed = (usize, probes::Kind, String, Result<(), String>);

struct PodWorker {
    pods: Arc<Pods>,
    spec: watch::Receiver<Pod>,
    gone: CancellationToken,
    key: String,
    dir: PathBuf,
    sandbox: Option<String>,
    init: Vec<Slot>,
    main: Vec<Slot>,
    /// Index of the init container running or next to run; `init.len()` once all succeeded.
    init_done: usize,
    started_at: String,
    /// The status last handed to the writer.
    reported: Value,
    /// Probe attempts under way.
    probing: JoinSet<Probed>,
    /// Each pod condition's status and when it last changed.
    transitions: HashMap<&'static str, (bool, String)>,
}

impl PodWorker {
    fn new(pods: Arc<Pods>, spec: watch::Receiver<Pod>, gone: CancellationToken) -> Self {
        let pod = spec.borrow().clone();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = pods
            .config
            .data_dir
            .join("pods")
            .join(format!("{ns}_{name}_{uid}"));
        let spec_ref = pod.spec.as_ref();
        let init = spec_ref
            .and_then(|s| s.init_containers.as_ref())
            .map_or(0, Vec::len);
        let main = spec_ref.map_or(0, |s| s.containers.len());
        Self {
            pods,
            spec,
            gone,
            key: format!("{ns}/{name}"),
            dir,
            sandbox: None,
            init: (0..init).map(|_| Slot::default()).collect(),
            main: (0..main).map(|_| Slot::default()).collect(),
            init_done: 0,
            started_at: now(),
            reported: Value::Null,
            probing: JoinSet::new(),
            transitions: HashMap::new(),
        }
    }

    fn pod(&self) -> Pod {
        self.spec.borrow().clone()
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let pod = self.pod();
        let meta = &pod.metadata;
        let sandbox = self
            .pods
            .runtime
            .run_pod_sandbox(&PodSandboxConfig {
                name: meta.name.clone().unwrap_or_default(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                uid: meta.uid.clone().unwrap_or_default(),
                log_directory: self.dir.join("logs"),
                labels: meta.labels.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await?;
        self.sandbox = Some(sandbox);
        let mounts = match self.volumes(&pod).await {
            Ok(m) => m,
            Err(e) => {
                self.report_failure("FailedMount", &e.to_string()).await;
                HashMap::new()
            }
        };
        loop {
            let pod = self.pod();
            if self.gone.is_cancelled() {
                self.stop_all(Duration::ZERO).await;
                return self.cleanup().await;
            }
            if let Some(grace) = deleting(&pod) {
                for c in pod.spec.iter().flat_map(|s| &s.containers) {
                    self.event(
                        &pod,
                        Some(&c.name),
                        "Normal",
                        "Killing",
                        format!("Stopping container {}", c.name),
                    );
                }
                self.stop_all(grace).await;
                self.report(&pod).await;
                self.cleanup().await?;
                // The final status (its containers terminated) goes before the pod does.
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                if !self.pods.statuses.flush(uid).await {
                    tracing::warn!(pod = %self.key, "deleting the pod before its final status was written");
                }
                return self.finish_deletion(&pod).await;
            }
            self.step(&pod, &mounts).await;
            self.serve(&pod).await;
            self.probe(&pod).await;
            self.report(&pod).await;
            tokio::select! {
                _ = self.spec.changed() => {}
                _ = self.gone.cancelled() => {}
                Some(Ok(outcome)) = self.probing.join_next(), if !self.probing.is_empty() => {
                    self.probed(&pod, outcome).await;
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Moves the pod one step on: pulls, starts, notices exits, restarts.
    async fn step(&mut self, pod: &Pod, mounts: &HashMap<String, PathBuf>) {
        let Some(spec) = pod.spec.clone() else {
            return;
        };
        let policy = spec.restart_policy.clone().unwrap_or("Always".into());
        let init = spec.init_containers.clone().unwrap_or_default();
        while self.init_done < init.len() {
            let i = self.init_done;
            let state = self
                .drive(pod, &init[i], true, i, mounts, "OnFailure")
                .await;
            match state {
                Some(ContainerState::Exited { exit_code: 0, .. }) => self.init_done += 1,
                Some(ContainerState::Exited { .. }) if policy == "Never" => return,
                _ => return,
            }
        }
        for (i, c) in spec.containers.iter().enumerate() {
            self.drive(pod, c, false, i, mounts, &policy).await;
        }
    }

    /// Brings one container towards running: pull, create and start, or restart when its
    /// policy says so and its back-off has passed. Returns its state.
    async fn drive(
        &mut self,
        pod: &Pod,
        container: &Container,
        init: bool,
        index: usize,
        mounts: &HashMap<String, PathBuf>,
        policy: &str,
    ) -> Option<ContainerState> {
        let runtime = self.pods.runtime.clone();
        let config = self.pods.config.clone();
        let image = container.image.clone().unwrap_or_default();
        let current = match &self.slot(init, index).id {
            Some(id) => runtime.container_status(id).await.ok().map(|s| s.state),
            None => None,
        };
        match &current {
            Some(ContainerState::Running { .. } | ContainerState::Created) => return current,
            Some(ContainerState::Exited {
                exit_code,
                reason,
                message,
                started_at,
                finished_at,
            }) => {
                let restart = match policy {
                    "Always" => true,
                    "OnFailure" => *exit_code != 0,
                    _ => false,
                };
                let id = self.slot(init, index).id.clone().unwrap_or_default();
                let terminated = json!({"terminated": {
                    "exitCode": exit_code, "reason": reason_name(*reason),
                    "message": (!message.is_empty()).then_some(message),
                    "startedAt": rfc3339(*started_at), "finishedAt": rfc3339(*finished_at),
                    "containerID": format!("wasm://{id}"),
                }});
                if !restart {
                    return current;
                }
                let slot = self.slot_mut(init, index);
                match slot.restart_at {
                    None => {
                        let backoff = config
                            .backoff_base
                            .saturating_mul(1 << slot.restarts.min(10))
                            .min(config.backoff_max);
                        slot.restart_at = Some(Instant::now() + backoff);
                        slot.last = Some(terminated);
                        let message = format!(
                            "Back-off restarting failed container {} in pod {}",
                            container.name,
                            pod.metadata.name.as_deref().unwrap_or("")
                        );
                        slot.waiting = Some((
                            "CrashLoopBackOff".into(),
                            format!(
                                "back-off {}s restarting failed container={} pod={}",
                                backoff.as_secs(),
                                container.name,
                                pod.metadata.name.as_deref().unwrap_or("")
                            ),
                        ));
                        self.event(pod, Some(&container.name), "Warning", "BackOff", message);
                        return current;
                    }
                    Some(at) if Instant::now() < at => return current,
                    Some(_) => {
                        slot.restarts += 1;
                        slot.restart_at = None;
                        let _ = runtime.remove_container(&id).await;
                        slot.id = None;
                    }
                }
            }
            None => {}
        }
        // Pull (again, after a back-off, if it failed before).
        let slot = self.slot_mut(init, index);
        if let Some(at) = slot.restart_at
            && slot.id.is_none()
            && Instant::now() < at
        {
            return None;
        }
        let present = matches!(runtime.image_status(&image).await, Ok(Some(_)));
        let pull_started = Instant::now();
        if !present {
            self.event(
                pod,
                Some(&container.name),
                "Normal",
                "Pulling",
                format!("Pulling image \"{image}\""),
            );
        }
        match runtime.pull_image(&image).await {
            Ok(id) => {
                let message = if present {
                    format!("Container image \"{image}\" already present on machine")
                } else {
                    format!(
                        "Successfully pulled image \"{image}\" in {}ms",
                        pull_started.elapsed().as_millis()
                    )
                };
                self.event(pod, Some(&container.name), "Normal", "Pulled", message);
                let slot = self.slot_mut(init, index);
                slot.image_id = id;
                slot.pull_failures = 0;
                slot.restart_at = None;
            }
            Err(e) => {
                let slot = self.slot_mut(init, index);
                slot.pull_failures += 1;
                let reason = if slot.pull_failures > 1 {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                slot.waiting = Some((reason.into(), e.to_string()));
                let (event, message) = if reason == "ErrImagePull" {
                    ("Failed", format!("Failed to pull image \"{image}\": {e}"))
                } else {
                    ("BackOff", format!("Back-off pulling image \"{image}\""))
                };
                let backoff = config
                    .backoff_base
                    .saturating_mul(1 << slot.pull_failures.min(10))
                    .min(config.backoff_max);
                slot.restart_at = Some(Instant::now() + backoff);
                self.event(pod, Some(&container.name), "Warning", event, message);
                return None;
            }
        }
        let attempt = self.slot(init, index).restarts;
        let cfg = match self.container_config(pod, container, attempt, mounts).await {
            Ok(c) => c,
            Err(e) => {
                self.slot_mut(init, index).waiting =
                    Some(("CreateContainerConfigError".into(), e.to_string()));
                return None;
            }
        };
        let sandbox = self.sandbox.clone().unwrap_or_default();
        let started = match runtime.create_container(&sandbox, &cfg).await {
            Ok(id) => runtime.start_container(&id).await.map(|()| id),
            Err(e) => Err(e),
        };
        let name = container.name.as_str();
        match started {
            Ok(id) => {
                let slot = self.slot_mut(init, index);
                slot.id = Some(id);
                slot.waiting = None;
                slot.create_failures = 0;
                self.event(
                    pod,
                    Some(name),
                    "Normal",
                    "Created",
                    format!("Created container {name}"),
                );
                self.event(
                    pod,
                    Some(name),
                    "Normal",
                    "Started",
                    format!("Started container {name}"),
                );
            }
            Err(e) => {
                tracing::warn!(pod = %pod_key(pod), container = name, error = %e, "cannot create the container");
                // Retried with the same back-off as a crash, as the kubelet does.
                let slot = self.slot_mut(init, index);
                slot.waiting = Some(("CreateContainerError".into(), e.to_string()));
                slot.create_failures += 1;
                let backoff = config
                    .backoff_base
                    .saturating_mul(1 << (slot.create_failures - 1).min(10))
                    .min(config.backoff_max);
                slot.restart_at = Some(Instant::now() + backoff);
                self.event(pod, Some(name), "Warning", "Failed", format!("Error: {e}"));
            }
        }
        None
    }

    /// Serves the ports of the running containers that are HTTP functions (see
    /// [`crate::functions`]).
    async fn serve(&mut self, pod: &Pod) {
        let Some(spec) = &pod.spec else {
            return;
        };
        let mut ports = Vec::new();
        for (i, c) in spec.containers.iter().enumerate() {
            let Some(id) = self.main.get(i).and_then(|s| s.id.as_deref()) else {
                continue;
            };
            if !self.pods.runtime.serves_http(id) {
                continue;
            }
            for p in c.ports.iter().flatten() {
                if p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                    && let Ok(port) = u16::try_from(p.container_port)
                {
                    ports.push((port, id.to_string()));
                }
            }
        }
        let ip = self.pod_ip(pod);
        self.pods.functions.sync(&self.key, ip.as_deref(), &ports);
    }

    fn pod_ip(&self, pod: &Pod) -> Option<String> {
        pod_ip(
            self.pods.config.node_ip.as_deref(),
            pod.metadata.uid.as_deref().unwrap_or_default(),
        )
    }

    /// Starts the probes that are due for the running containers (attempts run beside the
    /// worker; [`Self::probed`] takes their outcomes in).
    async fn probe(&mut self, pod: &Pod) {
        let Some(spec) = &pod.spec else {
            return;
        };
        let pod_ip = self.pod_ip(pod).unwrap_or_else(|| "127.0.0.1".into());
        for (i, c) in spec.containers.iter().enumerate() {
            let Some(id) = self.main.get(i).map(|s| s.id.clone()) else {
                continue;
            };
            let running = match id {
                Some(id) => match self.pods.runtime.container_status(&id).await {
                    Ok(s) if matches!(s.state, ContainerState::Running { .. }) => Some(id),
                    _ => None,
                },
                None => None,
            };
            let health = &mut self.main[i].health;
            health.follow(c, running.as_deref());
            for due in health.due() {
                let (client, container, ip) =
                    (self.pods.probe_client.clone(), c.clone(), pod_ip.clone());
                self.probing.spawn(async move {
                    let target = probes::Target {
                        pod_ip: &ip,
                        container: &container,
                    };
                    let outcome = probes::run(&client, &target, &due.probe, due.timeout).await;
                    (i, due.kind, due.container_id, outcome)
                });
            }
        }
    }

    /// Takes in a probe attempt's outcome: a failure is an `Unhealthy` event; a failed startup
    /// or liveness probe has the container stopped, to be restarted by its restart policy.
    async fn probed(&mut self, pod: &Pod, (i, kind, id, outcome): Probed) {
        let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.get(i)) else {
            return;
        };
        let Some(slot) = self.main.get_mut(i) else {
            return;
        };
        let verdict = slot.health.record(kind, &id, outcome);
        let (message, restart) = match verdict {
            Verdict::Fine => return,
            Verdict::Failed(message) => (message, None),
            Verdict::Restart(message, grace) => (message, Some(grace)),
        };
        let name = c.name.as_str();
        tracing::debug!(pod = %self.key, container = name, probe = kind.lower(), %message, "probe failed");
        self.event(
            pod,
            Some(name),
            "Warning",
            "Unhealthy",
            format!("{} probe failed: {message}", kind.title()),
        );
        let Some(grace) = restart else {
            return;
        };
        self.event(
            pod,
            Some(name),
            "Normal",
            "Killing",
            format!(
                "Container {name} failed {} probe, will be restarted",
                kind.lower()
            ),
        );
        let grace = grace.unwrap_or_else(|| {
            let seconds = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            Duration::from_secs(seconds.max(0) as u64)
        });
        if let Err(e) = self.pods.runtime.stop_container(&id, grace).await {
            tracing::warn!(pod = %self.key, container = name, error = %e, "cannot stop the container");
        }
    }

    /// Records an event on the pod (for `kubectl describe`), without waiting for it.
    fn event(&self, pod: &Pod, container: Option<&str>, kind: &str, reason: &str, message: String) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{name}.{:x}", now.as_nanosecond()),
                "namespace": ns,
            },
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                "uid": pod.metadata.uid, "resourceVersion": pod.metadata.resource_version,
                "fieldPath": container.map(|c| format!("spec.containers{{{c}}}")),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "source": {"component": "kubelet", "host": self.pods.config.node_name},
            "reportingComponent": "skiff-agent",
            "reportingInstance": self.pods.config.node_name,
        });
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.pods.client.clone(), &ns);
        tokio::spawn(async move {
            if let Ok(event) = serde_json::from_value(event) {
                let _ = api.create(&Default::default(), &event).await;
            }
        });
    }

    fn slot(&self, init: bool, index: usize) -> &Slot {
        if init {
            &self.init[index]
        } else {
            &self.main[index]
        }
    }

    fn slot_mut(&mut self, init: bool, index: usize) -> &mut Slot {
        if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        }
    }

    /// The runtime's view of a container: command, env (literals, ConfigMaps, Secrets, the
    /// downward API), mounts and limits.
    async fn container_config(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        mounts: &HashMap<String, PathBuf>,
    ) -> anyhow::Result<ContainerConfig> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut env: Vec<(String, String)> = Vec::new();
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.config_map_ref {
                for (k, v) in self
                    .config_map(&ns, &r.name)
                    .await?
                    .data
                    .unwrap_or_default()
                {
                    env.push((format!("{prefix}{k}"), v));
                }
            }
            if let Some(r) = &from.secret_ref {
                for (k, v) in self.secret(&ns, &r.name).await?.data.unwrap_or_default() {
                    env.push((format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into()));
                }
            }
        }
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    if let Some(r) = &from.config_map_key_ref {
                        let data = self
                            .config_map(&ns, &r.name)
                            .await?
                            .data
                            .unwrap_or_default();
                        match data.get(&r.key) {
                            Some(v) => v.clone(),
                            None if r.optional == Some(true) => continue,
                            None => anyhow::bail!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key,
                                r.name
                            ),
                        }
                    } else if let Some(r) = &from.secret_key_ref {
                        let data = self.secret(&ns, &r.name).await?.data.unwrap_or_default();
                        match data.get(&r.key) {
                            Some(v) => String::from_utf8_lossy(&v.0).into(),
                            None if r.optional == Some(true) => continue,
                            None => anyhow::bail!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key,
                                r.name
                            ),
                        }
                    } else if let Some(f) = &from.field_ref {
                        downward(pod, &f.field_path, &self.pods.config)
                    } else {
                        String::new()
                    }
                }
                (None, None) => String::new(),
            };
            env.push((e.name.clone(), value));
        }
        let mut container_mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let host_path = mounts
                .get(&m.name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("volume {:?} is not defined in the pod", m.name))?;
            let is_host = pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .and_then(|v| v.iter().find(|v| v.name == m.name))
                .is_some_and(|v| v.host_path.is_some());
            container_mounts.push(Mount {
                host_path,
                container_path: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
                source: if is_host {
                    MountSource::HostPath
                } else {
                    MountSource::Pod
                },
            });
        }
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let quantity = |name: &str| {
            limits
                .and_then(|l| l.get(name))
                .and_then(|q| skiff_api::quantity::parse_milli(&q.0).ok())
        };
        let mut args: Vec<String> = c.command.clone().unwrap_or_default();
        args.extend(c.args.clone().unwrap_or_default());
        Ok(ContainerConfig {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            args,
            env,
            working_dir: c.working_dir.clone(),
            mounts: container_mounts,
            limits: Limits {
                memory_bytes: quantity("memory").map(|m| (m / 1000) as u64),
                cpu_millis: quantity("cpu").map(|m| m as u64),
            },
            log_path: self
                .dir
                .join("logs")
                .join(&c.name)
                .join(format!("{attempt}.log")),
            attempt,
            policies: {
                // Right after the agent starts, wait briefly for the first list of policies; a
                // node that cannot reach the control plane goes on with those it kept.
                self.pods.policies.synced(Duration::from_secs(5)).await;
                self.pods
                    .policies
                    .of(pod.metadata.namespace.as_deref().unwrap_or("default"))
            },
        })
    }

    async fn config_map(&self, ns: &str, name: &str) -> anyhow::Result<ConfigMap> {
        let api: Api<ConfigMap> = Api::namespaced(self.pods.client.clone(), ns);
        api.get(name)
            .await
            .map_err(|e| anyhow::anyhow!("configmap {name:?} not found: {e}"))
    }

    async fn secret(&self, ns: &str, name: &str) -> anyhow::Result<Secret> {
        let api: Api<Secret> = Api::namespaced(self.pods.client.clone(), ns);
        api.get(name)
            .await
            .map_err(|e| anyhow::anyhow!("secret {name:?} not found: {e}"))
    }

    /// Makes the pod's volumes: emptyDir directories, ConfigMap and Secret files, hostPath.
    async fn volumes(&self, pod: &Pod) -> anyhow::Result<HashMap<String, PathBuf>> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut out = HashMap::new();
        for v in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default()
        {
            let dir = self.dir.join("volumes").join(&v.name);
            if let Some(h) = &v.host_path {
                out.insert(v.name.clone(), PathBuf::from(&h.path));
                continue;
            }
            std::fs::create_dir_all(&dir)?;
            let files: BTreeMap<String, Vec<u8>> = if let Some(cm) = &v.config_map {
                let data = self.config_map(&ns, &cm.name).await?;
                data.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .chain(
                        data.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    )
                    .collect()
            } else if let Some(s) = &v.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                self.secret(&ns, &name)
                    .await?
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            } else {
                BTreeMap::new()
            };
            let items = v
                .config_map
                .as_ref()
                .and_then(|c| c.items.clone())
                .or_else(|| v.secret.as_ref().and_then(|s| s.items.clone()));
            for (key, bytes) in &files {
                let path = match &items {
                    Some(items) => match items.iter().find(|i| &i.key == key) {
                        Some(i) => i.path.clone(),
                        None => continue,
                    },
                    None => key.clone(),
                };
                // Admission refuses such paths; a pod stored before that, or a server that
                // does not check, still cannot make the agent write outside the volume.
                let Some(target) = inside(&dir, &path) else {
                    anyhow::bail!(
                        "volume {}: the path {path:?} of key {key:?} leaves the volume",
                        v.name
                    );
                };
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(target, bytes)?;
            }
            out.insert(v.name.clone(), dir);
        }
        Ok(out)
    }

    async fn stop_all(&mut self, grace: Duration) {
        let runtime = self.pods.runtime.clone();
        let ids: Vec<String> = self
            .init
            .iter()
            .chain(&self.main)
            .filter_map(|s| s.id.clone())
            .collect();
        futures::future::join_all(ids.iter().map(|id| runtime.stop_container(id, grace))).await;
    }

    async fn cleanup(&mut self) -> anyhow::Result<()> {
        self.pods.functions.remove(&self.key);
        if let Some(sandbox) = self.sandbox.take() {
            self.pods.runtime.stop_pod_sandbox(&sandbox).await?;
            self.pods.runtime.remove_pod_sandbox(&sandbox).await?;
        }
        let _ = std::fs::remove_dir_all(self.dir.join("volumes"));
        Ok(())
    }

    /// After the grace period the agent completes the deletion, as the kubelet does.
    async fn finish_deletion(&self, pod: &Pod) -> anyhow::Result<()> {
        finish_deletion(&self.pods.client, &pod.metadata).await
    }

    async fn report_failure(&mut self, reason: &str, message: &str) {
        tracing::warn!(pod = %self.key, reason, message);
    }

    /// Hands the pod's status to the writer when it changed (see [`crate::status`]).
    async fn report(&mut self, pod: &Pod) {
        let status = self.status(pod).await;
        if status == self.reported {
            return;
        }
        let meta = &pod.metadata;
        self.pods.statuses.set(
            meta.uid.as_deref().unwrap_or_default(),
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
            status.clone(),
        );
        self.reported = status;
    }

    async fn status(&mut self, pod: &Pod) -> Value {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or("Always".into());
        let init_specs = spec.init_containers.clone().unwrap_or_default();
        let mut init_statuses = Vec::new();
        for (i, c) in init_specs.iter().enumerate() {
            init_statuses.push(self.container_status(c, &self.init[i]).await);
        }
        let mut statuses = Vec::new();
        for (i, c) in spec.containers.iter().enumerate() {
            statuses.push(self.container_status(c, &self.main[i]).await);
        }
        let initialized = self.init_done >= init_specs.len();
        let ready = |s: &Value| s["ready"] == true;
        let terminated_code = |s: &Value| {
            s.pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
        };
        let all_ready = !statuses.is_empty() && statuses.iter().all(ready);
        let all_done = statuses.iter().all(|s| terminated_code(s).is_some());
        let init_failed = init_statuses
            .iter()
            .any(|s| terminated_code(s).is_some_and(|c| c != 0) && policy == "Never");
        let phase = if init_failed {
            "Failed"
        } else if !initialized {
            "Pending"
        } else if all_done && policy != "Always" {
            let failed = statuses.iter().any(|s| terminated_code(s) != Some(0));
            if !failed {
                "Succeeded"
            } else if policy == "Never" {
                "Failed"
            } else {
                "Running"
            }
        } else if statuses
            .iter()
            .any(|s| s.pointer("/state/waiting").is_none())
        {
            "Running"
        } else {
            "Pending"
        };
        let now = now();
        let pod_ip = self.pod_ip(pod);
        let mut condition = |kind: &'static str, ok: bool, reason: Option<&str>| {
            let since = match self.transitions.get(kind) {
                Some((was, since)) if *was == ok => since.clone(),
                // The first report dates from the pod's start.
                None => self.started_at.clone(),
                Some(_) => now.clone(),
            };
            self.transitions.insert(kind, (ok, since.clone()));
            json!({"type": kind, "status": if ok {"True"} else {"False"},
                   "lastTransitionTime": since, "reason": reason})
        };
        let completed = matches!(phase, "Succeeded" | "Failed");
        let not_ready = (!all_ready).then_some(if completed {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        });
        let node_ip = self.pods.config.node_ip.clone();
        json!({
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", self.sandbox.is_some(), None),
                condition("Initialized", initialized, (!initialized).then_some("ContainersNotInitialized")),
                condition("Ready", all_ready, not_ready),
                condition("ContainersReady", all_ready, not_ready),
                condition("PodScheduled", true, None),
            ],
            "hostIP": node_ip,
            "hostIPs": node_ip.as_ref().map(|ip| vec![json!({"ip": ip})]),
            "podIP": pod_ip,
            "podIPs": pod_ip.as_ref().map(|ip| vec![json!({"ip": ip})]),
            "startTime": self.started_at,
            "initContainerStatuses": (!init_statuses.is_empty()).then_some(init_statuses),
            "containerStatuses": statuses,
        })
    }

    async fn container_status(&self, c: &Container, slot: &Slot) -> Value {
        let runtime = &self.pods.runtime;
        let state = match &slot.id {
            Some(id) => runtime.container_status(id).await.ok().map(|s| s.state),
            None => None,
        };
        let container_id = slot.id.as_ref().map(|id| format!("wasm://{id}"));
        let (state, running) = match (&slot.waiting, state) {
            (Some((reason, message)), _) if slot.restart_at.is_some() || slot.id.is_none() => (
                json!({"waiting": {"reason": reason, "message": message}}),
                false,
            ),
            (_, Some(ContainerState::Running { started_at })) => {
                (json!({"running": {"startedAt": rfc3339(started_at)}}), true)
            }
            (
                _,
                Some(ContainerState::Exited {
                    exit_code,
                    reason,
                    message,
                    started_at,
                    finished_at,
                }),
            ) => (
                json!({"terminated": {
                    "exitCode": exit_code, "reason": reason_name(reason),
                    "message": (!message.is_empty()).then_some(message),
                    "startedAt": rfc3339(started_at), "finishedAt": rfc3339(finished_at),
                    "containerID": container_id,
                }}),
                false,
            ),
            _ => (json!({"waiting": {"reason": "ContainerCreating"}}), false),
        };
        json!({
            "name": c.name,
            "image": c.image,
            "imageID": slot.image_id,
            "containerID": container_id,
            "state": state,
            "lastState": slot.last.clone().unwrap_or(json!({})),
            "ready": running && slot.health.ready(),
            "started": running && slot.health.started(),
            "restartCount": slot.restarts,
        })
    }
}

/// The file `path` names inside the volume directory `dir`, or `None` when it would be
/// outside it: empty, absolute, or with a `..` (or any other non-plain) component.
fn inside(dir: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path);
    let plain = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let names_a_file = rel.components().any(|c| matches!(c, Component::Normal(_)));
    (plain && names_a_file).then(|| dir.join(rel))
}

/// Deletes `pod` (this incarnation of it: its uid is a precondition) with grace 0, as a node
/// does once the pod's containers have stopped.
pub(crate) async fn finish_deletion(client: &kube::Client, pod: &ObjectMeta) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.namespace.as_deref().unwrap_or("default"),
    );
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(pod.name.as_deref().unwrap_or(""), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The grace period if the pod is being deleted.
fn deleting(pod: &Pod) -> Option<Duration> {
    pod.metadata.deletion_timestamp.as_ref()?;
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Some(Duration::from_secs(seconds.max(0) as u64))
}

/// A downward-API field.
fn downward(pod: &Pod, path: &str, config: &Config) -> String {
    let meta = &pod.metadata;
    match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => config.node_name.clone(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => config.node_ip.clone().unwrap_or_default(),
        "status.podIP" => pod_ip(
            config.node_ip.as_deref(),
            meta.uid.as_deref().unwrap_or_default(),
        )
        .unwrap_or_default(),
        other => {
            if let Some(key) = other
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                return meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default();
            }
            if let Some(key) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                return meta
                    .annotations
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default();
            }
            String::new()
        }
    }
}

fn reason_name(reason: ExitReason) -> &'static str {
    reason.as_str()
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

pub(crate) fn now() -> String {
    rfc3339(SystemTime::now())
}

/// `namespace/name` of a pod, for log lines.
fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile volume item path never leads the agent outside the volume directory.
    #[test]
    fn volume_item_paths_stay_inside_the_volume() {
        let dir = Path::new("/var/lib/skiff/pods/p/volumes/v");
        for bad in [
            "/tmp/x",
            "../x",
            "a/../../x",
            "..",
            "",
            ".",
            "/",
            "a/..",
            "x/../../../etc/passwd",
        ] {
            assert_eq!(inside(dir, bad), None, "{bad:?}");
        }
        assert_eq!(inside(dir, "x"), Some(dir.join("x")));
        assert_eq!(inside(dir, "a/b/c"), Some(dir.join("a/b/c")));
        assert_eq!(inside(dir, "x..y"), Some(dir.join("x..y")));
        assert_eq!(inside(dir, ".hidden"), Some(dir.join(".hidden")));
        assert!(inside(dir, "./x").is_some_and(|p| p.starts_with(dir)));
    }
}
