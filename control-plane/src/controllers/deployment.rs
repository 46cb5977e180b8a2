//! Deployments: a ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`,
//! rolled over by the RollingUpdate (maxSurge / maxUnavailable) or Recreate strategy.
//!
//! Each template gets a `deployment.kubernetes.io/revision`; `kubectl rollout undo` puts an
//! old template back and its ReplicaSet becomes the newest revision again. Old ReplicaSets
//! scaled to zero are kept up to `revisionHistoryLimit`. A paused Deployment starts no
//! rollout. Status and the Available / Progressing conditions follow upstream, so `kubectl
//! rollout status` reads them as it does on Kubernetes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::replicaset::selector_of;
use super::runner::{Action, Key, Reconciler};
use super::{condition, owner_ref};
use crate::api::resources::ResourceDef;
use crate::api::{Api, ApiError, DeleteOptions, WriteOptions, object, resources};

const COMPONENT: &str = "deployment-controller";
const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// The Deployment controller.
pub struct Deployments;

fn deployments() -> &'static ResourceDef {
    resources::find("apps", "v1", "deployments").expect("deployments are served")
}

fn replica_sets() -> &'static ResourceDef {
    resources::find("apps", "v1", "replicasets").expect("replicasets are served")
}

impl Reconciler for Deployments {
    fn primary(&self) -> &'static ResourceDef {
        deployments()
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        vec![replica_sets()]
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
        sync(api, key, object).boxed()
    }
}

/// A JSON value with object keys sorted, so equal templates print equally.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A template without the `pod-template-hash` label, for comparing.
fn unhashed(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    canonical(&t)
}

/// FNV-1a of the template, spelt with the letters Kubernetes uses for generated names (no
/// vowels, so no words).
pub fn template_hash(template: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in unhashed(template).to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut n = h as u64;
    while out.len() < 10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
        if n == 0 {
            break;
        }
    }
    out
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn int(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    int(rs.pointer("/spec/replicas"))
}

fn status(rs: &Value, field: &str) -> i64 {
    int(rs.pointer(&format!("/status/{field}")))
}

