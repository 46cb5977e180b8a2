//! The garbage collector, as kube-controller-manager's: a graph of ownerReferences (owner uid →
//! dependents) kept from watches of every stored kind, and the three propagation policies
//! carried out from it.
//!
//! - Background: a dependent none of whose owners exists any more (by uid: an owner recreated
//!   under the same name is a different owner) is deleted, itself in the background, so chains
//!   cascade.
//! - Foreground: an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted (in the foreground too); the finalizer goes once no dependent that
//!   blocks owner deletion is left.
//! - Orphan: an owner being deleted with the `orphan` finalizer has its reference removed from
//!   every dependent, then the finalizer.
//!
//! Nothing is remembered between runs: the graph is rebuilt from a list of every kind after a
//! restart (or when a watch ends), and every object is looked at once it is complete, so a
//! delete interrupted by `kill -9` at any point is finished from what is stored. Absence in the
//! graph is never trusted alone: an owner is judged gone only after a live read finds no object
//! with its uid, because the watches of different kinds run at different speeds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::resources::{self, ResourceDef};
use crate::api::{
    Api, ApiError, DeleteOptions, ListOptions, PatchType, Target, WatchEvent, WriteOptions, object,
};

/// The finalizer of an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";

/// Steps of one object carried out at once (deletes and patches of dependents).
const PARALLEL: usize = 16;
/// Objects worked on at once.
const WORKERS: usize = 16;
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One reference from a dependent to an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// The owner's uid: what identifies it.
    pub(crate) uid: String,
    /// `apiVersion` and `kind`, to find the owner for a live read.
    pub(crate) api_version: String,
    pub(crate) kind: String,
    /// The owner's name (in the dependent's namespace when the owner is namespaced).
    pub(crate) name: String,
    /// `blockOwnerDeletion`: a foreground delete of the owner waits for this dependent.
    pub(crate) block: bool,
}

/// An object as the collector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) res: &'static ResourceDef,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) owners: Vec<Owner>,
    /// `metadata.deletionTimestamp` is set.
    pub(crate) deleting: bool,
    pub(crate) finalizers: Vec<String>,
}

impl Node {
    /// The node of a stored object; `None` for an object without a uid.
    pub(crate) fn of(res: &'static ResourceDef, obj: &Value) -> Option<Self> {
        let uid = object::uid(obj);
        if uid.is_empty() {
            return None;
        }
        let owners = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                let uid = s("uid");
                (!uid.is_empty()).then(|| Owner {
                    uid,
                    api_version: s("apiVersion"),
                    kind: s("kind"),
                    name: s("name"),
                    block: r["blockOwnerDeletion"] == true,
                })
            })
            .collect();
        Some(Self {
            res,
            namespace: object::namespace(obj).to_string(),
            name: object::name(obj).to_string(),
            uid: uid.to_string(),
            owners,
            deleting: object::is_terminating(obj),
            finalizers: object::finalizers(obj),
        })
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    fn ns(&self) -> Option<&str> {
        Some(self.namespace.as_str()).filter(|n| !n.is_empty())
    }

    fn key(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.res.plural, self.name)
        } else {
            format!("{}/{}/{}", self.res.plural, self.namespace, self.name)
        }
    }
}

/// What the collector does to one object; [`Graph::plan`] decides, [`execute`] does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Delete `node` (in the background) once live reads confirm that all its owners are gone.
    Collect(Node),
    /// Remove the references to `owners` from `node`, once live reads confirm they are gone:
    /// the object has other owners that still exist.
    DropDangling(Node, Vec<Owner>),
    /// Delete a dependent of the owner with uid `owner`, deleted in the foreground, if it
    /// still references it.
    Delete {
        node: Node,
        owner: String,
        foreground: bool,
    },
    /// Remove the reference to the owner with uid `owner` from a dependent.
    Unlink { node: Node, owner: String },
    /// Remove the collector's finalizer from an owner whose dependents are taken care of, once
    /// a list of the kinds in `check` finds no dependent the graph has not seen yet (its watch
    /// may lag behind the owner's).
    Finalize {
        node: Node,
        finalizer: &'static str,
        check: Vec<&'static ResourceDef>,
    },
}

