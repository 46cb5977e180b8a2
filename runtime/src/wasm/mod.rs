//! The wasmtime backend: containers are WebAssembly modules run in-process.
//!
//! One engine per node with the pooling allocator, copy-on-write memory images and epoch
//! interruption; a ticker thread advances the epoch every millisecond. Each container runs as a
//! task; every `slice` of guest execution it yields (or, under a CPU limit, sleeps for its share),
//! so a spinning guest cannot starve the others. Compiled code is cached on disk by module digest
//! and engine configuration: a module compiles once per node, later pulls only deserialize.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::Digest as _;
use tokio_util::task::TaskTracker;
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{
    Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter, Store, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::ContainerRuntime;
use crate::egress::{Caller, GuestEgress, OutgoingHttp};
use crate::error::{Error, Result, io};
use crate::logs::{GuestOutput, LogFile};
use crate::source::ModuleSource;
use crate::state::{self, Container, Registry};
use crate::types::*;

/// How the wasmtime backend is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where module bytes and compiled artifacts are cached.
    pub cache_dir: PathBuf,
    /// Containers that may run at once (sizes the instance pools).
    pub max_containers: u32,
    /// The most linear memory one container may have (the pool's slot size).
    pub max_memory_bytes: u64,
    /// Epoch tick.
    pub tick: Duration,
    /// Ticks a guest runs before it yields to others.
    pub slice_ticks: u64,
    /// Log file size at which it is rotated.
    pub log_max_bytes: u64,
    /// Publisher keys whose signatures this node accepts.
    pub trusted_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Refuse modules without a valid signature by a trusted key.
    pub require_signatures: bool,
    /// Host directories that `hostPath` volumes may name (themselves or anything below them).
    /// Empty: this node allows no `hostPath` volumes.
    pub host_path_prefixes: Vec<PathBuf>,
    /// Where guests' outgoing HTTP requests go; `None` denies them all.
    pub outgoing_http: Option<Arc<dyn OutgoingHttp>>,
}

impl Config {
    /// Defaults for a node of `max_containers` pods.
    pub fn new(cache_dir: impl Into<PathBuf>, max_containers: u32) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_containers,
            max_memory_bytes: 256 << 20,
            tick: Duration::from_millis(1),
            slice_ticks: 5,
            log_max_bytes: 10 << 20,
            trusted_keys: Vec::new(),
            require_signatures: false,
            host_path_prefixes: Vec::new(),
            outgoing_http: None,
        }
    }
}

/// The wasmtime container runtime.
pub struct WasmRuntime {
    inner: Arc<Inner>,
    ticker_stop: Arc<AtomicBool>,
    /// The executor guests run on, apart from the agent's own tasks.
    guests: Option<tokio::runtime::Runtime>,
}

struct Inner {
    engine: Engine,
    linker: Linker<Host>,
    component_linker: ComponentLinker<Host>,
    config: Config,
    source: Arc<dyn ModuleSource>,
    registry: Registry,
    images: Mutex<HashMap<String, Image>>,
    tasks: TaskTracker,
    guest_handle: tokio::runtime::Handle,
    /// Running containers whose image is a `wasi:http/proxy` component, by container id.
    serving: Mutex<HashMap<String, Arc<Serving>>>,
}

/// A container serving HTTP: no guest runs until a request comes, then a fresh instance per
/// request.
struct Serving {
    pre: ProxyPre<Host>,
    log: LogFile,
    /// Cancelled by a graceful stop: no new requests, in-flight ones finish.
    draining: tokio_util::sync::CancellationToken,
    requests: TaskTracker,
    /// The pod its outgoing requests are made for.
    caller: Arc<Caller>,
}

#[derive(Clone)]
struct Image {
    id: String,
    pre: Pre,
    /// The module's sha256 digest and its publisher's signature, checked against the pod's
    /// WasmPolicies when a container is created from it.
    digest: [u8; 32],
    signature: Option<Vec<u8>>,
}

