//! Credentials for the client commands: `--kubeconfig`, then `$KUBECONFIG`, then the default
//! data directory's `kubeconfig`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;

/// The server and credentials of the current context.
pub struct Kubeconfig {
    /// `https://HOST:PORT`.
    pub server: String,
    /// The CA (PEM) to trust.
    pub ca_pem: Vec<u8>,
    /// Bearer token.
    pub token: String,
}

/// Where Skiff keeps its data when no `--data-dir` is given.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("skiff")
}

/// The kubeconfig file named by `flag`, else the first in `$KUBECONFIG`, else the default data
/// directory's.
pub fn path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next()))
        .unwrap_or_else(|| default_data_dir().join("kubeconfig"))
}

/// A Kubernetes API client for the current context of the kubeconfig `flag`, `$KUBECONFIG` or
/// the default data directory names.
pub async fn client(flag: Option<&Path>) -> anyhow::Result<kube::Client> {
    let path = path(flag);
    let file = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("{} is not a usable kubeconfig", path.display()))?;
    Ok(kube::Client::try_from(config)?)
}

impl Kubeconfig {
    /// Loads the kubeconfig named by `flag`, `$KUBECONFIG` or the default data directory.
    pub fn load(flag: Option<&Path>) -> anyhow::Result<Self> {
        let path = path(flag);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
        let current = doc["current-context"].as_str().unwrap_or_default();
        let named = |list: &str, name: &str| {
            doc[list]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|e| e["name"].as_str() == Some(name) || name.is_empty())
                .cloned()
                .unwrap_or_default()
        };
        let context = named("contexts", current);
        let cluster = named(
            "clusters",
            context["context"]["cluster"].as_str().unwrap_or(""),
        );
        let user = named("users", context["context"]["user"].as_str().unwrap_or(""));
        let server = cluster["cluster"]["server"]
            .as_str()
            .context("the kubeconfig names no server")?
            .trim_end_matches('/')
            .to_string();
        let ca_pem = match cluster["cluster"]["certificate-authority-data"].as_str() {
            Some(data) => base64::engine::general_purpose::STANDARD.decode(data.trim())?,
            None => match cluster["cluster"]["certificate-authority"].as_str() {
                Some(file) => std::fs::read(file)?,
                None => bail!("the kubeconfig has no certificate authority for {server}"),
            },
        };
        let token = user["user"]["token"]
            .as_str()
            .context("the kubeconfig has no bearer token")?
            .to_string();
        Ok(Self {
            server,
            ca_pem,
            token,
        })
    }

    /// An HTTPS client that trusts the cluster CA.
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem)?)
            .tls_built_in_root_certs(false)
            .build()?)
    }
}
