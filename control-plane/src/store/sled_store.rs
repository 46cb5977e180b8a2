//! The sled implementation of [`Store`].
//!
//! One sled tree holds three key spaces: `s<key>` → the current value with its revisions,
//! `l<revision>` → the change log that watches replay, and `m:*` → metadata. A write updates all
//! of them in one atomic batch under the writer lock, then hands its event to the flusher
//! thread. The flusher drains every write that arrived meanwhile, makes them durable with one
//! `flush` (group commit), and only then acknowledges them and publishes their events.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::{broadcast, oneshot};

use super::{Error, Event, EventKind, KeyValue, Range, Result, Store};

const META_REVISION: &[u8] = b"m:rev";
const META_COMPACTED: &[u8] = b"m:compacted";

/// How a [`SledStore`] is opened.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory sled keeps its files in.
    pub path: PathBuf,
    /// How many revisions of history are kept for watch resume before automatic compaction.
    pub history: u64,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
}

impl Config {
    /// Defaults sized for a small gateway: 20,000 revisions of history, a 64 MiB cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            history: 20_000,
            cache_bytes: 64 << 20,
        }
    }
}

/// A durable store on sled with group commit.
pub struct SledStore {
    shared: Arc<Shared>,
    writer: Mutex<Writer>,
    flusher: Option<JoinHandle<()>>,
}

struct Writer {
    revision: u64,
    // `None` once the store is closing.
    flush_tx: Option<mpsc::Sender<Pending>>,
}

struct Shared {
    db: sled::Db,
    revision: AtomicU64,
    compacted: AtomicU64,
    events: broadcast::Sender<Arc<Event>>,
}

struct Pending {
    event: Event,
    reply: oneshot::Sender<Result<()>>,
}

enum Op {
    Create(Bytes),
    Update(u64, Bytes),
    Delete(u64),
}

impl SledStore {
    /// Opens (or creates) the store at `config.path` and starts its flusher.
    pub fn open(config: Config) -> Result<Self> {
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(backend)?;
        let revision = read_u64(&db, META_REVISION)?;
        let compacted = read_u64(&db, META_COMPACTED)?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            db,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            events,
        });
        let (flush_tx, flush_rx) = mpsc::channel();
        let flusher = {
            let shared = shared.clone();
            let history = config.history;
            std::thread::Builder::new()
                .name("store-flusher".into())
                .spawn(move || flusher(&shared, &flush_rx, history))
                .map_err(backend)?
        };
        Ok(Self {
            shared,
            writer: Mutex::new(Writer {
                revision,
                flush_tx: Some(flush_tx),
            }),
            flusher: Some(flusher),
        })
    }

    /// Applies one write atomically and queues it for the flusher; returns the event and the
    /// receiver that resolves once it is durable.
    fn apply(&self, key: &str, op: Op) -> Result<(Event, oneshot::Receiver<Result<()>>)> {
        let db = &self.shared.db;
        let skey = state_key(key);
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let flush_tx = writer.flush_tx.clone().ok_or(Error::Closed)?;
        let current = db
            .get(&skey)
            .map_err(backend)?
            .map(|v| decode_state(key, &v));
        let revision = writer.revision + 1;
        let mut batch = sled::Batch::default();
        let event = match (op, current) {
            (Op::Create(_), Some(_)) => return Err(Error::AlreadyExists(key.into())),
            (Op::Create(value), None) => {
                batch.insert(skey, encode_state(revision, revision, &value));
                event(EventKind::Create, key, value, revision, revision)
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
                batch.insert(skey, encode_state(cur.create_revision, revision, &value));
                event(EventKind::Update, key, value, cur.create_revision, revision)
            }
            (Op::Delete(_), Some(cur)) => {
                batch.remove(skey);
                event(
                    EventKind::Delete,
                    key,
                    cur.value,
                    cur.create_revision,
                    revision,
                )
            }
        };
        batch.insert(&log_key(revision)[..], encode_log(&event));
        batch.insert(META_REVISION, &revision.to_be_bytes()[..]);
        db.apply_batch(batch).map_err(backend)?;
        writer.revision = revision;
        self.shared.revision.store(revision, Ordering::Release);
        let (reply, durable) = oneshot::channel();
        // Sent under the lock so the flusher sees events in revision order.
        flush_tx
            .send(Pending {
                event: event.clone(),
                reply,
            })
            .map_err(|_| Error::Closed)?;
        Ok((event, durable))
    }

    fn write(&self, key: &str, op: Op) -> BoxFuture<'_, Result<Event>> {
        let applied = self.apply(key, op);
        Box::pin(async move {
            let (event, durable) = applied?;
            durable.await.map_err(|_| Error::Closed)??;
            Ok(event)
        })
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Closing the channel lets the flusher finish what is queued and exit.
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush_tx
            .take();
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
    }
}

