//! A real server and real agents on loopback, driven with the real kubectl: pods bound to a
//! node run their Wasm modules, restart, report status and are deleted gracefully.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::agents::{
    Agent, build_examples, components, http_get, node_ready, wait_for, wait_ready,
};
use common::{Kc, Kubectl, Server};

fn pod(name: &str, node: &str, container: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{"nodeName": "{node}", "terminationGracePeriodSeconds": 1, {container}}}}}"#
    )
}

#[test]
fn agents_run_pods_restart_them_and_report_status() {
    let modules = build_examples();
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let edge1 = Agent::start(&server, "edge-1", &modules);
    let edge2 = Agent::start(&server, "edge-2", &modules);
    wait_ready(&kc, &edge1, &["edge-1", "edge-2"]);
    let labels = kc.ok(&["get", "node", "edge-1", "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        labels.contains("\"skiff.dev/runtimes\":\"wasm\""),
        "{labels}"
    );
    assert!(
        labels.contains("\"kubernetes.io/hostname\":\"edge-1\""),
        "{labels}"
    );
    let leases = kc.ok(&["get", "lease", "-n", "kube-node-lease"]);
    assert!(
        leases.contains("edge-1") && leases.contains("edge-2"),
        "{leases}"
    );

    // Env from a ConfigMap and a Secret reaches the guest.
    kc.ok(&[
        "create",
        "configmap",
        "greet",
        "--from-literal=GREETING=Ahoy",
    ]);
    kc.ok(&[
        "create",
        "secret",
        "generic",
        "words",
        "--from-literal=GREETING=Sesame",
    ]);
    let container = r#""containers": [{"name": "hello", "image": "hello:1.0",
        "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "greet", "key": "GREETING"}}}]}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("hello", "edge-1", container)),
    );
    let container = r#""containers": [{"name": "hello", "image": "hello:1.0",
        "envFrom": [{"secretRef": {"name": "words"}}]}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("secret-hello", "edge-2", container)),
    );
    wait_for("hello to run and greet", &edge1, || {
        edge1
            .container_log("hello", "hello")
            .contains("stdout F Ahoy from a Wasm container!")
    });
    wait_for("secret-hello to greet", &edge2, || {
        edge2
            .container_log("secret-hello", "hello")
            .contains("stdout F Sesame from a Wasm container!")
    });
    wait_for("hello to be reported Running", &edge1, || {
        kc.ok(&["get", "pod", "hello", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    // kubectl logs reaches the guest's output through the API server and the agent.
    wait_for("hello to tick", &edge1, || {
        kc.ok(&["logs", "hello"]).contains("tick 2")
    });
    let logs = kc.ok(&["logs", "hello"]);
    assert!(
        logs.starts_with("Ahoy from a Wasm container!\ntick 1\n"),
        "{logs}"
    );
    let tail = kc.ok(&["logs", "hello", "--tail=1", "--timestamps"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("Z tick "), "{tail}");
    let follow = kc.run_stdin(&["logs", "hello", "-f", "--request-timeout=3s"], None);
    let followed = String::from_utf8_lossy(&follow.stdout);
    assert!(
        followed.contains("tick 3"),
        "following shows new lines: {followed}"
    );
    wait_for("the node to list its cached module", &edge1, || {
        kc.ok(&[
            "get",
            "node",
            "edge-1",
            "-o",
            "jsonpath={.status.images[*].names}",
        ])
        .contains("hello:1.0")
    });
    let ready = kc.ok(&["get", "pod", "hello", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.podIP} {.status.containerStatuses[0].imageID}"]);
    // Each pod of a loopback node has its own loopback address.
    assert!(
        ready.starts_with("True 127.")
            && !ready.starts_with("True 127.0.0.1 ")
            && ready
                .split(' ')
                .nth(2)
                .is_some_and(|id| id.starts_with("sha256:")),
        "{ready}"
    );

    // A crashing container restarts with back-off; its exit code is kept in lastState.
    let container = r#""containers": [{"name": "crash", "image": "crash:1.0"}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("crash", "edge-1", container)),
    );
    wait_for("crash to restart twice", &edge1, || {
        kc.ok(&[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .parse::<u32>()
        .is_ok_and(|n| n >= 2)
    });
    let last = kc.ok(&["get", "pod", "crash", "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].lastState.terminated.reason}"]);
    assert_eq!(last, "3 Error");
    wait_for("the back-off event", &edge1, || {
        kc.ok(&["describe", "pod", "crash"])
            .contains("Back-off restarting failed container crash in pod crash")
    });
    let described = kc.ok(&["describe", "pod", "crash"]);
    for reason in ["Pulled", "Created", "Started", "BackOff"] {
        assert!(
            described.contains(reason),
            "describe shows {reason}: {described}"
        );
    }
    let previous = kc.ok(&["logs", "crash", "--previous"]);
    assert!(previous.contains("something went wrong"), "{previous}");

    // A memory limit ends in OOMKilled; a finite job succeeds.
    let container = r#""restartPolicy": "Never", "containers": [{"name": "hog", "image": "hog:1.0",
        "resources": {"limits": {"memory": "16Mi"}}}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("hog", "edge-2", container)),
    );
    let container = r#""restartPolicy": "Never", "containers": [{"name": "compute", "image": "compute:1.0",
        "env": [{"name": "LIMIT", "value": "1000"}]}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("compute", "edge-2", container)),
    );
    wait_for("hog to fail", &edge2, || {
        kc.ok(&["get", "pod", "hog", "-o", "jsonpath={.status.phase}"]) == "Failed"
    });
    let hog = kc.ok(&["get", "pod", "hog", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}"]);
    assert_eq!(hog, "OOMKilled 137");
    wait_for("compute to succeed", &edge2, || {
        kc.ok(&["get", "pod", "compute", "-o", "jsonpath={.status.phase}"]) == "Succeeded"
    });
    assert!(
        edge2
            .container_log("compute", "compute")
            .contains("primes below 1000: 168")
    );

    // Init containers run first, in order; the downward API reaches env.
    let container = r#""initContainers": [{"name": "prepare", "image": "compute:1.0", "env": [{"name": "LIMIT", "value": "100"}]}],
        "containers": [{"name": "hello", "image": "hello:1.0",
          "env": [{"name": "GREETING", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("init", "edge-2", container)),
    );
    wait_for("init's main container to greet", &edge2, || {
        String::from_utf8_lossy(&kc.run_stdin(&["logs", "init", "-c", "hello"], None).stdout)
            .contains("init from a Wasm container!")
    });
    let init = kc.ok(&["get", "pod", "init", "-o", "jsonpath={.status.initContainerStatuses[0].state.terminated.reason} {.status.conditions[?(@.type==\"Initialized\")].status}"]);
    assert_eq!(init, "Completed True");
    assert!(
        kc.ok(&["logs", "init", "-c", "prepare"])
            .contains("primes below 100: 25")
    );

    // Volumes: two containers share an emptyDir; a ConfigMap's keys become files.
    let container = r#""restartPolicy": "OnFailure", "volumes": [{"name": "shared", "emptyDir": {}}],
        "containers": [
          {"name": "writer", "image": "writer:1.0", "volumeMounts": [{"name": "shared", "mountPath": "/data"}]},
          {"name": "reader", "image": "reader:1.0", "volumeMounts": [{"name": "shared", "mountPath": "/data"}]}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("pair", "edge-1", container)),
    );
    wait_for("the reader to see the writer's lines", &edge1, || {
        String::from_utf8_lossy(&kc.run_stdin(&["logs", "pair", "-c", "reader"], None).stdout)
            .contains("read 3 lines")
    });
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "notes"}, "data": {"shared.txt": "one\ntwo\nthree\n"}}"#,
        ),
    );
    let container = r#""restartPolicy": "Never", "volumes": [{"name": "notes", "configMap": {"name": "notes"}}],
        "containers": [{"name": "reader", "image": "reader:1.0",
          "volumeMounts": [{"name": "notes", "mountPath": "/data", "readOnly": true}]}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("files", "edge-2", container)),
    );
    wait_for("the reader to read the ConfigMap's file", &edge2, || {
        kc.ok(&["get", "pod", "files", "-o", "jsonpath={.status.phase}"]) == "Succeeded"
    });
    assert!(
        kc.ok(&["logs", "files"])
            .contains("read 3 lines, newest: three")
    );

    // Pods that name no node go through the scheduler, as `kubectl run` makes them.
    kc.ok(&["run", "web", "--image=hello:1.0", "--env=GREETING=Hi"]);
    wait_for("web to be scheduled and run", &edge1, || {
        kc.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    wait_for("web's output", &edge1, || {
        kc.ok(&["logs", "web"])
            .contains("Hi from a Wasm container!")
    });
    let described = kc.ok(&["describe", "pod", "web"]);
    assert!(
        described.contains("Successfully assigned default/web to edge-"),
        "{described}"
    );
    let huge = r#"{"spec": {"containers": [{"name": "huge", "image": "hello:1.0", "resources": {"requests": {"cpu": "1000"}}}]}}"#;
    kc.ok(&[
        "run",
        "huge",
        "--image=hello:1.0",
        &format!("--overrides={huge}"),
    ]);
    wait_for("huge to be refused by the scheduler", &edge1, || {
        kc.ok(&[
            "get",
            "pod",
            "huge",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]) == "0/2 nodes are available: 2 Insufficient cpu."
    });
    assert!(
        kc.ok(&["describe", "pod", "huge"])
            .contains("FailedScheduling")
    );

    // Graceful deletion: the agent stops the pod and completes the deletion.
    kc.ok(&["delete", "pod", "hello", "--wait=false"]);
    wait_for("hello to be gone", &edge1, || {
        !kc.run_stdin(&["get", "pod", "hello"], None)
            .status
            .success()
    });

    // A node may write only what is its own.
    let credential = edge1.credential();
    let client = server.client();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let patch = |path: &str| {
        tokio.block_on(async {
            client
                .patch(format!("{}{path}", server.url))
                .bearer_auth(&credential)
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"metadata": {"labels": {"owned": "yes"}}}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(patch("/api/v1/nodes/edge-1"), 200);
    assert_eq!(patch("/api/v1/nodes/edge-2"), 403);
    assert_eq!(
        patch("/api/v1/namespaces/default/pods/secret-hello/status"),
        403
    );
    let (code, text) = tokio.block_on(async {
        let r = client
            .post(format!(
                "{}/api/v1/namespaces/default/configmaps",
                server.url
            ))
            .bearer_auth(&credential)
            .json(&serde_json::json!({"metadata": {"name": "sneaky"}}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(code, 403);
    let read_as = |credential: &str, path: &str| {
        tokio.block_on(async {
            client
                .get(format!("{}{path}", server.url))
                .bearer_auth(credential)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let words = "/api/v1/namespaces/default/secrets/words";
    assert_eq!(
        read_as(&edge2.credential(), words),
        200,
        "secret-hello on edge-2 names it"
    );
    assert_eq!(
        read_as(&credential, words),
        403,
        "no pod on edge-1 names it"
    );
    assert_eq!(
        read_as(&credential, "/api/v1/namespaces/default/secrets"),
        403,
        "nodes do not list secrets"
    );
    // Secrets have no subresources: such a path is not a way round the node authorizer.
    for sub in ["status", "scale", "log", "anything"] {
        assert_eq!(
            read_as(&credential, &format!("{words}/{sub}")),
            404,
            "{words}/{sub}"
        );
    }
    assert_eq!(
        read_as(
            &credential,
            "/api/v1/namespaces/default/pods/secret-hello/log"
        ),
        403,
        "a node reads the logs of its own pods only (secret-hello runs on edge-2)"
    );
    assert_eq!(read_as(&credential, "/api/v1/namespaces/default/pods"), 200);
    assert!(
        text.contains("User \\\"system:node:edge-1\\\" cannot create"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(modules);
}

fn skiff(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("skiff runs")
}

#[test]
fn modules_are_pushed_signed_and_pulled_by_agents() {
    let modules = build_examples();
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let module = |name: &str| modules.join(format!("{name}.wasm")).display().to_string();

    // Push, list, dedupe, refuse what is not Wasm.
    let pushed = skiff(&server, &["push", &module("hello"), "hello:1.0"]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&pushed.stdout)
            .contains("module.skiff.dev/hello.1.0 pushed: sha256:")
    );
    assert!(
        skiff(&server, &["push", &module("hello"), "hello:latest"])
            .status
            .success()
    );
    let listed = kc.ok(&["get", "modules"]);
    assert!(
        listed.contains("hello.1.0") && listed.contains("hello.latest"),
        "{listed}"
    );
    let digests = kc.ok(&["get", "modules", "-o", "jsonpath={.items[*].spec.digest}"]);
    let d: Vec<&str> = digests.split(' ').collect();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0], d[1], "same content, same digest");
    let blobs = std::fs::read_dir(server.dir.path().join("modules/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1, "stored once");
    // An HTTP function pushed as built (a preview 1 reactor module) is stored as a component.
    let http = skiff(&server, &["push", &module("hello-http"), "hello-http:1.0"]);
    assert!(
        http.status.success()
            && String::from_utf8_lossy(&http.stderr)
                .contains("wrapped into a wasi:http/proxy component"),
        "{}",
        String::from_utf8_lossy(&http.stderr)
    );
    let stored: Vec<Vec<u8>> = std::fs::read_dir(server.dir.path().join("modules/sha256"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        stored.iter().any(|b| b.starts_with(b"\0asm\x0d\0\x01\0")),
        "no component in the module store"
    );
    let not_wasm = server.dir.path().join("notes.txt");
    std::fs::write(&not_wasm, "hello").unwrap();
    let refused = skiff(&server, &["push", not_wasm.to_str().unwrap(), "notes:1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not a WebAssembly module"));

    // A signed module; a node that requires signatures runs it and refuses unsigned ones.
    let key = server.dir.path().join("publisher.key");
    let keygen = skiff(&server, &["keygen", key.to_str().unwrap()]);
    assert!(keygen.status.success());
    let public = String::from_utf8_lossy(&keygen.stdout).trim().to_string();
    let signed = skiff(
        &server,
        &[
            "push",
            &module("compute"),
            "compute:1.0",
            "--sign",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let signed_by = kc.ok(&[
        "get",
        "module",
        "compute.1.0",
        "-o",
        "jsonpath={.spec.signedBy}",
    ]);
    assert_eq!(signed_by, public);

    let plain = Agent::start_with(&server, "plain", &[]);
    let strict = Agent::start_with(
        &server,
        "strict",
        &[
            "--require-signatures".into(),
            "--trusted-key".into(),
            public,
        ],
    );
    let pod = |name: &str, node: &str, image: &str| {
        let container = format!(
            r#""restartPolicy": "Never", "containers": [{{"name": "c", "image": "{image}", "env": [{{"name": "LIMIT", "value": "100"}}]}}]"#
        );
        kc.ok_stdin(
            &["apply", "-f", "-"],
            Some(&self::pod(name, node, &container)),
        );
    };
    let phase = |name: &str| kc.ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
    let waiting = |name: &str| {
        kc.ok(&["get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"])
    };
    pod("from-store", "plain", "hello:1.0");
    wait_for("the pushed module to run", &plain, || {
        phase("from-store") == "Running"
    });
    wait_for("its output", &plain, || {
        kc.ok(&["logs", "from-store"])
            .contains("from a Wasm container!")
    });
    pod("unknown", "plain", "nothing:1.0");
    wait_for("an unknown module to fail its pull", &plain, || {
        let w = waiting("unknown");
        (w.starts_with("ErrImagePull") || w.starts_with("ImagePullBackOff"))
            && w.contains("module nothing:1.0 not found")
    });
    pod("signed", "strict", "compute:1.0");
    wait_for(
        "the signed module to run on the strict node",
        &strict,
        || phase("signed") == "Succeeded",
    );
    pod("unsigned", "strict", "hello:1.0");
    wait_for(
        "the strict node to refuse an unsigned module",
        &strict,
        || waiting("unsigned").contains("this node requires signed modules"),
    );
    let events = kc.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=unsigned",
    ]);
    assert!(
        events.contains("Failed") || events.contains("BackOff"),
        "{events}"
    );

    // Modules are removable.
    kc.ok(&["delete", "module", "hello.latest"]);
    assert!(!kc.ok(&["get", "modules"]).contains("hello.latest"));
    let _ = std::fs::remove_dir_all(modules);
}

#[test]
fn pods_keep_running_while_the_control_plane_is_down() {
    let modules = build_examples();
    let mut server = Server::start();
    server.pin_port();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let mut edge = Agent::start(&server, "edge", &modules);
    let container = r#""containers": [{"name": "hello", "image": "hello:1.0"}]"#;
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("hello", "edge", container)),
    );
    wait_for("hello to tick", &edge, || {
        edge.container_log("hello", "hello").contains("tick 1")
    });
    let uid = kc.ok(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"]);
    let started = "jsonpath={.status.containerStatuses[0].state.running.startedAt}";
    wait_for("hello to be reported running", &edge, || {
        !kc.ok(&["get", "pod", "hello", "-o", started]).is_empty()
    });
    let first_start = kc.ok(&["get", "pod", "hello", "-o", started]);
    // Start times have a resolution of a second.
    std::thread::sleep(Duration::from_millis(1100));
    let count =
        |edge: &Agent, what: &str| edge.container_log("hello", "hello").matches(what).count();

    // The control plane goes away: the pod keeps running.
    drop(kc);
    server.kill9();
    let ticks = count(&edge, "tick");
    wait_for("ticks while the control plane is down", &edge, || {
        count(&edge, "tick") >= ticks + 2
    });

    // The gateway reboots while the control plane is still down: the agent brings the pod back.
    assert_eq!(count(&edge, "from a Wasm container!"), 1);
    edge.restart();
    wait_for(
        "the pod to come back without the control plane",
        &edge,
        || count(&edge, "from a Wasm container!") == 2,
    );

    // The link returns: status is reported again and the pod is not recreated.
    server.launch(vec![]);
    let kc = Kc::new(Kubectl::version("33"), &server);
    wait_for("the node to report the restarted container", &edge, || {
        let now = kc
            .run_stdin(&["get", "pod", "hello", "-o", started], None)
            .stdout;
        !now.is_empty() && now != first_start.as_bytes()
    });
    assert_eq!(
        kc.ok(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"]),
        uid
    );
    let ticks = count(&edge, "tick");
    wait_for("more ticks after the resync", &edge, || {
        count(&edge, "tick") >= ticks + 2
    });
    assert_eq!(
        count(&edge, "from a Wasm container!"),
        2,
        "the running pod was not restarted on resync"
    );
    let _ = std::fs::remove_dir_all(modules);
}

/// A scheduled pod (no `nodeName`) with extra spec fields and labels.
fn scheduled(name: &str, labels: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "labels": {{{labels}}}}},
            "spec": {{"terminationGracePeriodSeconds": 1,
                      "containers": [{{"name": "main", "image": "hello:1.0"}}]{spec}}}}}"#
    )
}

#[test]
fn the_scheduler_follows_selectors_taints_and_anti_affinity_on_real_nodes() {
    let modules = build_examples();
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let edge1 = Agent::start(&server, "edge-1", &modules);
    let _edge2 = Agent::start(&server, "edge-2", &modules);
    wait_ready(&kc, &edge1, &["edge-1", "edge-2"]);
    kc.ok(&["label", "node", "edge-2", "disk=ssd"]);
    kc.ok(&["taint", "node", "edge-1", "dedicated=edge:NoSchedule"]);
    let node_of = |pod: &str| kc.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]);
    let running_on = |pod: &str, node: &str| {
        wait_for(&format!("{pod} to run on {node}"), &edge1, || {
            kc.ok(&[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.spec.nodeName}/{.status.phase}",
            ]) == format!("{node}/Running")
        });
    };
    let refused = |pod: &str, message: &str| {
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while last != message {
            assert!(
                Instant::now() < deadline,
                "{pod} was not refused with {message:?}; its PodScheduled message: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
            last = kc.ok(&[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
            ]);
        }
    };
    let tolerate = r#", "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}]"#;

    // nodeSelector, and the taint keeps untolerating pods off edge-1.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&scheduled(
            "picky",
            "",
            r#", "nodeSelector": {"disk": "ssd"}"#,
        )),
    );
    kc.ok_stdin(&["apply", "-f", "-"], Some(&scheduled("plain", "", "")));
    running_on("picky", "edge-2");
    running_on("plain", "edge-2");
    let pinned = format!(r#"{tolerate}, "nodeSelector": {{"kubernetes.io/hostname": "edge-1"}}"#);
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&scheduled("tolerant", "", &pinned)),
    );
    running_on("tolerant", "edge-1");

    // Required anti-affinity puts one replica per node, and a third nowhere.
    let anti = format!(
        r#"{tolerate}, "affinity": {{"podAntiAffinity": {{"requiredDuringSchedulingIgnoredDuringExecution": [
            {{"labelSelector": {{"matchLabels": {{"app": "spread"}}}}, "topologyKey": "kubernetes.io/hostname"}}]}}}}"#
    );
    for name in ["spread-a", "spread-b"] {
        kc.ok_stdin(
            &["apply", "-f", "-"],
            Some(&scheduled(name, r#""app": "spread""#, &anti)),
        );
        wait_for(&format!("{name} to be bound"), &edge1, || {
            !node_of(name).is_empty()
        });
    }
    assert_ne!(node_of("spread-a"), node_of("spread-b"));
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&scheduled("spread-c", r#""app": "spread""#, &anti)),
    );
    refused(
        "spread-c",
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.",
    );
    let events = kc.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=spread-c",
    ]);
    assert!(events.contains("FailedScheduling"), "{events}");

    // Too big for any node: each node says why.
    let huge = r#", "containers": [{"name": "main", "image": "hello:1.0", "resources": {"requests": {"cpu": "1000"}}}]"#;
    let mut big = scheduled("huge", "", "");
    big = big.replace(
        r#""containers": [{"name": "main", "image": "hello:1.0"}]"#,
        &huge[2..],
    );
    kc.ok_stdin(&["apply", "-f", "-"], Some(&big));
    refused(
        "huge",
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: edge}.",
    );

    // A replica going away lets the waiting one in, on the node it freed.
    let freed = node_of("spread-a");
    kc.ok(&["delete", "pod", "spread-a", "--wait=true"]);
    running_on("spread-c", &freed);
    let described = kc.ok(&["describe", "pod", "spread-c"]);
    assert!(
        described.contains(&format!(
            "Successfully assigned default/spread-c to {freed}"
        )),
        "{described}"
    );
}

