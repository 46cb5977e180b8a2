//! ResourceQuota and LimitRange through a real kubectl against a real `skiff server`: a quota
//! refuses pods beyond it with its message, `describe` shows used/hard, LimitRange defaults
//! land on created pods, and deleting a pod frees quota.

mod common;

use common::{Kc, Kubectl, Server, eventually};

const LIMITS: &str = r#"{"apiVersion": "v1", "kind": "LimitRange",
  "metadata": {"name": "defaults", "namespace": "t"},
  "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"},
    "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "250m"}}]}}"#;

const GREEDY: &str = r#"{"apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "greedy", "namespace": "t"},
  "spec": {"containers": [{"name": "c", "image": "hello:1.0",
    "resources": {"limits": {"cpu": "2"}}}]}}"#;

/// The Used and Hard columns of `resource` in `kubectl describe quota`.
fn used_hard(k: &Kc<'_>, resource: &str) -> Option<(String, String)> {
    let out = k.ok(&["-n", "t", "describe", "quota", "q"]);
    out.lines()
        .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [r, used, hard] if r == resource => Some((used.to_string(), hard.to_string())),
            _ => None,
        })
}

fn pair(used: &str, hard: &str) -> Option<(String, String)> {
    Some((used.to_string(), hard.to_string()))
}

#[test]
fn quota_and_limit_range_with_kubectl() {
    let server = Server::start();
    let k = Kc::new(Kubectl::version("33"), &server);
    k.ok(&["create", "namespace", "t"]);
    k.ok(&[
        "-n",
        "t",
        "create",
        "quota",
        "q",
        "--hard=pods=2,requests.cpu=1",
    ]);
    k.ok_stdin(&["apply", "-f", "-"], Some(LIMITS));
    assert!(k.ok(&["-n", "t", "get", "limits"]).contains("defaults"));
    // kubectl describe reads the typed object: min, max, default request and limit, ratio.
    let described = k.ok(&["-n", "t", "describe", "limits", "defaults"]);
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Container", "cpu", "-", "1", "250m", "500m", "-"]),
        "{described}"
    );

    // Without the LimitRange's defaults this pod would lack the cpu request the quota needs.
    k.ok(&["-n", "t", "run", "a", "--image=hello:1.0"]);
    assert_eq!(
        k.jsonpath(
            &["-n", "t", "get", "pod", "a"],
            "{.spec.containers[0].resources.requests.cpu} {.spec.containers[0].resources.limits.cpu}"
        ),
        "250m 500m"
    );
    assert_eq!(
        k.jsonpath(
            &["-n", "t", "get", "pod", "a"],
            "{.metadata.annotations.kubernetes\\.io/limit-ranger}"
        ),
        "LimitRanger plugin set: cpu request for container a; cpu limit for container a"
    );
    let err = k.fails_stdin(&["apply", "-f", "-"], Some(GREEDY));
    assert!(
        err.contains(
            r#"pods "greedy" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        ),
        "{err}"
    );

    k.ok(&["-n", "t", "run", "b", "--image=hello:1.0"]);
    let err = k.fails(&["-n", "t", "run", "c", "--image=hello:1.0"]);
    assert!(
        err.contains(
            r#"pods "c" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"#
        ),
        "{err}"
    );
    assert_eq!(used_hard(&k, "pods"), pair("2", "2"));
    assert_eq!(used_hard(&k, "requests.cpu"), pair("500m", "1"));

    k.ok(&["-n", "t", "delete", "pod", "a", "--wait"]);
    eventually("the quota to see the deleted pod", || {
        used_hard(&k, "pods") == pair("1", "2")
    });
    assert_eq!(used_hard(&k, "requests.cpu"), pair("250m", "1"));
    k.ok(&["-n", "t", "run", "c", "--image=hello:1.0"]);
    assert_eq!(used_hard(&k, "pods"), pair("2", "2"));
}
