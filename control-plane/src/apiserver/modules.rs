//! The module store: Wasm modules pushed by `skiff push`, kept content-addressed on disk
//! (`DIR/modules/sha256/<hex>.wasm`, one copy per content) and named by `Module` objects
//! (`skiff.dev/v1`) that `kubectl get modules` lists.
//!
//! `PUT /skiff/modules/<name>:<tag>` stores a module (admin); `GET /skiff/modules/<reference>`
//! answers its bytes (admin and nodes), `?resolve=true` only its digest and signature.

use std::path::PathBuf;

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::Digest as _;
use skiff_api::module::{object_name, parse_reference};

use super::Server;
use crate::api::resources;
use crate::api::{ApiError, FieldValidation, WriteOptions};

/// The largest module accepted.
pub const MAX_MODULE: usize = 64 << 20;

/// Where module bytes live.
pub struct ModuleStore {
    dir: PathBuf,
}

impl ModuleStore {
    /// A store under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn blob(&self, hex: &str) -> PathBuf {
        self.dir.join("sha256").join(format!("{hex}.wasm"))
    }
}

/// `PUT /skiff/modules/<name>:<tag>`.
pub(super) async fn push(
    server: &Server,
    reference: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let (repository, tag) = parse_reference(reference).map_err(ApiError::bad_request)?;
    if !body.starts_with(b"\0asm") {
        return Err(ApiError::bad_request(format!(
            "{reference} is not a WebAssembly module (it does not start with \\0asm)"
        )));
    }
    let hex: String = sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let header_bytes = |name: &str| -> Result<Option<Vec<u8>>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .map_err(|_| ApiError::bad_request(format!("{name} is not base64")))
            })
            .transpose()
    };
    let signature = header_bytes("x-skiff-signature")?;
    let publisher = header_bytes("x-skiff-publisher")?;
    let signed_by = match (&signature, &publisher) {
        (Some(sig), Some(key)) => {
            let key: [u8; 32] = key.as_slice().try_into().map_err(|_| {
                ApiError::bad_request("x-skiff-publisher must be an ed25519 public key")
            })?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| {
                ApiError::bad_request("x-skiff-publisher must be an ed25519 public key")
            })?;
            if !skiff_api::signature::verify_module(&[key], &body, sig) {
                return Err(ApiError::bad_request(format!(
                    "the signature of {reference} does not verify with the publisher key given"
                )));
            }
            Some(base64::engine::general_purpose::STANDARD.encode(key.as_bytes()))
        }
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "a signature needs both x-skiff-signature and x-skiff-publisher",
            ));
        }
    };
    let store = &server.modules;
    let blob = store.blob(&hex);
    if !blob.exists() {
        let dir = blob.parent().expect("blob path has a directory");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = blob.with_extension("tmp");
            std::fs::write(&tmp, &body)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &blob)
        };
        write().map_err(|e| ApiError::internal(format!("cannot store the module: {e}")))?;
    }
    let sig_path = blob.with_extension("sig");
    if let Some(sig) = &signature {
        std::fs::write(&sig_path, sig)
            .map_err(|e| ApiError::internal(format!("cannot store the signature: {e}")))?;
    }
    let name = object_name(&repository, &tag);
    let res = resources::find("skiff.dev", "v1", "modules").expect("modules are served");
    let spec = json!({
        "repository": repository, "tag": tag, "digest": format!("sha256:{hex}"),
        "size": body.len(), "signedBy": signed_by,
    });
    let opts = WriteOptions {
        dry_run: false,
        field_validation: FieldValidation::Strict,
        field_manager: Some("skiff-push".into()),
    };
    let written = match server.api.get(res, None, &name) {
        Ok(mut existing) => {
            existing["spec"] = spec;
            server
                .api
                .update(res, None, &name, existing, crate::api::Target::Main, &opts)
                .await?
        }
        Err(_) => {
            let obj = json!({"apiVersion": "skiff.dev/v1", "kind": "Module",
                             "metadata": {"name": name}, "spec": spec});
            server.api.create(res, None, obj, &opts).await?
        }
    };
    tracing::info!(module = %reference, digest = %hex, "module pushed");
    Ok(json(StatusCode::OK, &written.object))
}

/// `GET /skiff/modules/<reference>`: `name:tag`, `name@sha256:<hex>` or `sha256:<hex>`.
pub(super) fn fetch(
    server: &Server,
    reference: &str,
    resolve_only: bool,
) -> Result<Response<Body>, ApiError> {
    let hex = resolve(server, reference)?;
    let blob = server.modules.blob(&hex);
    if !blob.exists() {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("module {reference}: no module with digest sha256:{hex} is stored"),
        ));
    }
    let signature = std::fs::read(blob.with_extension("sig"))
        .ok()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s));
    if resolve_only {
        return Ok(json(
            StatusCode::OK,
            &json!({"digest": format!("sha256:{hex}"), "signature": signature}),
        ));
    }
    let bytes = std::fs::read(&blob)
        .map_err(|e| ApiError::internal(format!("cannot read the module: {e}")))?;
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/wasm")
        .header("x-skiff-digest", format!("sha256:{hex}"));
    if let Some(sig) = signature {
        response = response.header("x-skiff-signature", sig);
    }
    Ok(response.body(Body::from(bytes)).expect("valid response"))
}

fn resolve(server: &Server, reference: &str) -> Result<String, ApiError> {
    if let Some((_, hex)) = reference.split_once("sha256:") {
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(hex.to_ascii_lowercase());
        }
        return Err(ApiError::bad_request(format!(
            "invalid digest in {reference}"
        )));
    }
    let (repository, tag) = parse_reference(reference).map_err(ApiError::bad_request)?;
    let res = resources::find("skiff.dev", "v1", "modules").expect("modules are served");
    let module = server
        .api
        .get(res, None, &object_name(&repository, &tag))
        .map_err(|_| {
            ApiError::new(404, "NotFound", format!(
                "module {repository}:{tag} not found: push it with `skiff push FILE.wasm {repository}:{tag}`"
            ))
        })?;
    Ok(module
        .pointer("/spec/digest")
        .and_then(Value::as_str)
        .and_then(|d| d.strip_prefix("sha256:"))
        .unwrap_or_default()
        .to_string())
}

fn json(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(v).expect("serializable")))
        .expect("valid response")
}
