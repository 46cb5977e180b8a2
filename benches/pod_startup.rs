//! Pod startup through the whole system: a real `skiff server` and one `skiff agent`, pods
//! created over HTTPS and seen Running through a watch.
//!
//! Run: `cargo bench -p skiff --bench pod_startup`. The last line is JSON.
//! - steady: 200 pods created at 20/s, create → Running latency;
//! - burst: 1,000 pods created as fast as 32 clients can, create → Running latency;
//! - the agent's RSS when idle (registered, no pods).
//!
//! Pods are bound by `spec.nodeName` until the scheduler lands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;

mod support;

const STEADY: usize = 200;
const BURST: usize = 1000;

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).expect("modules dir");
    let sleeper =
        wat::parse_str(include_str!("../runtime/src/wasm/fixtures/sleeper.wat")).expect("fixture");
    std::fs::write(modules.join("sleeper.wasm"), sleeper).expect("module");

    let server_dir = dir.path().join("server");
    let modules_flag = modules.display().to_string();
    let (_server, agent, url, token) = support::server_and_agent(
        dir.path(),
        &["--max-pods", "2000", "--module-dir", &modules_flag],
        None,
    );

    let ca = std::fs::read(server_dir.join("pki/ca.crt")).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
        .build()
        .expect("client");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async move {
        // Wait for the node, then let the agent settle before measuring its idle RSS.
        loop {
            let r = client
                .get(format!("{url}/api/v1/nodes/bench"))
                .bearer_auth(&token)
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_rss = rss_mib(agent.0.id());

        // Running times, as a watch sees them.
        let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let watch = client
            .get(format!("{url}/api/v1/namespaces/default/pods?watch=true"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("watch");
        {
            let running = running.clone();
            tokio::spawn(async move {
                let mut body = watch.bytes_stream();
                let mut buf = Vec::new();
                while let Some(Ok(chunk)) = body.next().await {
                    buf.extend_from_slice(&chunk);
                    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                            continue;
                        };
                        if event["object"]["status"]["phase"] == "Running" {
                            let name = event["object"]["metadata"]["name"].as_str().unwrap_or("");
                            running
                                .lock()
                                .unwrap()
                                .entry(name.to_string())
                                .or_insert_with(Instant::now);
                        }
                    }
                }
            });
        }
        let create = |name: String| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let pod = serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"nodeName": "bench", "terminationGracePeriodSeconds": 0,
                             "containers": [{"name": "c", "image": "sleeper:1"}]},
                });
                let sent = Instant::now();
                let r = client
                    .post(format!("{url}/api/v1/namespaces/default/pods"))
                    .bearer_auth(&token)
                    .json(&pod)
                    .send()
                    .await
                    .expect("create");
                assert!(r.status().is_success(), "create failed: {}", r.status());
                (name, sent)
            }
        };
        let latencies = |sent: Vec<(String, Instant)>| {
            let running = running.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let done = {
                        let r = running.lock().unwrap();
                        sent.iter().all(|(n, _)| r.contains_key(n))
                    };
                    if done || Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let r = running.lock().unwrap();
                let mut ms: Vec<f64> = sent
                    .iter()
                    .map(|(n, t)| {
                        r.get(n)
                            .map_or(f64::INFINITY, |seen| (*seen - *t).as_secs_f64() * 1e3)
                    })
                    .collect();
                ms.sort_by(f64::total_cmp);
                ms
            }
        };

        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for i in 0..STEADY {
            tick.tick().await;
            sent.push(tokio::spawn(create(format!("steady-{i}"))));
        }
        let mut steady_sent = Vec::new();
        for s in sent {
            steady_sent.push(s.await.expect("task"));
        }
        let steady = latencies(steady_sent).await;
        println!(
            "steady ({STEADY} pods at 20/s): create → Running p50 {:.1} ms, p99 {:.1} ms",
            percentile(&steady, 0.5),
            percentile(&steady, 0.99)
        );

        let started = Instant::now();
        let burst_sent: Vec<(String, Instant)> = futures::stream::iter(0..BURST)
            .map(|i| create(format!("burst-{i}")))
            .buffer_unordered(32)
            .collect()
            .await;
        let burst = latencies(burst_sent).await;
        println!(
            "burst ({BURST} pods, 32 clients): all Running after {:.2} s; create → Running p50 {:.0} ms, p99 {:.0} ms",
            started.elapsed().as_secs_f64(),
            percentile(&burst, 0.5),
            percentile(&burst, 0.99)
        );
        println!(
            "agent RSS: {idle_rss:.1} MiB idle, {:.1} MiB with {} pods",
            rss_mib(agent.0.id()),
            STEADY + BURST
        );
        println!(
            "{{\"bench\":\"pod_startup\",\"steady_p50_ms\":{:.1},\"steady_p99_ms\":{:.1},\"burst_p99_ms\":{:.0},\"agent_idle_rss_mib\":{idle_rss:.1}}}",
            percentile(&steady, 0.5),
            percentile(&steady, 0.99),
            percentile(&burst, 0.99)
        );
    });
}
