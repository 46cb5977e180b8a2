//! The internal API: the one path every write takes, whoever makes it.
//!
//! HTTP handlers, the scheduler and controllers all call [`Api`]: type checks, defaulting,
//! validation and metadata rules run here, then the store. The HTTP layer only translates.

pub mod admission;
mod convert;
pub mod error;
mod lifecycle;
mod limits;
pub mod object;
pub mod patch;
pub(crate) mod quota;
pub mod resources;
mod service_ips;
mod wasm_policy;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use rand::Rng;
use serde_json::{Value, json};
use skiff_api::fields::FieldSelector;
use skiff_api::labels::Selector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admission::{FieldValidation, Tolerations};
pub use error::{ApiError, Result};
use object::{meta_mut, meta_str};
pub use patch::PatchType;
use resources::ResourceDef;
pub use service_ips::ServiceCidr;

use crate::cache;
use crate::store::{self, Store};

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Default tolerations added to pods by admission.
    pub tolerations: Tolerations,
    /// Where Services' ClusterIPs come from (`--service-cluster-ip-range`).
    pub service_cidr: ServiceCidr,
    /// The module store's directory, where WasmPolicy admission checks module signatures.
    pub modules_dir: Option<std::path::PathBuf>,
    /// How much history the watch cache keeps.
    pub watch_cache: cache::Config,
    /// How often watches that allow bookmarks get one (kube-apiserver: about a minute).
    pub bookmark_interval: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tolerations: Tolerations::default(),
            service_cidr: ServiceCidr::default(),
            modules_dir: None,
            watch_cache: cache::Config::default(),
            bookmark_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// The API service over a store.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// Every read is served from here; only read-modify-write loops read the store.
    cache: Arc<cache::Cache>,
    config: Config,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Per-namespace locks around quota checks and the writes they admit.
    quota_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Modules whose stored bytes were checked against their digest.
    checked_modules: wasm_policy::CheckedModules,
    /// Events waiting for the background writer.
    events: Arc<crate::events::Recorder>,
}

/// An [`Api`] that does not keep it alive, for the background tasks it starts itself.
#[derive(Clone)]
pub struct WeakApi(std::sync::Weak<Inner>);

impl WeakApi {
    /// The API, while something else still holds it.
    pub fn upgrade(&self) -> Option<Api> {
        self.0.upgrade().map(|inner| Api { inner })
    }
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Run everything but persist nothing (`dryRun=All`).
    pub dry_run: bool,
    /// Unknown-field policy.
    pub field_validation: FieldValidation,
    /// `fieldManager`.
    pub field_manager: Option<String>,
}

