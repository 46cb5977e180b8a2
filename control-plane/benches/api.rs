//! API server benchmark: durable pod creates per second from 64 concurrent HTTPS clients, their
//! latency, and the time to list 10,000 pods; etcd 3.4's put throughput (Debian `etcd-server`)
//! is measured in the same run with the same client count, for the ratio.
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

fn main() {
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
    println!(
        "{}",
        json!({"bench": "api", "clients": CLIENTS, "pods": PODS, "creates_per_sec": rate.round(), "p50_ms": p50, "p99_ms": p99,
               "list_10k_pods_ms": list_ms.round(), "etcd_puts_per_sec": etcd.map(f64::round), "ratio_vs_etcd": ratio})
    );
}
