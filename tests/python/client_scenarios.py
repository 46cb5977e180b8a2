"""Scenarios for the official Kubernetes Python client against a running skiff server.

Usage: python client_scenarios.py KUBECONFIG
Exits non-zero, naming the failed check, when the server does not behave as the client expects.
The client (v37, pydantic models) validates every response strictly, so each call below also
checks that the server's JSON matches the upstream types.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
batch = client.BatchV1Api()
coord = client.CoordinationV1Api()
auto_v1 = client.AutoscalingV1Api()
auto_v2 = client.AutoscalingV2Api()
disc = client.DiscoveryV1Api()
NS = "py"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def expect_error(status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        check(e.status == status, f"{fn.__name__} fails with {status} (got {e.status}: {e.body})")
        return e
    check(False, f"{fn.__name__} should fail with {status}")


def pod_spec(image="hello:1.0"):
    return client.V1PodSpec(containers=[client.V1Container(name="main", image=image)])


# Namespaces: create, list, and namespaced objects inside.
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
names = [n.metadata.name for n in core.list_namespace().items]
check({"default", "kube-system", NS} <= set(names), "namespaces listed")
check(core.list_namespaced_pod(NS).items == [], "empty list is an empty array")

# Pods: create without kind/apiVersion (the client sends none), read, patch, status, binding.
pod = core.create_namespaced_pod(NS, client.V1Pod(metadata=client.V1ObjectMeta(name="p1", labels={"app": "web"}), spec=pod_spec()))
check(pod.status.phase == "Pending" and pod.metadata.uid, "pod created Pending with a uid")
check(pod.spec.restart_policy == "Always" and pod.spec.containers[0].image_pull_policy == "IfNotPresent", "pod defaults")
core.patch_namespaced_pod("p1", NS, {"metadata": {"labels": {"tier": "front"}}})
check(core.read_namespaced_pod("p1", NS).metadata.labels == {"app": "web", "tier": "front"}, "strategic merge patch from a dict")
core.patch_namespaced_pod("p1", NS, [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}])
check(core.read_namespaced_pod("p1", NS).metadata.annotations == {"a": "b"}, "JSON patch from a list")
core.create_namespaced_pod_binding("p1", NS, client.V1Binding(metadata=client.V1ObjectMeta(name="p1"), target=client.V1ObjectReference(kind="Node", name="node-a")))
bound = core.read_namespaced_pod("p1", NS)
check(bound.spec.node_name == "node-a", "binding sets spec.nodeName")
check(any(c.type == "PodScheduled" and c.status == "True" for c in bound.status.conditions), "binding sets PodScheduled")
expect_error(409, core.create_namespaced_pod_binding, "p1", NS, client.V1Binding(metadata=client.V1ObjectMeta(name="p1"), target=client.V1ObjectReference(kind="Node", name="node-b")))
status = {"status": {"phase": "Running", "podIP": "10.1.0.7", "containerStatuses": [{"name": "main", "image": "hello:1.0", "imageID": "sha256:abc", "ready": True, "restartCount": 0, "started": True, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}
core.patch_namespaced_pod_status("p1", NS, status)
running = core.read_namespaced_pod_status("p1", NS)
check(running.status.phase == "Running" and running.status.container_statuses[0].ready, "status subresource")
check(core.list_namespaced_pod(NS, field_selector="status.phase=Running").items[0].metadata.name == "p1", "field selector on status.phase")
check(core.list_namespaced_pod(NS, label_selector="app=web,tier notin (db)").items[0].metadata.name == "p1", "label selector")
check(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a").items[0].metadata.name == "p1", "all-namespaces list by node")

# Errors come back as Status objects with Kubernetes reasons.
e = expect_error(404, core.read_namespaced_pod, "nope", NS)
check('pods \\"nope\\" not found' in e.body, "NotFound message")
expect_error(409, core.create_namespaced_pod, NS, client.V1Pod(metadata=client.V1ObjectMeta(name="p1"), spec=pod_spec()))
e = expect_error(422, core.create_namespaced_pod, NS, client.V1Pod(metadata=client.V1ObjectMeta(name="Bad"), spec=pod_spec()))
check("metadata.name" in e.body, "Invalid names the field")
stale = core.read_namespaced_pod("p1", NS)
core.patch_namespaced_pod("p1", NS, {"metadata": {"labels": {"bump": "1"}}})
expect_error(409, core.replace_namespaced_pod, "p1", NS, stale)
expect_error(400, core.list_namespaced_pod, NS, label_selector="a in (b")

# Workloads and their subresources.
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "web"}), spec=pod_spec()),
    ),
)
created = apps.create_namespaced_deployment(NS, dep)
check(created.metadata.generation == 1 and created.spec.strategy.type == "RollingUpdate", "deployment defaults")
apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 5}})
scale = apps.read_namespaced_deployment_scale("web", NS)
check(scale.spec.replicas == 5 and scale.status.selector == "app=web", "scale subresource")
check(apps.read_namespaced_deployment("web", NS).metadata.generation == 2, "spec change bumps generation")
# The deployment controller reports what it made: 5 pods (no node runs them here).
deadline = time.time() + 20
status = None
while time.time() < deadline:
    status = apps.read_namespaced_deployment("web", NS).status
    if status and status.observed_generation == 2 and status.replicas == 5 and status.updated_replicas == 5:
        break
    time.sleep(0.1)
check(status and status.observed_generation == 2 and status.replicas == 5, f"deployment status {status}")
rs = client.V1ReplicaSet(metadata=client.V1ObjectMeta(name="rs"), spec=client.V1ReplicaSetSpec(replicas=1, selector=client.V1LabelSelector(match_labels={"app": "rs"}), template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "rs"}), spec=pod_spec())))
apps.create_namespaced_replica_set(NS, rs)
rc = client.V1ReplicationController(metadata=client.V1ObjectMeta(name="rc"), spec=client.V1ReplicationControllerSpec(replicas=1, template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "rc"}), spec=pod_spec())))
check(core.create_namespaced_replication_controller(NS, rc).spec.selector == {"app": "rc"}, "RC selector defaults to template labels")
job_spec = client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(name="main", image="hello:1.0")])))
job = batch.create_namespaced_job(NS, client.V1Job(metadata=client.V1ObjectMeta(name="once"), spec=job_spec))
check(job.spec.completions == 1 and job.spec.backoff_limit == 6, "job defaults")
check(job.spec.selector.match_labels["batch.kubernetes.io/controller-uid"] == job.metadata.uid, "job selector by uid")
batch.create_namespaced_cron_job(NS, client.V1CronJob(metadata=client.V1ObjectMeta(name="tick"), spec=client.V1CronJobSpec(schedule="@hourly", job_template=client.V1JobTemplateSpec(spec=job_spec))))
check(batch.read_namespaced_cron_job("tick", NS).spec.concurrency_policy == "Allow", "cronjob defaults")
hpa = auto_v1.create_namespaced_horizontal_pod_autoscaler(NS, client.V1HorizontalPodAutoscaler(metadata=client.V1ObjectMeta(name="web"), spec=client.V1HorizontalPodAutoscalerSpec(max_replicas=4, target_cpu_utilization_percentage=70, scale_target_ref=client.V1CrossVersionObjectReference(kind="Deployment", name="web", api_version="apps/v1"))))
check(hpa.spec.min_replicas == 1, "hpa v1 defaults")
v2 = auto_v2.read_namespaced_horizontal_pod_autoscaler("web", NS)
check(v2.spec.metrics[0].resource.target.average_utilization == 70, "hpa v1 and v2 share storage")

# Config, services, discovery, coordination, events, quotas.
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"a": "1"}))
sec = core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"pw": "hunter2"}))
check(sec.data == {"pw": "aHVudGVyMg=="} and sec.type == "Opaque", "secret stringData becomes data")
svc = core.create_namespaced_service(NS, client.V1Service(metadata=client.V1ObjectMeta(name="web"), spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
check(svc.spec.cluster_ip and svc.spec.type == "ClusterIP" and svc.spec.ports[0].protocol == "TCP", "service defaults and cluster IP")
core.create_namespaced_endpoints(NS, client.V1Endpoints(metadata=client.V1ObjectMeta(name="external"), subsets=[client.V1EndpointSubset(addresses=[client.V1EndpointAddress(ip="10.1.0.7")], ports=[client.CoreV1EndpointPort(port=8080)])]))
disc.create_namespaced_endpoint_slice(NS, client.V1EndpointSlice(metadata=client.V1ObjectMeta(name="web-1"), address_type="IPv4", endpoints=[client.V1Endpoint(addresses=["10.1.0.7"])]))
coord.create_namespaced_lease(NS, client.V1Lease(metadata=client.V1ObjectMeta(name="leader"), spec=client.V1LeaseSpec(holder_identity="me", lease_duration_seconds=15)))
core.create_namespaced_service_account(NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot")))
core.create_namespaced_resource_quota(NS, client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="q"), spec=client.V1ResourceQuotaSpec(hard={"pods": "10"})))
core.create_namespaced_event(NS, client.CoreV1Event(metadata=client.V1ObjectMeta(name="e1"), involved_object=client.V1ObjectReference(kind="Pod", name="p1", namespace=NS), reason="Tested", message="hello", type="Normal"))
check(core.list_namespaced_event(NS, field_selector="involvedObject.name=p1").items[0].reason == "Tested", "events by involvedObject")
core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="node-a", labels={"kubernetes.io/hostname": "node-a"})))
check([n.metadata.name for n in core.list_node().items] == ["node-a"], "nodes are cluster-scoped")
for lister in (core.list_namespaced_service_account, core.list_namespaced_resource_quota, core.list_namespaced_endpoints, disc.list_namespaced_endpoint_slice, coord.list_namespaced_lease, apps.list_namespaced_replica_set, core.list_namespaced_replication_controller, batch.list_namespaced_job, batch.list_namespaced_cron_job, auto_v2.list_namespaced_horizontal_pod_autoscaler, core.list_namespaced_config_map, core.list_namespaced_secret):
    check(len(lister(NS).items) >= 1, f"{lister.__name__} lists")

# Watch: live events, resume from a resourceVersion, and 410 after compaction is an ERROR.
rv = core.list_namespaced_config_map(NS).metadata.resource_version
seen = []


def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
time.sleep(0.5)
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w"), data={"x": "1"}))
core.patch_namespaced_config_map("w", NS, {"data": {"x": "2"}})
core.delete_namespaced_config_map("w", NS)
t.join(10)
check(seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")], f"watch events {seen}")
replay = [ev["type"] for ev in watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=1)]
check(replay == ["ADDED", "MODIFIED", "DELETED"], f"watch resumed from a resourceVersion replays history {replay}")
initial = [ev["object"].metadata.name for ev in watch.Watch().stream(core.list_namespaced_config_map, NS, timeout_seconds=1)]
check(initial == ["cfg"], f"watch without resourceVersion starts with the current objects {initial}")
try:
    for _ in watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version="1", timeout_seconds=1):
        pass
    check(False, "watch from a compacted revision fails")
except ApiException as e:
    check(e.status == 410, f"watch from a compacted revision gives 410 (got {e.status})")

# The client's own e2e watch test (test_watch_configmaps): a watch from a list's resourceVersion
# with a label selector sees everything after the list, deletecollection included.
def labelled(name, labels, value="v"):
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data={"config": value})


core.create_namespaced_config_map(NS, labelled("configmap-a", {"e2e-test": "true"}, "a"))
rv = core.list_namespaced_config_map(NS, label_selector="e2e-test=true").metadata.resource_version
core.create_namespaced_config_map(NS, labelled("configmap-b", {"e2e-test": "true"}, "b"))
core.patch_namespaced_config_map("configmap-b", NS, {"data": {"config": "{}"}})
core.delete_collection_namespaced_config_map(NS, label_selector="e2e-test=true")
events = [(ev["type"], ev["object"].metadata.name) for ev in watch.Watch().stream(
    core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=2, label_selector="e2e-test=true")]
check([t for t, _ in events] == ["ADDED", "MODIFIED", "DELETED", "DELETED"]
      and [n for _, n in events[:2]] == ["configmap-b", "configmap-b"],
      f"a selector watch from a list sees create, patch and deletecollection {events}")

# A selector watch resumed after an object left the selector gets DELETED, with the content it
# last matched.
core.create_namespaced_config_map(NS, labelled("tiered", {"tier": "web"}))
rv = core.list_namespaced_config_map(NS, label_selector="tier=web").metadata.resource_version
core.patch_namespaced_config_map("tiered", NS, {"metadata": {"labels": {"tier": "db"}}})
left = [(ev["type"], ev["object"].metadata.labels) for ev in watch.Watch().stream(
    core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=1, label_selector="tier=web")]
check(left == [("DELETED", {"tier": "web"})], f"a resumed selector watch sees the object leave {left}")
core.delete_namespaced_config_map("tiered", NS)

# Paged lists are one revision while writes go on; an exact list reads an older revision.
for i in range(6):
    core.create_namespaced_config_map(NS, labelled(f"page-{i}", {"paged": "true"}))
first = core.list_namespaced_config_map(NS, label_selector="paged=true", limit=2)
core.delete_namespaced_config_map("page-3", NS)
core.create_namespaced_config_map(NS, labelled("page-4a", {"paged": "true"}))
names, token = [c.metadata.name for c in first.items], first.metadata._continue
while token:
    page = core.list_namespaced_config_map(NS, label_selector="paged=true", limit=2, _continue=token)
    check(page.metadata.resource_version == first.metadata.resource_version, "every page is read at the first page's revision")
    names += [c.metadata.name for c in page.items]
    token = page.metadata._continue
check(names == [f"page-{i}" for i in range(6)], f"a paged list is one snapshot {names}")
exact = core.list_namespaced_config_map(NS, label_selector="paged=true", resource_version=first.metadata.resource_version,
                                        resource_version_match="Exact")
check([c.metadata.name for c in exact.items] == [f"page-{i}" for i in range(6)], "resourceVersionMatch=Exact reads the old revision")
check(exact.metadata.resource_version == first.metadata.resource_version, "an exact list answers at its revision")
latest = [c.metadata.name for c in core.list_namespaced_config_map(NS, label_selector="paged=true").items]
check(latest == ["page-0", "page-1", "page-2", "page-4", "page-4a", "page-5"], f"a new list sees the writes {latest}")

# Progress: a bookmark moves forward for a watcher that sees no events.
quiet = core.list_namespaced_pod(NS, field_selector="spec.nodeName=nowhere").metadata.resource_version
for i in range(3):
    core.create_namespaced_config_map(NS, labelled(f"noise-{i}", {}))
after = int(core.list_namespaced_config_map(NS).metadata.resource_version)
resp = core.list_namespaced_pod(NS, field_selector="spec.nodeName=nowhere", watch=True, allow_watch_bookmarks=True,
                                resource_version=quiet, timeout_seconds=3, _preload_content=False)
lines = [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]
marks = [int(ev["object"]["metadata"]["resourceVersion"]) for ev in lines if ev["type"] == "BOOKMARK"]
check(lines and all(ev["type"] == "BOOKMARK" for ev in lines) and max(marks) >= after,
      f"bookmarks carry progress past {after} to a quiet watcher: {marks}")

# A continue token older than the history answers 410; so does an exact list there.
stale = core.list_namespaced_config_map(NS, label_selector="paged=true", limit=2)
for i in range(25):
    core.create_namespaced_config_map(NS, labelled(f"churn-{i}", {}))
    core.delete_namespaced_config_map(f"churn-{i}", NS)
e = expect_error(410, core.list_namespaced_config_map, NS, label_selector="paged=true", limit=2, _continue=stale.metadata._continue)
check("continue parameter is too old" in e.body, f"the 410 says why: {e.body}")
expect_error(410, core.list_namespaced_config_map, NS, resource_version=stale.metadata.resource_version, resource_version_match="Exact")

# A resourceVersion the server has not reached is refused after a short wait, as upstream.
future = str(int(core.list_namespaced_config_map(NS).metadata.resource_version) + 1000)
e = expect_error(504, core.list_namespaced_config_map, NS, resource_version=future)
check("Too large resource version" in e.body, f"the 504 says why: {e.body}")
try:
    for _ in watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=future, timeout_seconds=1):
        pass
    check(False, "a watch from the future fails")
except ApiException as e:
    check(e.status == 504, f"a watch from the future gives 504 (got {e.status})")
# Watch options as kube-apiserver validates them: a resourceVersionMatch needs sendInitialEvents,
# and sendInitialEvents (true or false) needs resourceVersionMatch=NotOlderThan.
expect_error(422, core.list_namespaced_config_map, NS, watch=True, resource_version="1",
             resource_version_match="NotOlderThan", _preload_content=False)
expect_error(422, core.list_namespaced_config_map, NS, watch=True, send_initial_events=False, _preload_content=False)
for c in core.list_namespaced_config_map(NS).items:
    if c.metadata.name.startswith(("page-", "noise-")):
        core.delete_namespaced_config_map(c.metadata.name, NS)

# Delete: graceful for bound pods, immediate otherwise; collections; namespaces cascade.
gone = core.delete_namespaced_config_map("cfg", NS)
expect_error(404, core.read_namespaced_config_map, "cfg", NS)
terminating = core.delete_namespaced_pod("p1", NS)
check(terminating.metadata.deletion_timestamp is not None, "a pod on a node terminates gracefully")
core.delete_namespaced_pod("p1", NS, grace_period_seconds=0)
expect_error(404, core.read_namespaced_pod, "p1", NS)
core.delete_collection_namespaced_secret(NS)
check(core.list_namespaced_secret(NS).items == [], "deletecollection")
fin = core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="held", finalizers=["example.com/hold"])))
core.delete_namespaced_config_map("held", NS)
check(core.read_namespaced_config_map("held", NS).metadata.deletion_timestamp is not None, "finalizers hold deletion")
core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
expect_error(404, core.read_namespaced_config_map, "held", NS)
apps.delete_namespaced_deployment("web", NS)
core.delete_node("node-a")
core.delete_namespace(NS)
for _ in range(100):
    try:
        core.read_namespace(NS)
        time.sleep(0.1)
    except ApiException as e:
        check(e.status == 404, "namespace deleted with its contents")
        break
else:
    check(False, "namespace deletion finished")
print("all python client scenarios passed")
