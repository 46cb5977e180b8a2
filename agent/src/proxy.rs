//! The agent's service proxy (the seed of kube-proxy): every agent answers the NodePorts of
//! NodePort and LoadBalancer Services on its node address (`--node-ip`; all addresses without
//! it), and the `port`s of LoadBalancer Services once the control plane has given them the
//! nodes' addresses (`status.loadBalancer`; a port another LoadBalancer Service holds stays
//! pending there), with no iptables.
//!
//! The agent watches Services and Endpoints ([`ServiceView`], which its guests' outgoing
//! requests use too, see [`crate::egress`]). A request to one of those ports goes to the next
//! ready address of the Service's Endpoints for that port, in turn (round robin): to an
//! endpoint on this node that is an HTTP function, in-process; to any other, by forwarding the
//! HTTP request to the endpoint's `podIP:port`, which the agent running the pod serves (see
//! [`crate::functions`]). A Service without ready endpoints answers 503.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Body;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::functions::{Functions, REQUEST_TIMEOUT, Served, bind, serve, text};

/// The Services and Endpoints of the cluster as this agent sees them: the proxy answers their
/// ports and guests' outgoing requests find them by name or ClusterIP. One writer (the watch
/// in [`run`]), cheap readers.
#[derive(Clone)]
pub(crate) struct ServiceView {
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    /// `namespace`, `name` of the Service of each ClusterIP, rebuilt when Services change.
    cluster_ips: Arc<RwLock<HashMap<IpAddr, (String, String)>>>,
}

/// The writing side of a [`ServiceView`], driven by [`run`].
pub(crate) struct ServiceWatch {
    services: Writer<Service>,
    endpoints: Writer<Endpoints>,
}

/// An empty view and the watch that fills it.
pub(crate) fn service_view() -> (ServiceView, ServiceWatch) {
    let (services, services_writer) = reflector::store::<Service>();
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    let view = ServiceView {
        services,
        endpoints,
        cluster_ips: Default::default(),
    };
    let watch = ServiceWatch {
        services: services_writer,
        endpoints: endpoints_writer,
    };
    (view, watch)
}

impl ServiceView {
    /// Waits (at most `limit`) until the Services and Endpoints have been listed once.
    pub(crate) async fn ready(&self, limit: std::time::Duration) {
        let both = async {
            let _ = self.services.wait_until_ready().await;
            let _ = self.endpoints.wait_until_ready().await;
        };
        let _ = tokio::time::timeout(limit, both).await;
    }

