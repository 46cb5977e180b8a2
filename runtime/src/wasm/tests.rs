//! The wasmtime backend against real modules (`.wat` fixtures), with limits that bite.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::MemorySource;

struct Node {
    rt: WasmRuntime,
    dir: tempfile::TempDir,
    sandbox: String,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(MemorySource::new());
    for (name, wat) in [
        ("hello", include_str!("fixtures/hello.wat")),
        ("trap", include_str!("fixtures/trap.wat")),
        ("done", include_str!("fixtures/done.wat")),
        ("spin", include_str!("fixtures/spin.wat")),
        ("hog", include_str!("fixtures/hog.wat")),
        ("sleeper", include_str!("fixtures/sleeper.wat")),
        ("writer", include_str!("fixtures/writer.wat")),
    ] {
        source.insert(name, wat::parse_str(wat).unwrap());
    }
    source.insert("text", b"hello, not wasm".to_vec());
    let rt = WasmRuntime::new(Config::new(dir.path().join("cache"), 16), source).unwrap();
    let sandbox = rt
        .run_pod_sandbox(&PodSandboxConfig {
            name: "p".into(),
            namespace: "default".into(),
            log_directory: dir.path().join("logs"),
            ..Default::default()
        })
        .await
        .unwrap();
    Node { rt, dir, sandbox }
}

