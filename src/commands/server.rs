//! `skiff server`: the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use skiff_control_plane::api::{self, Api, Tolerations};
use skiff_control_plane::apiserver::{self, pki::Identity};
use skiff_control_plane::cache::Config as WatchCache;
use skiff_control_plane::controllers::nodes::Settings as NodeLifecycle;
use skiff_control_plane::controllers::podgc::Settings as PodGc;
use skiff_control_plane::scheduler::{Scoring, Strategy, Weights};
use skiff_control_plane::store::{Encrypted, Keyring, SledConfig, SledStore, reseal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Run the control plane.
#[derive(Args)]
pub struct Server {
    /// Directory for the store, the CA, tokens, `kubeconfig` and `node-token`.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve HTTPS on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Extra names and addresses the serving certificate is valid for (repeat it, or
    /// separate them with commas), for clients that reach the server through a load balancer,
    /// a DNS name or NAT. Listening on 0.0.0.0 or :: adds the address of the interface of the
    /// default route on its own.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// How long changes stay in the watch cache's history, for resuming watches and paged
    /// lists; older resourceVersions get 410 Expired.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    watch_cache_ttl: Duration,
    /// About how many bytes of objects the watch history may hold (oldest dropped first).
    #[arg(long, default_value_t = WatchCache::default().max_bytes)]
    watch_cache_bytes: usize,
    /// Changes the watch history may hold at most (unbounded by default).
    #[arg(long)]
    watch_history: Option<usize>,
    /// How often watches that allow bookmarks get one.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    watch_bookmark_interval: Duration,
    /// How long a node may miss heartbeats before it is marked NotReady/Unknown.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// Nodes per second whose pods may be evicted when a zone is healthy.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// Nodes per second whose pods may be evicted when a large zone is partly disrupted.
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// Share of unhealthy nodes (0-1) at which a zone counts as disrupted.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// Zones up to this many nodes stop evicting entirely when disrupted.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// Seconds pods tolerate an unreachable node (added to pods without such a toleration).
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Seconds pods tolerate a not-ready node (added to pods without such a toleration).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// How the scheduler scores free room: LeastAllocated (spread) or MostAllocated (pack).
    #[arg(long, default_value = "LeastAllocated")]
    scheduler_scoring_strategy: Strategy,
    /// Scheduler score weights over kube-scheduler's defaults, as PLUGIN=WEIGHT,... (plugins:
    /// NodeResourcesFit, NodeResourcesBalancedAllocation, NodeAffinity, TaintToleration,
    /// PodTopologySpread, ImageLocality).
    #[arg(long, default_value = "")]
    scheduler_weights: Weights,
    /// The IPv4 range Services' ClusterIPs come from; its first address is the `kubernetes`
    /// Service's.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: api::ServiceCidr,
    /// Terminated pods (Succeeded or Failed) kept before the oldest are deleted; 0 keeps all.
    #[arg(long, default_value_t = 12_500)]
    terminated_pod_gc_threshold: usize,
    /// How long a pod's node must have been gone before the pod is deleted.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pod_gc_quarantine: Duration,
    /// How long an Event is kept after it was last observed.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: Duration,
}

/// Parses `40s`, `2m`, `1h`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 40s, 2m, 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Server {
    pub async fn execute(self) -> anyhow::Result<()> {
        let control_plane = ControlPlane::start(Settings {
            data_dir: self.data_dir,
            listen: self.listen,
            tls_sans: self.tls_san,
            watch_cache: WatchCache {
                ttl: self.watch_cache_ttl,
                max_bytes: self.watch_cache_bytes,
                max_events: self.watch_history.unwrap_or(usize::MAX),
            },
            bookmark_interval: self.watch_bookmark_interval,
            tolerations: Tolerations {
                not_ready_seconds: self.default_not_ready_toleration_seconds,
                unreachable_seconds: self.default_unreachable_toleration_seconds,
            },
            scoring: Scoring {
                strategy: self.scheduler_scoring_strategy,
                weights: self.scheduler_weights,
            },
            node_lifecycle: NodeLifecycle {
                grace_period: self.node_monitor_grace_period,
                eviction_rate: self.node_eviction_rate,
                secondary_eviction_rate: self.secondary_node_eviction_rate,
                unhealthy_zone_threshold: self.unhealthy_zone_threshold,
                large_cluster_size_threshold: self.large_cluster_size_threshold,
            },
            service_cidr: self.service_cluster_ip_range,
            pod_gc: PodGc {
                terminated_threshold: self.terminated_pod_gc_threshold,
                quarantine: self.pod_gc_quarantine,
            },
            event_ttl: self.event_ttl,
        })
        .await?;
        super::shutdown_signal().await;
        control_plane.stop().await
    }
}

