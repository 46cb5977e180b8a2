//! `skiff rotate-secrets-key`: a new key for Secrets at rest.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use skiff_control_plane::store::Keyring;

/// Put a new key first in DIR/pki/secrets.keys; the server seals Secrets with it and
/// re-encrypts the older ones at its next start (old keys stay for reading until removed).
#[derive(Args)]
pub struct RotateSecretsKey {
    /// The control plane's data directory.
    #[arg(long)]
    data_dir: PathBuf,
}

impl RotateSecretsKey {
    pub async fn execute(self) -> anyhow::Result<()> {
        // The first start made the keyring; make sure it is there and readable first.
        Keyring::load_or_create(&self.data_dir)
            .with_context(|| format!("cannot read the keys in {}", self.data_dir.display()))?;
        let name = Keyring::rotate(&self.data_dir).context("cannot write the new key")?;
        println!(
            "secrets key {name} added to {}; restart the server to re-encrypt every Secret with it",
            self.data_dir.join("pki/secrets.keys").display()
        );
        Ok(())
    }
}
