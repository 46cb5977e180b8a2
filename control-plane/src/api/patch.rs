//! PATCH: RFC 6902 JSON patch, RFC 7386 merge patch and Kubernetes strategic merge patch.
//!
//! Strategic merge patch merges lists by a key that depends on the field's type; the table in
//! `list_strategy` holds those keys for the served kinds, looked up by field path.

use serde_json::{Map, Value, json};

use super::error::{ApiError, Result};

/// The patch formats, by request Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Maps a Content-Type (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies `patch` of `kind` to `doc` (an object of Kubernetes kind `kind`).
pub fn apply(doc: &mut Value, patch_type: PatchType, patch: &Value, kind: &str) -> Result<()> {
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("the server rejected our request due to an error in our request: invalid JSON patch: {e}")))?;
            json_patch::patch(doc, &ops).map_err(|e| {
                ApiError::internal(format!("json patch failed: {e}")).into_unprocessable()
            })
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchType::Strategic | PatchType::Apply => {
            let (Some(d), Some(p)) = (doc.as_object_mut(), patch.as_object()) else {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            };
            merge_map(d, p, &mut Vec::new(), kind)
        }
    }
}

impl ApiError {
    /// Upstream answers 422 for a JSON patch that cannot apply (missing path, failed test).
    fn into_unprocessable(mut self) -> Self {
        self.code = 422;
        self.reason = "Invalid";
        self.message = self.message.replace("Internal error occurred: ", "");
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    Replace,
    MergeKey(&'static str),
    Primitive,
}

/// The patch strategy of the list at `path` (field names from the object root, no indices).
fn list_strategy(path: &[String], kind: &str) -> ListStrategy {
    use ListStrategy::*;
    let field = path.last().map(String::as_str).unwrap_or("");
    let parent = path
        .len()
        .checked_sub(2)
        .map(|i| path[i].as_str())
        .unwrap_or("");
    let in_container = path.iter().any(|p| {
        matches!(
            p.as_str(),
            "containers" | "initContainers" | "ephemeralContainers"
        )
    });
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => MergeKey("name"),
        "volumes" if parent == "spec" => MergeKey("name"),
        "imagePullSecrets" | "schedulingGates" | "resourceClaims" => MergeKey("name"),
        "hostAliases" => MergeKey("ip"),
        "topologySpreadConstraints" => MergeKey("topologyKey"),
        "ports" if in_container => MergeKey("containerPort"),
        "ports" if kind == "Service" && parent == "spec" => MergeKey("port"),
        "env" => MergeKey("name"),
        "volumeMounts" => MergeKey("mountPath"),
        "volumeDevices" => MergeKey("devicePath"),
        "secrets" if kind == "ServiceAccount" => MergeKey("name"),
        "ownerReferences" if parent == "metadata" => MergeKey("uid"),
        "finalizers" if parent == "metadata" => Primitive,
        "podCIDRs" => Primitive,
        "conditions" if parent == "status" => MergeKey("type"),
        "addresses" if kind == "Node" && parent == "status" => MergeKey("type"),
        "podIPs" | "hostIPs" if parent == "status" => MergeKey("ip"),
        _ => Replace,
    }
}

fn is_directive(k: &str) -> bool {
    k.starts_with('$')
}

/// Removes patch directives from a value that is inserted as-is.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_directive(k))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none())
                .map(clean)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    kind: &str,
) -> Result<()> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *orig = clean(&Value::Object(patch.clone()))
                .as_object()
                .cloned()
                .unwrap_or_default();
            return Ok(());
        }
        Some("delete") | Some("merge") | None => {}
        Some(other) => return Err(bad(format!("Unknown patch type: {other}"))),
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = pv
                .as_array()
                .cloned()
                .ok_or_else(|| bad(format!("{k} must be a list")))?;
            orders.push((field.to_string(), order));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if is_directive(k) {
            continue;
        }
        path.push(k.clone());
        match pv {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    orig.remove(k);
                } else {
                    match orig.get_mut(k) {
                        Some(Value::Object(om)) => merge_map(om, pm, path, kind)?,
                        _ => {
                            let mut fresh = Map::new();
                            merge_map(&mut fresh, pm, path, kind)?;
                            orig.insert(k.clone(), Value::Object(fresh));
                        }
                    }
                }
            }
            Value::Array(pl) => {
                let merged = match (list_strategy(path, kind), orig.remove(k)) {
                    (ListStrategy::MergeKey(key), Some(Value::Array(ol))) => {
                        merge_list(ol, pl, key, path, kind)?
                    }
                    (ListStrategy::Primitive, Some(Value::Array(mut ol))) => {
                        for v in pl {
                            if !ol.contains(v) {
                                ol.push(v.clone());
                            }
                        }
                        ol
                    }
                    (ListStrategy::MergeKey(key), _) => {
                        merge_list(Vec::new(), pl, key, path, kind)?
                    }
                    _ => clean(pv).as_array().cloned().unwrap_or_default(),
                };
                orig.insert(k.clone(), Value::Array(merged));
            }
            other => {
                orig.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
    for (field, order) in orders {
        path.push(field.clone());
        let strategy = list_strategy(path, kind);
        path.pop();
        if let Some(Value::Array(list)) = orig.get_mut(&field) {
            reorder(list, &order, strategy);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list(
    mut orig: Vec<Value>,
    patch: &[Value],
    key: &str,
    path: &mut Vec<String>,
    kind: &str,
) -> Result<Vec<Value>> {
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .map(clean)
            .collect());
    }
    for pe in patch {
        let Some(pm) = pe.as_object() else {
            return Err(bad(format!(
                "expected a list of objects merged by {key:?}, found {pe}"
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(bad(format!(
                "map: {pe} does not contain declared merge key: {key}"
            )));
        };
        let pos = orig.iter().position(|o| o.get(key) == Some(kv));
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            orig.retain(|o| o.get(key) != Some(kv));
            continue;
        }
        match pos.and_then(|i| orig[i].as_object_mut()) {
            Some(om) => merge_map(om, pm, path, kind)?,
            None => {
                let mut fresh = Map::new();
                merge_map(&mut fresh, pm, path, kind)?;
                orig.push(Value::Object(fresh));
            }
        }
    }
    Ok(orig)
}

/// Applies `$setElementOrder`: listed elements take the given order; elements the patch did not
/// list (server-side additions) keep their positions relative to the listed ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let ident = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeKey(key) => v.get(key).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&ident).collect();
    let mut listed: Vec<Value> = Vec::new();
    for w in &wanted {
        if let Some(v) = list.iter().find(|v| ident(v) == *w) {
            listed.push(v.clone());
        }
    }
    let mut out = Vec::with_capacity(list.len());
    let mut next_listed = listed.into_iter();
    for v in list.iter() {
        if wanted.contains(&ident(v)) {
            if let Some(l) = next_listed.next() {
                out.push(l);
            }
        } else {
            out.push(v.clone());
        }
    }
    *list = out;
}

/// The set of fields an applied configuration names, in `FieldsV1` form (`f:<field>`,
/// `k:<merge key JSON>` for keyed list items, `v:<value>` for set items), as server-side apply
/// records them in `managedFields`.
pub fn fields_of(applied: &Value, kind: &str) -> Value {
    fn walk(v: &Value, path: &mut Vec<String>, kind: &str) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, child) in m {
                    if path.is_empty() && (k == "apiVersion" || k == "kind") || is_directive(k) {
                        continue;
                    }
                    path.push(k.clone());
                    out.insert(format!("f:{k}"), walk(child, path, kind));
                    path.pop();
                }
                Value::Object(out)
            }
            Value::Array(items) => match list_strategy(path, kind) {
                ListStrategy::MergeKey(key) => {
                    let mut out = Map::new();
                    for item in items {
                        if let Some(kv) = item.get(key) {
                            let mut fields = walk(item, path, kind);
                            fields["."] = json!({});
                            out.insert(format!("k:{}", json!({ key: kv })), fields);
                        }
                    }
                    Value::Object(out)
                }
                ListStrategy::Primitive => Value::Object(
                    items
                        .iter()
                        .map(|i| (format!("v:{i}"), json!({})))
                        .collect(),
                ),
                ListStrategy::Replace => json!({}),
            },
            _ => json!({}),
        }
    }
    walk(applied, &mut Vec::new(), kind)
}