/// What the control plane needs to start: the flags `skiff server` and `skiff up` share.
pub struct Settings {
    /// Directory for the store, the CA, tokens, `kubeconfig` and `node-token`.
    pub data_dir: PathBuf,
    /// Address to serve HTTPS on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Extra names and addresses for the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// How much history the watch cache keeps.
    pub watch_cache: WatchCache,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Default tolerations of pods for not-ready and unreachable nodes.
    pub tolerations: Tolerations,
    /// How the scheduler scores nodes.
    pub scoring: Scoring,
    /// When nodes count as lost and how fast their pods are evicted.
    pub node_lifecycle: NodeLifecycle,
    /// Where Services' ClusterIPs come from.
    pub service_cidr: api::ServiceCidr,
    /// When pods of vanished nodes and terminated pods are deleted.
    pub pod_gc: PodGc,
    /// How long Events are kept after they were last observed.
    pub event_ttl: Duration,
}

impl Settings {
    /// The defaults of `skiff server`'s flags, on `data_dir` and `listen`.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            tls_sans: Vec::new(),
            watch_cache: WatchCache::default(),
            bookmark_interval: Duration::from_secs(60),
            tolerations: Tolerations {
                not_ready_seconds: 300,
                unreachable_seconds: 300,
            },
            scoring: Scoring::default(),
            node_lifecycle: NodeLifecycle::default(),
            service_cidr: api::ServiceCidr::default(),
            pod_gc: PodGc::default(),
            event_ttl: Duration::from_secs(3600),
        }
    }
}

/// A running control plane: the store, the API server, the scheduler and the controllers.
pub struct ControlPlane {
    /// `https://HOST:PORT`, as the kubeconfig names it.
    pub url: String,
    /// The data directory (`kubeconfig`, `node-token`, ...).
    pub data_dir: PathBuf,
    api: Api,
    shutdown: CancellationToken,
    serving: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    controllers: JoinHandle<()>,
    authorizer: JoinHandle<()>,
}

