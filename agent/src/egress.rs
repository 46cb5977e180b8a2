//! Where guests' outgoing HTTP requests go: Services by name or ClusterIP, anything else out.
//!
//! The runtime hands every `wasi:http` request a guest makes to [`Egress`], with the pod it
//! comes from. The request's authority decides where it goes, resolved from the Services and
//! Endpoints the agent watches ([`ServiceView`]), with no DNS server and no iptables:
//!
//! - `name`, `name.namespace`, `name.namespace.svc` and `name.namespace.svc.cluster.local`
//!   (the short forms relative to the calling pod's namespace, as a pod's DNS search path makes
//!   them), or a Service's ClusterIP, name a Service. The request's port (80 for `http`, 443 for
//!   `https` unless it names one) picks the Service port, and the request goes to the next
//!   ready endpoint of that port in turn (round robin): to an HTTP function on this node
//!   in-process, to any other endpoint at its `podIP:targetPort`, which the agent running it
//!   serves (as the proxy forwards NodePort requests, see [`crate::proxy`]). A headless
//!   Service's endpoints take the request's own port; an ExternalName Service sends it on to its
//!   external name. Requests to Services travel as plain HTTP whatever their scheme.
//! - A name in the cluster domain, or a single-label name, that no Service has fails as a DNS
//!   lookup would (`DNS-error`, rcode NXDOMAIN); a port the Service does not have, or a Service
//!   without ready endpoints, refuses the connection (`connection-refused`), as kube-proxy does.
//! - Anything else goes out as an ordinary request ([`skiff_runtime::send_direct`]), as a pod
//!   reaches the outside in Kubernetes by default, once [`Egress::external_allowed`] allows
//!   it; a refusal reaches the guest as `HTTP-request-denied`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::Service;
use skiff_runtime::{
    Caller, HttpError, OutgoingBody, OutgoingHttp, RequestOptions, Sending, Sent, send_direct,
};

use crate::functions::Functions;
use crate::proxy::{Backend, ServiceView};

/// The cluster's DNS domain, as kubelet's default `--cluster-domain`.
const CLUSTER_DOMAIN: &str = "cluster.local";

/// How long a request waits for the first list of Services and Endpoints after the agent
/// starts, before names are resolved against what is known.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// Routes the outgoing requests of this node's guests (the runtime's [`OutgoingHttp`]).
#[derive(Clone)]
pub(crate) struct Egress {
    node_name: Arc<str>,
    view: ServiceView,
    /// This node's HTTP functions, for endpoints served in-process. Weak: the functions own the
    /// runtime, which owns this.
    functions: Arc<OnceLock<Weak<Functions>>>,
    /// The next endpoint of each Service port, for round robin.
    next: Arc<Mutex<HashMap<ServicePort, usize>>>,
    /// The cluster's WasmPolicies: their egress rules decide what leaves the cluster.
    policies: Arc<OnceLock<Arc<crate::policy::Policies>>>,
}

/// `namespace`, `name` and port of a Service port.
type ServicePort = (String, String, u16);

/// Where a guest's request goes.
#[derive(Debug, PartialEq)]
enum Destination {
    /// A Service of the cluster.
    Service(Arc<Service>),
    /// Out of the cluster, to this host (the request's own, or an ExternalName Service's).
    External(String),
    /// A name in the cluster domain that no Service has.
    NoSuchName,
}

impl Egress {
    pub(crate) fn new(node_name: &str, view: ServiceView) -> Self {
        Self {
            node_name: node_name.into(),
            view,
            functions: Default::default(),
            next: Default::default(),
            policies: Default::default(),
        }
    }

    /// Holds outgoing requests to the egress rules of the callers' WasmPolicies.
    pub(crate) fn enforce(&self, policies: Arc<crate::policy::Policies>) {
        let _ = self.policies.set(policies);
    }

    /// Serves endpoints that are HTTP functions of this node in-process, through `functions`.
    pub(crate) fn serve_local(&self, functions: &Arc<Functions>) {
        let _ = self.functions.set(Arc::downgrade(functions));
    }

    /// Whether a guest of a pod in `namespace` may send a request to `host`, a host outside
    /// the cluster (a name or an address that is no Service's; for an ExternalName Service, its
    /// external name). Every request that leaves the cluster passes here, and only those: a
    /// refusal (`Err` with the reason, which the agent logs) reaches the guest as
    /// `HTTP-request-denied`.
    ///
    /// Kubernetes lets pods reach the outside by default, and so does this where no WasmPolicy
    /// of the namespace says otherwise (`spec.egress`: `allowed: false`, or only `hosts`).
    /// Note that "outside" includes the node itself: an address literal such as `127.0.0.1` or
    /// the node's own address reaches whatever listens there on the node (the agent's ports, a
    /// local API server); a policy that lists hosts shuts those out too.
    pub(crate) fn external_allowed(&self, namespace: &str, host: &str) -> Result<(), String> {
        let Some(policies) = self.policies.get() else {
            return Ok(());
        };
        match skiff_api::policy::first_refusal(&policies.of(namespace), |p| p.check_egress(host)) {
            Some((policy, why)) => Err(format!("WasmPolicy {policy:?}: {why}")),
            None => Ok(()),
        }
    }

