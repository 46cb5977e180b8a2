//! Scenario suites run with real kubectl binaries (1.31, 1.33 and the latest release) against a
//! real `skiff server`: every served kind and verb, and the errors users see.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Kc, Kubectl, Server};

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: hello:1.0
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {tier: config}
data:
  mode: fast
---
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  selector: {app: api}
  ports:
  - port: 80
    targetPort: 8080
"#;

fn scenario(kubectl: Kubectl) {
    let server = Server::start();
    let k = Kc::new(kubectl, &server);

    // Discovery and system namespaces.
    let ns = k.ok(&["get", "namespaces"]);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(name), "{ns}");
    }
    assert!(ns.contains("Active"));
    let resources = k.ok(&["api-resources"]);
    for r in [
        "deployments",
        "cronjobs",
        "leases",
        "endpointslices",
        "horizontalpodautoscalers",
        "resourcequotas",
    ] {
        assert!(
            resources.contains(r),
            "api-resources lacks {r}: {resources}"
        );
    }
    assert!(k.ok(&["get", "serviceaccounts"]).contains("default"));

    // apply -f (client-side), with the server's field validation (no --validate=false).
    let out = k.ok_stdin(&["apply", "-f", "-"], Some(APP));
    assert!(
        out.contains("deployment.apps/api created")
            && out.contains("configmap/settings created")
            && out.contains("service/api created"),
        "{out}"
    );
    let out = k.ok_stdin(&["apply", "-f", "-"], Some(APP));
    assert!(out.contains("deployment.apps/api unchanged"), "{out}");
    // Dropping env B on re-apply removes it (strategic merge patch with $patch: delete).
    let changed = APP.replace("        - {name: B, value: \"2\"}\n", "");
    assert!(
        k.ok_stdin(&["apply", "-f", "-"], Some(&changed))
            .contains("deployment.apps/api configured")
    );
    assert_eq!(
        k.jsonpath(
            &["get", "deploy", "api"],
            "{.spec.template.spec.containers[0].env[*].name}"
        ),
        "A"
    );
    assert_eq!(
        k.jsonpath(&["get", "deploy", "api"], "{.metadata.generation}"),
        "2"
    );
    // Defaults are applied as Kubernetes applies them.
    assert_eq!(
        k.jsonpath(
            &["get", "deploy", "api"],
            "{.spec.strategy.type} {.spec.revisionHistoryLimit} {.spec.template.spec.restartPolicy}"
        ),
        "RollingUpdate 10 Always"
    );
    let svc_ip = k.jsonpath(&["get", "svc", "api"], "{.spec.clusterIP}");
    // From the default service range, 10.96.0.0/12.
    let octets: Vec<u8> = svc_ip.split('.').filter_map(|o| o.parse().ok()).collect();
    assert!(
        octets.len() == 4 && octets[0] == 10 && (96..112).contains(&octets[1]),
        "cluster IP {svc_ip}"
    );
    let svc = k.ok(&["get", "svc", "api"]);
    assert!(
        svc.contains("ClusterIP") && svc.contains("80/TCP") && svc.contains(&svc_ip),
        "{svc}"
    );

    // Table output with upstream columns.
    let deploy = k.ok(&["get", "deploy", "-o", "wide"]);
    assert!(
        deploy.contains("READY")
            && deploy.contains("UP-TO-DATE")
            && deploy.contains("SELECTOR")
            && deploy.contains("app=api"),
        "{deploy}"
    );
    assert!(deploy.contains("0/2"), "{deploy}");

    // Strict field validation: an unknown field is refused with its path.
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: strict}\ndata: {a: b}\nbogus: 1\n";
    let err = k.fails_stdin(&["apply", "-f", "-"], Some(bad));
    assert!(err.contains("unknown field \"bogus\""), "{err}");

    // Generators (protobuf bodies on kubectl >= 1.32).
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=hello:1.0",
        "--replicas=3",
        "--port=80",
    ]);
    k.ok(&[
        "create",
        "job",
        "once",
        "--image=hello:1.0",
        "--",
        "hello",
        "world",
    ]);
    k.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=hello:1.0",
        "--schedule=*/5 * * * *",
        "--",
        "tick",
    ]);
    k.ok(&[
        "create",
        "configmap",
        "literal",
        "--from-literal=a=b",
        "--from-literal=c=d",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ]);
    k.ok(&["create", "namespace", "team-a"]);
    k.ok(&["create", "serviceaccount", "robot"]);
    // In its own namespace: a cpu quota refuses pods without cpu requests.
    k.ok(&[
        "create",
        "quota",
        "small",
        "--hard=cpu=2,pods=10",
        "-n",
        "team-a",
    ]);
    k.ok(&["create", "service", "clusterip", "backend", "--tcp=80:8080"]);
    k.ok(&[
        "autoscale",
        "deployment",
        "web",
        "--min=1",
        "--max=4",
        "--cpu-percent=60",
    ]);
    k.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-svc",
        "--port=80",
        "--target-port=8080",
    ]);
    assert_eq!(
        k.jsonpath(
            &["get", "job", "once"],
            "{.spec.template.spec.containers[0].command}"
        ),
        r#"["hello","world"]"#
    );
    assert_eq!(
        k.jsonpath(
            &["get", "job", "once"],
            "{.spec.template.spec.restartPolicy} {.spec.backoffLimit}"
        ),
        "Never 6"
    );
    assert_eq!(
        k.jsonpath(&["get", "secret", "creds"], "{.data.password}"),
        "aHVudGVyMg=="
    );
    assert_eq!(k.jsonpath(&["get", "cm", "literal"], "{.data.c}"), "d");
    assert_eq!(
        k.jsonpath(&["get", "svc", "backend"], "{.spec.ports[0].targetPort}"),
        "8080"
    );
    assert_eq!(
        k.jsonpath(&["get", "svc", "web-svc"], "{.spec.selector.app}"),
        "web"
    );
    let hpa = k.ok(&["get", "hpa", "web"]);
    assert!(
        hpa.contains("Deployment/web") && hpa.contains("60%"),
        "{hpa}"
    );
    assert_eq!(
        k.jsonpath(
            &["get", "horizontalpodautoscalers.v1.autoscaling", "web"],
            "{.spec.targetCPUUtilizationPercentage}"
        ),
        "60"
    );
    let cj = k.ok(&["get", "cronjobs"]);
    assert!(cj.contains("*/5 * * * *"), "{cj}");
    k.ok(&["create", "job", "manual", "--from=cronjob/tick"]);
    assert_eq!(
        k.jsonpath(
            &["get", "job", "manual"],
            "{.metadata.ownerReferences[0].kind}"
        ),
        "CronJob"
    );
    let quota = k.ok(&["get", "quota", "small", "-n", "team-a"]);
    assert!(quota.contains("pods: 0/10"), "{quota}");
    let all = k.ok(&["get", "all"]);
    for item in [
        "deployment.apps/web",
        "service/api",
        "job.batch/once",
        "cronjob.batch/tick",
        "horizontalpodautoscaler.autoscaling/web",
    ] {
        assert!(all.contains(item), "get all lacks {item}: {all}");
    }

    // Pods: run, label selectors, field selectors, describe, logs of a pod not yet running.
    k.ok(&[
        "run",
        "solo",
        "--image=hello:1.0",
        "--labels=app=solo,tier=edge",
    ]);
    let pods = k.ok(&["get", "pods", "-l", "tier in (edge,core),app!=web"]);
    assert!(
        pods.contains("solo") && pods.contains("Pending") && pods.contains("0/1"),
        "{pods}"
    );
    assert!(
        k.ok(&["get", "pods", "--field-selector=status.phase=Pending", "-A"])
            .contains("solo")
    );
    assert!(
        !k.ok(&["get", "pods", "--field-selector=status.phase=Running"])
            .contains("solo")
    );
    let err = k.fails(&["get", "pods", "--field-selector=spec.bogus=1"]);
    assert!(
        err.contains("field label not supported: spec.bogus"),
        "{err}"
    );
    let err = k.fails(&["get", "pods", "-l", "a in (b"]);
    assert!(
        err.contains("BadRequest") || err.contains("unable to parse"),
        "{err}"
    );
    let desc = k.ok(&["describe", "pod", "solo"]);
    assert!(
        desc.contains("hello:1.0") && desc.contains("Pending"),
        "{desc}"
    );
    let err = k.fails(&["logs", "solo"]);
    assert!(err.contains("waiting to start"), "{err}");
    assert_eq!(
        k.jsonpath(
            &["get", "pod", "solo"],
            "{.spec.schedulerName} {.status.qosClass}"
        ),
        "default-scheduler BestEffort"
    );

    // Patches: label, annotate, merge, JSON, strategic; scale; set image; rollout verbs.
    k.ok(&["label", "deploy", "web", "env=prod"]);
    k.ok(&["annotate", "deploy", "web", "owner=ops"]);
    assert_eq!(
        k.jsonpath(
            &["get", "deploy", "web"],
            "{.metadata.labels.env} {.metadata.annotations.owner}"
        ),
        "prod ops"
    );
    k.ok(&["label", "deploy", "web", "env-"]);
    assert_eq!(
        k.jsonpath(&["get", "deploy", "web"], "{.metadata.labels.env}"),
        ""
    );
    k.ok(&["scale", "deploy", "web", "--replicas=5"]);
    assert_eq!(
        k.jsonpath(&["get", "deploy", "web"], "{.spec.replicas}"),
        "5"
    );
    k.ok(&[
        "scale",
        "deploy",
        "web",
        "--current-replicas=5",
        "--replicas=2",
    ]);
    let err = k.fails(&[
        "scale",
        "deploy",
        "web",
        "--current-replicas=9",
        "--replicas=1",
    ]);
    assert!(
        err.contains("Expected replicas to be 9") || err.contains("precondition"),
        "{err}"
    );
    k.ok(&["set", "image", "deploy/web", "hello=hello:2.0"]);
    assert_eq!(
        k.jsonpath(
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "hello:2.0"
    );
    k.ok(&["rollout", "pause", "deploy/web"]);
    assert_eq!(
        k.jsonpath(&["get", "deploy", "web"], "{.spec.paused}"),
        "true"
    );
    k.ok(&["rollout", "resume", "deploy/web"]);
    assert_eq!(k.jsonpath(&["get", "deploy", "web"], "{.spec.paused}"), "");
    k.ok(&["rollout", "restart", "deploy/web"]);
    assert!(
        !k.jsonpath(
            &["get", "deploy", "web"],
            "{.spec.template.metadata.annotations}"
        )
        .is_empty()
    );
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"extra":"1"}}"#,
    ]);
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/mode","value":"slow"}]"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "api",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"api","image":"hello:3.0"}]}}}}"#,
    ]);
    assert_eq!(
        k.jsonpath(&["get", "cm", "settings"], "{.data.mode} {.data.extra}"),
        "slow 1"
    );
    assert_eq!(k.jsonpath(&["get", "deploy", "api"], "{.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"), "hello:3.0 8080");
    let err = k.fails(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/nope"}]"#,
    ]);
    assert!(err.contains("Invalid") || err.contains("nope"), "{err}");

    // Status and scale subresources through the raw API.
    let scale = k.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]);
    assert!(
        scale.contains("\"kind\":\"Scale\"") && scale.contains("\"replicas\":2"),
        "{scale}"
    );
    // The deployment controller owns a Deployment's status: web's rollout is stuck (no node
    // runs its pods, maxUnavailable rounds down to 0), with the new template's replica
    // surging beside the old ones. A Service's status is anyone's to write.
    common::eventually("web's status from the deployment controller", || {
        let status = k.jsonpath(
            &["get", "deploy", "web"],
            "{.status.replicas} {.status.updatedReplicas} {.status.observedGeneration} {.metadata.generation}",
        );
        let n: Vec<i64> = status.split(' ').map(|x| x.parse().unwrap_or(-1)).collect();
        n.len() == 4 && n[0] == 3 && n[1] == 1 && n[2] == n[3]
    });
    k.ok(&[
        "patch",
        "svc",
        "api",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.7"}]}}}"#,
    ]);
    assert_eq!(
        k.jsonpath(
            &["get", "svc", "api"],
            "{.status.loadBalancer.ingress[0].ip}"
        ),
        "192.0.2.7"
    );

    // Cluster-scoped kinds, and kinds made from manifests: nodes, RCs, RSs, leases, events,
    // endpoints, endpoint slices.
    let manifests = r#"
