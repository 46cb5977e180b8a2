//! ResourceQuota: what a namespace's objects use of each resource a quota names, and the
//! admission check that refuses a create which would exceed a quota, with upstream's messages.
//!
//! Checks and the write they admit are serialized per namespace (one API server holds the
//! store), and usage is counted afresh from the store under that lock, so two racing creates
//! cannot both take the last unit of a quota.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use skiff_api::quantity;
use skiff_api::validation::FieldError;
use tokio::sync::OwnedMutexGuard;

use super::resources::{self, RESOURCES, ResourceDef};
use super::{Api, ApiError, ListOptions, PatchType, Result, Target, WriteOptions, object};

/// An amount of a resource: milli-units, and whether it prints in binary form (`Mi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Amount {
    milli: i128,
    binary: bool,
}

impl Amount {
    fn parse(s: &str) -> Option<Self> {
        quantity::parse_milli(s).ok().map(|milli| Self {
            milli,
            binary: quantity::is_binary(s),
        })
    }

    fn count(n: i128) -> Self {
        Self {
            milli: n * 1000,
            binary: false,
        }
    }

    /// The sum, in the format of the first non-zero term (as upstream's `Quantity.Add`).
    fn add(self, other: Self) -> Self {
        Self {
            milli: self.milli + other.milli,
            binary: if self.milli == 0 {
                other.binary
            } else {
                self.binary
            },
        }
    }

    /// As upstream's `Quantity.String()`.
    pub(crate) fn show(&self) -> String {
        quantity::format_milli(self.milli, self.binary)
    }
}

/// Amounts by quota resource name (`pods`, `requests.cpu`, `count/deployments.apps`).
pub(crate) type Usage = BTreeMap<String, Amount>;

/// The compute resources for which a quota makes every container state its requests/limits.
const COMPUTE: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The kind whose objects a quota resource name counts.
pub(crate) fn kind_of(key: &str) -> Option<&'static ResourceDef> {
    if let Some(rest) = key.strip_prefix("count/") {
        let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
        return RESOURCES
            .iter()
            .find(|r| r.namespaced && r.plural == plural && r.group == group);
    }
    let plural = match key {
        "cpu" | "memory" | "ephemeral-storage" => "pods",
        k if k.starts_with("requests.") || k.starts_with("limits.") => "pods",
        "services.nodeports" | "services.loadbalancers" => "services",
        k => k,
    };
    match plural {
        "pods"
        | "services"
        | "configmaps"
        | "secrets"
        | "replicationcontrollers"
        | "resourcequotas"
        | "persistentvolumeclaims" => resources::find("", "v1", plural),
        _ => None,
    }
}

/// What one object of kind `res` uses.
pub(crate) fn usage(res: &ResourceDef, obj: &Value) -> Usage {
    let mut u = Usage::new();
    u.insert(format!("count/{}", res.qualified()), Amount::count(1));
    match (res.group, res.plural) {
        ("", "pods") if pod_counted(obj) => {
            u.insert("pods".into(), Amount::count(1));
            u.extend(compute_usage(
                &pod_totals(&obj["spec"], "requests"),
                &pod_totals(&obj["spec"], "limits"),
            ));
        }
        ("", "services") => {
            u.insert("services".into(), Amount::count(1));
            let ty = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if ty == "NodePort" || ty == "LoadBalancer" {
                let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len);
                u.insert("services.nodeports".into(), Amount::count(ports as i128));
            }
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), Amount::count(1));
            }
        }
        ("", plural @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas")) => {
            u.insert(plural.into(), Amount::count(1));
        }
        _ => {}
    }
    u
}

/// Whether a pod still counts against `pods` and compute quotas: not finished, and not stuck
/// terminating past its grace period (upstream's `QuotaV1Pod`).
fn pod_counted(pod: &Value) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    let deletion = object::path(pod, "metadata.deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(object::parse_time);
    let grace = object::path(pod, "metadata.deletionGracePeriodSeconds").and_then(Value::as_i64);
    match (deletion, grace) {
        (Some(at), Some(grace)) => {
            jiff::Timestamp::now() <= at + jiff::SignedDuration::from_secs(grace)
        }
        _ => true,
    }
}

