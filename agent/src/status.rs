//! Pod statuses on their way to the API server, as the kubelet's status manager has them: a pod
//! worker hands its pod's newest status over without waiting ([`Statuses::set`]), and one
//! writer task ([`Statuses::run`]) patches them, so a slow API server slows the statuses, not
//! the pods' lifecycles.
//!
//! Only the newest status of a pod is kept: a status set before the previous one was written
//! replaces it (coalescing), and a status equal to the last one written is not written again.
//! At most [`MAX_IN_FLIGHT`] writes are in flight at once. A failed write is retried after a
//! back-off ([`BACKOFF_BASE`] doubling up to [`BACKOFF_MAX`]), with the newest status by then;
//! a 404 means the pod is gone, and its status is dropped.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Status writes in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 16;

/// The wait before retrying a pod's first failed write; it doubles per failure.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// The longest wait between retries.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How long [`Statuses::flush`] waits at most.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the writer goes on writing what is left once the agent stops.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The pods' statuses to write, shared by the pod workers and the writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Statuses {
    shared: Arc<Shared>,
}

struct Shared {
    client: kube::Client,
    state: Mutex<State>,
    /// Wakes the writer when a pod has a status to write.
    wake: Notify,
    /// Bumped whenever a pod's status was written or given up on (flushes wait on it).
    progress: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Entry>,
    /// Pods with a status to write, by uid and entry id (an entry forgotten and made again
    /// has a new id, so a stale place in the queue is told apart).
    queue: VecDeque<(String, u64)>,
    /// Pods waiting out a back-off: when it ends, uid, entry id.
    delayed: BTreeSet<(Instant, String, u64)>,
    next_id: u64,
    /// The writer has stopped: nothing set from now on is written.
    closed: bool,
    counts: Counts,
}

/// One pod's statuses.
struct Entry {
    id: u64,
    namespace: String,
    name: String,
    /// The newest status, not written yet.
    pending: Option<Value>,
    /// A write of this pod is in flight.
    sending: bool,
    /// In the queue or waiting out a back-off.
    scheduled: bool,
    /// The last status the server took.
    written: Option<Value>,
    /// The wait after the last failed write; zero after a success.
    backoff: Duration,
}

/// What the writer has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Statuses set.
    pub(crate) sets: u64,
    /// Writes sent to the server (retries included).
    pub(crate) writes: u64,
    /// Statuses replaced by a newer one before they were written.
    pub(crate) coalesced: u64,
    /// Statuses not written because the server already had them.
    pub(crate) unchanged: u64,
    /// Writes that failed (and were retried unless the pod was gone).
    pub(crate) failures: u64,
    /// Pods dropped because the server no longer had them.
    pub(crate) gone: u64,
}

/// A write to make: the pod and its status.
struct Write {
    uid: String,
    id: u64,
    namespace: String,
    name: String,
    status: Value,
}

impl Statuses {
    /// Statuses written through `client`, once [`Self::run`] runs.
    pub(crate) fn new(client: kube::Client) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
                state: Mutex::default(),
                wake: Notify::new(),
                progress: watch::Sender::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `status` the newest status of the pod `uid` (`namespace/name`), to be written
    /// soon; an older one not written yet is dropped. Never waits.
    pub(crate) fn set(&self, uid: &str, namespace: &str, name: &str, status: Value) {
        let mut guard = self.state();
        let state = &mut *guard;
        state.counts.sets += 1;
        let next_id = &mut state.next_id;
        let entry = state.pods.entry(uid.to_string()).or_insert_with(|| {
            *next_id += 1;
            Entry {
                id: *next_id,
                namespace: namespace.to_string(),
                name: name.to_string(),
                pending: None,
                sending: false,
                scheduled: false,
                written: None,
                backoff: Duration::ZERO,
            }
        });
        if entry.pending.replace(status).is_some() {
            state.counts.coalesced += 1;
        }
        // A pod being written or waiting out a back-off is queued again when that is over.
        if !entry.sending && !entry.scheduled {
            entry.scheduled = true;
            state.queue.push_back((uid.to_string(), entry.id));
            self.shared.wake.notify_one();
        }
    }

    /// Drops what is kept of the pod `uid`, its status not written yet included.
    pub(crate) fn forget(&self, uid: &str) {
        self.state().pods.remove(uid);
        self.progressed();
    }

    /// Waits until the newest status set for the pod `uid` is written, or dropped because
    /// the pod is gone, for at most [`FLUSH_TIMEOUT`]. False if it was not written in time,
    /// or the writer stopped first.
    pub(crate) async fn flush(&self, uid: &str) -> bool {
        let mut progress = self.shared.progress.subscribe();
        let settled = async {
            loop {
                if let Some(written) = self.settled(uid) {
                    return written;
                }
                // The sender lives as long as `self`.
                let _ = progress.changed().await;
            }
        };
        tokio::time::timeout(FLUSH_TIMEOUT, settled)
            .await
            .unwrap_or(false)
    }

