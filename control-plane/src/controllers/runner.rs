//! The controller runner, in the spirit of kube-runtime's `Controller`: it watches a primary
//! resource, the kinds its objects own and the kinds merely related to them, turns every event
//! into the keys of the primary objects to reconcile (a pod event wakes its ReplicaSet through
//! the pod's controller reference, or, for an orphan, the owners whose selector matches it; it
//! wakes the Services that select it whoever owns it), and runs
//! `reconcile(key)` with per-key exclusivity: a key is never reconciled twice at once, and a
//! change that arrives meanwhile runs it once more afterwards. A reconcile asks to be run
//! again after a while, or waits for the next change; one that fails is retried with backoff.
//!
//! Each reconcile is isolated: one that panics fails its key only (logged with the object,
//! retried with the same backoff as an error) while other keys go on. A controller whose loop
//! dies anyway is started again by [`supervise`], which reports it in the health checks.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SelectAll};
use futures::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::resources::ResourceDef;
use crate::api::{Api, ApiError, ListOptions, WatchEvent, object};
use crate::health::Checks;

/// `namespace/name` of a primary object.
pub type Key = (String, String);

/// What to do after a successful reconcile.
pub enum Action {
    /// Nothing until the next change.
    Await,
    /// Reconcile again after this long (waiting for time to pass, e.g. `minReadySeconds`).
    RequeueAfter(Duration),
}

/// A controller's logic; the runner does the rest.
pub trait Reconciler: Send + Sync + 'static {
    /// The kind this controller drives.
    fn primary(&self) -> &'static ResourceDef;
    /// The kinds its objects own (and may adopt).
    fn owned(&self) -> Vec<&'static ResourceDef>;
    /// Whether `owner` would adopt the orphan `child` (its selector matches).
    fn adopts(&self, _owner: &Value, _child: &Value) -> bool {
        false
    }
    /// Kinds its objects do not own but still depend on (a Service's pods): an event of such
    /// an object wakes every primary in its namespace that [`relates`](Self::relates) to it,
    /// before or after the change, whatever owns the object.
    fn related(&self) -> Vec<&'static ResourceDef> {
        Vec::new()
    }
    /// The part of a related object that [`relates`](Self::relates) looks at (by default its
    /// labels). The runner keeps it per object, so a change also wakes the primaries the object
    /// related to before (a pod relabelled out of a selector).
    fn relation(&self, _res: &'static ResourceDef, obj: &Value) -> Value {
        object::labels(obj).cloned().unwrap_or(Value::Null)
    }
    /// Whether `primary` depends on a related object of kind `res` with this
    /// [`relation`](Self::relation).
    fn relates(&self, _primary: &Value, _res: &'static ResourceDef, _relation: &Value) -> bool {
        false
    }
    /// Brings the object at `key` closer to what it asks for. `object` is the primary as the
    /// watch cache holds it when the reconcile starts (`None` once it is gone), decoded once
    /// and shared with every other reader of that version.
    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
        object: Option<Arc<Value>>,
    ) -> BoxFuture<'a, Result<Action, ApiError>>;
}

/// Each event of a watch on every kind in `kinds` (all namespaces), tagged with its kind's
/// index; `None` after a second's pause (or at `stop`) when a watch could not be opened.
pub(crate) async fn watch_kinds(
    api: &Api,
    kinds: &[&'static ResourceDef],
    send_initial_events: bool,
    stop: &CancellationToken,
) -> Option<SelectAll<futures::stream::BoxStream<'static, (usize, WatchEvent)>>> {
    let mut watches = SelectAll::new();
    for (i, res) in kinds.iter().enumerate() {
        match api.watch(
            res,
            None,
            &ListOptions::default(),
            None,
            send_initial_events,
        ) {
            Ok(w) => watches.push(w.map(move |e| (i, e)).boxed()),
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => {}
                }
                return None;
            }
        }
    }
    Some(watches)
}