/// A pulled image, pre-instantiated once: a preview 1 command module, a `wasi:cli/run`
/// component, or a `wasi:http/proxy` component.
#[derive(Clone)]
enum Pre {
    Run(Command),
    Http(ProxyPre<Host>),
}

/// Something that runs to completion.
#[derive(Clone)]
enum Command {
    Module(InstancePre<Host>),
    Component(CommandPre<Host>),
}

/// A guest's host state.
struct Host {
    wasi: WasiP1Ctx,
    http: WasiHttpCtx,
    egress: GuestEgress,
    limits: Limiter,
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: self.wasi.ctx().table,
            hooks: &mut self.egress,
        }
    }
}

/// The body of a response from a guest's HTTP handler.
pub type HttpBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Enforces `limits.memory`, remembering when it was the reason a guest died.
struct Limiter {
    max_memory: Option<usize>,
    oom: Arc<AtomicBool>,
    container: Arc<Container>,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(max) = self.max_memory.filter(|m| desired > *m) {
            self.oom.store(true, Ordering::Relaxed);
            wasmtime::bail!(
                "memory limit exceeded: growing to {desired} bytes, limit is {max} bytes"
            );
        }
        self.container
            .memory_bytes
            .store(desired as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasmRuntime {
    /// Builds the engine, its pools and the epoch ticker.
    pub fn new(config: Config, source: Arc<dyn ModuleSource>) -> Result<Self> {
        warn_if_host_caps_density(config.max_containers);
        let engine = engine(&config)
            .map_err(|e| Error::InvalidState(format!("cannot configure wasmtime: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)
            .map_err(|e| Error::InvalidState(format!("cannot link WASI: {e:#}")))?;
        let mut component_linker = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .and_then(|()| {
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            })
            .map_err(|e| Error::InvalidState(format!("cannot link WASI 0.2: {e:#}")))?;
        // Guests run on their own executor. It checks timers after every task poll, so a guest
        // whose sleep ended runs at the next slice boundary even while others spin (tokio's
        // default checks only every 61 polls, which here would be 61 slices).
        let guests = tokio::runtime::Builder::new_multi_thread()
            .thread_name("wasm-guest")
            .event_interval(1)
            .enable_all()
            .build()
            .map_err(io("cannot start the guest executor"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let (engine, stop, tick) = (engine.clone(), ticker_stop.clone(), config.tick);
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(io("cannot start the epoch ticker"))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                component_linker,
                config,
                source,
                registry: Registry::default(),
                images: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                guest_handle: guests.handle().clone(),
                serving: Mutex::new(HashMap::new()),
            }),
            ticker_stop,
            guests: Some(guests),
        })
    }

    fn image(&self, image: &str) -> Result<Image> {
        self.inner
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(image)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "image",
                id: image.into(),
            })
    }

    /// Compiles (or loads the cached compilation of) a module or component and pre-instantiates
    /// it against WASI.
    async fn load(&self, image: &str, bytes: Vec<u8>, digest: &str) -> Result<Pre> {
        let invalid = |reason: String| Error::InvalidModule {
            image: image.into(),
            reason,
        };
        if !bytes.starts_with(b"\0asm") {
            return Err(invalid(
                "not a WebAssembly module (missing the \\0asm header)".into(),
            ));
        }
        let component = wasmparser_is_component(&bytes);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let dir = self
            .inner
            .config
            .cache_dir
            .join("compiled")
            .join(format!("{:016x}", hasher.finish()));
        let artifact = dir.join(format!("{digest}.cwasm"));
        let inner = self.inner.clone();
        let image_name = image.to_string();
        tokio::task::spawn_blocking(move || -> Result<Pre> {
            let invalid = |e: wasmtime::Error| Error::InvalidModule { image: image_name.clone(), reason: format!("{e:#}") };
            let cached = artifact.exists();
            let (pre, serialized) = if component {
                #[expect(unsafe_code, reason = "the artifact was written by this engine configuration (its hash names the directory) into the node's private cache")]
                let loaded = cached.then(|| unsafe { Component::deserialize_file(&inner.engine, &artifact) }).and_then(|r| r.ok());
                let fresh = loaded.is_none();
                let c = match loaded {
                    Some(c) => c,
                    None => Component::new(&inner.engine, &bytes).map_err(invalid)?,
                };
                let serialized = if fresh { Some(c.serialize().map_err(invalid)?) } else { None };
                let pre = inner.component_linker.instantiate_pre(&c).map_err(invalid)?;
                let pre = match CommandPre::new(pre.clone()) {
                    Ok(command) => Pre::Run(Command::Component(command)),
                    Err(_) => Pre::Http(ProxyPre::new(pre).map_err(|_| Error::InvalidModule {
                        image: image_name.clone(),
                        reason: "the component exports neither wasi:cli/run (a command) nor wasi:http/incoming-handler (an HTTP handler)".into(),
                    })?),
                };
                (pre, serialized)
            } else {
                #[expect(unsafe_code, reason = "the artifact was written by this engine configuration (its hash names the directory) into the node's private cache")]
                let loaded = cached.then(|| unsafe { Module::deserialize_file(&inner.engine, &artifact) }).and_then(|r| r.ok());
                let fresh = loaded.is_none();
                let m = match loaded {
                    Some(m) => m,
                    None => Module::new(&inner.engine, &bytes).map_err(invalid)?,
                };
                let serialized = if fresh { Some(m.serialize().map_err(invalid)?) } else { None };
                (Pre::Run(Command::Module(inner.linker.instantiate_pre(&m).map_err(invalid)?)), serialized)
            };
            if let Some(serialized) = serialized {
                std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
                let tmp = artifact.with_extension("tmp");
                std::fs::write(&tmp, serialized).map_err(io(format!("cannot write {}", tmp.display())))?;
                std::fs::rename(&tmp, &artifact).map_err(io(format!("cannot write {}", artifact.display())))?;
            }
            Ok(pre)
        })
        .await
        .map_err(|e| Error::InvalidState(format!("compilation task failed: {e}")))?
    }

    /// A store for one run of a container (or one request to it): its WASI context with args,
    /// env and volumes, stdio into its log, its memory limit and its CPU slicing.
    fn new_store(
        &self,
        c: &Arc<Container>,
        log: &LogFile,
        oom: Arc<AtomicBool>,
        caller: Arc<Caller>,
    ) -> Result<Store<Host>> {
        let config = &c.config;
        let create = |reason: String| Error::Create {
            name: config.name.clone(),
            reason,
        };
        let mut wasi = WasiCtxBuilder::new();
        wasi.arg(&config.name).args(&config.args).envs(&config.env);
        if let Some(dir) = &config.working_dir {
            wasi.env("PWD", dir);
        }
        for m in &config.mounts {
            let perms = if m.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(&m.host_path, &m.container_path, perms)
                .map_err(|e| create(format!("volume {}: {e:#}", m.host_path.display())))?;
        }
        wasi.stdout(GuestOutput::new(log, "stdout"));
        wasi.stderr(GuestOutput::new(log, "stderr"));
        let limits = Limiter {
            max_memory: config.limits.memory_bytes.map(|m| m as usize),
            oom,
            container: c.clone(),
        };
        let mut store = Store::new(
            &self.inner.engine,
            Host {
                wasi: wasi.build_p1(),
                http: WasiHttpCtx::new(),
                egress: GuestEgress {
                    route: self.inner.config.outgoing_http.clone(),
                    caller,
                },
                limits,
            },
        );
        store.limiter(|h| &mut h.limits);
        let slice = self.inner.config.slice_ticks;
        let slice_time = self.inner.config.tick * slice as u32;
        // Under a CPU limit of L millicores a guest runs one slice, then waits (1000-L)/L slices.
        let pause = config
            .limits
            .cpu_millis
            .filter(|l| *l > 0 && *l < 1000)
            .map(|l| slice_time * (1000 - l as u32) / l as u32);
        let cpu_owner = c.clone();
        store.epoch_deadline_callback(move |_| {
            cpu_owner
                .cpu_nanos
                .fetch_add(slice_time.as_nanos() as u64, Ordering::Relaxed);
            let yield_now: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                match pause {
                    Some(p) => Box::pin(tokio::time::sleep(p)),
                    None => Box::pin(YieldOnce(false)),
                };
            Ok(UpdateDeadline::YieldCustom(slice, yield_now))
        });
        // Instantiation can run guest code: the deadline must be set first.
        store.set_epoch_deadline(slice);
        Ok(store)
    }

    /// The pod a container belongs to, as its outgoing requests name it.
    fn caller(&self, c: &Container) -> Arc<Caller> {
        let pod = self.inner.registry.sandbox_status(&c.sandbox_id).ok();
        Arc::new(Caller {
            namespace: pod
                .as_ref()
                .map(|p| p.config.namespace.clone())
                .unwrap_or_default(),
            pod: pod.map(|p| p.config.name).unwrap_or_default(),
        })
    }

    fn spawn(&self, c: Arc<Container>, image: Image) -> Result<()> {
        let log = LogFile::new(&c.config.log_path, self.inner.config.log_max_bytes);
        let command = match image.pre {
            Pre::Run(command) => command,
            Pre::Http(pre) => return self.serve(c, pre, log),
        };
        let oom = Arc::new(AtomicBool::new(false));
        let mut store = self.new_store(&c, &log, oom.clone(), self.caller(&c))?;
        let started_at = SystemTime::now();
        c.set_state(ContainerState::Running { started_at });
        let tracked = self.inner.tasks.track_future(async move {
            let run = async {
                match &command {
                    Command::Module(pre) => {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await
                    }
                    Command::Component(pre) => {
                        let cli = pre.instantiate_async(&mut store).await?;
                        // `wasi:cli/run` reports only success or failure: exit code 0 or 1.
                        match cli.wasi_cli_run().call_run(&mut store).await? {
                            Ok(()) => Ok(()),
                            Err(()) => Err(I32Exit(1).into()),
                        }
                    }
                }
            };
            let state = tokio::select! {
                result = run => exit_state(started_at, result, oom.load(Ordering::Relaxed)),
                _ = c.kill.cancelled() => state::exited(started_at, 137, ExitReason::Error, "stopped by the runtime".into()),
            };
            // Dropping the store closes stdout and stderr, flushing their last partial lines.
            drop(store);
            c.set_state(state);
        });
        // Owned by the tracker; the handle is not needed to learn the outcome (the state is).
        drop(self.inner.guest_handle.spawn(tracked));
        Ok(())
    }
}

impl WasmRuntime {
    /// Starts a container whose image is an HTTP handler: it runs no guest code until requests
    /// come, and stops once it has drained them (or at once when killed).
    fn serve(&self, c: Arc<Container>, pre: ProxyPre<Host>, log: LogFile) -> Result<()> {
        let serving = Arc::new(Serving {
            pre,
            log,
            draining: tokio_util::sync::CancellationToken::new(),
            requests: TaskTracker::new(),
            caller: self.caller(&c),
        });
        self.inner
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.id.clone(), serving.clone());
        let started_at = SystemTime::now();
        c.set_state(ContainerState::Running { started_at });
        let inner = self.inner.clone();
        let tracked = self.inner.tasks.track_future(async move {
            tokio::select! {
                _ = c.kill.cancelled() => {}
                _ = serving.draining.cancelled() => {}
            }
            serving.requests.close();
            let state = tokio::select! {
                _ = serving.requests.wait() => state::exited(started_at, 0, ExitReason::Completed, String::new()),
                _ = c.kill.cancelled() => state::exited(started_at, 137, ExitReason::Error, "stopped by the runtime with requests in flight".into()),
            };
            inner.serving.lock().unwrap_or_else(|e| e.into_inner()).remove(&c.id);
            c.set_state(state);
        });
        drop(self.inner.guest_handle.spawn(tracked));
        Ok(())
    }

