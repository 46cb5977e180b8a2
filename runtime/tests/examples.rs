//! The example workloads, built from source (examples/wasm/build.sh), each run under the
//! wasmtime backend with the output a user would expect.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_runtime::{
    Caller, ContainerConfig, ContainerRuntime, ContainerState, DirSource, ExitReason, HttpError,
    Limits, Mount, OutgoingBody, OutgoingHttp, PodSandboxConfig, RequestOptions, Sending,
    WasmConfig, WasmRuntime,
};

fn build_examples(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/build.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("bash runs");
    assert!(
        status.success(),
        "examples/wasm/build.sh failed: scripts/test installs the toolchains (rustc + libstd-rust-dev-wasm32, clang + wasi-libc)"
    );
}

struct Node {
    rt: WasmRuntime,
    dir: tempfile::TempDir,
    sandbox: String,
}

impl Node {
    async fn new() -> Self {
        Self::with_outgoing_http(None).await
    }

    /// A node whose guests' outgoing HTTP requests go to `outgoing` (denied without one).
    async fn with_outgoing_http(outgoing: Option<Arc<dyn OutgoingHttp>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        build_examples(&modules);
        let mut config = WasmConfig::new(dir.path().join("cache"), 32);
        config.outgoing_http = outgoing;
        let rt = WasmRuntime::new(config, Arc::new(DirSource::new(modules))).unwrap();
        let sandbox = rt
            .run_pod_sandbox(&PodSandboxConfig {
                name: "examples".into(),
                namespace: "demo".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        Self { rt, dir, sandbox }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("logs/{name}/0.log"))
    }

    async fn run(
        &self,
        name: &str,
        image: &str,
        env: &[(&str, &str)],
        limits: Limits,
        mounts: Vec<Mount>,
    ) -> String {
        self.rt.pull_image(image).await.unwrap();
        let config = ContainerConfig {
            name: name.into(),
            image: image.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            limits,
            mounts,
            log_path: self.log_path(name),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(&self.sandbox, &config)
            .await
            .unwrap();
        self.rt.start_container(&id).await.unwrap();
        id
    }

    /// The log's text records (stream, text).
    fn log(&self, name: &str) -> Vec<(String, String)> {
        std::fs::read_to_string(self.log_path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let p: Vec<&str> = l.splitn(4, ' ').collect();
                (p[1].to_string(), p[3].to_string())
            })
            .collect()
    }

    async fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Turns the preview 1 module `name` into the component `<name>-component` with an adapter.
    fn componentize(&self, name: &str, adapter: &[u8]) {
        let modules = self.dir.path().join("modules");
        let module = std::fs::read(modules.join(format!("{name}.wasm"))).unwrap();
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .adapter("wasi_snapshot_preview1", adapter)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap();
        std::fs::write(modules.join(format!("{name}-component.wasm")), component).unwrap();
    }

    /// Sends one request to an HTTP function: status, content type and body, or the error.
    async fn request(
        &self,
        id: &str,
        method: &str,
        path: &str,
    ) -> Result<(u16, String, String), skiff_runtime::Error> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://function.local{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = self.rt.handle_http(id, request).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("the body streams to the end")
            .to_bytes();
        Ok((
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        ))
    }

