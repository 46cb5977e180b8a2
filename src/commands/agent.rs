//! `skiff agent`: a node that runs Wasm pods.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::server::parse_duration;

/// Run a node agent: join the cluster and run the pods bound to this node.
#[derive(Args)]
pub struct Agent {
    /// The API server, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    server: String,
    /// The node join token (the server's DATA_DIR/node-token); it pins the server's CA.
    #[arg(long, env = "SKIFF_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// Directory for the node's identity, module cache, pods and logs.
    #[arg(long)]
    data_dir: PathBuf,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The address reported for the node and its pods.
    #[arg(long)]
    node_ip: Option<String>,
    /// A directory of modules (`NAME.wasm`, optionally `NAME.wasm.sig`) for local development;
    /// without it modules come from the control plane's module store (`skiff push`).
    #[arg(long)]
    module_dir: Option<PathBuf>,
    /// A publisher key (base64, as `skiff keygen` prints it) whose signatures this node accepts;
    /// repeatable.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<String>,
    /// Run only modules signed by a trusted key.
    #[arg(long)]
    require_signatures: bool,
    /// A host directory that `hostPath` volumes may name (it or anything below); repeatable.
    /// Without it this node refuses hostPath volumes.
    #[arg(long = "allow-host-path")]
    host_path_prefixes: Vec<PathBuf>,
    /// How often the node renews its Lease.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// First restart back-off of a crashing container (doubles up to 5 minutes).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    crash_backoff: Duration,
    /// Pods this node takes.
    #[arg(long, default_value_t = 1000)]
    max_pods: u32,
    /// Port of the agent's endpoint for the API server (logs); 0 picks a free port.
    #[arg(long, default_value_t = 10250)]
    port: u16,
}

impl Agent {
    pub async fn execute(self) -> anyhow::Result<()> {
        let node_name = self.node_name.unwrap_or_else(host_name);
        let mut config = skiff_agent::Config::new(
            self.server.trim_end_matches('/').to_string(),
            self.token.trim().to_string(),
            self.data_dir,
            node_name,
        );
        config.node_ip = self.node_ip;
        config.module_dir = self.module_dir;
        config.require_signatures = self.require_signatures;
        config.host_path_prefixes = self.host_path_prefixes;
        for key in &self.trusted_keys {
            use base64::Engine as _;
            let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("--trusted-key {key}: not a base64 ed25519 public key")
                })?;
            config
                .trusted_keys
                .push(
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| {
                        anyhow::anyhow!("--trusted-key {key}: not a valid ed25519 public key")
                    })?,
                );
        }
        config.heartbeat = self.heartbeat;
        config.backoff_base = self.crash_backoff;
        config.max_pods = self.max_pods;
        config.port = self.port;
        let stop = CancellationToken::new();
        let mut agent = tokio::spawn(skiff_agent::run(config, stop.clone()));
        tokio::select! {
            result = &mut agent => return result?,
            _ = super::shutdown_signal() => {}
        }
        // Pods keep running only while the agent does: stop them with it.
        stop.cancel();
        agent.await?
    }
}

/// The host's name, lowercased, as the node's default name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}
