//! `skiff sim-nodes` against a real `skiff server`, driven with the real kubectl: fifty
//! simulated nodes register and heartbeat through the API, and the pods the scheduler binds to
//! them are reported Running and their deletions finished.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kc, Kubectl, Server};

/// A running `skiff sim-nodes`, killed on drop.
struct SimNodes {
    child: Child,
    log: std::path::PathBuf,
}

impl SimNodes {
    fn start(server: &Server, args: &[&str]) -> Self {
        let log = server.dir.path().join("sim-nodes.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("sim-nodes")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("skiff sim-nodes runs");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, sim: &SimNodes, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; sim-nodes log:\n{}",
            sim.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn simulated_nodes_register_heartbeat_and_run_the_pods_bound_to_them() {
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let watchers = || -> usize {
        kc.ok(&["get", "--raw", "/metrics"])
            .lines()
            .find_map(|l| l.strip_prefix("skiff_watch_cache_watchers "))
            .and_then(|n| n.trim().parse().ok())
            .expect("skiff_watch_cache_watchers in /metrics")
    };
    let before = watchers();
    let sim = SimNodes::start(
        &server,
        &[
            "--count",
            "50",
            "--cpu",
            "2",
            "--memory",
            "4Gi",
            "--pods",
            "10",
            "--labels",
            "topology.kubernetes.io/zone=sim-a",
            "--heartbeat",
            "1s",
        ],
    );

    let ready = || {
        kc.jsonpath(
            &["get", "nodes", "-l", "skiff.dev/simulated=true"],
            r#"{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        )
        .lines()
        .filter(|s| *s == "True")
        .count()
    };
    wait_for("50 Ready simulated nodes", &sim, || ready() == 50);
    // Each node watches its own pods, as an agent does: fifty more watches on the server.
    wait_for("a pod watch per node", &sim, || watchers() >= before + 50);
    let node = kc.jsonpath(
        &["get", "node", "sim-7"],
        "{.metadata.labels} {.status.allocatable.cpu} {.status.allocatable.memory} {.status.allocatable.pods}",
    );
    for expected in [
        r#""kubernetes.io/hostname":"sim-7""#,
        r#""kubernetes.io/os":"linux""#,
        r#""topology.kubernetes.io/zone":"sim-a""#,
        r#"} 2 4Gi 10"#,
    ] {
        assert!(node.contains(expected), "{expected} in {node}");
    }

    // Each node renews its own Lease, as an agent does.
    wait_for("50 node leases", &sim, || {
        kc.jsonpath(
            &["get", "leases", "-n", "kube-node-lease"],
            r#"{range .items[*]}{.metadata.name}{"\n"}{end}"#,
        )
        .lines()
        .filter(|l| l.starts_with("sim-"))
        .count()
            == 50
    });
    let renewed = || {
        kc.jsonpath(
            &["get", "lease", "sim-0", "-n", "kube-node-lease"],
            "{.spec.renewTime}",
        )
    };
    let first = renewed();
    wait_for("the lease of sim-0 to be renewed", &sim, || {
        renewed() != first
    });

    let pods: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "sim-pod-{i}", "labels": {{"app": "sim"}}}},
                    "spec": {{"containers": [{{"name": "main", "image": "hello:1.0",
                              "resources": {{"requests": {{"cpu": "100m", "memory": "64Mi"}}}}}}]}}}}"#
            )
        })
        .collect();
    let docs = pods.join("\n---\n");
    kc.ok_stdin(&["apply", "-f", "-"], Some(&docs));
    let report = || {
        kc.jsonpath(
            &["get", "pods", "-l", "app=sim"],
            r#"{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.status.podIP} {.status.containerStatuses[0].ready}{"\n"}{end}"#,
        )
    };
    wait_for("20 pods Running", &sim, || {
        report().lines().filter(|l| l.contains(" Running ")).count() == 20
    });
    for line in report().lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(fields[1].starts_with("sim-"), "bound to a sim node: {line}");
        assert!(fields[3].starts_with("10."), "a pod address: {line}");
        assert_eq!(fields[4], "true", "container ready: {line}");
    }
    let conditions = kc.jsonpath(
        &["get", "pod", "sim-pod-3"],
        r#"{range .status.conditions[*]}{.type}={.status} {end}"#,
    );
    for condition in [
        "Initialized=True",
        "Ready=True",
        "ContainersReady=True",
        "PodScheduled=True",
    ] {
        assert!(conditions.contains(condition), "{condition}: {conditions}");
    }

    // A deleted pod's node stops it and finishes the deletion, so kubectl's wait ends.
    kc.ok(&["delete", "pod", "sim-pod-0", "--timeout=30s"]);
    let left = kc.ok(&["get", "pods", "-l", "app=sim", "-o", "name"]);
    assert_eq!(left.lines().count(), 19, "{left}");
}