#[test]
fn deployments_roll_out_scale_undo_and_heal_on_a_real_node() {
    let modules = build_examples();
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let edge1 = Agent::start(&server, "edge-1", &modules);
    wait_ready(&kc, &edge1, &["edge-1"]);
    let rolled_out = |what: &str| {
        let out = kc.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(
            out.contains("successfully rolled out"),
            "{what}: {out}\n{}",
            edge1.log()
        );
    };
    let running_pods = || {
        kc.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "name",
        ])
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };

    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"terminationGracePeriodSeconds": 1,
                                               "containers": [{"name": "hello", "image": "hello:1.0"}]}}}}"#,
        ),
    );
    rolled_out("the first rollout");
    let rs = kc.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
    let first_rs = rs.trim().to_string();
    assert!(first_rs.starts_with("replicaset.apps/web-"), "{first_rs}");
    assert_eq!(
        kc.ok(&[
            "get",
            &first_rs,
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision} {.status.readyReplicas}"
        ]),
        "1 3"
    );

    // A deleted replica comes back.
    let pods = running_pods();
    assert_eq!(pods.len(), 3, "{pods:?}");
    kc.ok(&["delete", &pods[0], "--wait=true"]);
    wait_for("the replica to be replaced", &edge1, || {
        let now = running_pods();
        now.len() == 3 && !now.contains(&pods[0])
    });
    let events = kc.ok(&["get", "events", "--field-selector=reason=SuccessfulCreate"]);
    assert!(events.contains("Created pod: web-"), "{events}");

    // Scaling.
    kc.ok(&["scale", "deployment/web", "--replicas=4"]);
    rolled_out("scaling up");
    assert_eq!(running_pods().len(), 4);

    // A rolling update that may never drop below 4 available replicas.
    kc.ok(&[
        "patch",
        "deployment/web",
        "-p",
        r#"{"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}"#,
    ]);
    kc.ok(&["set", "env", "deployment/web", "GREETING=Hey"]);
    let mut lowest = i64::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = kc.ok(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.status.availableReplicas} {.status.updatedReplicas} {.status.replicas}",
        ]);
        let n: Vec<i64> = status
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        lowest = lowest.min(n[0]);
        if n == [4, 4, 4] {
            break;
        }
        assert!(Instant::now() < deadline, "rollout stuck at {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lowest, 4, "availability dropped during the rolling update");
    rolled_out("the rolling update");
    let history = kc.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    let env = |what| {
        kc.ok(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env}",
        ])
        .contains(what)
    };
    assert!(env("Hey"));

    // Undo puts the first template back, as revision 3.
    kc.ok(&["rollout", "undo", "deployment/web"]);
    rolled_out("the undo");
    assert!(!env("Hey"));
    assert_eq!(
        kc.ok(&[
            "get",
            &first_rs,
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision} {.spec.replicas}"
        ]),
        "3 4"
    );

    // A paused deployment starts no rollout until resumed.
    kc.ok(&["rollout", "pause", "deployment/web"]);
    kc.ok(&["set", "env", "deployment/web", "GREETING=Later"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        kc.ok(&["get", "rs", "-l", "app=web", "-o", "name"])
            .lines()
            .count(),
        2
    );
    kc.ok(&["rollout", "resume", "deployment/web"]);
    rolled_out("the resumed rollout");
    assert_eq!(
        kc.ok(&["get", "rs", "-l", "app=web", "-o", "name"])
            .lines()
            .count(),
        3
    );
    let described = kc.ok(&["describe", "deployment", "web"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");

    // Deleting the deployment removes its ReplicaSets and pods.
    kc.ok(&["delete", "deployment", "web"]);
    wait_for("the deployment's pods to go", &edge1, || {
        kc.ok(&["get", "pods,rs", "-l", "app=web", "-o", "name"])
            .is_empty()
    });

    // A ReplicationController keeps its replicas too.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
                "spec": {"replicas": 2, "selector": {"app": "rc"},
                         "template": {"metadata": {"labels": {"app": "rc"}},
                                      "spec": {"containers": [{"name": "main", "image": "hello:1.0"}]}}}}"#,
        ),
    );
    wait_for("the rc's replicas to be ready", &edge1, || {
        kc.ok(&["get", "rc", "rc", "-o", "jsonpath={.status.readyReplicas}"]) == "2"
    });
}

