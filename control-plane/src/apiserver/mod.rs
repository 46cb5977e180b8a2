//! The HTTPS API server: authentication, routing and encoding over the internal [`Api`].
//!
//! Handlers stay thin: they parse the request into a resource, verb and options, call the API
//! layer, and encode the answer (JSON, Table, or a watch stream).

mod access;
mod agents;
mod discovery;
mod handlers;
pub mod modules;
pub mod nodes;
pub mod pki;
mod protobuf;
mod reviews;
mod table;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Api;
use crate::auth::{self, UserInfo, tokens};
use crate::health::Checks;

/// Who is calling: the result of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    /// The cluster administrator (the kubeconfig written at start), in `system:masters`:
    /// allowed everything without consulting RBAC.
    Admin,
    /// An agent, by node name (see [`nodes`]), confined by the node authorizer.
    Node(String),
    /// Anyone else (a service account, or whom the admin impersonates), authorized by RBAC.
    Subject(UserInfo),
}

impl User {
    /// The user as authorizers and reviews see it.
    pub fn info(&self) -> std::borrow::Cow<'_, UserInfo> {
        match self {
            Self::Admin => std::borrow::Cow::Borrowed(UserInfo::admin()),
            Self::Node(node) => std::borrow::Cow::Owned(UserInfo {
                name: format!("system:node:{node}"),
                uid: String::new(),
                groups: vec!["system:nodes".into(), auth::AUTHENTICATED.into()],
            }),
            Self::Subject(info) => std::borrow::Cow::Borrowed(info),
        }
    }
}

/// Everything the handlers share.
pub struct Server {
    api: Api,
    admin_token: String,
    tokens: tokens::Issuer,
    auth: Arc<auth::Cache>,
    nodes: nodes::NodeRegistry,
    modules: modules::ModuleStore,
    ca_pem: String,
    server_address: String,
    checks: Checks,
    shutdown: CancellationToken,
    metrics: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Server {
    /// A server over `api` that accepts `identity`'s admin token, the service-account tokens
    /// its key signs (checked against `auth`, which also holds the RBAC policy) and the
    /// credentials of nodes that joined (`nodes`), and reports `server_address` in discovery.
    /// The CA is served to joining agents, which check it against the hash their join token
    /// pins. `/readyz` reports `checks`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a separate part the server is made of"
    )]
    pub fn new(
        api: Api,
        identity: &pki::Identity,
        auth: Arc<auth::Cache>,
        nodes: nodes::NodeRegistry,
        modules: modules::ModuleStore,
        server_address: String,
        checks: Checks,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            api,
            admin_token: identity.admin_token.clone(),
            tokens: tokens::Issuer::new(
                identity.service_account_key.clone(),
                tokens::DEFAULT_ISSUER,
                vec![tokens::DEFAULT_ISSUER.to_string()],
            ),
            auth,
            nodes,
            modules,
            ca_pem: identity.ca_pem.clone(),
            server_address,
            checks,
            shutdown,
            metrics: Mutex::new(BTreeMap::new()),
        })
    }

    fn authenticate(&self, header: Option<&http::HeaderValue>) -> Option<User> {
        let token = header?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Some(User::Admin);
        }
        if let Some(node) = self.nodes.authenticate(token) {
            return Some(User::Node(node));
        }
        self.authenticate_service_account(token).map(User::Subject)
    }

    /// A service-account token: signed by this server, current, for the API's audience, and
    /// naming a service account (and bound object) that still exists with the same uid.
    fn authenticate_service_account(&self, token: &str) -> Option<UserInfo> {
        let claims = match self.tokens.verify(token, tokens::now()) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "bearer token refused");
                return None;
            }
        };
        let k = &claims.kubernetes;
        let sa = &k.serviceaccount;
        if claims.sub != auth::service_account_username(&k.namespace, &sa.name)
            || self
                .auth
                .service_account_uid(&k.namespace, &sa.name)
                .as_deref()
                != Some(sa.uid.as_str())
        {
            tracing::debug!(account = %claims.sub, "token of a service account that is gone");
            return None;
        }
        for (plural, bound) in [("pods", &k.pod), ("secrets", &k.secret)] {
            if let Some(bound) = bound {
                let live = self
                    .api
                    .get(
                        crate::api::resources::core(plural),
                        Some(&k.namespace),
                        &bound.name,
                    )
                    .ok()?;
                if crate::api::object::uid(&live) != bound.uid {
                    return None;
                }
            }
        }
        Some(UserInfo::service_account(&k.namespace, &sa.name, &sa.uid))
    }

    fn count(&self, verb: &str, code: u16) {
        let mut m = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((verb.to_string(), code)).or_default() += 1;
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds the rustls configuration from the server identity.
pub fn tls_config(identity: &pki::Identity) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS on `listener` until `server`'s shutdown token fires, then stops accepting,
/// ends open watches and waits for in-flight requests.
pub async fn run(server: Arc<Server>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let connections = TaskTracker::new();
    let shutdown = server.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let acceptor = acceptor.clone();
        let server = server.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            serve_connection(server, TokioIo::new(tls), peer, shutdown).await;
        });
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection<I>(
    server: Arc<Server>,
    io: I,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, std::convert::Infallible>(handlers::handle(server, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
        }
    }
}