    async fn route(
        self,
        caller: Caller,
        mut request: http::Request<OutgoingBody>,
        options: Option<RequestOptions>,
    ) -> Result<Sent, HttpError> {
        let uri = request.uri();
        let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
        let host = authority.host().to_string();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.view.ready(FIRST_LIST_WAIT).await;
        match resolve(&self.view, &caller.namespace, &host) {
            Destination::NoSuchName => Err(HttpError::DnsError {
                rcode: Some("NXDOMAIN".into()),
                info_code: None,
            }),
            Destination::External(to) => {
                if let Err(why) = self.external_allowed(&caller.namespace, &to) {
                    tracing::info!(namespace = %caller.namespace, pod = %caller.pod, host = %to, reason = %why, "outgoing request denied");
                    return Err(HttpError::HttpRequestDenied);
                }
                if to != host {
                    let scheme = uri.scheme_str().unwrap_or("http").to_string();
                    set_target(&mut request, &scheme, &to, port)?;
                }
                send_direct(request, options).await
            }
            Destination::Service(svc) => self.to_service(&svc, port, request, options).await,
        }
    }

    /// Sends a request to the next ready endpoint of the Service's port `port`.
    async fn to_service(
        &self,
        svc: &Service,
        port: u16,
        mut request: http::Request<OutgoingBody>,
        options: Option<RequestOptions>,
    ) -> Result<Sent, HttpError> {
        let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let spec = svc.spec.as_ref().ok_or(HttpError::ConnectionRefused)?;
        let backends = if spec.cluster_ip.as_deref() == Some("None") {
            self.view.pod_backends(namespace, name, port)
        } else {
            let service_port = spec
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.port == i32::from(port) && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .ok_or(HttpError::ConnectionRefused)?;
            let port_name = service_port.name.as_deref().unwrap_or_default();
            self.view.backends(namespace, name, port_name)
        };
        if backends.is_empty() {
            return Err(HttpError::ConnectionRefused);
        }
        let turn = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let n = next
                .entry((namespace.to_string(), name.to_string(), port))
                .or_default();
            *n = n.wrapping_add(1);
            *n - 1
        };
        let b: &Backend = &backends[turn % backends.len()];
        if let Some(functions) = self.functions.get().and_then(Weak::upgrade)
            && let Some(served) = b.local(&self.node_name, &functions)
        {
            let response = functions.answer(&served, request).await;
            let response = response.map(|body| {
                body.map_err(|e| HttpError::InternalError(Some(e.to_string())))
                    .boxed_unsync()
            });
            return Ok((response, Box::new(async { Ok(()) })));
        }
        set_target(&mut request, "http", &b.ip, b.port)?;
        send_direct(request, options).await
    }
}

impl OutgoingHttp for Egress {
    fn send(
        &self,
        caller: &Caller,
        request: http::Request<OutgoingBody>,
        options: Option<RequestOptions>,
    ) -> Sending {
        Box::pin(self.clone().route(caller.clone(), request, options))
    }
}

/// Points a request at `scheme://host:port`, keeping its path and query.
fn set_target(
    request: &mut http::Request<OutgoingBody>,
    scheme: &str,
    host: &str,
    port: u16,
) -> Result<(), HttpError> {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .scheme(scheme)
        .authority(format!("{host}:{port}"))
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    Ok(())
}

/// What `host` names for a guest of a pod in `namespace`.
fn resolve(view: &ServiceView, namespace: &str, host: &str) -> Destination {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return match view.by_cluster_ip(ip) {
            Some(svc) => service_or_alias(svc),
            None => Destination::External(host),
        };
    }
    let labels: Vec<&str> = host.split('.').collect();
    let cluster_suffix = format!(".svc.{CLUSTER_DOMAIN}");
    let named = match labels.as_slice() {
        [name] => Some((namespace, *name)),
        [name, ns] | [name, ns, "svc"] => Some((*ns, *name)),
        [name, ns, ..] if host == format!("{name}.{ns}{cluster_suffix}") => Some((*ns, *name)),
        _ => None,
    };
    let in_cluster = labels.len() == 1
        || labels.last() == Some(&"svc")
        || host == CLUSTER_DOMAIN
        || host.ends_with(&format!(".{CLUSTER_DOMAIN}"));
    match named.and_then(|(ns, name)| view.service(ns, name)) {
        Some(svc) => service_or_alias(svc),
        None if in_cluster => Destination::NoSuchName,
        None => Destination::External(host),
    }
}

