//! ReplicaSets and ReplicationControllers: keep `replicas` pods that match the selector.
//!
//! Matching orphans are adopted and owned pods that stop matching are released; missing pods
//! are created from the template and surplus ones deleted least valuable first (unscheduled,
//! then pending, not ready, ready for less time, restarted more, newest), as upstream ranks
//! them. Status reports replicas, fullyLabeledReplicas, readyReplicas, availableReplicas and
//! observedGeneration.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use skiff_api::labels::Selector;

use super::runner::{Action, Key, Reconciler};
use super::{owner_ref, pod_available, pod_ready};
use crate::api::resources::ResourceDef;
use crate::api::{Api, ApiError, DeleteOptions, WriteOptions, object, resources};

const COMPONENT: &str = "replicaset-controller";

/// The ReplicaSet controller (`apps/v1`) or the ReplicationController manager (`v1`).
pub struct ReplicaSets {
    res: &'static ResourceDef,
}

impl ReplicaSets {
    /// Drives `apps/v1` ReplicaSets.
    pub fn apps_v1() -> Self {
        Self {
            res: resources::find("apps", "v1", "replicasets").expect("replicasets are served"),
        }
    }

    /// Drives `v1` ReplicationControllers.
    pub fn core_v1() -> Self {
        Self {
            res: resources::core("replicationcontrollers"),
        }
    }
}

/// An owner's selector: a LabelSelector for ReplicaSets, a plain map for
/// ReplicationControllers. `None` when it is missing or invalid (selects nothing).
pub fn selector_of(owner: &Value) -> Option<Selector> {
    let sel = owner.pointer("/spec/selector")?;
    if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() {
        let parsed = serde_json::from_value(sel.clone()).ok()?;
        Selector::from_label_selector(&parsed).ok()
    } else {
        let map = sel.as_object()?;
        if map.is_empty() {
            return None;
        }
        let text: Vec<String> = map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        Selector::parse(&text.join(",")).ok()
    }
    .filter(|s| !s.is_empty())
}

fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

fn active(pod: &Value) -> bool {
    !object::is_terminating(pod)
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// Sort key: the least valuable pod first.
fn value_rank(pod: &Value) -> impl Ord + use<> {
    let assigned = !pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty();
    let phase = match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready_since = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(str::to_string);
    let restarts: i64 = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let created = object::meta_str(pod, "creationTimestamp").to_string();
    (
        assigned,
        phase,
        ready_since.is_some(),
        // Ready for less time (a later transition) is worth less.
        Reverse(ready_since),
        Reverse(restarts),
        Reverse(created),
    )
}

impl Reconciler for ReplicaSets {
    fn primary(&self) -> &'static ResourceDef {
        self.res
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        vec![resources::core("pods")]
    }

    fn adopts(&self, owner: &Value, child: &Value) -> bool {
        super::selector_adopts(owner, child)
    }

    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
        object: Option<Arc<Value>>,
    ) -> BoxFuture<'a, Result<Action, ApiError>> {
        self.sync(api, key, object).boxed()
    }
}