#[test]
fn a_lost_nodes_pods_come_back_on_the_survivors_unless_it_is_autonomous() {
    let modules = build_examples();
    let server = Server::start_with(&[
        "--node-monitor-grace-period",
        "3s",
        "--default-unreachable-toleration-seconds",
        "2",
        "--default-not-ready-toleration-seconds",
        "2",
    ]);
    let kc = Kc::new(Kubectl::version("33"), &server);
    let edge1 = Agent::start(&server, "edge-1", &modules);
    let mut edge2 = Agent::start(&server, "edge-2", &modules);
    let mut edge3 = Agent::start(&server, "edge-3", &modules);
    wait_ready(&kc, &edge1, &["edge-1", "edge-2", "edge-3"]);
    kc.ok(&["label", "node", "edge-2", "skiff.dev/autonomous=true"]);
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"terminationGracePeriodSeconds": 1,
                                               "topologySpreadConstraints": [{"maxSkew": 1,
                                                   "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": {"app": "web"}}}],
                                               "containers": [{"name": "hello", "image": "hello:1.0"}]}}}}"#,
        ),
    );
    let out = kc.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let placement = || {
        kc.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
    };
    let before = placement();
    for node in ["edge-1", "edge-2", "edge-3"] {
        assert!(before.contains(&format!(" {node} Running")), "{before}");
    }
    let on_edge2: String = before
        .lines()
        .find(|l| l.contains(" edge-2 "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();

    // Two nodes lose power at once; edge-2 is autonomous.
    let lost = Instant::now();
    edge2.kill();
    edge3.kill();
    wait_for("edge-3's replica to be replaced on edge-1", &edge1, || {
        placement()
            .lines()
            .filter(|l| l.contains(" edge-1 Running") && !l.ends_with('Z'))
            .count()
            == 2
    });
    let failover = lost.elapsed();
    eprintln!(
        "failover: edge-3's replica Running again on edge-1 {:.1} s after the node was killed \
         (--node-monitor-grace-period 3s, --default-unreachable-toleration-seconds 2, heartbeat 1s)",
        failover.as_secs_f64()
    );
    let ready = |node: &str| node_ready(&kc, node);
    assert_eq!(ready("edge-3"), "Unknown");
    assert_eq!(ready("edge-2"), "Unknown");
    let taints = |node: &str| kc.ok(&["get", "node", node, "-o", "jsonpath={.spec.taints}"]);
    assert!(
        taints("edge-3").contains("NoExecute"),
        "{}",
        taints("edge-3")
    );
    let edge2_taints = taints("edge-2");
    assert!(
        edge2_taints.contains("node.kubernetes.io/unreachable")
            && !edge2_taints.contains("NoExecute"),
        "{edge2_taints}"
    );
    // The autonomous node's pod was not evicted, well past its toleration.
    std::thread::sleep(Duration::from_secs(3));
    let after = placement();
    let kept = after
        .lines()
        .find(|l| l.starts_with(&on_edge2))
        .unwrap_or("");
    assert!(kept.ends_with(" edge-2 Running "), "{after}");

    // edge-3 comes back: it is Ready again and its taints are lifted.
    edge3.restart();
    wait_for("edge-3 to be Ready again", &edge1, || {
        ready("edge-3") == "True"
    });
    wait_for("edge-3's taints to be lifted", &edge1, || {
        !taints("edge-3").contains("node.kubernetes.io/unreachable")
    });
}

#[test]
fn jobs_complete_fail_at_their_backoff_limit_and_cronjobs_fire_on_a_real_node() {
    let modules = build_examples();
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let edge1 = Agent::start(&server, "edge-1", &modules);
    wait_ready(&kc, &edge1, &["edge-1"]);
    let fail = |what: &str| -> ! {
        panic!(
            "{what}\njobs:\n{}\npods:\n{}\nagent log:\n{}",
            kc.ok(&["get", "jobs", "-o", "yaml"]),
            kc.ok(&["get", "pods", "-o", "wide"]),
            edge1.log()
        )
    };
    let wait = |job: &str, condition: &str| {
        let out = kc.run_stdin(
            &[
                "wait",
                &format!("--for=condition={condition}"),
                &format!("job/{job}"),
                "--timeout=90s",
            ],
            None,
        );
        if !out.status.success() {
            fail(&format!(
                "job/{job} is not {condition}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    };

    // The cronjob first: its first minute passes while the jobs run.
    kc.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=compute:1.0",
        "--schedule=* * * * *",
    ]);

    // A job that completes.
    kc.ok(&["create", "job", "done", "--image=compute:1.0"]);
    wait("done", "complete");
    let table = kc.ok(&["get", "job", "done"]);
    assert!(
        table.contains("Complete") && table.contains("1/1"),
        "{table}"
    );
    assert_eq!(
        kc.jsonpath(
            &["get", "job", "done"],
            "{.status.succeeded} {.status.conditions[?(@.type==\"Complete\")].reason}"
        ),
        "1 CompletionsReached"
    );
    let logs = kc.ok(&["logs", "job/done"]);
    assert!(logs.contains("primes below 100000: 9592"), "{logs}");
    let events = kc.ok(&["get", "events", "--field-selector=involvedObject.name=done"]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("Completed"),
        "{events}"
    );

    // A job whose pods fail stops after backoffLimit + 1 failures.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"},
                "spec": {"backoffLimit": 1,
                         "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                               "containers": [{"name": "crash", "image": "crash:1.0"}]}}}}"#,
        ),
    );
    // An Indexed job, deleted with its pods a few seconds after it finished.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "idx"},
                "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                         "ttlSecondsAfterFinished": 3,
                         "template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "compute", "image": "compute:1.0",
                                                               "env": [{"name": "LIMIT", "value": "1000"}]}]}}}}"#,
        ),
    );
    wait("idx", "complete");
    assert_eq!(
        kc.jsonpath(
            &["get", "job", "idx"],
            "{.status.completedIndexes} {.status.succeeded}"
        ),
        "0-2 3"
    );
    let pods = kc.jsonpath(
        &["get", "pods", "-l", "job-name=idx"],
        "{range .items[*]}{.metadata.name} {.metadata.labels.batch\\.kubernetes\\.io/job-completion-index}{\"\\n\"}{end}",
    );
    let mut indexes: Vec<&str> = pods
        .lines()
        .map(|l| {
            let (name, index) = l.split_once(' ').expect("name and index");
            assert!(name.starts_with(&format!("idx-{index}-")), "{pods}");
            index
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"], "{pods}");
    wait_for(
        "the finished indexed job and its pods to go",
        &edge1,
        || {
            kc.ok(&["get", "jobs,pods", "-l", "job-name=idx", "-o", "name"])
                .is_empty()
                && !kc
                    .ok(&["get", "jobs", "-o", "name"])
                    .contains("job.batch/idx")
        },
    );

    wait("bad", "failed");
    assert_eq!(
        kc.jsonpath(
            &["get", "job", "bad"],
            "{.status.failed} {.status.conditions[?(@.type==\"Failed\")].reason}"
        ),
        "2 BackoffLimitExceeded"
    );
    assert_eq!(
        kc.ok(&["get", "pods", "-l", "job-name=bad", "-o", "name"])
            .lines()
            .count(),
        2
    );
    let table = kc.ok(&["get", "job", "bad"]);
    assert!(table.contains("Failed") && table.contains("0/1"), "{table}");

    // The cronjob fired on a minute boundary and its job completed.
    let deadline = Instant::now() + Duration::from_secs(130);
    let fired = loop {
        let status = kc.jsonpath(
            &["get", "cronjob", "tick"],
            "{.status.lastScheduleTime} {.status.lastSuccessfulTime}",
        );
        if status.split_whitespace().count() == 2 {
            break status;
        }
        if Instant::now() > deadline {
            fail(&format!("the cronjob did not fire and succeed: {status}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        fired.starts_with(|c: char| c.is_ascii_digit()) && fired.contains(":00Z"),
        "{fired}"
    );
    let jobs = kc.jsonpath(
        &["get", "jobs"],
        "{range .items[?(@.metadata.ownerReferences[0].name==\"tick\")]}{.metadata.name} {.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}{\"\\n\"}{end}",
    );
    let first = jobs
        .lines()
        .next()
        .unwrap_or_else(|| fail("no job of the cronjob"));
    let (name, scheduled) = first.split_once(' ').expect("name and timestamp");
    let minutes: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| fail(&format!("job name {name}")));
    assert!(minutes > 28_000_000, "{name}");
    assert!(scheduled.contains(":00"), "{first}");
    let table = kc.ok(&["get", "cronjob", "tick"]);
    assert!(table.contains("* * * * *"), "{table}");
}

/// A probe target the test controls: answers `GET /ready` and `GET /live` with the status
/// codes it is set to.
struct Health {
    port: u16,
    ready: std::sync::Arc<std::sync::atomic::AtomicU16>,
    live: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Health {
    fn serve() -> Self {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::{AtomicU16, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let ready = std::sync::Arc::new(AtomicU16::new(500));
        let live = std::sync::Arc::new(AtomicU16::new(200));
        let (r, l) = (ready.clone(), live.clone());
        // Lives as long as the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 2048];
                let n = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let code = if request.starts_with("GET /ready ") {
                    r.load(Ordering::SeqCst)
                } else if request.starts_with("GET /live ") {
                    l.load(Ordering::SeqCst)
                } else {
                    404
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self { port, ready, live }
    }

    fn set(which: &std::sync::atomic::AtomicU16, code: u16) {
        which.store(code, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn probes_gate_readiness_and_endpoints_and_restart_unhealthy_containers_on_a_real_node() {
    let modules = build_examples();
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let edge1 = Agent::start(&server, "edge-1", &modules);
    let health = Health::serve();

    // Exec probes cannot run in a Wasm container: refused, naming the field.
    let exec = pod(
        "exec",
        "edge-1",
        r#""containers": [{"name": "hello", "image": "hello:1.0",
            "livenessProbe": {"exec": {"command": ["true"]}}}]"#,
    );
    let err = kc.fails_stdin(&["apply", "-f", "-"], Some(&exec));
    assert!(
        err.contains(
            "spec.containers[0].livenessProbe.exec: Forbidden: exec probes are not supported"
        ),
        "{err}"
    );

    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}"#,
        ),
    );
    let probed = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "probed", "labels": {{"app": "web"}}}},
            "spec": {{"nodeName": "edge-1", "terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "hello", "image": "hello:1.0",
                "ports": [{{"name": "http", "containerPort": 8080}}],
                "readinessProbe": {{"httpGet": {{"host": "127.0.0.1", "port": {port}, "path": "/ready"}},
                                    "periodSeconds": 1, "failureThreshold": 1}},
                "livenessProbe": {{"httpGet": {{"host": "127.0.0.1", "port": {port}, "path": "/live"}},
                                   "periodSeconds": 1, "failureThreshold": 2}}}}]}}}}"#,
        port = health.port
    );
    kc.ok_stdin(&["apply", "-f", "-"], Some(&probed));
    let field = |path: &str| kc.jsonpath(&["get", "pod", "probed"], path);
    let ready_condition = || field("{.status.conditions[?(@.type==\"Ready\")].status}");

    // Running, but its readiness probe fails: not Ready, and listed as not ready.
    wait_for("the pod running, not ready", &edge1, || {
        field("{.status.phase}") == "Running"
            && kc
                .jsonpath(
                    &["get", "endpoints", "web"],
                    "{.subsets[*].notReadyAddresses[*].targetRef.name}",
                )
                .contains("probed")
    });
    assert_eq!(ready_condition(), "False");
    assert_eq!(field("{.status.containerStatuses[0].ready}"), "false");
    assert_eq!(
        field("{.status.conditions[?(@.type==\"ContainersReady\")].status}"),
        "False"
    );
    let table = kc.ok(&["get", "endpoints", "web"]);
    assert!(!table.contains(":8080"), "{table}");
    let events = || {
        kc.ok(&[
            "get",
            "events",
            "--field-selector=involvedObject.name=probed",
        ])
    };
    wait_for("a readiness failure event", &edge1, || {
        events().contains("Readiness probe failed: HTTP probe failed with statuscode: 500")
    });

    // The probe passes: Ready, and an endpoint of the Service.
    Health::set(&health.ready, 200);
    wait_for("the pod ready", &edge1, || ready_condition() == "True");
    assert_eq!(field("{.status.containerStatuses[0].ready}"), "true");
    wait_for("the pod in the endpoints", &edge1, || {
        kc.ok(&["get", "endpoints", "web"]).contains(":8080")
    });
    let slices = kc.jsonpath(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
        "{.items[*].endpoints[*].conditions.ready} {.items[*].ports[*].port}",
    );
    assert_eq!(slices, "true 8080");
    let table = kc.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    assert!(
        table.contains("IPv4") && table.contains("8080") && table.contains("127."),
        "{table}"
    );

    // It fails again: out of rotation.
    Health::set(&health.ready, 503);
    wait_for("the pod not ready again", &edge1, || {
        ready_condition() == "False" && !kc.ok(&["get", "endpoints", "web"]).contains(":8080")
    });
    Health::set(&health.ready, 200);
    wait_for("the pod ready again", &edge1, || {
        ready_condition() == "True"
    });
    assert_eq!(field("{.status.containerStatuses[0].restartCount}"), "0");

    // Liveness fails twice in a row: the container is killed and restarted.
    Health::set(&health.live, 500);
    wait_for("a restart for liveness", &edge1, || {
        field("{.status.containerStatuses[0].restartCount}") != "0"
    });
    Health::set(&health.live, 200);
    let events = events();
    assert!(
        events.contains("Liveness probe failed: HTTP probe failed with statuscode: 500")
            && events.contains("Container hello failed liveness probe, will be restarted"),
        "{events}"
    );
    assert_eq!(
        field("{.status.containerStatuses[0].lastState.terminated.exitCode}"),
        "137"
    );
    // The new attempt is probed afresh and becomes ready again.
    wait_for("the restarted container ready", &edge1, || {
        ready_condition() == "True"
            && !field("{.status.containerStatuses[0].state.running.startedAt}").is_empty()
    });
    wait_for("back in the endpoints", &edge1, || {
        kc.ok(&["get", "endpoints", "web"]).contains(":8080")
    });

    // A startup probe holds the container unstarted (and unready) until its port answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let slow = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "slow", "labels": {{"app": "web"}}}},
            "spec": {{"nodeName": "edge-1", "terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "hello", "image": "hello:1.0",
                "ports": [{{"name": "http", "containerPort": 8080}}],
                "startupProbe": {{"tcpSocket": {{"host": "127.0.0.1", "port": {port}}},
                                  "periodSeconds": 1, "failureThreshold": 600}}}}]}}}}"#
    );
    kc.ok_stdin(&["apply", "-f", "-"], Some(&slow));
    let slow_field = |path: &str| kc.jsonpath(&["get", "pod", "slow"], path);
    wait_for("the slow pod running, not started", &edge1, || {
        slow_field("{.status.phase}") == "Running"
            && kc
                .ok(&["get", "events", "--field-selector=involvedObject.name=slow"])
                .contains("Startup probe failed: dial tcp")
    });
    assert_eq!(
        slow_field("{.status.containerStatuses[0].started}"),
        "false"
    );
    assert_eq!(slow_field("{.status.containerStatuses[0].ready}"), "false");
    let open = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    wait_for("the slow pod started and ready", &edge1, || {
        slow_field("{.status.containerStatuses[0].started}") == "true"
            && slow_field("{.status.conditions[?(@.type==\"Ready\")].status}") == "True"
    });
    drop(open);
    wait_for("both pods in the endpoints", &edge1, || {
        kc.jsonpath(
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].targetRef.name}",
        )
        .split_whitespace()
        .count()
            == 2
    });

    // Deleting the pods empties the endpoints.
    kc.ok(&["delete", "pod", "probed", "slow"]);
    wait_for("no endpoints", &edge1, || {
        kc.ok(&["get", "endpoints", "web"]).contains("<none>")
    });
}