    /// Whether a container serves HTTP: a running `wasi:http/proxy` component, not stopping.
    pub fn serves_http(&self, container_id: &str) -> bool {
        self.inner
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(container_id)
            .is_some_and(|s| !s.draining.is_cancelled())
    }

    /// Answers one HTTP request with a fresh instance of a running container's
    /// `wasi:http/proxy` component, under the container's memory and CPU limits, its output
    /// going to the container's log. A guest that fails (traps, exceeds its memory) fails only
    /// this request: the error says why and is logged to the container's stderr. Dropping the
    /// returned future before it resolves (a caller's timeout) stops the instance.
    pub async fn handle_http<B>(
        &self,
        container_id: &str,
        request: http::Request<B>,
    ) -> Result<http::Response<HttpBody>>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let c = self.inner.registry.container(container_id)?;
        let serving = self
            .inner
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(container_id)
            .cloned()
            .filter(|s| !s.draining.is_cancelled() && !c.kill.is_cancelled())
            .ok_or_else(|| {
                Error::InvalidState(format!(
                    "container {container_id} is not serving HTTP (not running, stopping, or not a wasi:http/proxy component)"
                ))
            })?;
        let failed = |reason: String| {
            serving.log.record(
                "stderr",
                'F',
                format!("request failed: {reason}").as_bytes(),
            );
            Error::Http {
                container: c.config.name.clone(),
                reason,
            }
        };
        let oom = Arc::new(AtomicBool::new(false));
        let mut store = self.new_store(&c, &serving.log, oom.clone(), serving.caller.clone())?;
        let (respond, response) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| failed(format!("{e:#}")))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(respond)
            .map_err(|e| failed(format!("{e:#}")))?;
        let pre = serving.pre.clone();
        let kill = c.kill.clone();
        // A caller that gives up before the answer (a timeout) stops the instance with it.
        let abandoned = tokio_util::sync::CancellationToken::new();
        let give_up = abandoned.clone().drop_guard();
        // The instance lives on after answering, for as long as it streams the body.
        let run = self
            .inner
            .guest_handle
            .spawn(serving.requests.track_future(async move {
                let handle = async {
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, request, out)
                        .await
                };
                tokio::select! {
                    biased;
                    _ = kill.cancelled() => Err(wasmtime::format_err!("stopped by the runtime")),
                    _ = abandoned.cancelled() => Err(wasmtime::format_err!("abandoned by the caller before answering")),
                    result = handle => result,
                }
            }));
        let answered = response.await;
        give_up.disarm();
        match answered {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(failed(format!(
                "the handler answered with an error: {code:?}"
            ))),
            Err(_) => {
                let why = match run.await {
                    Ok(Ok(())) => "the handler returned without setting a response".to_string(),
                    Ok(Err(_)) if oom.load(Ordering::Relaxed) => format!(
                        "OOMKilled: the handler exceeded its memory limit of {} bytes",
                        c.config.limits.memory_bytes.unwrap_or_default()
                    ),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => format!("the request task failed: {e}"),
                };
                Err(failed(why))
            }
        }
    }
}

