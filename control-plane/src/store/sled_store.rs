//! The sled implementation of [`Store`].
//!
//! One sled tree holds four key spaces, so that each value is written once per revision:
//! - `s<key>` → the key's create and mod revisions (a pointer to its current value);
//! - `v<revision>` → the value written at that revision;
//! - `l<revision>` → the change log: kind, create revision, the revision of the value it
//!   replaced, commit time and key;
//! - `m:*` → metadata (latest revision, compaction point, layout version).
//!
//! Writes go to two threads of the store's own, so no async task ever waits on the disk:
//! - the writer thread takes every write that arrived meanwhile and applies them in order,
//!   each at its own revision and checked on its own (a conflict fails that write only), as
//!   one atomic sled batch;
//! - the flusher thread takes every applied batch that arrived meanwhile, makes them durable
//!   with one `flush` (group commit), and only then publishes the new revision, hands the
//!   events to the commit listener and watches, and acknowledges them. A failed flush stops
//!   the store (fail-stop): nothing that was not made durable is ever published.
//!
//! Compaction to revision R removes the log entries up to R and the values they replaced; the
//! value a key currently has is never removed, and every event after R can be replayed with the
//! value it replaced.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::{broadcast, oneshot};

use super::{CommitListener, Error, Event, EventKind, KeyValue, Range, Result, Store};

const META_REVISION: &[u8] = b"m:rev";
const META_COMPACTED: &[u8] = b"m:compacted";
const META_FORMAT: &[u8] = b"m:format";
/// The layout described above. Stores written before it (state and log entries holding full
/// copies of the value) are converted when opened.
const FORMAT: u64 = 2;

/// Called once when a flush fails, with what failed; the server exits on it.
pub type FailureHook = Arc<dyn Fn(&Error) + Send + Sync>;

/// How a [`SledStore`] is opened.
#[derive(Clone)]
pub struct Config {
    /// The directory sled keeps its files in.
    pub path: PathBuf,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
    /// What to do when a flush fails (after the store has stopped taking writes).
    pub on_failure: Option<FailureHook>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults sized for a small gateway: a 64 MiB cache. History is compacted by the watch
    /// cache (or by [`Store::compact`]), not by the store itself.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_bytes: 64 << 20,
            on_failure: None,
        }
    }
}

/// Writes applied as one sled batch at most.
const MAX_BATCH: usize = 4096;

/// A durable store on sled with group commit.
pub struct SledStore {
    shared: Arc<Shared>,
    /// To the writer thread; `None` once the store is closing.
    requests: Option<mpsc::Sender<Request>>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    db: sled::Db,
    /// The latest committed revision.
    revision: AtomicU64,
    compacted: AtomicU64,
    failed: AtomicBool,
    events: broadcast::Sender<Arc<Event>>,
    listener: RwLock<Option<CommitListener>>,
    on_failure: Option<FailureHook>,
    /// Fault injection for tests: the next flush fails.
    #[cfg(test)]
    fail_next_flush: AtomicBool,
    /// Fault injection for tests: the next sled batch fails to apply.
    #[cfg(test)]
    fail_next_apply: AtomicBool,
}

/// A write on its way to the writer thread.
struct Request {
    key: String,
    op: Op,
    reply: oneshot::Sender<Result<Event>>,
}

/// A write applied and waiting for its flush.
struct Pending {
    event: Event,
    reply: oneshot::Sender<Result<Event>>,
}

/// One sled batch on its way to the flusher: the writes it applied, and the writes of the same
/// round that failed their checks (a conflict with an earlier write, a duplicate create),
/// answered only once what they were checked against is durable and published.
#[derive(Default)]
struct Applied {
    writes: Vec<Pending>,
    rejected: Vec<(oneshot::Sender<Result<Event>>, Error)>,
}

/// Fail-stop: marks the store failed (nothing more is applied, published or acknowledged)
/// and calls its failure hook, once.
fn fail(shared: &Shared, e: &Error, what: &str) {
    if shared.failed.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::error!(error = %e, "store {what} failed; the store takes no more writes");
    if let Some(hook) = &shared.on_failure {
        hook(e);
    }
}

enum Op {
    Create(Bytes),
    Update(u64, Bytes),
    Delete(u64),
}