/// Validates `spec.scopes`: known scopes, not both of a pair that excludes each other.
pub(crate) fn validate_scopes(scopes: &[String], e: &mut Vec<FieldError>) {
    const KNOWN: [&str; 6] = [
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
    ];
    let shown = format!(
        "[]core.ResourceQuotaScope{{{}}}",
        scopes
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in scopes {
        if !KNOWN.contains(&s.as_str()) {
            e.push(FieldError::invalid(
                "spec.scopes",
                &shown,
                "unsupported scope",
            ));
        }
    }
    let has = |s: &str| scopes.iter().any(|x| x == s);
    for (a, b) in [
        ("BestEffort", "NotBestEffort"),
        ("Terminating", "NotTerminating"),
    ] {
        if has(a) && has(b) {
            e.push(FieldError::invalid(
                "spec.scopes",
                &shown,
                "conflicting scopes",
            ));
        }
    }
}

/// Whether `obj` falls within a quota's `spec.scopes` and `spec.scopeSelector`: a scoped
/// quota counts only pods that match every scope.
pub(crate) fn in_scope(quota: &Value, res: &ResourceDef, obj: &Value) -> bool {
    let spec = &quota["spec"];
    let scopes = spec["scopes"].as_array().into_iter().flatten();
    let exprs = spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten();
    let mut terms = scopes
        .map(|s| (s.as_str().unwrap_or(""), "Exists", Vec::new()))
        .chain(exprs.map(|e| {
            let values = e["values"].as_array().into_iter().flatten();
            (
                e["scopeName"].as_str().unwrap_or(""),
                e["operator"].as_str().unwrap_or(""),
                values.filter_map(Value::as_str).collect::<Vec<_>>(),
            )
        }))
        .peekable();
    if terms.peek().is_none() {
        return true;
    }
    if !(res.group.is_empty() && res.kind == "Pod") {
        return false;
    }
    let spec = &obj["spec"];
    let best_effort = ["containers", "initContainers"].iter().all(|f| {
        spec[*f].as_array().into_iter().flatten().all(|c| {
            let r = &c["resources"];
            ["requests", "limits"]
                .iter()
                .all(|l| r[*l].as_object().is_none_or(|m| m.is_empty()))
        })
    });
    let terminating = spec["activeDeadlineSeconds"].as_i64().is_some();
    let priority = spec["priorityClassName"].as_str().unwrap_or("");
    terms.all(|(scope, op, values)| {
        let holds = match scope {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort,
            "NotBestEffort" => !best_effort,
            "PriorityClass" => match op {
                "In" => return values.contains(&priority),
                "NotIn" => return !values.contains(&priority),
                _ => !priority.is_empty(),
            },
            _ => false,
        };
        if op == "DoesNotExist" { !holds } else { holds }
    })
}

/// The quota names a container's (or pod's) requests and limits account for.
fn compute_usage(requests: &Usage, limits: &Usage) -> Usage {
    let mut u = Usage::new();
    for (k, a) in requests {
        if ["cpu", "memory", "ephemeral-storage"].contains(&k.as_str()) {
            u.insert(k.clone(), *a);
        }
        u.insert(format!("requests.{k}"), *a);
    }
    for (k, a) in limits {
        u.insert(format!("limits.{k}"), *a);
    }
    u
}

fn container_list(c: &Value, field: &str) -> Usage {
    c["resources"][field]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), Amount::parse(q.as_str()?)?)))
        .collect()
}

/// The sum over containers, or the largest init container where that is larger.
fn pod_totals(spec: &Value, field: &str) -> Usage {
    let mut sum = Usage::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        for (k, a) in container_list(c, field) {
            let e = sum.entry(k).or_default();
            *e = e.add(a);
        }
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        for (k, a) in container_list(c, field) {
            let e = sum.entry(k).or_default();
            if a.milli > e.milli {
                *e = a;
            }
        }
    }
    sum
}

