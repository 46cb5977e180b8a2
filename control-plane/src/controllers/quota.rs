//! The ResourceQuota controller: keeps `status.hard` equal to `spec.hard` and `status.used`
//! equal to what the namespace's objects use, so deletions and finished pods free quota.
//! (Creates are charged by admission in the same write path.)

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::runner::{Action, Key, Reconciler};
use crate::api::resources::{self, ResourceDef};
use crate::api::{Api, ApiError, quota};

/// Recomputes quota usage.
pub struct Quotas;

impl Reconciler for Quotas {
    fn primary(&self) -> &'static ResourceDef {
        resources::core("resourcequotas")
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        Vec::new()
    }

    /// Every namespaced kind a quota can count, in its preferred version; not Events and
    /// Leases, which change often and are rarely quota'd.
    fn related(&self) -> Vec<&'static ResourceDef> {
        let mut out: Vec<&'static ResourceDef> = Vec::new();
        for r in resources::RESOURCES {
            if r.namespaced
                && !["resourcequotas", "events", "leases"].contains(&r.plural)
                && !out
                    .iter()
                    .any(|o| o.group == r.group && o.plural == r.plural)
            {
                out.push(r);
            }
        }
        out
    }

    fn relation(&self, _res: &'static ResourceDef, _obj: &Value) -> Value {
        Value::Null
    }

    fn relates(&self, primary: &Value, res: &'static ResourceDef, _relation: &Value) -> bool {
        quota::hard_of(primary)
            .keys()
            .filter_map(|k| quota::kind_of(k))
            .any(|k| k.group == res.group && k.plural == res.plural)
    }

    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
    ) -> BoxFuture<'a, Result<Action, ApiError>> {
        async move {
            let (ns, name) = key;
            let res = self.primary();
            let q = match api.get(res, Some(ns), name) {
                Ok(q) => q,
                Err(e) if e.code == 404 => return Ok(Action::Await),
                Err(e) => return Err(e),
            };
            let hard = quota::hard_of(&q);
            let used = quota::show_all(&api.quota_used(ns, &q, hard.keys())?);
            let spec_hard = q["spec"]["hard"].clone();
            // A merge patch keeps keys it does not mention: null out the ones no longer hard.
            let stale = |field: &str, now: &Value| -> Value {
                let mut m: Map<String, Value> = now.as_object().cloned().unwrap_or_default();
                for k in q["status"][field]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                {
                    m.entry(k.clone()).or_insert(Value::Null);
                }
                Value::Object(m)
            };
            let status = json!({"hard": stale("hard", &spec_hard), "used": stale("used", &used)});
            if q["status"]["hard"] != spec_hard || q["status"]["used"] != used {
                super::write_status(api, res, ns, name, status).await?;
            }
            Ok(Action::Await)
        }
        .boxed()
    }
}