apiVersion: v1
kind: Node
metadata:
  name: edge-1
  labels: {kubernetes.io/hostname: edge-1}
spec:
  # No agent runs behind this node: keep the scheduler from placing the scenario's pods on it.
  taints: [{key: skiff.dev/no-agent, value: "true", effect: NoSchedule}]
status:
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: ready}
  addresses:
  - {type: InternalIP, address: 127.0.0.2}
  nodeInfo: {kubeletVersion: v1.32.0-skiff, osImage: skiff, kernelVersion: "6", containerRuntimeVersion: wasmtime://48, architecture: amd64, operatingSystem: linux, machineID: m, systemUUID: s, bootID: b, kubeProxyVersion: v1, containerRuntimeVersion2: x}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 1
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers: [{name: c, image: hello:1.0}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs1}
spec:
  replicas: 1
  selector: {matchLabels: {app: rs1}}
  template:
    metadata: {labels: {app: rs1}}
    spec:
      containers: [{name: c, image: hello:1.0}]
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: edge-1, namespace: kube-node-lease}
spec: {holderIdentity: edge-1, leaseDurationSeconds: 40}
---
apiVersion: v1
kind: Event
metadata: {name: solo.1}
involvedObject: {kind: Pod, name: solo, namespace: default, uid: POD_UID}
reason: Testing
message: an event for describe
type: Normal
---
apiVersion: v1
kind: Endpoints
metadata: {name: external}
subsets:
- addresses: [{ip: 10.0.0.5}]
  ports: [{port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: external-abc
  labels: {kubernetes.io/service-name: external}
addressType: IPv4
endpoints:
- addresses: [10.0.0.5]
ports:
- {port: 8080}
"#;
    let node_doc = manifests.split("---").next().expect("node document");
    let err = k.fails_stdin(&["create", "-f", "-"], Some(node_doc));
    assert!(
        err.contains("unknown field \"status.nodeInfo.containerRuntimeVersion2\""),
        "{err}"
    );
    let pod_uid = k.jsonpath(&["get", "pod", "solo"], "{.metadata.uid}");
    let manifests = manifests
        .replace(", containerRuntimeVersion2: x", "")
        .replace("POD_UID", &pod_uid);
    k.ok_stdin(&["create", "-f", "-"], Some(&manifests));
    let nodes = k.ok(&["get", "nodes", "-o", "wide"]);
    assert!(
        nodes.contains("edge-1")
            && nodes.contains("Ready")
            && nodes.contains("127.0.0.2")
            && nodes.contains("v1.32.0-skiff"),
        "{nodes}"
    );
    k.ok(&["cordon", "edge-1"]);
    assert!(
        k.ok(&["get", "node", "edge-1"])
            .contains("SchedulingDisabled")
    );
    assert!(
        k.ok(&["get", "nodes", "--field-selector=spec.unschedulable=true"])
            .contains("edge-1")
    );
    assert_eq!(
        k.jsonpath(&["get", "rc", "legacy"], "{.spec.selector.app}"),
        "legacy"
    );
    k.ok(&["scale", "rc", "legacy", "--replicas=3"]);
    k.ok(&["scale", "rs", "rs1", "--replicas=2"]);
    let rcs = k.ok(&["get", "rc,rs"]);
    assert!(
        rcs.contains("legacy") && rcs.contains("rs1") && rcs.contains("DESIRED"),
        "{rcs}"
    );
    assert!(
        k.ok(&["get", "leases", "-n", "kube-node-lease"])
            .contains("edge-1")
    );
    let events = k.ok(&["get", "events"]);
    assert!(
        events.contains("Testing") && events.contains("pod/solo"),
        "{events}"
    );
    assert!(
        k.ok(&["describe", "pod", "solo"])
            .contains("an event for describe")
    );
    assert!(
        k.ok(&["get", "endpoints", "external"])
            .contains("10.0.0.5:8080")
    );
    assert!(k.ok(&["get", "endpointslices"]).contains("external-abc"));
    // The api Service's own endpoints are the controller's: its pods have no node, so none.
    let endpoints = k.ok(&["get", "endpoints", "api"]);
    assert!(endpoints.contains("<none>"), "{endpoints}");
    let slices = k.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=api",
    ]);
    assert!(
        slices.contains("api-") && slices.contains("IPv4") && slices.contains("<unset>"),
        "{slices}"
    );

    // Replace (PUT) with a stale resourceVersion is a conflict; a fresh one works.
    let current = k.ok(&["get", "cm", "literal", "-o", "json"]);
    k.ok(&["label", "cm", "literal", "bump=1"]);
    let err = k.fails_stdin(&["replace", "-f", "-"], Some(&current));
    assert!(
        err.contains("Conflict") || err.contains("the object has been modified"),
        "{err}"
    );
    let fresh = k
        .ok(&["get", "cm", "literal", "-o", "json"])
        .replace("\"a\": \"b\"", "\"a\": \"z\"");
    k.ok_stdin(&["replace", "-f", "-"], Some(&fresh));
    assert_eq!(k.jsonpath(&["get", "cm", "literal"], "{.data.a}"), "z");

    // Server-side apply creates, then updates; diff and server dry-run persist nothing.
    let ssa = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {k: first}\n";
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(ssa));
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        Some(&ssa.replace("first", "second")),
    );
    assert_eq!(k.jsonpath(&["get", "cm", "ssa"], "{.data.k}"), "second");
    let dry = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry}\ndata: {k: v}\n";
    k.ok_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(dry));
    k.fails(&["get", "cm", "dry"]);

    // Errors as Kubernetes phrases them.
    let err = k.fails(&["get", "deploy", "missing"]);
    assert!(
        err.contains(r#"deployments.apps "missing" not found"#),
        "{err}"
    );
    let err = k.fails(&["create", "configmap", "literal", "--from-literal=x=y"]);
    assert!(
        err.contains(r#"configmaps "literal" already exists"#),
        "{err}"
    );
    let err = k.fails(&["create", "deployment", "Bad_Name", "--image=x"]);
    assert!(
        err.contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{err}"
    );
    let dup = "apiVersion: v1\nkind: Pod\nmetadata: {name: dup}\nspec:\n  containers:\n  - {name: a, image: x}\n  - {name: a, image: z}\n";
    let err = k.fails_stdin(&["create", "-f", "-"], Some(dup));
    assert!(
        err.contains("spec.containers[1].name: Duplicate value: \"a\""),
        "{err}"
    );
    let neg = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: neg}\nspec:\n  replicas: -1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: c}}\n    spec: {containers: [{name: a, image: x}]}\n";
    let err = k.fails_stdin(&["create", "-f", "-"], Some(neg));
    assert!(
        err.contains("spec.replicas: Invalid value: -1")
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    let err = k.fails(&[
        "create",
        "cronjob",
        "badcron",
        "--image=x",
        "--schedule=61 * * * *",
    ]);
    assert!(err.contains("spec.schedule"), "{err}");
    let err = k.fails(&[
        "-n",
        "nowhere",
        "create",
        "configmap",
        "x",
        "--from-literal=a=b",
    ]);
    assert!(err.contains(r#"namespaces "nowhere" not found"#), "{err}");
    let err = k.fails(&["get", "pods", "--token=wrong"]);
    assert!(err.contains("Unauthorized"), "{err}");
    let err = k.fails(&["delete", "namespace", "default"]);
    assert!(err.contains("Forbidden"), "{err}");

    // Watch: kubectl get -w sees changes as they happen.
    let lines = watch(
        &k,
        &["get", "configmaps", "-w", "--output-watch-events"],
        || {
            k.ok(&["create", "configmap", "watched", "--from-literal=a=b"]);
            k.ok(&["label", "configmap", "watched", "x=y"]);
            k.ok(&["delete", "configmap", "watched"]);
        },
    );
    for ev in ["ADDED", "MODIFIED", "DELETED"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(ev) && l.contains("watched")),
            "no {ev} for watched in {lines:?}"
        );
    }

    // Delete: one object, by label, all; a namespace takes its contents with it.
    k.ok(&[
        "-n",
        "team-a",
        "create",
        "configmap",
        "inner",
        "--from-literal=a=b",
    ]);
    k.ok(&["delete", "namespace", "team-a", "--timeout=30s"]);
    let err = k.fails(&["get", "namespace", "team-a"]);
    assert!(err.contains("not found"), "{err}");
    let err = k.fails(&["-n", "team-a", "get", "configmap", "inner"]);
    assert!(err.contains("not found"), "{err}");
    k.ok(&["delete", "pod", "solo"]);
    k.ok(&["delete", "configmap", "-l", "tier=config"]);
    k.fails(&["get", "configmap", "settings"]);
    k.ok(&["delete", "--raw", "/api/v1/namespaces/default/secrets"]);
    assert!(!k.ok(&["get", "secrets"]).contains("creds"));
    k.ok(&["delete", "node", "edge-1"]);
    k.ok(&[
        "delete",
        "deploy,svc,job,cronjob,hpa,rc,rs,quota,sa,endpoints,endpointslices,leases,events",
        "--all",
        "--wait=false",
    ]);
    k.ok(&["delete", "lease", "edge-1", "-n", "kube-node-lease"]);
}

/// Runs `kubectl <args>` in the background while `act` runs, then returns its output lines.
fn watch(k: &Kc<'_>, args: &[&str], act: impl FnOnce()) -> Vec<String> {
    let cache = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(&k.kubectl.bin)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .env("KUBECONFIG", k.server.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    // Let the watch establish before changing anything.
    std::thread::sleep(Duration::from_millis(1500));
    act();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let _ = child.wait();
    out.lines().map(String::from).collect()
}

#[test]
fn kubectl_1_31() {
    scenario(Kubectl::version("31"));
}

#[test]
fn kubectl_1_33() {
    scenario(Kubectl::version("33"));
}

#[test]
fn kubectl_latest() {
    scenario(Kubectl::latest());
}
