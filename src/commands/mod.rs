//! One file per subcommand.

mod agent;
mod apply;
mod delete;
mod describe;
mod get;
mod kubeconfig;
mod logs;
mod manifest;
mod push;
mod resource;
mod rotate;
mod run;
mod server;
mod sim;
mod up;

use clap::Subcommand;

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run a whole cluster in this process (control plane and one node) with example pods.
    Up(up::Up),
    /// Run the control plane: store, API server (and, as they land, scheduler and controllers).
    Server(server::Server),
    /// Run a node agent: join a cluster and run the Wasm pods bound to this node.
    Agent(agent::Agent),
    /// Store a Wasm module in the cluster's module store as NAME:TAG.
    Push(push::Push),
    /// Make an ed25519 publisher key for signing modules.
    Keygen(push::Keygen),
    /// Add a new key for Secrets at rest (the server re-encrypts with it at its next start).
    RotateSecretsKey(rotate::RotateSecretsKey),
    /// Simulate nodes (as KWOK does): register many from one process, pods reported Running.
    SimNodes(sim::SimNodes),
    /// Display objects (kubectl get, for hosts without kubectl).
    Get(get::Get),
    /// Create or update objects from manifests (kubectl apply -f).
    Apply(apply::Apply),
    /// Delete objects by type and name or from manifests (kubectl delete).
    Delete(delete::Delete),
    /// Print a container's log (kubectl logs).
    Logs(logs::Logs),
    /// Show details of objects and their recent events (kubectl describe).
    Describe(describe::Describe),
    /// Create and run a pod of one container (kubectl run).
    Run(run::Run),
}

impl Command {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self {
            Self::Up(c) => c.execute().await,
            Self::Server(c) => c.execute().await,
            Self::Agent(c) => c.execute().await,
            Self::Push(c) => c.execute().await,
            Self::Keygen(c) => c.execute().await,
            Self::RotateSecretsKey(c) => c.execute().await,
            Self::SimNodes(c) => c.execute().await,
            Self::Get(c) => c.execute().await,
            Self::Apply(c) => c.execute().await,
            Self::Delete(c) => c.execute().await,
            Self::Logs(c) => c.execute().await,
            Self::Describe(c) => c.execute().await,
            Self::Run(c) => c.execute().await,
        }
    }

    /// The log filter when `SKIFF_LOG` is not set: `skiff up` and the client commands talk to a
    /// person on the terminal, so their components speak up only about problems.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Self::Up(_)
            | Self::Get(_)
            | Self::Apply(_)
            | Self::Delete(_)
            | Self::Logs(_)
            | Self::Describe(_)
            | Self::Run(_) => "warn",
            Self::Server(_) | Self::Agent(_) | Self::Push(_) | Self::Keygen(_) => "info",
            Self::SimNodes(_) | Self::RotateSecretsKey(_) => "info",
        }
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; a second one exits the process at once.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; press Ctrl-C again to force");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("forced exit");
        std::process::exit(130);
    });
}