/// Reconciles at most this many keys at once.
const WORKERS: usize = 16;
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs `reconciler` until `stop`.
pub async fn run<R: Reconciler>(api: Api, reconciler: R, stop: CancellationToken) {
    let reconciler = Arc::new(reconciler);
    loop {
        let mut kinds = vec![reconciler.primary()];
        kinds.extend(reconciler.owned());
        let owned = kinds.len();
        kinds.extend(reconciler.related());
        let Some(mut watches) = watch_kinds(&api, &kinds, false, &stop).await else {
            if stop.is_cancelled() {
                return;
            }
            continue;
        };
        let mut state = State {
            api: api.clone(),
            reconciler: reconciler.clone(),
            primaries: HashMap::new(),
            relations: HashMap::new(),
            waiting: VecDeque::new(),
            queued: HashSet::new(),
            running: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            tasks: FuturesUnordered::new(),
            delays: FuturesUnordered::new(),
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = watches.next() => {
                    let Some((i, event)) = e else { break };
                    if i < owned {
                        state.observe(kinds[i], event);
                    } else {
                        state.observe_related(kinds[i], event);
                    }
                }
                Some(key) = state.delays.next(), if !state.delays.is_empty() => state.enqueue(key),
                Some((key, result)) = state.tasks.next(), if !state.tasks.is_empty() => {
                    state.finished(key, result);
                }
            }
        }
        // The watches ended (compaction): start over from a fresh list.
    }
}

type Done = (Key, Result<Action, ApiError>);

