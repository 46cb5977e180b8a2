//! Events: what the in-process components tell users about the objects they act on
//! (`kubectl describe` and `kubectl get events` show them).

use serde_json::{Value, json};

use crate::api::{Api, WriteOptions, object, resources};

/// Records an Event about `involved` (any namespaced object) from `component`. Failing to
/// record one is logged and otherwise ignored, as in Kubernetes.
pub async fn record(
    api: &Api,
    involved: &Value,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let (ns, name) = (object::namespace(involved), object::name(involved));
    let now = jiff::Timestamp::now();
    let ts = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", now.as_nanosecond()), "namespace": ns},
        "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                           "namespace": ns, "name": name,
                           "uid": involved.pointer("/metadata/uid")},
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": ts, "lastTimestamp": ts,
        "source": {"component": component},
        "reportingComponent": component,
    });
    if let Err(e) = api
        .create(
            resources::core("events"),
            Some(ns),
            event,
            &WriteOptions::default(),
        )
        .await
    {
        tracing::debug!(%reason, error = %e.message, "cannot record event");
    }
}
