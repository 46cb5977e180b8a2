//! The agent's service proxy (the seed of kube-proxy): every agent answers the NodePorts of
//! NodePort and LoadBalancer Services on its node address (`--node-ip`; all addresses without
//! it), with no iptables.
//!
//! The agent watches Services and Endpoints. A request to a NodePort goes to the next ready
//! address of the Service's Endpoints for that port, in turn (round robin): to an endpoint on
//! this node that is an HTTP function, in-process; to any other, by forwarding the HTTP request
//! to the endpoint's `podIP:port`, which the agent running the pod serves (see
//! [`crate::functions`]). A Service without ready endpoints answers 503.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::functions::{Functions, REQUEST_TIMEOUT, bind, serve, text};

/// One NodePort: which Service port it answers for.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Route {
    namespace: String,
    service: String,
    /// The Service port's name, as the Endpoints name their ports.
    port_name: String,
}

/// A ready endpoint of a Service port.
#[derive(Debug, PartialEq)]
struct Backend {
    ip: String,
    port: u16,
    node: Option<String>,
    /// `namespace/name` of the pod behind it.
    pod: Option<String>,
}

struct Proxy {
    node_name: String,
    node_ip: Option<String>,
    functions: Arc<Functions>,
    endpoints: Store<Endpoints>,
    client: reqwest::Client,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Serves NodePorts until `stop`.
pub(crate) async fn run(
    client: kube::Client,
    node_name: String,
    node_ip: Option<String>,
    functions: Arc<Functions>,
    stop: CancellationToken,
) {
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    let (services, services_writer) = reflector::store::<Service>();
    let endpoint_events = reflector::reflector(
        endpoints_writer,
        watcher(
            kube::Api::<Endpoints>::all(client.clone()),
            Default::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let service_events = reflector::reflector(
        services_writer,
        watcher(kube::Api::<Service>::all(client), Default::default()),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let proxy = Arc::new(Proxy {
        node_name,
        node_ip,
        functions,
        endpoints,
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a plain HTTP client"),
        tasks: TaskTracker::new(),
        stop: stop.clone(),
    });
    let mut listening: HashMap<u16, (Route, DropGuard)> = HashMap::new();
    let mut endpoint_events = std::pin::pin!(endpoint_events);
    let mut service_events = std::pin::pin!(service_events);
    loop {
        tokio::select! {
            Some(()) = endpoint_events.next() => continue,
            Some(()) = service_events.next() => {}
            _ = stop.cancelled() => break,
        }
        let wanted = node_ports(&services);
        listening.retain(|port, (route, _)| wanted.get(port) == Some(route));
        for (port, route) in wanted {
            if listening.contains_key(&port) {
                continue;
            }
            if let Some(guard) = proxy.listen(port, route.clone()) {
                listening.insert(port, (route, guard));
            }
        }
    }
    drop(listening);
    proxy.tasks.close();
    proxy.tasks.wait().await;
}

/// Every NodePort of the Services and the Service port it answers for.
fn node_ports(services: &Store<Service>) -> HashMap<u16, Route> {
    let mut out = HashMap::new();
    for svc in services.state() {
        let Some(spec) = &svc.spec else { continue };
        if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port.and_then(|np| u16::try_from(np).ok()) {
                out.insert(
                    np,
                    Route {
                        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
                        service: svc.metadata.name.clone().unwrap_or_default(),
                        port_name: p.name.clone().unwrap_or_default(),
                    },
                );
            }
        }
    }
    out
}

/// The ready endpoints of a Service port.
fn backends(endpoints: &Endpoints, port_name: &str) -> Vec<Backend> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let Some(port) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| u16::try_from(p.port).ok())
        else {
            continue;
        };
        for a in subset.addresses.iter().flatten() {
            out.push(Backend {
                ip: a.ip.clone(),
                port,
                node: a.node_name.clone(),
                pod: a.target_ref.as_ref().map(|r| {
                    format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default()
                    )
                }),
            });
        }
    }
    out
}

impl Proxy {
    /// Binds the NodePort `port`; the listener stops when the guard drops.
    fn listen(self: &Arc<Self>, port: u16, route: Route) -> Option<DropGuard> {
        let ip = self.node_ip.as_deref().unwrap_or("0.0.0.0");
        let addr = SocketAddr::new(ip.parse().ok()?, port);
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%addr, service = %format!("{}/{}", route.namespace, route.service), error = %e, "cannot serve the NodePort");
                return None;
            }
        };
        tracing::info!(%addr, service = %format!("{}/{}", route.namespace, route.service), "serving NodePort");
        let done = self.stop.child_token();
        let (me, route) = (self.clone(), Arc::new(route));
        let next = Arc::new(AtomicUsize::new(0));
        self.tasks.spawn(serve(listener, done.clone(), move |req| {
            let (me, route, next) = (me.clone(), route.clone(), next.clone());
            async move { me.answer(&route, &next, req).await }
        }));
        Some(done.drop_guard())
    }

    async fn answer(
        &self,
        route: &Route,
        next: &AtomicUsize,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Body> {
        let backends = self
            .endpoints
            .get(&ObjectRef::new(&route.service).within(&route.namespace))
            .map(|e| backends(&e, &route.port_name))
            .unwrap_or_default();
        if backends.is_empty() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "service {}/{} has no ready endpoints\n",
                    route.namespace, route.service
                ),
            );
        }
        let b = &backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        if b.node.as_deref() == Some(self.node_name.as_str())
            && let Some(served) = b
                .pod
                .as_deref()
                .and_then(|pod| self.functions.local(pod, b.port))
        {
            return self.functions.answer(&served, req).await;
        }
        self.forward(b, req).await
    }

    /// Forwards a request to an endpoint's `ip:port`.
    async fn forward(&self, b: &Backend, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("http://{}:{}{path}", b.ip, b.port);
        let mut headers = parts.headers;
        for h in [
            http::header::HOST,
            http::header::CONNECTION,
            http::header::TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
        let body = reqwest::Body::wrap_stream(http_body_util::BodyDataStream::new(body));
        let sent = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let mut out = Response::builder().status(resp.status());
                for (k, v) in resp.headers() {
                    if k != http::header::TRANSFER_ENCODING && k != http::header::CONNECTION {
                        out = out.header(k, v);
                    }
                }
                out.body(Body::from_stream(resp.bytes_stream()))
                    .unwrap_or_else(|e| text(StatusCode::BAD_GATEWAY, e.to_string()))
            }
            Err(e) => text(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach endpoint {}:{}: {e}\n", b.ip, b.port),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_addresses_of_the_named_port_are_backends() {
        let endpoints: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "127.1.2.3", "nodeName": "edge-1",
                               "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-a"}}],
                "notReadyAddresses": [{"ip": "127.4.5.6", "nodeName": "edge-2"}],
                "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]
            }]
        }))
        .unwrap();
        assert_eq!(
            backends(&endpoints, "http"),
            [Backend {
                ip: "127.1.2.3".into(),
                port: 8080,
                node: Some("edge-1".into()),
                pod: Some("default/web-a".into()),
            }]
        );
        assert!(backends(&endpoints, "other").is_empty());
    }
}
