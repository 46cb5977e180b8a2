//! What authentication and authorization read on every request, kept in memory from store
//! watches (a reflector, in client-go's words): the RBAC objects and each service account's
//! uid. One writer (the watch loops), many cheap readers.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::RBAC_GROUP;
use super::rbac::{Binding, Policy, Rule};
use crate::api::resources::{self, ResourceDef};
use crate::api::{Api, ApiError, ListOptions, WatchEvent, object};

/// The kinds the cache follows, by index.
fn kinds() -> &'static [&'static ResourceDef; 5] {
    static KINDS: LazyLock<[&'static ResourceDef; 5]> = LazyLock::new(|| {
        let rbac =
            |plural| resources::find(RBAC_GROUP, "v1", plural).expect("RBAC kinds are served");
        [
            rbac("roles"),
            rbac("clusterroles"),
            rbac("rolebindings"),
            rbac("clusterrolebindings"),
            resources::core("serviceaccounts"),
        ]
    });
    &KINDS
}

/// RBAC policy and service accounts, as of the last watch event seen.
pub struct Cache {
    policy: RwLock<Policy>,
    accounts: RwLock<HashMap<(String, String), String>>,
    /// Per kind, the newest revision applied.
    seen: [watch::Sender<u64>; 5],
}

impl Cache {
    /// Lists every followed kind, so the cache is complete before the first request.
    pub fn load(api: &Api) -> Result<Arc<Self>, ApiError> {
        let cache = Arc::new(Self {
            policy: RwLock::default(),
            accounts: RwLock::default(),
            seen: std::array::from_fn(|_| watch::Sender::new(0)),
        });
        for i in 0..kinds().len() {
            cache.relist(api, i)?;
        }
        Ok(cache)
    }

    /// Follows changes until `stop`, listing afresh whenever a watch ends (compaction).
    pub async fn run(self: Arc<Self>, api: Api, stop: CancellationToken) {
        let loops = (0..kinds().len()).map(|i| {
            let (cache, api, stop) = (self.clone(), api.clone(), stop.clone());
            async move { cache.follow(&api, i, &stop).await }
        });
        futures::future::join_all(loops).await;
    }

    async fn follow(&self, api: &Api, i: usize, stop: &CancellationToken) {
        let res = kinds()[i];
        loop {
            let from = self.seen[i].borrow().to_string();
            let mut events = match api.watch(res, None, &ListOptions::default(), Some(&from), false)
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(kind = res.kind, error = %e, "cannot watch for the authorizer");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return,
                    }
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    _ = stop.cancelled() => return,
                };
                match event {
                    Some(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                        self.apply(i, &o, false)
                    }
                    Some(WatchEvent::Deleted(o)) => self.apply(i, &o, true),
                    Some(WatchEvent::Bookmark { .. }) => {}
                    Some(WatchEvent::Error(_)) | None => break,
                }
            }
            // History is gone or the stream ended: start over from a fresh list.
            while let Err(e) = self.relist(api, i) {
                tracing::warn!(kind = res.kind, error = %e, "cannot list for the authorizer");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    fn relist(&self, api: &Api, i: usize) -> Result<(), ApiError> {
        let res = kinds()[i];
        let list = api.list(res, None, &ListOptions::default())?;
        {
            let mut policy = self.policy.write().unwrap_or_else(|e| e.into_inner());
            if i < 4 {
                policy.clear(res.kind);
            } else {
                self.accounts
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
        }
        for obj in &list.items {
            self.apply(i, obj, false);
        }
        self.seen[i].send_replace(list.resource_version);
        Ok(())
    }

    fn apply(&self, i: usize, obj: &Value, deleted: bool) {
        let (ns, name) = (object::namespace(obj), object::name(obj));
        if i == 4 {
            let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
            let key = (ns.to_string(), name.to_string());
            if deleted {
                accounts.remove(&key);
            } else {
                accounts.insert(key, object::uid(obj).to_string());
            }
        } else {
            let mut policy = self.policy.write().unwrap_or_else(|e| e.into_inner());
            let rules = || (!deleted).then(|| Rule::of(obj));
            let binding = || if deleted { None } else { Binding::of(obj) };
            match i {
                0 => policy.set_role(ns, name, rules()),
                1 => policy.set_cluster_role(name, rules()),
                2 => policy.set_role_binding(ns, name, binding()),
                _ => policy.set_cluster_role_binding(name, binding()),
            }
        }
        if let Ok(rev) = object::meta_str(obj, "resourceVersion").parse::<u64>() {
            self.seen[i].send_if_modified(|seen| {
                let newer = rev > *seen;
                *seen = (*seen).max(rev);
                newer
            });
        }
    }

    /// The RBAC policy now.
    pub fn policy(&self) -> RwLockReadGuard<'_, Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The uid of the service account `ns/name`, if it exists.
    pub fn service_account_uid(&self, ns: &str, name: &str) -> Option<String> {
        self.accounts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Whether the cache follows `res`.
    pub fn follows(res: &ResourceDef) -> bool {
        kinds().iter().any(|k| std::ptr::eq(*k, res))
    }

    /// Waits (a little, at most) until the cache has seen `res` at `revision`, so a client
    /// that changed a role, binding or service account sees the change take effect on its
    /// next request.
    pub async fn caught_up(&self, res: &ResourceDef, revision: u64) {
        let Some(i) = kinds().iter().position(|k| std::ptr::eq(*k, res)) else {
            return;
        };
        let mut rx = self.seen[i].subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            rx.wait_for(|seen| *seen >= revision),
        )
        .await;
    }
}
