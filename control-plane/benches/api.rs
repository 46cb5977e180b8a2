//! API server benchmark: durable pod creates per second from 64 concurrent HTTPS clients, their
//! latency, and the time to list 10,000 pods; etcd 3.4's put throughput (Debian `etcd-server`)
//! is measured in the same run with the same client count, for the ratio. Then a restart: a
//! server in a child process (this binary run again) gets 100,000 objects, is killed with
//! SIGKILL, and is started again on the same directory; timed from the new process's start
//! until `/readyz` answers ok and a list of the objects is served.
//!
//! Run: `cargo bench -p skiff-control-plane --bench api`. The last line is JSON.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 64;
const PODS: usize = 10_000;

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench", "shard": (i % 16).to_string()}},
        "spec": {"containers": [{"name": "main", "image": "hello:1.0", "ports": [{"containerPort": 8080}],
                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}}]}
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs `total` requests from `CLIENTS` tasks; returns (requests/s, sorted latencies).
async fn drive<F, Fut>(total: usize, make: F) -> (f64, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (make, next) = (make.clone(), next.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                make(i).await;
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("client task"));
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

async fn bench_skiff() -> (f64, f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let support::ControlPlane {
        api,
        addr,
        identity,
        shutdown,
        serving,
    } = support::serve(dir.path()).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(identity.ca_pem.as_bytes()).expect("ca"),
        )
        .http1_only()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let url = format!("https://{addr}/api/v1/namespaces/default/pods");
    let token = identity.admin_token.clone();
    // Bodies are encoded before the clock starts, so the shared cores go to the server.
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..PODS)
            .map(|i| serde_json::to_vec(&pod(i)).expect("json").into())
            .collect(),
    );
    let (rate, lat) = {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        drive(PODS, move |i| {
            let (client, url, token, bodies) =
                (client.clone(), url.clone(), token.clone(), bodies.clone());
            async move {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Content-Type", "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await
                    .expect("create");
                assert_eq!(r.status().as_u16(), 201, "create failed");
            }
        })
        .await
    };
    let mut lists = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let body: Value = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        lists.push(t.elapsed());
        assert_eq!(body["items"].as_array().map(Vec::len), Some(PODS));
    }
    lists.sort();
    shutdown.cancel();
    let _ = serving.await;
    api.shutdown().await;
    (
        rate,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lists[2].as_secs_f64() * 1000.0,
    )
}

/// The etcd process and its data directory, both removed on drop.
struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn bench_etcd() -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let (client_port, peer_port) = (free_port(), free_port());
    let child = Command::new("etcd")
        .args(["--data-dir", dir.path().join("etcd").to_str()?])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
        ])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let _etcd = Etcd { child, _dir: dir };
    let addr: SocketAddr = format!("127.0.0.1:{client_port}").parse().ok()?;
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .ok()?;
    let put_url = format!("http://{addr}/v3/kv/put");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = json!({"key": "cHJvYmU=", "value": "eA=="});
        if client
            .post(&put_url)
            .json(&probe)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same payload a pod create stores, as etcd sees it from kube-apiserver.
    let value = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&pod(0)).ok()?.repeat(2));
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..PODS)
            .map(|i| {
                let key = base64::engine::general_purpose::STANDARD
                    .encode(format!("/registry/pods/default/bench-{i}"));
                serde_json::to_vec(&json!({"key": key, "value": value}))
                    .expect("json")
                    .into()
            })
            .collect(),
    );
    let (rate, _) = drive(PODS, move |i| {
        let (client, url, bodies) = (client.clone(), put_url.clone(), bodies.clone());
        async move {
            let r = client
                .post(&url)
                .header("Content-Type", "application/json")
                .body(bodies[i].clone())
                .send()
                .await
                .expect("put");
            assert!(r.status().is_success(), "etcd put failed");
        }
    })
    .await;
    Some(rate)
}

/// Set in the child process that serves the restart measurement: its data directory.
const SERVE_ENV: &str = "SKIFF_BENCH_SERVE_DIR";

/// The restart measurement's server (the child process's whole job).
fn serve_child() {
    let dir = std::path::PathBuf::from(std::env::var(SERVE_ENV).expect("dir"));
    let addr: SocketAddr = std::env::var("SKIFF_BENCH_SERVE_ADDR")
        .expect("addr")
        .parse()
        .expect("address");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cp = support::serve_on(&dir, addr).await;
        let _ = cp.serving.await;
    });
}

/// A server child process, killed (SIGKILL) on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(dir: &std::path::Path, addr: SocketAddr) -> Served {
    Served(
        Command::new(std::env::current_exe().expect("own executable"))
            .env(SERVE_ENV, dir)
            .env("SKIFF_BENCH_SERVE_ADDR", addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("server starts"),
    )
}

/// Seconds from starting a server on a store of `objects` ConfigMaps, left by a server killed
/// with SIGKILL, until `/readyz` is ok and a list of them is served.
async fn bench_restart(objects: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = skiff_control_plane::apiserver::pki::Identity::load_or_create(dir.path(), &[])
        .expect("identity");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(identity.ca_pem.as_bytes()).expect("ca"),
        )
        .http1_only()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let base = format!("https://{addr}");
    let ready = |client: reqwest::Client, base: String| async move {
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let server = spawn_server(dir.path(), addr);
    ready(client.clone(), base.clone()).await;
    let token = identity.admin_token.clone();
    let url = format!("{base}/api/v1/namespaces/default/configmaps");
    let (client2, url2, token2) = (client.clone(), url.clone(), token.clone());
    drive(objects, move |i| {
        let (client, url, token) = (client2.clone(), url2.clone(), token2.clone());
        async move {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "labels": {"app": "bench"}},
                "data": {"key": "value", "index": i.to_string()}});
            let r = client
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("create");
            assert_eq!(r.status().as_u16(), 201, "create failed");
        }
    })
    .await;
    drop(server); // SIGKILL
    let start = Instant::now();
    let _server = spawn_server(dir.path(), addr);
    ready(client.clone(), base.clone()).await;
    let body: Value = client
        .get(format!("{url}?limit=500"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(body["items"].as_array().map(Vec::len), Some(500));
    elapsed
}

fn main() {
    if std::env::var_os(SERVE_ENV).is_some() {
        return serve_child();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (rate, p50, p99, list_ms) = rt.block_on(bench_skiff());
    println!(
        "skiff: {rate:.0} durable pod creates/s with {CLIENTS} HTTPS clients, p50 {p50:.2} ms, p99 {p99:.2} ms; list {PODS} pods {list_ms:.0} ms (median of 5)"
    );
    let etcd = rt.block_on(bench_etcd());
    match etcd {
        Some(e) => {
            println!("etcd 3.4: {e:.0} puts/s with {CLIENTS} clients (HTTP gateway, no TLS)")
        }
        None => println!("etcd: not measured (install Debian's etcd-server to compare)"),
    }
    let ratio = etcd.map(|e| rate / e);
    let objects = std::env::var("SKIFF_BENCH_RESTART_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let restart_s = rt.block_on(bench_restart(objects));
    println!(
        "restart after SIGKILL with {objects} objects stored: /readyz ok and a list served {restart_s:.2} s after the new process started"
    );
    println!(
        "{}",
        json!({"bench": "api", "clients": CLIENTS, "pods": PODS, "creates_per_sec": rate.round(), "p50_ms": p50, "p99_ms": p99,
               "list_10k_ms": list_ms.round(), "etcd_puts_per_sec": etcd.map(f64::round), "ratio_vs_etcd": ratio,
               "restart_objects": objects, "restart_100k_s": (restart_s * 100.0).round() / 100.0})
    );
}
