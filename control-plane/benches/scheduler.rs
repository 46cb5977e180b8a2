//! Scheduler benchmark: the control plane (store, API server, scheduler) in this process,
//! 5,000 simulated nodes (`skiff_agent::sim`, in a child process: this binary run again) that
//! register and heartbeat through the HTTPS API and report their pods Running, then 50,000
//! pods created through the API by 64 concurrent HTTPS clients. It measures the time from the
//! first create until every pod is bound (`spec.nodeName` set); the bind is counted when its
//! event arrives on an in-process watch, and the store publishes events only once durable.
//!
//! Each simulated node watches its own pods (`spec.nodeName=<node>`), as a real agent does;
//! `SKIFF_BENCH_SHARED_WATCH=1` gives them one watch for all instead. Before the main run, a
//! fan-out phase opens one field-selected HTTPS watch per node and binds pods at 1,000/s,
//! timing each bind from its commit to its node's watcher.
//!
//! Run: `cargo bench -p skiff-control-plane --bench scheduler`. The last line is JSON.
//! `SKIFF_BENCH_NODES` and `SKIFF_BENCH_PODS` override the sizes (e.g. 500 and 5000 for a quick
//! run); `SKIFF_BENCH_RUN_PODS=0` leaves the pods Pending on their nodes (no status writes
//! competing with the binds).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use skiff_control_plane::api::{Api, ListOptions, WatchEvent, resources};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 64;
/// Set in the child process that runs the simulated nodes.
const SIM_ENV: &str = "SKIFF_BENCH_SIM";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "hello:1.0",
                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    })
}

/// Resident memory of process `pid` (`self` for this one), in MiB.
fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The simulated nodes' process, killed on drop.
struct SimNodes(Child);

impl Drop for SimNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When each pod was sent, seen created, bound and running.
struct Timeline {
    added: Vec<Option<Instant>>,
    bound: Vec<Option<Instant>>,
    running: Vec<Option<Instant>>,
    per_node: HashMap<String, u32>,
}

/// Follows the pods' watch until every pod is bound (and running, when the nodes run them).
async fn follow(api: Api, pods: usize, run_pods: bool) -> Timeline {
    let mut events = api
        .watch(
            resources::core("pods"),
            Some("default"),
            &ListOptions::default(),
            None,
            false,
        )
        .expect("watch pods");
    let mut t = Timeline {
        added: vec![None; pods],
        bound: vec![None; pods],
        running: vec![None; pods],
        per_node: HashMap::new(),
    };
    let (mut bound, mut running) = (0, 0);
    while bound < pods || (run_pods && running < pods) {
        let obj = match events.next().await.expect("watch ended") {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
            WatchEvent::Error(e) => panic!("watch failed: {}", e.status()),
            _ => continue,
        };
        let now = Instant::now();
        let Some(i) = obj["metadata"]["name"]
            .as_str()
            .and_then(|n| n.strip_prefix("bench-"))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < pods)
        else {
            continue;
        };
        t.added[i].get_or_insert(now);
        if let Some(node) = obj["spec"]["nodeName"].as_str()
            && t.bound[i].is_none()
        {
            t.bound[i] = Some(now);
            *t.per_node.entry(node.to_string()).or_default() += 1;
            bound += 1;
        }
        if obj["status"]["phase"] == "Running" && t.running[i].is_none() {
            t.running[i] = Some(now);
            running += 1;
        }
    }
    t
}

