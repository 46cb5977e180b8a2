//! `skiff sim-nodes`: simulated nodes for tests and benchmarks, in the spirit of KWOK.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::kubeconfig::Kubeconfig;
use super::server::parse_duration;

/// Register COUNT simulated nodes through the API with the kubeconfig's (admin) credentials,
/// keep their Leases renewed and report the pods bound to them Running, until stopped.
#[derive(Args)]
pub struct SimNodes {
    /// Credentials (default: $KUBECONFIG, then the default data directory's kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// How many nodes.
    #[arg(long)]
    count: usize,
    /// Nodes are named PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// Each node's cpu capacity.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Each node's memory capacity.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Pods each node takes.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Extra node labels, `key=value,...`.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// How often each node renews its Lease (all renewals spread over the interval).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Leave the pods bound to these nodes as they are (do not report them Running).
    #[arg(long)]
    no_run_pods: bool,
    /// Most API requests in flight at once (for pods and for leases each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// One pod watch for all nodes, instead of one per node as real agents have.
    #[arg(long)]
    shared_watch: bool,
}

impl SimNodes {
    pub async fn execute(self) -> anyhow::Result<()> {
        let mut labels = BTreeMap::new();
        for label in self.labels.iter().filter(|l| !l.is_empty()) {
            let (key, value) = label
                .split_once('=')
                .with_context(|| format!("invalid label {label:?}: expected key=value"))?;
            labels.insert(key.to_string(), value.to_string());
        }
        let kubeconfig = Kubeconfig::load(self.kubeconfig.as_deref())?;
        let ca_pem = String::from_utf8(kubeconfig.ca_pem)
            .context("the kubeconfig's certificate authority is not PEM")?;
        let mut config =
            skiff_agent::sim::Config::new(kubeconfig.server, ca_pem, kubeconfig.token, self.count);
        config.prefix = self.prefix;
        config.cpu = self.cpu;
        config.memory = self.memory;
        config.max_pods = self.pods;
        config.labels = labels;
        config.heartbeat = self.heartbeat;
        config.run_pods = !self.no_run_pods;
        config.concurrency = self.concurrency;
        config.per_node_watches = !self.shared_watch;

        let stop = CancellationToken::new();
        let mut sim = tokio::spawn(skiff_agent::sim::run(config, stop.clone()));
        tokio::select! {
            done = &mut sim => return done?,
            _ = super::shutdown_signal() => {}
        }
        stop.cancel();
        sim.await?
    }
}