struct State<R: Reconciler> {
    api: Api,
    reconciler: Arc<R>,
    /// The primary objects, by namespace, for adopting orphans.
    primaries: HashMap<String, HashMap<String, Arc<Value>>>,
    /// What each related object looked like to `relates`, by kind, namespace and name.
    relations: HashMap<(&'static str, String, String), Value>,
    waiting: VecDeque<Key>,
    queued: HashSet<Key>,
    running: HashSet<Key>,
    /// Keys that changed while being reconciled.
    dirty: HashSet<Key>,
    failures: HashMap<Key, u32>,
    tasks: FuturesUnordered<BoxFuture<'static, Done>>,
    /// Keys to enqueue again once their requeue or backoff delay has passed.
    delays: FuturesUnordered<BoxFuture<'static, Key>>,
}

impl<R: Reconciler> State<R> {
    fn observe(&mut self, res: &'static ResourceDef, event: WatchEvent) {
        let (obj, deleted) = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
            WatchEvent::Bookmark { .. } | WatchEvent::Error(_) => return,
        };
        let ns = object::namespace(&obj).to_string();
        let primary = self.reconciler.primary();
        if std::ptr::eq(res, primary) {
            let name = object::name(&obj).to_string();
            let in_ns = self.primaries.entry(ns.clone()).or_default();
            if deleted {
                in_ns.remove(&name);
            } else {
                in_ns.insert(name.clone(), obj);
            }
            self.enqueue((ns, name));
            return;
        }
        let controller = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r["controller"] == true);
        match controller {
            Some(r) => {
                if r["kind"] == primary.kind
                    && let Some(name) = r["name"].as_str()
                {
                    self.enqueue((ns, name.to_string()));
                }
            }
            None if !deleted => {
                let owners: Vec<String> = self
                    .primaries
                    .get(&ns)
                    .into_iter()
                    .flatten()
                    .filter(|(_, owner)| self.reconciler.adopts(owner, &obj))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in owners {
                    self.enqueue((ns.clone(), name));
                }
            }
            None => {}
        }
    }

    /// Wakes the primaries a related object relates to, as it is now and as it was before.
    fn observe_related(&mut self, res: &'static ResourceDef, event: WatchEvent) {
        let (obj, deleted) = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
            WatchEvent::Bookmark { .. } | WatchEvent::Error(_) => return,
        };
        let ns = object::namespace(&obj).to_string();
        let id = (res.plural, ns.clone(), object::name(&obj).to_string());
        let now = self.reconciler.relation(res, &obj);
        let before = if deleted {
            self.relations.remove(&id)
        } else {
            self.relations.insert(id, now.clone())
        };
        let names: Vec<String> = self
            .primaries
            .get(&ns)
            .into_iter()
            .flatten()
            .filter(|(_, primary)| {
                self.reconciler.relates(primary, res, &now)
                    || before
                        .as_ref()
                        .is_some_and(|b| b != &now && self.reconciler.relates(primary, res, b))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            self.enqueue((ns.clone(), name));
        }
    }

    fn enqueue(&mut self, key: Key) {
        if self.running.contains(&key) {
            self.dirty.insert(key);
        } else if self.running.len() < WORKERS {
            self.start(key);
        } else if self.queued.insert(key.clone()) {
            self.waiting.push_back(key);
        }
    }

    fn start(&mut self, key: Key) {
        self.running.insert(key.clone());
        let (api, reconciler) = (self.api.clone(), self.reconciler.clone());
        self.tasks.push(
            async move {
                let primary = reconciler.primary();
                let ns = primary.namespaced.then_some(key.0.as_str());
                let object = match api.get_shared(primary, ns, &key.1) {
                    Ok(o) => Some(o),
                    Err(e) if e.code == 404 => None,
                    Err(e) => return (key, Err(e)),
                };
                let result = AssertUnwindSafe(reconciler.reconcile(&api, &key, object))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let why = panic_message(&*panic);
                        tracing::error!(
                            kind = reconciler.primary().kind,
                            object = %format!("{}/{}", key.0, key.1),
                            panic = %why,
                            "reconcile panicked; retrying with backoff"
                        );
                        Err(ApiError::internal(format!("reconcile panicked: {why}")))
                    });
                (key, result)
            }
            .boxed(),
        );
    }

    fn finished(&mut self, key: Key, result: Result<Action, ApiError>) {
        self.running.remove(&key);
        let after = match result {
            Ok(action) => {
                self.failures.remove(&key);
                match action {
                    Action::Await => None,
                    Action::RequeueAfter(d) => Some(d),
                }
            }
            Err(e) => {
                let n = self.failures.entry(key.clone()).or_default();
                *n += 1;
                let backoff = MIN_BACKOFF
                    .saturating_mul(1 << (*n - 1).min(16))
                    .min(MAX_BACKOFF);
                tracing::debug!(
                    kind = self.reconciler.primary().kind,
                    object = %format!("{}/{}", key.0, key.1),
                    error = %e.message,
                    "reconcile failed; retrying in {backoff:?}"
                );
                Some(backoff)
            }
        };
        if self.dirty.remove(&key) {
            self.enqueue(key.clone());
        } else if let Some(after) = after {
            let key = key.clone();
            self.delays.push(
                async move {
                    tokio::time::sleep(after).await;
                    key
                }
                .boxed(),
            );
        }
        while self.running.len() < WORKERS
            && let Some(next) = self.waiting.pop_front()
        {
            self.queued.remove(&next);
            if self.running.contains(&next) {
                self.dirty.insert(next);
            } else {
                self.start(next);
            }
        }
    }
}

/// What a caught panic carried, as text.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// How a dead controller is restarted.
#[derive(Debug, Clone, Copy)]
struct Restarts {
    /// The first restart waits this long; each further one twice as long, up to `max_backoff`.
    backoff: Duration,
    max_backoff: Duration,
    /// A restarted controller counts as healthy again once it has run this long.
    stable: Duration,
}

const RESTARTS: Restarts = Restarts {
    backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(60),
    stable: Duration::from_secs(30),
};