    /// Whether the pod `uid` has nothing left to write (true) or never will (false), if so.
    fn settled(&self, uid: &str) -> Option<bool> {
        let state = self.state();
        match state.pods.get(uid) {
            None => Some(true),
            Some(e) if e.pending.is_none() && !e.sending => Some(true),
            Some(_) if state.closed => Some(false),
            Some(_) => None,
        }
    }

    /// What the writer has done so far.
    pub(crate) fn counts(&self) -> Counts {
        self.state().counts
    }

    fn progressed(&self) {
        self.shared.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Writes the statuses set until `stop`, then what is left for at most
    /// [`DRAIN_TIMEOUT`], each with one attempt. Run once per `Statuses`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut sending = FuturesUnordered::new();
        let mut drain_until: Option<Instant> = None;
        loop {
            let draining = drain_until.is_some();
            let next_retry = {
                let mut state = self.state();
                state.promote(Instant::now(), draining);
                while sending.len() < MAX_IN_FLIGHT {
                    let (write, skipped) = state.next();
                    if skipped {
                        self.progressed();
                    }
                    let Some(write) = write else { break };
                    state.counts.writes += 1;
                    sending.push(self.write(write));
                }
                if draining && sending.is_empty() && state.queue.is_empty() {
                    break;
                }
                state.delayed.first().map(|(at, ..)| *at)
            };
            tokio::select! {
                Some((write, result)) = sending.next(), if !sending.is_empty() => {
                    self.done(write, result, draining);
                }
                _ = self.shared.wake.notified() => {}
                _ = sleep_until(next_retry) => {}
                _ = stop.cancelled(), if !draining => {
                    drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
                }
                _ = sleep_until(drain_until) => break,
            }
        }
        let left = {
            let mut state = self.state();
            state.closed = true;
            state
                .pods
                .values()
                .filter(|e| e.pending.is_some() || e.sending)
                .count()
        };
        if left > 0 {
            tracing::warn!(pods = left, "stopped with pod statuses not written");
        }
        self.progressed();
        let c = self.counts();
        tracing::debug!(
            sets = c.sets,
            writes = c.writes,
            coalesced = c.coalesced,
            unchanged = c.unchanged,
            failures = c.failures,
            gone = c.gone,
            "pod status writer stopped"
        );
    }

    async fn write(&self, write: Write) -> (Write, Result<(), kube::Error>) {
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &write.namespace);
        let result = api
            .patch_status(
                &write.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": &write.status })),
            )
            .await
            .map(drop);
        (write, result)
    }

    /// Takes a write's outcome in.
    fn done(&self, write: Write, result: Result<(), kube::Error>, draining: bool) {
        let mut guard = self.state();
        let state = &mut *guard;
        let Some(entry) = state.pods.get_mut(&write.uid).filter(|e| e.id == write.id) else {
            // Forgotten meanwhile.
            return;
        };
        entry.sending = false;
        match result {
            Ok(()) => {
                entry.written = Some(write.status);
                entry.backoff = Duration::ZERO;
                if entry.pending.is_some() {
                    entry.scheduled = true;
                    state.queue.push_back((write.uid, write.id));
                }
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::debug!(pod = %format!("{}/{}", write.namespace, write.name), "pod gone; its status is dropped");
                state.pods.remove(&write.uid);
                state.counts.failures += 1;
                state.counts.gone += 1;
            }
            Err(e) => {
                state.counts.failures += 1;
                tracing::debug!(pod = %format!("{}/{}", write.namespace, write.name), error = %e, "cannot write the pod's status; retrying");
                // The newest status is the one to retry with.
                entry.pending.get_or_insert(write.status);
                // Once the agent stops, there is no time left for retries.
                if !draining {
                    entry.backoff = (entry.backoff * 2).clamp(BACKOFF_BASE, BACKOFF_MAX);
                    entry.scheduled = true;
                    let at = Instant::now() + entry.backoff;
                    state.delayed.insert((at, write.uid, write.id));
                }
            }
        }
        drop(guard);
        self.progressed();
    }
}

impl State {
    /// Queues the pods whose back-off is over by `now` (all of them when `draining`).
    fn promote(&mut self, now: Instant, draining: bool) {
        while let Some(first) = self.delayed.first()
            && (draining || first.0 <= now)
        {
            let (_, uid, id) = self.delayed.pop_first().expect("a first entry");
            self.queue.push_back((uid, id));
        }
    }