impl ControlPlane {
    /// Opens the store, writes `kubeconfig` and `node-token`, and starts serving and
    /// scheduling.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let Settings {
            data_dir,
            listen,
            tls_sans,
            watch_cache,
            bookmark_interval,
            tolerations,
            scoring,
            node_lifecycle,
            service_cidr,
            pod_gc,
            event_ttl,
        } = settings;
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let mut store_config = SledConfig::new(data_dir.join("store"));
        // Fail-stop: a write that could not be made durable must never be served, so the
        // server exits and a restart serves exactly what is on disk.
        store_config.on_failure = Some(Arc::new(|e| {
            tracing::error!(error = %e, "the store could not make writes durable; stopping");
            eprintln!("skiff server: the store could not make writes durable ({e}); stopping");
            std::process::exit(70);
        }));
        let store = SledStore::open(store_config).with_context(|| {
            format!(
                "cannot open the store in {} (is another server using it?)",
                data_dir.display()
            )
        })?;
        let keys = Keyring::load_or_create(&data_dir)
            .context("cannot read the key that encrypts Secrets at rest")?;
        let store = Encrypted::new(store, keys);
        let resealed = reseal(&store)
            .await
            .context("cannot re-encrypt Secrets with the current key")?;
        if resealed > 0 {
            tracing::info!(
                secrets = resealed,
                "re-encrypted Secrets with the current key"
            );
        }
        let api = Api::open(
            Arc::new(store),
            api::Config {
                tolerations,
                service_cidr,
                modules_dir: Some(data_dir.join("modules")),
                watch_cache,
                bookmark_interval,
            },
        )?;
        api.bootstrap()
            .await
            .context("cannot create the system namespaces")?;
        skiff_control_plane::auth::policy::bootstrap(&api)
            .await
            .context("cannot create the default RBAC roles")?;
        skiff_control_plane::controllers::aggregation::aggregate_all(&api)
            .await
            .context("cannot aggregate the default RBAC roles")?;
        let auth = skiff_control_plane::auth::Cache::load(&api)
            .context("cannot read the RBAC policy and service accounts")?;

        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let url = if host.contains(':') {
            format!("https://[{host}]:{}", addr.port())
        } else {
            format!("https://{host}:{}", addr.port())
        };
        api.ensure_kubernetes_service(&host, addr.port())
            .await
            .context("cannot create the kubernetes Service")?;
        let mut names = vec![host.clone()];
        names.extend(tls_sans.iter().map(|n| n.trim().to_string()));
        if addr.ip().is_unspecified()
            && let Some(ip) = default_route_address(addr.ip())
        {
            names.push(ip.to_string());
        }
        let identity = Identity::load_or_create(&data_dir, &names).context("cannot set up TLS")?;
        identity
            .write_client_files(&data_dir, &url)
            .context("cannot write kubeconfig and node-token")?;
        let tls = apiserver::tls_config(&identity).context("cannot configure TLS")?;

        let shutdown = CancellationToken::new();
        let checks = skiff_control_plane::health::Checks::default();
        let nodes = apiserver::nodes::NodeRegistry::load(
            data_dir.join("pki").join("nodes"),
            identity.node_secret.clone(),
        )
        .context("cannot load the node keys")?;
        let server = apiserver::Server::new(
            api.clone(),
            &identity,
            auth.clone(),
            nodes,
            apiserver::modules::ModuleStore::new(data_dir.join("modules")),
            format!("{host}:{}", addr.port()),
            checks.clone(),
            shutdown.clone(),
        );
        tracing::info!(%url, kubeconfig = %data_dir.join("kubeconfig").display(), "serving");
        let serving = tokio::spawn(apiserver::run(server, listener, tls));
        let scheduler = tokio::spawn({
            let (api, checks, stop) = (api.clone(), checks.clone(), shutdown.clone());
            async move {
                let s = stop.clone();
                // Restarted (and reported by /readyz) if it dies, as every controller is.
                skiff_control_plane::controllers::runner::supervise(
                    "scheduler",
                    &checks,
                    &stop,
                    || {
                        skiff_control_plane::scheduler::run_with(
                            api.clone(),
                            scoring.clone(),
                            s.clone(),
                        )
                    },
                )
                .await;
            }
        });
        let controllers = tokio::spawn(skiff_control_plane::controllers::run(
            api.clone(),
            skiff_control_plane::controllers::Settings {
                node_lifecycle,
                pod_gc,
                event_ttl,
            },
            checks,
            shutdown.clone(),
        ));
        let authorizer = tokio::spawn(auth.run(api.clone(), shutdown.clone()));
        Ok(Self {
            url,
            data_dir,
            api,
            shutdown,
            serving,
            scheduler,
            controllers,
            authorizer,
        })
    }

    /// The admin kubeconfig the control plane wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// Stops serving, scheduling and the controllers, and closes the store once its writes are durable.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.serving.await?;
        self.scheduler.await?;
        self.controllers.await?;
        self.authorizer.await?;
        self.api.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The address of this machine's interface of the default route, in `family`'s IP version:
/// a UDP socket "connected" to a documentation address picks it, and sends nothing.
fn default_route_address(family: std::net::IpAddr) -> Option<std::net::IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if family.is_ipv4() {
        (([0, 0, 0, 0], 0).into(), ([192, 0, 2, 1], 9).into())
    } else {
        (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            ("2001:db8::1".parse::<std::net::Ipv6Addr>().ok()?, 9).into(),
        )
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}