/// Gives the executor back for one turn: wakes itself and returns `Pending` once.
///
/// Unlike `tokio::task::yield_now`, whose deferred wake-up lands in the worker's LIFO slot (so
/// a spinning guest would run again before anything queued behind it), a task that wakes itself
/// while being polled goes to the back of the run queue: every other ready guest runs first.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Each running container holds a few memory mappings (its stack's two regions, its memory and
/// tables); Linux caps them per process with `vm.max_map_count`. Say so when that cap, not the
/// configured pod capacity, will limit density.
fn warn_if_host_caps_density(max_containers: u32) {
    const MAPS_PER_CONTAINER: u64 = 5;
    let Some(limit) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return;
    };
    let needed = u64::from(max_containers) * MAPS_PER_CONTAINER + 4096;
    if needed > limit {
        tracing::warn!(
            max_containers,
            max_map_count = limit,
            fits = limit.saturating_sub(4096) / MAPS_PER_CONTAINER,
            "vm.max_map_count caps how many containers this node can run; raise it (sysctl -w vm.max_map_count={needed}) for the configured capacity"
        );
    }
}

/// A `hostPath` volume must resolve (symlinks and `..` followed) to one of the node's allowed
/// directories or below.
fn check_host_path(allowed: &[PathBuf], path: &std::path::Path) -> std::result::Result<(), String> {
    if allowed.is_empty() {
        return Err(format!(
            "hostPath volume {} is not allowed: this node allows no hostPath volumes",
            path.display()
        ));
    }
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("hostPath volume {}: {e}", path.display()))?;
    if allowed
        .iter()
        .filter_map(|a| std::fs::canonicalize(a).ok())
        .any(|a| real.starts_with(a))
    {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(|a| a.display().to_string()).collect();
    Err(format!(
        "hostPath volume {} is not allowed on this node (allowed: {})",
        path.display(),
        list.join(", ")
    ))
}

