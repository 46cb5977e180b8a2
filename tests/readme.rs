//! The README, followed as a new user would: `skiff up` (the run command) prints what the README
//! shows, its example pods run, the real kubectl works with the kubeconfig it wrote, a module
//! built from source runs, Ctrl-C stops it cleanly, and a second `skiff up` resumes.

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Kubectl;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The README's sample output of `skiff up`: the indented block that starts with "Skiff is up:".
fn documented_output() -> Vec<String> {
    let readme = readme();
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("    Skiff is up:"))
        .expect("the README shows what skiff up prints");
    lines[start..]
        .iter()
        .take_while(|l| l.starts_with("    "))
        .map(|l| l[4..].to_string())
        .collect()
}

/// A running `skiff up`, its stdout lines collected as they come.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    log: PathBuf,
}

impl Up {
    fn start(dir: &Path) -> Self {
        let log = dir.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["up", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("skiff up runs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            log,
        }
    }

    /// Reads stdout until a line equal to `want` (or, with `prefix`, starting with it).
    fn wait_for(&mut self, want: &str, prefix: bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Some(l) = self.seen.iter().find(|l| matches(l, want, prefix)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line, want, prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "skiff up did not print {want:?}; it printed:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }

    /// Ctrl-C, then the rest of stdout and the exit status.
    fn interrupt(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "skiff up did not stop after Ctrl-C; stderr:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.iter());
        (exit, self.seen.clone())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn matches(line: &str, want: &str, prefix: bool) -> bool {
    if prefix {
        line.starts_with(want)
    } else {
        line == want
    }
}

/// The real kubectl with `KUBECONFIG` set as the README says.
struct KubectlEnv {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl KubectlEnv {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .output()
            .expect("kubectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn eventually(&self, args: &[&str], what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.run(args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && ok(&stdout) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?}: {what}; last output: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn skiff_up_as_the_readme_says() {
    let readme = readme();
    // The README's commands that this test runs, so neither drifts from the other.
    for command in [
        "    cargo run --release -- up\n",
        "    scripts/test\n",
        "    kubectl get pods,nodes\n",
        "    kubectl logs ticker\n",
        "    kubectl logs shared-log -c tail\n",
        "    kubectl get modules\n",
        "    examples/wasm/build.sh\n",
        "    cargo run --release -- push examples/wasm/out/hello.wasm hello:1.0\n",
        "    kubectl run hello --image=hello:1.0 --env=GREETING=Ahoy\n",
        "    kubectl logs hello\n",
        "    kubectl apply -f examples/manifests/deployment.yaml\n",
        "    kubectl rollout status deployment/hello\n",
        "    kubectl scale deployment hello --replicas=5\n",
        "    cargo run --release -- get pods\n",
        "    cargo run --release -- describe pod ticker\n",
        "    cargo run --release -- logs shared-log -c tail\n",
        "    cargo run --release -- apply -f examples/manifests/pod.yaml\n",
        "    cargo run --release -- logs hello\n",
        "    cargo run --release -- delete -f examples/manifests/pod.yaml\n",
        "    cargo run --release -- run hi --image=hello:1.0 --env GREETING=Hi\n",
        "    cargo run --release -- logs hi\n",
    ] {
        assert!(
            readme.contains(command),
            "the README no longer says {command:?}"
        );
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("skiff");
    let mut up = Up::start(&dir);
    let first = up.wait_for("Skiff is up: the API at ", true);
    let url = first
        .strip_prefix("Skiff is up: the API at ")
        .and_then(|rest| rest.split(',').next())
        .expect("the URL")
        .to_string();
    let host = first
        .split_once("one node (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .expect("the node name")
        .0
        .to_string();
    // Every line the README shows is printed, with this run's address, node and directory.
    for line in documented_output() {
        let line = line
            .replace("https://127.0.0.1:6443", &url)
            .replace("yourhost", &host)
            .replace("/home/you/.local/share/skiff", &dir.display().to_string());
        up.wait_for(&line, false);
    }
    let kubeconfig = dir.join("kubeconfig");
    assert!(
        up.seen
            .contains(&format!("    export KUBECONFIG={}", kubeconfig.display()))
    );

    let kubectl = KubectlEnv {
        bin: Kubectl::version("33").bin,
        kubeconfig: kubeconfig.clone(),
        home: tempfile::tempdir().expect("tempdir"),
    };
    let pods = kubectl.ok(&["get", "pods,nodes"]);
    for want in [
        "pod/ticker",
        "pod/shared-log",
        "2/2",
        "Running",
        "Ready",
        &host,
    ] {
        assert!(pods.contains(want), "no {want} in:\n{pods}");
    }
    kubectl.eventually(&["logs", "ticker"], "no greeting and ticks", |l| {
        l.starts_with("Hello from a Wasm container!\n") && l.contains("tick 1\n")
    });
    kubectl.eventually(
        &["logs", "shared-log", "-c", "tail"],
        "the tail does not show the writer's lines",
        |l| l.contains("line 1\nline 2\n"),
    );
    let modules = kubectl.ok(&["get", "modules"]);
    for want in ["ticker", "log-writer", "log-tail"] {
        assert!(modules.contains(want), "no {want} in:\n{modules}");
    }
    let ticker_uid = kubectl.ok(&["get", "pod", "ticker", "-o", "jsonpath={.metadata.uid}"]);

    // A module of one's own: built from source, pushed, run.
    let out = tmp.path().join("wasm");
    let built = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wasm/build.sh"))
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("bash");
    assert!(built.success(), "examples/wasm/build.sh failed");
    let pushed = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("push")
        .arg(out.join("hello.wasm"))
        .arg("hello:1.0")
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("skiff push");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    kubectl.ok(&["run", "hello", "--image=hello:1.0", "--env=GREETING=Ahoy"]);
    kubectl.eventually(&["logs", "hello"], "no greeting from hello", |l| {
        l.starts_with("Ahoy from a Wasm container!\n")
    });
    kubectl.ok(&["delete", "pod", "hello", "--grace-period=1"]);

    // Skiff's own client commands (used as on a host without kubectl below).
    let skiff = |args: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("skiff runs");
        assert!(
            out.status.success(),
            "skiff {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A Deployment of the same module, rolled out and scaled.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests/deployment.yaml");
    kubectl.ok(&["apply", "-f", &manifest.display().to_string()]);
    let rolled = kubectl.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    kubectl.ok(&["scale", "deployment", "hello", "--replicas=5"]);
    kubectl.eventually(
        &[
            "get",
            "deployment",
            "hello",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        "five available replicas",
        |out| out == "5",
    );
    // skiff describe prints what kubectl describe prints (up to the events, whose ages move on).
    let before_events = |text: String| -> String {
        text.split("\nEvents:")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let described = skiff(&["describe", "deployment", "hello"]);
    assert_eq!(
        before_events(described.clone()),
        before_events(kubectl.ok(&["describe", "deployment", "hello"]))
    );
    assert!(
        described.contains("\nReplicas:               5 desired | 5 updated | 5 total | 5 available | 0 unavailable\n")
            && described.contains("ScalingReplicaSet"),
        "{described}"
    );
    kubectl.ok(&["delete", "deployment", "hello"]);

    // Skiff's own client commands, as on a host without kubectl.
    let pods = skiff(&["get", "pods"]);
    let ticker = pods
        .lines()
        .find(|l| l.starts_with("ticker "))
        .unwrap_or("");
    assert!(
        pods.starts_with("NAME ") && ticker.contains(" 1/1 ") && ticker.contains(" Running "),
        "{pods}"
    );
    // Events are recorded beside the work they tell of: wait until the scheduler's is in.
    kubectl.eventually(
        &[
            "get",
            "events",
            "--field-selector=involvedObject.name=ticker,reason=Scheduled",
        ],
        "no Scheduled event for ticker",
        |out| out.contains("Successfully assigned default/ticker to "),
    );
    let described = skiff(&["describe", "pod", "ticker"]);
    assert_eq!(
        before_events(described.clone()),
        before_events(kubectl.ok(&["describe", "pod", "ticker"]))
    );
    for want in [
        "Name:             ticker\n",
        "Status:           Running\n",
        "    Image:          ticker:1.0\n",
        "  Normal  Scheduled  ",
        "Successfully assigned default/ticker to ",
    ] {
        assert!(described.contains(want), "no {want:?} in:\n{described}");
    }
    assert!(skiff(&["logs", "shared-log", "-c", "tail"]).contains("line 1\n"));
    assert_eq!(
        skiff(&["apply", "-f", "examples/manifests/pod.yaml"]),
        "configmap/greeting created\npod/hello created\n"
    );
    kubectl.eventually(
        &["logs", "hello"],
        "no greeting from the applied pod",
        |l| l.starts_with("Ahoy from a Wasm container!\n"),
    );
    assert!(skiff(&["logs", "hello"]).starts_with("Ahoy from a Wasm container!\n"));
    assert_eq!(
        skiff(&["delete", "-f", "examples/manifests/pod.yaml"]),
        "configmap \"greeting\" deleted\npod \"hello\" deleted\n"
    );
    assert_eq!(
        skiff(&["run", "hi", "--image=hello:1.0", "--env", "GREETING=Hi"]),
        "pod/hi created\n"
    );
    kubectl.eventually(
        &["logs", "hi"],
        "no greeting from the pod skiff run made",
        |l| l.starts_with("Hi from a Wasm container!\n"),
    );
    assert!(skiff(&["logs", "hi"]).starts_with("Hi from a Wasm container!\n"));
    assert_eq!(
        kubectl.ok(&["get", "pod", "hi", "-o", "jsonpath={.metadata.labels.run}"]),
        "hi"
    );

    let (exit, printed) = up.interrupt();
    assert!(exit.success(), "skiff up exited with {exit}: {printed:?}");
    assert!(
        printed.contains(&"Stopped. `skiff up` on the same data directory resumes.".to_string()),
        "{printed:?}"
    );

    // The same directory again: it resumes, with the same pods.
    let mut up = Up::start(&dir);
    up.wait_for("pod/ticker unchanged", false);
    up.wait_for("pod/shared-log unchanged", false);
    up.wait_for("pod/ticker Running", false);
    up.wait_for("pod/shared-log Running", false);
    up.wait_for("Ready. Ctrl-C stops Skiff.", false);
    assert_eq!(
        kubectl.ok(&["get", "pod", "ticker", "-o", "jsonpath={.metadata.uid}"]),
        ticker_uid,
        "the pod was recreated"
    );
    let (exit, printed) = up.interrupt();
    assert!(exit.success(), "skiff up exited with {exit}: {printed:?}");
}
