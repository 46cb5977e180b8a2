//! One tenant's object cannot stop the controllers: a real server and a real agent, driven with
//! the real kubectl, keep rolling Deployments out after a Job whose numbers overflow any clock,
//! also after the server restarts with that Job stored.

mod common;

use common::agents::{Agent, build_examples, wait_ready};
use common::{Kc, Kubectl, Server};

/// A Job asking for a deadline at the end of `int64` seconds, as a careless tenant might.
const OVERFLOW_JOB: &str = r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "forever"},
    "spec": {"activeDeadlineSeconds": 9223372036854775807, "ttlSecondsAfterFinished": 2147483647,
             "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                   "containers": [{"name": "compute", "image": "compute:1.0"}]}}}}"#;

fn deployment(name: &str) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}"}},
            "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "{name}"}}}},
                     "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                                  "spec": {{"terminationGracePeriodSeconds": 1,
                                           "containers": [{{"name": "hello", "image": "hello:1.0"}}]}}}}}}}}"#
    )
}

fn rolled_out(kc: &Kc, server: &Server, agent: &Agent, name: &str) {
    let out = kc.run_stdin(
        &[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=60s",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("successfully rolled out"),
        "deployment/{name} did not roll out: {stdout}{}\nreplicasets:\n{}\nserver log:\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        kc.ok(&["get", "rs", "-o", "wide"]),
        server.log(),
        agent.log()
    );
}

/// The running Job's active pods and the reasons of its conditions (none while it runs).
fn active(kc: &Kc) -> String {
    kc.jsonpath(
        &["get", "job", "still-running"],
        "{.status.active}/{.status.conditions[*].reason}",
    )
}

/// `GET /readyz?verbose` without credentials: (status code, body).
fn readyz(server: &Server) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let r = server
            .client()
            .get(format!("{}/readyz?verbose", server.url))
            .send()
            .await
            .expect("readyz answers");
        (r.status().as_u16(), r.text().await.expect("body"))
    })
}

#[test]
fn a_job_with_an_overflowing_deadline_leaves_the_controllers_working_across_a_restart() {
    let modules = build_examples();
    let mut server = Server::start();
    server.pin_port();
    let kc = Kc::new(Kubectl::version("33"), &server);
    let edge = Agent::start(&server, "edge-1", &modules);
    wait_ready(&kc, &edge, &["edge-1"]);

    // Upstream accepts any non-negative deadline: it is stored and means "never".
    let out = kc.run_stdin(&["apply", "-f", "-"], Some(OVERFLOW_JOB));
    assert!(
        out.status.success(),
        "the Job was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kc.run_stdin(
        &[
            "wait",
            "--for=condition=complete",
            "job/forever",
            "--timeout=90s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "the Job with a far deadline did not run to completion: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        kc.ok(&["get", "jobs", "-o", "yaml"]),
        server.log()
    );

    // A field error names the field, for a value upstream refuses.
    let negative = OVERFLOW_JOB.replace("9223372036854775807", "-1");
    let refused = kc.fails_stdin(&["apply", "-f", "-"], Some(&negative));
    assert!(
        refused.contains("spec.activeDeadlineSeconds")
            && refused.contains("must be greater than or equal to 0"),
        "{refused}"
    );

    // One that keeps running (hello ticks until stopped) is reconciled again after the
    // restart, deadline and all.
    let running = OVERFLOW_JOB
        .replace("\"forever\"", "\"still-running\"")
        .replace(
            "\"compute\", \"image\": \"compute:1.0\"",
            "\"hello\", \"image\": \"hello:1.0\"",
        );
    kc.ok_stdin(&["apply", "-f", "-"], Some(&running));
    common::eventually("the long Job to be active", || active(&kc) == "1/");

    kc.ok_stdin(&["apply", "-f", "-"], Some(&deployment("web")));
    rolled_out(&kc, &server, &edge, "web");

    let (code, body) = readyz(&server);
    assert_eq!(code, 200, "{body}");
    for check in [
        "controller/job",
        "controller/deployment",
        "controller/replicaset",
    ] {
        assert!(body.contains(&format!("[+]{check} ok")), "{body}");
    }

    // The stored Job is reconciled again at start; the controllers still work afterwards.
    drop(kc);
    server.stop();
    server.launch(Vec::new());
    let kc = Kc::new(Kubectl::version("33"), &server);
    kc.ok_stdin(&["apply", "-f", "-"], Some(&deployment("after-restart")));
    rolled_out(&kc, &server, &edge, "after-restart");
    let (code, body) = readyz(&server);
    assert_eq!(code, 200, "{body}");
    assert_eq!(active(&kc), "1/", "the far deadline passed");
    let log = server.log();
    assert!(!log.contains("panicked"), "a controller panicked:\n{log}");
}