/// The ownerReference graph: every object by uid, and for every uid referenced as an owner
/// (whether or not it exists) the objects referencing it.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    /// The kinds seen as dependents of each owner kind (`group/Kind`), to list before an
    /// owner's finalizer goes.
    dependent_kinds: HashMap<String, Vec<&'static ResourceDef>>,
}

/// `group/Kind` of an ownerReference's `apiVersion` and `kind`.
fn group_kind(api_version: &str, kind: &str) -> String {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    format!("{group}/{kind}")
}

impl Graph {
    /// Records an object as it is now; returns the uids to look at again.
    pub(crate) fn upsert(&mut self, node: Node) -> Vec<String> {
        let uid = node.uid.clone();
        let mut wake = vec![uid.clone()];
        for o in &node.owners {
            let kinds = self
                .dependent_kinds
                .entry(group_kind(&o.api_version, &o.kind))
                .or_default();
            if !kinds.contains(&node.res) {
                kinds.push(node.res);
            }
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
            // A dependent that appears under an owner being deleted must be handled by it.
            if self.nodes.get(&o.uid).is_some_and(|n| n.deleting) {
                wake.push(o.uid.clone());
            }
        }
        if let Some(old) = self.nodes.insert(uid.clone(), node) {
            for o in &old.owners {
                let now = self.nodes[&uid].owners.iter().find(|n| n.uid == o.uid);
                match now.map(|n| n.block) {
                    Some(block) if block == o.block => {}
                    // Unblocked: a foreground owner may be done waiting.
                    Some(_) => wake.push(o.uid.clone()),
                    None => {
                        self.unlink(&o.uid, &uid);
                        wake.push(o.uid.clone());
                    }
                }
            }
        }
        wake
    }

    /// Forgets a deleted object; returns the uids to look at again: its owners (one waiting
    /// for it in the foreground may be done) and its dependents (their owner is gone).
    pub(crate) fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut wake: Vec<String> = Vec::new();
        for o in &node.owners {
            self.unlink(&o.uid, uid);
            wake.push(o.uid.clone());
        }
        wake.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        wake
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    /// Every object's uid, to look at all of them once the graph is complete.
    pub(crate) fn uids(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The object with this uid, if it is known.
    pub(crate) fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    fn dependents_of(&self, uid: &str) -> Vec<&Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .collect()
    }

    fn kinds_to_check(&self, owner: &Node) -> Vec<&'static ResourceDef> {
        self.dependent_kinds
            .get(&group_kind(&owner.res.api_version(), owner.res.kind))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether an owner exists and is not being deleted.
    fn solid(&self, uid: &str) -> bool {
        self.nodes.get(uid).is_some_and(|n| !n.deleting)
    }

