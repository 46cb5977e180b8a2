//! The controller runner, in the spirit of kube-runtime's `Controller`: it watches a primary
//! resource, the kinds its objects own and the kinds merely related to them, turns every event
//! into the keys of the primary objects to reconcile (a pod event wakes its ReplicaSet through
//! the pod's controller reference, or, for an orphan, the owners whose selector matches it; it
//! wakes the Services that select it whoever owns it), and runs
//! `reconcile(key)` with per-key exclusivity: a key is never reconciled twice at once, and a
//! change that arrives meanwhile runs it once more afterwards. A reconcile asks to be run
//! again after a while, or waits for the next change; one that fails is retried with backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SelectAll};
use futures::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::resources::ResourceDef;
use crate::api::{Api, ApiError, ListOptions, WatchEvent, object};

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
    /// Brings the object at `key` closer to what it asks for.
    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
    ) -> BoxFuture<'a, Result<Action, ApiError>>;
}

/// Reconciles at most this many keys at once.
const WORKERS: usize = 16;
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs `reconciler` until `stop`.
pub async fn run<R: Reconciler>(api: Api, reconciler: R, stop: CancellationToken) {
    let reconciler = Arc::new(reconciler);
    let (requeue_tx, mut requeue_rx) = mpsc::unbounded_channel::<Key>();
    loop {
        let mut kinds = vec![reconciler.primary()];
        kinds.extend(reconciler.owned());
        let owned = kinds.len();
        kinds.extend(reconciler.related());
        let mut watches = SelectAll::new();
        let mut failed = false;
        for (i, res) in kinds.iter().enumerate() {
            match api.watch(res, None, &ListOptions::default(), None, false) {
                Ok(w) => watches.push(w.map(move |e| (i, e)).boxed()),
                Err(_) => failed = true,
            }
        }
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.cancelled() => return,
            }
        }
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
            requeue: requeue_tx.clone(),
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
                Some(key) = requeue_rx.recv() => state.enqueue(key),
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
    primaries: HashMap<String, HashMap<String, Value>>,
    /// What each related object looked like to `relates`, by kind, namespace and name.
    relations: HashMap<(&'static str, String, String), Value>,
    waiting: VecDeque<Key>,
    queued: HashSet<Key>,
    running: HashSet<Key>,
    /// Keys that changed while being reconciled.
    dirty: HashSet<Key>,
    failures: HashMap<Key, u32>,
    tasks: FuturesUnordered<BoxFuture<'static, Done>>,
    requeue: mpsc::UnboundedSender<Key>,
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
                let result = reconciler.reconcile(&api, &key).await;
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
            let tx = self.requeue.clone();
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(key);
            });
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