/// Upstream's pod constraint: with a compute quota, every container must state the resources
/// the quota names (`must specify limits.cpu for: a,b; requests.cpu for: a`).
pub(crate) fn missing_compute(pod: &Value, hard: &Usage) -> Option<String> {
    let required: Vec<&str> = COMPUTE
        .into_iter()
        .filter(|k| hard.contains_key(*k))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let spec = &pod["spec"];
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for c in containers {
        let has = compute_usage(&container_list(c, "requests"), &container_list(c, "limits"));
        for k in &required {
            if !has.contains_key(*k) {
                let name = c["name"].as_str().unwrap_or("").to_string();
                missing.entry(k).or_default().insert(name);
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(k, names)| {
            format!(
                "{k} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// `a=1,b=2`, sorted by name, as upstream prints resource lists in quota messages.
pub(crate) fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, a)| format!("{k}={}", a.show()))
        .collect::<Vec<_>>()
        .join(",")
}

/// A quota's `spec.hard`, parsed.
pub(crate) fn hard_of(quota: &Value) -> Usage {
    quota["spec"]["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), Amount::parse(q.as_str()?)?)))
        .collect()
}

/// The quota resources of `requested` whose new total would exceed `hard`, or `None` when
/// they all fit: `(requested, used, limited)` of the exceeded ones.
pub(crate) fn exceeded(
    requested: &Usage,
    used: &Usage,
    hard: &Usage,
) -> Option<(Usage, Usage, Usage)> {
    let over: Vec<&String> = requested
        .iter()
        .filter(|(k, a)| {
            let now = used.get(*k).copied().unwrap_or_default();
            hard.get(*k).is_some_and(|h| now.add(**a).milli > h.milli)
        })
        .map(|(k, _)| k)
        .collect();
    if over.is_empty() {
        return None;
    }
    let pick = |u: &Usage| -> Usage {
        over.iter()
            .map(|k| ((*k).clone(), u.get(*k).copied().unwrap_or_default()))
            .collect()
    };
    Some((pick(requested), pick(used), pick(hard)))
}

/// A quota a create was charged to: its name and the new usage of the charged resources.
pub(crate) struct Charge {
    name: String,
    used: Usage,
}

/// Admission's hold on a namespace's quotas until the admitted object is written.
pub(crate) struct Admitted {
    _guard: OwnedMutexGuard<()>,
    charges: Vec<Charge>,
}

impl Api {
    /// What the objects in `ns` use of the quota resources `keys`, counted from the store.
    /// Only objects within `quota`'s scopes count.
    pub(crate) fn quota_used<'a>(
        &self,
        ns: &str,
        quota: &Value,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> Result<Usage> {
        let mut by_kind: BTreeMap<&'static str, (&'static ResourceDef, Vec<&String>)> =
            BTreeMap::new();
        for k in keys {
            if let Some(res) = kind_of(k) {
                by_kind
                    .entry(res.kind)
                    .or_insert((res, Vec::new()))
                    .1
                    .push(k);
            }
        }
        let mut used = Usage::new();
        for (res, keys) in by_kind.values() {
            for k in keys {
                used.insert((*k).clone(), Amount::default());
            }
            for obj in self.list(res, Some(ns), &ListOptions::default())?.items {
                if !in_scope(quota, res, &obj) {
                    continue;
                }
                for (k, a) in usage(res, &obj) {
                    if let Some(total) = used.get_mut(&k) {
                        *total = total.add(a);
                    }
                }
            }
        }
        Ok(used)
    }

    fn quota_lock(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .quota_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        locks.entry(ns.to_string()).or_default().clone()
    }

    /// Quota admission of creating `obj` in `ns`: refuses it when a quota would be exceeded
    /// or a compute quota's container constraint is not met. On success, holds the namespace's
    /// quota lock until [`Api::record_quota`] runs after the write. A new quota gets its status.
    pub(crate) async fn admit_quota(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        obj: &mut Value,
    ) -> Result<Option<Admitted>> {
        let quotas_def = resources::core("resourcequotas");
        let delta = usage(res, obj);
        let is_pod = res.group.is_empty() && res.kind == "Pod";
        if res.kind == "ResourceQuota" && res.group.is_empty() {
            let hard = hard_of(obj);
            let mut used = self.quota_used(ns, obj, hard.keys())?;
            if in_scope(obj, res, obj) {
                for (k, a) in &delta {
                    if let Some(u) = used.get_mut(k) {
                        *u = u.add(*a);
                    }
                }
            }
            obj["status"] = json!({"hard": obj["spec"]["hard"].clone(), "used": show_all(&used)});
        }
        let obj = &*obj;
        let applies = |q: &Value| {
            let hard = hard_of(q);
            in_scope(q, res, obj)
                && (hard.keys().any(|k| delta.contains_key(k))
                    || (is_pod && COMPUTE.iter().any(|k| hard.contains_key(*k))))
        };
        let quotas = self
            .list(quotas_def, Some(ns), &ListOptions::default())?
            .items;
        if !quotas.iter().any(applies) {
            return Ok(None);
        }
        let guard = self.quota_lock(ns).lock_owned().await;
        let name = object::name(obj).to_string();
        let mut charges = Vec::new();
        let quotas = self
            .list(quotas_def, Some(ns), &ListOptions::default())?
            .items;
        for q in quotas.iter().filter(|q| applies(q)) {
            let quota = object::name(q);
            let hard = hard_of(q);
            if is_pod && let Some(msg) = missing_compute(obj, &hard) {
                return Err(ApiError::forbidden(
                    res,
                    &name,
                    format!("failed quota: {quota}: {msg}"),
                ));
            }
            let requested: Usage = delta
                .iter()
                .filter(|(k, _)| hard.contains_key(*k))
                .map(|(k, a)| (k.clone(), *a))
                .collect();
            if requested.is_empty() {
                continue;
            }
            let used = self.quota_used(ns, q, requested.keys())?;
            if let Some((req, used, limited)) = exceeded(&requested, &used, &hard) {
                return Err(ApiError::forbidden(
                    res,
                    &name,
                    format!(
                        "exceeded quota: {quota}, requested: {}, used: {}, limited: {}",
                        pretty(&req),
                        pretty(&used),
                        pretty(&limited)
                    ),
                ));
            }
            let used = requested
                .iter()
                .map(|(k, a)| (k.clone(), used.get(k).copied().unwrap_or_default().add(*a)))
                .collect();
            charges.push(Charge {
                name: quota.to_string(),
                used,
            });
        }
        Ok(Some(Admitted {
            _guard: guard,
            charges,
        }))
    }

    /// Records in the charged quotas' `status.used` what an admitted and written create added.
    pub(crate) async fn record_quota(&self, ns: &str, admitted: Admitted) {
        let quotas_def = resources::core("resourcequotas");
        for charge in &admitted.charges {
            let patch = json!({"status": {"used": show_all(&charge.used)}});
            if let Err(e) = Box::pin(self.patch(
                quotas_def,
                Some(ns),
                &charge.name,
                PatchType::Merge,
                patch,
                Target::Status,
                &WriteOptions::default(),
            ))
            .await
            {
                tracing::warn!(namespace = ns, quota = %charge.name, error = %e, "could not record quota usage");
            }
        }
    }
}

/// Amounts as a status map of quantities.
pub(crate) fn show_all(u: &Usage) -> Value {
    Value::Object(
        u.iter()
            .map(|(k, a)| (k.clone(), json!(a.show())))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    fn list(pairs: &[(&str, &str)]) -> Usage {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Amount::parse(v).unwrap()))
            .collect()
    }

    #[test]
    fn pods_use_counts_and_compute() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
        ]));
        let u = usage(resources::core("pods"), &p);
        let shown: Vec<String> = u.iter().map(|(k, a)| format!("{k}={}", a.show())).collect();
        assert_eq!(
            shown,
            [
                "count/pods=1",
                "cpu=500m",
                "limits.cpu=1",
                "memory=128Mi",
                "pods=1",
                "requests.cpu=500m",
                "requests.memory=128Mi"
            ]
        );
        let mut done = p.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            usage(resources::core("pods"), &done)
                .keys()
                .collect::<Vec<_>>(),
            ["count/pods"],
            "finished pods only count as objects"
        );
        let deploys = resources::find("apps", "v1", "deployments").unwrap();
        assert!(usage(deploys, &json!({})).contains_key("count/deployments.apps"));
        assert_eq!(kind_of("count/deployments.apps"), Some(deploys));
        assert_eq!(kind_of("requests.cpu"), Some(resources::core("pods")));
        assert_eq!(kind_of("configmaps"), Some(resources::core("configmaps")));
    }

    #[test]
    fn exceeded_reports_only_what_does_not_fit() {
        let hard = list(&[("pods", "2"), ("requests.cpu", "1")]);
        let requested = list(&[("pods", "1"), ("requests.cpu", "500m")]);
        assert!(
            exceeded(
                &requested,
                &list(&[("pods", "1"), ("requests.cpu", "500m")]),
                &hard
            )
            .is_none()
        );
        let (r, u, l) = exceeded(
            &requested,
            &list(&[("pods", "2"), ("requests.cpu", "500m")]),
            &hard,
        )
        .unwrap();
        assert_eq!(
            format!(
                "requested: {}, used: {}, limited: {}",
                pretty(&r),
                pretty(&u),
                pretty(&l)
            ),
            "requested: pods=1, used: pods=2, limited: pods=2"
        );
        let (r, u, l) = exceeded(
            &requested,
            &list(&[("pods", "2"), ("requests.cpu", "750m")]),
            &hard,
        )
        .unwrap();
        assert_eq!(
            format!("{} {} {}", pretty(&r), pretty(&u), pretty(&l)),
            "pods=1,requests.cpu=500m pods=2,requests.cpu=750m pods=2,requests.cpu=1"
        );
    }

    #[test]
    fn scoped_quotas_count_only_matching_pods() {
        let pods = resources::core("pods");
        let best = pod(json!([{"name": "a"}]));
        let burst = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        let scoped = json!({"spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}});
        assert!(in_scope(&scoped, pods, &best) && !in_scope(&scoped, pods, &burst));
        let cms = resources::core("configmaps");
        assert!(!in_scope(&scoped, cms, &json!({})));
        assert!(in_scope(
            &json!({"spec": {"hard": {"pods": "1"}}}),
            cms,
            &json!({})
        ));
        let prio = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let mut high = burst.clone();
        high["spec"]["priorityClassName"] = json!("high");
        assert!(in_scope(&prio, pods, &high) && !in_scope(&prio, pods, &burst));
    }

    #[test]
    fn scopes_must_be_known_and_consistent() {
        let mut e = Vec::new();
        validate_scopes(&["BestEffort".into(), "NotBestEffort".into()], &mut e);
        validate_scopes(&["Sometimes".into()], &mut e);
        let messages: Vec<&str> = e.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                r#"spec.scopes: Invalid value: []core.ResourceQuotaScope{"BestEffort", "NotBestEffort"}: conflicting scopes"#,
                r#"spec.scopes: Invalid value: []core.ResourceQuotaScope{"Sometimes"}: unsupported scope"#,
            ]
        );
    }

    #[test]
    fn compute_quotas_require_container_resources() {
        let hard = list(&[
            ("pods", "5"),
            ("requests.cpu", "1"),
            ("limits.memory", "1Gi"),
        ]);
        let p = pod(json!([
            {"name": "b", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "a"},
        ]));
        assert_eq!(
            missing_compute(&p, &hard).unwrap(),
            "must specify limits.memory for: a,b; requests.cpu for: a"
        );
        assert!(missing_compute(&p, &list(&[("pods", "5")])).is_none());
    }

    mod api {
        use std::sync::Arc;

        use serde_json::{Value, json};

        use crate::api::{Api, ApiError, Config, WriteOptions, resources};
        use crate::store::{SledConfig, SledStore};

        async fn api() -> (Api, tempfile::TempDir) {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
            let api = Api::new(Arc::new(store), Config::default());
            api.bootstrap().await.unwrap();
            (api, dir)
        }

        fn pod(name: &str, resources: Value) -> Value {
            json!({"metadata": {"name": name}, "spec": {"containers": [
                {"name": "c", "image": "hello:1.0", "resources": resources}]}})
        }

        async fn create(api: &Api, plural: &str, obj: Value) -> Result<Value, ApiError> {
            let res = resources::core(plural);
            let w = WriteOptions::default();
            api.create(res, Some("default"), obj, &w)
                .await
                .map(|w| w.object)
        }

        #[tokio::test]
        async fn quota_refuses_creates_beyond_hard_and_tracks_used() {
            let (api, _dir) = api().await;
            let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "requests.cpu": "1"}}});
            let q = create(&api, "resourcequotas", q).await.unwrap();
            assert_eq!(
                q["status"]["used"],
                json!({"pods": "0", "requests.cpu": "0"})
            );
            let small = json!({"requests": {"cpu": "250m"}});
            create(&api, "pods", pod("a", small.clone())).await.unwrap();
            let err = create(&api, "pods", pod("big", json!({"requests": {"cpu": "1"}})))
                .await
                .unwrap_err();
            assert_eq!(
                (err.code, err.message.as_str()),
                (
                    403,
                    "pods \"big\" is forbidden: exceeded quota: q, requested: requests.cpu=1, used: requests.cpu=250m, limited: requests.cpu=1"
                )
            );
            create(&api, "pods", pod("b", small.clone())).await.unwrap();
            let err = create(&api, "pods", pod("c", small)).await.unwrap_err();
            assert_eq!(
                err.message,
                "pods \"c\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
            );
            let err = create(&api, "pods", pod("bare", json!({})))
                .await
                .unwrap_err();
            assert_eq!(
                err.message,
                "pods \"bare\" is forbidden: failed quota: q: must specify requests.cpu for: c"
            );
            let q = api
                .get(resources::core("resourcequotas"), Some("default"), "q")
                .unwrap();
            assert_eq!(
                q["status"]["used"],
                json!({"pods": "2", "requests.cpu": "500m"})
            );
            assert_eq!(
                q["status"]["hard"],
                json!({"pods": "2", "requests.cpu": "1"})
            );
        }

        #[tokio::test]
        async fn racing_creates_do_not_both_take_the_last_unit() {
            let (api, _dir) = api().await;
            let q = json!({"metadata": {"name": "one"}, "spec": {"hard": {"configmaps": "1"}}});
            create(&api, "resourcequotas", q).await.unwrap();
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let api = api.clone();
                    tokio::spawn(async move {
                        create(
                            &api,
                            "configmaps",
                            json!({"metadata": {"name": format!("cm{i}")}}),
                        )
                        .await
                    })
                })
                .collect();
            let mut ok = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => ok += 1,
                    Err(e) => assert!(e.message.contains("exceeded quota: one"), "{}", e.message),
                }
            }
            assert_eq!(ok, 1);
        }

        #[tokio::test]
        async fn limit_ranges_default_and_bound_containers() {
            let (api, _dir) = api().await;
            let lr = json!({"metadata": {"name": "lr"}, "spec": {"limits": [
                {"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "200m"},
                 "max": {"cpu": "1"}}]}});
            let lr = create(&api, "limitranges", lr).await.unwrap();
            assert_eq!(lr["spec"]["limits"][0]["max"]["cpu"], "1");
            let p = create(&api, "pods", pod("d", json!({}))).await.unwrap();
            let r = &p["spec"]["containers"][0]["resources"];
            assert_eq!(
                (r["limits"]["cpu"].as_str(), r["requests"]["cpu"].as_str()),
                (Some("500m"), Some("200m"))
            );
            let p = create(&api, "pods", pod("l", json!({"limits": {"cpu": "800m"}})))
                .await
                .unwrap();
            assert_eq!(
                p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
                "800m"
            );
            let err = create(&api, "pods", pod("x", json!({"limits": {"cpu": "2"}})))
                .await
                .unwrap_err();
            assert_eq!(
                (err.code, err.message.as_str()),
                (
                    403,
                    "pods \"x\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
                )
            );
            let bad = json!({"metadata": {"name": "bad"}, "spec": {"limits": [
                {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]}});
            assert_eq!(
                create(&api, "limitranges", bad).await.unwrap_err().code,
                422
            );
        }
    }
}