impl SledStore {
    /// Opens (or creates) the store at `config.path` and starts its writer and flusher.
    pub fn open(config: Config) -> Result<Self> {
        let open = || {
            sled::Config::new()
                .path(&config.path)
                .cache_capacity(config.cache_bytes)
                .flush_every_ms(None)
                .mode(sled::Mode::HighThroughput)
                .open()
        };
        // The lock of a store just closed (a server restarted in place, a store reopened in
        // the same process) may be let go a moment after: wait a little for it, while a store
        // another live process holds still fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match open() {
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::Other
                        && e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(backend)?,
            }
        };
        upgrade(&db)?;
        let revision = read_u64(&db, META_REVISION)?;
        let compacted = read_u64(&db, META_COMPACTED)?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            db,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            failed: AtomicBool::new(false),
            events,
            listener: RwLock::new(None),
            on_failure: config.on_failure.clone(),
            #[cfg(test)]
            fail_next_flush: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_apply: AtomicBool::new(false),
        });
        let (flush_tx, flush_rx) = mpsc::channel();
        let (requests, requests_rx) = mpsc::channel();
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-flusher".into())
                .spawn(move || flusher(&shared, &flush_rx))
                .map_err(backend)?
        };
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| {
                        writer(&shared, revision, &requests_rx, &flush_tx);
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        // Writes queued after this get `Closed`; none is published.
                        fail(&shared, &Error::Failed, "writer");
                    }
                })
                .map_err(backend)?
        };
        Ok(Self {
            shared,
            requests: Some(requests),
            threads: vec![writer, flusher],
        })
    }

    /// Queues a write for the writer thread (so writes are applied in call order); resolves
    /// once it is durable, or failed.
    fn write(&self, key: &str, op: Op) -> BoxFuture<'_, Result<Event>> {
        let (reply, done) = oneshot::channel();
        let sent = match &self.requests {
            _ if self.shared.failed.load(Ordering::Acquire) => Err(Error::Failed),
            Some(tx) => tx
                .send(Request {
                    key: key.to_string(),
                    op,
                    reply,
                })
                .map_err(|_| Error::Closed),
            None => Err(Error::Closed),
        };
        Box::pin(async move {
            sent?;
            done.await.map_err(|_| Error::Closed)?
        })
    }

    /// Makes the next flush fail, as a full or broken disk would.
    #[cfg(test)]
    pub(crate) fn fail_next_flush(&self) {
        self.shared.fail_next_flush.store(true, Ordering::Release);
    }

    /// Makes the next sled batch fail to apply (tests of fail-stop).
    #[cfg(test)]
    pub(crate) fn fail_next_apply(&self) {
        self.shared.fail_next_apply.store(true, Ordering::Release);
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer, then the flusher, finish what is queued and
        // exit.
        self.requests.take();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Store for SledStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        read_state(&self.shared.db, key, &state_key(key))
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Range> {
        // Read the revision first: every value seen is at least as new as it.
        let revision = self.revision();
        let start = match start_after {
            // The smallest key greater than `start_after`.
            Some(after) => {
                let mut k = state_key(after);
                k.push(0);
                k
            }
            None => state_key(prefix),
        };
        let sprefix = state_key(prefix);
        let mut kvs = Vec::new();
        let mut more = false;
        for item in self.shared.db.range(start..) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&sprefix) {
                break;
            }
            if limit > 0 && kvs.len() == limit {
                more = true;
                break;
            }
            let key = String::from_utf8_lossy(&k[1..]).into_owned();
            kvs.push(resolve_state(&self.shared.db, &key, &v)?);
        }
        Ok(Range {
            kvs,
            more,
            revision,
        })
    }

    fn changes(&self, after: u64) -> Result<Vec<Event>> {
        let upto = self.revision();
        let (events, _) = replay(&self.shared, "", after, upto)?;
        Ok(events.into())
    }

    fn on_commit(&self, listener: CommitListener) {
        *self
            .shared
            .listener
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64>> {
        let fut = self.write(key, Op::Create(value));
        Box::pin(async move { Ok(fut.await?.kv.mod_revision) })
    }

    fn update(&self, key: &str, expected: u64, value: Bytes) -> BoxFuture<'_, Result<u64>> {
        let fut = self.write(key, Op::Update(expected, value));
        Box::pin(async move { Ok(fut.await?.kv.mod_revision) })
    }

    fn delete(&self, key: &str, expected: u64) -> BoxFuture<'_, Result<KeyValue>> {
        let fut = self.write(key, Op::Delete(expected));
        Box::pin(async move { Ok(fut.await?.kv) })
    }

    fn watch(&self, prefix: &str, after: u64) -> Result<BoxStream<'static, Result<Event>>> {
        // Subscribe before replaying so nothing falls between history and live events.
        let rx = self.shared.events.subscribe();
        let upto = self.revision();
        let (buffer, last) = replay(&self.shared, prefix, after, upto)?;
        let state = WatchState {
            shared: self.shared.clone(),
            prefix: prefix.to_string(),
            last,
            buffer,
            rx,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    fn compact(&self, revision: u64) -> Result<()> {
        compact(&self.shared, revision)
    }

    fn revision(&self) -> u64 {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> u64 {
        self.shared.compacted.load(Ordering::Acquire)
    }
}

struct WatchState {
    shared: Arc<Shared>,
    prefix: String,
    /// The highest revision seen (delivered or skipped as outside the prefix).
    last: u64,
    buffer: VecDeque<Event>,
    rx: broadcast::Receiver<Arc<Event>>,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some((Ok(event), self));
            }
            match self.rx.recv().await {
                Ok(event) => {
                    let rev = event.kv.mod_revision;
                    if rev <= self.last {
                        continue;
                    }
                    self.last = rev;
                    if event.kv.key.starts_with(&self.prefix) {
                        return Some((Ok((*event).clone()), self));
                    }
                }
                // A slow watcher fell behind the live channel: catch up from the durable log.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let upto = self.shared.revision.load(Ordering::Acquire);
                    match replay(&self.shared, &self.prefix, self.last, upto) {
                        Ok((buffer, last)) => {
                            self.buffer = buffer;
                            self.last = last;
                        }
                        Err(e) => {
                            self.done = true;
                            return Some((Err(e), self));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Reads logged events under `prefix` after revision `after` up to `upto` (the committed
/// revision: later entries may still be waiting for their flush); returns them and the
/// highest revision scanned.
fn replay(shared: &Shared, prefix: &str, after: u64, upto: u64) -> Result<(VecDeque<Event>, u64)> {
    let check = || {
        let compacted = shared.compacted.load(Ordering::Acquire);
        if after < compacted {
            Err(Error::Compacted {
                requested: after,
                compacted,
            })
        } else {
            Ok(())
        }
    };
    check()?;
    let mut events = VecDeque::new();
    let mut last = after;
    if upto > after {
        for item in shared.db.range(log_key(after + 1)..=log_key(upto)) {
            let (k, v) = item.map_err(backend)?;
            let rev = u64::from_be_bytes(k[1..9].try_into().expect("log keys are 9 bytes"));
            last = rev;
            let entry = decode_log(&v);
            if entry.key.starts_with(prefix) {
                events.push_back(logged_event(&shared.db, rev, entry)?);
            }
        }
    }
    // Compaction may have removed entries while we scanned.
    check()?;
    Ok((events, last.max(after)))
}

/// Rebuilds a logged event with its value and the value it replaced.
fn logged_event(db: &sled::Db, rev: u64, entry: LogEntry) -> Result<Event> {
    let prev = match entry.prev_revision {
        0 => None,
        r => Some(kv(&entry.key, read_value(db, r)?, entry.create_revision, r)),
    };
    let value = match (entry.kind, &prev) {
        (EventKind::Delete, Some(p)) => p.value.clone(),
        (EventKind::Delete, None) => Bytes::new(),
        _ => read_value(db, rev)?,
    };
    Ok(Event {
        kind: entry.kind,
        kv: kv(&entry.key, value, entry.create_revision, rev),
        prev,
        time_ms: entry.time_ms,
    })
}

fn compact(shared: &Shared, revision: u64) -> Result<()> {
    let revision = revision.min(shared.revision.load(Ordering::Acquire));
    let old = shared.compacted.load(Ordering::Acquire);
    if revision <= old {
        return Ok(());
    }
    // Publish the new compaction point first so no watch starts in the range being removed.
    shared.compacted.store(revision, Ordering::Release);
    shared
        .db
        .insert(META_COMPACTED, &revision.to_be_bytes()[..])
        .map_err(backend)?;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in shared.db.range(log_key(old + 1)..=log_key(revision)) {
        let (k, v) = item.map_err(backend)?;
        let entry = decode_log(&v);
        // The value this change replaced is history now; the change's own value stays while
        // it is the key's current one (a later change removes it in turn).
        if entry.prev_revision > 0 {
            batch.remove(&value_key(entry.prev_revision)[..]);
        }
        batch.remove(k);
        n += 1;
        if n % 1024 == 0 {
            shared
                .db
                .apply_batch(std::mem::take(&mut batch))
                .map_err(backend)?;
        }
    }
    shared.db.apply_batch(batch).map_err(backend)?;
    Ok(())
}

/// Applies what arrives, as few sled batches as it can, and hands each to the flusher.
fn writer(
    shared: &Shared,
    mut revision: u64,
    rx: &mpsc::Receiver<Request>,
    flush_tx: &mpsc::Sender<Applied>,
) {
    while let Ok(first) = rx.recv() {
        let requests: Vec<Request> = std::iter::once(first)
            .chain(rx.try_iter().take(MAX_BATCH - 1))
            .collect();
        if shared.failed.load(Ordering::Acquire) {
            for r in requests {
                let _ = r.reply.send(Err(Error::Failed));
            }
            continue;
        }
        let mut batch = sled::Batch::default();
        // Keys written earlier in this batch, as they are after it.
        let mut written: HashMap<String, Option<KeyValue>> = HashMap::new();
        let mut applied = Applied::default();
        let time_ms = now_ms();
        for Request { key, op, reply } in requests {
            let current = match written.get(&key) {
                Some(state) => Ok(state.clone()),
                None => read_state(&shared.db, &key, &state_key(&key)),
            };
            let change = current
                .and_then(|current| change(&mut batch, &key, op, current, revision + 1, time_ms));
            match change {
                Ok(event) => {
                    revision += 1;
                    let after = (event.kind != EventKind::Delete).then(|| event.kv.clone());
                    written.insert(key, after);
                    applied.writes.push(Pending { event, reply });
                }
                Err(e) => applied.rejected.push((reply, e)),
            }
        }
        if !applied.writes.is_empty() {
            batch.insert(META_REVISION, &revision.to_be_bytes()[..]);
            // sled applies a batch atomically only for crash recovery: one that fails while
            // running may be half in memory, so the store stops rather than reuse its
            // revisions or serve what it left behind.
            #[cfg(test)]
            let injected = shared.fail_next_apply.swap(false, Ordering::AcqRel);
            #[cfg(not(test))]
            let injected = false;
            let result = if injected {
                Err(Error::Backend("injected write failure".into()))
            } else {
                shared.db.apply_batch(batch).map_err(backend)
            };
            if let Err(e) = result {
                fail(shared, &e, "write");
                for p in applied.writes {
                    let _ = p.reply.send(Err(Error::Failed));
                }
                for (reply, _) in applied.rejected {
                    let _ = reply.send(Err(Error::Failed));
                }
                continue;
            }
        }
        if let Err(mpsc::SendError(lost)) = flush_tx.send(applied) {
            // The flusher is gone: nothing applied from now on could be made durable.
            fail(shared, &Error::Closed, "flusher");
            let replies = lost.writes.into_iter().map(|p| p.reply);
            for reply in replies.chain(lost.rejected.into_iter().map(|(r, _)| r)) {
                let _ = reply.send(Err(Error::Failed));
            }
        }
    }
}

/// Adds one write to `batch` at `revision`, checked against the key's `current` state.
fn change(
    batch: &mut sled::Batch,
    key: &str,
    op: Op,
    current: Option<KeyValue>,
    revision: u64,
    time_ms: u64,
) -> Result<Event> {
    let skey = state_key(key);
    let event = match (op, current) {
        (Op::Create(_), Some(_)) => return Err(Error::AlreadyExists(key.into())),
        (Op::Create(value), None) => {
            batch.insert(skey, &encode_state(revision, revision)[..]);
            batch.insert(&value_key(revision)[..], &value[..]);
            Event {
                kind: EventKind::Create,
                kv: kv(key, value, revision, revision),
                prev: None,
                time_ms,
            }
        }
        (Op::Update(..) | Op::Delete(_), None) => return Err(Error::NotFound(key.into())),
        (Op::Update(expected, _) | Op::Delete(expected), Some(cur))
            if expected != 0 && expected != cur.mod_revision =>
        {
            return Err(Error::Conflict {
                key: key.into(),
                expected,
                current: cur.mod_revision,
            });
        }
        (Op::Update(_, value), Some(cur)) => {
            batch.insert(skey, &encode_state(cur.create_revision, revision)[..]);
            batch.insert(&value_key(revision)[..], &value[..]);
            Event {
                kind: EventKind::Update,
                kv: kv(key, value, cur.create_revision, revision),
                prev: Some(cur),
                time_ms,
            }
        }
        (Op::Delete(_), Some(cur)) => {
            batch.remove(skey);
            Event {
                kind: EventKind::Delete,
                kv: kv(key, cur.value.clone(), cur.create_revision, revision),
                prev: Some(cur),
                time_ms,
            }
        }
    };
    batch.insert(&log_key(revision)[..], encode_log(&event));
    Ok(event)
}

fn flusher(shared: &Shared, rx: &mpsc::Receiver<Applied>) {
    while let Ok(first) = rx.recv() {
        let mut batch = first;
        for more in rx.try_iter() {
            batch.writes.extend(more.writes);
            batch.rejected.extend(more.rejected);
        }
        let Applied { writes, rejected } = batch;
        if shared.failed.load(Ordering::Acquire) {
            let replies = writes.into_iter().map(|p| p.reply);
            for reply in replies.chain(rejected.into_iter().map(|(r, _)| r)) {
                let _ = reply.send(Err(Error::Failed));
            }
            continue;
        }
        if !writes.is_empty() {
            #[cfg(test)]
            let injected = shared.fail_next_flush.swap(false, Ordering::AcqRel);
            #[cfg(not(test))]
            let injected = false;
            let flushed = if injected {
                Err(Error::Backend("injected flush failure".into()))
            } else {
                shared.db.flush().map(drop).map_err(backend)
            };
            if let Err(e) = flushed {
                // Fail-stop: these writes are applied in sled's memory but were never made
                // durable, so nothing more is published or acknowledged.
                fail(shared, &e, "flush");
                let replies = writes.into_iter().map(|p| p.reply);
                for reply in replies.chain(rejected.into_iter().map(|(r, _)| r)) {
                    let _ = reply.send(Err(Error::Failed));
                }
                continue;
            }
        }
        let last = writes.last().map(|p| p.event.kv.mod_revision);
        let (events, replies): (Vec<_>, Vec<_>) =
            writes.into_iter().map(|p| (p.event, p.reply)).unzip();
        if let Some(last) = last {
            if let Some(listener) = shared
                .listener
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                listener(&events);
            }
            shared.revision.store(last, Ordering::Release);
            if shared.events.receiver_count() > 0 {
                for event in &events {
                    let _ = shared.events.send(Arc::new(event.clone()));
                }
            }
        }
        for (reply, event) in replies.into_iter().zip(events) {
            let _ = reply.send(Ok(event));
        }
        // Checked against writes that are now durable and served.
        for (reply, e) in rejected {
            let _ = reply.send(Err(e));
        }
    }
    // What was acknowledged is flushed already; after a failure, nothing more is written
    // (a write answered `Failed` must not come back after a restart).
    if !shared.failed.load(Ordering::Acquire) {
        let _ = shared.db.flush();
    }
}

/// Converts a store written in the first layout (full values in state and log entries): each
/// current value moves to `v<mod revision>` and the old log is dropped (watches from before
/// the upgrade get 410 Expired and list again).
fn upgrade(db: &sled::Db) -> Result<()> {
    if read_u64(db, META_FORMAT)? == FORMAT {
        return Ok(());
    }
    let revision = read_u64(db, META_REVISION)?;
    let mut batch = sled::Batch::default();
    for item in db.scan_prefix(b"s") {
        let (k, v) = item.map_err(backend)?;
        if v.len() < 16 {
            return Err(Error::Backend(
                format!("corrupt state entry {}", String::from_utf8_lossy(&k)).into(),
            ));
        }
        let mod_revision = u64::from_be_bytes(v[8..16].try_into().expect("state header"));
        batch.insert(&value_key(mod_revision)[..], &v[16..]);
        batch.insert(k, &v[..16]);
    }
    for item in db.scan_prefix(b"l") {
        let (k, _) = item.map_err(backend)?;
        batch.remove(k);
    }
    batch.insert(META_COMPACTED, &revision.to_be_bytes()[..]);
    batch.insert(META_FORMAT, &FORMAT.to_be_bytes()[..]);
    db.apply_batch(batch).map_err(backend)?;
    db.flush().map_err(backend)?;
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn kv(key: &str, value: Bytes, create: u64, rev: u64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
        create_revision: create,
        mod_revision: rev,
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Backend(Box::new(e))
}

fn read_u64(db: &sled::Db, key: &[u8]) -> Result<u64> {
    Ok(db
        .get(key)
        .map_err(backend)?
        .and_then(|v| v.as_ref().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

fn read_value(db: &sled::Db, rev: u64) -> Result<Bytes> {
    db.get(value_key(rev))
        .map_err(backend)?
        .map(|v| Bytes::copy_from_slice(&v))
        .ok_or_else(|| Error::Backend(format!("value of revision {rev} is missing").into()))
}

fn read_state(db: &sled::Db, key: &str, skey: &[u8]) -> Result<Option<KeyValue>> {
    db.get(skey)
        .map_err(backend)?
        .map(|v| resolve_state(db, key, &v))
        .transpose()
}

fn resolve_state(db: &sled::Db, key: &str, v: &[u8]) -> Result<KeyValue> {
    let create = u64::from_be_bytes(v[0..8].try_into().expect("state header"));
    let rev = u64::from_be_bytes(v[8..16].try_into().expect("state header"));
    Ok(kv(key, read_value(db, rev)?, create, rev))
}

fn state_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b's');
    k.extend_from_slice(key.as_bytes());
    k
}

fn log_key(rev: u64) -> [u8; 9] {
    let mut k = [b'l'; 9];
    k[1..].copy_from_slice(&rev.to_be_bytes());
    k
}

fn value_key(rev: u64) -> [u8; 9] {
    let mut k = [b'v'; 9];
    k[1..].copy_from_slice(&rev.to_be_bytes());
    k
}

fn encode_state(create: u64, rev: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&create.to_be_bytes());
    v[8..].copy_from_slice(&rev.to_be_bytes());
    v
}

struct LogEntry {
    kind: EventKind,
    create_revision: u64,
    prev_revision: u64,
    time_ms: u64,
    key: String,
}

fn encode_log(event: &Event) -> Vec<u8> {
    let key = event.kv.key.as_bytes();
    let mut v = Vec::with_capacity(25 + key.len());
    v.push(match event.kind {
        EventKind::Create => 0,
        EventKind::Update => 1,
        EventKind::Delete => 2,
    });
    v.extend_from_slice(&event.kv.create_revision.to_be_bytes());
    let prev = event.prev.as_ref().map_or(0, |p| p.mod_revision);
    v.extend_from_slice(&prev.to_be_bytes());
    v.extend_from_slice(&event.time_ms.to_be_bytes());
    v.extend_from_slice(key);
    v
}

fn decode_log(v: &[u8]) -> LogEntry {
    let kind = match v[0] {
        0 => EventKind::Create,
        1 => EventKind::Update,
        _ => EventKind::Delete,
    };
    let u64_at = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().expect("log header"));
    LogEntry {
        kind,
        create_revision: u64_at(1),
        prev_revision: u64_at(9),
        time_ms: u64_at(17),
        key: String::from_utf8_lossy(&v[25..]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::{FutureExt as _, StreamExt};

    use super::*;

    fn open(dir: &tempfile::TempDir) -> SledStore {
        SledStore::open(Config::new(dir.path().join("db"))).unwrap()
    }

    /// A store whose failure hook counts its calls (the server's exits the process).
    fn open_counting_failures(dir: &tempfile::TempDir) -> (SledStore, Arc<AtomicU64>) {
        let failures = Arc::new(AtomicU64::new(0));
        let mut config = Config::new(dir.path().join("db"));
        let counted = failures.clone();
        config.on_failure = Some(Arc::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        }));
        (SledStore::open(config).unwrap(), failures)
    }

    /// Once the store has failed, a new write is refused and the hook has run exactly once.
    async fn assert_stopped(store: &SledStore, failures: &AtomicU64) {
        assert!(matches!(
            store.create("/registry/k/c", b("3")).await,
            Err(Error::Failed)
        ));
        assert_eq!(
            failures.load(Ordering::Relaxed),
            1,
            "the failure hook ran once"
        );
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn revisions_and_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let r1 = store.create("/registry/pods/a/x", b("1")).await.unwrap();
        let r2 = store.create("/registry/pods/a/y", b("2")).await.unwrap();
        assert_eq!((r1, r2), (1, 2));
        assert!(matches!(
            store.create("/registry/pods/a/x", b("again")).await,
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            store.update("/registry/pods/a/x", r2, b("stale")).await,
            Err(Error::Conflict { current: 1, .. })
        ));
        let r3 = store
            .update("/registry/pods/a/x", r1, b("3"))
            .await
            .unwrap();
        let kv = store.get("/registry/pods/a/x").unwrap().unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, &kv.value[..]),
            (1, r3, &b"3"[..])
        );
        assert!(matches!(
            store.delete("/registry/pods/a/x", r1).await,
            Err(Error::Conflict { .. })
        ));
        let deleted = store.delete("/registry/pods/a/x", r3).await.unwrap();
        assert_eq!(&deleted.value[..], b"3");
        assert!(store.get("/registry/pods/a/x").unwrap().is_none());
        assert_eq!(store.revision(), 4);
    }

    #[tokio::test]
    async fn range_pages_with_limit_and_continue() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..5 {
            store
                .create(&format!("/registry/pods/ns/p{i}"), b("x"))
                .await
                .unwrap();
        }
        store.create("/registry/pods/ns2/q", b("x")).await.unwrap();
        let page = store.range("/registry/pods/ns/", None, 2).unwrap();
        assert_eq!(page.kvs.len(), 2);
        assert!(page.more);
        let rest = store
            .range("/registry/pods/ns/", Some(&page.kvs[1].key), 0)
            .unwrap();
        let keys: Vec<_> = rest.kvs.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/registry/pods/ns/p2",
                "/registry/pods/ns/p3",
                "/registry/pods/ns/p4"
            ]
        );
        assert!(!rest.more);
        assert_eq!(
            store.range("/registry/pods/", None, 0).unwrap().kvs.len(),
            6
        );
    }

    #[tokio::test]
    async fn watch_replays_history_then_follows_live_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.create("/registry/a/1", b("1")).await.unwrap();
        store.create("/registry/b/1", b("other")).await.unwrap();
        store.update("/registry/a/1", 0, b("2")).await.unwrap();
        let mut watch = store.watch("/registry/a/", 0).unwrap();
        let e = watch.next().await.unwrap().unwrap();
        assert_eq!((e.kind, e.kv.mod_revision), (EventKind::Create, 1));
        let e = watch.next().await.unwrap().unwrap();
        assert_eq!((e.kind, e.kv.mod_revision), (EventKind::Update, 3));
        store.delete("/registry/a/1", 0).await.unwrap();
        let e = watch.next().await.unwrap().unwrap();
        assert_eq!(
            (e.kind, e.kv.mod_revision, &e.kv.value[..]),
            (EventKind::Delete, 4, &b"2"[..])
        );
        // Resuming from a revision delivers only later events.
        let mut resumed = store.watch("/registry/", 3).unwrap();
        assert_eq!(resumed.next().await.unwrap().unwrap().kv.mod_revision, 4);
    }

    #[tokio::test]
    async fn compaction_expires_old_watches() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..10 {
            store
                .create(&format!("/registry/k/{i}"), b("x"))
                .await
                .unwrap();
        }
        store.compact(6).unwrap();
        assert!(matches!(
            store.watch("/registry/", 5),
            Err(Error::Compacted {
                requested: 5,
                compacted: 6
            })
        ));
        let mut w = store.watch("/registry/", 6).unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().kv.mod_revision, 7);
        // Objects themselves survive compaction.
        assert_eq!(store.range("/registry/k/", None, 0).unwrap().kvs.len(), 10);
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&dir);
            store.create("/registry/k/a", b("1")).await.unwrap();
            store.update("/registry/k/a", 1, b("2")).await.unwrap();
        }
        let store = open(&dir);
        assert_eq!(store.revision(), 2);
        assert_eq!(
            &store.get("/registry/k/a").unwrap().unwrap().value[..],
            b"2"
        );
        assert_eq!(store.create("/registry/k/b", b("x")).await.unwrap(), 3);
        let mut w = store.watch("/registry/k/", 0).unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().kv.mod_revision, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..32 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..20 {
                    store
                        .create(&format!("/registry/k/{t}-{i}"), b("x"))
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        assert_eq!(store.revision(), 640);
        assert_eq!(store.range("/registry/k/", None, 0).unwrap().kvs.len(), 640);
    }

    /// A store reopened while the last holder is still letting go waits for it; one another
    /// holder keeps open is still refused.
    #[test]
    fn opening_waits_briefly_for_the_last_holder_to_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(&dir);
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = SledStore::open(Config::new(dir.path().join("db")));
        assert!(second.is_ok(), "{:?}", second.err());
        letting_go.join().unwrap();
        let refused = SledStore::open(Config::new(dir.path().join("db")));
        assert!(refused.is_err(), "two live stores on one directory");
    }

    /// A write that failed its check against an earlier queued write is answered only once
    /// that write is durable and served, so what the rejection names can be read at once.
    #[tokio::test]
    async fn a_rejection_is_answered_after_what_it_was_checked_against_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let k = "/registry/k/a";
        let created = store.create(k, b("1"));
        let dup = store.create(k, b("dup")).await;
        assert!(matches!(dup, Err(Error::AlreadyExists(_))), "{dup:?}");
        assert_eq!(store.get(k).unwrap().expect("the create").mod_revision, 1);
        assert_eq!(store.revision(), 1);
        created.await.unwrap();
        for r in 1..20u64 {
            // Both queued at once: the second is checked against the first.
            let first = store.update(k, r, b("x"));
            let stale = store.update(k, r, b("stale")).await;
            assert!(
                matches!(stale, Err(Error::Conflict { current, .. }) if current == r + 1),
                "{stale:?}"
            );
            assert_eq!(store.get(k).unwrap().unwrap().mod_revision, r + 1);
            assert_eq!(store.revision(), r + 1);
            first.await.unwrap();
        }
    }

    /// A batch that fails to apply stops the store, as a failed flush does: sled may have left
    /// part of it in memory, so its revisions are never reused and nothing more is taken.
    #[tokio::test]
    async fn a_write_that_fails_to_apply_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, failures) = open_counting_failures(&dir);
        store.create("/registry/k/a", b("1")).await.unwrap();
        store.fail_next_apply();
        let failed = store.create("/registry/k/b", b("2")).await;
        assert!(matches!(failed, Err(Error::Failed)), "{failed:?}");
        assert_eq!(store.revision(), 1);
        assert_stopped(&store, &failures).await;
    }

    /// Writes queued together are applied as one batch, yet each is checked against the
    /// writes before it: a duplicate create, a stale update and an update of a deleted key
    /// fail on their own, and the failures take no revision.
    #[tokio::test]
    async fn writes_in_one_batch_are_each_checked_against_the_writes_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let k = "/registry/k/a";
        // Every write is queued before any is awaited.
        let writes = vec![
            store.create(k, b("1")).map(|r| r.map(Some)).boxed(),
            store.create(k, b("dup")).map(|r| r.map(Some)).boxed(),
            store.update(k, 1, b("2")).map(|r| r.map(Some)).boxed(),
            store.update(k, 1, b("stale")).map(|r| r.map(Some)).boxed(),
            store
                .delete(k, 2)
                .map(|r| r.map(|kv| Some(kv.mod_revision)))
                .boxed(),
            store.update(k, 0, b("gone")).map(|r| r.map(Some)).boxed(),
            store.create(k, b("3")).map(|r| r.map(Some)).boxed(),
        ];
        let results = futures::future::join_all(writes).await;
        assert_eq!(results[0].as_ref().unwrap(), &Some(1));
        assert!(
            matches!(results[1], Err(Error::AlreadyExists(_))),
            "{:?}",
            results[1]
        );
        assert_eq!(results[2].as_ref().unwrap(), &Some(2));
        assert!(
            matches!(results[3], Err(Error::Conflict { current: 2, .. })),
            "{:?}",
            results[3]
        );
        assert_eq!(results[4].as_ref().unwrap(), &Some(3));
        assert!(
            matches!(results[5], Err(Error::NotFound(_))),
            "{:?}",
            results[5]
        );
        assert_eq!(results[6].as_ref().unwrap(), &Some(4));
        assert_eq!(store.revision(), 4);
        let mut w = store.watch("/registry/k/", 0).unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let e = w.next().await.unwrap().unwrap();
            seen.push((e.kind, e.kv.mod_revision, e.kv.value.clone()));
        }
        assert_eq!(
            seen,
            vec![
                (EventKind::Create, 1, b("1")),
                (EventKind::Update, 2, b("2")),
                (EventKind::Delete, 3, b("2")),
                (EventKind::Create, 4, b("3")),
            ]
        );
        drop(w);
        drop(store);
        let store = open(&dir);
        assert_eq!(store.revision(), 4);
        let kv = store.get(k).unwrap().unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.value),
            (4, 4, b("3"))
        );
    }

    #[tokio::test]
    async fn events_carry_the_value_they_replaced_even_after_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.create("/registry/k/a", b("1")).await.unwrap(); // 1
        store.update("/registry/k/a", 0, b("2")).await.unwrap(); // 2
        store.create("/registry/k/b", b("x")).await.unwrap(); // 3
        store.update("/registry/k/a", 0, b("3")).await.unwrap(); // 4
        store.delete("/registry/k/b", 0).await.unwrap(); // 5
        store.compact(2).unwrap();
        let changes = store.changes(2).unwrap();
        let seen: Vec<_> = changes
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.kv.mod_revision,
                    String::from_utf8_lossy(&e.kv.value).into_owned(),
                    e.prev
                        .as_ref()
                        .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (EventKind::Create, 3, "x".into(), None),
                (EventKind::Update, 4, "3".into(), Some("2".into())),
                (EventKind::Delete, 5, "x".into(), Some("x".into())),
            ]
        );
        // Compacting everything keeps every current value and nothing else.
        store.compact(5).unwrap();
        assert_eq!(
            &store.get("/registry/k/a").unwrap().unwrap().value[..],
            b"3"
        );
        // State entries point at their value; they do not copy it.
        assert!(
            store
                .shared
                .db
                .scan_prefix(b"s")
                .all(|e| e.unwrap().1.len() == 16)
        );
        let values = store.shared.db.scan_prefix(b"v").count();
        assert_eq!(values, 1, "only the current value of /registry/k/a is left");
        assert!(matches!(store.changes(4), Err(Error::Compacted { .. })));
    }

    #[tokio::test]
    async fn nothing_is_published_before_it_is_durable_and_a_failed_flush_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, failures) = open_counting_failures(&dir);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let committed = seen.clone();
        store.on_commit(Arc::new(move |events: &[Event]| {
            committed
                .lock()
                .unwrap()
                .extend(events.iter().map(|e| e.kv.mod_revision));
        }));
        store.create("/registry/k/a", b("1")).await.unwrap();
        assert_eq!(store.revision(), 1);
        store.fail_next_flush();
        let failed = store.create("/registry/k/b", b("2")).await;
        assert!(matches!(failed, Err(Error::Failed)), "{failed:?}");
        // The failed write was never published: not the revision, not to the listener,
        // not to a watch, and no later write is taken.
        assert_eq!(store.revision(), 1);
        assert_eq!(*seen.lock().unwrap(), [1]);
        assert!(
            store
                .changes(0)
                .unwrap()
                .iter()
                .all(|e| e.kv.mod_revision == 1)
        );
        assert_stopped(&store, &failures).await;
    }

    #[tokio::test]
    async fn stores_in_the_first_layout_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The first layout: state = create, mod, value; log entries with full values.
            let db = sled::open(dir.path().join("db")).unwrap();
            let mut state = Vec::new();
            state.extend_from_slice(&1u64.to_be_bytes());
            state.extend_from_slice(&2u64.to_be_bytes());
            state.extend_from_slice(b"{\"v\":2}");
            db.insert(state_key("/registry/k/a"), state).unwrap();
            db.insert(log_key(1), &b"\x00old log entry"[..]).unwrap();
            db.insert(META_REVISION, &2u64.to_be_bytes()[..]).unwrap();
            db.flush().unwrap();
        }
        let store = open(&dir);
        let kv = store.get("/registry/k/a").unwrap().unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, &kv.value[..]),
            (1, 2, &b"{\"v\":2}"[..])
        );
        assert_eq!(store.compacted_revision(), 2);
        assert_eq!(store.update("/registry/k/a", 2, b("3")).await.unwrap(), 3);
        let changes = store.changes(2).unwrap();
        assert_eq!(changes[0].prev.as_ref().unwrap().value, b("{\"v\":2}"));
    }
}
