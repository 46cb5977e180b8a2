//! The cluster's WasmPolicies as this node knows them. The agent watches them and keeps them in
//! its data directory (`policies.json`), so the checks it makes before running anything (module
//! signatures, host paths) and on each outgoing request (egress) hold when the control plane is
//! out of reach and across restarts: a node does not trust the API server's admission alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::TryStreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::Value;
use skiff_api::policy::WasmPolicy;
use tokio_util::sync::CancellationToken;

/// The policies of every namespace, by `namespace/name`.
pub struct Policies {
    objects: RwLock<BTreeMap<String, Value>>,
    file: PathBuf,
    synced: tokio::sync::watch::Sender<bool>,
    /// When the agent started: waiting for the first list is bounded from here, so only the
    /// containers created right after the start wait.
    started: tokio::time::Instant,
}

impl Policies {
    /// The policies kept in `data_dir` by an earlier run (none on a new node).
    pub fn load(data_dir: &std::path::Path) -> Arc<Self> {
        let file = data_dir.join("policies.json");
        let objects = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Arc::new(Self {
            objects: RwLock::new(objects),
            file,
            synced: tokio::sync::watch::channel(false).0,
            started: tokio::time::Instant::now(),
        })
    }

    /// The policies of namespace `ns`.
    pub fn of(&self, ns: &str) -> Vec<WasmPolicy> {
        let prefix = format!("{ns}/");
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, v)| WasmPolicy::parse(v).ok())
            .collect()
    }

    /// Waits until the policies were listed from the control plane, at most until `limit`
    /// after the agent started: a node that cannot reach it goes on with the policies it kept,
    /// without making every later container wait again.
    pub async fn synced(&self, limit: Duration) {
        let mut rx = self.synced.subscribe();
        let _ = tokio::time::timeout_at(self.started + limit, rx.wait_for(|s| *s)).await;
    }

    /// Watches the cluster's policies until `stop`, keeping them on disk.
    pub async fn run(self: Arc<Self>, client: kube::Client, stop: CancellationToken) {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("skiff.dev", "v1", "WasmPolicy"),
            "wasmpolicies",
        );
        let api: Api<DynamicObject> = Api::all_with(client, &resource);
        let stream = watcher(api, watcher::Config::default());
        let mut stream = std::pin::pin!(stream);
        let mut listing: Option<BTreeMap<String, Value>> = None;
        loop {
            let event = tokio::select! {
                e = stream.try_next() => e,
                _ = stop.cancelled() => return,
            };
            match event {
                Ok(Some(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Ok(Some(watcher::Event::InitApply(p))) => {
                    if let Some(list) = &mut listing {
                        list.insert(key(&p), to_value(&p));
                    }
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    if let Some(list) = listing.take() {
                        *self.objects.write().unwrap_or_else(|e| e.into_inner()) = list;
                        self.save();
                    }
                    self.synced.send_replace(true);
                }
                Ok(Some(watcher::Event::Apply(p))) => {
                    self.objects
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key(&p), to_value(&p));
                    self.save();
                }
                Ok(Some(watcher::Event::Delete(p))) => {
                    self.objects
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key(&p));
                    self.save();
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "watching WasmPolicies failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Writes the policies to disk (atomically: a crash leaves the old or the new file).
    fn save(&self) {
        let bytes = {
            let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
            serde_json::to_vec(&*objects).unwrap_or_default()
        };
        let tmp = self.file.with_extension("tmp");
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::warn!(error = %e, file = %self.file.display(), "cannot keep the WasmPolicies on disk");
        }
    }
}

fn key(p: &DynamicObject) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

fn to_value(p: &DynamicObject) -> Value {
    serde_json::to_value(p).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_by_namespace_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let policies = Policies::load(dir.path());
        let object = |ns: &str, name: &str| {
            serde_json::json!({"apiVersion": "skiff.dev/v1", "kind": "WasmPolicy",
                "metadata": {"name": name, "namespace": ns}, "spec": {"hostPaths": []}})
        };
        for (ns, name) in [("a", "p"), ("a", "q"), ("ab", "r")] {
            policies
                .objects
                .write()
                .unwrap()
                .insert(format!("{ns}/{name}"), object(ns, name));
        }
        policies.save();
        let again = Policies::load(dir.path());
        let names: Vec<_> = again.of("a").into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["p", "q"]);
        assert!(again.of("b").is_empty());
        assert!(again.of("a")[0].check_host_path("/srv").is_err());
    }
}
