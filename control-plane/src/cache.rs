//! The watch cache, in the spirit of kube-apiserver's cacher: the one read path between the
//! store and its clients.
//!
//! It holds every committed object (never a write still waiting for its flush: the store hands
//! it each batch only once durable), indexed once per change (labels and the fields a field
//! selector may name), and a history of changes, each with the object it replaced, kept for a
//! while (`Config::ttl`) and bounded by bytes and count. From it:
//! - lists at the latest revision or exactly at an older one still in the history (so every
//!   page of a paged list is read at the revision of its first page);
//! - watches from any retained revision: the history is replayed, then live changes follow;
//!   whether an object entered or left a selector is decided from the object each change
//!   replaced, also on resume; progress (bookmarks) is the cache's revision, so a watcher that
//!   sees nothing still moves forward;
//! - watchers registered by what they select: a change is offered only to the watchers whose
//!   bucket it falls into (its resource, or an exact field value such as `spec.nodeName=n1`),
//!   so an event about one node costs the other nodes' watches nothing.
//!
//! A watcher that cannot keep up is dropped from dispatch and catches up from the history on
//! its own, as the store's watches do; one that falls out of the history gets 410 Expired.
//! Dropping a [`Watch`] unregisters it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::store::{self, Event, EventKind, KeyValue, Store};

/// How much history the cache keeps.
#[derive(Debug, Clone)]
pub struct Config {
    /// Changes younger than this are kept (unless the bounds below are hit first).
    pub ttl: Duration,
    /// At most about this many bytes of objects in the history.
    pub max_bytes: usize,
    /// At most this many changes in the history.
    pub max_events: usize,
}

impl Default for Config {
    /// Five minutes (etcd's default compaction interval), at most 64 MiB.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_bytes: 64 << 20,
            max_events: usize::MAX,
        }
    }
}

/// What a selector may look at, computed once per stored value.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// `metadata.labels` (an object, or null).
    pub labels: Value,
    /// Selectable fields and their string values (`metadata.name`, `spec.nodeName`, ...).
    pub fields: Vec<(&'static str, String)>,
    /// The uids of the object's owners (`metadata.ownerReferences`).
    pub owners: Vec<String>,
    /// The uid of its controlling owner ("" when none).
    pub controller: String,
}

impl Index {
    /// The value of a selectable field ("" when the kind has no such field).
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(f, _)| *f == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// What the API layer makes of a stored value, once per version: its [`Index`], and the bytes
/// it serves (the object with its resourceVersion, so lists and watches send them as they
/// are).
#[derive(Debug, Clone, Default)]
pub struct Indexed {
    /// What selectors look at.
    pub index: Index,
    /// The value as served.
    pub served: bytes::Bytes,
    /// Where in `served` the resourceVersion's digits are, when they are there (a version
    /// re-stamped at another revision only swaps them).
    pub revision_at: Option<std::ops::Range<usize>>,
}

/// Makes the [`Indexed`] form of a stored key and value; given by the API layer, which knows
/// the kinds.
pub type Indexer = Arc<dyn Fn(&KeyValue) -> Indexed + Send + Sync>;

/// One committed object: one copy of it, in the form the API serves.
#[derive(Debug)]
pub struct Object {
    /// The key, served value and revisions (for a deleted object: the last value, at the
    /// delete's revision).
    pub kv: KeyValue,
    /// What selectors look at.
    pub index: Index,
    /// Where the resourceVersion's digits are in `kv.value`, if it carries them.
    pub revision_at: Option<std::ops::Range<usize>>,
    /// The object decoded for in-process readers (controllers, the scheduler), shared by all
    /// of them while any holds it; weak, so the cache itself keeps only the one served copy.
    pub decoded: Mutex<Weak<Value>>,
}

impl Object {
    fn make(mut kv: KeyValue, indexer: &Indexer) -> Self {
        let Indexed {
            index,
            served,
            revision_at,
        } = indexer(&kv);
        kv.value = served;
        Self {
            kv,
            index,
            revision_at,
            decoded: Mutex::new(Weak::new()),
        }
    }