impl Store for SledStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self
            .shared
            .db
            .get(state_key(key))
            .map_err(backend)?
            .map(|v| decode_state(key, &v)))
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
            kvs.push(decode_state(&key, &v));
        }
        Ok(Range {
            kvs,
            more,
            revision,
        })
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
        let (buffer, last) = replay(&self.shared, prefix, after)?;
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
                    match replay(&self.shared, &self.prefix, self.last) {
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

/// Reads logged events under `prefix` after revision `after`; returns them and the highest
/// revision scanned.
fn replay(shared: &Shared, prefix: &str, after: u64) -> Result<(VecDeque<Event>, u64)> {
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
    for item in shared.db.range(log_key(after + 1)..log_key(u64::MAX)) {
        let (k, v) = item.map_err(backend)?;
        let rev = u64::from_be_bytes(k[1..9].try_into().expect("log keys are 9 bytes"));
        last = rev;
        let event = decode_log(rev, &v);
        if event.kv.key.starts_with(prefix) {
            events.push_back(event);
        }
    }
    // Compaction may have removed entries while we scanned.
    check()?;
    Ok((events, last.max(after)))
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
    for item in shared.db.range(log_key(old)..=log_key(revision)) {
        let (k, _) = item.map_err(backend)?;
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

fn flusher(shared: &Shared, rx: &mpsc::Receiver<Pending>, history: u64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let flushed = shared.db.flush();
        let last = batch.last().map_or(0, |p| p.event.kv.mod_revision);
        for p in batch {
            match &flushed {
                Ok(_) => {
                    // No receivers is normal: nobody is watching.
                    let _ = shared.events.send(Arc::new(p.event));
                    let _ = p.reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = p.reply.send(Err(Error::Backend(Box::new(e.clone()))));
                }
            }
        }
        // Keep `history` revisions; compact in steps of a quarter to amortise the deletes.
        let compacted = shared.compacted.load(Ordering::Acquire);
        if last > compacted + history + history / 4
            && let Err(e) = compact(shared, last - history)
        {
            tracing::warn!(error = %e, "automatic compaction failed");
        }
    }
    let _ = shared.db.flush();
}

fn event(kind: EventKind, key: &str, value: Bytes, create: u64, rev: u64) -> Event {
    Event {
        kind,
        kv: KeyValue {
            key: key.to_string(),
            value,
            create_revision: create,
            mod_revision: rev,
        },
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

fn encode_state(create: u64, rev: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + value.len());
    v.extend_from_slice(&create.to_be_bytes());
    v.extend_from_slice(&rev.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode_state(key: &str, v: &[u8]) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        create_revision: u64::from_be_bytes(v[0..8].try_into().expect("state header")),
        mod_revision: u64::from_be_bytes(v[8..16].try_into().expect("state header")),
        value: Bytes::copy_from_slice(&v[16..]),
    }
}

fn encode_log(event: &Event) -> Vec<u8> {
    let key = event.kv.key.as_bytes();
    let mut v = Vec::with_capacity(13 + key.len() + event.kv.value.len());
    v.push(match event.kind {
        EventKind::Create => 0,
        EventKind::Update => 1,
        EventKind::Delete => 2,
    });
    v.extend_from_slice(&event.kv.create_revision.to_be_bytes());
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(&event.kv.value);
    v
}

fn decode_log(rev: u64, v: &[u8]) -> Event {
    let kind = match v[0] {
        0 => EventKind::Create,
        1 => EventKind::Update,
        _ => EventKind::Delete,
    };
    let create = u64::from_be_bytes(v[1..9].try_into().expect("log header"));
    let klen = u32::from_be_bytes(v[9..13].try_into().expect("log header")) as usize;
    let key = String::from_utf8_lossy(&v[13..13 + klen]).into_owned();
    event(
        kind,
        &key,
        Bytes::copy_from_slice(&v[13 + klen..]),
        create,
        rev,
    )
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn open(dir: &tempfile::TempDir, history: u64) -> SledStore {
        let mut config = Config::new(dir.path().join("db"));
        config.history = history;
        SledStore::open(config).unwrap()
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn revisions_and_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 100);
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
        let store = open(&dir, 100);
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
        let store = open(&dir, 100);
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
        let store = open(&dir, 1_000);
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
    async fn automatic_compaction_bounds_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 8);
        for i in 0..30 {
            store
                .create(&format!("/registry/k/{i}"), b("x"))
                .await
                .unwrap();
        }
        let compacted = store.compacted_revision();
        assert!(
            compacted >= 30 - 8 - 2,
            "history should be bounded, compacted at {compacted}"
        );
        assert!(store.watch("/registry/", 1).is_err());
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&dir, 100);
            store.create("/registry/k/a", b("1")).await.unwrap();
            store.update("/registry/k/a", 1, b("2")).await.unwrap();
        }
        let store = open(&dir, 100);
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
        let store = Arc::new(open(&dir, 10_000));
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
}
