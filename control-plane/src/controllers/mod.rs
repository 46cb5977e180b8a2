//! The controller manager: loops that compare what objects ask for with what exists and close
//! the gap, each driven by store watches through [`runner`]. Every controller holds only its
//! logic.

pub mod aggregation;
pub mod cronjob;
pub mod deployment;
pub mod endpoints;
pub mod event_ttl;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod nodes;
pub mod podgc;
pub mod quota;
pub mod replicaset;
pub mod runner;
pub mod servicelb;

use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::resources::ResourceDef;
use crate::api::{Api, ApiError, PatchType, Target, WriteOptions, object};
use crate::clock;
use crate::health::Checks;

/// The controller manager's flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// When nodes count as lost and how fast their pods are evicted.
    pub node_lifecycle: nodes::Settings,
    /// When pods of vanished nodes and terminated pods are deleted.
    pub pod_gc: podgc::Settings,
    /// `--event-ttl`: how long an Event is kept after it was last observed.
    pub event_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_lifecycle: nodes::Settings::default(),
            pod_gc: podgc::Settings::default(),
            event_ttl: Duration::from_secs(3600),
        }
    }
}

/// Pods a controller creates in one reconcile at most, as upstream's `burstReplicas` (the
/// ReplicaSet controller) and `MaxPodCreateDeletePerSync` (the Job controller): a tenant's
/// `replicas: 2147483647` costs a bounded pass, not one that never ends.
pub const BURST: usize = 500;

/// Runs every controller until `stop`, each supervised on a task of its own: one that dies
/// is started again and reported in `checks` (as `controller/<name>`) meanwhile, and one that
/// is busy or stuck holds up only its own task.
pub async fn run(api: Api, settings: Settings, checks: Checks, stop: CancellationToken) {
    let Settings {
        node_lifecycle,
        pod_gc,
        event_ttl,
    } = settings;
    let mut tasks = JoinSet::new();
    let mut add = |name: &'static str, start: Start| {
        let (api, checks, stop) = (api.clone(), checks.clone(), stop.clone());
        tasks.spawn(async move {
            let (check, s) = (format!("controller/{name}"), stop.clone());
            runner::supervise(&check, &checks, &stop, || start(api.clone(), s.clone())).await;
        });
    };
    add(
        "node-lifecycle",
        Box::new(move |api, stop| nodes::run(api, node_lifecycle.clone(), stop).boxed()),
    );
    add(
        "garbage-collector",
        Box::new(|api, stop| gc::run(api, stop).boxed()),
    );
    add(
        "namespace",
        Box::new(|api, stop| runner::run(api, namespace::Namespaces, stop).boxed()),
    );
    add(
        "pod-garbage-collector",
        Box::new(move |api, stop| podgc::run(api, pod_gc.clone(), stop).boxed()),
    );
    add(
        "event-ttl",
        Box::new(move |api, stop| event_ttl::run(api, event_ttl, stop).boxed()),
    );
    add(
        "replicaset",
        Box::new(|api, stop| runner::run(api, replicaset::ReplicaSets::apps_v1(), stop).boxed()),
    );
    add(
        "replicationcontroller",
        Box::new(|api, stop| runner::run(api, replicaset::ReplicaSets::core_v1(), stop).boxed()),
    );
    add(
        "deployment",
        Box::new(|api, stop| runner::run(api, deployment::Deployments, stop).boxed()),
    );
    add(
        "job",
        Box::new(|api, stop| runner::run(api, job::Jobs, stop).boxed()),
    );
    add(
        "cronjob",
        Box::new(|api, stop| runner::run(api, cronjob::CronJobs, stop).boxed()),
    );
    add(
        "endpoints",
        Box::new(|api, stop| runner::run(api, endpoints::Endpoints, stop).boxed()),
    );
    add(
        "resourcequota",
        Box::new(|api, stop| runner::run(api, quota::Quotas, stop).boxed()),
    );
    add(
        "service-lb",
        Box::new(|api, stop| servicelb::run(api, stop).boxed()),
    );
    add(
        "clusterrole-aggregation",
        Box::new(|api, stop| runner::run(api, aggregation::Aggregation, stop).boxed()),
    );
    while let Some(done) = tasks.join_next().await {
        // The supervisor catches the controllers' panics; this is one of its own.
        if let Err(e) = done {
            tracing::error!(error = %e, "controller supervisor failed");
        }
    }
}