/// Runs the component that `start` makes until `stop`, reported in `checks` as `name` (a
/// controller as `controller/<kind>`). One that panics or returns before `stop` is logged,
/// reported failing and started again after a backoff; it reports healthy again once it has
/// stayed up.
pub async fn supervise<F, Fut>(name: &str, checks: &Checks, stop: &CancellationToken, start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    supervise_with(RESTARTS, name, checks, stop, start).await;
}

async fn supervise_with<F, Fut>(
    restarts: Restarts,
    name: &str,
    checks: &Checks,
    stop: &CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    checks.pass(name);
    let mut deaths = 0u32;
    loop {
        let run = AssertUnwindSafe(start()).catch_unwind();
        tokio::pin!(run);
        let stable = tokio::time::sleep(restarts.stable);
        tokio::pin!(stable);
        let mut healthy = deaths == 0;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                () = &mut stable, if !healthy => {
                    healthy = true;
                    deaths = 0;
                    checks.pass(name);
                    tracing::info!(component = name, "restarted after dying, running again");
                }
            }
        };
        if stop.is_cancelled() {
            return;
        }
        let reason = match outcome {
            Ok(()) => "stopped before shutdown".to_string(),
            Err(panic) => format!("panicked: {}", panic_message(&*panic)),
        };
        deaths += 1;
        let backoff = restarts
            .backoff
            .saturating_mul(1 << (deaths - 1).min(16))
            .min(restarts.max_backoff);
        tracing::error!(component = name, %reason, deaths, "died; restarting in {backoff:?}");
        checks.fail(name, reason);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;

    use super::*;
    use crate::api::{Config, WriteOptions, resources};

    /// A test controller over ConfigMaps: it marks each one reconciled, except that it panics
    /// on the one named `bomb` (a tenant's object that trips a bug).
    struct Marker {
        res: &'static ResourceDef,
        attempts: Arc<Mutex<HashMap<String, u32>>>,
    }

    impl Reconciler for Marker {
        fn primary(&self) -> &'static ResourceDef {
            self.res
        }
        fn owned(&self) -> Vec<&'static ResourceDef> {
            Vec::new()
        }
        fn reconcile<'a>(
            &'a self,
            api: &'a Api,
            key: &'a Key,
            _object: Option<Arc<Value>>,
        ) -> BoxFuture<'a, Result<Action, ApiError>> {
            async move {
                *self
                    .attempts
                    .lock()
                    .unwrap()
                    .entry(key.1.clone())
                    .or_default() += 1;
                if key.1 == "bomb" {
                    let deadline = i64::MAX;
                    panic!("deadline {deadline} overflows");
                }
                let obj = match api.get(self.res, Some(&key.0), &key.1) {
                    Ok(obj) => obj,
                    Err(e) if e.code == 404 => return Ok(Action::Await),
                    Err(e) => return Err(e),
                };
                if obj.pointer("/metadata/annotations/reconciled").is_none() {
                    let patch = json!({"metadata": {"annotations": {"reconciled": "yes"}}});
                    super::super::merge_patch(api, self.res, &obj, patch).await?;
                }
                Ok(Action::Await)
            }
            .boxed()
        }
    }

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    async fn create(api: &Api, res: &'static ResourceDef, name: &str) {
        api.create(
            res,
            Some("default"),
            json!({"metadata": {"name": name}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }

    fn reconciled(api: &Api, res: &'static ResourceDef, name: &str) -> bool {
        api.get(res, Some("default"), name)
            .is_ok_and(|o| o.pointer("/metadata/annotations/reconciled").is_some())
    }

    #[tokio::test]
    async fn a_reconcile_that_panics_fails_its_key_only_and_is_retried_with_backoff() {
        let (api, _dir) = api().await;
        let (configmaps, secrets) = (resources::core("configmaps"), resources::core("secrets"));
        let attempts = Arc::new(Mutex::new(HashMap::new()));
        let secret_attempts = Arc::new(Mutex::new(HashMap::new()));
        let stop = CancellationToken::new();
        let checks = Checks::default();
        let marker = Marker {
            res: configmaps,
            attempts: attempts.clone(),
        };
        // A second controller beside it, as the Deployment controller is beside the Job one.
        let other = Marker {
            res: secrets,
            attempts: secret_attempts.clone(),
        };
        let controllers = async {
            tokio::join!(
                supervise("controller/marker", &checks, &stop, || run(
                    api.clone(),
                    Marker {
                        res: marker.res,
                        attempts: marker.attempts.clone()
                    },
                    stop.clone()
                )),
                supervise("controller/other", &checks, &stop, || run(
                    api.clone(),
                    Marker {
                        res: other.res,
                        attempts: other.attempts.clone()
                    },
                    stop.clone()
                )),
            )
        };
        let scenario = async {
            create(&api, configmaps, "before").await;
            create(&api, configmaps, "bomb").await;
            let tries = |name: &str| attempts.lock().unwrap().get(name).copied().unwrap_or(0);
            for _ in 0..200 {
                if tries("bomb") >= 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(tries("bomb") >= 1, "the bomb was never reconciled");
            // After the panic, objects created later (of this kind and another) still are.
            create(&api, configmaps, "after").await;
            create(&api, secrets, "beside").await;
            for _ in 0..400 {
                if reconciled(&api, configmaps, "before")
                    && reconciled(&api, configmaps, "after")
                    && reconciled(&api, secrets, "beside")
                    && tries("bomb") >= 3
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(reconciled(&api, configmaps, "before"));
            assert!(
                reconciled(&api, configmaps, "after"),
                "a later object was not reconciled"
            );
            assert!(
                reconciled(&api, secrets, "beside"),
                "the other controller stopped"
            );
            // The panicking key was retried with backoff (200 ms, 400 ms, ...), not in a loop.
            let n = tries("bomb");
            assert!((3..=6).contains(&n), "bomb reconciled {n} times");
            // The controller itself never died.
            assert!(checks.report().passed(), "{:?}", checks.report());
            stop.cancel();
        };
        tokio::join!(controllers, scenario);
    }

    #[tokio::test]
    async fn a_controller_that_dies_is_restarted_and_reported_until_it_stays_up() {
        let checks = Checks::default();
        let stop = CancellationToken::new();
        let starts = AtomicU32::new(0);
        // The production timing scaled down to milliseconds (no paused clock in this crate).
        let ms = Duration::from_millis;
        let timing = Restarts {
            backoff: ms(200),
            max_backoff: ms(6_000),
            stable: ms(2_000),
        };
        let supervised = supervise_with(timing, "controller/flaky", &checks, &stop, || {
            let n = starts.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                match n {
                    0 => panic!("its loop broke"),
                    1 => {} // returns long before shutdown
                    _ => stop.cancelled().await,
                }
            }
        });
        tokio::pin!(supervised);
        // Lets time pass while the supervisor runs.
        macro_rules! after {
            ($d:expr) => {
                assert!(
                    tokio::time::timeout($d, supervised.as_mut()).await.is_err(),
                    "supervise returned before stop"
                )
            };
        }
        let failure = |checks: &Checks| checks.report().checks[0].1.clone();

        after!(ms(100));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(
            failure(&checks).as_deref(),
            Some("panicked: its loop broke")
        );
        assert_eq!(
            checks.report().body("readyz", false),
            "[+]ping ok\n[-]controller/flaky failed: panicked: its loop broke\nreadyz check failed\n"
        );
        // Restarted after 200 ms; it returns at once and is restarted after 400 ms more.
        after!(ms(200));
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(failure(&checks).as_deref(), Some("stopped before shutdown"));
        after!(ms(500));
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        // Running again, but reported failing until it has stayed up a while.
        assert!(failure(&checks).is_some());
        after!(ms(2_000));
        assert_eq!(failure(&checks), None);
        assert!(checks.report().passed());

        stop.cancel();
        supervised.await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }
}
