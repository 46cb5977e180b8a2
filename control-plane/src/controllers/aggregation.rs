//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` holds the
//! rules of every other ClusterRole its selectors match (in name order per selector, each rule
//! once), kept current as labelled roles come, change and go. `admin`, `edit` and `view` are
//! built this way, so a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view`
//! extends what every viewer may do.

use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use skiff_api::labels::Selector;

use super::runner::{Action, Key, Reconciler};
use crate::api::resources::{self, ResourceDef};
use crate::api::{Api, ApiError, ListOptions, object};

fn cluster_roles() -> &'static ResourceDef {
    resources::find(crate::auth::RBAC_GROUP, "v1", "clusterroles").expect("served")
}

fn selectors(role: &Value) -> Vec<Selector> {
    role.pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| serde_json::from_value(s.clone()).ok())
        .filter_map(|s| Selector::from_label_selector(&s).ok())
        .collect()
}

/// The rules `role` aggregates from `all` ClusterRoles, or `None` when it aggregates nothing.
pub fn aggregated_rules(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    role.get("aggregationRule").filter(|a| !a.is_null())?;
    let me = object::name(role);
    let mut seen = std::collections::HashSet::new();
    let mut rules: Vec<Value> = Vec::new();
    for selector in selectors(role) {
        let mut matching: Vec<&Value> = all
            .iter()
            .filter(|r| object::name(r) != me && selector.matches_json(object::labels(r)))
            .collect();
        matching.sort_by_key(|r| object::name(r));
        for source in matching {
            if !seen.insert(object::name(source)) {
                continue;
            }
            for rule in source["rules"].as_array().into_iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

async fn reconcile_one(api: &Api, name: &str) -> Result<bool, ApiError> {
    let res = cluster_roles();
    let role = match api.get(res, None, name) {
        Ok(r) => r,
        Err(e) if e.code == 404 => return Ok(false),
        Err(e) => return Err(e),
    };
    let all = api.list(res, None, &ListOptions::default())?.items;
    let Some(rules) = aggregated_rules(&role, &all) else {
        return Ok(false);
    };
    let current = role["rules"].as_array().cloned().unwrap_or_default();
    if current == rules {
        return Ok(false);
    }
    super::merge_patch(api, res, &role, json!({"rules": rules})).await?;
    Ok(true)
}

/// Aggregates every aggregated ClusterRole until nothing changes (chains like view → edit →
/// admin settle in a few passes), so the defaults are complete before the API serves.
pub async fn aggregate_all(api: &Api) -> Result<(), ApiError> {
    for _pass in 0..8 {
        let mut changed = false;
        for role in api
            .list(cluster_roles(), None, &ListOptions::default())?
            .items
        {
            changed |= reconcile_one(api, object::name(&role)).await?;
        }
        if !changed {
            break;
        }
    }
    Ok(())
}

/// Keeps aggregated ClusterRoles' rules current.
pub struct Aggregation;

impl Reconciler for Aggregation {
    fn primary(&self) -> &'static ResourceDef {
        cluster_roles()
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        Vec::new()
    }

    /// Every ClusterRole event wakes the aggregated roles whose selectors match its labels,
    /// before or after the change.
    fn related(&self) -> Vec<&'static ResourceDef> {
        vec![cluster_roles()]
    }

    fn relates(&self, primary: &Value, _res: &'static ResourceDef, labels: &Value) -> bool {
        selectors(primary)
            .iter()
            .any(|s| s.matches_json(Some(labels).filter(|l| !l.is_null())))
    }

    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
        _object: Option<Arc<Value>>,
    ) -> BoxFuture<'a, Result<Action, ApiError>> {
        async move {
            reconcile_one(api, &key.1).await?;
            Ok(Action::Await)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: Value, rules: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "rules": rules})
    }

    #[test]
    fn aggregates_matching_roles_in_name_order_without_duplicates() {
        let view = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}, "rules": []});
        let get_pods = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        let get_cms = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]});
        let label = json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"});
        let all = vec![
            view.clone(),
            role("z-extra", label.clone(), json!([get_cms, get_pods])),
            role("a-base", label, json!([get_pods])),
            role(
                "unlabelled",
                json!({}),
                json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
            ),
        ];
        assert_eq!(
            aggregated_rules(&view, &all),
            Some(vec![get_pods.clone(), get_cms.clone()])
        );
        assert_eq!(aggregated_rules(&all[1], &all), None, "not aggregated");
        // A role matching its own selector does not feed itself.
        let selfish = json!({"metadata": {"name": "s", "labels": {"x": "y"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}, "rules": [get_pods]});
        assert_eq!(
            aggregated_rules(&selfish, std::slice::from_ref(&selfish)),
            Some(vec![])
        );
    }
}