/// Components have layer 1 in their preamble; core modules have version 1, layer 0.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00])
}

fn exit_state(started_at: SystemTime, result: wasmtime::Result<()>, oom: bool) -> ContainerState {
    match result {
        Ok(()) => state::exited(started_at, 0, ExitReason::Completed, String::new()),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => state::exited(started_at, 0, ExitReason::Completed, String::new()),
            Some(I32Exit(code)) => {
                state::exited(started_at, *code, ExitReason::Error, String::new())
            }
            None if oom => state::exited(started_at, 137, ExitReason::OomKilled, format!("{e:#}")),
            // A trap is like an abort: 128 + SIGABRT.
            None => state::exited(started_at, 134, ExitReason::Error, format!("{e:#}")),
        },
    }
}

fn engine(config: &Config) -> wasmtime::Result<Engine> {
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true);
    c.memory_init_cow(true);
    c.max_wasm_stack(512 << 10);
    c.async_stack_size(1 << 20);
    let mut pool = PoolingAllocationConfig::default();
    let n = config.max_containers.max(1);
    // An adapted preview 1 component holds a few core instances and tables besides its memory.
    pool.total_core_instances(n * 4)
        .total_memories(n + 16)
        .total_tables(n * 2 + 16)
        .total_stacks(n)
        .total_component_instances(n)
        .max_memory_size(config.max_memory_bytes as usize)
        // HTTP functions instantiate per request. Resetting a slot by `madvise` flushes the TLB
        // of every core running an agent thread (most of the agent's CPU under load, measured
        // with benches/http.rs); with PAGEMAP_SCAN (Linux 6.7+) only the pages a guest dirtied
        // are restored, by copy, up to these sizes, so a small handler's slot is reused with no
        // `madvise` and no page faults.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&c)
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        // Dropping a runtime inside another one's async context would panic: let it wind down
        // in the background instead.
        if let Some(guests) = self.guests.take() {
            guests.shutdown_background();
        }
    }
}