/// Options of list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: Selector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = all).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion` of a list (a watch takes its own).
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`: `Exact` or `NotOlderThan`.
    pub resource_version_match: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
}

/// Options of delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: Background (default), Foreground or Orphan.
    pub propagation_policy: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The object (status changes ignored where a status subresource exists).
    Main,
    /// `/status`: only status changes.
    Status,
    /// `/scale`: an autoscaling/v1 Scale view of `spec.replicas`.
    Scale,
    /// `/finalize` of a namespace: only `spec.finalizers` changes.
    Finalize,
}

/// A successful write: the object and any warnings for the `Warning` header.
#[derive(Debug, Clone)]
pub struct Written {
    /// The stored (or would-be, in dry run) object.
    pub object: Value,
    /// Warnings (unknown fields dropped, ...).
    pub warnings: Vec<String>,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList {
    /// The objects.
    pub items: Vec<Value>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// Set when more items follow.
    pub continue_token: Option<String>,
}

/// A page of a list as the cache holds it (see [`Api::list_raw`]).
pub(crate) struct RawList {
    pub items: Vec<Arc<cache::Object>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
}

/// A watch event before decoding: the cached object, shared by every watcher it reaches.
pub(crate) enum RawEvent {
    Added(Arc<cache::Object>),
    Modified(Arc<cache::Object>),
    Deleted(Arc<cache::Object>),
    Bookmark { revision: u64, initial_end: bool },
    Error(ApiError),
}

/// One watch event, as the watch protocol names them.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// ADDED.
    Added(Arc<Value>),
    /// MODIFIED.
    Modified(Arc<Value>),
    /// DELETED.
    Deleted(Arc<Value>),
    /// BOOKMARK at a revision; `initial_end` marks the end of `sendInitialEvents`.
    Bookmark {
        /// The revision.
        revision: u64,
        /// True for the bookmark that ends the initial events.
        initial_end: bool,
    },
    /// ERROR with a Status (410 Expired after compaction).
    Error(ApiError),
}

impl WatchEvent {
    /// The object's resourceVersion, or the bookmark's revision.
    pub fn revision(&self) -> Option<u64> {
        match self {
            Self::Added(o) | Self::Modified(o) | Self::Deleted(o) => {
                meta_str(o, "resourceVersion").parse().ok()
            }
            Self::Bookmark { revision, .. } => Some(*revision),
            Self::Error(_) => None,
        }
    }
}

/// Namespaces that exist from the first start.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

impl Api {
    /// Builds the API over `store`, loading its watch cache. Call [`Api::bootstrap`] before
    /// serving. Panics when the store cannot be read (tests and benches; the server uses
    /// [`Api::open`]).
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        Self::open(store, config).expect("the store can be read")
    }

    /// Builds the API over `store`, loading its watch cache; call it before anything writes to
    /// the store.
    pub fn open(store: Arc<dyn Store>, config: Config) -> store::Result<Self> {
        let cache = cache::Cache::open(&*store, config.watch_cache.clone(), Arc::new(index))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                cache,
                config,
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                quota_locks: Default::default(),
                checked_modules: Default::default(),
                events: Default::default(),
            }),
        })
    }

    /// A handle that does not keep the API alive.
    pub fn downgrade(&self) -> WeakApi {
        WeakApi(Arc::downgrade(&self.inner))
    }

    /// The queue of events waiting to be written.
    pub(crate) fn events(&self) -> &Arc<crate::events::Recorder> {
        &self.inner.events
    }

    /// Events dropped because too many were waiting to be written (for `/metrics`).
    pub fn events_dropped(&self) -> u64 {
        self.inner.events.dropped()
    }

    /// The store underneath (for benchmarks and tests).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Creates the system namespaces if missing and makes the ClusterIP and node port
    /// allocations match the stored Services. (Unfinished namespace deletions and cascading
    /// deletes are the controllers' work: they resume from what is stored.)
    pub async fn bootstrap(&self) -> Result<()> {
        self.spawn_compaction();
        self.repair_ranges().await?;
        let ns = resources::core("namespaces");
        for name in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match self.create(ns, None, obj, &WriteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Compacts the store's history down to what the watch cache still serves, so the two
    /// agree after a restart and the log stays bounded.
    fn spawn_compaction(&self) {
        let api = self.clone();
        self.inner.tasks.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = api.inner.shutdown.cancelled() => return,
                }
                let (store, oldest) = (api.inner.store.clone(), api.inner.cache.oldest());
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.compact(oldest)).await
                {
                    tracing::warn!(error = %e, "compaction failed");
                }
            }
        });
    }

    /// Stops background work (namespace cleanup) and waits for it.
    pub async fn shutdown(&self) {
        // Queued events are written on a clean stop, if the store lets them in time.
        let wait = std::time::Duration::from_secs(2);
        let _ = tokio::time::timeout(wait, crate::events::flushed(self)).await;
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn store_err<'a>(
        res: &'a ResourceDef,
        name: &'a str,
    ) -> impl FnOnce(store::Error) -> ApiError + 'a {
        move |e| ApiError::from_store(res, name, e)
    }

    /// Decodes a stored value as `res`'s version with its resourceVersion.
    fn decode(res: &ResourceDef, value: &[u8], rev: u64) -> Result<Value> {
        let mut obj: Value = serde_json::from_slice(value)
            .map_err(|e| ApiError::internal(format!("corrupt stored object: {e}")))?;
        object::set_resource_version(&mut obj, rev);
        Ok(convert::from_storage(res, obj))
    }

    /// Serializes an object for the store: in the storage version, without resourceVersion
    /// (the store's revision is the truth). Borrows and restores instead of copying the object.
    fn encode(res: &ResourceDef, obj: &mut Value) -> Result<Bytes> {
        if convert::needs_conversion(res) {
            let mut stored = convert::to_storage(res, obj.clone());
            return Self::encode(
                resources::by_kind(res.group, res.kind).expect("storage version"),
                &mut stored,
            );
        }
        let rv = meta_mut(obj).remove("resourceVersion");
        let bytes = serde_json::to_vec(&*obj);
        if let Some(rv) = rv {
            meta_mut(obj).insert("resourceVersion".into(), rv);
        }
        bytes
            .map(Bytes::from)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Reads one object (committed, from the watch cache).
    pub fn get(&self, res: &'static ResourceDef, ns: Option<&str>, name: &str) -> Result<Value> {
        let (obj, _) = self.inner.cache.get(&res.key(ns, name));
        let obj = obj.ok_or_else(|| ApiError::not_found(res, name))?;
        Self::decode_cached(res, &obj)
    }

    /// The latest committed revision the API serves.
    pub fn revision(&self) -> u64 {
        self.inner.cache.revision()
    }

    /// How many watches the watch cache serves now.
    pub fn watchers(&self) -> usize {
        self.inner.cache.watchers()
    }

    /// How many times the watch cache offered a change to a watcher (its dispatch cost).
    pub fn watch_offers(&self) -> u64 {
        self.inner.cache.offered()
    }

    /// The oldest revision lists and watches may start from.
    pub fn oldest_revision(&self) -> u64 {
        self.inner.cache.oldest()
    }

    /// Waits up to `timeout` until the API serves `revision`; a read at a resourceVersion the
    /// server has not reached yet waits here first, as kube-apiserver's watch cache does.
    pub async fn wait_for_revision(&self, revision: u64, timeout: std::time::Duration) {
        if revision > self.revision() {
            self.inner.cache.wait_for(revision, timeout).await;
        }
    }

    /// Lists objects matching the selectors, in key order, paged by `limit`/`continue`, at the
    /// revision `resourceVersion`/`resourceVersionMatch` ask for. Every page of a paged list is
    /// read at the revision of the first one; a continue token whose revision left the history
    /// answers 410 Expired.
    pub fn list(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ObjectList> {
        let raw = self.list_raw(res, ns, opts)?;
        Ok(ObjectList {
            items: raw
                .items
                .iter()
                .map(|o| Self::decode_cached(res, o))
                .collect::<Result<_>>()?,
            resource_version: raw.resource_version,
            continue_token: raw.continue_token,
        })
    }

    /// Reads one object as every in-process reader shares it (see [`Api::list_shared`]).
    pub fn get_shared(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>> {
        let (obj, _) = self.inner.cache.get(&res.key(ns, name));
        let obj = obj.ok_or_else(|| ApiError::not_found(res, name))?;
        Self::shared(&self.inner.cache, res, &obj)
    }

    /// The latest objects of `res` in `ns` (all namespaces for `None`) whose cached
    /// [`Index`](cache::Index) passes `select`, as in-process readers share them: nothing is
    /// decoded for an object `select` skips, and each version is decoded once for all
    /// readers. The informer read of controllers and the scheduler.
    pub fn list_shared(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        select: impl Fn(&cache::Index) -> bool,
    ) -> Result<Vec<Arc<Value>>> {
        let page = self
            .inner
            .cache
            .list(&res.prefix(ns), cache::At::Latest, None, 0, &|o| {
                select(&o.index)
            })
            .map_err(|e| ApiError::internal(e.to_string()))?;
        page.items
            .iter()
            .map(|o| Self::shared(&self.inner.cache, res, o))
            .collect()
    }

    /// The latest objects of `res` in `ns` that name `owner_uid` among their owners, from the
    /// cache's owner index (so an owner's reconcile costs nothing for other owners' objects).
    pub fn dependents_shared(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<Arc<Value>>> {
        if owner_uid.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .cache
            .dependents(&res.prefix(ns), owner_uid)
            .iter()
            .map(|o| Self::shared(&self.inner.cache, res, o))
            .collect()
    }

    /// [`Api::list`] without decoding: the cached objects themselves.
    pub(crate) fn list_raw(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<RawList> {
        check_field_selector(res, &opts.fields)?;
        let prefix = res.prefix(ns);
        let cache = &self.inner.cache;
        let rv = parse_resource_version(opts.resource_version.as_deref())?;
        let (at, start) = match &opts.continue_token {
            Some(t) => {
                if rv.is_some_and(|rv| rv != 0) {
                    return Err(ApiError::bad_request(
                        "specifying resource version is not allowed when using continue",
                    ));
                }
                let (key, rev) = decode_continue(t)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "continue key is not valid for this request",
                    ));
                }
                (cache::At::Exact(rev), Some(key))
            }
            None => match (rv, opts.resource_version_match.as_deref()) {
                (None | Some(0), _) => (cache::At::Latest, None),
                (Some(rv), Some("Exact")) => (cache::At::Exact(rv), None),
                // Without a match, a paged list at a version reads exactly it, as upstream.
                (Some(rv), None) if opts.limit > 0 => (cache::At::Exact(rv), None),
                (Some(rv), _) => {
                    if rv > cache.revision() {
                        return Err(ApiError::too_large_resource_version(rv, cache.revision()));
                    }
                    (cache::At::Latest, None)
                }
            },
        };
        let filter = self.filter(opts);
        // A metadata.name field selector names one key: read it directly.
        if let (Some(name), None, cache::At::Latest) =
            (opts.fields.required("metadata.name"), &start, at)
            && (ns.is_some() || !res.namespaced)
        {
            let (obj, revision) = cache.get(&format!("{prefix}{name}"));
            return Ok(RawList {
                items: obj.filter(|o| filter(o)).into_iter().collect(),
                resource_version: revision,
                continue_token: None,
            });
        }
        let page = cache
            .list(&prefix, at, start.as_deref(), opts.limit, &*filter)
            .map_err(|e| match e {
                cache::Error::Expired { .. } if opts.continue_token.is_some() => {
                    ApiError::expired(CONTINUE_EXPIRED)
                }
                cache::Error::Expired { .. } => {
                    ApiError::expired("The resourceVersion for the provided list is too old.")
                }
                cache::Error::TooLarge { requested, current } => {
                    ApiError::too_large_resource_version(requested, current)
                }
            })?;
        Ok(RawList {
            items: page.items,
            resource_version: page.revision,
            continue_token: page.next.map(|key| encode_continue(&key, page.revision)),
        })
    }

    /// Decodes a cached object as `res`'s version.
    pub(crate) fn decode_cached(res: &'static ResourceDef, o: &cache::Object) -> Result<Value> {
        if !convert::needs_conversion(res) {
            // Upgraded on its own line: the lock is not held while the value is copied.
            let held = o
                .decoded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .upgrade();
            if let Some(v) = held {
                return Ok(Value::clone(&v));
            }
        }
        Self::decode(res, &o.kv.value, o.kv.mod_revision)
    }

    /// A cached object as `res`'s version for in-process readers (controllers, the scheduler,
    /// in-process watches): decoded once and shared by every reader of that version while any
    /// of them holds it (unless `res` is served in another version than it is stored in,
    /// which is converted per read). Nothing decoded is kept once no reader holds it, so the
    /// cache's memory stays one served copy per version.
    pub(crate) fn shared(
        cache: &cache::Cache,
        res: &'static ResourceDef,
        o: &cache::Object,
    ) -> Result<Arc<Value>> {
        if convert::needs_conversion(res) {
            return Self::decode(res, &o.kv.value, o.kv.mod_revision).map(Arc::new);
        }
        // Held while decoding, so readers arriving meanwhile wait for this decode.
        let mut decoded = o.decoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = decoded.upgrade() {
            return Ok(v);
        }
        let v = Arc::new(Self::decode(res, &o.kv.value, o.kv.mod_revision)?);
        cache.count_decode();
        *decoded = Arc::downgrade(&v);
        Ok(v)
    }

    /// How many times a cached version was decoded for in-process readers
    /// (`skiff_cache_decodes_total`).
    pub fn decodes(&self) -> u64 {
        self.inner.cache.decodes()
    }

    /// The JSON the API serves for a cached object: the cached bytes themselves (made once
    /// per version, shared by every list and watch that sends them) unless `res` is served in
    /// another version than it is stored in.
    pub(crate) fn json_of(res: &'static ResourceDef, o: &cache::Object) -> Result<Bytes> {
        if o.revision_at.is_some() && !convert::needs_conversion(res) {
            return Ok(o.kv.value.clone());
        }
        let obj = Self::decode(res, &o.kv.value, o.kv.mod_revision)?;
        serde_json::to_vec(&obj)
            .map(Bytes::from)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// The selectors of `opts` as a filter over cached objects' indexes.
    fn filter(&self, opts: &ListOptions) -> cache::Filter {
        let (labels, fields) = (opts.labels.clone(), opts.fields.clone());
        Arc::new(move |o: &cache::Object| {
            labels.matches_json(Some(&o.index.labels))
                && fields.matches(|f| o.index.field(f).to_string())
        })
    }

    /// Creates an object in `ns` (ignored for cluster-scoped resources).
    pub async fn create(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        self.create_inner(res, ns, obj, opts, false).await
    }

    async fn create_inner(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        keep_managed_fields: bool,
    ) -> Result<Written> {
        check_type_meta(res, &mut obj)?;
        let ns = scope_namespace(res, ns, &mut obj)?;
        let m = meta_mut(&mut obj);
        let mut name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty()
            && let Some(prefix) = m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
        {
            name = format!("{prefix}{}", random_suffix());
            m.insert("name".into(), json!(name));
        }
        if let Some(ns) = ns {
            self.check_namespace_active(ns)?;
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(object::now()));
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(field);
        }
        if !keep_managed_fields {
            m.remove("managedFields");
        }
        if res.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        lifecycle::prepare_create(res, &mut obj);
        if res.kind == "Service" && res.group.is_empty() {
            service_ips::prepare_create(&mut obj);
        }
        let ctx = admission::Ctx {
            res,
            old: None,
            validation: opts.field_validation,
            tolerations: self.inner.config.tolerations,
            status_only: false,
        };
        let warnings = admission::admit(&ctx, &mut obj)?;
        if let Some(ns) = ns
            && res.group.is_empty()
            && res.kind == "Pod"
        {
            self.admit_limit_ranges(&ctx, ns, &mut obj)?;
            self.admit_wasm_policies(res, ns, &obj)?;
        }
        let quota = match ns {
            Some(ns) => self.admit_quota(res, ns, &mut obj).await?,
            None => None,
        };
        let name = object::name(&obj).to_string();
        let allocated = if res.kind == "Service" {
            self.allocate_cluster_ip(res, &mut obj, opts.dry_run)
                .await?
                .is_some()
        } else {
            false
        };
        let node_ports = if res.kind == "Service" && !opts.dry_run {
            match self.allocate_node_ports(res, &mut obj, &[]).await {
                Ok(ports) => ports,
                Err(e) => {
                    if allocated {
                        self.release_cluster_ip(&obj).await;
                    }
                    return Err(e);
                }
            }
        } else {
            Vec::new()
        };
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        let key = res.key(ns, &name);
        let result = self
            .inner
            .store
            .create(&key, Self::encode(res, &mut obj)?)
            .await;
        match result {
            Ok(rev) => {
                object::set_resource_version(&mut obj, rev);
                if let (Some(ns), Some(admitted)) = (ns, quota) {
                    self.record_quota(ns, admitted).await;
                }
                if res.kind == "Namespace" {
                    self.create_default_service_account(&name).await;
                }
                Ok(Written {
                    object: obj,
                    warnings,
                })
            }
            Err(e) => {
                if allocated {
                    self.release_cluster_ip(&obj).await;
                }
                self.release_node_ports(&node_ports).await;
                Err(ApiError::from_store(res, &name, e))
            }
        }
    }

    async fn create_default_service_account(&self, ns: &str) {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
        if let Err(e) = Box::pin(self.create(
            resources::core("serviceaccounts"),
            Some(ns),
            sa,
            &WriteOptions::default(),
        ))
        .await
            && e.reason != "AlreadyExists"
        {
            tracing::warn!(namespace = ns, error = %e, "could not create the default service account");
        }
    }

    fn check_namespace_active(&self, ns: &str) -> Result<()> {
        let nsdef = resources::core("namespaces");
        match self.get(nsdef, None, ns) {
            Ok(obj) if object::is_terminating(&obj) => Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
                details: Some(
                    json!({"name": ns, "kind": "namespaces", "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
                ),
            }),
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Err(ApiError::not_found(nsdef, ns)),
            Err(e) => Err(e),
        }
    }

    /// Replaces an object (PUT), or its status or scale.
    pub async fn update(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        body: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        self.modify(res, ns, name, target, opts, |cur| {
            let mut new = body.clone();
            if !new.is_object() {
                return Err(ApiError::bad_request(
                    "the request body must be a JSON object",
                ));
            }
            // PUT without a resourceVersion is an unconditional update.
            if meta_str(&new, "resourceVersion").is_empty() {
                meta_mut(&mut new).insert(
                    "resourceVersion".into(),
                    json!(meta_str(cur, "resourceVersion")),
                );
            }
            Ok(new)
        })
        .await
    }

    /// Applies a patch to an object, or its status or scale. Server-side apply creates the
    /// object when it is missing.
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the REST call: resource, namespace, name, patch type and body, subresource, options"
    )]
    pub async fn patch(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Written> {
        if patch_type == PatchType::Apply && target == Target::Main {
            return self.apply(res, ns, name, body, opts).await;
        }
        let kind = if target == Target::Scale {
            "Scale"
        } else {
            res.kind
        };
        self.modify(res, ns, name, target, opts, |cur| {
            let mut doc = cur.clone();
            patch::apply(&mut doc, patch_type, &body, kind)?;
            Ok(doc)
        })
        .await
    }

    /// Server-side apply: creates the object when missing; otherwise merges the configuration
    /// and removes what this field manager applied before but no longer does. Each manager's
    /// applied fields are kept in `metadata.managedFields`. Conflicts between managers are not
    /// detected yet.
    async fn apply(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let Some(manager) = opts.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                details: None,
            });
        };
        if !body.is_object() {
            return Err(ApiError::bad_request("apply patch must be an object"));
        }
        let fields = patch::fields_of(&body, res.kind);
        let entry = |fields: &Value| {
            json!({"manager": manager, "operation": "Apply", "apiVersion": res.api_version(), "time": object::now(),
                   "fieldsType": "FieldsV1", "fieldsV1": fields})
        };
        match self.get(res, ns, name) {
            Err(e) if e.code == 404 => {
                let mut obj = body.clone();
                let m = meta_mut(&mut obj);
                m.insert("name".into(), json!(name));
                m.insert("managedFields".into(), json!([entry(&fields)]));
                return self.create_inner(res, ns, obj, opts, true).await;
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        self.modify(res, ns, name, Target::Main, opts, |cur| {
            let mut doc = cur.clone();
            patch::apply(&mut doc, PatchType::Apply, &body, res.kind)?;
            let mut managed = cur
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mine = managed
                .iter()
                .position(|m| m["manager"] == manager.as_str() && m["operation"] == "Apply");
            match mine {
                // Unchanged configuration: keep the entry (and its time) so a repeat is a no-op.
                Some(i) if managed[i]["fieldsV1"] == fields => {}
                Some(i) => {
                    patch::remove_dropped(&mut doc, &managed[i]["fieldsV1"], &fields);
                    managed[i] = entry(&fields);
                }
                None => managed.push(entry(&fields)),
            }
            meta_mut(&mut doc).insert("managedFields".into(), Value::Array(managed));
            Ok(doc)
        })
        .await
    }

    /// The read-modify-write loop shared by update and patch: `mutate` turns the current object
    /// (or its Scale) into the desired one; conflicts with concurrent writers are retried unless
    /// the caller pinned a resourceVersion.
    async fn modify(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        target: Target,
        opts: &WriteOptions,
        mutate: impl Fn(&Value) -> Result<Value>,
    ) -> Result<Written> {
        if target == Target::Scale && !res.scale || target == Target::Status && !res.status {
            return Err(ApiError::path_not_found());
        }
        let key = res.key(ns, name);
        for _attempt in 0..16 {
            let kv = self
                .inner
                .store
                .get(&key)
                .map_err(Self::store_err(res, name))?
                .ok_or_else(|| ApiError::not_found(res, name))?;
            let cur = Self::decode(res, &kv.value, kv.mod_revision)?;
            let mut new = if target == Target::Scale {
                let scale = mutate(&lifecycle::scale_of(res, &cur))?;
                lifecycle::apply_scale(res, &cur, &scale)?
            } else {
                mutate(&cur)?
            };
            check_type_meta(res, &mut new)?;
            if meta_str(&new, "resourceVersion") != meta_str(&cur, "resourceVersion") {
                return Err(ApiError::conflict(res, name));
            }
            lifecycle::prepare_update(res, target, &cur, &mut new)?;
            if res.kind == "Service" && res.group.is_empty() && target == Target::Main {
                service_ips::prepare_update(&cur, &mut new);
            }
            let ctx = admission::Ctx {
                res,
                old: Some(&cur),
                validation: opts.field_validation,
                tolerations: self.inner.config.tolerations,
                status_only: matches!(target, Target::Status | Target::Finalize),
            };
            let warnings = admission::admit(&ctx, &mut new)?;
            if res.kind == "Pod"
                && res.group.is_empty()
                && target == Target::Main
                && let Some(ns) = ns
                && wasm_policy::what_policies_judge(&new) != wasm_policy::what_policies_judge(&cur)
            {
                self.admit_wasm_policies(res, ns, &new)?;
            }
            let service = res.kind == "Service" && target == Target::Main && !opts.dry_run;
            let held = node_ports_of(&cur);
            // An ExternalName Service turned into another type gets a ClusterIP.
            let new_ip = service
                && service_ips::needs_cluster_ip(&new)
                && !service_ips::needs_cluster_ip(&cur)
                && self
                    .allocate_cluster_ip(res, &mut new, false)
                    .await?
                    .is_some();
            let taken = if service {
                keep_node_ports(&cur, &mut new);
                match self.allocate_node_ports(res, &mut new, &held).await {
                    Ok(taken) => taken,
                    Err(e) => {
                        self.release_allocations(&[], new_ip.then_some(&new)).await;
                        return Err(e);
                    }
                }
            } else {
                Vec::new()
            };
            object::set_resource_version(&mut new, kv.mod_revision);
            let respond = |obj: Value| -> Written {
                let object = if target == Target::Scale {
                    lifecycle::scale_of(res, &obj)
                } else {
                    obj
                };
                Written {
                    object,
                    warnings: warnings.clone(),
                }
            };
            if new == cur || opts.dry_run {
                return Ok(respond(new));
            }
            // Removing the last finalizer of a terminating object completes its deletion.
            if lifecycle::deletion_ready(res, &new) {
                match self.inner.store.delete(&key, kv.mod_revision).await {
                    Ok(deleted) => {
                        self.after_delete(res, &cur).await;
                        self.release_allocations(&taken, new_ip.then_some(&new))
                            .await;
                        object::set_resource_version(&mut new, deleted.mod_revision);
                        return Ok(respond(new));
                    }
                    Err(store::Error::Conflict { .. }) => {
                        self.release_allocations(&taken, new_ip.then_some(&new))
                            .await;
                        continue;
                    }
                    Err(e) => {
                        self.release_allocations(&taken, new_ip.then_some(&new))
                            .await;
                        return Err(ApiError::from_store(res, name, e));
                    }
                }
            }
            let encoded = match Self::encode(res, &mut new) {
                Ok(encoded) => encoded,
                Err(e) => {
                    self.release_allocations(&taken, new_ip.then_some(&new))
                        .await;
                    return Err(e);
                }
            };
            match self
                .inner
                .store
                .update(&key, kv.mod_revision, encoded)
                .await
            {
                Ok(rev) => {
                    if service {
                        let kept = node_ports_of(&new);
                        let freed: Vec<i64> =
                            held.into_iter().filter(|p| !kept.contains(p)).collect();
                        self.release_node_ports(&freed).await;
                        if cur["spec"]["clusterIP"] != new["spec"]["clusterIP"] {
                            self.release_cluster_ip(&cur).await;
                        }
                    }
                    object::set_resource_version(&mut new, rev);
                    return Ok(respond(new));
                }
                Err(store::Error::Conflict { .. }) => {
                    self.release_allocations(&taken, new_ip.then_some(&new))
                        .await;
                    continue;
                }
                Err(e) => {
                    self.release_allocations(&taken, new_ip.then_some(&new))
                        .await;
                    return Err(ApiError::from_store(res, name, e));
                }
            }
        }
        Err(ApiError::conflict(res, name))
    }

    /// The Scale of an object with a scale subresource.
    pub fn get_scale(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        if !res.scale {
            return Err(ApiError::path_not_found());
        }
        Ok(lifecycle::scale_of(res, &self.get(res, ns, name)?))
    }

    /// Binds a pod to a node (`pods/binding`); returns the Binding.
    pub async fn bind(&self, ns: &str, name: &str, binding: &Value) -> Result<Value> {
        let pods = resources::core("pods");
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    pods,
                    name,
                    &[skiff_api::validation::FieldError::required(
                        "target.name",
                        "",
                    )],
                )
            })?
            .to_string();
        self.modify(
            pods,
            Some(ns),
            name,
            Target::Status,
            &WriteOptions::default(),
            |cur| {
                if let Some(existing) = object::path(cur, "spec.nodeName")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    return Err(ApiError::conflict_because(
                        pods,
                        name,
                        &format!("pod {name} is already assigned to node \"{existing}\""),
                    ));
                }
                if object::is_terminating(cur) {
                    return Err(ApiError::conflict_because(
                        pods,
                        name,
                        "pod is being deleted, cannot be assigned to a host",
                    ));
                }
                let mut new = cur.clone();
                new["spec"]["nodeName"] = json!(node);
                lifecycle::set_condition(&mut new, "PodScheduled", "True", None, None);
                Ok(new)
            },
        )
        .await?;
        // Upstream answers with a Status; the created Binding itself is what typed clients (the
        // Python client validates responses strictly) can decode, and client-go ignores the body.
        let mut created = binding.clone();
        created["apiVersion"] = json!("v1");
        created["kind"] = json!("Binding");
        let m = meta_mut(&mut created);
        m.insert("name".into(), json!(name));
        m.insert("namespace".into(), json!(ns));
        Ok(created)
    }

    /// Deletes an object: at once, or by marking it terminating when finalizers, graceful pod
    /// termination or namespace cleanup must run first. Returns the final or terminating object.
    /// Dependents are the garbage collector's (`controllers::gc`): Foreground and Orphan only
    /// add their finalizer here, as upstream.
    pub async fn delete(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value> {
        let key = res.key(ns, name);
        for _attempt in 0..16 {
            let kv = self
                .inner
                .store
                .get(&key)
                .map_err(Self::store_err(res, name))?
                .ok_or_else(|| ApiError::not_found(res, name))?;
            let cur = Self::decode(res, &kv.value, kv.mod_revision)?;
            if let Some(uid) = opts
                .precondition_uid
                .as_deref()
                .filter(|u| *u != object::uid(&cur))
            {
                return Err(ApiError::conflict_because(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object::uid(&cur)
                    ),
                ));
            }
            if let Some(rv) = opts
                .precondition_rv
                .as_deref()
                .filter(|rv| *rv != kv.mod_revision.to_string())
            {
                return Err(ApiError::conflict_because(
                    res,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            let plan = lifecycle::plan_delete(res, &cur, opts)?;
            if opts.dry_run {
                return Ok(plan.terminating.unwrap_or(cur));
            }
            if let lifecycle::DeletePlan {
                terminating: Some(mut marked),
                ..
            } = plan
            {
                if marked == cur {
                    return Ok(cur);
                }
                match self
                    .inner
                    .store
                    .update(&key, kv.mod_revision, Self::encode(res, &mut marked)?)
                    .await
                {
                    Ok(rev) => {
                        object::set_resource_version(&mut marked, rev);
                        return Ok(marked);
                    }
                    Err(store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(res, name, e)),
                }
            }
            match self.inner.store.delete(&key, kv.mod_revision).await {
                Ok(deleted) => {
                    let mut obj = Self::decode(res, &deleted.value, deleted.mod_revision)?;
                    object::set_resource_version(&mut obj, deleted.mod_revision);
                    self.after_delete(res, &obj).await;
                    return Ok(obj);
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(res, name, e)),
            }
        }
        Err(ApiError::conflict(res, name))
    }

    async fn after_delete(&self, res: &ResourceDef, obj: &Value) {
        if res.kind == "Service" {
            self.release_cluster_ip(obj).await;
            self.release_node_ports(&node_ports_of(obj)).await;
        }
    }

    /// Watches `res` in `ns` (all namespaces when `None`).
    ///
    /// `resource_version`: `None` or "0" starts with synthetic ADDED events for every current
    /// object; "N" streams every change after N (410 Expired, as an ERROR event, when N has
    /// left the history). `send_initial_events` adds the bookmark that ends the initial events.
    /// With a selector, an object that starts matching is ADDED and one that stops matching is
    /// DELETED (with its last matching content), decided from the object each change replaced.
    pub fn watch(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
        resource_version: Option<&str>,
        send_initial_events: bool,
    ) -> Result<BoxStream<'static, WatchEvent>> {
        let raw = self.watch_raw(res, ns, opts, resource_version, send_initial_events)?;
        let cache = self.inner.cache.clone();
        let decode = move |o: &cache::Object| Self::shared(&cache, res, o);
        Ok(raw
            .map(move |event| {
                let (o, wrap): (_, fn(Arc<Value>) -> WatchEvent) = match event {
                    RawEvent::Added(o) => (o, WatchEvent::Added),
                    RawEvent::Modified(o) => (o, WatchEvent::Modified),
                    RawEvent::Deleted(o) => (o, WatchEvent::Deleted),
                    RawEvent::Bookmark {
                        revision,
                        initial_end,
                    } => {
                        return WatchEvent::Bookmark {
                            revision,
                            initial_end,
                        };
                    }
                    RawEvent::Error(e) => return WatchEvent::Error(e),
                };
                decode(&o).map_or_else(WatchEvent::Error, wrap)
            })
            .boxed())
    }

    /// [`Api::watch`] without decoding.
    pub(crate) fn watch_raw(
        &self,
        res: &'static ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
        resource_version: Option<&str>,
        send_initial_events: bool,
    ) -> Result<BoxStream<'static, RawEvent>> {
        check_field_selector(res, &opts.fields)?;
        let rv = parse_resource_version(resource_version)?.unwrap_or(0);
        let cache = &self.inner.cache;
        if rv > cache.revision() {
            // Also with sendInitialEvents: the initial state must not be older than asked.
            return Err(ApiError::too_large_resource_version(rv, cache.revision()));
        }
        let mut initial = Vec::new();
        let start = if rv == 0 || send_initial_events {
            let list_opts = ListOptions {
                labels: opts.labels.clone(),
                fields: opts.fields.clone(),
                ..Default::default()
            };
            let list = self.list_raw(res, ns, &list_opts)?;
            initial.extend(list.items.into_iter().map(RawEvent::Added));
            if send_initial_events {
                initial.push(RawEvent::Bookmark {
                    revision: list.resource_version,
                    initial_end: true,
                });
            }
            list.resource_version
        } else {
            rv
        };
        // Offered only the changes it can select: by an exact field value it requires (a
        // node's pods), else by its namespace.
        let exact_field = opts
            .fields
            .terms()
            .iter()
            .find_map(|t| {
                let field = indexed_field(res, &t.field)?;
                opts.fields.required(field).map(|v| (field, v.to_string()))
            })
            .or_else(|| {
                ns.filter(|_| res.namespaced)
                    .map(|ns| ("metadata.namespace", ns.to_string()))
            });
        let selection = cache::Selection {
            prefix: res.prefix(ns),
            filter: self.filter(opts),
            exact_field,
        };
        let bookmarks = opts
            .bookmarks
            .then_some(self.inner.config.bookmark_interval);
        let watch = match cache.watch(selection, start, bookmarks) {
            Ok(w) => w,
            Err(cache::Error::Expired { requested, oldest }) => {
                let err =
                    ApiError::expired(format!("too old resource version: {requested} ({oldest})"));
                return Ok(futures::stream::iter([RawEvent::Error(err)]).boxed());
            }
            Err(cache::Error::TooLarge { requested, current }) => {
                return Err(ApiError::too_large_resource_version(requested, current));
            }
        };
        let live = futures::stream::unfold(Some(watch), |watch| async move {
            let mut watch = watch?;
            let event = match watch.next().await {
                Err(e) => return Some((RawEvent::Error(ApiError::expired(e.to_string())), None)),
                Ok(cache::Delivery::Bookmark(revision)) => RawEvent::Bookmark {
                    revision,
                    initial_end: false,
                },
                Ok(cache::Delivery::Added(o)) => RawEvent::Added(o),
                Ok(cache::Delivery::Modified(o)) => RawEvent::Modified(o),
                Ok(cache::Delivery::Deleted(o)) => RawEvent::Deleted(o),
            };
            Some((event, Some(watch)))
        });
        Ok(futures::stream::iter(initial).chain(live).boxed())
    }
}

impl Api {
    /// Gives every port of a NodePort or LoadBalancer Service a node port: the requested one
    /// when it is free (422 as upstream when it is not), otherwise a random free one from
    /// [`NODE_PORTS`]. Each allocated port is a key in the store, so two Services never share
    /// one; the ports in `held` are the Service's already. Returns the ports allocated, to
    /// release if the write fails.
    async fn allocate_node_ports(
        &self,
        res: &'static ResourceDef,
        obj: &mut Value,
        held: &[i64],
    ) -> Result<Vec<i64>> {
        let kind = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
        if kind != "NodePort" && kind != "LoadBalancer" {
            return Ok(Vec::new());
        }
        let name = object::name(obj).to_string();
        let owner = Bytes::from(format!("{}/{}", object::namespace(obj), name));
        let mut taken = Vec::new();
        let count = obj["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let requested = obj["spec"]["ports"][i]["nodePort"].as_i64();
            if requested.is_some_and(|p| held.contains(&p)) {
                continue;
            }
            let port = match requested {
                Some(port) => match self
                    .inner
                    .store
                    .create(&node_port_key(port), owner.clone())
                    .await
                {
                    Ok(_) => port,
                    Err(e) => {
                        self.release_node_ports(&taken).await;
                        return Err(match e {
                            store::Error::AlreadyExists(_) => ApiError::invalid(
                                res,
                                &name,
                                &[skiff_api::validation::FieldError::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    port,
                                    "provided port is already allocated",
                                )],
                            ),
                            e => ApiError::from_store(res, &name, e),
                        });
                    }
                },
                None => {
                    let mut chosen = None;
                    for _ in 0..256 {
                        let port = i64::from(rand::rng().random_range(NODE_PORTS));
                        match self
                            .inner
                            .store
                            .create(&node_port_key(port), owner.clone())
                            .await
                        {
                            Ok(_) => {
                                chosen = Some(port);
                                break;
                            }
                            Err(store::Error::AlreadyExists(_)) => continue,
                            Err(e) => {
                                self.release_node_ports(&taken).await;
                                return Err(ApiError::from_store(res, &name, e));
                            }
                        }
                    }
                    match chosen {
                        Some(port) => port,
                        None => {
                            self.release_node_ports(&taken).await;
                            return Err(ApiError::internal(
                                "failed to allocate a node port: range is full",
                            ));
                        }
                    }
                }
            };
            taken.push(port);
            obj["spec"]["ports"][i]["nodePort"] = json!(port);
        }
        Ok(taken)
    }

    /// Releases what a failed write had allocated: node ports, and the ClusterIP of `service`.
    async fn release_allocations(&self, ports: &[i64], service: Option<&Value>) {
        self.release_node_ports(ports).await;
        if let Some(service) = service {
            self.release_cluster_ip(service).await;
        }
    }

    async fn release_node_ports(&self, ports: &[i64]) {
        for port in ports {
            let _ = self.inner.store.delete(&node_port_key(*port), 0).await;
        }
    }
}

/// The node ports a Service holds.
fn node_ports_of(service: &Value) -> Vec<i64> {
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect()
}

/// An update of a NodePort or LoadBalancer Service that leaves a port's `nodePort` out keeps
/// the one that port had (matched by port and protocol), as upstream does.
fn keep_node_ports(old: &Value, new: &mut Value) {
    if !matches!(
        new["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    ) {
        return;
    }
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    for p in new["spec"]["ports"].as_array_mut().into_iter().flatten() {
        if !p["nodePort"].is_null() {
            continue;
        }
        if let Some(np) = old_ports
            .iter()
            .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
            .and_then(|o| o["nodePort"].as_i64())
        {
            p["nodePort"] = json!(np);
        }
    }
}

/// The NodePort range, as upstream's default `--service-node-port-range`.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

fn node_port_key(port: i64) -> String {
    format!("{}{port}", service_ips::NODE_PORTS)
}

/// Checks `kind`/`apiVersion` against the resource and fills them in when absent.
fn check_type_meta(res: &ResourceDef, obj: &mut Value) -> Result<()> {
    let Some(o) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let api_version = res.api_version();
    match o
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {
            o.insert("apiVersion".into(), json!(api_version));
        }
    }
    match o
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(k) if k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
        _ => {
            o.insert("kind".into(), json!(res.kind));
        }
    }
    Ok(())
}

/// Sets `metadata.namespace` from the request for namespaced resources.
fn scope_namespace<'a>(
    res: &ResourceDef,
    ns: Option<&'a str>,
    obj: &mut Value,
) -> Result<Option<&'a str>> {
    let m = meta_mut(obj);
    if !res.namespaced {
        m.remove("namespace");
        return Ok(None);
    }
    let Some(ns) = ns else {
        return Err(ApiError::bad_request(
            "a namespace must be specified for namespaced resources",
        ));
    };
    match m
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(body_ns) if body_ns != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            m.insert("namespace".into(), json!(ns));
            Ok(Some(ns))
        }
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// kube-apiserver's answer to a continue token whose revision was compacted.
const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

fn parse_resource_version(rv: Option<&str>) -> Result<Option<u64>> {
    match rv.filter(|rv| !rv.is_empty()) {
        None => Ok(None),
        // Digits only, as Go's strconv.ParseUint reads them (Rust's parse takes a leading '+').
        Some(rv) => rv
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| rv.parse::<u64>().ok())
            .flatten()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv}"))),
    }
}

/// The name under which the cache indexes `field` of `res`, if it does.
fn indexed_field(res: &ResourceDef, field: &str) -> Option<&'static str> {
    ["metadata.name", "metadata.namespace"]
        .into_iter()
        .chain(selectable_fields(res).iter().copied())
        .find(|f| *f == field)
}

/// What selectors can look at in a stored object, and nothing else: parsing only this (serde
/// skips the rest without building it) keeps indexing cheap on every commit and at start.
#[derive(serde::Deserialize, serde::Serialize, Default)]
struct Selectable {
    #[serde(default)]
    metadata: SelectableMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<SelectableSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<SelectableStatus>,
    #[serde(
        default,
        rename = "involvedObject",
        skip_serializing_if = "Option::is_none"
    )]
    involved_object: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Value>,
    #[serde(
        default,
        rename = "reportingComponent",
        skip_serializing_if = "Option::is_none"
    )]
    reporting_component: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<Value>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<Value>,
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
struct SelectableMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Value,
    #[serde(
        default,
        rename = "ownerReferences",
        skip_serializing_if = "Value::is_null"
    )]
    owner_references: Value,
}

/// The selectable fields of specs and statuses (pods, nodes, jobs, replica sets, namespaces),
/// each kept with its JSON type so it selects as [`field_value`] reads it.
#[derive(serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct SelectableSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node_name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduler_name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_account_name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_network: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unschedulable: Option<Value>,
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct SelectableStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<Value>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pod_ip: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nominated_node_name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    succeeded: Option<Value>,
}

/// The watch cache's [`cache::Indexer`]: labels and every selectable field of a stored value,
/// and the value as served (with its resourceVersion).
fn index(kv: &store::KeyValue) -> cache::Indexed {
    let (served, revision_at) = match with_resource_version(&kv.value, kv.mod_revision) {
        Some((v, at)) => (Bytes::from(v), Some(at)),
        None => (kv.value.clone(), None),
    };
    cache::Indexed {
        index: index_of(&kv.key, &kv.value),
        served,
        revision_at,
    }
}

fn index_of(key: &str, value: &[u8]) -> cache::Index {
    let plural = key
        .strip_prefix("/registry/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let Some(res) = resources::RESOURCES.iter().find(|r| r.plural == plural) else {
        return cache::Index::default();
    };
    // A small object of just what selectors read (metadata and the selectable fields), read
    // the way whole ones are. A field of another shape than the partial parse expects (a
    // `spec` that is a string in a kind without one) falls back to the whole object.
    let obj = match serde_json::from_slice::<Selectable>(value) {
        Ok(sel) => serde_json::to_value(&sel).unwrap_or_default(),
        Err(_) => serde_json::from_slice::<Value>(value).unwrap_or_default(),
    };
    whole_index(res, &obj)
}

/// The [`cache::Index`] of a parsed object (whole, or just its selectable parts).
fn whole_index(res: &ResourceDef, obj: &Value) -> cache::Index {
    let mut fields = vec![
        ("metadata.name", object::name(obj).to_string()),
        ("metadata.namespace", object::namespace(obj).to_string()),
    ];
    fields.extend(
        selectable_fields(res)
            .iter()
            .map(|f| (*f, field_value(res, obj, f))),
    );
    let refs = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let uid = |r: &Value| r["uid"].as_str().unwrap_or_default().to_string();
    cache::Index {
        labels: object::labels(obj).cloned().unwrap_or(Value::Null),
        fields,
        owners: refs.iter().map(uid).filter(|u| !u.is_empty()).collect(),
        controller: refs
            .iter()
            .find(|r| r["controller"] == true)
            .map(uid)
            .unwrap_or_default(),
    }
}

/// A stored object (compact JSON without a resourceVersion, as [`Api::encode`] writes it) with
/// `"resourceVersion":"<rev>"` put first in its top-level `metadata`; and where the digits are.
/// `None` when the value is not such an object.
fn with_resource_version(value: &[u8], rev: u64) -> Option<(Vec<u8>, std::ops::Range<usize>)> {
    let at = top_level_object_start(value, b"metadata")?;
    let digits = rev.to_string();
    let empty = value.get(at + 1) == Some(&b'}');
    let mut out = Vec::with_capacity(value.len() + digits.len() + 22);
    out.extend_from_slice(&value[..=at]);
    out.extend_from_slice(br#""resourceVersion":""#);
    let start = out.len();
    out.extend_from_slice(digits.as_bytes());
    let end = out.len();
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&value[at + 1..]);
    Some((out, start..end))
}

/// The index of the `{` that opens the value of top-level key `key`, if that value is an object.
fn top_level_object_start(v: &[u8], key: &[u8]) -> Option<usize> {
    let ws = |i: &mut usize| {
        while v.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    // The end of the string starting at `i` (a quote), just past its closing quote.
    let string_end = |mut i: usize| -> Option<usize> {
        i += 1;
        loop {
            match v.get(i)? {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
    };
    // The end of the value starting at `i`.
    let value_end = |mut i: usize| -> Option<usize> {
        match v.get(i)? {
            b'"' => string_end(i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match v.get(i)? {
                        b'"' => {
                            i = string_end(i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                while !matches!(v.get(i)?, b',' | b'}' | b']') && !v[i].is_ascii_whitespace() {
                    i += 1;
                }
                Some(i)
            }
        }
    };
    let mut i = 0;
    ws(&mut i);
    if v.get(i)? != &b'{' {
        return None;
    }
    i += 1;
    loop {
        ws(&mut i);
        if v.get(i)? != &b'"' {
            return None;
        }
        let end = string_end(i)?;
        let name = &v[i + 1..end - 1];
        i = end;
        ws(&mut i);
        if v.get(i)? != &b':' {
            return None;
        }
        i += 1;
        ws(&mut i);
        if name == key {
            return (v.get(i)? == &b'{').then_some(i);
        }
        i = value_end(i)?;
        ws(&mut i);
        match v.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

fn encode_continue(key: &str, rev: u64) -> String {
    let raw = json!({"v": "skiff.v1", "rv": rev, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(String, u64)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["start"].as_str().ok_or_else(bad)?.to_string(),
        v["rv"].as_u64().ok_or_else(bad)?,
    ))
}

/// The fields each kind supports in field selectors (besides name and namespace).
fn selectable_fields(res: &ResourceDef) -> &'static [&'static str] {
    match (res.group, res.kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        _ => &[],
    }
}

fn check_field_selector(res: &ResourceDef, sel: &FieldSelector) -> Result<()> {
    for t in sel.terms() {
        if !["metadata.name", "metadata.namespace"].contains(&t.field.as_str())
            && !selectable_fields(res).contains(&t.field.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                t.field
            )));
        }
    }
    Ok(())
}

/// The string value of a selectable field ("" when unset).
fn field_value(res: &ResourceDef, obj: &Value, field: &str) -> String {
    let path = match (res.kind, field) {
        ("Event", "source") => "source.component",
        ("Job", "status.successful") => "status.succeeded",
        _ => field,
    };
    match object::path(obj, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // Unset booleans and counts select as their zero values, as upstream does.
        None if field == "spec.unschedulable" || field == "spec.hostNetwork" => "false".into(),
        None if field == "status.replicas" || field == "status.successful" => "0".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
impl Api {
    /// An API over a fresh store in a temporary directory, bootstrapped (for tests; the
    /// directory lives as long as the returned guard).
    pub(crate) async fn scratch(config: Config) -> (Api, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            store::SledStore::open(store::SledConfig::new(dir.path().join("db"))).expect("store");
        let api = Api::new(Arc::new(store), config);
        api.bootstrap().await.expect("bootstrap");
        (api, dir)
    }
}

#[cfg(test)]
mod read_tests;

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    fn cm(name: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
    }

    #[tokio::test]
    async fn selector_watches_see_objects_enter_and_leave() {
        let (api, _dir) = api().await;
        let cms = resources::core("configmaps");
        let w = WriteOptions::default();
        api.create(cms, Some("default"), cm("a", json!({"tier": "web"})), &w)
            .await
            .unwrap();
        let opts = ListOptions {
            labels: Selector::parse("tier=web").unwrap(),
            ..Default::default()
        };
        let rv = api
            .list(cms, Some("default"), &opts)
            .unwrap()
            .resource_version
            .to_string();
        let mut watch = api
            .watch(cms, Some("default"), &opts, Some(&rv), false)
            .unwrap();
        let relabel = |tier: &str| json!({"metadata": {"labels": {"tier": tier}}});
        api.patch(
            cms,
            Some("default"),
            "a",
            PatchType::Merge,
            relabel("db"),
            Target::Main,
            &w,
        )
        .await
        .unwrap();
        api.patch(
            cms,
            Some("default"),
            "a",
            PatchType::Merge,
            relabel("web"),
            Target::Main,
            &w,
        )
        .await
        .unwrap();
        api.patch(
            cms,
            Some("default"),
            "a",
            PatchType::Merge,
            json!({"data": {"k": "w"}}),
            Target::Main,
            &w,
        )
        .await
        .unwrap();
        api.create(cms, Some("default"), cm("other", json!({"tier": "db"})), &w)
            .await
            .unwrap();
        api.delete(cms, Some("default"), "a", &DeleteOptions::default())
            .await
            .unwrap();
        let mut kinds = Vec::new();
        for _ in 0..4 {
            kinds.push(match watch.next().await.unwrap() {
                WatchEvent::Added(_) => "ADDED",
                WatchEvent::Modified(_) => "MODIFIED",
                WatchEvent::Deleted(_) => "DELETED",
                other => panic!("unexpected {other:?}"),
            });
        }
        assert_eq!(kinds, ["DELETED", "ADDED", "MODIFIED", "DELETED"]);
    }

    #[tokio::test]
    async fn spec_changes_bump_generation_and_main_writes_keep_status() {
        let (api, _dir) = api().await;
        let deploys = resources::find("apps", "v1", "deployments").unwrap();
        let w = WriteOptions::default();
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
            "status": {"replicas": 9}});
        let created = api
            .create(deploys, Some("default"), d, &w)
            .await
            .unwrap()
            .object;
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(
            created.get("status").is_none(),
            "status is not set by create"
        );
        let labelled = api
            .patch(
                deploys,
                Some("default"),
                "d",
                PatchType::Merge,
                json!({"metadata": {"labels": {"x": "y"}}, "status": {"replicas": 3}}),
                Target::Main,
                &w,
            )
            .await
            .unwrap()
            .object;
        assert_eq!(
            labelled["metadata"]["generation"], 1,
            "metadata changes keep the generation"
        );
        assert!(
            labelled.get("status").is_none(),
            "the main resource ignores status"
        );
        let status = api
            .patch(
                deploys,
                Some("default"),
                "d",
                PatchType::Merge,
                json!({"spec": {"replicas": 7}, "status": {"replicas": 3}}),
                Target::Status,
                &w,
            )
            .await
            .unwrap()
            .object;
        assert_eq!(
            (
                status["status"]["replicas"].as_i64(),
                status["spec"]["replicas"].as_i64()
            ),
            (Some(3), Some(1)),
            "status writes change only status"
        );
        let scaled = api
            .patch(
                deploys,
                Some("default"),
                "d",
                PatchType::Merge,
                json!({"spec": {"replicas": 4}}),
                Target::Main,
                &w,
            )
            .await
            .unwrap()
            .object;
        assert_eq!(scaled["metadata"]["generation"], 2);
    }

    #[tokio::test]
    async fn namespaces_must_exist_and_be_active() {
        let (api, _dir) = api().await;
        let cms = resources::core("configmaps");
        let err = api
            .create(
                cms,
                Some("nowhere"),
                cm("a", json!({})),
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (404, "namespaces \"nowhere\" not found")
        );
    }

    #[tokio::test]
    async fn node_ports_are_allocated_checked_and_released() {
        let (api, _dir) = api().await;
        let svcs = resources::core("services");
        let w = WriteOptions::default();
        let svc = |name: &str, port: Value| {
            json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": port}]}})
        };
        let a = api
            .create(svcs, Some("default"), svc("a", Value::Null), &w)
            .await
            .unwrap()
            .object;
        let port = a["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&port), "{port}");
        let err = api
            .create(svcs, Some("default"), svc("b", json!(port)), &w)
            .await
            .unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("provided port is already allocated"),
            "{}",
            err.message
        );
        api.delete(svcs, Some("default"), "a", &DeleteOptions::default())
            .await
            .unwrap();
        let b = api
            .create(svcs, Some("default"), svc("b", json!(port)), &w)
            .await
            .unwrap()
            .object;
        assert_eq!(b["spec"]["ports"][0]["nodePort"], json!(port));
    }

    #[tokio::test]
    async fn service_updates_keep_allocate_and_release_node_ports() {
        let (api, _dir) = api().await;
        let svcs = resources::core("services");
        let w = WriteOptions::default();
        let spec = json!({"metadata": {"name": "a"}, "spec": {"selector": {"app": "web"},
            "ports": [{"port": 80}]}});
        api.create(svcs, Some("default"), spec.clone(), &w)
            .await
            .unwrap();
        let node_port = |obj: &Value| obj["spec"]["ports"][0]["nodePort"].as_i64();
        // ClusterIP to NodePort: a node port is allocated.
        let patched = api
            .patch(
                svcs,
                Some("default"),
                "a",
                PatchType::Merge,
                json!({"spec": {"type": "NodePort"}}),
                Target::Main,
                &w,
            )
            .await
            .unwrap()
            .object;
        let port = node_port(&patched).expect("allocated");
        // A replace that leaves it out keeps it.
        let mut replaced = patched.clone();
        replaced["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("nodePort");
        replaced["spec"]["selector"] = json!({"app": "other"});
        let replaced = api
            .update(svcs, Some("default"), "a", replaced, Target::Main, &w)
            .await
            .unwrap()
            .object;
        assert_eq!(node_port(&replaced), Some(port));
        // Back to ClusterIP: the port is free for another Service.
        let mut cluster_ip = replaced.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        cluster_ip["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("nodePort");
        cluster_ip["spec"]
            .as_object_mut()
            .unwrap()
            .remove("externalTrafficPolicy");
        api.update(svcs, Some("default"), "a", cluster_ip, Target::Main, &w)
            .await
            .unwrap();
        let b = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort",
            "ports": [{"port": 80, "nodePort": port}]}});
        api.create(svcs, Some("default"), b, &w).await.unwrap();
    }
}
