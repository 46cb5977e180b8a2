//! `skiff apply -f`: creates objects from manifests, or updates them to what the manifests say.

use std::path::PathBuf;

use clap::Args;

use super::kubeconfig;
use super::manifest::{self, Applier};

/// Create or update objects from manifests (server-side apply).
#[derive(Args)]
pub struct Apply {
    /// Manifests: files, directories (their .yaml, .yml and .json files) or `-` for stdin;
    /// several YAML documents per file. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The namespace of objects that name none (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// The kubeconfig (default: $KUBECONFIG, then the default data directory's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl Apply {
    pub async fn execute(self) -> anyhow::Result<()> {
        let manifests = manifest::read(&self.files)?;
        let client = kubeconfig::client(self.kubeconfig.as_deref()).await?;
        let namespace = self
            .namespace
            .unwrap_or_else(|| client.default_namespace().to_string());
        let mut applier = Applier::new(client);
        let mut failed = None;
        // As kubectl does: every object is tried; the command fails if any failed.
        for m in &manifests {
            match applier.apply(m, &namespace).await {
                Ok(applied) => println!("{applied}"),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) if manifests.len() == 1 => Err(e),
            Some(_) => anyhow::bail!("some objects were not applied"),
            None => Ok(()),
        }
    }
}