impl ReplicaSets {
    async fn sync(
        &self,
        api: &Api,
        (ns, name): &Key,
        owner: Option<Arc<Value>>,
    ) -> Result<Action, ApiError> {
        let pods_res = resources::core("pods");
        let Some(owner) = owner else {
            return Ok(Action::Await);
        };
        if object::is_terminating(&owner) {
            return Ok(Action::Await);
        }
        let uid = object::uid(&owner).to_string();
        let selector = selector_of(&owner);
        // Its own pods (the cache's owner index) and the orphans it could adopt: other
        // owners' pods are not even decoded.
        let mut pods = api.dependents_shared(pods_res, Some(ns), &uid)?;
        pods.extend(api.list_shared(pods_res, Some(ns), |i| {
            // (one naming it as a mere owner came with its dependents)
            i.controller.is_empty()
                && !i.owners.contains(&uid)
                && selector
                    .as_ref()
                    .is_some_and(|s| s.matches_json(Some(&i.labels)))
        })?);
        let mut mine = Vec::new();
        let mut may_adopt = None;
        for mut pod in pods {
            let matches = selector
                .as_ref()
                .is_some_and(|s| s.matches_json(object::labels(&pod)));
            match controller_uid(&pod) {
                Some(u) if u == uid => {
                    if matches {
                        mine.push(pod);
                    } else if !object::is_terminating(&pod) {
                        // Release: drop our reference, keep the pod.
                        self.set_owner(api, &pod, None).await?;
                    }
                }
                None if matches && active(&pod) => {
                    if may_adopt.is_none() {
                        may_adopt = Some(super::can_adopt(api, self.res, &owner).await?);
                    }
                    if may_adopt == Some(false) {
                        continue;
                    }
                    let owner_ref = owner_ref(&owner, self.res);
                    pod = Arc::new(self.set_owner(api, &pod, Some(owner_ref)).await?);
                    mine.push(pod);
                }
                _ => {}
            }
        }
        let replicas = owner
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let min_ready = owner
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mut live: Vec<Arc<Value>> = mine.iter().filter(|p| active(p)).cloned().collect();
        if live.len() < replicas {
            let template = owner.pointer("/spec/template").cloned().unwrap_or_default();
            // At most a burst per pass (`replicas` may be 2^31 - 1): the new pods' events
            // bring the next pass.
            let missing = (replicas - live.len()).min(super::BURST);
            let created = futures::stream::iter(0..missing)
                .map(|_| self.create_pod(api, &owner, &template))
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await;
            for pod in created {
                live.push(Arc::new(pod?));
            }
        } else if live.len() > replicas {
            live.sort_by_key(|p| value_rank(p));
            let surplus: Vec<Arc<Value>> = live.drain(..live.len() - replicas).collect();
            for pod in &surplus {
                let pod_name = object::name(pod);
                match api
                    .delete(pods_res, Some(ns), pod_name, &DeleteOptions::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
                let message = format!("Deleted pod: {pod_name}");
                crate::events::record(
                    api,
                    &owner,
                    "Normal",
                    "SuccessfulDelete",
                    &message,
                    COMPONENT,
                )
                .await;
            }
        }

        // Status from the pods as they are now.
        let template_labels = owner
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        let fully_labeled = live
            .iter()
            .filter(|p| {
                template_labels.is_none_or(|want| {
                    want.iter()
                        .all(|(k, v)| object::labels(p).and_then(|l| l.get(k)) == Some(v))
                })
            })
            .count();
        let ready = live.iter().filter(|p| pod_ready(p)).count();
        let available = live.iter().filter(|p| pod_available(p, min_ready)).count();
        let status = json!({
            "replicas": live.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": owner.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        let current = owner.get("status").cloned().unwrap_or_default();
        let changed = [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .any(|f| current.get(*f).unwrap_or(&json!(0)) != &status[*f]);
        if changed && !super::write_status(api, self.res, ns, name, status).await? {
            return Ok(Action::Await);
        }
        // Pods that are ready but not yet available become so with time alone.
        if ready > available && min_ready > 0 {
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        Ok(Action::Await)
    }

    async fn create_pod(
        &self,
        api: &Api,
        owner: &Value,
        template: &Value,
    ) -> Result<Value, ApiError> {
        let ns = object::namespace(owner);
        let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
        metadata["generateName"] = json!(format!("{}-", object::name(owner)));
        metadata["ownerReferences"] = json!([owner_ref(owner, self.res)]);
        if let Some(m) = metadata.as_object_mut() {
            m.remove("name");
            m.remove("namespace");
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                         "spec": template.get("spec").cloned().unwrap_or(json!({}))});
        let written = api
            .create(
                resources::core("pods"),
                Some(ns),
                pod,
                &WriteOptions::default(),
            )
            .await;
        match written {
            Ok(w) => {
                let message = format!("Created pod: {}", object::name(&w.object));
                crate::events::record(
                    api,
                    owner,
                    "Normal",
                    "SuccessfulCreate",
                    &message,
                    COMPONENT,
                )
                .await;
                Ok(w.object)
            }
            Err(e) => {
                let message = format!("Error creating: {}", e.message);
                crate::events::record(api, owner, "Warning", "FailedCreate", &message, COMPONENT)
                    .await;
                Err(e)
            }
        }
    }

    /// Sets (adopt) or removes (release) the controller reference of a pod.
    async fn set_owner(
        &self,
        api: &Api,
        pod: &Value,
        owner: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut refs: Vec<Value> = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        refs.retain(|r| r["controller"] != true);
        refs.extend(owner);
        let patch = json!({"metadata": {"ownerReferences": refs,
                                        "resourceVersion": object::meta_str(pod, "resourceVersion")}});
        super::merge_patch(api, resources::core("pods"), pod, patch).await
    }
}