impl ContainerRuntime for WasmRuntime {
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        Ok(self.inner.registry.add_sandbox(config))
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        for c in self.inner.registry.mark_sandbox_stopped(id)? {
            c.kill.cancel();
            c.exited().await;
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.inner.registry.remove_sandbox(id)
    }

    async fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        let image = self.image(&config.image)?;
        let refuse = |reason: String| Error::Create {
            name: config.name.clone(),
            reason,
        };
        for m in config
            .mounts
            .iter()
            .filter(|m| m.source == MountSource::HostPath)
        {
            check_host_path(&self.inner.config.host_path_prefixes, &m.host_path).map_err(refuse)?;
            // Judged where it really leads, as the node's own check does (symlinks resolved).
            let real = std::fs::canonicalize(&m.host_path).unwrap_or_else(|_| m.host_path.clone());
            let path = real.to_string_lossy();
            if let Some((policy, why)) =
                skiff_api::policy::first_refusal(&config.policies, |p| p.check_host_path(&path))
            {
                return Err(refuse(format!("violates WasmPolicy {policy:?}: {why}")));
            }
        }
        if let Some((policy, why)) = skiff_api::policy::first_refusal(&config.policies, |p| {
            p.check_signature(&image.digest, image.signature.as_deref())
        }) {
            return Err(refuse(format!(
                "violates WasmPolicy {policy:?}: module {}: {why}",
                config.image
            )));
        }
        Ok(self
            .inner
            .registry
            .add_container(sandbox_id, config, image.id)?
            .id
            .clone())
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.inner.registry.container(id)?;
        if c.state() != ContainerState::Created {
            return Err(Error::InvalidState(format!(
                "container {id} was already started"
            )));
        }
        let image = self.image(&c.config.image)?;
        self.spawn(c, image)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let c = self.inner.registry.container(id)?;
        if !matches!(c.state(), ContainerState::Running { .. }) {
            return Ok(());
        }
        // An HTTP handler stops taking requests and finishes those in flight. A command guest has
        // no signal to receive: it gets the grace period to finish on its own. Then it is killed.
        if let Some(serving) = self
            .inner
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            serving.draining.cancel();
        }
        if tokio::time::timeout(grace, c.exited()).await.is_err() {
            c.kill.cancel();
            c.exited().await;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.inner.registry.remove_container(id)
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(self.inner.registry.container(id)?.status())
    }

    async fn list_containers(&self, sandbox_id: Option<&str>) -> Result<Vec<ContainerStatus>> {
        Ok(self.inner.registry.list(sandbox_id))
    }

    async fn pull_image(&self, image: &str) -> Result<String> {
        if let Ok(found) = self.image(image) {
            return Ok(found.id);
        }
        let fetched = self.inner.source.fetch(image).await?;
        let bytes = fetched.bytes;
        let digest_bytes: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let digest: String = digest_bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Where the node requires signatures, a module must verify with a key the node trusts.
        // The publishers a namespace's WasmPolicy names are checked when a container is created.
        match &fetched.signature {
            Some(sig)
                if self.inner.config.require_signatures
                    && !crate::verify_module(&self.inner.config.trusted_keys, &bytes, sig) =>
            {
                return Err(Error::Pull {
                    image: image.into(),
                    reason: "the module's signature does not verify with any trusted publisher key"
                        .into(),
                });
            }
            None if self.inner.config.require_signatures => {
                return Err(Error::Pull {
                    image: image.into(),
                    reason: "the module is not signed, and this node requires signed modules"
                        .into(),
                });
            }
            _ => {}
        }
        if let Some((_, want)) = image.split_once("@sha256:")
            && want != digest
        {
            return Err(Error::Pull {
                image: image.into(),
                reason: format!("digest mismatch: the module is sha256:{digest}"),
            });
        }
        let modules = self.inner.config.cache_dir.join("modules");
        let path = modules.join(format!("{digest}.wasm"));
        if !path.exists() {
            tokio::fs::create_dir_all(&modules)
                .await
                .map_err(io(format!("cannot create {}", modules.display())))?;
            tokio::fs::write(&path, &bytes)
                .await
                .map_err(io(format!("cannot write {}", path.display())))?;
        }
        let pre = self.load(image, bytes, &digest).await?;
        let id = format!("sha256:{digest}");
        self.inner
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                image.to_string(),
                Image {
                    id: id.clone(),
                    pre,
                    digest: digest_bytes,
                    signature: fetched.signature,
                },
            );
        Ok(id)
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        self.inner.registry.sandbox_status(id)
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>> {
        self.inner
            .registry
            .sandbox_ids()
            .iter()
            .map(|id| self.inner.registry.sandbox_status(id))
            .collect()
    }

    async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        Ok(self.inner.registry.container(id)?.stats())
    }

    async fn image_status(&self, image: &str) -> Result<Option<String>> {
        Ok(self.image(image).ok().map(|i| i.id))
    }

    async fn list_images(&self) -> Result<Vec<String>> {
        let mut images: Vec<String> = self
            .inner
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        images.sort();
        Ok(images)
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        if self
            .inner
            .registry
            .list(None)
            .iter()
            .any(|c| c.image == image && matches!(c.state, ContainerState::Running { .. }))
        {
            return Err(Error::InvalidState(format!(
                "image {image} is in use by a running container"
            )));
        }
        self.inner
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(image)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound {
                kind: "image",
                id: image.into(),
            })
    }
}

#[cfg(test)]
mod tests;
