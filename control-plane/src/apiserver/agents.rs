//! Requests the API server makes to agents: container logs. The agent's endpoint is pinned to
//! the certificate it joined with, and the server authenticates with a token derived from the
//! node's credential.

use std::sync::Arc;

use axum::body::Body;
use futures::StreamExt as _;
use http::{Response, StatusCode, header};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use super::Server;
use crate::api::ApiError;
use crate::api::resources;

/// Accepts exactly one certificate: the one the node joined with.
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent presented a certificate other than the one it joined with".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Streams a container's log from the agent of `node`, passing kubectl's options through.
pub(super) async fn container_logs(
    server: &Server,
    node: &str,
    path: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let unavailable = |why: String| ApiError::new(502, "BadGateway", why);
    let node_obj = server.api.get(resources::core("nodes"), None, node)?;
    let addresses = node_obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .find(|a| a["type"] == *kind)
                .and_then(|a| a["address"].as_str())
        })
        .ok_or_else(|| unavailable(format!("node {node} reports no address")))?;
    let port = node_obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .ok_or_else(|| unavailable(format!("node {node} reports no agent endpoint")))?;
    let cert = server
        .nodes
        .serving_cert(node)
        .ok_or_else(|| unavailable(format!("node {node} joined without a serving certificate")))?;
    let token = server
        .nodes
        .agent_token(node)
        .ok_or_else(|| unavailable(format!("node {node} has not joined")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unavailable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| unavailable(e.to_string()))?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let url = format!("https://{host}:{port}{path}?{query}");
    let response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| unavailable(format!("cannot reach the agent of node {node}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let message = response.text().await.unwrap_or_default();
        return Err(ApiError::new(
            status.as_u16(),
            if status == StatusCode::NOT_FOUND {
                "NotFound"
            } else {
                "BadRequest"
            },
            message.trim().to_string(),
        ));
    }
    let stream = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}