    /// What to do about the object with this uid, as the graph shows it now. The steps are
    /// idempotent; an empty plan means nothing to do until the next change.
    pub(crate) fn plan(&self, uid: &str) -> Vec<Step> {
        let Some(node) = self.nodes.get(uid) else {
            return Vec::new();
        };
        if node.deleting {
            if node.has_finalizer(ORPHAN) {
                let mut steps: Vec<Step> = self
                    .dependents_of(uid)
                    .into_iter()
                    .map(|d| Step::Unlink {
                        node: d.clone(),
                        owner: uid.to_string(),
                    })
                    .collect();
                steps.push(Step::Finalize {
                    node: node.clone(),
                    finalizer: ORPHAN,
                    check: self.kinds_to_check(node),
                });
                return steps;
            }
            if node.has_finalizer(FOREGROUND) {
                let mut steps = Vec::new();
                let mut blocked = false;
                for d in self.dependents_of(uid) {
                    let ours = d.owners.iter().find(|o| o.uid == uid);
                    let held_elsewhere =
                        d.owners.iter().any(|o| o.uid != uid && self.solid(&o.uid));
                    if held_elsewhere {
                        // Another owner still wants it: let go of it instead of deleting it.
                        steps.push(Step::Unlink {
                            node: d.clone(),
                            owner: uid.to_string(),
                        });
                        continue;
                    }
                    blocked |= ours.is_some_and(|o| o.block);
                    if !d.deleting {
                        steps.push(Step::Delete {
                            node: d.clone(),
                            owner: uid.to_string(),
                            foreground: true,
                        });
                    }
                }
                if !blocked {
                    steps.push(Step::Finalize {
                        node: node.clone(),
                        finalizer: FOREGROUND,
                        check: self.kinds_to_check(node),
                    });
                }
                return steps;
            }
            return Vec::new();
        }
        let gone: Vec<Owner> = node
            .owners
            .iter()
            .filter(|o| !self.nodes.contains_key(&o.uid))
            .cloned()
            .collect();
        if gone.is_empty() {
            Vec::new()
        } else if gone.len() == node.owners.len() {
            vec![Step::Collect(node.clone())]
        } else {
            vec![Step::DropDangling(node.clone(), gone)]
        }
    }
}

/// One definition per stored kind (a kind served in two versions is stored once).
pub(crate) fn stored_kinds() -> Vec<&'static ResourceDef> {
    let mut seen = HashSet::new();
    resources::RESOURCES
        .iter()
        .filter(|r| seen.insert(r.plural))
        .collect()
}

/// Whether the owner `o` of `node` is gone: no object of its kind and name, or one with
/// another uid. Owners of kinds that are not served are never judged gone.
async fn owner_gone(api: &Api, node: &Node, o: &Owner) -> Result<bool, ApiError> {
    let group = o.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let Some(res) = resources::by_kind(group, &o.kind) else {
        return Ok(false);
    };
    let ns = match (res.namespaced, node.ns()) {
        (false, _) => None,
        (true, Some(ns)) => Some(ns),
        // A cluster-scoped object cannot be owned by a namespaced one.
        (true, None) => return Ok(true),
    };
    match api.get(res, ns, &o.name) {
        Ok(found) => Ok(object::uid(&found) != o.uid),
        Err(e) if e.code == 404 => Ok(true),
        Err(e) => Err(e),
    }
}