/// The HTTP function example as a `wasi:http/proxy` component, alone in a module directory as
/// `web.wasm` (image `web:1.0`).
fn http_component_dir() -> tempfile::TempDir {
    components(&[("web", "hello-http")])
}

#[test]
fn a_nodeport_serves_an_http_function_from_every_node_across_its_replicas() {
    let components = http_component_dir();
    let server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let ips = ["127.0.0.11", "127.0.0.12"];
    let agents: Vec<Agent> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let flags = [
                "--module-dir".to_string(),
                components.path().display().to_string(),
                "--node-ip".to_string(),
                ip.to_string(),
            ];
            Agent::start_with(&server, &format!("edge-{}", i + 1), &flags)
        })
        .collect();
    wait_ready(&kc, &agents[0], &["edge-1", "edge-2"]);

    // A requested node port that another Service holds is refused, as upstream does.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "selector": {"app": "web"},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}"#,
        ),
    );
    let node_port = kc.jsonpath(&["get", "svc", "web"], "{.spec.ports[0].nodePort}");
    let port: u16 = node_port.parse().expect("an allocated node port");
    assert!((30000..=32767).contains(&port), "{port}");
    let taken = format!(
        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "other"}},
            "spec": {{"type": "NodePort", "ports": [{{"port": 80, "nodePort": {port}}}]}}}}"#
    );
    let err = kc.fails_stdin(&["apply", "-f", "-"], Some(&taken));
    assert!(err.contains("provided port is already allocated"), "{err}");

    // Two replicas of the function, one per node, both on containerPort 8080.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1,
                      "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                      "containers": [{"name": "web", "image": "web:1.0",
                        "ports": [{"name": "http", "containerPort": 8080}]}]}}}}"#,
        ),
    );
    let addresses = || {
        kc.jsonpath(
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].ip}",
        )
    };
    wait_for("two ready endpoints", &agents[0], || {
        addresses().split_whitespace().count() == 2
    });

    // Every node answers, from the pods of both nodes.
    for ip in ips {
        let addr = format!("{ip}:{port}");
        wait_for(&format!("the NodePort on {addr}"), &agents[0], || {
            http_get(&addr, "/warmup").0 == 200
        });
        for i in 0..10 {
            let path = format!("/spread-{ip}-{i}");
            let (code, body) = http_get(&addr, &path);
            assert_eq!(code, 200, "{body}");
            assert_eq!(
                body,
                format!("Hello from a Wasm function! You asked for GET {path}\n")
            );
        }
    }
    // Each pod serves on its own address too.
    for pod_ip in addresses().split_whitespace() {
        assert_eq!(http_get(&format!("{pod_ip}:8080"), "/direct").0, 200);
    }
    let pods = kc.jsonpath(
        &["get", "pods", "-l", "app=web"],
        r#"{range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}"#,
    );
    let mut served = Vec::new();
    for line in pods.lines() {
        let (name, node) = line.split_once(' ').expect("name and node");
        let agent = &agents[if node == "edge-1" { 0 } else { 1 }];
        served.push(
            agent
                .container_log(name, "web")
                .matches("GET /spread-")
                .count(),
        );
    }
    assert_eq!(served.len(), 2, "{pods}");
    assert!(
        served.iter().all(|n| *n >= 5) && served.iter().sum::<usize>() == 20,
        "requests per replica: {served:?}"
    );

    // No replicas: no endpoints, and the NodePort stops answering 200.
    kc.ok(&["scale", "deployment/web", "--replicas=0"]);
    wait_for("no endpoints", &agents[0], || addresses().is_empty());
    for ip in ips {
        let addr = format!("{ip}:{port}");
        wait_for(&format!("{addr} unavailable"), &agents[0], || {
            http_get(&addr, "/gone").0 == 503
        });
    }
}

