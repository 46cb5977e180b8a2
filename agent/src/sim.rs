//! Simulated nodes, in the spirit of KWOK: one process registers thousands of Nodes through the
//! real API, keeps their Leases renewed, and runs the pods bound to them in the fake runtime,
//! reporting them Running. The scheduler and the control plane meet the traffic of a large
//! cluster without a large cluster.
//!
//! Each node watches its own pods (`spec.nodeName=<node>`), as a real agent does, so the API
//! server carries one watch per node; the watches and the other requests multiplex on HTTP/2
//! connections (one per `nodes_per_connection` nodes), with bounded concurrency for the rest.
//! `per_node_watches: false` instead watches every bound pod once for all nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use skiff_runtime::{ContainerConfig, ContainerRuntime as _, FakeRuntime, PodSandboxConfig};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node;

/// Most nodes one simulator runs: each gets a /24 of pod addresses out of 10.0.0.0/8.
const MAX_NODES: usize = 1 << 16;

/// How a set of simulated nodes is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API server, `https://HOST:PORT`.
    pub server: String,
    /// The server CA (PEM).
    pub ca_pem: String,
    /// A bearer token that may write Nodes, Leases and pods (the admin's, as KWOK uses).
    pub token: String,
    /// How many nodes.
    pub count: usize,
    /// Nodes are named `{prefix}{index}`, index from 0.
    pub prefix: String,
    /// Each node's cpu capacity (a quantity: `4`, `3500m`).
    pub cpu: String,
    /// Each node's memory capacity (a quantity: `16Gi`).
    pub memory: String,
    /// Pods each node takes.
    pub max_pods: u32,
    /// Labels on every node, over the defaults (`kubernetes.io/hostname`, `kubernetes.io/os`,
    /// `kubernetes.io/arch`, `skiff.dev/runtimes=wasm`, `skiff.dev/simulated=true`).
    pub labels: BTreeMap<String, String>,
    /// Lease renewal interval of each node; the renewals of all nodes spread over it.
    pub heartbeat: Duration,
    /// Run the pods bound to these nodes in the fake runtime and report them Running (and
    /// finish their graceful deletion); without it they stay as the scheduler left them.
    pub run_pods: bool,
    /// Most requests in flight at once, for pods and for leases each.
    pub concurrency: usize,
    /// One pod watch per node, as real agents have (else one watch for all nodes).
    pub per_node_watches: bool,
    /// Nodes whose watches share one HTTP/2 connection (servers cap streams per connection).
    pub nodes_per_connection: usize,
}

impl Config {
    /// `count` nodes of 4 cpus, 16Gi and 110 pods (the kubelet's default), named `sim-N`,
    /// heartbeating every 10 s and running their pods.
    pub fn new(server: String, ca_pem: String, token: String, count: usize) -> Self {
        Self {
            server,
            ca_pem,
            token,
            count,
            prefix: "sim-".into(),
            cpu: "4".into(),
            memory: "16Gi".into(),
            max_pods: 110,
            labels: BTreeMap::new(),
            heartbeat: Duration::from_secs(10),
            run_pods: true,
            concurrency: 64,
            per_node_watches: true,
            nodes_per_connection: 100,
        }
    }

    /// Says what is wrong with the configuration, before anything is sent.
    fn check(&self) -> anyhow::Result<()> {
        if self.count == 0 || self.count > MAX_NODES {
            bail!("the node count must be between 1 and {MAX_NODES}");
        }
        skiff_api::validation::dns1123_subdomain(&format!("{}{}", self.prefix, self.count - 1))
            .map_err(|e| anyhow::anyhow!("invalid node name prefix {:?}: {e}", self.prefix))?;
        for (what, quantity) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            match skiff_api::quantity::parse_milli(quantity) {
                Ok(n) if n > 0 => {}
                Ok(_) => bail!("invalid {what} {quantity:?}: must be positive"),
                Err(e) => bail!("invalid {what} {quantity:?}: {e}"),
            }
        }
        for (key, value) in &self.labels {
            skiff_api::validation::qualified_name(key)
                .map_err(|e| anyhow::anyhow!("invalid label key {key:?}: {e}"))?;
            skiff_api::validation::label_value(value)
                .map_err(|e| anyhow::anyhow!("invalid value of label {key:?}: {e}"))?;
        }
        if self.heartbeat.is_zero() {
            bail!("the heartbeat interval must be positive");
        }
        if self.concurrency == 0 {
            bail!("the concurrency must be at least 1");
        }
        if self.nodes_per_connection == 0 {
            bail!("the nodes per connection must be at least 1");
        }
        Ok(())
    }
}

