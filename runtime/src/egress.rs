//! Guests' outgoing HTTP (`wasi:http/outgoing-handler`): the runtime hands every request to its
//! embedder, which decides where it goes.
//!
//! A runtime without an [`OutgoingHttp`] in its configuration denies every outgoing request
//! (`HTTP-request-denied`): guests reach nothing. The agent routes them: Service names and
//! ClusterIPs to the Service's endpoints, anything else out as an ordinary request
//! ([`send_direct`]) where its egress rules allow it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

pub use wasmtime_wasi_http::RequestOptions;
use wasmtime_wasi_http::WasiHttpHooks;

/// The body of a guest's outgoing request, and of the response it gets.
pub type OutgoingBody = wasmtime_wasi_http::WasiBody;

/// Why an outgoing request failed, as the guest sees it (each variant is a `wasi:http`
/// `error-code`: `HttpRequestDenied`, `DnsError`, `ConnectionRefused`, ...).
pub type HttpError = wasmtime_wasi_http::Error;

/// A future that drives a response's connection until its body has been read; it resolves
/// at once when nothing needs driving.
pub type Connection = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// The answer to a guest's outgoing request: the response and what drives its connection.
pub type Sent = (http::Response<OutgoingBody>, Connection);

/// A request being sent.
pub type Sending = Pin<Box<dyn Future<Output = Result<Sent, HttpError>> + Send>>;

/// The pod whose guest sends a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
}

/// Where guests' outgoing HTTP requests go: implemented by the runtime's embedder and set in
/// [`WasmConfig::outgoing_http`](crate::WasmConfig::outgoing_http).
pub trait OutgoingHttp: Send + Sync {
    /// Sends `request` (its URI absolute: scheme, authority, path) for a guest of `caller`.
    /// An error reaches the guest as the matching `wasi:http` error code.
    fn send(
        &self,
        caller: &Caller,
        request: http::Request<OutgoingBody>,
        options: Option<RequestOptions>,
    ) -> Sending;
}

impl fmt::Debug for dyn OutgoingHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutgoingHttp")
    }
}

/// Sends a request to the host and port its URI names, as `wasi:http` does by default: plain
/// HTTP, or TLS verified against the webpki root certificates for `https`.
pub fn send_direct(
    request: http::Request<OutgoingBody>,
    options: Option<RequestOptions>,
) -> Sending {
    Box::pin(async move {
        use http_body_util::BodyExt as _;
        let (response, connection) =
            wasmtime_wasi_http::default_send_request(request, options).await?;
        let connection: Connection = Box::new(connection);
        Ok((response.map(|body| body.boxed_unsync()), connection))
    })
}

/// The `wasi:http` hooks of one guest instance: its outgoing requests go to the embedder's
/// [`OutgoingHttp`], on behalf of its pod.
pub(crate) struct GuestEgress {
    pub(crate) route: Option<Arc<dyn OutgoingHttp>>,
    pub(crate) caller: Arc<Caller>,
}

impl WasiHttpHooks for GuestEgress {
    fn send_request(
        &mut self,
        request: http::Request<OutgoingBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, HttpError>> + Send> {
        match &self.route {
            Some(route) => Box::new(route.send(&self.caller, request, options)),
            None => Box::new(async { Err(HttpError::HttpRequestDenied) }),
        }
    }
}
