//! HTTP functions: the agent serves the ports of pods whose container is a `wasi:http/proxy`
//! component, in-process.
//!
//! # Addressing
//!
//! Pods have no network namespace, so the agent gives them addresses it can bind. On a node
//! whose address (`--node-ip`) is a loopback address, each pod gets its own address in
//! 127.0.0.0/8, derived from its uid ([`pod_ip`]) and reported as its `podIP`: several pods on
//! one node (and on several agents of one machine) can declare the same `containerPort`, and
//! the kernel routes every 127.x.y.z to loopback with no configuration. On any other node
//! address, pods share the node's address (as host-network pods do): a `containerPort` is
//! bound for the first pod that serves it, and another pod of the node declaring the same port
//! is reachable only through its Services' NodePorts (in-process), with a warning in the log.
//!
//! # Serving
//!
//! A running container whose module is a `wasi:http/proxy` component is served on each of its
//! container's TCP `containerPort`s at `podIP:containerPort`: every request gets a fresh
//! instance ([`WasmRuntime::handle_http`]) under the container's memory and CPU limits, must
//! send its response head within [`REQUEST_TIMEOUT`] (504 otherwise), and at most
//! [`MAX_IN_FLIGHT`] requests per container port are in flight at once, bodies included (503
//! beyond). A command module declaring a
//! `containerPort` runs as before: the agent serves nothing for it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use skiff_runtime::WasmRuntime;
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

/// How long a function has to answer (send its response head).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests one container port answers at once.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// The address of a pod with uid `uid` on a node with address `node_ip`: its own 127.x.y.z
/// when the node's address is a loopback one (never 127.0.0.1, nor a network or broadcast
/// address), the node's address otherwise.
pub(crate) fn pod_ip(node_ip: Option<&str>, uid: &str) -> Option<String> {
    let node = node_ip?;
    match node.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(uid.as_bytes());
            let last = 2 + h[2] % 253;
            Some(Ipv4Addr::new(127, h[0].max(1), h[1], last).to_string())
        }
        _ => Some(node.to_string()),
    }
}

/// The functions this node serves, by pod and port.
pub(crate) struct Functions {
    runtime: Arc<WasmRuntime>,
    pods: Mutex<HashMap<String, HashMap<u16, Arc<Served>>>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// One container port served.
pub(crate) struct Served {
    container_id: String,
    in_flight: Arc<Semaphore>,
    /// Stops the port's listener when the port is no longer served.
    _listener: Option<DropGuard>,
}

impl Functions {
    pub(crate) fn new(runtime: Arc<WasmRuntime>, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            pods: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            stop,
        })
    }

    /// Serves exactly `ports` (container port → container id) for the pod `key` at `ip`.
    pub(crate) fn sync(self: &Arc<Self>, key: &str, ip: Option<&str>, ports: &[(u16, String)]) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let current = pods.entry(key.to_string()).or_default();
        current.retain(|port, served| {
            ports
                .iter()
                .any(|(p, id)| p == port && *id == served.container_id)
        });
        for (port, id) in ports {
            if current.contains_key(port) {
                continue;
            }
            let listener = ip.and_then(|ip| self.listen(key, ip, *port));
            current.insert(
                *port,
                Arc::new(Served {
                    container_id: id.clone(),
                    in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                    _listener: listener,
                }),
            );
        }
        if current.is_empty() {
            pods.remove(key);
        }
    }

    /// Stops serving the pod `key`.
    pub(crate) fn remove(&self, key: &str) {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The served container port `port` of the pod `key` on this node.
    pub(crate) fn local(&self, key: &str, port: u16) -> Option<Arc<Served>> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)?
            .get(&port)
            .cloned()
    }

    /// Answers one request (from a client, or a guest's outgoing request) with a fresh
    /// instance of the served container.
    pub(crate) async fn answer<B>(&self, served: &Served, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
        B::Error: Into<skiff_runtime::HttpError>,
    {
        // The permit lives as long as the response body, which the instance streams.
        let Ok(permit) = served.in_flight.clone().try_acquire_owned() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many requests in flight (at most {MAX_IN_FLIGHT})"),
            );
        };
        let handled = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.runtime.handle_http(&served.container_id, req),
        )
        .await;
        match handled {
            Ok(Ok(response)) => response.map(|body| {
                Body::new(
                    body.map_frame(move |frame| {
                        let _held = &permit;
                        frame
                    })
                    .map_err(|code| std::io::Error::other(format!("{code:?}"))),
                )
            }),
            Ok(Err(e)) => text(StatusCode::BAD_GATEWAY, format!("{e}")),
            Err(_) => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the function did not answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            ),
        }
    }

    /// Binds `ip:port` for the pod `key`; the listener stops when the guard drops.
    fn listen(self: &Arc<Self>, key: &str, ip: &str, port: u16) -> Option<DropGuard> {
        let addr = SocketAddr::new(ip.parse().ok()?, port);
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(pod = %key, %addr, error = %e, "cannot serve the pod's port; it is reachable through its Services only");
                return None;
            }
        };
        let done = self.stop.child_token();
        let (me, key) = (self.clone(), key.to_string());
        self.tasks.spawn(serve(listener, done.clone(), move |req| {
            let (me, key) = (me.clone(), key.clone());
            async move {
                match me.local(&key, port) {
                    Some(served) => me.answer(&served, req).await,
                    None => text(StatusCode::SERVICE_UNAVAILABLE, "not serving".into()),
                }
            }
        }));
        Some(done.drop_guard())
    }

    /// Waits for the listeners to stop (after the agent's stop signal).
    pub(crate) async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A non-blocking listener on `addr` (bound synchronously, so a taken port fails at once).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Serves HTTP/1 and HTTP/2 on `listener`, each request answered by `handle`, until `stop`;
/// returns once every connection has ended.
pub(crate) async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
    handle: F,
) where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.cancelled() => break,
        };
        // A response streams from the instance in several writes (head, chunks, end): without
        // TCP_NODELAY, Nagle holds the later ones until the client's delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        let (handle, stop) = (handle.clone(), stop.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = handle(req);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

pub(crate) fn text(code: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Body::from(body))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_on_a_loopback_node_get_their_own_loopback_address() {
        let a = pod_ip(Some("127.0.0.1"), "uid-a").unwrap();
        let b = pod_ip(Some("127.0.0.1"), "uid-b").unwrap();
        assert_ne!(a, b);
        for ip in [&a, &b] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            assert!(ip.is_loopback() && ip != Ipv4Addr::LOCALHOST, "{ip}");
        }
        assert_eq!(pod_ip(Some("127.0.0.1"), "uid-a").unwrap(), a, "stable");
        assert_eq!(pod_ip(Some("10.0.0.5"), "uid-a").unwrap(), "10.0.0.5");
        assert_eq!(pod_ip(None, "uid-a"), None);
    }
}