/// An IntOrString of a rolling update against `replicas` (percentages round up for surge,
/// down for unavailability, as upstream).
fn resolve(v: Option<&Value>, default: &str, replicas: i64, round_up: bool) -> i64 {
    let v = v.cloned().unwrap_or_else(|| json!(default));
    let n = match &v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        // Admission accepts only `[0-9]+%` (and at most 100% unavailable); anything larger is
        // clamped so the product cannot overflow.
        Value::String(s) => match crate::api::admission::percent(s) {
            Some(p) => {
                let p = i64::try_from(p)
                    .unwrap_or(i64::MAX)
                    .min(i64::from(i32::MAX));
                let scaled = p.saturating_mul(replicas.clamp(0, i64::from(i32::MAX)));
                if round_up {
                    scaled.saturating_add(99) / 100
                } else {
                    scaled / 100
                }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    };
    // An int32 field, never negative: what follows adds and subtracts it freely.
    n.clamp(0, i64::from(i32::MAX))
}

async fn scale(
    api: &Api,
    deploy: &Value,
    rs: &mut Value,
    to: i64,
    max_surge: i64,
) -> Result<(), ApiError> {
    let from = spec_replicas(rs);
    let desired = int(deploy.pointer("/spec/replicas"));
    let patch = json!({"metadata": {"annotations": {
                           DESIRED: desired.to_string(), MAX_REPLICAS: (desired + max_surge).to_string()}},
                       "spec": {"replicas": to}});
    *rs = super::merge_patch(api, replica_sets(), rs, patch).await?;
    if from != to {
        let way = if to > from { "up" } else { "down" };
        let message = format!(
            "Scaled {way} replica set {} to {to} from {from}",
            object::name(rs)
        );
        crate::events::record(
            api,
            deploy,
            "Normal",
            "ScalingReplicaSet",
            &message,
            COMPONENT,
        )
        .await;
    }
    Ok(())
}

async fn sync(api: &Api, (ns, name): &Key, deploy: Option<Arc<Value>>) -> Result<Action, ApiError> {
    let Some(deploy) = deploy else {
        return Ok(Action::Await);
    };
    let mut deploy = Value::clone(&deploy);
    if object::is_terminating(&deploy) {
        return Ok(Action::Await);
    }
    deploy["apiVersion"] = json!("apps/v1");
    deploy["kind"] = json!("Deployment");
    let uid = object::uid(&deploy).to_string();
    let selector = selector_of(&deploy);
    let spec = deploy["spec"].clone();
    let replicas = int(spec.get("replicas")).max(0);
    let template = spec.get("template").cloned().unwrap_or_default();
    let paused = spec["paused"] == true;

    // The ReplicaSets it owns, adopting matching orphans.
    let mut mine = Vec::new();
    let mut may_adopt = None;
    // Its own (the cache's owner index) and the orphans: other owners' ReplicaSets are not
    // even decoded.
    let mut candidates = api.dependents_shared(replica_sets(), Some(ns), &uid)?;
    candidates.extend(api.list_shared(replica_sets(), Some(ns), |i| {
        // (one naming it as a mere owner came with its dependents)
        i.controller.is_empty() && !i.owners.contains(&uid)
    })?);
    for rs in candidates {
        let controller = rs
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r["controller"] == true).cloned());
        let matches = selector
            .as_ref()
            .is_some_and(|s| s.matches_json(object::labels(&rs)));
        match controller {
            Some(r) if r["uid"] == uid.as_str() => mine.push(Value::clone(&rs)),
            None if matches && !object::is_terminating(&rs) => {
                if may_adopt.is_none() {
                    may_adopt = Some(super::can_adopt(api, deployments(), &deploy).await?);
                }
                if may_adopt == Some(false) {
                    continue;
                }
                let mut refs: Vec<Value> = rs
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                refs.push(owner_ref(&deploy, deployments()));
                let patch = json!({"metadata": {"ownerReferences": refs,
                    "resourceVersion": object::meta_str(&rs, "resourceVersion")}});
                mine.push(super::merge_patch(api, replica_sets(), &rs, patch).await?);
            }
            _ => {}
        }
    }
    mine.retain(|rs| !object::is_terminating(rs));
    let wanted = unhashed(&template);
    let new_index = mine
        .iter()
        .position(|rs| rs.pointer("/spec/template").map(unhashed).as_ref() == Some(&wanted));
    let max_revision = mine.iter().map(revision).max().unwrap_or(0);
    let strategy = spec
        .pointer("/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let (surge, unavailable) = if strategy == "Recreate" {
        (0, 0)
    } else {
        let rolling = spec.pointer("/strategy/rollingUpdate");
        let surge = resolve(
            rolling.and_then(|r| r.get("maxSurge")),
            "25%",
            replicas,
            true,
        );
        let unavailable = resolve(
            rolling.and_then(|r| r.get("maxUnavailable")),
            "25%",
            replicas,
            false,
        );
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    };
    let mut progressed = false;

    let mut new = match new_index {
        Some(i) => {
            let mut rs = mine.remove(i);
            // An old template back again (rollback): its ReplicaSet is the newest revision.
            if revision(&rs) < max_revision && !paused {
                let patch = json!({"metadata": {"annotations": {REVISION: max_revision.saturating_add(1).to_string()}}});
                rs = super::merge_patch(api, replica_sets(), &rs, patch).await?;
                progressed = true;
            }
            Some(rs)
        }
        None if !paused => {
            let hash = template_hash(&template);
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut rs_selector = spec.get("selector").cloned().unwrap_or(json!({}));
            rs_selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut annotations: Map<String, Value> = deploy
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            annotations.retain(|k, _| {
                k != REVISION && k != "kubectl.kubernetes.io/last-applied-configuration"
            });
            annotations.insert(
                REVISION.into(),
                json!(max_revision.saturating_add(1).to_string()),
            );
            annotations.insert(DESIRED.into(), json!(replicas.to_string()));
            annotations.insert(MAX_REPLICAS.into(), json!((replicas + surge).to_string()));
            // With nothing running yet the new ReplicaSet starts at full size.
            let olds_running: i64 = mine.iter().map(spec_replicas).sum();
            let start = if olds_running == 0 { replicas } else { 0 };
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns,
                             "labels": rs_template["metadata"]["labels"].clone(),
                             "annotations": annotations,
                             "ownerReferences": [owner_ref(&deploy, deployments())]},
                "spec": {"replicas": start, "minReadySeconds": int(spec.get("minReadySeconds")),
                         "selector": rs_selector, "template": rs_template},
            });
            let created = match api
                .create(replica_sets(), Some(ns), rs, &WriteOptions::default())
                .await
            {
                Ok(w) => w.object,
                // Created by an earlier pass whose view was stale: look again soon.
                Err(e) if e.code == 409 => {
                    return Ok(Action::RequeueAfter(Duration::from_millis(200)));
                }
                Err(e) => return Err(e),
            };
            if start > 0 {
                let message = format!(
                    "Scaled up replica set {} to {start} from 0",
                    object::name(&created)
                );
                crate::events::record(
                    api,
                    &deploy,
                    "Normal",
                    "ScalingReplicaSet",
                    &message,
                    COMPONENT,
                )
                .await;
            }
            progressed = true;
            Some(created)
        }
        None => None,
    };
    let mut olds = mine;
    olds.sort_by_key(revision);

    if !paused && let Some(new) = new.as_mut() {
        if strategy == "Recreate" {
            for old in olds.iter_mut().filter(|o| spec_replicas(o) > 0) {
                scale(api, &deploy, old, 0, 0).await?;
                progressed = true;
            }
            let old_pods: i64 = olds.iter().map(|o| status(o, "replicas")).sum();
            if old_pods == 0 && spec_replicas(new) != replicas {
                scale(api, &deploy, new, replicas, 0).await?;
                progressed = true;
            }
        } else {
            // Scale the new ReplicaSet up as far as the surge allows.
            let total: i64 = spec_replicas(new) + olds.iter().map(spec_replicas).sum::<i64>();
            let current = spec_replicas(new);
            let target = if current < replicas {
                let room = (replicas + surge - total).max(0);
                (current + room).min(replicas)
            } else {
                replicas
            };
            if target != current {
                scale(api, &deploy, new, target, surge).await?;
                progressed = true;
            }
            // Scale old ones down as far as availability allows: first their unavailable
            // pods, then available ones, oldest first.
            let min_available = replicas - unavailable;
            let total: i64 = spec_replicas(new) + olds.iter().map(spec_replicas).sum::<i64>();
            let new_unavailable = (spec_replicas(new) - status(new, "availableReplicas")).max(0);
            let mut budget = (total - min_available - new_unavailable).max(0);
            for old in olds.iter_mut() {
                let unhealthy = (spec_replicas(old) - status(old, "availableReplicas")).max(0);
                let cut = unhealthy.min(budget);
                if cut > 0 {
                    let to = spec_replicas(old) - cut;
                    scale(api, &deploy, old, to, surge).await?;
                    budget -= cut;
                    progressed = true;
                }
            }
            let available: i64 = status(new, "availableReplicas")
                + olds
                    .iter()
                    .map(|o| status(o, "availableReplicas").min(spec_replicas(o)))
                    .sum::<i64>();
            let mut budget = (available - min_available).max(0);
            for old in olds.iter_mut() {
                let cut = spec_replicas(old).min(budget);
                if cut > 0 {
                    let to = spec_replicas(old) - cut;
                    scale(api, &deploy, old, to, surge).await?;
                    budget -= cut;
                    progressed = true;
                }
            }
        }
    }

    // Keep at most revisionHistoryLimit empty old ReplicaSets.
    let limit = spec
        .get("revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let empty: Vec<&Value> = olds
        .iter()
        .filter(|o| spec_replicas(o) == 0 && status(o, "replicas") == 0)
        .collect();
    if empty.len() > limit {
        for old in &empty[..empty.len() - limit] {
            match api
                .delete(
                    replica_sets(),
                    Some(ns),
                    object::name(old),
                    &DeleteOptions::default(),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }

    // Status.
    let all: Vec<&Value> = new.iter().chain(olds.iter()).collect();
    let sum = |f: &str| all.iter().map(|rs| status(rs, f)).sum::<i64>();
    let (total, ready, available) = (
        sum("replicas"),
        sum("readyReplicas"),
        sum("availableReplicas"),
    );
    let updated = new.as_ref().map_or(0, |n| status(n, "replicas"));
    let new_name = new.as_ref().map(|n| object::name(n).to_string());
    let complete = new.as_ref().is_some_and(|n| {
        updated == replicas
            && status(n, "availableReplicas") == replicas
            && total == replicas
            && status(n, "observedGeneration") >= int(n.pointer("/metadata/generation"))
    });
    let now = object::now();
    let old_conditions: Vec<Value> = deploy
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let previous = |kind: &str| old_conditions.iter().find(|c| c["type"] == kind).cloned();
    let available_condition = if available >= replicas - unavailable {
        condition(
            previous("Available"),
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &now,
        )
    } else {
        condition(
            previous("Available"),
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &now,
        )
    };
    let deadline = spec
        .get("progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600);
    let rs_name = new_name.clone().unwrap_or_default();
    let last_progress = previous("Progressing");
    let mut requeue = None;
    let progressing = if paused {
        condition(
            last_progress,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            &now,
        )
    } else if complete {
        condition(
            last_progress,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            &now,
        )
    } else if progressed
        || last_progress.as_ref().is_none_or(|c| {
            c["reason"] == "NewReplicaSetAvailable" || c["reason"] == "DeploymentPaused"
        })
    {
        requeue = Some(crate::clock::seconds(deadline.max(1)));
        let mut c = condition(
            last_progress,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
            &now,
        );
        c["lastUpdateTime"] = json!(now);
        c
    } else {
        let last = last_progress.clone().unwrap_or_default();
        let since = last["lastUpdateTime"].as_str().and_then(object::parse_time);
        let elapsed = since.map_or(0, |t| {
            crate::clock::elapsed_seconds(t, jiff::Timestamp::now())
        });
        if last["reason"] == "ProgressDeadlineExceeded" || elapsed >= deadline {
            condition(
                Some(last),
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                &now,
            )
        } else {
            requeue = Some(crate::clock::seconds(
                deadline.saturating_sub(elapsed).max(1),
            ));
            last
        }
    };
    let revision_now = new.as_ref().map(revision).unwrap_or(max_revision);
    let new_status = json!({
        "observedGeneration": int(deploy.pointer("/metadata/generation")),
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (total.max(replicas) - available).max(0),
        "conditions": [available_condition, progressing],
    });
    if deploy.get("status") != Some(&new_status)
        && !super::write_status(api, deployments(), ns, name, new_status).await?
    {
        return Ok(Action::Await);
    }
    let annotated = deploy
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str);
    if revision_now > 0 && annotated != Some(revision_now.to_string().as_str()) {
        let patch = json!({"metadata": {"annotations": {REVISION: revision_now.to_string()}}});
        super::merge_patch(api, deployments(), &deploy, patch).await?;
    }
    Ok(requeue.map_or(Action::Await, Action::RequeueAfter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hashes_ignore_their_own_label_and_key_order() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let b = json!({"spec": {"containers": [{"image": "x", "name": "c"}]},
                       "metadata": {"labels": {"app": "web", HASH_LABEL: "abc"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        let c = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "y"}]}});
        assert_ne!(template_hash(&a), template_hash(&c));
        assert!(
            template_hash(&a)
                .chars()
                .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch))
        );
    }

    #[test]
    fn rolling_update_bounds_resolve_like_upstream() {
        assert_eq!(resolve(None, "25%", 10, true), 3);
        assert_eq!(resolve(None, "25%", 10, false), 2);
        assert_eq!(resolve(Some(&json!(1)), "25%", 10, true), 1);
        assert_eq!(resolve(Some(&json!("50%")), "25%", 3, true), 2);
        assert_eq!(resolve(Some(&json!("50%")), "25%", 3, false), 1);
    }

    #[test]
    fn extreme_bounds_and_revisions_saturate() {
        use crate::clock::tests::EXTREMES;
        let values = [
            json!("99999999999999999999999%"),
            json!("9223372036854775807%"),
            json!("100%"),
            json!("0%"),
            json!("%"),
            json!("-5%"),
            json!("1e300"),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!(null),
        ];
        for v in &values {
            for &replicas in EXTREMES {
                for up in [true, false] {
                    let n = resolve(Some(v), "25%", replicas, up);
                    assert!((0..=i64::from(i32::MAX)).contains(&n), "{v} {replicas}");
                }
            }
        }
        assert_eq!(
            resolve(Some(&json!("100%")), "25%", i64::from(i32::MAX), true),
            i64::from(i32::MAX)
        );
        // A revision annotation at the end of int64 (tenants can write annotations).
        let rs = json!({"metadata": {"annotations": {REVISION: i64::MAX.to_string()}}});
        assert_eq!(revision(&rs).saturating_add(1), i64::MAX);
        let junk = json!({"metadata": {"annotations": {REVISION: "99999999999999999999999"}}});
        assert_eq!(revision(&junk), 0);
    }
}
