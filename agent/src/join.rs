//! Joining the cluster: the agent's identity (an ed25519 key in its data directory), the server
//! CA checked against the hash the join token pins, and the node credential the server issues
//! for this key.

use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use sha2::Digest as _;

/// What an agent needs to talk to the API server as its node.
pub struct Credentials {
    /// The server CA (PEM).
    pub ca_pem: String,
    /// Bearer token of this node.
    pub token: String,
}

/// Joins with `join_token` and this node's key (made at first start), presenting the endpoint
/// certificate `serving_cert`, and keeps what it got in `dir`. When the server cannot be reached
/// a node that joined before goes on with what it kept: it must work offline.
pub async fn credentials(
    server: &str,
    join_token: &str,
    node_name: &str,
    serving_cert: &str,
    dir: &Path,
) -> anyhow::Result<Credentials> {
    let (ca_path, token_path) = (dir.join("ca.crt"), dir.join("node.credential"));
    match join(server, join_token, node_name, serving_cert, dir).await {
        Ok(c) => Ok(c),
        Err(e) => match (
            std::fs::read_to_string(&ca_path),
            std::fs::read_to_string(&token_path),
        ) {
            (Ok(ca_pem), Ok(token))
                if token
                    .trim()
                    .starts_with(&format!("skiff-node.{node_name}.")) =>
            {
                tracing::warn!(error = %format!("{e:#}"), "cannot join now; going on with the credential kept from an earlier join");
                Ok(Credentials {
                    ca_pem,
                    token: token.trim().to_string(),
                })
            }
            _ => Err(e),
        },
    }
}

async fn join(
    server: &str,
    join_token: &str,
    node_name: &str,
    serving_cert: &str,
    dir: &Path,
) -> anyhow::Result<Credentials> {
    let (ca_path, token_path) = (dir.join("ca.crt"), dir.join("node.credential"));
    let key = node_key(dir)?;
    let pinned = join_token
        .strip_prefix("skiff1:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(hash, _)| hash.to_string())
        .context("the join token is not a Skiff node token (skiff1:<ca-hash>:<secret>)")?;

    // The CA is fetched without verifying the server, then trusted only if it is the one the
    // token pins.
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let ca_pem = insecure
        .get(format!("{server}/skiff/ca"))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?
        .error_for_status()?
        .text()
        .await?;
    let der = crate::pem_certs(&ca_pem)
        .into_iter()
        .next()
        .context("the server sent no CA certificate")?;
    let hash: String = sha2::Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if hash != pinned {
        bail!(
            "the server's CA (sha256 {hash}) is not the one the join token pins ({pinned}): refusing to join"
        );
    }

    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .build()?;
    let response = client
        .post(format!("{server}/skiff/join"))
        .bearer_auth(join_token)
        .json(&{
            use ed25519_dalek::Signer as _;
            let public_key =
                base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes());
            let signed = format!("skiff-join-v1\n{node_name}\n{public_key}\n{serving_cert}");
            serde_json::json!({
                "nodeName": node_name,
                "publicKey": public_key,
                "servingCert": serving_cert,
                "signature": base64::engine::general_purpose::STANDARD
                    .encode(key.sign(signed.as_bytes()).to_bytes()),
            })
        })
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        bail!(
            "the server refused to join node {node_name:?} ({status}): {}",
            body["message"].as_str().unwrap_or("no reason given")
        );
    }
    let token = response.json::<serde_json::Value>().await?["token"]
        .as_str()
        .context("the join answer carries no token")?
        .to_string();
    write_private(&ca_path, ca_pem.as_bytes())?;
    write_private(&token_path, token.as_bytes())?;
    Ok(Credentials { ca_pem, token })
}

/// The token the API server presents to this agent, derived from the node's credential.
pub fn agent_token(credential: &str) -> String {
    sha2::Sha256::digest(format!("skiff-agent-api\n{credential}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The node's ed25519 key, made at first start.
fn node_key(dir: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let path = dir.join("node.key");
    if let Ok(bytes) = std::fs::read(&path) {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is damaged", path.display()))?;
        return Ok(ed25519_dalek::SigningKey::from_bytes(&bytes));
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    write_private(&path, key.as_bytes())?;
    Ok(key)
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