impl Node {
    async fn start(&self, name: &str, image: &str, limits: Limits, mounts: Vec<Mount>) -> String {
        self.rt.pull_image(image).await.unwrap();
        let config = ContainerConfig {
            name: name.into(),
            image: image.into(),
            limits,
            mounts,
            log_path: self.dir.path().join(format!("logs/{name}/0.log")),
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

    async fn wait(&self, id: &str) -> ContainerState {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = self.rt.container_status(id).await.unwrap().state;
            if matches!(state, ContainerState::Exited { .. }) {
                return state;
            }
            assert!(Instant::now() < deadline, "container {id} did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log(&self, name: &str) -> Vec<(String, String, String)> {
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("logs/{name}/0.log"))).unwrap();
        text.lines()
            .map(|l| {
                let p: Vec<&str> = l.splitn(4, ' ').collect();
                (p[1].to_string(), p[2].to_string(), p[3].to_string())
            })
            .collect()
    }
}

fn exit(state: &ContainerState) -> (i32, ExitReason, &str) {
    match state {
        ContainerState::Exited {
            exit_code,
            reason,
            message,
            ..
        } => (*exit_code, *reason, message.as_str()),
        other => panic!("not exited: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_cri_logs() {
    let n = node().await;
    let id = n
        .start("hello", "hello:1.0", Limits::default(), vec![])
        .await;
    assert_eq!(exit(&n.wait(&id).await).0, 3);
    assert_eq!(exit(&n.wait(&id).await).1, ExitReason::Error);
    let log = n.log("hello");
    let line = |s: &str, t: &str| (s.to_string(), "F".to_string(), t.to_string());
    assert!(log.contains(&line("stdout", "hello")), "{log:?}");
    assert!(
        log.contains(&line("stdout", "world")),
        "the unterminated last line is kept: {log:?}"
    );
    assert!(log.contains(&line("stderr", "oops")), "{log:?}");

    let done = n.start("done", "done:1", Limits::default(), vec![]).await;
    assert_eq!(exit(&n.wait(&done).await), (0, ExitReason::Completed, ""));
    let trap = n.start("trap", "trap:1", Limits::default(), vec![]).await;
    let state = n.wait(&trap).await;
    let (code, reason, message) = exit(&state);
    assert_eq!((code, reason), (134, ExitReason::Error));
    assert!(message.contains("unreachable"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_with_oom() {
    let n = node().await;
    let limits = Limits {
        memory_bytes: Some(1 << 20),
        cpu_millis: None,
    };
    let id = n.start("hog", "hog:1", limits, vec![]).await;
    let state = n.wait(&id).await;
    let (code, reason, message) = exit(&state);
    assert_eq!((code, reason), (137, ExitReason::OomKilled), "{message}");
    assert!(message.contains("memory limit"), "{message}");
    let stats = n.rt.container_stats(&id).await.unwrap();
    assert!(
        stats.memory_bytes <= 1 << 20 && stats.memory_bytes > 64 << 10,
        "{stats:?}"
    );
}

/// A spinning guest yields every slice, so others on the same thread still run.
#[tokio::test(flavor = "current_thread")]
async fn spinners_cannot_starve_others_and_stop_by_force() {
    let n = node().await;
    let spinner = n.start("spin", "spin:1", Limits::default(), vec![]).await;
    let done = n.start("done", "done:1", Limits::default(), vec![]).await;
    assert_eq!(exit(&n.wait(&done).await).1, ExitReason::Completed);
    assert!(matches!(
        n.rt.container_status(&spinner).await.unwrap().state,
        ContainerState::Running { .. }
    ));
    n.rt.stop_container(&spinner, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(
        exit(&n.rt.container_status(&spinner).await.unwrap().state).0,
        137
    );
}

/// A CPU limit throttles by time slicing: a 100m spinner gets a fraction of what an unlimited
/// one gets over the same wall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_throttles() {
    let n = node().await;
    let limited = n
        .start(
            "slow",
            "spin:1",
            Limits {
                memory_bytes: None,
                cpu_millis: Some(100),
            },
            vec![],
        )
        .await;
    let free = n.start("fast", "spin:1", Limits::default(), vec![]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (slow, fast) = (
        n.rt.container_stats(&limited).await.unwrap().cpu_nanos,
        n.rt.container_stats(&free).await.unwrap().cpu_nanos,
    );
    assert!(
        fast > 0 && slow * 3 < fast,
        "limited {slow} ns vs unlimited {fast} ns"
    );
    n.rt.stop_pod_sandbox(&n.sandbox).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_guests_stop_after_the_grace_period() {
    let n = node().await;
    let id = n
        .start("sleeper", "sleeper:1", Limits::default(), vec![])
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    n.rt.stop_container(&id, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "stopped before the grace period"
    );
    assert_eq!(
        exit(&n.rt.container_status(&id).await.unwrap().state).0,
        137
    );
    n.rt.remove_container(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_preopened_directories() {
    let n = node().await;
    let shared = n.dir.path().join("empty-dir");
    std::fs::create_dir_all(&shared).unwrap();
    let mount = Mount {
        host_path: shared.clone(),
        container_path: "/data".into(),
        read_only: false,
        ..Default::default()
    };
    let id = n
        .start("writer", "writer:1", Limits::default(), vec![mount.clone()])
        .await;
    let state = n.wait(&id).await;
    assert_eq!(exit(&state).0, 0, "{state:?}");
    assert_eq!(
        std::fs::read_to_string(shared.join("out.txt")).unwrap(),
        "shared\n"
    );
    std::fs::remove_file(shared.join("out.txt")).unwrap();
    let ro = Mount {
        read_only: true,
        ..mount
    };
    let id = n
        .start("reader-only", "writer:1", Limits::default(), vec![ro])
        .await;
    assert_ne!(
        exit(&n.wait(&id).await).0,
        0,
        "a read-only volume refuses writes"
    );
    assert!(!shared.join("out.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_check_modules_and_cache_compiled_code() {
    let n = node().await;
    let err = n.rt.pull_image("text:1").await.unwrap_err().to_string();
    assert!(err.contains("not a WebAssembly module"), "{err}");
    let err =
        n.rt.pull_image("done@sha256:0000")
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("digest mismatch"), "{err}");
    let id = n.rt.pull_image("done:1").await.unwrap();
    let digest = id.strip_prefix("sha256:").unwrap();
    assert!(
        n.rt.pull_image(&format!("done@sha256:{digest}"))
            .await
            .is_ok()
    );
    assert!(
        n.dir
            .path()
            .join(format!("cache/modules/{digest}.wasm"))
            .exists()
    );
    let compiled: Vec<_> = walk(&n.dir.path().join("cache/compiled"));
    assert!(
        compiled
            .iter()
            .any(|p| p.ends_with(format!("{digest}.cwasm"))),
        "{compiled:?}"
    );
    assert!(matches!(
        n.rt.pull_image("missing:1").await,
        Err(Error::Pull { .. })
    ));
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = crate::SigningKey::from_bytes(&[1; 32]);
    let stranger = crate::SigningKey::from_bytes(&[2; 32]);
    let module = wat::parse_str(include_str!("fixtures/done.wat")).unwrap();
    let source = Arc::new(MemorySource::new());
    source.insert_signed(
        "good",
        module.clone(),
        Some(crate::sign_module(&publisher, &module).to_vec()),
    );
    source.insert_signed(
        "foreign",
        module.clone(),
        Some(crate::sign_module(&stranger, &module).to_vec()),
    );
    let mut tampered = module.clone();
    tampered.extend_from_slice(&[0, 4, b'n', b'o', b't', b'e']); // a custom section
    source.insert_signed(
        "tampered",
        tampered,
        Some(crate::sign_module(&publisher, &module).to_vec()),
    );
    source.insert("unsigned", module);
    let mut config = Config::new(dir.path(), 4);
    config.trusted_keys = vec![publisher.verifying_key()];
    config.require_signatures = true;
    let rt = WasmRuntime::new(config, source).unwrap();
    assert!(rt.pull_image("good:1").await.is_ok());
    for (image, why) in [
        ("foreign:1", "does not verify"),
        ("tampered:1", "does not verify"),
        ("unsigned:1", "not signed"),
    ] {
        let err = rt.pull_image(image).await.unwrap_err().to_string();
        assert!(err.contains(why), "{image}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_policies_are_checked_again_on_the_node() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let acme = crate::SigningKey::from_bytes(&[5; 32]);
    let stranger = crate::SigningKey::from_bytes(&[6; 32]);
    let module = wat::parse_str(include_str!("fixtures/done.wat")).unwrap();
    let source = Arc::new(MemorySource::new());
    source.insert_signed(
        "acme",
        module.clone(),
        Some(crate::sign_module(&acme, &module).to_vec()),
    );
    source.insert_signed(
        "foreign",
        module.clone(),
        Some(crate::sign_module(&stranger, &module).to_vec()),
    );
    source.insert("unsigned", module);
    let allowed = dir.path().join("srv");
    std::fs::create_dir_all(allowed.join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("etc"), allowed.join("escape")).unwrap();
    // The node itself allows any host path and no signatures: only the policy restricts.
    let mut config = Config::new(dir.path().join("cache"), 4);
    config.host_path_prefixes = vec![dir.path().to_path_buf()];
    let rt = WasmRuntime::new(config, source).unwrap();
    let policy = skiff_api::policy::WasmPolicy::parse(&serde_json::json!({
        "metadata": {"name": "tenant"},
        "spec": {
            "hostPaths": [allowed.display().to_string()],
            "publishers": [{"name": "acme", "publicKey":
                base64::engine::general_purpose::STANDARD.encode(acme.verifying_key().as_bytes())}],
        },
    }))
    .unwrap();
    let sandbox = rt
        .run_pod_sandbox(&PodSandboxConfig::default())
        .await
        .unwrap();
    let create = |image: &'static str, host: Option<PathBuf>| {
        let config = ContainerConfig {
            name: "c".into(),
            image: format!("{image}:1"),
            mounts: host
                .map(|p| Mount {
                    host_path: p,
                    container_path: "/data".into(),
                    source: MountSource::HostPath,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            log_path: dir.path().join("logs/c.log"),
            policies: vec![policy.clone()],
            ..Default::default()
        };
        let (rt, sandbox) = (&rt, &sandbox);
        async move {
            rt.pull_image(&config.image).await.unwrap();
            rt.create_container(sandbox, &config)
                .await
                .map_err(|e| e.to_string())
        }
    };
    assert!(create("acme", Some(allowed.join("data"))).await.is_ok());
    for (image, host, why) in [
        (
            "foreign",
            None,
            "violates WasmPolicy \"tenant\": module foreign:1: the module's signature does not verify with the key of acme",
        ),
        (
            "unsigned",
            None,
            "the module is not signed; the policy requires a signature by acme",
        ),
        (
            "acme",
            Some(dir.path().join("etc")),
            "is not allowed: the policy allows only",
        ),
        (
            "acme",
            Some(allowed.join("escape")),
            "is not allowed: the policy allows only",
        ),
    ] {
        let err = create(image, host).await.unwrap_err();
        assert!(err.contains(why), "{image}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_only_where_the_node_allows() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("srv/shared");
    let outside = dir.path().join("etc");
    std::fs::create_dir_all(allowed.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let source = Arc::new(MemorySource::new());
    source.insert(
        "writer",
        wat::parse_str(include_str!("fixtures/writer.wat")).unwrap(),
    );
    let make = |prefixes: Vec<PathBuf>| {
        let mut config = Config::new(dir.path().join("cache"), 4);
        config.host_path_prefixes = prefixes;
        WasmRuntime::new(config, source.clone()).unwrap()
    };
    let mount = |path: PathBuf| Mount {
        host_path: path,
        container_path: "/data".into(),
        source: MountSource::HostPath,
        ..Default::default()
    };
    let logs = dir.path().join("logs/w.log");
    async fn create(rt: &WasmRuntime, mount: Mount, log_path: &Path) -> Result<String> {
        rt.pull_image("writer:1").await.unwrap();
        let sandbox = rt
            .run_pod_sandbox(&PodSandboxConfig::default())
            .await
            .unwrap();
        let config = ContainerConfig {
            name: "w".into(),
            image: "writer:1".into(),
            mounts: vec![mount],
            log_path: log_path.into(),
            ..Default::default()
        };
        rt.create_container(&sandbox, &config).await
    }

    let closed = make(vec![]);
    let err = create(&closed, mount(allowed.clone()), &logs)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("this node allows no hostPath volumes"),
        "{err}"
    );

    let open = make(vec![allowed.clone()]);
    let id = create(&open, mount(allowed.join("sub")), &logs)
        .await
        .unwrap();
    open.start_container(&id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !allowed.join("sub/out.txt").exists() {
        assert!(
            Instant::now() < deadline,
            "the guest wrote nothing to the hostPath volume"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for escape in [outside.clone(), allowed.join("../../etc")] {
        let err = create(&open, mount(escape), &logs)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not allowed on this node (allowed: "),
            "{err}"
        );
    }
    std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
    let err = create(&open, mount(allowed.join("link")), &logs)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not allowed on this node"), "{err}");
}
