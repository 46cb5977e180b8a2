//! The controller manager: loops that compare what objects ask for with what exists and close
//! the gap, each driven by store watches through [`runner`]. Every controller holds only its
//! logic.

pub mod cronjob;
pub mod deployment;
pub mod job;
pub mod nodes;
pub mod replicaset;
pub mod runner;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::resources::ResourceDef;
use crate::api::{Api, object};

/// Runs every controller until `stop`.
pub async fn run(api: Api, node_lifecycle: nodes::Settings, stop: CancellationToken) {
    tokio::join!(
        nodes::run(api.clone(), node_lifecycle, stop.clone()),
        runner::run(
            api.clone(),
            replicaset::ReplicaSets::apps_v1(),
            stop.clone()
        ),
        runner::run(
            api.clone(),
            replicaset::ReplicaSets::core_v1(),
            stop.clone()
        ),
        runner::run(api.clone(), deployment::Deployments, stop.clone()),
        runner::run(api.clone(), job::Jobs, stop.clone()),
        runner::run(api.clone(), cronjob::CronJobs, stop.clone()),
    );
}

/// A controller reference to `owner` (of kind `res`), as dependents carry it.
pub fn owner_ref(owner: &Value, res: &ResourceDef) -> Value {
    json!({
        "apiVersion": res.api_version(), "kind": res.kind,
        "name": object::name(owner), "uid": object::uid(owner),
        "controller": true, "blockOwnerDeletion": true,
    })
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a pod is Ready.
pub fn pod_ready(pod: &Value) -> bool {
    !object::is_terminating(pod) && ready_condition(pod).is_some()
}

/// Whether a pod has been Ready for at least `min_ready_seconds`.
pub fn pod_available(pod: &Value, min_ready_seconds: i64) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_condition(pod)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(object::parse_time)
        .is_some_and(|since| (jiff::Timestamp::now() - since).get_seconds() >= min_ready_seconds)
}

/// A status condition, keeping `previous`'s transition time when the status is unchanged and
/// its update time when nothing changed at all.
pub fn condition(
    previous: Option<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let prev = previous.unwrap_or_default();
    let same_status = prev["status"] == status;
    let unchanged = same_status && prev["reason"] == reason && prev["message"] == message;
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": if same_status { prev["lastTransitionTime"].clone() } else { json!(now) },
        "lastUpdateTime": if unchanged { prev["lastUpdateTime"].clone() } else { json!(now) },
    })
}
