//! `skiff run`: one pod running one module, as `kubectl run` makes it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::kubeconfig;
use super::manifest::message;

/// Create and run a pod of one container (kubectl run).
#[derive(Args)]
pub struct Run {
    /// The pod's name (also its container's).
    name: String,
    /// The module (or, with runtimeClassName containerd, image) to run, e.g. hello:1.0.
    #[arg(long)]
    image: String,
    /// An environment variable, `KEY=VALUE`. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The port the container serves on.
    #[arg(long)]
    port: Option<u16>,
    /// The pod's restart policy.
    #[arg(long, value_enum, default_value_t = Restart::Always)]
    restart: Restart,
    /// The pod's labels, `k=v,...` (default: `run=NAME`).
    #[arg(short = 'l', long)]
    labels: Option<String>,
    /// The pod's runtimeClassName (`wasmtime`, the default, or `containerd`).
    #[arg(long)]
    runtime_class: Option<String>,
    /// Treat the words after `--` as the command, not as arguments to the module.
    #[arg(long)]
    command: bool,
    /// The namespace (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// The kubeconfig (default: $KUBECONFIG, then the default data directory's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Arguments for the module, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

/// `--restart`, as kubectl spells the restart policies.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Restart {
    #[value(name = "Always")]
    Always,
    #[value(name = "OnFailure")]
    OnFailure,
    #[value(name = "Never")]
    Never,
}

impl Run {
    pub async fn execute(self) -> anyhow::Result<()> {
        let pod = self.pod()?;
        let client = kubeconfig::client(self.kubeconfig.as_deref()).await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| anyhow::anyhow!(message(&e)))?;
        println!("pod/{} created", created.metadata.name.unwrap_or_default());
        Ok(())
    }

    /// The pod kubectl run would create.
    fn pod(&self) -> anyhow::Result<Pod> {
        let labels: BTreeMap<String, String> = match &self.labels {
            None => [("run".to_string(), self.name.clone())].into(),
            Some(list) => list
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("invalid label spec: {l}"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let env = self
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok(json!({"name": k, "value": v})),
                _ => bail!("invalid env: {e}"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut container = json!({"name": self.name, "image": self.image});
        if !env.is_empty() {
            container["env"] = env.into();
        }
        if let Some(port) = self.port {
            container["ports"] = json!([{"containerPort": port}]);
        }
        if !self.args.is_empty() {
            let key = if self.command { "command" } else { "args" };
            container[key] = json!(self.args);
        }
        let restart = match self.restart {
            Restart::Always => "Always",
            Restart::OnFailure => "OnFailure",
            Restart::Never => "Never",
        };
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"containers": [container], "restartPolicy": restart},
        });
        if let Some(rc) = &self.runtime_class {
            pod["spec"]["runtimeClassName"] = rc.clone().into();
        }
        Ok(serde_json::from_value(pod)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: Run,
    }

    fn pod(args: &[&str]) -> serde_json::Value {
        let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::to_value(cli.run.pod().unwrap()).unwrap()
    }

    #[test]
    fn pods_as_kubectl_run_makes_them() {
        let p = pod(&["hello", "--image=hello:1.0", "--env", "GREETING=Ahoy"]);
        assert_eq!(p["metadata"]["labels"], json!({"run": "hello"}));
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"],
            json!([{"name": "hello", "image": "hello:1.0",
                    "env": [{"name": "GREETING", "value": "Ahoy"}]}])
        );
        let p = pod(&[
            "job",
            "--image=crash:1.0",
            "--restart=Never",
            "--labels=app=a,tier=b",
            "--",
            "7",
        ]);
        assert_eq!(p["metadata"]["labels"], json!({"app": "a", "tier": "b"}));
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["containers"][0]["args"], json!(["7"]));
    }

    #[test]
    fn bad_flags_are_named() {
        let cli = Cli::try_parse_from(["run", "x", "--image=i", "--env", "NOVALUE"]).unwrap();
        assert_eq!(
            cli.run.pod().unwrap_err().to_string(),
            "invalid env: NOVALUE"
        );
        assert!(Cli::try_parse_from(["run", "x", "--image=i", "--restart=Sometimes"]).is_err());
    }
}