#[test]
fn wasm_policies_hold_at_admission_and_on_the_node_even_offline() {
    let modules = build_examples();
    let mut server = Server::start();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let module = |name: &str| modules.join(format!("{name}.wasm")).display().to_string();
    let keygen = |name: &str| {
        let key = server.dir.path().join(format!("{name}.key"));
        let out = skiff(&server, &["keygen", key.to_str().unwrap()]);
        assert!(out.status.success());
        (key, String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (acme, acme_public) = keygen("acme");
    let (stranger, _) = keygen("stranger");
    let push = |file: &str, reference: &str, key: Option<&Path>| {
        let mut args = vec!["push".to_string(), module(file), reference.to_string()];
        if let Some(key) = key {
            args.extend(["--sign".to_string(), key.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = skiff(&server, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    push("compute", "compute:1.0", Some(&acme));
    push("spin", "spin:1.0", Some(&stranger));
    push("crash", "crash:1.0", None);
    push("hello", "hello:1.0", None);
    let mut edge = Agent::start_with(&server, "edge", &[]);
    wait_ready(&kc, &edge, &["edge"]);
    kc.ok(&["create", "namespace", "team-a"]);
    kc.ok(&["create", "namespace", "team-b"]);
    let pod = |ns: &str, name: &str, image: &str, extra: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "{ns}"}},
                "spec": {{"nodeName": "edge", "terminationGracePeriodSeconds": 1, {extra}
                  "containers": [{{"name": "c", "image": "{image}", "env": [{{"name": "LIMIT", "value": "100"}}],
                                   "volumeMounts": [{{"name": "host", "mountPath": "/host"}}]}}],
                  "volumes": [{{"name": "host", "emptyDir": {{}}}}]}}}}"#
        )
    };
    // A crashing pod admitted before there is a policy: the node must stop restarting it.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("team-a", "early", "crash:1.0", "")),
    );
    let jsonpath = |ns: &str, name: &str, path: &str| {
        kc.ok(&[
            "get",
            "pod",
            name,
            "-n",
            ns,
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    wait_for("the early pod to restart", &edge, || {
        jsonpath(
            "team-a",
            "early",
            "{.status.containerStatuses[0].restartCount}",
        )
        .parse::<u32>()
        .is_ok_and(|n| n >= 1)
    });

    // The tenant's admin sets the policy; invalid ones are refused with the field named.
    let policy = format!(
        "apiVersion: skiff.dev/v1\nkind: WasmPolicy\nmetadata: {{name: default, namespace: team-a}}\n\
         spec:\n  hostPaths: [/srv/sensors]\n  egress: {{hosts: [api.example.com]}}\n  \
         publishers: [{{name: acme, publicKey: \"{acme_public}\"}}]\n"
    );
    assert_eq!(
        kc.ok_stdin(&["apply", "-f", "-"], Some(&policy)),
        "wasmpolicy.skiff.dev/default created\n"
    );
    let listed = kc.ok(&["get", "wasmpolicies", "-n", "team-a"]);
    assert!(
        listed.starts_with("NAME      PUBLISHERS   HOST PATHS     EGRESS            AGE\n"),
        "{listed}"
    );
    assert!(
        listed.contains("default   acme         /srv/sensors   api.example.com"),
        "{listed}"
    );
    let invalid = kc.fails_stdin(
        &["apply", "-f", "-"],
        Some(
            &policy
                .replace(&acme_public, "bm9wZQ==")
                .replace("default", "bad"),
        ),
    );
    assert!(
        invalid.contains("spec.publishers[0].publicKey: Invalid value: \"bm9wZQ==\": must be 32 bytes: an ed25519 public key"),
        "{invalid}"
    );

    // Admission: unsigned, foreign-signed and host paths outside the policy are refused.
    let refused = |name: &str, image: &str, extra: &str| {
        kc.fails_stdin(
            &["apply", "-f", "-"],
            Some(&pod("team-a", name, image, extra)),
        )
    };
    assert_eq!(
        refused("unsigned", "hello:1.0", ""),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"unsigned\" is forbidden: \
         violates WasmPolicy \"default\": container \"c\": module hello:1.0: the module is not signed; \
         the policy requires a signature by acme\n"
    );
    assert!(
        refused("foreign", "spin:1.0", "").contains(
            "module spin:1.0: the module's signature does not verify with the key of acme"
        ),
    );
    let host = r#""hostNetwork": false,"#;
    let etc = pod("team-a", "etc", "compute:1.0", host)
        .replace(r#""emptyDir": {}"#, r#""hostPath": {"path": "/etc"}"#);
    let err = kc.fails_stdin(&["apply", "-f", "-"], Some(&etc));
    assert!(
        err.contains("violates WasmPolicy \"default\": volume \"host\": hostPath /etc is not allowed: the policy allows only /srv/sensors"),
        "{err}"
    );
    // What the policy allows runs; another tenant's namespace is not bound by it.
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod(
            "team-a",
            "signed",
            "compute:1.0",
            r#""restartPolicy": "Never","#,
        )),
    );
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&pod("team-b", "free", "hello:1.0", "")),
    );
    wait_for("the signed module to complete", &edge, || {
        jsonpath("team-a", "signed", "{.status.phase}") == "Succeeded"
    });
    wait_for("the other tenant's unsigned module to run", &edge, || {
        jsonpath("team-b", "free", "{.status.phase}") == "Running"
    });

    // Egress: team-a's guests may call only the hosts its policy lists; team-b's reach any host
    // outside the cluster, as pods do. The host here is an HTTP function addressed by its IP,
    // which is no Service's.
    push("hello-http", "web:1.0", None);
    push("fetch-http", "fetch:1.0", Some(&acme));
    let function = |ns: &str, name: &str, image: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "{ns}"}},
                "spec": {{"nodeName": "edge", "terminationGracePeriodSeconds": 1,
                  "containers": [{{"name": "c", "image": "{image}", "ports": [{{"containerPort": 8080}}]}}]}}}}"#
        )
    };
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&function("team-b", "web", "web:1.0")),
    );
    for ns in ["team-a", "team-b"] {
        kc.ok_stdin(
            &["apply", "-f", "-"],
            Some(&function(ns, "fetch", "fetch:1.0")),
        );
    }
    let address = |ns: &str, name: &str| {
        let ip = jsonpath(ns, name, "{.status.podIP}");
        let ready = jsonpath(ns, name, "{.status.containerStatuses[0].ready}");
        (ready == "true" && !ip.is_empty()).then(|| format!("{ip}:8080"))
    };
    let mut addresses = Vec::new();
    wait_for("the HTTP functions to be ready", &edge, || {
        addresses = [("team-b", "web"), ("team-a", "fetch"), ("team-b", "fetch")]
            .iter()
            .filter_map(|(ns, name)| address(ns, name))
            .collect();
        addresses.len() == 3
    });
    let path = format!("/?url=http://{}/", addresses[0]);
    assert_eq!(
        http_get(&addresses[1], &path),
        (502, "error: HTTP-request-denied\n".into()),
        "team-a's policy allows only api.example.com"
    );
    let (code, body) = http_get(&addresses[2], &path);
    assert_eq!(code, 200, "team-b has no policy: {body}");

    // The node checks again: the pod admitted before the policy is not restarted.
    wait_for("the node to refuse the early pod's restart", &edge, || {
        let w = jsonpath(
            "team-a",
            "early",
            "{.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
        );
        w.starts_with("CreateContainerError: ")
            && w.contains(
                "violates WasmPolicy \"default\": module crash:1.0: the module is not signed",
            )
    });

    // A module changed in the control plane's store no longer passes admission.
    let digest = kc.ok(&[
        "get",
        "module",
        "compute.1.0",
        "-o",
        "jsonpath={.spec.digest}",
    ]);
    let blob = server.dir.path().join(format!(
        "modules/sha256/{}.wasm",
        digest.trim_start_matches("sha256:")
    ));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.extend_from_slice(&[0, 4, b'e', b'v', b'i', b'l']);
    std::fs::write(&blob, bytes).unwrap();
    let err = refused("tampered", "compute:1.0", "");
    assert!(
        err.contains("the stored bytes do not match its digest"),
        "{err}"
    );

    // Offline: the control plane goes away and the node reboots; it still holds the line.
    drop(kc);
    server.kill9();
    let before = edge.log().len();
    edge.restart();
    wait_for(
        "the rebooted node to refuse the early pod offline",
        &edge,
        || edge.log()[before..].contains("violates WasmPolicy \"default\": module crash:1.0"),
    );
    let _ = std::fs::remove_dir_all(modules);
}