/// Starts one run of a controller.
type Start = Box<dyn Fn(Api, CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>;

/// Merge-patches an object's status; `false` when the object is gone (nothing left to do).
pub async fn write_status(
    api: &Api,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    status: Value,
) -> Result<bool, ApiError> {
    let patch = json!({ "status": status });
    let opts = WriteOptions::default();
    match api
        .patch(
            res,
            Some(ns),
            name,
            PatchType::Merge,
            patch,
            Target::Status,
            &opts,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Merge-patches `obj` (of kind `res`) and returns what was stored.
pub async fn merge_patch(
    api: &Api,
    res: &'static ResourceDef,
    obj: &Value,
    patch: Value,
) -> Result<Value, ApiError> {
    let ns = Some(object::namespace(obj)).filter(|ns| !ns.is_empty());
    let opts = WriteOptions::default();
    let written = api
        .patch(
            res,
            ns,
            object::name(obj),
            PatchType::Merge,
            patch,
            Target::Main,
            &opts,
        )
        .await?;
    Ok(written.object)
}

/// Whether `owner`, unless it is being deleted, would adopt `child`: its selector matches.
pub fn selector_adopts(owner: &Value, child: &Value) -> bool {
    !object::is_terminating(owner)
        && replicaset::selector_of(owner).is_some_and(|s| s.matches_json(object::labels(child)))
}

/// Whether `owner` may still adopt orphans, judged on a fresh read as upstream's
/// `RecheckDeletionTimestamp`: an owner deleted since the reconcile read it (the garbage
/// collector may be orphaning its dependents right now) adopts nothing.
pub async fn can_adopt(
    api: &Api,
    res: &'static ResourceDef,
    owner: &Value,
) -> Result<bool, ApiError> {
    let ns = Some(object::namespace(owner)).filter(|ns| !ns.is_empty());
    match api.get(res, ns, object::name(owner)) {
        Ok(now) => Ok(object::uid(&now) == object::uid(owner) && !object::is_terminating(&now)),
        Err(e) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
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
        .is_some_and(|since| {
            clock::elapsed_seconds(since, jiff::Timestamp::now()) >= min_ready_seconds
        })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::api::{
        Config, DeleteOptions, ListOptions, PatchType, Target, WriteOptions, resources,
    };
    use crate::store::{SledConfig, SledStore};

    struct Cluster {
        api: Api,
        checks: Checks,
        stop: CancellationToken,
        _controllers: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl Cluster {
        async fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
            let api = Api::new(Arc::new(store), Config::default());
            api.bootstrap().await.unwrap();
            let stop = CancellationToken::new();
            let checks = Checks::default();
            let controllers = tokio::spawn(run(
                api.clone(),
                Settings::default(),
                checks.clone(),
                stop.clone(),
            ));
            Self {
                api,
                checks,
                stop,
                _controllers: controllers,
                _dir: dir,
            }
        }

        fn res(plural: &str) -> &'static ResourceDef {
            resources::RESOURCES
                .iter()
                .find(|r| r.plural == plural)
                .unwrap()
        }

        async fn create(&self, plural: &str, obj: Value) -> Value {
            self.api
                .create(
                    Self::res(plural),
                    Some("default"),
                    obj,
                    &WriteOptions::default(),
                )
                .await
                .unwrap()
                .object
        }

        async fn patch(&self, plural: &str, name: &str, body: Value, target: Target) {
            self.api
                .patch(
                    Self::res(plural),
                    Some("default"),
                    name,
                    PatchType::Merge,
                    body,
                    target,
                    &WriteOptions::default(),
                )
                .await
                .unwrap();
        }

        fn list(&self, plural: &str) -> Vec<Value> {
            self.api
                .list(Self::res(plural), Some("default"), &ListOptions::default())
                .unwrap()
                .items
        }

        fn get(&self, plural: &str, name: &str) -> Value {
            self.api
                .get(Self::res(plural), Some("default"), name)
                .unwrap()
        }

        /// Waits (up to 20 s) until `f` holds.
        async fn until(&self, what: &str, f: impl Fn(&Self) -> bool) {
            for _ in 0..400 {
                if f(self) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("timed out: {what}");
        }

        /// Plays the node: marks a pod Running and Ready.
        async fn ready(&self, pod: &str) {
            let status = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": object::now()}]}});
            self.patch("pods", pod, status, Target::Status).await;
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    fn controlled_by(pod: &Value, uid: &str) -> bool {
        pod.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| r["controller"] == true && r["uid"] == uid)
    }

    fn template(app: &str, image: &str) -> Value {
        json!({"metadata": {"labels": {"app": app}},
               "spec": {"containers": [{"name": "c", "image": image}]}})
    }

    /// A matching pod that names the ReplicaSet as a mere (non-controller) owner is read once,
    /// from the owner index, not again as an orphan: one pass adopts it once and creates
    /// nothing more.
    #[tokio::test]
    async fn one_pass_adopts_a_pod_that_names_its_owner_without_controlling_it() {
        use runner::Reconciler as _;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
        let api = Api::new(Arc::new(store), Config::default());
        api.bootstrap().await.unwrap();
        let rs_res = Cluster::res("replicasets");
        let rs = json!({"metadata": {"name": "rs"}, "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "a"}}, "template": template("a", "x")}});
        let rs = api
            .create(rs_res, Some("default"), rs, &WriteOptions::default())
            .await
            .unwrap()
            .object;
        let uid = object::uid(&rs).to_string();
        let pod = json!({"metadata": {"name": "named", "labels": {"app": "a"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                 "uid": uid, "controller": false}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let pods_res = Cluster::res("pods");
        api.create(pods_res, Some("default"), pod, &WriteOptions::default())
            .await
            .unwrap();
        let key = ("default".to_string(), "rs".to_string());
        let object = api.get_shared(rs_res, Some("default"), "rs").ok();
        replicaset::ReplicaSets::apps_v1()
            .reconcile(&api, &key, object)
            .await
            .unwrap();
        let pods = api
            .list(pods_res, Some("default"), &ListOptions::default())
            .unwrap()
            .items;
        assert_eq!(pods.len(), 1, "adopted, nothing created");
        assert!(controlled_by(&pods[0], &uid), "{}", pods[0]);
    }

    #[tokio::test]
    async fn replica_sets_adopt_release_and_delete_the_least_valuable_pods() {
        let c = Cluster::start().await;
        let orphan = json!({"metadata": {"name": "orphan", "labels": {"app": "a"}},
                            "spec": {"containers": [{"name": "c", "image": "x"}]}});
        c.create("pods", orphan).await;
        let rs = json!({"metadata": {"name": "rs"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "a"}}, "template": template("a", "x")}});
        let uid = object::uid(&c.create("replicasets", rs).await).to_string();
        c.until("the orphan adopted and one pod created", |c| {
            let pods = c.list("pods");
            pods.len() == 2 && pods.iter().all(|p| controlled_by(p, &uid))
        })
        .await;

        // A pod relabelled out of the selector is released, and replaced.
        c.patch(
            "pods",
            "orphan",
            json!({"metadata": {"labels": {"app": "b"}}}),
            Target::Main,
        )
        .await;
        c.until("the relabelled pod released and replaced", |c| {
            let pods = c.list("pods");
            let owned = pods.iter().filter(|p| controlled_by(p, &uid)).count();
            pods.len() == 3 && owned == 2 && !controlled_by(&c.get("pods", "orphan"), &uid)
        })
        .await;

        // Scaling down removes the pod that is not ready, not the ready one.
        let owned: Vec<String> = c
            .list("pods")
            .iter()
            .filter(|p| controlled_by(p, &uid))
            .map(|p| object::name(p).to_string())
            .collect();
        c.ready(&owned[1]).await;
        c.until("the ready pod counted", |c| {
            c.get("replicasets", "rs").pointer("/status/readyReplicas") == Some(&json!(1))
        })
        .await;
        c.patch(
            "replicasets",
            "rs",
            json!({"spec": {"replicas": 1}}),
            Target::Main,
        )
        .await;
        c.until("the not-ready pod deleted", |c| {
            let names: Vec<String> = c
                .list("pods")
                .iter()
                .filter(|p| controlled_by(p, &uid))
                .map(|p| object::name(p).to_string())
                .collect();
            names == [owned[1].clone()]
        })
        .await;
        // The status is written after the deletion.
        c.until("the status counting one pod", |c| {
            c.get("replicasets", "rs").pointer("/status/replicas") == Some(&json!(1))
        })
        .await;
        let status = c.get("replicasets", "rs")["status"].clone();
        assert_eq!(status["availableReplicas"], 1, "{status}");
        assert_eq!(status["fullyLabeledReplicas"], 1, "{status}");
        crate::events::flushed(&c.api).await;
        let events = c.list("events");
        for reason in ["SuccessfulCreate", "SuccessfulDelete"] {
            assert!(events.iter().any(|e| e["reason"] == reason), "no {reason}");
        }
    }

    #[tokio::test]
    async fn deployments_recreate_keep_limited_history_and_report_a_stalled_rollout() {
        let c = Cluster::start().await;
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 2,
            "strategy": {"type": "Recreate"}, "revisionHistoryLimit": 1,
            "progressDeadlineSeconds": 1,
            "selector": {"matchLabels": {"app": "d"}}, "template": template("d", "v1")}});
        c.create("deployments", d).await;
        c.until("two pods of v1", |c| c.list("pods").len() == 2)
            .await;
        // The pods never become ready: the rollout reports it stalled after its deadline.
        c.until("ProgressDeadlineExceeded", |c| {
            c.get("deployments", "d")
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|k| {
                    k["type"] == "Progressing"
                        && k["status"] == "False"
                        && k["reason"] == "ProgressDeadlineExceeded"
                })
        })
        .await;

        // Recreate: every old pod is gone before the new template's pods are made.
        for pod in c.list("pods") {
            c.ready(object::name(&pod)).await;
        }
        c.patch(
            "deployments",
            "d",
            json!({"spec": {"template": template("d", "v2")}}),
            Target::Main,
        )
        .await;
        let mut mixed = false;
        for _ in 0..400 {
            let images: Vec<String> = c
                .list("pods")
                .iter()
                .map(|p| {
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            mixed |= images.contains(&"v1".to_string()) && images.contains(&"v2".to_string());
            if images == ["v2", "v2"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!mixed, "old and new pods ran side by side under Recreate");
        assert_eq!(c.list("pods").len(), 2);

        // A third template: only revisionHistoryLimit (1) old ReplicaSet is kept.
        c.patch(
            "deployments",
            "d",
            json!({"spec": {"template": template("d", "v3")}}),
            Target::Main,
        )
        .await;
        c.until("v3 running and history pruned", |c| {
            let rs = c.list("replicasets");
            let pods = c.list("pods");
            rs.len() == 2
                && pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == "v3")
        })
        .await;
        let revisions: Vec<String> = c
            .list("replicasets")
            .iter()
            .map(|r| {
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(
            revisions.contains(&"2".to_string()) && revisions.contains(&"3".to_string()),
            "{revisions:?}"
        );
        assert_eq!(
            c.get("deployments", "d")["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "3"
        );

        // Deleting the deployment takes its ReplicaSets and pods along.
        c.api
            .delete(
                Cluster::res("deployments"),
                Some("default"),
                "d",
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
        c.until("dependents gone", |c| {
            c.list("replicasets").is_empty() && c.list("pods").is_empty()
        })
        .await;
    }

    /// The ready and not-ready pod names of a Service's Endpoints, and of its slices.
    fn endpoints_of(c: &Cluster, service: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
        let ep = c.get("endpoints", service);
        let names = |field: &str| {
            let mut names: Vec<String> = ep["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
                .map(|a| a["targetRef"]["name"].as_str().unwrap_or("").to_string())
                .collect();
            names.sort();
            names
        };
        let mut sliced: Vec<String> = c
            .list("endpointslices")
            .iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .map(|e| e["targetRef"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        sliced.sort();
        (names("addresses"), names("notReadyAddresses"), sliced)
    }

    #[tokio::test]
    async fn endpoints_follow_the_readiness_of_the_pods_a_service_selects() {
        let c = Cluster::start().await;
        let svc = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
        c.create("services", svc).await;
        let mut t = template("web", "x");
        t["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
        let rs = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "web"}}, "template": t}});
        c.create("replicasets", rs).await;
        c.until(
            "two pods, an empty Endpoints and a placeholder slice",
            |c| {
                c.list("pods").len() == 2
                    && c.api
                        .get(Cluster::res("endpoints"), Some("default"), "web")
                        .is_ok()
                    && !c.list("endpointslices").is_empty()
            },
        )
        .await;
        // Pods without an address are not endpoints yet.
        assert_eq!(endpoints_of(&c, "web"), (vec![], vec![], vec![]));
        let slices = c.list("endpointslices");
        assert_eq!(slices.len(), 1, "one placeholder slice: {slices:?}");
        assert_eq!(slices[0]["addressType"], "IPv4");
        assert_eq!(
            slices[0]["metadata"]["ownerReferences"][0]["kind"],
            "Service"
        );

        let pods: Vec<String> = c
            .list("pods")
            .iter()
            .map(|p| object::name(p).to_string())
            .collect();
        let set_ready = |ready: bool| {
            json!({"status": {"phase": "Running", "podIP": "10.0.0.7", "conditions": [
                {"type": "Ready", "status": if ready {"True"} else {"False"},
                 "lastTransitionTime": object::now()}]}})
        };
        c.patch("pods", &pods[0], set_ready(true), Target::Status)
            .await;
        c.patch("pods", &pods[1], set_ready(false), Target::Status)
            .await;
        c.until("one ready and one not-ready address", |c| {
            endpoints_of(c, "web")
                == (
                    vec![pods[0].clone()],
                    vec![pods[1].clone()],
                    vec![pods[0].clone()],
                )
        })
        .await;
        let ep = c.get("endpoints", "web");
        assert_eq!(
            ep["subsets"][0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            "the named targetPort resolves to the container port: {ep}"
        );
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.0.0.7");

        // The second pod turns ready; the first is relabelled out of the selector.
        c.patch("pods", &pods[1], set_ready(true), Target::Status)
            .await;
        c.patch(
            "pods",
            &pods[0],
            json!({"metadata": {"labels": {"app": "other"}}}),
            Target::Main,
        )
        .await;
        c.until(
            "only the second pod (and the replacement, not ready)",
            |c| {
                let (ready, _, sliced) = endpoints_of(c, "web");
                ready == [pods[1].clone()] && sliced == [pods[1].clone()]
            },
        )
        .await;

        // Scaling to zero empties them.
        c.patch(
            "replicasets",
            "web",
            json!({"spec": {"replicas": 0}}),
            Target::Main,
        )
        .await;
        c.until("no endpoints", |c| {
            let ep = c.get("endpoints", "web");
            let slices: Vec<Value> = c
                .list("endpointslices")
                .into_iter()
                .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "web")
                .collect();
            ep.get("subsets")
                .is_none_or(|s| s.as_array().is_none_or(|a| a.is_empty()))
                && slices.len() == 1
                && slices[0]["endpoints"]
                    .as_array()
                    .is_none_or(|e| e.is_empty())
        })
        .await;

        // A Service without a selector keeps the Endpoints its user writes.
        let manual = json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}});
        c.create("services", manual).await;
        let ep = json!({"metadata": {"name": "manual"},
            "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]});
        c.create("endpoints", ep).await;
        // Deleting a Service removes its Endpoints and slices.
        c.api
            .delete(
                Cluster::res("services"),
                Some("default"),
                "web",
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
        c.until("web's endpoints gone", |c| {
            c.api
                .get(Cluster::res("endpoints"), Some("default"), "web")
                .is_err()
                && c.list("endpointslices").is_empty()
        })
        .await;
        assert_eq!(
            c.get("endpoints", "manual")["subsets"][0]["addresses"][0]["ip"],
            "192.0.2.1"
        );
    }

    #[test]
    fn availability_with_extreme_min_ready_seconds() {
        use crate::clock::tests::EXTREMES;
        for since in [
            "2025-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "x",
        ] {
            let pod = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": since}]}});
            for &min in EXTREMES {
                let available = pod_available(&pod, min);
                if min <= 0 {
                    assert!(available, "{since} {min}");
                }
                if min == i64::MAX {
                    assert!(!available, "{since} {min}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_job_whose_deadline_overflows_leaves_the_other_controllers_working() {
        let c = Cluster::start().await;
        let job = json!({"metadata": {"name": "forever"}, "spec": {
            "activeDeadlineSeconds": i64::MAX, "ttlSecondsAfterFinished": i32::MAX,
            "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": i64::MAX,
                                  "containers": [{"name": "c", "image": "x"}]}}}});
        c.create("jobs", job).await;
        c.until("the job's pod", |c| c.list("pods").len() == 1)
            .await;
        // The pod runs; the deadline is checked again on every change.
        let pod = object::name(&c.list("pods")[0]).to_string();
        c.ready(&pod).await;
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "d"}}, "template": template("d", "v1")}});
        c.create("deployments", d).await;
        c.until("the deployment's ReplicaSet and pod", |c| {
            c.list("replicasets").len() == 1 && c.list("pods").len() == 2
        })
        .await;
        // The job is still active: a deadline beyond any clock never passes.
        let status = c.get("jobs", "forever")["status"].clone();
        assert_eq!(status["active"], 1, "{status}");
        assert!(
            status
                .get("conditions")
                .is_none_or(|k| !k.to_string().contains("DeadlineExceeded")),
            "{status}"
        );
        // No controller died on the way.
        assert!(c.checks.report().passed(), "{:?}", c.checks.report());
    }
}
