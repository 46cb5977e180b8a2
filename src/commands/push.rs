//! `skiff push` and `skiff keygen`: modules into the control plane's module store, optionally
//! signed by a publisher key.

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
        let config = Kubeconfig::load(self.kubeconfig.as_deref())?;
        let key = self.sign.as_deref().map(load_key).transpose()?;
        eprintln!(
            "pushing {} ({} KiB) as {}",
            self.file.display(),
            bytes.len().div_ceil(1024),
            self.reference
        );
        let body = upload(&config, &self.reference, bytes, key.as_ref()).await?;
        println!(
            "module.skiff.dev/{} pushed: {}",
            body["metadata"]["name"].as_str().unwrap_or(&self.reference),
            body["spec"]["digest"].as_str().unwrap_or("")
        );
        Ok(())
    }
}

/// Stores `bytes` in the module store of the cluster `config` names, as `reference`
/// (`NAME:TAG`), signed with `key` when given; answers the `Module` object.
pub async fn upload(
    config: &Kubeconfig,
    reference: &str,
    bytes: Vec<u8>,
    key: Option<&ed25519_dalek::SigningKey>,
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
    let response = request
        .body(bytes)
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