/// A Service, or for an ExternalName Service, the host it stands for.
fn service_or_alias(svc: Arc<Service>) -> Destination {
    match svc.spec.as_ref() {
        Some(spec) if spec.type_.as_deref() == Some("ExternalName") => {
            Destination::External(spec.external_name.clone().unwrap_or_default())
        }
        _ => Destination::Service(svc),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Endpoints;
    use serde_json::json;

    use super::*;
    use crate::proxy::service_view;

    fn service(namespace: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        }))
        .unwrap()
    }

    fn cluster() -> ServiceView {
        let (view, mut watch) = service_view();
        let services = vec![
            service(
                "default",
                "web",
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                       "ports": [{"name": "http", "port": 80}]}),
            ),
            service(
                "shop",
                "web",
                json!({"clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21"],
                       "ports": [{"port": 8080}]}),
            ),
            service(
                "shop",
                "db",
                json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
            ),
            service(
                "shop",
                "payments",
                json!({"type": "ExternalName", "externalName": "pay.example.com"}),
            ),
        ];
        let endpoints: Vec<Endpoints> = vec![
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "shop"},
                "subsets": [{"addresses": [{"ip": "127.1.1.1"}, {"ip": "127.1.1.2"}],
                             "ports": [{"port": 9000}]}],
            }))
            .unwrap(),
        ];
        watch.insert(&view, services, endpoints);
        view
    }

    fn named(d: Destination) -> String {
        match d {
            Destination::Service(svc) => format!(
                "{}/{}",
                svc.metadata.namespace.as_deref().unwrap_or_default(),
                svc.metadata.name.as_deref().unwrap_or_default()
            ),
            Destination::External(host) => format!("external {host}"),
            Destination::NoSuchName => "no such name".into(),
        }
    }

    #[test]
    fn names_resolve_like_a_pods_dns_search_path() {
        let view = cluster();
        let from = |ns: &str, host: &str| named(resolve(&view, ns, host));
        // Short names are relative to the caller's namespace.
        assert_eq!(from("default", "web"), "default/web");
        assert_eq!(from("shop", "web"), "shop/web");
        assert_eq!(from("default", "web.shop"), "shop/web");
        assert_eq!(from("default", "web.shop.svc"), "shop/web");
        assert_eq!(from("default", "web.shop.svc.cluster.local"), "shop/web");
        assert_eq!(from("default", "WEB.shop.svc.cluster.local."), "shop/web");
        // ClusterIPs name their Service.
        assert_eq!(from("default", "10.96.0.21"), "shop/web");
        assert_eq!(from("shop", "10.96.0.20"), "default/web");
        // Headless Services resolve by name; ExternalName ones stand for their host.
        assert_eq!(from("shop", "db"), "shop/db");
        assert_eq!(from("default", "payments.shop"), "external pay.example.com");
        // Unknown names in the cluster domain, and unknown single labels, do not resolve.
        assert_eq!(from("default", "db"), "no such name");
        assert_eq!(
            from("default", "nope.shop.svc.cluster.local"),
            "no such name"
        );
        assert_eq!(from("default", "nope.shop.svc"), "no such name");
        assert_eq!(from("default", "localhost"), "no such name");
        // Everything else leaves the cluster.
        assert_eq!(from("default", "example.com"), "external example.com");
        assert_eq!(
            from("default", "api.example.com"),
            "external api.example.com"
        );
        assert_eq!(from("default", "10.96.0.99"), "external 10.96.0.99");
        assert_eq!(from("default", "127.0.0.1"), "external 127.0.0.1");
    }

    #[test]
    fn service_ports_pick_the_endpoints_port_and_headless_ones_keep_the_request_port() {
        let view = cluster();
        let ips = |b: Vec<Backend>| -> Vec<String> {
            b.iter().map(|b| format!("{}:{}", b.ip, b.port)).collect()
        };
        assert_eq!(
            ips(view.backends("shop", "web", "")),
            ["127.1.1.1:9000", "127.1.1.2:9000"]
        );
        assert!(view.backends("default", "web", "http").is_empty());
        assert_eq!(
            ips(view.pod_backends("shop", "web", 7000)),
            ["127.1.1.1:7000", "127.1.1.2:7000"]
        );
    }

    #[test]
    fn a_request_is_pointed_at_an_endpoint_with_its_path() {
        let mut request = http::Request::builder()
            .uri("https://web.shop:8080/orders?id=7")
            .body(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap();
        set_target(&mut request, "http", "127.1.1.1", 9000).unwrap();
        assert_eq!(request.uri(), "http://127.1.1.1:9000/orders?id=7");
        set_target(&mut request, "http", "fd00::1", 80).unwrap();
        assert_eq!(request.uri(), "http://[fd00::1]:80/orders?id=7");
    }
}
