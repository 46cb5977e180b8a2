//! Conversion between served versions that share storage (HPA autoscaling/v1 ↔ v2; v2 is the
//! storage version).

use serde_json::{Value, json};

use super::resources::ResourceDef;

/// True when `res` is served in a version other than its storage version.
pub fn needs_conversion(res: &ResourceDef) -> bool {
    res.kind == "HorizontalPodAutoscaler" && res.version == "v1"
}

/// Converts an admitted object of `res`'s version into the storage version.
pub fn to_storage(res: &ResourceDef, mut obj: Value) -> Value {
    if needs_conversion(res) {
        obj["apiVersion"] = json!("autoscaling/v2");
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            && let Some(target) = spec.remove("targetCPUUtilizationPercentage")
        {
            spec.insert(
                    "metrics".into(),
                    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
                );
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
            && let Some(current) = status.remove("currentCPUUtilizationPercentage")
        {
            status.insert(
                    "currentMetrics".into(),
                    json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
                );
        }
    }
    obj
}

/// Converts a stored object into `res`'s version.
pub fn from_storage(res: &ResourceDef, mut obj: Value) -> Value {
    if needs_conversion(res) {
        obj["apiVersion"] = json!("autoscaling/v1");
        let cpu = |list: Option<Value>, field: &str| {
            list.and_then(|m| m.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                .and_then(|m| m["resource"][field]["averageUtilization"].as_i64())
        };
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            let target = cpu(spec.remove("metrics"), "target");
            spec.remove("behavior");
            if let Some(t) = target {
                spec.insert("targetCPUUtilizationPercentage".into(), json!(t));
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            let current = cpu(status.remove("currentMetrics"), "current");
            status.remove("conditions");
            if let Some(c) = current {
                status.insert("currentCPUUtilizationPercentage".into(), json!(c));
            }
        }
    }
    obj
}