fn ignore_gone(r: Result<impl Sized, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn strategic_patch(api: &Api, node: &Node, mut patch: Value) -> Result<(), ApiError> {
    // The uid makes the patch fail on an object recreated under the same name.
    patch["metadata"]["uid"] = json!(node.uid);
    ignore_gone(
        api.patch(
            node.res,
            node.ns(),
            &node.name,
            PatchType::Strategic,
            patch,
            Target::Main,
            &WriteOptions::default(),
        )
        .await,
    )
}

/// The object as stored now, if it is still the one the graph knows (same uid) and is not
/// already being deleted. The graph may lag behind: decisions about a dependent are taken on
/// its current ownerReferences.
fn latest(api: &Api, node: &Node) -> Result<Option<(Node, String)>, ApiError> {
    match api.get(node.res, node.ns(), &node.name) {
        Ok(obj) if object::uid(&obj) == node.uid && !object::is_terminating(&obj) => {
            let rv = object::meta_str(&obj, "resourceVersion").to_string();
            Ok(Node::of(node.res, &obj).map(|n| (n, rv)))
        }
        Ok(_) => Ok(None),
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes `node` as it was at `rv`: a dependent whose references changed since it was
/// judged is judged again (the conflict is retried).
async fn delete(api: &Api, node: &Node, rv: &str, policy: &str) -> Result<(), ApiError> {
    let opts = DeleteOptions {
        propagation_policy: Some(policy.into()),
        precondition_uid: Some(node.uid.clone()),
        precondition_rv: Some(rv.to_string()),
        ..Default::default()
    };
    match api.delete(node.res, node.ns(), &node.name, &opts).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        // Recreated under the same name: that object is not ours to delete.
        Err(e) if e.code == 409 && e.message.contains("Precondition failed: UID") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Carries out one step against the API.
pub(crate) async fn execute(api: &Api, step: &Step) -> Result<(), ApiError> {
    match step {
        Step::Collect(node) | Step::DropDangling(node, _) => {
            let Some((now, rv)) = latest(api, node)? else {
                return Ok(());
            };
            let mut gone = Vec::new();
            for o in &now.owners {
                if owner_gone(api, &now, o).await? {
                    gone.push(json!({"$patch": "delete", "uid": o.uid}));
                }
            }
            if gone.is_empty() {
                Ok(())
            } else if gone.len() == now.owners.len() {
                tracing::debug!(object = %now.key(), "collecting an object whose owners are gone");
                delete(api, &now, &rv, "Background").await
            } else {
                let patch = json!({"metadata": {"resourceVersion": rv, "ownerReferences": gone}});
                strategic_patch(api, &now, patch).await
            }
        }
        Step::Delete {
            node,
            owner,
            foreground,
        } => {
            let Some((now, rv)) = latest(api, node)? else {
                return Ok(());
            };
            if !now.owners.iter().any(|o| &o.uid == owner) {
                return Ok(());
            }
            let policy = if *foreground {
                "Foreground"
            } else {
                "Background"
            };
            delete(api, &now, &rv, policy).await
        }
        Step::Unlink { node, owner } => {
            let patch =
                json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner}]}});
            strategic_patch(api, node, patch).await
        }
        Step::Finalize {
            node,
            finalizer,
            check,
        } => {
            if !unseen_dependents_handled(api, node, finalizer, check).await? {
                return Ok(());
            }
            tracing::debug!(object = %node.key(), %finalizer, "dependents handled; removing the finalizer");
            let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [finalizer]}});
            strategic_patch(api, node, patch).await
        }
    }
}

/// Lists the kinds in `check` for dependents of `owner` and handles them as the plan would
/// have: Orphan unlinks them; Foreground deletes them. True when the finalizer may go now;
/// false when a blocking dependent is still there (its event wakes the owner again).
async fn unseen_dependents_handled(
    api: &Api,
    owner: &Node,
    finalizer: &str,
    check: &[&'static ResourceDef],
) -> Result<bool, ApiError> {
    let mut ready = true;
    for res in check {
        let ns = if res.namespaced { owner.ns() } else { None };
        if owner.ns().is_some() && !res.namespaced {
            continue;
        }
        for obj in api.list(res, ns, &ListOptions::default())?.items {
            let Some(dep) = Node::of(res, &obj) else {
                continue;
            };
            let Some(ours) = dep.owners.iter().find(|o| o.uid == owner.uid) else {
                continue;
            };
            // Under Foreground, a dependent with other owners is let go of (they decide).
            let step = if finalizer == ORPHAN || dep.owners.len() > 1 {
                Step::Unlink {
                    node: dep.clone(),
                    owner: owner.uid.clone(),
                }
            } else if dep.deleting {
                ready &= !ours.block;
                continue;
            } else {
                ready &= !ours.block;
                Step::Delete {
                    node: dep.clone(),
                    owner: owner.uid.clone(),
                    foreground: true,
                }
            };
            Box::pin(execute(api, &step)).await?;
        }
    }
    Ok(ready)
}

/// Runs a plan: the steps about dependents side by side, then the owner's finalizer if they
/// all succeeded.
async fn run_plan(api: Api, steps: Vec<Step>) -> Result<(), ApiError> {
    let (last, rest): (Vec<Step>, Vec<Step>) = steps
        .into_iter()
        .partition(|s| matches!(s, Step::Finalize { .. }));
    let each: Vec<BoxFuture<'static, Result<(), ApiError>>> = rest
        .into_iter()
        .map(|s| {
            let api = api.clone();
            async move { execute(&api, &s).await }.boxed()
        })
        .collect();
    let results: Vec<Result<(), ApiError>> = futures::stream::iter(each)
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), ApiError>>()?;
    for s in &last {
        execute(&api, s).await?;
    }
    Ok(())
}