/// Watch fan-out: `watches` HTTPS watches open, each selecting one node's pods as an agent's
/// does (over HTTP/2 connections of 100 watches each), then `binds` pods bound to those nodes at
/// `rate` per second through the binding subresource's in-process path. Returns, per bind, the
/// time from its commit (an in-process watch sees every event as the store commits it) to its
/// node's HTTPS watcher receiving it.
async fn fanout(
    api: &Api,
    addr: std::net::SocketAddr,
    ca_pem: &str,
    token: &str,
    watches: usize,
    binds: usize,
    rate: f64,
) -> Vec<Duration> {
    let pods = resources::core("pods");
    let ns = "fanout";
    api.create(
        resources::core("namespaces"),
        None,
        json!({"metadata": {"name": ns}}),
        &Default::default(),
    )
    .await
    .expect("namespace");
    for i in 0..binds {
        let mut p = pod(i);
        p["metadata"]["name"] = json!(format!("fan-{i}"));
        api.create(pods, Some(ns), p, &Default::default())
            .await
            .expect("create");
    }
    let rv = api.revision().to_string();
    let received: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let clients: Vec<reqwest::Client> = (0..watches.div_ceil(100))
        .map(|_| {
            reqwest::Client::builder()
                .add_root_certificate(
                    reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca"),
                )
                .http2_adaptive_window(true)
                .build()
                .expect("client")
        })
        .collect();
    for node in 0..watches {
        let client = clients[node / 100].clone();
        let url = format!(
            "https://{addr}/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dfan-node-{node}&resourceVersion={rv}"
        );
        let (token, received, opened) = (token.to_string(), received.clone(), opened.clone());
        tasks.spawn(async move {
            let mut resp = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("watch");
            assert_eq!(resp.status().as_u16(), 200, "watch refused");
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut buf = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let now = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let ev: Value = serde_json::from_slice(&line).expect("event");
                    if let Some(name) = ev["object"]["metadata"]["name"].as_str() {
                        received
                            .lock()
                            .unwrap()
                            .entry(name.to_string())
                            .or_insert(now);
                    }
                }
            }
        });
    }
    while opened.load(std::sync::atomic::Ordering::Relaxed) < watches {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut commits = api
        .watch(pods, Some(ns), &ListOptions::default(), Some(&rv), false)
        .expect("watch");
    let committed = tokio::spawn(async move {
        let mut at = HashMap::new();
        while at.len() < binds {
            if let Some(WatchEvent::Modified(o)) = commits.next().await
                && o["spec"]["nodeName"].is_string()
            {
                at.entry(o["metadata"]["name"].as_str().unwrap().to_string())
                    .or_insert_with(Instant::now);
            }
        }
        at
    });
    let start = Instant::now();
    let mut bound = tokio::task::JoinSet::new();
    for i in 0..binds {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let api = api.clone();
        bound.spawn(async move {
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": format!("fan-{i}")},
                "target": {"kind": "Node", "name": format!("fan-node-{}", i % watches)}});
            api.bind(ns, &format!("fan-{i}"), &binding)
                .await
                .expect("bind");
        });
    }
    while bound.join_next().await.is_some() {}
    let committed = committed.await.expect("commit watch");
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < binds && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks.abort_all();
    let received = received.lock().unwrap();
    let mut latencies: Vec<Duration> = committed
        .iter()
        .map(|(name, at)| {
            received.get(name).map_or(Duration::from_secs(60), |r| {
                r.saturating_duration_since(*at)
            })
        })
        .collect();
    latencies.sort();
    latencies
}

/// Runs the simulated nodes (the child process's whole job).
fn sim_child() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let ca_pem = std::fs::read_to_string(var("SKIFF_BENCH_SIM_CA")).expect("CA file");
    let mut config = skiff_agent::sim::Config::new(
        var("SKIFF_BENCH_SIM_SERVER"),
        ca_pem,
        var("SKIFF_BENCH_SIM_TOKEN"),
        var("SKIFF_BENCH_SIM_COUNT").parse().expect("count"),
    );
    config.run_pods = var("SKIFF_BENCH_SIM_RUN_PODS") == "1";
    config.per_node_watches = var("SKIFF_BENCH_SIM_SHARED_WATCH") != "1";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(skiff_agent::sim::run(config, CancellationToken::new()))
        .expect("simulated nodes");
}