    /// The next write to make, if any, and whether a queued status was dropped as one the
    /// server already has.
    fn next(&mut self) -> (Option<Write>, bool) {
        let mut skipped = false;
        while let Some((uid, id)) = self.queue.pop_front() {
            let Some(entry) = self.pods.get_mut(&uid).filter(|e| e.id == id) else {
                continue;
            };
            entry.scheduled = false;
            let Some(status) = entry.pending.take() else {
                continue;
            };
            if entry.written.as_ref() == Some(&status) {
                self.counts.unchanged += 1;
                skipped = true;
                continue;
            }
            entry.sending = true;
            let write = Write {
                uid,
                id,
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                status,
            };
            return (Some(write), skipped);
        }
        (None, skipped)
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;

    use super::*;

    /// An API server that takes pod status patches: it can hold requests back, fail them, and
    /// tells how many it had in flight at most.
    #[derive(Default)]
    struct Server {
        /// Requests wait while this is false (see [`Server::open`]).
        open: watch::Sender<bool>,
        /// Requests received so far.
        received: watch::Sender<usize>,
        /// The status codes to answer next, by pod name; 200 once they run out.
        answers: Mutex<HashMap<String, VecDeque<u16>>>,
        /// How long each request takes.
        delay: Mutex<Duration>,
        /// The statuses taken (answered 200), by pod name, in order.
        taken: Mutex<Vec<(String, Value)>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Server {
        fn new() -> Arc<Self> {
            let server = Self::default();
            server.open.send_replace(true);
            Arc::new(server)
        }

        fn client(self: &Arc<Self>) -> kube::Client {
            let server = self.clone();
            let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(server.answer(request).await) }
            });
            kube::Client::new(service, "default")
        }