    /// The same content at another revision (a deleted object's last value at the delete,
    /// an object's last matching content when it leaves a selector).
    fn at(&self, revision: u64) -> Self {
        let digits = revision.to_string();
        let (value, revision_at) = match &self.revision_at {
            Some(r) => {
                let old = &self.kv.value;
                let mut v = Vec::with_capacity(old.len() + digits.len());
                v.extend_from_slice(&old[..r.start]);
                v.extend_from_slice(digits.as_bytes());
                v.extend_from_slice(&old[r.end..]);
                (v.into(), Some(r.start..r.start + digits.len()))
            }
            None => (self.kv.value.clone(), None),
        };
        Self {
            kv: KeyValue {
                value,
                mod_revision: revision,
                ..self.kv.clone()
            },
            index: self.index.clone(),
            revision_at,
            decoded: Mutex::new(Weak::new()),
        }
    }
}

/// One committed change with the object it replaced.
#[derive(Debug)]
pub struct Change {
    /// The change's revision.
    pub revision: u64,
    /// What happened.
    pub kind: EventKind,
    /// The object after the change; for a delete, the last value at the delete's revision.
    pub object: Arc<Object>,
    /// The object before the change (`None` for a create).
    pub prev: Option<Arc<Object>>,
    time_ms: u64,
}

impl Change {
    /// About what the change holds in memory: its object (a delete's is a copy of the
    /// replaced one) with its index.
    fn bytes(&self) -> usize {
        let o = &self.object;
        let index: usize = o.index.fields.iter().map(|(_, v)| v.len() + 40).sum();
        o.kv.value.len() + o.kv.key.len() + index + 160
    }
}

/// Failures of reads from the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The revision asked for is older than the history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still served.
        oldest: u64,
    },
    /// The revision asked for is newer than the cache.
    #[error("too large resource version: {requested}, current: {current}")]
    TooLarge {
        /// The revision asked for.
        requested: u64,
        /// The cache's revision.
        current: u64,
    },
}

/// Which revision a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The latest committed revision.
    Latest,
    /// Exactly this revision (it must still be in the history).
    Exact(u64),
}

/// A page of a list.
#[derive(Debug)]
pub struct Page {
    /// The matching objects in key order.
    pub items: Vec<Arc<Object>>,
    /// The last key looked at, when keys follow it (the next page starts after it).
    pub next: Option<String>,
    /// The revision the page was read at.
    pub revision: u64,
}

/// Whether an object is selected.
pub type Filter = Arc<dyn Fn(&Object) -> bool + Send + Sync>;

/// What a watch selects.
#[derive(Clone)]
pub struct Selection {
    /// Keys under this prefix.
    pub prefix: String,
    /// Objects that pass this filter.
    pub filter: Filter,
    /// A field the filter requires to have exactly this value (e.g. `spec.nodeName`): the
    /// watch is then offered only the changes whose object has, or had, that value.
    pub exact_field: Option<(&'static str, String)>,
}

/// What a watch delivers.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The object is new to the watcher.
    Added(Arc<Object>),
    /// The object changed and still matches.
    Modified(Arc<Object>),
    /// The object was deleted or stopped matching: its last matching content, at the
    /// revision of the change.
    Deleted(Arc<Object>),
    /// Everything up to this revision has been delivered.
    Bookmark(u64),
}

/// Changes a watcher may have pending before dispatch leaves it to catch up on its own.
pub(crate) const WATCH_BUFFER: usize = 1024;

/// The cache over one store.
pub struct Cache {
    state: Mutex<State>,
    config: Config,
    indexer: Indexer,
    progress: watch::Sender<u64>,
    /// Versions decoded for in-process readers (see [`Cache::decodes`]).
    decodes: AtomicU64,
}

struct State {
    objects: BTreeMap<String, Arc<Object>>,
    history: VecDeque<Arc<Change>>,
    history_bytes: usize,
    /// Every change up to here is applied.
    revision: u64,
    /// Every change after here is in the history.
    oldest: u64,
    /// The keys of the objects naming each owner uid in their ownerReferences.
    dependents: Dependents,
    watchers: HashMap<u64, Arc<Registered>>,
    buckets: HashMap<Bucket, Vec<u64>>,
    next_id: u64,
    /// Changes offered to watchers so far (each change once per watcher it is looked at for).
    offered: u64,
}

/// Watchers of one resource, either all of them or those requiring one field value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bucket {
    resource: String,
    field: Option<(&'static str, String)>,
}

struct Registered {
    prefix: String,
    bucket: Bucket,
    tx: mpsc::Sender<Arc<Change>>,
}

