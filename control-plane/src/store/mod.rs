//! The store: an etcd-shaped key-value interface with one global revision.
//!
//! Keys are `/registry/<resource>/[<namespace>/]<name>`. Every write gets the next revision,
//! which the API layer exposes as `metadata.resourceVersion`. A revision is *committed* once it
//! is durable: only then is it acknowledged, published ([`Store::revision`]), handed to the
//! commit listener (the watch cache) and to watches. Watches replay the retained history, each
//! event with the value it replaced, and then follow live events.

mod encrypted;
mod sled_store;

use std::fmt;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use encrypted::{Encrypted, Keyring, reseal};
pub use sled_store::{Config as SledConfig, SledStore};

/// A stored key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value bytes (JSON for API objects).
    pub value: Bytes,
    /// The revision at which the key was created.
    pub create_revision: u64,
    /// The revision of the last change (for a delete event, the delete's revision).
    pub mod_revision: u64,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created.
    Create,
    /// The key's value changed.
    Update,
    /// The key was deleted; the event carries the last value.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key and value after the change (the last value for a delete).
    pub kv: KeyValue,
    /// The value the change replaced (`None` for a create), as etcd's `prev_kv`.
    pub prev: Option<KeyValue>,
    /// When the change was committed, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// Called with every batch of committed events, in revision order, before they are
/// acknowledged to their writers. It runs on the store's commit path: keep it short.
pub type CommitListener = std::sync::Arc<dyn Fn(&[Event]) + Send + Sync>;

/// A page of a range read.
#[derive(Debug, Clone)]
pub struct Range {
    /// The keys in order.
    pub kvs: Vec<KeyValue>,
    /// True when more keys follow the last one returned.
    pub more: bool,
    /// The store's revision when the range was read.
    pub revision: u64,
}

/// Store failures. The API layer maps each to one Kubernetes `Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` found the key present.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// A compare-and-swap found another revision.
    #[error("key {key} is at revision {current}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The revision found.
        current: u64,
    },
    /// A watch asked for history that compaction removed.
    #[error("required revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The compaction point.
        compacted: u64,
    },
    /// The backing engine failed.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    /// A flush failed earlier: the store stopped taking writes rather than serve a state that
    /// was never made durable (fail-stop).
    #[error("store stopped after a failed flush")]
    Failed,
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, Error>;

/// The etcd-shaped storage interface the API server and tests program against.
///
/// `get` and `range` read the latest *applied* state, which may include writes still waiting
/// for their flush: they serve read-modify-write loops (whose own write is acknowledged only
/// after everything it read is durable) and the watch cache's start. Clients read the watch
/// cache, which holds only committed data.
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads keys starting with `prefix`, in key order, after `start_after` when given, at most
    /// `limit` of them (0 = no limit).
    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Range>;

    /// Every retained event after revision `after` (committed ones only), oldest first.
    /// Fails with [`Error::Compacted`] when `after` is older than the retained history.
    fn changes(&self, after: u64) -> Result<Vec<Event>>;

    /// Sets the listener that sees every committed batch before it is acknowledged. Set it
    /// before the first write; a later call replaces it.
    fn on_commit(&self, listener: CommitListener);

    /// Creates a key that must not exist; resolves once durable with the new revision.
    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64>>;

    /// Replaces a key's value if its mod revision is `expected` (0 = unconditionally);
    /// resolves once durable with the new revision.
    fn update(&self, key: &str, expected: u64, value: Bytes) -> BoxFuture<'_, Result<u64>>;

    /// Deletes a key if its mod revision is `expected` (0 = unconditionally); resolves once
    /// durable with the delete's revision and the last value.
    fn delete(&self, key: &str, expected: u64) -> BoxFuture<'_, Result<KeyValue>>;

    /// Streams every change under `prefix` with a revision above `after`, then live changes.
    /// Fails with [`Error::Compacted`] when `after` is older than the retained history.
    fn watch(&self, prefix: &str, after: u64) -> Result<BoxStream<'static, Result<Event>>>;

    /// Drops history at and below `revision`.
    fn compact(&self, revision: u64) -> Result<()>;

    /// The latest committed (durable) revision.
    fn revision(&self) -> u64;

    /// The oldest revision a watch may resume from.
    fn compacted_revision(&self) -> u64;
}
