//! The ResourceQuota controller: keeps `status.hard` equal to `spec.hard` and `status.used`
//! equal to what the namespace's objects use, so deletions and finished pods free quota.
//! (Creates are charged by admission in the same write path.)

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::runner::{Action, Key, Reconciler};
use crate::api::resources::{self, ResourceDef};
use crate::api::{Api, ApiError, ListOptions, object, quota};

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
        object: Option<Arc<Value>>,
    ) -> BoxFuture<'a, Result<Action, ApiError>> {
        async move {
            let (ns, name) = key;
            let res = self.primary();
            let Some(q) = object else {
                return Ok(Action::Await);
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
            // A pod stuck terminating stops counting when its grace period ends; no event
            // marks that moment, so come back then.
            let counts_pods = hard
                .keys()
                .any(|k| quota::kind_of(k) == Some(resources::core("pods")));
            if counts_pods && let Some(after) = next_grace_expiry(api, ns)? {
                return Ok(Action::RequeueAfter(after));
            }
            Ok(Action::Await)
        }
        .boxed()
    }
}

/// How long until the first terminating pod in `ns` passes its grace period.
fn next_grace_expiry(api: &Api, ns: &str) -> Result<Option<std::time::Duration>, ApiError> {
    let now = jiff::Timestamp::now();
    let pods = api.list(resources::core("pods"), Some(ns), &ListOptions::default())?;
    let next = pods.items.iter().filter_map(|p| grace_left(p, now)).min();
    Ok(next.map(|d| d.saturating_add(std::time::Duration::from_secs(1))))
}

/// How long a terminating pod's grace period still runs; `None` if it is over, or never ends
/// (a grace period beyond the range of time).
fn grace_left(pod: &Value, now: jiff::Timestamp) -> Option<std::time::Duration> {
    let at = object::path(pod, "metadata.deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(object::parse_time)?;
    let grace = object::path(pod, "metadata.deletionGracePeriodSeconds")?.as_i64()?;
    let ends = crate::clock::add_seconds(at, grace)?;
    (ends > now).then(|| crate::clock::until(ends, now))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::api::{Config, DeleteOptions, PatchType, Target, WriteOptions};
    use crate::store::{SledConfig, SledStore};

    #[test]
    fn extreme_grace_periods_neither_panic_nor_wait_forever() {
        use crate::clock::tests::EXTREMES;
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        for at in [
            "2025-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "junk",
        ] {
            for &grace in EXTREMES {
                let pod = json!({"metadata": {"deletionTimestamp": at,
                                              "deletionGracePeriodSeconds": grace}});
                if let Some(left) = grace_left(&pod, now) {
                    assert!(!left.is_zero());
                }
            }
        }
        let pod = |grace: i64| {
            json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z",
                                                   "deletionGracePeriodSeconds": grace}})
        };
        assert_eq!(grace_left(&pod(30), now), Some(Duration::from_secs(30)));
        assert_eq!(grace_left(&pod(i64::MAX), now), None);
        assert_eq!(grace_left(&pod(-1), now), None);
    }

    async fn used(api: &Api, key: &str, want: &str) {
        let quotas = resources::core("resourcequotas");
        for _ in 0..400 {
            let q = api.get(quotas, Some("default"), "q").unwrap();
            if q["status"]["used"][key] == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("quota never used {key}={want}");
    }

    #[tokio::test]
    async fn finished_and_deleted_pods_free_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
        let api = Api::new(Arc::new(store), Config::default());
        api.bootstrap().await.unwrap();
        let stop = CancellationToken::new();
        let controller = tokio::spawn(super::super::runner::run(api.clone(), Quotas, stop.clone()));
        let (pods, w) = (resources::core("pods"), WriteOptions::default());
        let pod = |name: &str| json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "hello:1.0"}]}});
        let quota =
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1", "count/pods": "5"}}});
        api.create(
            resources::core("resourcequotas"),
            Some("default"),
            quota,
            &w,
        )
        .await
        .unwrap();
        api.create(pods, Some("default"), pod("a"), &w)
            .await
            .unwrap();
        used(&api, "pods", "1").await;
        let full = api.create(pods, Some("default"), pod("b"), &w).await;
        assert_eq!(full.unwrap_err().code, 403);
        api.patch(
            pods,
            Some("default"),
            "a",
            PatchType::Merge,
            json!({"status": {"phase": "Succeeded"}}),
            Target::Status,
            &w,
        )
        .await
        .unwrap();
        used(&api, "pods", "0").await;
        api.create(pods, Some("default"), pod("b"), &w)
            .await
            .unwrap();
        // Finished pods still count as objects. (A recalculation may run between the
        // charge for `b` and `b`'s commit, so the count settles rather than holds at once.)
        used(&api, "count/pods", "2").await;
        api.delete(pods, Some("default"), "b", &DeleteOptions::default())
            .await
            .unwrap();
        api.delete(pods, Some("default"), "a", &DeleteOptions::default())
            .await
            .unwrap();
        used(&api, "count/pods", "0").await;
        stop.cancel();
        controller.await.unwrap();
    }

    #[tokio::test]
    async fn pods_stuck_terminating_stop_counting_after_their_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
        let api = Api::new(Arc::new(store), Config::default());
        api.bootstrap().await.unwrap();
        let stop = CancellationToken::new();
        let controller = tokio::spawn(super::super::runner::run(api.clone(), Quotas, stop.clone()));
        let (pods, w) = (resources::core("pods"), WriteOptions::default());
        let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
        api.create(
            resources::core("resourcequotas"),
            Some("default"),
            quota,
            &w,
        )
        .await
        .unwrap();
        let pod = json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "hello:1.0"}]}});
        api.create(pods, Some("default"), pod, &w).await.unwrap();
        api.bind("default", "a", &json!({"target": {"name": "lost-node"}}))
            .await
            .unwrap();
        let opts = DeleteOptions {
            grace_period_seconds: Some(1),
            ..Default::default()
        };
        let marked = api.delete(pods, Some("default"), "a", &opts).await.unwrap();
        assert!(
            object::is_terminating(&marked),
            "a bound pod terminates gracefully"
        );
        used(&api, "pods", "1").await;
        used(&api, "pods", "0").await;
        stop.cancel();
        controller.await.unwrap();
    }
}
