//! The namespace controller: a namespace being deleted has everything in it deleted, and once
//! nothing is left its `kubernetes` finalizer (`spec.finalizers`) is cleared, which lets the
//! namespace go. Driven from the stored namespace, so a deletion interrupted by a restart is
//! taken up again.

use std::sync::Arc;

use serde_json::Value;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde_json::json;

use super::runner::{Action, Key, Reconciler};
use crate::api::resources::{self, ResourceDef};
use crate::api::{Api, ApiError, DeleteOptions, ListOptions, Target, WriteOptions, object};

/// How often a namespace whose content is still terminating (graceful pods, finalizers) is
/// looked at again.
const RECHECK: Duration = Duration::from_millis(500);
/// Deletes sent at once.
const PARALLEL: usize = 16;

/// Reconciles namespaces being deleted.
pub struct Namespaces;

impl Reconciler for Namespaces {
    fn primary(&self) -> &'static ResourceDef {
        resources::core("namespaces")
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        Vec::new()
    }

    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
        object: Option<Arc<Value>>,
    ) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(sync(api, &key.1, object))
    }
}

/// One definition per stored namespaced kind.
fn namespaced_kinds() -> impl Iterator<Item = &'static ResourceDef> {
    super::gc::stored_kinds()
        .into_iter()
        .filter(|r| r.namespaced)
}

#[tracing::instrument(skip(api))]
async fn sync(api: &Api, namespace: &str, ns: Option<Arc<Value>>) -> Result<Action, ApiError> {
    let nsdef = resources::core("namespaces");
    let Some(ns) = ns else {
        return Ok(Action::Await);
    };
    if !object::is_terminating(&ns) {
        return Ok(Action::Await);
    }
    let mut remaining = 0;
    for res in namespaced_kinds() {
        let items = api
            .list(res, Some(namespace), &ListOptions::default())?
            .items;
        remaining += items.len();
        let mut deletes: Vec<BoxFuture<'_, Result<(), ApiError>>> = Vec::new();
        for item in items.iter().filter(|item| !object::is_terminating(item)) {
            let name = object::name(item).to_string();
            let opts = DeleteOptions {
                precondition_uid: Some(object::uid(item).to_string()),
                ..Default::default()
            };
            deletes.push(Box::pin(async move {
                match api.delete(res, Some(namespace), &name, &opts).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code == 404 || e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }));
        }
        let results: Vec<Result<(), ApiError>> = futures::stream::iter(deletes)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), ApiError>>()?;
    }
    if remaining > 0 {
        // What was deleted outright is gone at the next look; what terminates is waited for.
        let left = namespaced_kinds()
            .map(|res| api.list(res, Some(namespace), &ListOptions::default()))
            .try_fold(0, |n, l| l.map(|l| n + l.items.len()))?;
        if left > 0 {
            return Ok(Action::RequeueAfter(RECHECK));
        }
    }
    tracing::debug!("namespace empty; removing its finalizer");
    let drop = json!({"spec": {"finalizers": []}});
    match api
        .update(
            nsdef,
            None,
            namespace,
            drop,
            Target::Finalize,
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) | Err(ApiError { code: 404, .. }) => {}
        Err(e) => return Err(e),
    }
    // A namespace created without the finalizer (or with metadata finalizers left) is deleted
    // once more: outright when nothing holds it any more.
    match api
        .delete(nsdef, None, namespace, &DeleteOptions::default())
        .await
    {
        Ok(_) | Err(ApiError { code: 404, .. }) => Ok(Action::Await),
        Err(e) => Err(e),
    }
}