fn main() {
    if std::env::var_os(SIM_ENV).is_some() {
        return sim_child();
    }
    let nodes = env_usize("SKIFF_BENCH_NODES", 5_000);
    let pods = env_usize("SKIFF_BENCH_PODS", 50_000);
    let run_pods = std::env::var("SKIFF_BENCH_RUN_PODS").map_or(true, |v| v != "0");
    let per_node_watches = std::env::var("SKIFF_BENCH_SHARED_WATCH").map_or(true, |v| v != "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(nodes, pods, run_pods, per_node_watches));
}

async fn bench(nodes: usize, pods: usize, run_pods: bool, per_node_watches: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let support::ControlPlane {
        api,
        addr,
        identity,
        shutdown,
        serving,
    } = support::serve(dir.path()).await;
    let rss_start = rss_mib("self");
    // Fan-out first, on the fresh server, so its watches and pods do not load the main run.
    let fan_watches = env_usize("SKIFF_BENCH_FANOUT_WATCHES", nodes);
    let fan_binds = env_usize("SKIFF_BENCH_FANOUT_BINDS", 5_000);
    let fan = fanout(
        &api,
        addr,
        &identity.ca_pem,
        &identity.admin_token,
        fan_watches,
        fan_binds,
        1_000.0,
    )
    .await;
    let (fan_p50, fan_p99) = (percentile(&fan, 0.5), percentile(&fan, 0.99));
    println!(
        "watch fan-out: {fan_watches} field-selected HTTPS watches, {fan_binds} binds at 1,000/s: commit -> its node's watcher p50 {fan_p50:.1} ms, p99 {fan_p99:.1} ms"
    );
    let scheduler = tokio::spawn(skiff_control_plane::scheduler::run(
        api.clone(),
        shutdown.clone(),
    ));

    // The simulated nodes run in a child process, so this process's RSS is the control
    // plane's (plus the benchmark's clients and its watch); they share the two cores.
    let ca_path = dir.path().join("bench-ca.crt");
    std::fs::write(&ca_path, &identity.ca_pem).expect("write CA");
    let exe = std::env::current_exe().expect("own executable");
    let sim = SimNodes(
        Command::new(exe)
            .env(SIM_ENV, "1")
            .env("SKIFF_BENCH_SIM_SERVER", format!("https://{addr}"))
            .env("SKIFF_BENCH_SIM_CA", &ca_path)
            .env("SKIFF_BENCH_SIM_TOKEN", &identity.admin_token)
            .env("SKIFF_BENCH_SIM_COUNT", nodes.to_string())
            .env("SKIFF_BENCH_SIM_RUN_PODS", if run_pods { "1" } else { "0" })
            .env(
                "SKIFF_BENCH_SIM_SHARED_WATCH",
                if per_node_watches { "0" } else { "1" },
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("simulated nodes start"),
    );
    let sim_pid = sim.0.id().to_string();
    let t = Instant::now();
    loop {
        let list = api
            .list(resources::core("nodes"), None, &ListOptions::default())
            .expect("list nodes");
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if ready >= nodes {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "only {ready}/{nodes} nodes became Ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let nodes_ready_s = t.elapsed().as_secs_f64();
    // Let the first round of lease creations pass, so pods meet steady-state heartbeats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_nodes = rss_mib("self");
    println!(
        "{nodes} simulated nodes Ready in {nodes_ready_s:.1} s; control plane RSS {rss_start:.0} MiB before them, {rss_nodes:.0} MiB with them"
    );

    let follower = tokio::spawn(follow(api.clone(), pods, run_pods));
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(identity.ca_pem.as_bytes()).expect("ca"),
        )
        .http1_only()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let url = format!("https://{addr}/api/v1/namespaces/default/pods");
    // Bodies are encoded before the clock starts, so the shared cores go to the server.
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..pods)
            .map(|i| serde_json::to_vec(&pod(i)).expect("json").into())
            .collect(),
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, url, token, bodies, next) = (
            client.clone(),
            url.clone(),
            identity.admin_token.clone(),
            bodies.clone(),
            next.clone(),
        );
        clients.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                sent.push((i, Instant::now()));
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
            sent
        });
    }
    let mut sent = vec![start; pods];
    while let Some(r) = clients.join_next().await {
        for (i, t) in r.expect("client task") {
            sent[i] = t;
        }
    }
    let created = start.elapsed();
    let rss_created = rss_mib("self");
    let timeline = tokio::time::timeout(Duration::from_secs(1200), follower)
        .await
        .expect("every pod bound (and running) within 20 minutes")
        .expect("watch task");
    let rss_pods = rss_mib("self");
    let rss_sim = rss_mib(&sim_pid);

    let last = |times: &[Option<Instant>]| {
        times
            .iter()
            .flatten()
            .max()
            .map_or(Duration::ZERO, |t| t.duration_since(start))
    };
    let all_bound = last(&timeline.bound);
    let latencies = |to: &[Option<Instant>], from: &[Instant]| {
        let mut l: Vec<Duration> = to
            .iter()
            .zip(from)
            .filter_map(|(t, f)| t.map(|t| t.duration_since(*f)))
            .collect();
        l.sort();
        l
    };
    let bind_latency = latencies(&timeline.bound, &sent);
    let added: Vec<Instant> = timeline
        .added
        .iter()
        .zip(&sent)
        .map(|(a, s)| a.unwrap_or(*s))
        .collect();
    let queue_latency = latencies(&timeline.bound, &added);
    let pods_per_s = pods as f64 / all_bound.as_secs_f64();
    let create_per_s = pods as f64 / created.as_secs_f64();
    let (p50, p99) = (
        percentile(&bind_latency, 0.5),
        percentile(&bind_latency, 0.99),
    );
    // Binds after the last create: the scheduler working off its backlog with no creates
    // competing (status reports from the nodes still do).
    let backlog: Vec<Instant> = timeline
        .bound
        .iter()
        .flatten()
        .filter(|t| t.duration_since(start) > created)
        .copied()
        .collect();
    let drain_per_s = (backlog.len() > pods / 20)
        .then(|| backlog.len() as f64 / (all_bound - created).as_secs_f64());
    let max_per_node = timeline.per_node.values().max().copied().unwrap_or(0);

    println!(
        "{pods} pods created in {:.1} s ({create_per_s:.0}/s from {CLIENTS} HTTPS clients); all bound and durable {:.1} s after the first create: {pods_per_s:.0} pods/s",
        created.as_secs_f64(),
        all_bound.as_secs_f64()
    );
    println!(
        "create sent -> bound: p50 {p50:.0} ms, p99 {p99:.0} ms; created (durable) -> bound: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&queue_latency, 0.5),
        percentile(&queue_latency, 0.99)
    );
    match drain_per_s {
        Some(rate) => println!(
            "{} pods bound after the last create, at {rate:.0} pods/s (scheduling with no creates competing)",
            backlog.len()
        ),
        None => println!("the scheduler kept up with the creates (no backlog to time alone)"),
    }
    println!(
        "spread: {} nodes got pods, at most {max_per_node} each",
        timeline.per_node.len()
    );
    let all_running = run_pods.then(|| last(&timeline.running).as_secs_f64());
    match all_running {
        Some(s) => println!(
            "the simulated nodes reported all pods Running {s:.1} s after the first create (their status writes shared the API with the binds)"
        ),
        None => println!("pods were left Pending on their nodes (SKIFF_BENCH_RUN_PODS=0)"),
    }
    println!(
        "control plane RSS (this process: store, API server, scheduler, plus the bench clients and watch): {rss_start:.0} MiB at start, {rss_nodes:.0} MiB with {nodes} nodes, {rss_created:.0} MiB after the creates, {rss_pods:.0} MiB with {pods} pods bound; simulated nodes' process {rss_sim:.0} MiB"
    );

    drop(sim);
    shutdown.cancel();
    let _ = serving.await;
    let _ = scheduler.await;
    api.shutdown().await;
    println!(
        "{}",
        json!({"bench": "scheduler", "nodes": nodes, "pods": pods, "pods_per_s": pods_per_s.round(),
               "p99_ms": p99.round(), "p50_ms": p50.round(), "create_per_s": create_per_s.round(),
               "drain_per_s": drain_per_s.map(f64::round), "all_bound_s": all_bound.as_secs_f64(),
               "all_running_s": all_running, "pods_running": run_pods,
               "nodes_ready_s": nodes_ready_s, "rss_mib": rss_pods.round(),
               "rss_nodes_mib": rss_nodes.round(), "sim_rss_mib": rss_sim.round(),
               "per_node_watches": per_node_watches, "fanout_p99_ms": (fan_p99 * 10.0).round() / 10.0,
               "fanout_p50_ms": (fan_p50 * 10.0).round() / 10.0, "fanout_watches": fan_watches})
    );
}
