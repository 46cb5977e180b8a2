//! Object lifecycle rules: what create and update may touch, the Scale view, and graceful and
//! finalizer-driven deletion (the finalizers of owner propagation included; the garbage
//! collector and the namespace controller do the rest).

use serde_json::{Map, Value, json};
use skiff_api::labels::Selector;
use skiff_api::validation::FieldError;

use super::object::{self, meta_mut};
use super::resources::ResourceDef;
use super::{ApiError, DeleteOptions, Result, Target};

/// Resets what a client may not set on create.
pub(super) fn prepare_create(res: &ResourceDef, obj: &mut Value) {
    let o = obj.as_object_mut().expect("checked object");
    match res.kind {
        "Pod" => {
            o.insert("status".into(), json!({"phase": "Pending"}));
            let qos = qos_class(o.get("spec"));
            o["status"]["qosClass"] = json!(qos);
        }
        "Namespace" => {
            o.insert("status".into(), json!({"phase": "Active"}));
            // The namespace controller's: cleared once the namespace is empty.
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                let list = spec.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut()
                    && !a.iter().any(|f| f == "kubernetes")
                {
                    a.push(json!("kubernetes"));
                }
            }
        }
        // Nodes report their own status when they register; events and the rest have none.
        "Node" => {}
        _ if res.status => {
            o.remove("status");
        }
        _ => {}
    }
}

/// Kubernetes' QoS class from the containers' requests and limits.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec.and_then(|s| s.get(*f)).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            any |= l.is_some() || q.is_some();
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Carries over what an update may not change and splits spec from status writes.
pub(super) fn prepare_update(
    res: &ResourceDef,
    target: Target,
    cur: &Value,
    new: &mut Value,
) -> Result<()> {
    let cur_meta = object::meta(cur).cloned().unwrap_or_default();
    let new_uid = object::uid(new).to_string();
    if !new_uid.is_empty() && new_uid != object::uid(cur) {
        return Err(ApiError::conflict_because(
            res,
            object::name(cur),
            &format!(
                "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {}",
                object::uid(cur)
            ),
        ));
    }
    match target {
        Target::Status | Target::Finalize => {
            let mut merged = cur.clone();
            if target == Target::Status {
                match new.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        merged.as_object_mut().expect("object").remove("status");
                    }
                }
            } else {
                merged["spec"]["finalizers"] = new
                    .pointer("/spec/finalizers")
                    .cloned()
                    .unwrap_or(json!([]));
            }
            // Bindings set spec.nodeName through the status path.
            if res.kind == "Pod"
                && let Some(node) = new
                    .pointer("/spec/nodeName")
                    .filter(|n| cur.pointer("/spec/nodeName").is_none() && n.is_string())
            {
                merged["spec"]["nodeName"] = node.clone();
            }
            *new = merged;
            return Ok(());
        }
        Target::Main | Target::Scale => {}
    }
    let m = meta_mut(new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    // Writers that do not send managedFields keep the recorded ones (server-side apply's).
    if m.get("managedFields")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        match cur_meta.get("managedFields") {
            Some(v) => m.insert("managedFields".into(), v.clone()),
            None => m.remove("managedFields"),
        };
    }
    m.remove("selfLink");
    if object::is_terminating(cur) {
        let old: Vec<String> = object::finalizers(cur);
        let added: Vec<String> = object::finalizers(new)
            .into_iter()
            .filter(|f| !old.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                res,
                object::name(cur),
                &[FieldError::forbidden(
                    "metadata.finalizers",
                    &format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                )],
            ));
        }
    }
    if res.status {
        let o = new.as_object_mut().expect("object");
        match cur.get("status") {
            Some(s) => o.insert("status".into(), s.clone()),
            None => o.remove("status"),
        };
    }
    if res.generation && cur.get("spec") != new.get("spec") {
        let g = object::meta(cur)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(new).insert("generation".into(), json!(g + 1));
    }
    Ok(())
}

/// The autoscaling/v1 Scale of a scalable object.
pub(super) fn scale_of(res: &ResourceDef, obj: &Value) -> Value {
    let m = object::meta(obj).cloned().unwrap_or_default();
    let pick = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    let selector = match res.kind {
        "ReplicationController" => obj
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|s| {
                s.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        _ => obj
            .pointer("/spec/selector")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .and_then(|s| Selector::from_label_selector(&s).ok())
            .map(|s| s.to_string())
            .unwrap_or_default(),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// Copies a Scale's `spec.replicas` (and its resourceVersion precondition) onto the object.
pub(super) fn apply_scale(res: &ResourceDef, cur: &Value, scale: &Value) -> Result<Value> {
    let name = object::name(cur);
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!("Scale in version \"v1\" cannot be handled as a Scale: spec.replicas must be an integer, got {v}"))
        })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            res,
            name,
            &[FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut new = cur.clone();
    new["spec"]["replicas"] = json!(replicas);
    let rv = object::meta_str(scale, "resourceVersion");
    if !rv.is_empty() {
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
    }
    Ok(new)
}

/// Sets a status condition, updating the transition time only when the status changes.
pub(super) fn set_condition(
    obj: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let now = object::now();
    let conditions = obj["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])))
        .and_then(Value::as_array_mut);
    let Some(conditions) = conditions else { return };
    let mut cond = Map::new();
    cond.insert("type".into(), json!(kind));
    cond.insert("status".into(), json!(status));
    cond.insert("lastProbeTime".into(), Value::Null);
    cond.insert("lastTransitionTime".into(), json!(now));
    if let Some(r) = reason {
        cond.insert("reason".into(), json!(r));
    }
    if let Some(m) = message {
        cond.insert("message".into(), json!(m));
    }
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) if existing["status"] == status => {
            let keep = existing["lastTransitionTime"].clone();
            *existing = Value::Object(cond);
            existing["lastTransitionTime"] = keep;
        }
        Some(existing) => *existing = Value::Object(cond),
        None => conditions.push(Value::Object(cond)),
    }
}