    /// The Service `namespace/name`.
    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// The Service whose ClusterIP is `ip`.
    pub(crate) fn by_cluster_ip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        let index = self.cluster_ips.read().unwrap_or_else(|e| e.into_inner());
        let (namespace, name) = index.get(&ip)?;
        self.service(namespace, name)
    }

    /// The ready endpoints of the port `port_name` of the Service `namespace/name`.
    pub(crate) fn backends(&self, namespace: &str, name: &str, port_name: &str) -> Vec<Backend> {
        self.endpoints
            .get(&ObjectRef::new(name).within(namespace))
            .map(|e| backends(&e, port_name))
            .unwrap_or_default()
    }

    /// The ready addresses of the Service `namespace/name` at `port` (a headless Service's
    /// clients connect to its pods' addresses at a port of their choosing).
    pub(crate) fn pod_backends(&self, namespace: &str, name: &str, port: u16) -> Vec<Backend> {
        let Some(endpoints) = self.endpoints.get(&ObjectRef::new(name).within(namespace)) else {
            return Vec::new();
        };
        let mut out: Vec<Backend> = Vec::new();
        for subset in endpoints.subsets.iter().flatten() {
            for a in subset.addresses.iter().flatten() {
                if !out.iter().any(|b| b.ip == a.ip) {
                    out.push(Backend::new(a, port));
                }
            }
        }
        out
    }

    fn index_cluster_ips(&self) {
        let index = self
            .services
            .state()
            .iter()
            .flat_map(|svc| {
                let key = (
                    svc.metadata.namespace.clone().unwrap_or_default(),
                    svc.metadata.name.clone().unwrap_or_default(),
                );
                svc.spec
                    .iter()
                    .flat_map(|s| s.cluster_ips.iter().flatten())
                    .filter_map(|ip| ip.parse::<IpAddr>().ok())
                    .map(move |ip| (ip, key.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        *self.cluster_ips.write().unwrap_or_else(|e| e.into_inner()) = index;
    }
}

#[cfg(test)]
impl ServiceWatch {
    /// Fills the view as a watch's first list would.
    pub(crate) fn insert(
        &mut self,
        view: &ServiceView,
        services: Vec<Service>,
        endpoints: Vec<Endpoints>,
    ) {
        use kube::runtime::watcher::Event;
        self.services.apply_watcher_event(&Event::Init);
        for s in services {
            self.services.apply_watcher_event(&Event::InitApply(s));
        }
        self.services.apply_watcher_event(&Event::InitDone);
        self.endpoints.apply_watcher_event(&Event::Init);
        for e in endpoints {
            self.endpoints.apply_watcher_event(&Event::InitApply(e));
        }
        self.endpoints.apply_watcher_event(&Event::InitDone);
        view.index_cluster_ips();
    }
}

/// One port the proxy answers: which Service port it is for.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Route {
    namespace: String,
    service: String,
    /// The Service port's name, as the Endpoints name their ports.
    port_name: String,
    /// `NodePort` or `LoadBalancer`: what kind of port this is.
    kind: &'static str,
}

/// A ready endpoint of a Service port.
#[derive(Debug, PartialEq)]
pub(crate) struct Backend {
    pub(crate) ip: String,
    pub(crate) port: u16,
    node: Option<String>,
    /// `namespace/name` of the pod behind it.
    pod: Option<String>,
}

impl Backend {
    fn new(address: &EndpointAddress, port: u16) -> Self {
        Self {
            ip: address.ip.clone(),
            port,
            node: address.node_name.clone(),
            pod: address.target_ref.as_ref().map(|r| {
                format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default()
                )
            }),
        }
    }

    /// The HTTP function serving this endpoint, when it runs on this node.
    pub(crate) fn local(&self, node_name: &str, functions: &Functions) -> Option<Arc<Served>> {
        if self.node.as_deref() != Some(node_name) {
            return None;
        }
        functions.local(self.pod.as_deref()?, self.port)
    }
}

struct Proxy {
    node_name: String,
    node_ip: Option<String>,
    functions: Arc<Functions>,
    view: ServiceView,
    client: reqwest::Client,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Watches Services and Endpoints into `view` and serves their node ports until `stop`.
pub(crate) async fn run(
    client: kube::Client,
    view: ServiceView,
    watch: ServiceWatch,
    node_name: String,
    node_ip: Option<String>,
    functions: Arc<Functions>,
    stop: CancellationToken,
) {
    let endpoint_events = reflector::reflector(
        watch.endpoints,
        watcher(
            kube::Api::<Endpoints>::all(client.clone()),
            Default::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    // Every event, not only touched objects: the store shows the initial list only at its end
    // (InitDone), so the ports of Services that existed before the agent started open then.
    let service_events = reflector::reflector(
        watch.services,
        watcher(kube::Api::<Service>::all(client), Default::default()),
    )
    .default_backoff()
    .map(|_| ());
    let proxy = Arc::new(Proxy {
        node_name,
        node_ip,
        functions,
        view: view.clone(),
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a plain HTTP client"),
        tasks: TaskTracker::new(),
        stop: stop.clone(),
    });
    let mut listening: HashMap<u16, (Route, DropGuard)> = HashMap::new();
    // Ports that could not be bound (still held by a listener that is stopping, or by another
    // program), and the Service each is for: tried again every second, warned about once.
    let mut unbound: HashMap<u16, Route> = HashMap::new();
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut endpoint_events = std::pin::pin!(endpoint_events);
    let mut service_events = std::pin::pin!(service_events);
    loop {
        tokio::select! {
            Some(()) = endpoint_events.next() => continue,
            Some(()) = service_events.next() => view.index_cluster_ips(),
            _ = retry.tick(), if !unbound.is_empty() => {}
            _ = stop.cancelled() => break,
        }
        let wanted = ports(&view.services);
        listening.retain(|port, (route, _)| wanted.get(port) == Some(route));
        unbound.retain(|port, route| wanted.get(port) == Some(route));
        for (port, route) in wanted {
            if listening.contains_key(&port) {
                continue;
            }
            let warned = unbound.get(&port) == Some(&route);
            match proxy.listen(port, route.clone(), !warned) {
                Some(guard) => {
                    unbound.remove(&port);
                    listening.insert(port, (route, guard));
                }
                None => {
                    unbound.insert(port, route);
                }
            }
        }
    }
    drop(listening);
    proxy.tasks.close();
    proxy.tasks.wait().await;
}

/// The ports every node answers and the Service port each is for: the NodePorts of NodePort
/// and LoadBalancer Services, and the `port`s of LoadBalancer Services that the control plane
/// has given addresses (one with a port another holds stays pending, with no addresses).
fn ports(services: &Store<Service>) -> HashMap<u16, Route> {
    let mut out = HashMap::new();
    for svc in services.state() {
        let Some(spec) = &svc.spec else { continue };
        let balanced = spec.type_.as_deref() == Some("LoadBalancer");
        if !balanced && spec.type_.as_deref() != Some("NodePort") {
            continue;
        }
        let assigned = balanced
            && svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|i| !i.is_empty());
        for p in spec.ports.iter().flatten() {
            let route = |kind| Route {
                namespace: svc.metadata.namespace.clone().unwrap_or_default(),
                service: svc.metadata.name.clone().unwrap_or_default(),
                port_name: p.name.clone().unwrap_or_default(),
                kind,
            };
            if let Some(np) = p.node_port.and_then(|np| u16::try_from(np).ok()) {
                out.insert(np, route("NodePort"));
            }
            if assigned
                && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                && let Ok(port) = u16::try_from(p.port)
            {
                out.insert(port, route("LoadBalancer"));
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
            out.push(Backend::new(a, port));
        }
    }
    out
}

impl Proxy {
    /// Binds the node's port `port` (saying so when it cannot and `warn`); the listener stops
    /// when the guard drops.
    fn listen(self: &Arc<Self>, port: u16, route: Route, warn: bool) -> Option<DropGuard> {
        let ip = self.node_ip.as_deref().unwrap_or("0.0.0.0");
        let addr = SocketAddr::new(ip.parse().ok()?, port);
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                if warn {
                    tracing::warn!(%addr, service = %format!("{}/{}", route.namespace, route.service), error = %e, "cannot serve the {} port yet; retrying", route.kind);
                }
                return None;
            }
        };
        tracing::info!(%addr, service = %format!("{}/{}", route.namespace, route.service), "serving {} port", route.kind);
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
            .view
            .backends(&route.namespace, &route.service, &route.port_name);
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
        if let Some(served) = b.local(&self.node_name, &self.functions) {
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
    fn node_ports_and_the_ports_of_load_balancers_given_addresses_are_answered() {
        let (view, mut watch) = service_view();
        let svc = |name: &str, kind: &str, ingress: serde_json::Value| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": kind, "ports": [
                    {"name": "http", "port": 8080, "protocol": "TCP", "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]},
                "status": {"loadBalancer": {"ingress": ingress}}
            }))
            .unwrap()
        };
        let mut pending = svc("pending", "LoadBalancer", serde_json::json!([]));
        for p in pending.spec.as_mut().unwrap().ports.as_mut().unwrap() {
            p.node_port = p.node_port.map(|np| np + 1);
            p.port += 1;
        }
        watch.insert(
            &view,
            vec![
                svc(
                    "lb",
                    "LoadBalancer",
                    serde_json::json!([{"ip": "127.0.0.2"}]),
                ),
                pending,
            ],
            vec![],
        );
        let mut answered: Vec<(u16, String, &str)> = ports(&view.services)
            .into_iter()
            .map(|(port, r)| (port, r.service, r.kind))
            .collect();
        answered.sort();
        assert_eq!(
            answered,
            [
                (8080, "lb".into(), "LoadBalancer"),
                (30053, "lb".into(), "NodePort"),
                (30054, "pending".into(), "NodePort"),
                (30080, "lb".into(), "NodePort"),
                (30081, "pending".into(), "NodePort"),
            ]
        );
    }

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
