//! Real agents beside a real server: `skiff agent` processes on loopback addresses, the example
//! Wasm modules built from source, and plain HTTP requests to what they serve.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Kc, Server};

/// A running `skiff agent`.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub args: Vec<String>,
    pub token: String,
}

impl Agent {
    pub fn start(server: &Server, name: &str, modules: &Path) -> Self {
        let flags = ["--module-dir".into(), modules.display().to_string()];
        Self::start_with(server, name, &flags)
    }

    pub fn start_with(server: &Server, name: &str, flags: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = std::fs::read_to_string(server.dir.path().join("node-token")).expect("token");
        let mut args: Vec<String> = ["agent", "--server", &server.url, "--node-name", name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !flags.iter().any(|f| f == "--node-ip") {
            args.extend(["--node-ip".to_string(), "127.0.0.1".to_string()]);
        }
        args.extend(
            ["--heartbeat", "1s", "--crash-backoff", "1s", "--port", "0"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push("--data-dir".into());
        args.push(dir.path().join("data").display().to_string());
        args.extend(flags.iter().cloned());
        let child = Self::spawn(&dir, &args, token.trim());
        Self {
            dir,
            child,
            args,
            token: token.trim().to_string(),
        }
    }

    pub fn spawn(dir: &tempfile::TempDir, args: &[String], token: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("agent.log"))
            .expect("log");
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .env("SKIFF_NODE_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("skiff agent runs")
    }

    /// kill -9 and start again on the same data directory, as a gateway reboot would.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir, &self.args, &self.token);
    }

    /// kill -9, as a node losing power.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The first log file of a pod's container, as the runtime wrote it.
    pub fn container_log(&self, pod: &str, container: &str) -> String {
        let pods = self.dir.path().join("data/pods");
        let Ok(entries) = std::fs::read_dir(&pods) else {
            return String::new();
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("default_{pod}_")) {
                let path = e.path().join(format!("logs/{container}/0.log"));
                return std::fs::read_to_string(path).unwrap_or_default();
            }
        }
        String::new()
    }

    pub fn credential(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/node.credential")).expect("credential")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example modules, built once for all tests of a run and shared: several builds of the
/// same sources at once have been seen to trip the wasm linker, so they take turns (`flock`)
/// and reuse a finished build of identical sources.
pub fn build_examples() -> PathBuf {
    use std::hash::{Hash as _, Hasher as _};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wasm");
    let mut sources: Vec<PathBuf> = ["", "http"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).expect("examples/wasm"))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "rs" || x == "c" || x == "sh")
        })
        .collect();
    sources.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in &sources {
        std::fs::read(path).expect("source").hash(&mut hasher);
    }
    let out = std::env::temp_dir().join(format!("skiff-examples-{:016x}", hasher.finish()));
    let script = format!(
        "test -e '{out}/.built' || {{ bash '{build}' '{out}' >/dev/null && touch '{out}/.built'; }}",
        out = out.display(),
        build = root.join("build.sh").display()
    );
    let lock = std::env::temp_dir().join("skiff-examples.lock");
    let status = Command::new("flock")
        .arg(&lock)
        .args(["bash", "-c", &script])
        .status()
        .expect("flock runs");
    assert!(status.success(), "examples/wasm/build.sh failed");
    out
}

pub fn wait_for(what: &str, agent: &Agent, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Ready condition's status of a node, as kubectl prints it.
pub fn node_ready(kc: &Kc, node: &str) -> String {
    let out = kc.run_stdin(
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until every node in `nodes` is Ready.
pub fn wait_ready(kc: &Kc, agent: &Agent, nodes: &[&str]) {
    for node in nodes {
        wait_for(&format!("{node} to be Ready"), agent, || {
            node_ready(kc, node) == "True"
        });
    }
}

/// The example modules `(image name, example)` as `wasi:http/proxy` components in a module
/// directory, as `<image name>.wasm` (image `<image name>:1.0`).
pub fn components(modules: &[(&str, &str)]) -> tempfile::TempDir {
    let built = build_examples();
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, example) in modules {
        let module = std::fs::read(built.join(format!("{example}.wasm"))).expect("built example");
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .expect("a reactor module")
            .adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
            )
            .expect("the proxy adapter")
            .validate(true)
            .encode()
            .expect("a component");
        std::fs::write(dir.path().join(format!("{name}.wasm")), component)
            .expect("write the component");
    }
    dir
}

/// One HTTP GET: the status code and the body (0 and the error when it cannot connect).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (0, e.to_string()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    // HTTP/1.0: the body comes unchunked, ending with the connection.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return (0, e.to_string());
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}
