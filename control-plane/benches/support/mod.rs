//! What the control-plane benchmarks share: the store, API layer and HTTPS API server, served
//! in this process from a scratch directory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use skiff_control_plane::api::{self, Api};
use skiff_control_plane::apiserver::{self, pki::Identity};
use skiff_control_plane::store::{SledConfig, SledStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A control plane serving on a loopback port.
pub struct ControlPlane {
    pub api: Api,
    pub addr: SocketAddr,
    pub identity: Identity,
    pub shutdown: CancellationToken,
    pub serving: JoinHandle<()>,
}

/// Opens a store in `dir` and serves the API over HTTPS on a free loopback port.
pub async fn serve(dir: &Path) -> ControlPlane {
    serve_on(dir, "127.0.0.1:0".parse().expect("address")).await
}

/// Opens a store in `dir` and serves the API over HTTPS on `addr`.
pub async fn serve_on(dir: &Path, addr: SocketAddr) -> ControlPlane {
    let store = SledStore::open(SledConfig::new(dir.join("store"))).expect("store");
    let api = Api::new(Arc::new(store), api::Config::default());
    api.bootstrap().await.expect("bootstrap");
    let identity = Identity::load_or_create(dir, &[]).expect("identity");
    let tls = apiserver::tls_config(&identity).expect("tls");
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let nodes =
        apiserver::nodes::NodeRegistry::load(dir.join("nodes"), identity.node_secret.clone())
            .expect("nodes");
    let auth = skiff_control_plane::auth::Cache::load(&api).expect("auth cache");
    let server = apiserver::Server::new(
        api.clone(),
        &identity,
        auth,
        nodes,
        apiserver::modules::ModuleStore::new(dir.join("modules")),
        addr.to_string(),
        skiff_control_plane::health::Checks::default(),
        shutdown.clone(),
    );
    let serving = tokio::spawn(apiserver::run(server, listener, tls));
    ControlPlane {
        api,
        addr,
        identity,
        shutdown,
        serving,
    }
}