/// True when a terminating object has nothing left to wait for: no finalizers (for namespaces,
/// none in `spec.finalizers` either) and no grace period running.
pub(super) fn deletion_ready(res: &ResourceDef, obj: &Value) -> bool {
    let grace = object::meta(obj)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let spec_finalizers = obj
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    object::is_terminating(obj)
        && object::finalizers(obj).is_empty()
        && grace == 0
        && !(res.kind == "Namespace" && spec_finalizers)
}

/// How dependents of a deleted owner are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Propagation {
    /// Delete the owner now, dependents afterwards.
    Background,
    /// Delete dependents first, then the owner.
    Foreground,
    /// Keep dependents, removing their owner references.
    Orphan,
}

/// What a delete request turns into.
pub(super) struct DeletePlan {
    /// `Some(object)` when the object is only marked terminating.
    pub terminating: Option<Value>,
}

pub(super) fn plan_delete(
    res: &ResourceDef,
    cur: &Value,
    opts: &DeleteOptions,
) -> Result<DeletePlan> {
    let name = object::name(cur);
    if res.kind == "Namespace" && ["default", "kube-system", "kube-public"].contains(&name) {
        return Err(ApiError::forbidden(
            res,
            name,
            "this namespace may not be deleted",
        ));
    }
    let propagation = match opts.propagation_policy.as_deref() {
        None | Some("") | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let mut marked = cur.clone();
    let mut terminating = false;
    let now = object::now();
    let set_deletion = |obj: &mut Value, grace: i64, at: String| {
        let m = meta_mut(obj);
        if !m.contains_key("deletionTimestamp") || m["deletionTimestamp"].is_null() {
            m.insert("deletionTimestamp".into(), json!(at));
        }
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    };
    if res.kind == "Namespace" {
        if deletion_ready(res, cur) {
            return Ok(DeletePlan { terminating: None });
        }
        set_deletion(&mut marked, 0, now.clone());
        marked["status"]["phase"] = json!("Terminating");
        return Ok(DeletePlan {
            terminating: Some(marked),
        });
    }
    // Pods on a node terminate gracefully: the agent stops them, then completes the delete.
    if res.kind == "Pod"
        && cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
    {
        let spec_grace = cur
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let grace = opts.grace_period_seconds.unwrap_or(spec_grace).max(0);
        let phase = cur
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let current = object::meta(cur)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64);
        if grace > 0
            && phase != "Succeeded"
            && phase != "Failed"
            && current.is_none_or(|c| grace < c)
        {
            // A grace period beyond the range of time ends at its last moment.
            let at = crate::clock::saturating_add_seconds(jiff::Timestamp::now(), grace);
            set_deletion(
                &mut marked,
                grace,
                at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
            terminating = true;
        } else if current.is_some() && grace > 0 && phase != "Succeeded" && phase != "Failed" {
            return Ok(DeletePlan {
                terminating: Some(cur.clone()),
            });
        }
    }
    let extra = match propagation {
        Propagation::Foreground => Some("foregroundDeletion"),
        Propagation::Orphan => Some("orphan"),
        Propagation::Background => None,
    };
    // Any kind may own objects: the garbage collector removes the finalizer once it has seen to
    // the dependents (at once when there are none).
    if let Some(f) = extra {
        let m = meta_mut(&mut marked);
        let list = m.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut()
            && !a.iter().any(|x| x == f)
        {
            a.push(json!(f));
        }
    }
    if !object::finalizers(&marked).is_empty() {
        if !terminating {
            set_deletion(&mut marked, 0, now);
        }
        terminating = true;
    }
    Ok(DeletePlan {
        terminating: terminating.then_some(marked),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::api::{Api, Config, DeleteOptions, WriteOptions, object, resources};
    use crate::store::{SledConfig, SledStore};

    #[tokio::test]
    async fn grace_periods_beyond_the_range_of_time_end_at_its_last_moment() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
        let api = Api::new(Arc::new(store), Config::default());
        api.bootstrap().await.unwrap();
        let pods = resources::core("pods");
        let cases = [
            ("spec-max", Some(i64::MAX), None),
            ("option-max", Some(30), Some(i64::MAX)),
            ("option-min", Some(i64::MAX), Some(i64::MIN)),
        ];
        for (name, spec_grace, option) in cases {
            let pod = json!({"metadata": {"name": name}, "spec": {"nodeName": "edge",
                "terminationGracePeriodSeconds": spec_grace,
                "containers": [{"name": "c", "image": "x"}]}});
            api.create(pods, Some("default"), pod, &WriteOptions::default())
                .await
                .unwrap();
            let opts = DeleteOptions {
                grace_period_seconds: option,
                ..Default::default()
            };
            api.delete(pods, Some("default"), name, &opts)
                .await
                .unwrap();
            match api.get(pods, Some("default"), name) {
                Ok(left) => {
                    // Terminating until the node stops it, at the end of time at the latest.
                    assert_eq!(
                        object::meta_str(&left, "deletionTimestamp"),
                        jiff::Timestamp::MAX
                            .strftime("%Y-%m-%dT%H:%M:%SZ")
                            .to_string(),
                        "{name}"
                    );
                    assert_eq!(left["metadata"]["deletionGracePeriodSeconds"], i64::MAX);
                }
                // A negative grace period deletes at once.
                Err(e) => assert_eq!((name, e.code), ("option-min", 404)),
            }
        }
    }
}