/// Runs the simulated nodes until `stop`: registers them (retrying until the API answers),
/// renews their Leases, and, with `run_pods`, runs their pods.
pub async fn run(config: Config, stop: CancellationToken) -> anyhow::Result<()> {
    config.check()?;
    let client = client(&config.server, &config.ca_pem, &config.token)?;
    let watch_clients = if config.per_node_watches {
        (0..config.count.div_ceil(config.nodes_per_connection))
            .map(|_| self::client(&config.server, &config.ca_pem, &config.token))
            .collect::<anyhow::Result<_>>()?
    } else {
        vec![client.clone()]
    };
    let sim = Arc::new(Sim {
        client,
        watch_clients,
        pod_addresses: (0..config.count).map(|_| AtomicU32::new(0)).collect(),
        config,
        runtime: FakeRuntime::new(),
        pods: Mutex::new(HashMap::new()),
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(sim.clone().nodes(stop.clone()));
    // The watches are there even when the pods are not run: they are what nodes cost the
    // API server.
    tasks.spawn(sim.clone().pods(stop.clone()));
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// A kube client whose requests share one HTTP/2 connection (reqwest negotiates h2 by ALPN;
/// kube's own client speaks HTTP/1.1 only, a connection per request in flight).
fn client(server: &str, ca_pem: &str, token: &str) -> anyhow::Result<kube::Client> {
    use http_body_util::BodyExt as _;
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("invalid server CA")?,
        )
        .tls_built_in_root_certs(false)
        .http2_adaptive_window(true)
        .build()?;
    let base = server.trim_end_matches('/').to_string();
    base.parse::<http::Uri>()
        .with_context(|| format!("invalid server URL {server:?}"))?;
    let mut auth = http::HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the token is not a valid header value")?;
    auth.set_sensitive(true);
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (http, base, auth) = (http.clone(), base.clone(), auth.clone());
        async move {
            let (mut parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("{base}{path}").parse()?;
            parts.headers.insert(http::header::AUTHORIZATION, auth);
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))?;
            let response = http.execute(request).await?;
            Ok::<_, tower::BoxError>(http::Response::from(response))
        }
    });
    Ok(kube::Client::new(service, "default"))
}

/// The simulator's shared state.
struct Sim {
    client: kube::Client,
    /// The clients the pod watches use (one connection each).
    watch_clients: Vec<kube::Client>,
    config: Config,
    runtime: FakeRuntime,
    /// Pod addresses handed out so far, per node.
    pod_addresses: Vec<AtomicU32>,
    /// The pods bound to these nodes, by uid.
    pods: Mutex<HashMap<String, PodState>>,
}

/// Where a pod of a simulated node is.
enum PodState {
    /// Queued or being started.
    Starting,
    /// Its containers run in this sandbox.
    Running { sandbox: String },
    /// Being stopped for a graceful deletion.
    Finishing,
}

/// What the simulator does to a pod, off the watch loop.
enum Job {
    /// Start its containers and report it Running.
    Start(PodRef),
    /// Stop its containers and finish its deletion.
    Finish(PodRef),
}

/// A pod, as much of it as the simulator needs (the watch may hold tens of thousands).
struct PodRef {
    meta: ObjectMeta,
    uid: String,
    node: usize,
    /// (name, image) of each container.
    containers: Vec<(String, String)>,
    /// (name, image) of each init container.
    init_containers: Vec<(String, String)>,
}

impl Sim {
    fn node_name(&self, index: usize) -> String {
        format!("{}{index}", self.config.prefix)
    }

    /// The index of node `name` if it is one of these.
    fn node_index(&self, name: &str) -> Option<usize> {
        let index: usize = name.strip_prefix(&self.config.prefix)?.parse().ok()?;
        (index < self.config.count && name == self.node_name(index)).then_some(index)
    }