/// Removes from `live` what a manager applied before (`previous`) but no longer applies
/// (`current`): server-side apply's way of deleting fields dropped from a manifest.
pub fn remove_dropped(live: &mut Value, previous: &Value, current: &Value) {
    let (Some(prev), Some(cur)) = (previous.as_object(), current.as_object()) else {
        return;
    };
    for (field, sub) in prev {
        let kept = cur.get(field);
        if let Some(name) = field.strip_prefix("f:") {
            let Some(obj) = live.as_object_mut() else {
                continue;
            };
            match kept {
                None => {
                    obj.remove(name);
                }
                Some(kept) => {
                    if let Some(child) = obj.get_mut(name) {
                        remove_dropped(child, sub, kept);
                    }
                }
            }
        } else if let Some(key) = field.strip_prefix("k:") {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
                continue;
            };
            let Some(list) = live.as_array_mut() else {
                continue;
            };
            let matches = |item: &Value| key.iter().all(|(k, v)| item.get(k) == Some(v));
            match kept {
                None => list.retain(|item| !matches(item)),
                Some(kept) => {
                    if let Some(item) = list.iter_mut().find(|i| matches(i)) {
                        remove_dropped(item, sub, kept);
                    }
                }
            }
        } else if let Some(value) = field.strip_prefix("v:") {
            let (Ok(value), None, Some(list)) = (
                serde_json::from_str::<Value>(value),
                kept,
                live.as_array_mut(),
            ) else {
                continue;
            };
            list.retain(|item| *item != value);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn smp(mut doc: Value, patch: Value, kind: &str) -> Value {
        apply(&mut doc, PatchType::Strategic, &patch, kind).unwrap();
        doc
    }

    #[test]
    fn set_image_merges_containers_by_name() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}]}}}});
        let out = smp(
            doc,
            json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b:2"}]}}}}),
            "Deployment",
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            cs[0],
            json!({"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]})
        );
        assert_eq!(cs[1], json!({"name": "b", "image": "b:2"}));
    }

    #[test]
    fn delete_directive_and_null_removal() {
        let doc = json!({"spec": {"containers": [{"name": "api", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]},
                         "metadata": {"labels": {"x": "1", "y": "2"}}});
        let out = smp(
            doc,
            json!({
                "metadata": {"labels": {"y": null}},
                "spec": {"containers": [{"name": "api", "$setElementOrder/env": [{"name": "A"}], "env": [{"$patch": "delete", "name": "B"}]}]}
            }),
            "Pod",
        );
        assert_eq!(out["metadata"]["labels"], json!({"x": "1"}));
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
    }

    #[test]
    fn lists_without_strategy_are_replaced_and_primitives_merge() {
        let doc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "c", "args": ["1", "2"]}]}});
        let out = smp(
            doc,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "c", "args": ["3"]}]}}),
            "Pod",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
        let out = smp(
            out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
            "Pod",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn service_ports_merge_by_port_and_retain_keys() {
        let doc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
                                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            doc.clone(),
            json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
            "Service",
        );
        assert_eq!(
            out["spec"]["ports"][1],
            json!({"port": 443, "name": "https", "targetPort": 8443})
        );
        let out = smp(
            doc,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            "Deployment",
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn server_side_apply_forgets_dropped_fields() {
        let first = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [
            {"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}});
        let second = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [
            {"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]}]}});
        let (f1, f2) = (fields_of(&first, "Pod"), fields_of(&second, "Pod"));
        assert!(
            f1["f:spec"]["f:containers"]
                .get(r#"k:{"name":"c"}"#)
                .is_some(),
            "{f1}"
        );
        // The live object also carries fields set by others (the node name, another label).
        let mut live = first.clone();
        live["metadata"]["labels"]["other"] = json!("kept");
        live["spec"]["nodeName"] = json!("n1");
        remove_dropped(&mut live, &f1, &f2);
        assert_eq!(
            live["metadata"]["labels"],
            json!({"a": "1", "other": "kept"})
        );
        assert_eq!(
            live["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(live["spec"]["nodeName"], "n1");
    }

    #[test]
    fn json_and_merge_patches() {
        let mut doc = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"replicas": 1}});
        apply(
            &mut doc,
            PatchType::Json,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
            "Deployment",
        )
        .unwrap();
        apply(
            &mut doc,
            PatchType::Merge,
            &json!({"metadata": {"annotations": {"a": null, "b": "2"}}}),
            "Deployment",
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"b": "2"}}, "spec": {"replicas": 3}})
        );
        let err = apply(
            &mut doc,
            PatchType::Json,
            &json!([{"op": "remove", "path": "/nope"}]),
            "Deployment",
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }
}
