//! `skiff push` and `skiff keygen`: modules into the control plane's module store, optionally
//! signed by a publisher key.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;

use super::kubeconfig::Kubeconfig;

/// Store a Wasm module in the cluster's module store as NAME:TAG.
#[derive(Args)]
pub struct Push {
    /// The module (`.wasm`).
    file: PathBuf,
    /// The reference pods use as `image:`, e.g. hello:1.0.
    reference: String,
    /// Sign with this publisher key (made by `skiff keygen`).
    #[arg(long)]
    sign: Option<PathBuf>,
    /// The kubeconfig (default: $KUBECONFIG, then the default data directory's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl Push {
    pub async fn execute(self) -> anyhow::Result<()> {
        skiff_api::module::parse_reference(&self.reference).map_err(anyhow::Error::msg)?;
        let bytes = std::fs::read(&self.file)
            .with_context(|| format!("cannot read {}", self.file.display()))?;
        if !bytes.starts_with(b"\0asm") {
            bail!(
                "{} is not a WebAssembly module (it does not start with \\0asm)",
                self.file.display()
            );
        }
        let (bytes, wrapped) = componentize_http(bytes).with_context(|| {
            format!(
                "cannot make {} a wasi:http/proxy component",
                self.file.display()
            )
        })?;
        if wrapped {
            eprintln!(
                "{} exports a wasi:http handler: wrapped into a wasi:http/proxy component with the preview 1 proxy adapter",
                self.file.display()
            );
        }
        let config = Kubeconfig::load(self.kubeconfig.as_deref())?;
        let key = self.sign.as_deref().map(load_key).transpose()?;
        eprintln!(
            "pushing {} ({} KiB) as {}",
            self.file.display(),
            bytes.len().div_ceil(1024),
            self.reference
        );
        let body = upload(&config, &self.reference, bytes, key.as_ref(), true).await?;
        println!(
            "module.skiff.dev/{} pushed: {}",
            body["metadata"]["name"].as_str().unwrap_or(&self.reference),
            body["spec"]["digest"].as_str().unwrap_or("")
        );
        Ok(())
    }
}

/// A preview 1 module that exports a `wasi:http/incoming-handler` (as `clang
/// -mexec-model=reactor` builds one with wit-bindgen's C bindings) becomes a `wasi:http/proxy`
/// component with wasmtime's proxy adapter, so an HTTP function is pushed as it was built;
/// anything else is pushed as it is. Returns the bytes and whether they were wrapped.
fn componentize_http(bytes: Vec<u8>) -> anyhow::Result<(Vec<u8>, bool)> {
    if !exports_http_handler(&bytes) {
        return Ok((bytes, false));
    }
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        )?
        .validate(true)
        .encode()?;
    Ok((component, true))
}

/// Whether `bytes` are a core module (not a component) exporting a wasi:http handler.
fn exports_http_handler(bytes: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            })
            | Err(_) => return false,
            Ok(wasmparser::Payload::ExportSection(exports)) => {
                return exports
                    .into_iter()
                    .flatten()
                    .any(|e| e.name.starts_with("wasi:http/incoming-handler@"));
            }
            Ok(_) => {}
        }
    }
    false
}

/// Modules at least this large show upload progress.
const PROGRESS_FROM: usize = 1 << 20;

/// Stores `bytes` in the module store of the cluster `config` names, as `reference`
/// (`NAME:TAG`), signed with `key` when given; answers the `Module` object. With `progress`,
/// a large module's upload reports on stderr how much has been sent.
pub async fn upload(
    config: &Kubeconfig,
    reference: &str,
    bytes: Vec<u8>,
    key: Option<&ed25519_dalek::SigningKey>,
    progress: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut request = config
        .http()?
        .put(format!("{}/skiff/modules/{reference}", config.server))
        .bearer_auth(&config.token)
        .header("content-type", "application/wasm");
    if let Some(key) = key {
        let b64 = &base64::engine::general_purpose::STANDARD;
        request = request
            .header(
                "x-skiff-signature",
                b64.encode(skiff_api::signature::sign_module(key, &bytes)),
            )
            .header(
                "x-skiff-publisher",
                b64.encode(key.verifying_key().as_bytes()),
            );
    }
    let total = bytes.len();
    let body = if progress && total >= PROGRESS_FROM {
        let mut meter = Progress::new(total, std::io::stderr().is_terminal());
        let chunks: Vec<Vec<u8>> = bytes.chunks(64 << 10).map(<[u8]>::to_vec).collect();
        let stream = futures::stream::iter(chunks.into_iter().map(move |chunk| {
            meter.sent(chunk.len());
            Ok::<_, std::io::Error>(chunk)
        }));
        request = request.header("content-length", total);
        reqwest::Body::wrap_stream(stream)
    } else {
        reqwest::Body::from(bytes)
    };
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", config.server))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "{}",
            body["message"]
                .as_str()
                .unwrap_or(status.canonical_reason().unwrap_or("failed"))
        );
    }
    Ok(body)
}

/// Upload progress on stderr: one line per tenth sent, or on a terminal one line rewritten.
struct Progress {
    total: usize,
    sent: usize,
    shown: usize,
    terminal: bool,
}

impl Progress {
    fn new(total: usize, terminal: bool) -> Self {
        Self {
            total,
            sent: 0,
            shown: 0,
            terminal,
        }
    }

    /// Counts `n` more bytes handed to the connection.
    fn sent(&mut self, n: usize) {
        self.sent += n;
        if let Some(line) = self.line() {
            if self.terminal {
                let end = if self.sent >= self.total { "\n" } else { "" };
                eprint!("\r{line}{end}");
            } else {
                eprintln!("{line}");
            }
        }
    }

    /// The line to show now, if the upload has reached its next step: a tenth (on a terminal,
    /// a percent).
    fn line(&mut self) -> Option<String> {
        let step = if self.terminal { 1 } else { 10 };
        let percent = self.sent * 100 / self.total.max(1);
        let reached = percent / step * step;
        if reached <= self.shown {
            return None;
        }
        self.shown = reached;
        Some(format!(
            "sent {} KiB of {} KiB ({reached}%)",
            self.sent.div_ceil(1024),
            self.total.div_ceil(1024)
        ))
    }
}

/// Make an ed25519 publisher key for signing modules.
#[derive(Args)]
pub struct Keygen {
    /// Where to write the private key (mode 0600); the public key is printed.
    file: PathBuf,
}

impl Keygen {
    pub async fn execute(self) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&self.file)
            .with_context(|| format!("cannot create {}", self.file.display()))?;
        f.write_all(
            base64::engine::general_purpose::STANDARD
                .encode(key.as_bytes())
                .as_bytes(),
        )?;
        println!(
            "{}",
            base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
        );
        Ok(())
    }
}

fn load_key(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key {}", path.display()))?;
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is not a key made by `skiff keygen`", path.display()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_a_line_per_tenth() {
        let mut p = Progress::new(100 << 10, false);
        let mut lines = Vec::new();
        for _ in 0..25 {
            p.sent += 4 << 10;
            lines.extend(p.line());
        }
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert_eq!(lines[0], "sent 12 KiB of 100 KiB (10%)");
        assert_eq!(lines[9], "sent 100 KiB of 100 KiB (100%)");
    }
}