        async fn answer(
            &self,
            request: http::Request<kube::client::Body>,
        ) -> http::Response<kube::client::Body> {
            let (parts, body) = request.into_parts();
            let body: Value = serde_json::from_slice(&body.collect().await.unwrap().to_bytes())
                .expect("a JSON body");
            assert_eq!(parts.method, http::Method::PATCH);
            assert_eq!(
                parts.headers[http::header::CONTENT_TYPE],
                "application/merge-patch+json"
            );
            let name = parts
                .uri
                .path()
                .strip_prefix("/api/v1/namespaces/ns/pods/")
                .and_then(|p| p.strip_suffix("/status"))
                .unwrap_or_else(|| panic!("not a pod status: {}", parts.uri))
                .to_string();
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            self.received.send_modify(|n| *n += 1);
            let _ = self.open.subscribe().wait_for(|open| *open).await;
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let code = self
                .answers
                .lock()
                .unwrap()
                .get_mut(&name)
                .and_then(VecDeque::pop_front)
                .unwrap_or(200);
            let reply = if code == 200 {
                self.taken
                    .lock()
                    .unwrap()
                    .push((name.clone(), body["status"].clone()));
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}})
            } else {
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
                       "reason": if code == 404 {"NotFound"} else {"InternalError"}, "message": "no"})
            };
            http::Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(kube::client::Body::from(reply.to_string().into_bytes()))
                .unwrap()
        }

        fn fail(&self, pod: &str, codes: &[u16]) {
            self.answers
                .lock()
                .unwrap()
                .insert(pod.into(), codes.iter().copied().collect());
        }

        fn taken(&self) -> Vec<(String, Value)> {
            self.taken.lock().unwrap().clone()
        }

        async fn received(&self, n: usize) {
            let _ = self.received.subscribe().wait_for(|got| *got >= n).await;
        }
    }

    /// A writer running against `server`, and what stops it.
    fn writer(server: &Arc<Server>) -> (Statuses, CancellationToken, tokio::task::JoinHandle<()>) {
        let statuses = Statuses::new(server.client());
        let stop = CancellationToken::new();
        let task = tokio::spawn(statuses.clone().run(stop.clone()));
        (statuses, stop, task)
    }

    fn status(n: usize) -> Value {
        json!({"phase": "Running", "n": n})
    }

    #[tokio::test(start_paused = true)]
    async fn statuses_set_while_a_write_is_slow_are_coalesced_into_the_newest() {
        let server = Server::new();
        server.open.send_replace(false);
        let (statuses, stop, task) = writer(&server);
        statuses.set("u1", "ns", "p1", status(0));
        server.received(1).await;
        for n in 1..50 {
            statuses.set("u1", "ns", "p1", status(n));
        }
        server.open.send_replace(true);
        assert!(statuses.flush("u1").await);
        assert_eq!(
            server.taken(),
            vec![("p1".into(), status(0)), ("p1".into(), status(49))]
        );
        let counts = statuses.counts();
        assert_eq!((counts.sets, counts.writes, counts.coalesced), (50, 2, 48));
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_after_a_back_off_until_it_lands() {
        let server = Server::new();
        server.fail("p1", &[500, 503]);
        let (statuses, stop, task) = writer(&server);
        let start = Instant::now();
        statuses.set("u1", "ns", "p1", status(1));
        assert!(statuses.flush("u1").await);
        assert_eq!(server.taken(), vec![("p1".into(), status(1))]);
        assert!(start.elapsed() >= BACKOFF_BASE * 3, "{:?}", start.elapsed());
        let counts = statuses.counts();
        assert_eq!((counts.writes, counts.failures), (3, 2));
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_writes_the_newest_status() {
        let server = Server::new();
        server.fail("p1", &[500]);
        server.open.send_replace(false);
        let (statuses, stop, task) = writer(&server);
        statuses.set("u1", "ns", "p1", status(1));
        server.received(1).await;
        statuses.set("u1", "ns", "p1", status(2));
        server.open.send_replace(true);
        assert!(statuses.flush("u1").await);
        assert_eq!(server.taken(), vec![("p1".into(), status(2))]);
        assert_eq!(statuses.counts().writes, 2);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_the_server_no_longer_has_is_dropped() {
        let server = Server::new();
        server.fail("p1", &[404]);
        let (statuses, stop, task) = writer(&server);
        statuses.set("u1", "ns", "p1", status(1));
        assert!(statuses.flush("u1").await);
        tokio::time::sleep(BACKOFF_MAX * 3).await;
        let counts = statuses.counts();
        assert_eq!((counts.writes, counts.gone), (1, 1));
        assert!(server.taken().is_empty());
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn flush_waits_for_the_newest_status() {
        let server = Server::new();
        server.open.send_replace(false);
        let (statuses, stop, task) = writer(&server);
        statuses.set("u1", "ns", "p1", status(1));
        server.received(1).await;
        statuses.set("u1", "ns", "p1", status(2));
        let mut flush = std::pin::pin!(statuses.flush("u1"));
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut flush)
                .await
                .is_err(),
            "flush returned before anything was written"
        );
        server.open.send_replace(true);
        assert!(flush.await);
        assert_eq!(
            server.taken(),
            vec![("p1".into(), status(1)), ("p1".into(), status(2))]
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn flush_gives_up_on_a_server_that_never_answers() {
        let server = Server::new();
        server.open.send_replace(false);
        let (statuses, stop, task) = writer(&server);
        statuses.set("u1", "ns", "p1", status(1));
        let start = Instant::now();
        assert!(!statuses.flush("u1").await);
        assert_eq!(start.elapsed(), FLUSH_TIMEOUT);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_the_server_has_is_not_written_again() {
        let server = Server::new();
        let (statuses, stop, task) = writer(&server);
        statuses.set("u1", "ns", "p1", status(1));
        assert!(statuses.flush("u1").await);
        statuses.set("u1", "ns", "p1", status(1));
        assert!(statuses.flush("u1").await);
        let counts = statuses.counts();
        assert_eq!((counts.writes, counts.unchanged), (1, 1));
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_sixteen_writes_are_in_flight() {
        let server = Server::new();
        *server.delay.lock().unwrap() = Duration::from_millis(100);
        let (statuses, stop, task) = writer(&server);
        for i in 0..100 {
            statuses.set(&format!("u{i}"), "ns", &format!("p{i}"), status(i));
        }
        for i in 0..100 {
            assert!(statuses.flush(&format!("u{i}")).await);
        }
        assert_eq!(server.taken().len(), 100);
        assert_eq!(server.max_in_flight.load(Ordering::SeqCst), MAX_IN_FLIGHT);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_pod_is_not_written() {
        let server = Server::new();
        server.open.send_replace(false);
        let (statuses, stop, task) = writer(&server);
        statuses.set("u1", "ns", "p1", status(1));
        server.received(1).await;
        statuses.set("u1", "ns", "p1", status(2));
        statuses.forget("u1");
        assert!(statuses.flush("u1").await);
        server.open.send_replace(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The write in flight lands; the newer status is not written.
        assert_eq!(server.taken(), vec![("p1".into(), status(1))]);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn statuses_left_on_stop_are_written_once_within_the_drain_timeout() {
        let server = Server::new();
        server.fail("p2", &[500, 500]);
        let statuses = Statuses::new(server.client());
        let stop = CancellationToken::new();
        statuses.set("u1", "ns", "p1", status(1));
        statuses.set("u2", "ns", "p2", status(2));
        stop.cancel();
        let start = Instant::now();
        statuses.clone().run(stop).await;
        assert!(start.elapsed() < DRAIN_TIMEOUT);
        assert_eq!(server.taken(), vec![("p1".into(), status(1))]);
        assert_eq!(statuses.counts().writes, 2);
        assert!(statuses.flush("u1").await);
        assert!(!statuses.flush("u2").await, "p2's status was never written");
    }
}
