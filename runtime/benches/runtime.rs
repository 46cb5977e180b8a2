//! Runtime benchmark: container start latency, idle density and isolation.
//!
//! Run: `cargo bench -p skiff-runtime --bench runtime`. The last line is JSON.
//! - start: create + start + run to exit of a cached module that returns at once (an upper
//!   bound of "create + start → guest entry"), sequentially, 2,000 times;
//! - density: idle guests (sleeping in `poll_oneoff`) held at once, and the process RSS;
//! - isolation: p99 deviation of a 10 ms ticker's period while two spinners run beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_runtime::{
    ContainerConfig, ContainerRuntime, ContainerState, Limits, MemorySource, PodSandboxConfig,
    WasmConfig, WasmRuntime,
};

const STARTS: usize = 2_000;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn wait_exit(rt: &WasmRuntime, id: &str) {
    loop {
        if matches!(
            rt.container_status(id).await.expect("status").state,
            ContainerState::Exited { .. }
        ) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

fn main() {
    let idle: usize = std::env::var("SKIFF_BENCH_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt_tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    rt_tokio.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new());
        for (name, wat) in [
            ("done", include_str!("../src/wasm/fixtures/done.wat")),
            ("sleeper", include_str!("../src/wasm/fixtures/sleeper.wat")),
            ("spin", include_str!("../src/wasm/fixtures/spin.wat")),
            ("ticker", include_str!("../src/wasm/fixtures/ticker.wat")),
        ] {
            source.insert(name, wat::parse_str(wat).expect("fixture"));
        }
        let mut config = WasmConfig::new(dir.path().join("cache"), idle as u32 + 16);
        config.max_memory_bytes = 64 << 20;
        let rt = WasmRuntime::new(config, source).expect("runtime");
        let logs = dir.path().join("logs");
        let sandbox = rt.run_pod_sandbox(&PodSandboxConfig { name: "bench".into(), log_directory: logs.clone(), ..Default::default() }).await.expect("sandbox");
        for image in ["done:1", "sleeper:1", "spin:1", "ticker:1"] {
            rt.pull_image(image).await.expect("pull");
        }
        let container = |name: String, image: &str| ContainerConfig { log_path: logs.join(format!("{name}.log")), name, image: image.into(), ..Default::default() };

        // Start latency.
        let mut starts = Vec::with_capacity(STARTS);
        let mut phases = [Vec::new(), Vec::new()];
        for i in 0..STARTS {
            let config = container(format!("s{i}"), "done:1");
            let t = Instant::now();
            let id = rt.create_container(&sandbox, &config).await.expect("create");
            phases[0].push(t.elapsed().as_secs_f64() * 1e6);
            rt.start_container(&id).await.expect("start");
            phases[1].push(t.elapsed().as_secs_f64() * 1e6);
            wait_exit(&rt, &id).await;
            starts.push(t.elapsed().as_secs_f64() * 1e6);
            rt.remove_container(&id).await.expect("remove");
        }
        starts.sort_by(f64::total_cmp);
        for p in &mut phases {
            p.sort_by(f64::total_cmp);
        }
        println!("start phases (p50): created {:.1} us, started {:.1} us", percentile(&phases[0], 0.5), percentile(&phases[1], 0.5));
        let (start_p50, start_p99) = (percentile(&starts, 0.5), percentile(&starts, 0.99));
        println!("start (create+start+exit of a cached module): p50 {start_p50:.1} us, p99 {start_p99:.1} us over {STARTS}");

        // Isolation: a ticker beside two spinners.
        let ticker = rt.create_container(&sandbox, &container("ticker".into(), "ticker:1")).await.expect("create");
        let spinners: Vec<String> = start_spinners(&rt, &sandbox, &container).await;
        rt.start_container(&ticker).await.expect("start");
        tokio::time::sleep(Duration::from_secs(3)).await;
        rt.stop_container(&ticker, Duration::ZERO).await.expect("stop");
        for s in &spinners {
            rt.stop_container(s, Duration::ZERO).await.expect("stop");
        }
        let text = std::fs::read_to_string(logs.join("ticker.log")).expect("ticker log");
        let times: Vec<jiff::Timestamp> = text.lines().filter_map(|l| l.split(' ').next()?.parse().ok()).collect();
        let mut jitter: Vec<f64> = times.windows(2).map(|w| ((w[1] - w[0]).total(jiff::Unit::Millisecond).unwrap_or(0.0) - 10.0).abs()).collect();
        jitter.sort_by(f64::total_cmp);
        let tick_p99 = if jitter.is_empty() { f64::NAN } else { percentile(&jitter, 0.99) };
        println!("isolation: {} ticks in 3 s beside 2 spinners, period deviation p50 {:.2} ms, p99 {tick_p99:.2} ms", times.len(), if jitter.is_empty() { f64::NAN } else { percentile(&jitter, 0.5) });

        // Density: idle guests.
        let before = rss_mib();
        let mut held = 0;
        let mut failure = None;
        for i in 0..idle {
            let config = container(format!("idle{i}"), "sleeper:1");
            let started = match rt.create_container(&sandbox, &config).await {
                Ok(id) => rt.start_container(&id).await.map(|_| id),
                Err(e) => Err(e),
            };
            match started {
                Ok(_) => held += 1,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let running = rt.list_containers(Some(&sandbox)).await.expect("list").iter().filter(|c| matches!(c.state, ContainerState::Running { .. })).count();
        let rss = rss_mib();
        println!("density: {running} idle containers running (of {idle} asked), RSS {rss:.0} MiB ({before:.0} MiB before){}", failure.map(|f| format!("; stopped at {held}: {f}")).unwrap_or_default());
        rt.stop_pod_sandbox(&sandbox).await.expect("stop");
        println!(
            "{{\"bench\":\"runtime\",\"start_p50_us\":{start_p50:.1},\"start_p99_us\":{start_p99:.1},\"idle_containers\":{running},\"rss_mib\":{rss:.0},\"tick_jitter_p99_ms\":{tick_p99:.2}}}"
        );
    });
}

async fn start_spinners(
    rt: &WasmRuntime,
    sandbox: &str,
    container: &impl Fn(String, &str) -> ContainerConfig,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..2 {
        let mut config = container(format!("spin{i}"), "spin:1");
        config.limits = Limits::default();
        let id = rt.create_container(sandbox, &config).await.expect("create");
        rt.start_container(&id).await.expect("start");
        ids.push(id);
    }
    ids
}
