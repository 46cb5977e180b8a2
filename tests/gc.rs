//! Garbage collection as the controller manager does it: driven from what is stored, so a
//! cascading delete, a namespace deletion or an orphaned pod is finished after `kill -9` and a
//! restart, whatever the request that started it was.

mod common;

use common::{Kc, Kubectl, Server, eventually};
use serde_json::Value;

fn kubectl(server: &Server) -> Kc<'_> {
    Kc::new(Kubectl::version("33"), server)
}

/// How many objects `kubectl get KIND` lists (in `default` unless `-n` is given).
fn count(kc: &Kc, args: &[&str]) -> usize {
    let mut a = vec!["get"];
    a.extend(args);
    a.extend(["-o", "name"]);
    kc.ok(&a).lines().filter(|l| !l.trim().is_empty()).count()
}

fn exists(kc: &Kc, args: &[&str]) -> bool {
    let mut a = vec!["get"];
    a.extend(args);
    kc.run_stdin(&a, None).status.success()
}

fn get_json(kc: &Kc, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend(args);
    a.extend(["-o", "json"]);
    serde_json::from_str(&kc.ok(&a)).expect("kubectl prints JSON")
}

/// A Deployment whose pods stay Pending (there is no node), so nothing but the API and the
/// controllers take part.
fn deployment(name: &str, replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec: {{containers: [{{name: c, image: hello:1.0}}]}}\n"
    )
}

/// Creates Deployment `name` and waits for its ReplicaSet and all its pods.
fn roll_out(kc: &Kc, name: &str, replicas: usize) {
    kc.ok_stdin(&["apply", "-f", "-"], Some(&deployment(name, replicas)));
    eventually(&format!("{replicas} pods of {name}"), || {
        count(kc, &["pods", "-l", &format!("app={name}")]) == replicas
    });
}

#[test]
fn a_foreground_delete_interrupted_by_kill_9_completes_after_restart() {
    let mut server = Server::start();
    {
        let kc = kubectl(&server);
        roll_out(&kc, "web", 50);
        kc.ok(&[
            "delete",
            "deployment",
            "web",
            "--cascade=foreground",
            "--wait=false",
        ]);
    }
    server.kill9();
    server.launch(Vec::new());
    let kc = kubectl(&server);
    eventually(
        "the Deployment, its ReplicaSet and its 50 pods gone",
        || {
            !exists(&kc, &["deployment", "web"])
                && count(&kc, &["replicasets"]) == 0
                && count(&kc, &["pods"]) == 0
        },
    );
}

#[test]
fn an_orphan_delete_interrupted_by_kill_9_completes_after_restart() {
    let mut server = Server::start();
    {
        let kc = kubectl(&server);
        roll_out(&kc, "web", 50);
        kc.ok(&[
            "delete",
            "deployment",
            "web",
            "--cascade=orphan",
            "--wait=false",
        ]);
    }
    server.kill9();
    server.launch(Vec::new());
    let kc = kubectl(&server);
    eventually("the Deployment gone and its ReplicaSet orphaned", || {
        if exists(&kc, &["deployment", "web"]) {
            return false;
        }
        let rs = get_json(&kc, &["replicasets"]);
        let items = rs["items"].as_array().cloned().unwrap_or_default();
        items.len() == 1
            && items[0]["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|a| a.is_empty())
    });
    assert_eq!(
        count(&kc, &["pods"]),
        50,
        "the orphaned ReplicaSet keeps its pods"
    );

    // The ReplicaSet orphans its 50 pods in turn, and the server is killed again meanwhile.
    let rs = get_json(&kc, &["replicasets"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    kc.ok(&[
        "delete",
        "replicaset",
        &rs,
        "--cascade=orphan",
        "--wait=false",
    ]);
    drop(kc);
    server.kill9();
    server.launch(Vec::new());
    let kc = kubectl(&server);
    eventually("the ReplicaSet gone and its 50 pods orphaned", || {
        let pods = get_json(&kc, &["pods"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        count(&kc, &["replicasets"]) == 0
            && items.len() == 50
            && items.iter().all(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|a| a.is_empty())
            })
    });
}

#[test]
fn a_background_delete_interrupted_by_kill_9_leaves_no_dependents() {
    let mut server = Server::start();
    {
        let kc = kubectl(&server);
        roll_out(&kc, "web", 50);
        // The owner is gone when the request returns; its dependents are collected after.
        kc.ok(&["delete", "deployment", "web", "--wait=false"]);
    }
    server.kill9();
    server.launch(Vec::new());
    let kc = kubectl(&server);
    assert!(!exists(&kc, &["deployment", "web"]));
    eventually("no ReplicaSet and no pod left", || {
        count(&kc, &["replicasets"]) == 0 && count(&kc, &["pods"]) == 0
    });
}

fn configmap(name: &str, owner: Option<(&str, &str)>, finalizer: bool) -> String {
    let mut meta = format!("name: {name}");
    if let Some((owner, uid)) = owner {
        meta.push_str(&format!(
            ", ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}}}]"
        ));
    }
    if finalizer {
        meta.push_str(", finalizers: [example.com/hold]");
    }
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{{meta}}}\ndata: {{a: b}}\n")
}

fn uid(kc: &Kc, args: &[&str]) -> String {
    get_json(kc, args)["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string()
}

/// Any kind owns any kind: a ConfigMap owned by a ConfigMap goes with it, and a reference to an
/// owner's name with another uid (the owner was recreated) counts as gone.
#[test]
fn dependents_of_any_kind_are_collected_by_owner_uid() {
    let server = Server::start();
    let kc = kubectl(&server);
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&configmap("owner", None, false)),
    );
    let owner = uid(&kc, &["configmap", "owner"]);
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&configmap("dep", Some(("owner", &owner)), false)),
    );
    let stale = "00000000-0000-0000-0000-000000000001";
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&configmap(
            "dep-of-earlier-owner",
            Some(("owner", stale)),
            false,
        )),
    );
    eventually("the dependent of a gone uid collected", || {
        !exists(&kc, &["configmap", "dep-of-earlier-owner"])
    });
    assert!(
        exists(&kc, &["configmap", "dep"]),
        "a dependent of a live owner stays"
    );
    kc.ok(&["delete", "configmap", "owner"]);
    eventually(
        "the ConfigMap owned by the deleted ConfigMap collected",
        || !exists(&kc, &["configmap", "dep"]),
    );
}