    async fn exit(&self, id: &str) -> (i32, ExitReason, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let ContainerState::Exited {
                exit_code,
                reason,
                message,
                ..
            } = self.rt.container_status(id).await.unwrap().state
            {
                return (exit_code, reason, message);
            }
            assert!(Instant::now() < deadline, "container {id} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_run_with_the_expected_output() {
    let n = Node::new().await;

    let hello = n
        .run(
            "hello",
            "hello:1.0",
            &[("GREETING", "Ahoy")],
            Limits::default(),
            vec![],
        )
        .await;
    assert!(!n.rt.serves_http(&hello), "a command module serves no HTTP");
    n.wait_for("hello to tick", || {
        n.log("hello").iter().any(|(_, t)| t == "tick 1")
    })
    .await;
    assert_eq!(
        n.log("hello")[0],
        (
            "stdout".to_string(),
            "Ahoy from a Wasm container!".to_string()
        )
    );

    let crash = n
        .run("crash", "crash:1.0", &[], Limits::default(), vec![])
        .await;
    let (code, reason, _) = n.exit(&crash).await;
    assert_eq!((code, reason), (3, ExitReason::Error));
    assert!(
        n.log("crash")
            .contains(&("stderr".to_string(), "something went wrong".to_string()))
    );

    let job = n
        .run(
            "compute",
            "compute:1.0",
            &[("LIMIT", "10000")],
            Limits::default(),
            vec![],
        )
        .await;
    assert_eq!(n.exit(&job).await.0, 0);
    assert!(
        n.log("compute")
            .contains(&("stdout".to_string(), "primes below 10000: 1229".to_string())),
        "{:?}",
        n.log("compute")
    );

    let hog = n
        .run(
            "hog",
            "hog:1.0",
            &[],
            Limits {
                memory_bytes: Some(16 << 20),
                cpu_millis: None,
            },
            vec![],
        )
        .await;
    let (code, reason, message) = n.exit(&hog).await;
    assert_eq!((code, reason), (137, ExitReason::OomKilled), "{message}");
    assert!(
        n.log("hog").iter().any(|(_, t)| t.starts_with("holding ")),
        "the hog ran before it was killed"
    );

    let spin = n
        .run(
            "spin",
            "spin:1.0",
            &[],
            Limits {
                memory_bytes: None,
                cpu_millis: Some(200),
            },
            vec![],
        )
        .await;
    n.wait_for("the spinner to start", || !n.log("spin").is_empty())
        .await;

    // Writer and reader share one emptyDir.
    let shared = n.dir.path().join("pod/volumes/shared");
    std::fs::create_dir_all(&shared).unwrap();
    let mount = || {
        vec![Mount {
            host_path: shared.clone(),
            container_path: "/data".into(),
            read_only: false,
            ..Default::default()
        }]
    };
    let writer = n
        .run("writer", "writer:1.0", &[], Limits::default(), mount())
        .await;
    let reader = n
        .run("reader", "reader:1.0", &[], Limits::default(), mount())
        .await;
    assert_eq!(n.exit(&reader).await.0, 0);
    assert!(
        n.log("reader")
            .iter()
            .any(|(_, t)| t.starts_with("read 3 lines")),
        "{:?}",
        n.log("reader")
    );
    assert!(
        std::fs::read_to_string(shared.join("shared.txt"))
            .unwrap()
            .starts_with("line 1\nline 2\nline 3\n")
    );

    // The same programs as WASI 0.2 components (`wasi:cli/run`), through the same trait.
    for name in ["compute", "crash"] {
        n.componentize(
            name,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        );
    }
    let job = n
        .run(
            "compute-c",
            "compute-component:1.0",
            &[("LIMIT", "1000")],
            Limits::default(),
            vec![],
        )
        .await;
    assert_eq!(n.exit(&job).await.0, 0);
    assert!(
        n.log("compute-c")
            .contains(&("stdout".to_string(), "primes below 1000: 168".to_string())),
        "{:?}",
        n.log("compute-c")
    );
    let crash = n
        .run(
            "crash-c",
            "crash-component:1.0",
            &[],
            Limits::default(),
            vec![],
        )
        .await;
    let (code, reason, _) = n.exit(&crash).await;
    assert_eq!(
        (code, reason),
        (1, ExitReason::Error),
        "a component reports failure as exit code 1"
    );

    // The ticking and spinning ones run until stopped.
    for id in [&hello, &spin, &writer] {
        assert!(matches!(
            n.rt.container_status(id).await.unwrap().state,
            ContainerState::Running { .. }
        ));
        n.rt.stop_container(id, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(n.exit(id).await.0, 137);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_function_answers_each_request_with_a_fresh_instance() {
    let n = Node::new().await;
    n.componentize(
        "hello-http",
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
    );
    let id = n
        .run(
            "web",
            "hello-http-component:1.0",
            &[],
            Limits {
                memory_bytes: Some(16 << 20),
                cpu_millis: None,
            },
            vec![],
        )
        .await;
    assert!(matches!(
        n.rt.container_status(&id).await.unwrap().state,
        ContainerState::Running { .. }
    ));
    assert!(n.rt.serves_http(&id));

    let ok = |method: &str, path: &str| {
        (
            200,
            "text/plain".to_string(),
            format!("Hello from a Wasm function! You asked for {method} {path}\n"),
        )
    };
    assert_eq!(
        n.request(&id, "GET", "/hello").await.unwrap(),
        ok("GET", "/hello")
    );
    assert_eq!(
        n.request(&id, "POST", "/orders?id=7").await.unwrap(),
        ok("POST", "/orders?id=7")
    );

    // A trap fails that request only; the next one gets a fresh instance.
    let err = n
        .request(&id, "GET", "/crash")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"web\" failed to answer") && err.contains("wasm trap"),
        "{err}"
    );
    assert_eq!(
        n.request(&id, "GET", "/after").await.unwrap(),
        ok("GET", "/after")
    );

    // So does crossing the memory limit.
    let err = n.request(&id, "GET", "/hog").await.unwrap_err().to_string();
    assert!(err.contains("OOMKilled"), "{err}");

    // A caller that gives up before the answer (a timeout) stops the instance. Guests run on
    // their own threads, so one may get going before its caller gives up; most never do.
    for _ in 0..20 {
        let abandoned = http::Request::builder()
            .uri("http://function.local/abandoned")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        // Polled once, then dropped (or, rarely, already answered).
        drop(futures::FutureExt::now_or_never(
            n.rt.handle_http(&id, abandoned),
        ));
    }
    assert_eq!(
        n.request(&id, "GET", "/next").await.unwrap(),
        ok("GET", "/next")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ran = n
        .log("web")
        .iter()
        .filter(|(_, t)| t == "GET /abandoned")
        .count();
    assert!(ran < 10, "{ran} of 20 abandoned requests ran");

    // Requests run side by side, each in its own instance.
    let paths: Vec<String> = (0..20).map(|i| format!("/r{i}")).collect();
    let answers = futures::future::join_all(paths.iter().map(|p| n.request(&id, "GET", p))).await;
    for (path, answer) in paths.iter().zip(answers) {
        assert_eq!(answer.unwrap(), ok("GET", path));
    }

    let log = n.log("web");
    assert!(
        log.contains(&("stdout".to_string(), "GET /hello".to_string())),
        "{log:?}"
    );
    assert!(
        log.contains(&("stderr".to_string(), "crashing on purpose".to_string())),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|(s, t)| s == "stderr" && t.starts_with("request failed: ")),
        "{log:?}"
    );
    assert!(
        matches!(
            n.rt.container_status(&id).await.unwrap().state,
            ContainerState::Running { .. }
        ),
        "failed requests do not stop the function"
    );

    // A graceful stop drains and completes; afterwards requests are refused.
    n.rt.stop_container(&id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(n.exit(&id).await, (0, ExitReason::Completed, String::new()));
    let err = n
        .request(&id, "GET", "/late")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not serving HTTP"), "{err}");
}

/// Plays the embedder's part for guests' outgoing requests: `web.test` answers, `nowhere.test`
/// does not resolve, anything else is denied; it remembers who asked for what.
#[derive(Default)]
struct FakeCluster {
    seen: std::sync::Mutex<Vec<(Caller, String)>>,
}

impl OutgoingHttp for FakeCluster {
    fn send(
        &self,
        caller: &Caller,
        request: http::Request<OutgoingBody>,
        _options: Option<RequestOptions>,
    ) -> Sending {
        use http_body_util::BodyExt as _;
        let uri = request.uri().to_string();
        self.seen.lock().unwrap().push((caller.clone(), uri));
        let host = request.uri().host().unwrap_or("").to_string();
        Box::pin(async move {
            match host.as_str() {
                "web.test" => {
                    let body = http_body_util::Full::new(bytes::Bytes::from("hello from web"))
                        .map_err(|never| match never {})
                        .boxed_unsync();
                    let response = http::Response::builder().status(203).body(body).unwrap();
                    Ok((
                        response,
                        Box::new(async { Ok(()) }) as skiff_runtime::Connection,
                    ))
                }
                "nowhere.test" => Err(HttpError::DnsError {
                    rcode: Some("NXDOMAIN".into()),
                    info_code: None,
                }),
                _ => Err(HttpError::HttpRequestDenied),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_outgoing_requests_go_where_the_embedder_sends_them() {
    let cluster = Arc::new(FakeCluster::default());
    let n = Node::with_outgoing_http(Some(cluster.clone())).await;
    n.componentize(
        "fetch-http",
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
    );
    let id = n
        .run(
            "fetch",
            "fetch-http-component:1.0",
            &[],
            Limits::default(),
            vec![],
        )
        .await;
    assert_eq!(
        n.request(&id, "GET", "/?url=http://web.test:8080/hi?x=1")
            .await
            .unwrap(),
        (203, "text/plain".into(), "hello from web".into())
    );
    let (caller, uri) = cluster.seen.lock().unwrap()[0].clone();
    assert_eq!(
        caller,
        Caller {
            namespace: "demo".into(),
            pod: "examples".into()
        }
    );
    assert_eq!(uri, "http://web.test:8080/hi?x=1");
    // The embedder's errors reach the guest as wasi:http error codes.
    assert_eq!(
        n.request(&id, "GET", "/?url=http://nowhere.test/")
            .await
            .unwrap(),
        (
            502,
            "text/plain".into(),
            "error: DNS-error (NXDOMAIN)\n".into()
        )
    );
    assert_eq!(
        n.request(&id, "GET", "/?url=https://example.com/")
            .await
            .unwrap(),
        (
            502,
            "text/plain".into(),
            "error: HTTP-request-denied\n".into()
        )
    );

    // Without an embedder's routing, every outgoing request is denied.
    let alone = Node::new().await;
    alone.componentize(
        "fetch-http",
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
    );
    let id = alone
        .run(
            "fetch",
            "fetch-http-component:1.0",
            &[],
            Limits::default(),
            vec![],
        )
        .await;
    assert_eq!(
        alone
            .request(&id, "GET", "/?url=http://web.test/")
            .await
            .unwrap(),
        (
            502,
            "text/plain".into(),
            "error: HTTP-request-denied\n".into()
        )
    );
}
