//! `skiff logs`: a container's log, through the API server from the node that runs it.

use std::path::PathBuf;

use clap::Args;
use futures::AsyncBufReadExt as _;
use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use super::kubeconfig;
use super::manifest::message;

/// Print the log of a pod's container.
#[derive(Args)]
pub struct Logs {
    /// The pod (`NAME` or `pod/NAME`).
    pod: String,
    /// The container (needed when the pod has several).
    #[arg(short, long)]
    container: Option<String>,
    /// Keep streaming new lines.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<i64>,
    /// The log of the previous, terminated run of the container.
    #[arg(short, long)]
    previous: bool,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    timestamps: bool,
    /// The namespace (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// The kubeconfig (default: $KUBECONFIG, then the default data directory's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl Logs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let client = kubeconfig::client(self.kubeconfig.as_deref()).await?;
        let namespace = self
            .namespace
            .unwrap_or_else(|| client.default_namespace().to_string());
        let name = self.pod.strip_prefix("pod/").unwrap_or(&self.pod);
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let params = LogParams {
            container: self.container,
            follow: self.follow,
            tail_lines: self.tail,
            previous: self.previous,
            timestamps: self.timestamps,
            ..Default::default()
        };
        let stream = pods
            .log_stream(name, &params)
            .await
            .map_err(|e| anyhow::anyhow!(message(&e)))?;
        let mut lines = stream.lines();
        while let Some(line) = lines.try_next().await? {
            println!("{line}");
        }
        Ok(())
    }
}