type Done = (String, Result<(), ApiError>);

/// The work queue over the graph: each uid worked on by one task at a time; a change that
/// arrives meanwhile looks at it again afterwards; failures back off.
struct Collector {
    api: Api,
    graph: Graph,
    synced: bool,
    waiting: VecDeque<String>,
    queued: HashSet<String>,
    running: HashSet<String>,
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    retries: Vec<(Instant, String)>,
    tasks: FuturesUnordered<BoxFuture<'static, Done>>,
}

impl Collector {
    fn new(api: Api) -> Self {
        Self {
            api,
            graph: Graph::default(),
            synced: false,
            waiting: VecDeque::new(),
            queued: HashSet::new(),
            running: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            retries: Vec::new(),
            tasks: FuturesUnordered::new(),
        }
    }

    fn observe(&mut self, res: &'static ResourceDef, event: WatchEvent) {
        let wake = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => match Node::of(res, &o) {
                Some(node) => self.graph.upsert(node),
                None => Vec::new(),
            },
            WatchEvent::Deleted(o) => self.graph.remove(object::uid(&o)),
            WatchEvent::Bookmark { .. } | WatchEvent::Error(_) => Vec::new(),
        };
        for uid in wake {
            self.enqueue(uid);
        }
    }

    fn enqueue(&mut self, uid: String) {
        // Before every kind is listed, absence means nothing; the first full pass covers all.
        if !self.synced {
            return;
        }
        if self.running.contains(&uid) {
            self.dirty.insert(uid);
        } else if self.running.len() < WORKERS {
            self.start(uid);
        } else if self.queued.insert(uid.clone()) {
            self.waiting.push_back(uid);
        }
    }

    fn start(&mut self, uid: String) {
        let steps = self.graph.plan(&uid);
        if steps.is_empty() {
            self.failures.remove(&uid);
            return;
        }
        self.running.insert(uid.clone());
        let api = self.api.clone();
        self.tasks.push(
            async move {
                let result = run_plan(api, steps).await;
                (uid, result)
            }
            .boxed(),
        );
    }

    fn finished(&mut self, uid: String, result: Result<(), ApiError>) {
        self.running.remove(&uid);
        match result {
            Ok(()) => {
                self.failures.remove(&uid);
            }
            Err(e) => {
                let n = self.failures.entry(uid.clone()).or_default();
                *n += 1;
                let backoff = MIN_BACKOFF
                    .saturating_mul(1 << (*n - 1).min(16))
                    .min(MAX_BACKOFF);
                let object = self.graph.get(&uid).map(Node::key).unwrap_or_default();
                tracing::warn!(%object, error = %e.message, "garbage collection failed; retrying in {backoff:?}");
                self.retries.push((Instant::now() + backoff, uid.clone()));
            }
        }
        if self.dirty.remove(&uid) {
            self.enqueue(uid);
        }
        while self.running.len() < WORKERS
            && let Some(next) = self.waiting.pop_front()
        {
            self.queued.remove(&next);
            self.enqueue(next);
        }
    }

    fn next_retry(&self) -> Option<Instant> {
        self.retries.iter().map(|(at, _)| *at).min()
    }

    fn due_retries(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.retries.drain(..).partition(|(at, _)| *at <= now);
        self.retries = later;
        for (_, uid) in due {
            self.enqueue(uid);
        }
    }
}