impl Cache {
    /// Loads every object and the retained history from `store` and follows its commits.
    /// Call it before anything writes to the store.
    pub fn open(store: &dyn Store, config: Config, indexer: Indexer) -> store::Result<Arc<Self>> {
        let started = std::time::Instant::now();
        let revision = store.revision();
        let compacted = store.compacted_revision();
        // The objects and the history are read from the store at once, on two threads.
        let (objects, changes) = std::thread::scope(|scope| {
            let changes = scope.spawn(|| store.changes(compacted));
            let objects = (|| {
                let mut objects = BTreeMap::new();
                let mut after: Option<String> = None;
                loop {
                    let page = store.range("/registry/", after.as_deref(), 4096)?;
                    for kv in page.kvs {
                        after = Some(kv.key.clone());
                        objects.insert(kv.key.clone(), Arc::new(Object::make(kv, &indexer)));
                    }
                    if !page.more {
                        break;
                    }
                }
                store::Result::Ok(objects)
            })();
            let changes = changes
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (objects, changes)
        });
        let (objects, changes) = (objects?, changes?);
        let mut state = State {
            objects,
            history: VecDeque::new(),
            history_bytes: 0,
            revision,
            oldest: compacted,
            dependents: HashMap::new(),
            watchers: HashMap::new(),
            buckets: HashMap::new(),
            next_id: 0,
            offered: 0,
        };
        for o in state.objects.values() {
            add_dependent(&mut state.dependents, o);
        }
        // Each version is indexed once: a change's object is the current one, or the one an
        // earlier change in the history made, whenever it can be.
        let mut made: HashMap<String, Arc<Object>> = HashMap::new();
        let loaded = changes.len();
        for event in changes {
            let reuse = |kv: &KeyValue, made: &HashMap<String, Arc<Object>>| {
                made.get(&kv.key)
                    .or_else(|| state.objects.get(&kv.key))
                    .filter(|o| o.kv.mod_revision == kv.mod_revision)
                    .cloned()
            };
            let prev = event.prev.as_ref().map(|p| {
                reuse(p, &made).unwrap_or_else(|| Arc::new(Object::make(p.clone(), &indexer)))
            });
            let object = match (event.kind, &prev) {
                (EventKind::Delete, Some(p)) => Arc::new(p.at(event.kv.mod_revision)),
                _ => reuse(&event.kv, &made)
                    .unwrap_or_else(|| Arc::new(Object::make(event.kv.clone(), &indexer))),
            };
            made.insert(event.kv.key.clone(), object.clone());
            let change = Arc::new(Change {
                revision: event.kv.mod_revision,
                kind: event.kind,
                object,
                prev,
                time_ms: event.time_ms,
            });
            state.history_bytes += change.bytes();
            state.history.push_back(change);
        }
        let (progress, _) = watch::channel(revision);
        let cache = Arc::new(Self {
            state: Mutex::new(state),
            config,
            indexer,
            progress,
            decodes: AtomicU64::new(0),
        });
        {
            let mut state = cache.lock();
            cache.trim(&mut state);
            tracing::info!(
                objects = state.objects.len(),
                changes = loaded,
                kept = state.history.len(),
                ms = started.elapsed().as_millis() as u64,
                "watch cache loaded"
            );
        }
        let follower = Arc::downgrade(&cache);
        store.on_commit(Arc::new(move |events: &[Event]| {
            if let Some(cache) = follower.upgrade() {
                cache.apply(events);
            }
        }));
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest revision the cache holds.
    pub fn revision(&self) -> u64 {
        *self.progress.borrow()
    }

    /// The oldest revision lists and watches may start from.
    pub fn oldest(&self) -> u64 {
        self.lock().oldest
    }

    /// Counts one decode of a cached version for in-process readers.
    pub fn count_decode(&self) {
        self.decodes.fetch_add(1, Ordering::Relaxed);
    }

    /// How many cached versions were decoded for in-process readers
    /// (`skiff_cache_decodes_total`).
    pub fn decodes(&self) -> u64 {
        self.decodes.load(Ordering::Relaxed)
    }

    /// How many watchers are registered.
    pub fn watchers(&self) -> usize {
        self.lock().watchers.len()
    }

    /// How many times a change was offered to a watcher (what dispatch costs), for
    /// `/metrics`.
    pub fn offered(&self) -> u64 {
        self.lock().offered
    }

    /// Waits up to `timeout` for the cache to reach `revision`; false when it did not.
    pub async fn wait_for(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.progress.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Applies a committed batch (the store's commit listener).
    fn apply(&self, events: &[Event]) {
        let mut state = self.lock();
        for event in events {
            let rev = event.kv.mod_revision;
            if rev <= state.revision {
                continue;
            }
            let key = event.kv.key.clone();
            let cached = state.objects.get(&key).cloned();
            // The cache holds every object a change replaces, already indexed; the event's
            // own copy is the fallback, so a commit can never fail here.
            let change = Arc::new(change_of(&self.indexer, event.clone(), |prev, indexer| {
                cached
                    .filter(|c| c.kv.mod_revision == prev.mod_revision)
                    .unwrap_or_else(|| Arc::new(Object::make(prev, indexer)))
            }));
            if let Some(old) = state.objects.remove(&key) {
                remove_dependent(&mut state.dependents, &old);
            }
            if change.kind != EventKind::Delete {
                add_dependent(&mut state.dependents, &change.object);
                state.objects.insert(key, change.object.clone());
            }
            state.revision = rev;
            state.history_bytes += change.bytes();
            state.dispatch(&change);
            state.history.push_back(change);
        }
        self.trim(&mut state);
        let revision = state.revision;
        drop(state);
        self.progress.send_replace(revision);
    }

    fn trim(&self, state: &mut State) {
        let now = now_ms();
        let ttl = self.config.ttl.as_millis() as u64;
        while let Some(front) = state.history.front() {
            let old = now.saturating_sub(front.time_ms) > ttl;
            if !(old
                || state.history_bytes > self.config.max_bytes
                || state.history.len() > self.config.max_events)
            {
                break;
            }
            state.history_bytes -= front.bytes();
            state.oldest = front.revision;
            state.history.pop_front();
        }
    }

    /// Reads one object.
    pub fn get(&self, key: &str) -> (Option<Arc<Object>>, u64) {
        let state = self.lock();
        (state.objects.get(key).cloned(), state.revision)
    }

    /// The latest objects under `prefix` that name `owner_uid` in their ownerReferences, in
    /// key order.
    pub fn dependents(&self, prefix: &str, owner_uid: &str) -> Vec<Arc<Object>> {
        let state = self.lock();
        let Some(keys) = state.dependents.get(owner_uid) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|k| k.starts_with(prefix))
            .filter_map(|k| state.objects.get(k).cloned())
            .collect()
    }

    /// Lists the objects under `prefix` after `start_after` that pass `filter`, at most `limit`
    /// of them (0 = all), at revision `at`.
    pub fn list(
        &self,
        prefix: &str,
        at: At,
        start_after: Option<&str>,
        limit: usize,
        filter: &(dyn Fn(&Object) -> bool + '_),
    ) -> Result<Page, Error> {
        let state = self.lock();
        let revision = match at {
            At::Latest => state.revision,
            At::Exact(r) if r > state.revision => {
                return Err(Error::TooLarge {
                    requested: r,
                    current: state.revision,
                });
            }
            At::Exact(r) if r < state.oldest => {
                return Err(Error::Expired {
                    requested: r,
                    oldest: state.oldest,
                });
            }
            At::Exact(r) => r,
        };
        let lower = match start_after {
            Some(after) => Bound::Excluded(after.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        let in_range =
            |key: &str| key.starts_with(prefix) && start_after.is_none_or(|after| key > after);
        // What each key changed since `revision` held then (None: it did not exist).
        let mut then: BTreeMap<&str, Option<&Arc<Object>>> = BTreeMap::new();
        for change in state.history.iter().rev() {
            if change.revision <= revision {
                break;
            }
            let key = change.object.kv.key.as_str();
            if in_range(key) {
                then.insert(key, change.prev.as_ref());
            }
        }
        let current = state
            .objects
            .range::<String, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| (k.as_str(), o));
        let mut items = Vec::new();
        let mut next = None;
        let mut last = None;
        for (key, object) in merge(current, then) {
            if limit > 0 && items.len() == limit {
                next = last;
                break;
            }
            last = Some(key);
            if let Some(object) = object
                && filter(object)
            {
                items.push(object.clone());
            }
        }
        Ok(Page {
            items,
            next: next.map(str::to_string),
            revision,
        })
    }

    /// Watches `selection` from revision `after`: every change after it, then live ones.
    /// With `bookmarks`, progress is reported at that interval while nothing is pending.
    pub fn watch(
        self: &Arc<Self>,
        selection: Selection,
        after: u64,
        bookmarks: Option<Duration>,
    ) -> Result<Watch, Error> {
        let Registration { replay, rx, id } = self.register(&selection, after)?;
        Ok(Watch {
            cache: self.clone(),
            selection,
            replay,
            rx,
            id,
            last: after,
            bookmarks: bookmarks.map(|every| {
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            }),
        })
    }

    fn register(&self, selection: &Selection, after: u64) -> Result<Registration, Error> {
        let mut state = self.lock();
        if after < state.oldest {
            return Err(Error::Expired {
                requested: after,
                oldest: state.oldest,
            });
        }
        if after > state.revision {
            return Err(Error::TooLarge {
                requested: after,
                current: state.revision,
            });
        }
        let start = state.history.partition_point(|c| c.revision <= after);
        let replay = state
            .history
            .range(start..)
            .filter(|c| c.object.kv.key.starts_with(&selection.prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let bucket = Bucket {
            resource: resource_of(&selection.prefix).to_string(),
            field: selection.exact_field.clone(),
        };
        let id = state.next_id;
        state.next_id += 1;
        state.buckets.entry(bucket.clone()).or_default().push(id);
        state.watchers.insert(
            id,
            Arc::new(Registered {
                prefix: selection.prefix.clone(),
                bucket,
                tx,
            }),
        );
        Ok(Registration { replay, rx, id })
    }

    fn unregister(&self, id: u64) {
        self.lock().remove_watcher(id);
    }

    /// Current progress if nothing is pending for watcher `id` (checked under the lock, so no
    /// change at or below the answer can still be on its way). `None` also when dispatch
    /// dropped the watcher: what it missed must be replayed first.
    fn progress_for(&self, id: u64, rx: &mpsc::Receiver<Arc<Change>>) -> Option<u64> {
        let state = self.lock();
        (state.watchers.contains_key(&id) && rx.is_empty()).then_some(state.revision)
    }
}

/// A registered watcher: what it missed from the history, and its live feed.
struct Registration {
    replay: VecDeque<Arc<Change>>,
    rx: mpsc::Receiver<Arc<Change>>,
    id: u64,
}

impl State {
    fn dispatch(&mut self, change: &Arc<Change>) {
        let resource = resource_of(&change.object.kv.key);
        let mut buckets = vec![Bucket {
            resource: resource.to_string(),
            field: None,
        }];
        for object in std::iter::once(&change.object).chain(change.prev.as_ref()) {
            for (field, value) in &object.index.fields {
                let bucket = Bucket {
                    resource: resource.to_string(),
                    field: Some((*field, value.clone())),
                };
                if !buckets.contains(&bucket) {
                    buckets.push(bucket);
                }
            }
        }
        let mut lagging = Vec::new();
        for bucket in &buckets {
            let Some(ids) = self.buckets.get(bucket) else {
                continue;
            };
            self.offered += ids.len() as u64;
            for id in ids {
                let w = &self.watchers[id];
                if !change.object.kv.key.starts_with(&w.prefix) {
                    continue;
                }
                // A full buffer drops the watcher from dispatch; it catches up from the
                // history when it has drained what it holds.
                if w.tx.try_send(change.clone()).is_err() {
                    lagging.push(*id);
                }
            }
        }
        for id in lagging {
            self.remove_watcher(id);
        }
    }

    fn remove_watcher(&mut self, id: u64) {
        if let Some(w) = self.watchers.remove(&id)
            && let Some(ids) = self.buckets.get_mut(&w.bucket)
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.buckets.remove(&w.bucket);
            }
        }
    }
}

/// A watch on the cache; dropping it unregisters it.
pub struct Watch {
    cache: Arc<Cache>,
    selection: Selection,
    replay: VecDeque<Arc<Change>>,
    rx: mpsc::Receiver<Arc<Change>>,
    id: u64,
    /// The revision of the last change looked at (delivered or filtered out).
    last: u64,
    bookmarks: Option<tokio::time::Interval>,
}

impl Watch {
    /// The next delivery, or an error when the watcher fell out of the history while catching
    /// up (after which the watch is over).
    pub async fn next(&mut self) -> Result<Delivery, Error> {
        loop {
            let change = match self.replay.pop_front() {
                Some(c) => c,
                None => {
                    let received = match &mut self.bookmarks {
                        Some(ticks) => tokio::select! {
                            c = self.rx.recv() => c,
                            _ = ticks.tick() => {
                                if let Some(rev) = self.cache.progress_for(self.id, &self.rx) {
                                    self.last = self.last.max(rev);
                                    return Ok(Delivery::Bookmark(self.last));
                                }
                                continue;
                            }
                        },
                        None => self.rx.recv().await,
                    };
                    match received {
                        Some(c) => c,
                        None => {
                            self.catch_up()?;
                            continue;
                        }
                    }
                }
            };
            if change.revision <= self.last {
                continue;
            }
            self.last = change.revision;
            if let Some(d) = self.deliver(&change) {
                return Ok(d);
            }
        }
    }

    /// After dispatch dropped this watcher for a full buffer: registers again and replays
    /// what it missed from the history.
    fn catch_up(&mut self) -> Result<(), Error> {
        self.cache.unregister(self.id);
        let Registration { replay, rx, id } = self.cache.register(&self.selection, self.last)?;
        self.replay = replay;
        self.rx = rx;
        self.id = id;
        Ok(())
    }

    fn deliver(&self, change: &Change) -> Option<Delivery> {
        let filter = &self.selection.filter;
        let now = change.kind != EventKind::Delete && filter(&change.object);
        let before = change.prev.as_ref().is_some_and(|p| filter(p));
        match (before, now) {
            (false, true) => Some(Delivery::Added(change.object.clone())),
            (true, true) => Some(Delivery::Modified(change.object.clone())),
            // A delete's object already is the last content at the delete's revision.
            (true, false) if change.kind == EventKind::Delete => {
                Some(Delivery::Deleted(change.object.clone()))
            }
            (true, false) => {
                // The last content the watcher was entitled to, at the change's revision.
                let prev = change.prev.as_ref().expect("before implies prev");
                Some(Delivery::Deleted(Arc::new(prev.at(change.revision))))
            }
            (false, false) => None,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.cache.unregister(self.id);
    }
}

type Dependents = HashMap<String, BTreeSet<String>>;

fn add_dependent(dependents: &mut Dependents, o: &Object) {
    for uid in &o.index.owners {
        dependents
            .entry(uid.clone())
            .or_default()
            .insert(o.kv.key.clone());
    }
}

fn remove_dependent(dependents: &mut Dependents, o: &Object) {
    for uid in &o.index.owners {
        if let Some(keys) = dependents.get_mut(uid) {
            keys.remove(&o.kv.key);
            if keys.is_empty() {
                dependents.remove(uid);
            }
        }
    }
}

/// Builds a change from a store event; `prev_of` supplies the replaced object.
fn change_of(
    indexer: &Indexer,
    event: Event,
    prev_of: impl FnOnce(KeyValue, &Indexer) -> Arc<Object>,
) -> Change {
    let prev = event.prev.map(|p| prev_of(p, indexer));
    let object = match (&event.kind, &prev) {
        (EventKind::Delete, Some(p)) => Arc::new(p.at(event.kv.mod_revision)),
        _ => Arc::new(Object::make(event.kv, indexer)),
    };
    Change {
        revision: object.kv.mod_revision,
        kind: event.kind,
        object,
        prev,
        time_ms: event.time_ms,
    }
}

/// Merges the current objects with what changed keys held at an older revision.
fn merge<'a>(
    current: impl Iterator<Item = (&'a str, &'a Arc<Object>)>,
    then: BTreeMap<&'a str, Option<&'a Arc<Object>>>,
) -> impl Iterator<Item = (&'a str, Option<&'a Arc<Object>>)> {
    let mut current = current.peekable();
    let mut then = then.into_iter().peekable();
    std::iter::from_fn(move || match (current.peek(), then.peek()) {
        (None, None) => None,
        (Some(_), None) => current.next().map(|(k, o)| (k, Some(o))),
        (None, Some(_)) => then.next(),
        (Some((ck, _)), Some((tk, _))) => match ck.cmp(tk) {
            std::cmp::Ordering::Less => current.next().map(|(k, o)| (k, Some(o))),
            std::cmp::Ordering::Greater => then.next(),
            std::cmp::Ordering::Equal => {
                current.next();
                then.next()
            }
        },
    })
}

/// `pods` of `/registry/pods/ns/name` (or of the prefix `/registry/pods/`).
fn resource_of(key: &str) -> &str {
    key.strip_prefix("/registry/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
