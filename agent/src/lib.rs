//! The Skiff node agent (the kubelet of Skiff): joins the cluster with a node token, registers
//! its Node and heartbeats its Lease, and runs the pods bound to it in the wasmtime runtime,
//! reporting their status through one writer (module `status`). It talks to the control
//! plane only through the Kubernetes API.
//! It serves its pods' HTTP functions (module `functions`), answers NodePort and LoadBalancer
//! Services (module `proxy`), and routes its guests' outgoing HTTP requests to Services by name
//! or ClusterIP, or out of the cluster (module `egress`).
//! [`sim`] runs thousands of simulated nodes from one process, for tests and benchmarks.

mod egress;
mod endpoint;
mod functions;
mod join;
mod modules;
mod node;
mod pods;
mod policy;
mod probes;
mod proxy;
pub mod sim;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use skiff_runtime::{DirSource, ModuleSource, WasmConfig, WasmRuntime};
use tokio_util::sync::CancellationToken;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API server, `https://HOST:PORT`.
    pub server: String,
    /// The node join token (`DIR/node-token` of the server).
    pub token: String,
    /// Where the agent keeps its identity, module cache, pods and logs.
    pub data_dir: PathBuf,
    /// The Node's name.
    pub node_name: String,
    /// The address reported for the node and its pods.
    pub node_ip: Option<String>,
    /// Where modules come from for local development: a directory of `<name>.wasm` files.
    /// Without it, modules come from the control plane's module store.
    pub module_dir: Option<PathBuf>,
    /// Publisher keys whose module signatures this node accepts.
    pub trusted_keys: Vec<skiff_runtime::VerifyingKey>,
    /// Run only modules signed by a trusted key.
    pub require_signatures: bool,
    /// Host directories `hostPath` volumes may name (themselves or below); none: no hostPath.
    pub host_path_prefixes: Vec<PathBuf>,
    /// Lease renewal interval.
    pub heartbeat: Duration,
    /// First restart back-off; it doubles per restart up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest restart back-off.
    pub backoff_max: Duration,
    /// Pods this node takes (sizes the runtime's instance pools).
    pub max_pods: u32,
    /// Port of the agent's endpoint for the API server (logs); 0 picks a free one.
    pub port: u16,
}

impl Config {
    /// Defaults as the kubelet has them, with a Wasm node's pod capacity.
    pub fn new(server: String, token: String, data_dir: PathBuf, node_name: String) -> Self {
        Self {
            server,
            token,
            data_dir,
            node_name,
            node_ip: None,
            module_dir: None,
            trusted_keys: Vec::new(),
            require_signatures: false,
            host_path_prefixes: Vec::new(),
            heartbeat: Duration::from_secs(10),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            max_pods: 1000,
            port: 10250,
        }
    }
}

/// Runs the agent until `stop`.
pub async fn run(config: Config, stop: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let mut names = vec![config.node_name.clone()];
    names.extend(config.node_ip.clone());
    let identity = endpoint::serving_identity(&config.data_dir, names)?;
    let bind = config.node_ip.clone().unwrap_or("0.0.0.0".into());
    let listener = tokio::net::TcpListener::bind((bind.as_str(), config.port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{}", config.port))?;
    let port = listener.local_addr()?.port();
    let creds = join::credentials(
        &config.server,
        &config.token,
        &config.node_name,
        &identity.0,
        &config.data_dir,
    )
    .await?;
    let client = client(&config.server, &creds)?;
    // Registration waits for the control plane; the pods this node had run meanwhile.
    let registration = {
        let (client, config, stop) = (client.clone(), config.clone(), stop.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match node::register(&client, &config, port).await {
                    Ok(()) => {
                        tracing::info!(node = %config.node_name, server = %config.server, "node registered");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot register the node yet; retrying")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        })
    };

    let source: Arc<dyn ModuleSource> = match &config.module_dir {
        Some(dir) => Arc::new(DirSource::new(dir)),
        None => Arc::new(modules::ControlPlaneSource::new(
            http_client(&creds)?,
            config.server.clone(),
            creds.token.clone(),
            config.data_dir.join("modules"),
        )),
    };
    let (services, service_watch) = proxy::service_view();
    let egress = egress::Egress::new(&config.node_name, services.clone());
    let mut wasm = WasmConfig::new(config.data_dir.join("cache"), config.max_pods);
    wasm.outgoing_http = Some(Arc::new(egress.clone()));
    wasm.trusted_keys = config.trusted_keys.clone();
    wasm.require_signatures = config.require_signatures;
    wasm.host_path_prefixes = config.host_path_prefixes.clone();
    let runtime = Arc::new(WasmRuntime::new(wasm, source)?);
    let serving = tokio::spawn(endpoint::serve(
        listener,
        identity,
        join::agent_token(&creds.token),
        config.data_dir.join("pods"),
        runtime.clone(),
        stop.clone(),
    ));
    let config = Arc::new(config);
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        config.clone(),
        stop.clone(),
    ));
    let images = tokio::spawn(node::report_images(
        client.clone(),
        config.clone(),
        runtime.clone(),
        stop.clone(),
    ));
    let functions = functions::Functions::new(runtime.clone(), stop.clone());
    egress.serve_local(&functions);
    let proxy = tokio::spawn(proxy::run(
        client.clone(),
        services,
        service_watch,
        config.node_name.clone(),
        config.node_ip.clone(),
        functions.clone(),
        stop.clone(),
    ));
    let policies = policy::Policies::load(&config.data_dir);
    egress.enforce(policies.clone());
    let policy_watch = tokio::spawn(policies.clone().run(client.clone(), stop.clone()));
    let statuses = status::Statuses::new(client.clone());
    let status_writer = tokio::spawn(statuses.clone().run(stop.clone()));
    let pods = pods::Pods::new(
        client,
        statuses,
        config,
        runtime,
        functions.clone(),
        policies,
    );
    pods.clone().resume_local();
    pods.run(stop).await;
    registration.abort();
    proxy.await?;
    functions.stopped().await;
    heartbeat.await?;
    images.await?;
    policy_watch.await?;
    status_writer.await?;
    serving.await??;
    Ok(())
}

fn client(server: &str, creds: &join::Credentials) -> anyhow::Result<kube::Client> {
    let der = pem_certs(&creds.ca_pem);
    let mut config = kube::Config::new(server.parse().context("invalid --server URL")?);
    config.root_cert = Some(der);
    config.auth_info.token = Some(creds.token.clone().into());
    Ok(kube::Client::try_from(config)?)
}

fn http_client(creds: &join::Credentials) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(creds.ca_pem.as_bytes())?)
        .tls_built_in_root_certs(false)
        .build()?)
}

fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            inside = true;
            body.clear();
        } else if line.starts_with("-----END CERTIFICATE") {
            inside = false;
            if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&body) {
                out.push(der);
            }
        } else if inside {
            body.push_str(line.trim());
        }
    }
    out
}