/// Runs the garbage collector until `stop`.
pub async fn run(api: Api, stop: CancellationToken) {
    let kinds = stored_kinds();
    loop {
        let Some(mut watches) = super::runner::watch_kinds(&api, &kinds, true, &stop).await else {
            if stop.is_cancelled() {
                return;
            }
            continue;
        };
        let mut c = Collector::new(api.clone());
        let mut unsynced = kinds.len();
        loop {
            let retry = c.next_retry();
            tokio::select! {
                _ = stop.cancelled() => return,
                e = watches.next() => match e {
                    Some((_, WatchEvent::Bookmark { initial_end: true, .. })) => {
                        unsynced -= 1;
                        if unsynced == 0 {
                            c.synced = true;
                            tracing::debug!(objects = c.graph.nodes.len(), "garbage collector synced");
                            for uid in c.graph.uids() {
                                c.enqueue(uid);
                            }
                        }
                    }
                    // A watch ended or expired: start over from a fresh list.
                    Some((_, WatchEvent::Error(_))) | None => break,
                    Some((i, event)) => c.observe(kinds[i], event),
                },
                Some((uid, result)) = c.tasks.next(), if !c.tasks.is_empty() => {
                    c.finished(uid, result);
                }
                _ = async { tokio::time::sleep_until(retry.expect("guarded").into()).await },
                    if retry.is_some() => c.due_retries(),
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::api::Config;

    fn node(plural: &str, name: &str, uid: &str, owners: &[(&str, bool)]) -> Node {
        let res = resources::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .unwrap();
        Node {
            res,
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|(uid, block)| Owner {
                    uid: uid.to_string(),
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: format!("owner-{uid}"),
                    block: *block,
                })
                .collect(),
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn deleting(mut n: Node, finalizer: &str) -> Node {
        n.deleting = true;
        n.finalizers = vec![finalizer.to_string()];
        n
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Collect(n) => format!("collect {}", n.name),
                Step::DropDangling(n, o) => format!("drop {} of {}", o.len(), n.name),
                Step::Delete {
                    node, foreground, ..
                } => format!("delete {} fg={foreground}", node.name),
                Step::Unlink { node, .. } => format!("unlink {}", node.name),
                Step::Finalize {
                    node, finalizer, ..
                } => format!("finalize {} {finalizer}", node.name),
            })
            .collect()
    }

    #[test]
    fn a_dependent_is_collected_only_when_all_its_owners_are_gone() {
        let mut g = Graph::default();
        g.upsert(node("configmaps", "a", "A", &[]));
        g.upsert(node("configmaps", "b", "B", &[]));
        g.upsert(node("pods", "p", "P", &[("A", false), ("B", false)]));
        assert!(g.plan("P").is_empty(), "both owners exist");

        let wake = g.remove("A");
        assert!(
            wake.contains(&"P".to_string()),
            "the dependent is looked at again"
        );
        assert_eq!(kinds(&g.plan("P")), ["drop 1 of p"]);

        g.remove("B");
        assert_eq!(kinds(&g.plan("P")), ["collect p"]);

        // An owner known only by a uid that no object has is gone (recreated owners get new uids).
        g.upsert(node("configmaps", "c", "C", &[("never-seen", false)]));
        assert_eq!(kinds(&g.plan("C")), ["collect c"]);
    }

    #[test]
    fn foreground_deletes_dependents_and_finishes_when_no_blocking_one_is_left() {
        let mut g = Graph::default();
        g.upsert(node("deployments", "d", "D", &[]));
        g.upsert(node("replicasets", "rs", "R", &[("D", true)]));
        g.upsert(node("pods", "loose", "L", &[("D", false)]));
        g.upsert(deleting(node("deployments", "d", "D", &[]), FOREGROUND));
        let mut plan = kinds(&g.plan("D"));
        plan.sort();
        assert_eq!(plan, ["delete loose fg=true", "delete rs fg=true"]);

        // A dependent being deleted is not deleted again, and still blocks.
        g.upsert(deleting(
            node("replicasets", "rs", "R", &[("D", true)]),
            FOREGROUND,
        ));
        assert_eq!(kinds(&g.plan("D")), ["delete loose fg=true"]);

        // A non-blocking dependent does not hold the owner.
        let wake = g.remove("R");
        assert!(
            wake.contains(&"D".to_string()),
            "the owner is looked at again"
        );
        assert_eq!(
            kinds(&g.plan("D")),
            ["delete loose fg=true", "finalize d foregroundDeletion"]
        );
        g.remove("L");
        assert_eq!(kinds(&g.plan("D")), ["finalize d foregroundDeletion"]);
    }

    #[test]
    fn foreground_lets_go_of_a_dependent_another_owner_keeps() {
        let mut g = Graph::default();
        g.upsert(deleting(node("configmaps", "a", "A", &[]), FOREGROUND));
        g.upsert(node("configmaps", "b", "B", &[]));
        g.upsert(node("pods", "p", "P", &[("A", true), ("B", false)]));
        assert_eq!(
            kinds(&g.plan("A")),
            ["unlink p", "finalize a foregroundDeletion"]
        );
    }

    #[test]
    fn orphan_unlinks_every_dependent_then_finishes() {
        let mut g = Graph::default();
        g.upsert(node("replicasets", "rs", "R", &[("D", true)]));
        g.upsert(node("pods", "p", "P", &[("R", true)]));
        g.upsert(deleting(node("deployments", "d", "D", &[]), ORPHAN));
        assert_eq!(kinds(&g.plan("D")), ["unlink rs", "finalize d orphan"]);
        // An owner held by someone else's finalizer is left alone, and so are its dependents.
        g.upsert(deleting(
            node("deployments", "d", "D", &[]),
            "example.com/hold",
        ));
        assert!(g.plan("D").is_empty());
        assert!(g.plan("R").is_empty(), "its owner still exists");
    }

    #[test]
    fn a_dependent_dropping_its_reference_wakes_the_owner() {
        let mut g = Graph::default();
        g.upsert(deleting(node("configmaps", "a", "A", &[]), FOREGROUND));
        g.upsert(node("pods", "p", "P", &[("A", true)]));
        assert_eq!(kinds(&g.plan("A")), ["delete p fg=true"]);
        let wake = g.upsert(node("pods", "p", "P", &[]));
        assert!(wake.contains(&"A".to_string()));
        assert_eq!(kinds(&g.plan("A")), ["finalize a foregroundDeletion"]);
        // A dependent appearing under an owner being deleted wakes the owner.
        let wake = g.upsert(node("pods", "q", "Q", &[("A", true)]));
        assert!(wake.contains(&"A".to_string()));
    }

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    async fn configmap(api: &Api, name: &str, owner: Option<&Value>) -> Value {
        let mut obj = json!({"metadata": {"name": name}});
        if let Some(o) = owner {
            obj["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
                "name": object::name(o), "uid": object::uid(o), "blockOwnerDeletion": true}]);
        }
        api.create(
            resources::core("configmaps"),
            Some("default"),
            obj,
            &WriteOptions::default(),
        )
        .await
        .unwrap()
        .object
    }

    fn exists(api: &Api, name: &str) -> bool {
        api.get(resources::core("configmaps"), Some("default"), name)
            .is_ok()
    }

    async fn delete(api: &Api, name: &str, policy: &str) {
        let opts = DeleteOptions {
            propagation_policy: Some(policy.into()),
            ..Default::default()
        };
        api.delete(resources::core("configmaps"), Some("default"), name, &opts)
            .await
            .unwrap();
    }

    /// Deletes made while no collector runs (as before a crash) are finished by one started
    /// afterwards, from the stored objects alone.
    #[tokio::test]
    async fn a_collector_started_later_finishes_what_is_stored() {
        let (api, _dir) = api().await;
        let bg = configmap(&api, "bg", None).await;
        let bg_child = configmap(&api, "bg-child", Some(&bg)).await;
        configmap(&api, "bg-grandchild", Some(&bg_child)).await;
        let fg = configmap(&api, "fg", None).await;
        configmap(&api, "fg-child", Some(&fg)).await;
        let or = configmap(&api, "or", None).await;
        configmap(&api, "or-child", Some(&or)).await;
        delete(&api, "bg", "Background").await;
        delete(&api, "fg", "Foreground").await;
        delete(&api, "or", "Orphan").await;
        assert!(!exists(&api, "bg"));
        assert!(
            exists(&api, "fg") && exists(&api, "or"),
            "held by finalizers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(exists(&api, "bg-child") && exists(&api, "fg-child") && exists(&api, "or-child"));

        let stop = CancellationToken::new();
        let gc = tokio::spawn(run(api.clone(), stop.clone()));
        for _ in 0..200 {
            if !exists(&api, "bg-grandchild") && !exists(&api, "fg") && !exists(&api, "or") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        gc.await.unwrap();
        assert!(!exists(&api, "bg-child"), "the dependent of a gone owner");
        assert!(
            !exists(&api, "bg-grandchild"),
            "and its own dependent, in turn"
        );
        assert!(
            !exists(&api, "fg-child") && !exists(&api, "fg"),
            "foreground"
        );
        assert!(!exists(&api, "or"), "orphan: the owner goes");
        let kept = api
            .get(resources::core("configmaps"), Some("default"), "or-child")
            .unwrap();
        assert!(
            kept["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|a| a.is_empty()),
            "orphan: the dependent stays, without the reference: {kept}"
        );
    }

    /// The graph may lag behind the store: a step is judged on the object as stored.
    #[tokio::test]
    async fn steps_are_judged_on_the_stored_object_not_the_graph() {
        let (api, _dir) = api().await;
        let owner = configmap(&api, "owner", None).await;
        let child = configmap(&api, "child", Some(&owner)).await;
        let stale = Node::of(resources::core("configmaps"), &child).unwrap();
        // The child let go of its owner, which is then deleted; the graph has not seen it yet.
        let cms = resources::core("configmaps");
        let unlink = json!({"metadata": {"ownerReferences": null}});
        api.patch(
            cms,
            Some("default"),
            "child",
            PatchType::Merge,
            unlink,
            Target::Main,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
        delete(&api, "owner", "Background").await;
        execute(&api, &Step::Collect(stale.clone())).await.unwrap();
        assert!(
            exists(&api, "child"),
            "an object no longer owned is not collected"
        );
        let fg = Step::Delete {
            node: stale,
            owner: object::uid(&owner).to_string(),
            foreground: true,
        };
        execute(&api, &fg).await.unwrap();
        assert!(exists(&api, "child"), "nor deleted for an owner it left");
    }

    /// An owner's finalizer goes only when a list of the kinds its kind owns finds no dependent
    /// the graph has not seen yet.
    #[tokio::test]
    async fn finalizers_wait_for_dependents_the_graph_has_not_seen() {
        let (api, _dir) = api().await;
        let cms = resources::core("configmaps");
        let fg = configmap(&api, "fg", None).await;
        configmap(&api, "fg-child", Some(&fg)).await;
        let or = configmap(&api, "or", None).await;
        configmap(&api, "or-child", Some(&or)).await;
        delete(&api, "fg", "Foreground").await;
        delete(&api, "or", "Orphan").await;
        let node_of = |name: &str| Node::of(cms, &api.get(cms, Some("default"), name).unwrap());
        let finalize = |node: Node, finalizer| Step::Finalize {
            node,
            finalizer,
            check: vec![cms],
        };
        execute(&api, &finalize(node_of("fg").unwrap(), FOREGROUND))
            .await
            .unwrap();
        assert!(exists(&api, "fg"), "a blocking dependent was still there");
        let child = node_of("fg-child").unwrap();
        assert!(
            child.deleting && child.has_finalizer(FOREGROUND),
            "and it is deleted in the foreground in turn"
        );
        execute(&api, &finalize(child, FOREGROUND)).await.unwrap();
        assert!(!exists(&api, "fg-child"));
        execute(&api, &finalize(node_of("fg").unwrap(), FOREGROUND))
            .await
            .unwrap();
        assert!(!exists(&api, "fg"), "nothing left: the owner goes");

        execute(&api, &finalize(node_of("or").unwrap(), ORPHAN))
            .await
            .unwrap();
        assert!(!exists(&api, "or"));
        let kept = api.get(cms, Some("default"), "or-child").unwrap();
        assert!(
            kept["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|a| a.is_empty())
        );
    }
}