/// An owner held by a finalizer keeps its dependents; removing the finalizer completes the
/// delete, and the dependents follow.
#[test]
fn a_delete_completed_by_removing_the_last_finalizer_collects_dependents() {
    let server = Server::start();
    let kc = kubectl(&server);
    kc.ok_stdin(&["apply", "-f", "-"], Some(&configmap("owner", None, true)));
    let owner = uid(&kc, &["configmap", "owner"]);
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&configmap("dep", Some(("owner", &owner)), false)),
    );
    kc.ok(&["delete", "configmap", "owner", "--wait=false"]);
    let held = get_json(&kc, &["configmap", "owner"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        exists(&kc, &["configmap", "dep"]),
        "an owner that still exists keeps its dependents"
    );
    kc.ok(&[
        "patch",
        "configmap",
        "owner",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("the owner and then its dependent gone", || {
        !exists(&kc, &["configmap", "owner"]) && !exists(&kc, &["configmap", "dep"])
    });
}

fn node(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n")
}

fn bound_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{nodeName: {node}, \
         containers: [{{name: c, image: hello:1.0}}]}}\n"
    )
}

#[test]
fn pods_bound_to_a_deleted_node_are_collected() {
    let server = Server::start_with(&["--pod-gc-quarantine", "1s"]);
    let kc = kubectl(&server);
    for n in ["gone-node", "kept-node"] {
        kc.ok_stdin(&["apply", "-f", "-"], Some(&node(n)));
    }
    kc.ok_stdin(
        &["apply", "-f", "-"],
        Some(&bound_pod("orphaned", "gone-node")),
    );
    kc.ok_stdin(&["apply", "-f", "-"], Some(&bound_pod("kept", "kept-node")));
    kc.ok(&["delete", "node", "gone-node"]);
    eventually("the pod of the deleted node gone", || {
        !exists(&kc, &["pod", "orphaned"])
    });
    assert!(
        exists(&kc, &["pod", "kept"]),
        "a pod of a node that exists stays"
    );
}

#[test]
fn terminated_pods_beyond_the_threshold_are_collected_oldest_first() {
    // A short quarantine also makes PodGC look more often than every 20 s.
    let server = Server::start_with(&[
        "--terminated-pod-gc-threshold",
        "2",
        "--pod-gc-quarantine",
        "1s",
    ]);
    let kc = kubectl(&server);
    kc.ok_stdin(&["apply", "-f", "-"], Some(&node("node-a")));
    for name in ["done-1", "done-2", "done-3", "running"] {
        kc.ok_stdin(&["apply", "-f", "-"], Some(&bound_pod(name, "node-a")));
        // Creation timestamps have whole seconds: keep the order unambiguous.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    for name in ["done-1", "done-2", "done-3"] {
        kc.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ]);
    }
    eventually("the oldest terminated pod gone", || {
        !exists(&kc, &["pod", "done-1"])
    });
    for kept in ["done-2", "done-3", "running"] {
        assert!(exists(&kc, &["pod", kept]), "{kept} is kept");
    }
}

#[test]
fn a_namespace_deletion_interrupted_by_kill_9_completes_after_restart() {
    let mut server = Server::start();
    {
        let kc = kubectl(&server);
        kc.ok(&["create", "namespace", "doomed"]);
        let mut many = String::new();
        for i in 0..100 {
            many.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: doomed}}\n"
            ));
        }
        kc.ok_stdin(&["apply", "-f", "-"], Some(&many));
        kc.ok_stdin(
            &["apply", "-n", "doomed", "-f", "-"],
            Some(&deployment("web", 20)),
        );
        eventually("20 pods in doomed", || {
            count(&kc, &["pods", "-n", "doomed"]) == 20
        });
        kc.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    }
    server.kill9();
    server.launch(Vec::new());
    let kc = kubectl(&server);
    eventually("the namespace gone", || {
        !exists(&kc, &["namespace", "doomed"])
    });
}

#[test]
fn events_expire_after_the_event_ttl() {
    let server = Server::start_with(&["--event-ttl", "2s"]);
    let kc = kubectl(&server);
    let event = "apiVersion: v1\nkind: Event\nmetadata: {name: hello.1}\n\
                 involvedObject: {kind: Pod, name: hello, namespace: default}\n\
                 reason: Testing\nmessage: soon gone\ntype: Normal\n";
    kc.ok_stdin(&["apply", "-f", "-"], Some(event));
    assert!(exists(&kc, &["event", "hello.1"]));
    eventually("the event expired", || !exists(&kc, &["event", "hello.1"]));
}
