//! `skiff delete`: deletes objects by type and name, or those a manifest names.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use kube::api::{Api, DeleteParams, DynamicObject};

use super::kubeconfig;
use super::manifest::{self, message};
use super::resource;

/// Delete objects by type and name, or the objects in manifests.
#[derive(Args)]
pub struct Delete {
    /// The resource type and names: `pod web db`, or `pod/web` (without -f).
    args: Vec<String>,
    /// Delete the objects these manifests name (files, directories or `-`).
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// The namespace (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Seconds a pod gets to stop (default: its own terminationGracePeriodSeconds).
    #[arg(long)]
    grace_period: Option<u32>,
    /// Succeed when an object does not exist.
    #[arg(long)]
    ignore_not_found: bool,
    /// The kubeconfig (default: $KUBECONFIG, then the default data directory's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl Delete {
    pub async fn execute(self) -> anyhow::Result<()> {
        // (resource type, namespace from a manifest, name)
        let mut targets: Vec<(String, Option<String>, String)> = Vec::new();
        if !self.files.is_empty() {
            if !self.args.is_empty() {
                bail!("give either -f or names, not both");
            }
            for m in manifest::read(&self.files)? {
                let kind = m.object["kind"].as_str().unwrap_or_default();
                let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
                let group = api_version.split_once('/').map_or("", |(g, _)| g);
                let resource = if group.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}.{group}")
                };
                let ns = m.object["metadata"]["namespace"].as_str().map(String::from);
                let name = m.object["metadata"]["name"].as_str().unwrap_or_default();
                targets.push((resource, ns, name.to_string()));
            }
        } else {
            if self.args.is_empty() {
                bail!("name a resource type and names (`skiff delete pod web`) or use -f");
            }
            match resource::targets(&self.args)? {
                resource::Targets::All(_) => {
                    bail!("resource(s) were provided, but no name was specified")
                }
                resource::Targets::Named(named) => {
                    targets.extend(named.into_iter().map(|(res, name)| (res, None, name)));
                }
            }
        }
        let client = kubeconfig::client(self.kubeconfig.as_deref()).await?;
        let default_ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let mut params = DeleteParams::default();
        if let Some(g) = self.grace_period {
            params = params.grace_period(g);
        }
        let mut failed = false;
        for (res, ns, name) in targets {
            let resource = resource::resolve(&client, &res).await?;
            let api: Api<DynamicObject> = if resource.namespaced {
                let ns = ns.unwrap_or_else(|| default_ns.clone());
                Api::namespaced_with(client.clone(), &ns, &resource.api)
            } else {
                Api::all_with(client.clone(), &resource.api)
            };
            match api.delete(&name, &params).await {
                Ok(_) => println!("{} \"{name}\" deleted", resource.display()),
                Err(kube::Error::Api(s)) if s.code == 404 && self.ignore_not_found => {}
                Err(e) => {
                    eprintln!("{}", message(&e));
                    failed = true;
                }
            }
        }
        if failed {
            bail!("some objects were not deleted");
        }
        Ok(())
    }
}
