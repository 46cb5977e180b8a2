//! Modules from the control plane's module store: a reference is resolved to its digest, the
//! bytes are downloaded once per digest and kept in the agent's data directory, with the last
//! resolution of each reference, so pods restart from the cache when the control plane is out of
//! reach.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine as _;
use skiff_runtime::{Error, FetchFuture, Fetched, ModuleSource};

/// Fetches modules from the API server.
pub struct ControlPlaneSource {
    http: reqwest::Client,
    server: String,
    token: String,
    dir: PathBuf,
    resolved: Mutex<HashMap<String, (String, Option<String>)>>,
}

impl ControlPlaneSource {
    /// A source for `server`, caching in `dir`.
    pub fn new(http: reqwest::Client, server: String, token: String, dir: PathBuf) -> Self {
        let resolved = std::fs::read(dir.join("references.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            http,
            server,
            token,
            dir,
            resolved: Mutex::new(resolved),
        }
    }

    async fn get(&self, image: &str) -> Result<Fetched, Error> {
        let pull = |reason: String| Error::Pull {
            image: image.to_string(),
            reason,
        };
        let url = format!("{}/skiff/modules/{image}", self.server);
        let resolution = self
            .http
            .get(&url)
            .query(&[("resolve", "true")])
            .bearer_auth(&self.token)
            .send()
            .await;
        let (digest, signature) = match resolution {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.map_err(|e| pull(e.to_string()))?;
                let found = (
                    v["digest"].as_str().unwrap_or_default().to_string(),
                    v["signature"].as_str().map(String::from),
                );
                self.remember(image, &found);
                found
            }
            Ok(r) => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                return Err(pull(
                    v["message"]
                        .as_str()
                        .unwrap_or("the module store refused")
                        .to_string(),
                ));
            }
            // Out of reach: what this node resolved before still runs.
            Err(e) => self
                .resolved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(image)
                .cloned()
                .ok_or_else(|| pull(format!("the control plane is unreachable: {e}")))?,
        };
        let hex = digest.trim_start_matches("sha256:");
        let cached = self.dir.join(format!("{hex}.wasm"));
        let bytes = match tokio::fs::read(&cached).await {
            Ok(b) => b,
            Err(_) => {
                let r = self
                    .http
                    .get(format!("{}/skiff/modules/{digest}", self.server))
                    .bearer_auth(&self.token)
                    .send()
                    .await
                    .map_err(|e| pull(format!("cannot download: {e}")))?;
                if !r.status().is_success() {
                    return Err(pull(format!("download failed: {}", r.status())));
                }
                let bytes = r.bytes().await.map_err(|e| pull(e.to_string()))?.to_vec();
                let tmp = cached.with_extension("tmp");
                let _ = tokio::fs::create_dir_all(&self.dir).await;
                if tokio::fs::write(&tmp, &bytes).await.is_ok() {
                    let _ = tokio::fs::rename(&tmp, &cached).await;
                }
                bytes
            }
        };
        let signature = signature
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
            .transpose()
            .map_err(|_| pull("the module's signature is not base64".into()))?;
        Ok(Fetched { bytes, signature })
    }

    fn remember(&self, image: &str, found: &(String, Option<String>)) {
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if resolved.get(image) == Some(found) {
            return;
        }
        resolved.insert(image.to_string(), found.clone());
        if let Ok(bytes) = serde_json::to_vec(&*resolved) {
            let _ = std::fs::create_dir_all(&self.dir);
            let _ = std::fs::write(self.dir.join("references.json"), bytes);
        }
    }
}

impl ModuleSource for ControlPlaneSource {
    fn fetch<'a>(&'a self, image: &'a str) -> FetchFuture<'a> {
        Box::pin(self.get(image))
    }
}