    /// Node `index`'s address: 172.16.0.0/12, from .1.
    fn node_ip(index: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + index as u32)
    }

    /// Node `index`'s pod range: the index-th /24 of 10.0.0.0/8.
    fn pod_cidr(index: usize) -> (Ipv4Addr, String) {
        let base = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + ((index as u32) << 8));
        (base, format!("{base}/24"))
    }

    /// The next pod address on node `index` (.1 to .254, then round again, as small ranges do).
    fn next_pod_ip(&self, index: usize) -> Ipv4Addr {
        let n = self.pod_addresses[index].fetch_add(1, Ordering::Relaxed) % 254;
        Ipv4Addr::from(u32::from(Self::pod_cidr(index).0) + 1 + n)
    }

    /// Registers every node, then renews their Leases until `stop`, each once per heartbeat
    /// and all spread evenly over it.
    async fn nodes(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let count = self.config.count;
        let registered = futures::stream::iter(0..count)
            .map(|index| self.register(index, &stop))
            .buffer_unordered(self.config.concurrency)
            .filter(|&ok| std::future::ready(ok))
            .count();
        tokio::select! {
            n = registered => tracing::info!(nodes = n, prefix = %self.config.prefix, "simulated nodes registered"),
            _ = stop.cancelled() => return Ok(()),
        }

        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let duration = (self.config.heartbeat.as_secs() * 4).max(1);
        let step = self.config.heartbeat / count as u32;
        let limit = Arc::new(Semaphore::new(self.config.concurrency));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let mut next = tokio::time::Instant::now();
        'rounds: loop {
            for index in 0..count {
                let due = async {
                    tokio::time::sleep_until(next).await;
                    limit.clone().acquire_owned().await
                };
                let permit = tokio::select! {
                    permit = due => permit?,
                    _ = stop.cancelled() => break 'rounds,
                };
                next += step;
                while tasks.try_join_next().is_some() {}
                let (leases, name, failed) =
                    (leases.clone(), self.node_name(index), failed.clone());
                tasks.spawn(async move {
                    if let Err(e) = node::renew_lease(&leases, &name, duration).await {
                        tracing::debug!(node = %name, error = %e, "cannot renew the lease");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(permit);
                });
            }
            let failures = failed.swap(0, Ordering::Relaxed);
            if failures > 0 {
                tracing::warn!(
                    failures,
                    "lease renewals failed in the last round (the control plane may be unreachable)"
                );
            }
        }
        // Renewals still in flight are dropped: nothing depends on them any more.
        tasks.shutdown().await;
        Ok(())
    }

    /// Registers node `index` (retrying with back-off until it succeeds or `stop`); true once
    /// registered.
    async fn register(&self, index: usize, stop: &CancellationToken) -> bool {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let name = self.node_name(index);
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), node::arch().to_string()),
            ("skiff.dev/runtimes".to_string(), "wasm".to_string()),
            ("skiff.dev/simulated".to_string(), "true".to_string()),
        ]);
        labels.extend(self.config.labels.clone());
        let (_, cidr) = Self::pod_cidr(index);
        let spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
        let mut delay = Duration::from_millis(200);
        loop {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let capacity = json!({
                "cpu": self.config.cpu,
                "memory": self.config.memory,
                "pods": self.config.max_pods.to_string(),
            });
            let status = json!({
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": Self::node_ip(index).to_string()},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": node::conditions(&now),
                "nodeInfo": node::node_info("fake://skiff"),
            });
            match node::create_or_adopt(&nodes, &name, &labels, spec.clone(), status).await {
                Ok(()) => return true,
                // One node speaks for all: when the control plane is away they all fail alike.
                Err(e) if index == 0 => {
                    tracing::warn!(node = %name, error = %format!("{e:#}"), "cannot register the simulated nodes yet; retrying")
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %format!("{e:#}"), "cannot register yet")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Watches the pods bound to these nodes (one watch per node, or one for all) and starts,
    /// stops and finishes them until `stop`; the work runs off the watch loops, at most
    /// `concurrency` pods at a time.
    async fn pods(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let (jobs, queue) = mpsc::unbounded_channel();
        let worker = tokio::spawn(self.clone().work(queue, stop.clone()));
        let mut watches = JoinSet::new();
        if self.config.per_node_watches {
            for index in 0..self.config.count {
                let client = self.watch_clients[index / self.config.nodes_per_connection].clone();
                let fields = format!("spec.nodeName={}", self.node_name(index));
                watches.spawn(
                    self.clone()
                        .follow(client, fields, jobs.clone(), stop.clone()),
                );
            }
        } else {
            let client = self.watch_clients[0].clone();
            watches.spawn(self.clone().follow(
                client,
                "spec.nodeName!=".into(),
                jobs.clone(),
                stop.clone(),
            ));
        }
        drop(jobs);
        while watches.join_next().await.is_some() {}
        worker.await?;
        Ok(())
    }

    /// Follows one pod watch (`fields` selects it) until `stop`.
    async fn follow(
        self: Arc<Self>,
        client: kube::Client,
        fields: String,
        jobs: mpsc::UnboundedSender<Job>,
        stop: CancellationToken,
    ) {
        let api: Api<Pod> = Api::all(client);
        let stream = watcher(api, watcher::Config::default().fields(&fields));
        let mut stream = std::pin::pin!(stream);
        let mut listed: Option<HashSet<String>> = None;
        loop {
            let event = tokio::select! {
                e = stream.try_next() => e,
                _ = stop.cancelled() => break,
            };
            match event {
                Ok(Some(watcher::Event::Init)) => listed = Some(HashSet::new()),
                Ok(Some(watcher::Event::InitApply(pod))) => {
                    if let (Some(set), Some(uid)) = (&mut listed, &pod.metadata.uid) {
                        set.insert(uid.clone());
                    }
                    self.seen(pod, &jobs);
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    // Pods deleted while the watch was down: the relist no longer has them.
                    if let Some(set) = listed.take() {
                        let gone: Vec<String> = {
                            let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
                            pods.keys()
                                .filter(|uid| !set.contains(*uid))
                                .cloned()
                                .collect()
                        };
                        for uid in gone {
                            self.gone(&uid).await;
                        }
                    }
                }
                Ok(Some(watcher::Event::Apply(pod))) => self.seen(pod, &jobs),
                Ok(Some(watcher::Event::Delete(pod))) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.gone(uid).await;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, watch = %fields, "watching pods failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        }
    }

    /// A pod as the watch reports it: queue what it needs, if it is on one of these nodes
    /// and they run their pods.
    fn seen(&self, pod: Pod, jobs: &mpsc::UnboundedSender<Job>) {
        if !self.config.run_pods {
            return;
        }
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| self.node_index(n))
        else {
            return;
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        {
            let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            match pods.get(&uid) {
                Some(PodState::Finishing) => return,
                Some(_) if !deleting => return,
                None if !deleting => {
                    pods.insert(uid.clone(), PodState::Starting);
                }
                // A Starting pod is left to its start job, which sees it is unwanted.
                _ => {}
            }
        }
        let containers = |list: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
            list.into_iter()
                .flatten()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        };
        let spec = pod.spec.as_ref();
        let pod_ref = PodRef {
            uid,
            node,
            containers: containers(spec.map(|s| &s.containers)),
            init_containers: containers(spec.and_then(|s| s.init_containers.as_ref())),
            meta: ObjectMeta {
                name: pod.metadata.name,
                namespace: pod.metadata.namespace,
                uid: pod.metadata.uid,
                ..Default::default()
            },
        };
        let _ = jobs.send(if deleting {
            Job::Finish(pod_ref)
        } else {
            Job::Start(pod_ref)
        });
    }

    /// A pod that no longer exists: stop what runs for it.
    async fn gone(&self, uid: &str) {
        let state = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        if let Some(PodState::Running { sandbox }) = state {
            self.stop_sandbox(&sandbox).await;
        }
    }

    async fn stop_sandbox(&self, sandbox: &str) {
        let _ = self.runtime.stop_pod_sandbox(sandbox).await;
        let _ = self.runtime.remove_pod_sandbox(sandbox).await;
    }

    /// Runs the queued jobs, at most `concurrency` at a time, until `stop` (or the queue
    /// closes).
    async fn work(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<Job>,
        stop: CancellationToken,
    ) {
        let limit = Arc::new(Semaphore::new(self.config.concurrency));
        let mut tasks = JoinSet::new();
        loop {
            let next = async {
                let job = queue.recv().await?;
                Some((job, limit.clone().acquire_owned().await.ok()?))
            };
            let (job, permit) = tokio::select! {
                next = next => match next {
                    Some(next) => next,
                    None => break,
                },
                _ = stop.cancelled() => break,
            };
            while tasks.try_join_next().is_some() {}
            let this = self.clone();
            tasks.spawn(async move {
                let (key, result) = match job {
                    Job::Start(pod) => (key(&pod), this.start(&pod).await),
                    Job::Finish(pod) => (key(&pod), this.finish(&pod).await),
                };
                if let Err(e) = result {
                    tracing::warn!(pod = %key, error = %format!("{e:#}"), "simulated pod failed");
                }
                drop(permit);
            });
        }
        // A simulated pod has nothing to drain: what is in flight is dropped.
        tasks.shutdown().await;
    }

    /// Starts the pod's containers in the fake runtime and reports it Running.
    async fn start(&self, pod: &PodRef) -> anyhow::Result<()> {
        let sandbox = self
            .runtime
            .run_pod_sandbox(&PodSandboxConfig {
                name: pod.meta.name.clone().unwrap_or_default(),
                namespace: pod.meta.namespace.clone().unwrap_or_default(),
                uid: pod.uid.clone(),
                ..Default::default()
            })
            .await?;
        let now = crate::pods::now();
        let mut statuses = Vec::new();
        for (name, image) in &pod.containers {
            let image_id = self.runtime.pull_image(image).await?;
            let config = ContainerConfig {
                name: name.clone(),
                image: image.clone(),
                ..Default::default()
            };
            let id = self.runtime.create_container(&sandbox, &config).await?;
            self.runtime.start_container(&id).await?;
            statuses.push(json!({
                "name": name, "image": image, "imageID": image_id,
                "containerID": format!("fake://{id}"), "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}},
            }));
        }
        let wanted = {
            let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            match pods.get_mut(&pod.uid) {
                Some(state @ PodState::Starting) => {
                    *state = PodState::Running {
                        sandbox: sandbox.clone(),
                    };
                    true
                }
                _ => false,
            }
        };
        if !wanted {
            // Deleted (or being deleted) while it started: its Finish job or the Delete event
            // found no sandbox to stop, so it stops here.
            self.stop_sandbox(&sandbox).await;
            return Ok(());
        }
        // Init containers are done before the pod runs; the fake runtime has nothing to run.
        let init: Vec<Value> = pod
            .init_containers
            .iter()
            .map(|(name, image)| {
                json!({
                    "name": name, "image": image, "ready": false, "started": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                              "startedAt": now, "finishedAt": now}},
                })
            })
            .collect();
        let ip = self.next_pod_ip(pod.node).to_string();
        let host_ip = Self::node_ip(pod.node).to_string();
        let conditions = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        .map(|kind| json!({"type": kind, "status": "True", "lastTransitionTime": now}));
        let status = json!({
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": now,
            "initContainerStatuses": (!init.is_empty()).then_some(init),
            "containerStatuses": statuses,
        });
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.meta.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.meta.name.as_deref().unwrap_or_default();
        let patch = Patch::Merge(json!({ "status": status }));
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            match api
                .patch_status(name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) if attempt == 5 => return Err(e).context("cannot report the pod Running"),
                Err(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Ok(())
    }

    /// Stops a pod being deleted and finishes its deletion, as an agent does after the grace
    /// period (fake containers stop at once).
    async fn finish(&self, pod: &PodRef) -> anyhow::Result<()> {
        let state = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod.uid.clone(), PodState::Finishing);
        if let Some(PodState::Running { sandbox }) = state {
            self.stop_sandbox(&sandbox).await;
        }
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            match crate::pods::finish_deletion(&self.client, &pod.meta).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 5 => return Err(e).context("cannot finish the deletion"),
                Err(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Ok(())
    }
}

fn key(pod: &PodRef) -> String {
    format!(
        "{}/{}",
        pod.meta.namespace.as_deref().unwrap_or_default(),
        pod.meta.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            "https://127.0.0.1:6443".into(),
            String::new(),
            "t".into(),
            5000,
        )
    }

    #[test]
    fn addresses_do_not_collide_across_nodes() {
        assert_eq!(Sim::node_ip(0), Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(Sim::node_ip(4999), Ipv4Addr::new(172, 16, 19, 136));
        assert_eq!(Sim::pod_cidr(1).1, "10.0.1.0/24");
        assert_eq!(Sim::pod_cidr(MAX_NODES - 1).1, "10.255.255.0/24");
    }

    #[test]
    fn bad_configuration_is_refused_before_anything_is_sent() {
        assert!(config().check().is_ok());
        let mut c = config();
        c.memory = "lots".into();
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("invalid memory")
        );
        let mut c = config();
        c.labels.insert("zone".into(), "not ok".into());
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("label \"zone\"")
        );
        let mut c = config();
        c.prefix = "Sim_".into();
        assert!(c.check().unwrap_err().to_string().contains("prefix"));
        let mut c = config();
        c.count = MAX_NODES + 1;
        assert!(c.check().is_err());
    }
}
