//! Endpoints and EndpointSlices: where a Service's traffic can go, from the pods its selector
//! matches.
//!
//! For every Service with a selector, an `Endpoints` object of the same name lists the pods
//! that have an address (ready ones under `addresses`, the others under `notReadyAddresses`)
//! with the Service's ports resolved against each pod's container ports, packed into subsets
//! as upstream packs them; and `EndpointSlices` (owned by the Service, labelled
//! `kubernetes.io/service-name`) list them again with `ready`, `serving` and `terminating`
//! conditions, at most 100 to a slice, one placeholder slice when there are none. Services
//! without a selector are left to whoever writes their endpoints.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::EndpointSubset;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
use serde_json::{Value, json};
use skiff_api::labels::Selector;

use super::owner_ref;
use super::runner::{Action, Key, Reconciler};
use crate::api::resources::ResourceDef;
use crate::api::{
    Api, ApiError, DeleteOptions, ListOptions, Target, WriteOptions, object, resources,
};

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints per slice, as upstream's `--max-endpoints-per-slice` default.
const MAX_PER_SLICE: usize = 100;

/// The endpoints controller and the EndpointSlice controller, as one loop over Services.
pub struct Endpoints;

fn slices_res() -> &'static ResourceDef {
    resources::find("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices are served")
}

/// A Service's selector; `None` for a Service without one (its endpoints are not managed).
pub fn selector_of(service: &Value) -> Option<Selector> {
    let map = service.pointer("/spec/selector")?.as_object()?;
    if map.is_empty() {
        return None;
    }
    let text: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    Selector::parse(&text.join(",")).ok()
}

impl Reconciler for Endpoints {
    fn primary(&self) -> &'static ResourceDef {
        resources::core("services")
    }

    fn owned(&self) -> Vec<&'static ResourceDef> {
        vec![slices_res()]
    }

    fn related(&self) -> Vec<&'static ResourceDef> {
        vec![resources::core("pods"), resources::core("endpoints")]
    }

    fn relation(&self, res: &'static ResourceDef, obj: &Value) -> Value {
        if res.plural == "endpoints" {
            json!(object::name(obj))
        } else {
            object::labels(obj).cloned().unwrap_or(Value::Null)
        }
    }

    fn relates(&self, service: &Value, res: &'static ResourceDef, relation: &Value) -> bool {
        let Some(selector) = selector_of(service) else {
            return false;
        };
        if res.plural == "endpoints" {
            relation == object::name(service)
        } else {
            selector.matches_json(Some(relation))
        }
    }

    fn reconcile<'a>(
        &'a self,
        api: &'a Api,
        key: &'a Key,
        object: Option<Arc<Value>>,
    ) -> BoxFuture<'a, Result<Action, ApiError>> {
        sync(api, key, object).boxed()
    }
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn pod_ip(pod: &Value) -> &str {
    pod.pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether a pod belongs in a Service's endpoints at all (upstream's
/// `ShouldPodBeInEndpoints`): it has an address, is not terminating unless those are
/// included, and has not finished for good.
fn should_be_in_endpoints(pod: &Value, include_terminating: bool) -> bool {
    if pod_ip(pod).is_empty() {
        return false;
    }
    if !include_terminating && object::is_terminating(pod) {
        return false;
    }
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    match pod.pointer("/spec/restartPolicy").and_then(Value::as_str) {
        Some("Never") => !matches!(phase, Some("Failed" | "Succeeded")),
        Some("OnFailure") => phase != Some("Succeeded"),
        _ => true,
    }
}

/// The pod port a Service port sends to: its `targetPort` as a number, or the container port
/// of that name and protocol (upstream's `FindPort`).
fn find_port(pod: &Value, service_port: &Value) -> Option<i32> {
    let protocol = service_port["protocol"].as_str().unwrap_or("TCP");
    match service_port.get("targetPort") {
        Some(Value::String(name)) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| {
                p["name"] == name.as_str() && p["protocol"].as_str().unwrap_or("TCP") == protocol
            })
            .and_then(|p| p["containerPort"].as_i64()),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n > 0) => n.as_i64(),
        _ => service_port["port"].as_i64(),
    }
    .and_then(|p| i32::try_from(p).ok())
}

fn headless(service: &Value) -> bool {
    service.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None")
}

fn publish_not_ready(service: &Value) -> bool {
    service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn service_ports(service: &Value) -> Vec<Value> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": object::namespace(pod), "name": object::name(pod),
           "uid": object::uid(pod)})
}

fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// The pod's hostname in the Service's DNS, when it names the Service as its subdomain.
fn hostname<'a>(service: &Value, pod: &'a Value) -> Option<&'a str> {
    let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str)?;
    let subdomain = pod.pointer("/spec/subdomain").and_then(Value::as_str);
    (!hostname.is_empty()
        && subdomain == Some(object::name(service))
        && object::namespace(pod) == object::namespace(service))
    .then_some(hostname)
}

/// The subsets of a Service's `Endpoints`, packed as upstream's `RepackSubsets` packs them:
/// addresses that offer the same ports share a subset; addresses sorted by IP, then pod.
pub fn subsets(service: &Value, pods: &[impl Borrow<Value>]) -> Vec<EndpointSubset> {
    let tolerate = publish_not_ready(service);
    let ports = service_ports(service);
    // Each port (or, for a headless Service without ports, none) with the addresses that
    // offer it: (ip, pod uid) -> (address, ready).
    type Addresses = BTreeMap<(String, String), (Value, bool)>;
    let mut by_port: BTreeMap<String, (Option<Value>, Addresses)> = BTreeMap::new();
    for pod in pods.iter().map(Borrow::borrow) {
        if !should_be_in_endpoints(pod, tolerate) {
            continue;
        }
        let mut address = json!({"ip": pod_ip(pod), "targetRef": target_ref(pod)});
        if let Some(node) = node_name(pod) {
            address["nodeName"] = json!(node);
        }
        if let Some(h) = hostname(service, pod) {
            address["hostname"] = json!(h);
        }
        let ready = tolerate || is_ready(pod);
        let id = (pod_ip(pod).to_string(), object::uid(pod).to_string());
        if ports.is_empty() {
            if headless(service) {
                let entry = by_port.entry(String::new()).or_default();
                entry.1.insert(id, (address, ready));
            }
            continue;
        }
        for port in &ports {
            let Some(number) = find_port(pod, port) else {
                continue;
            };
            let mut endpoint_port = json!({
                "port": number,
                "protocol": port["protocol"].as_str().unwrap_or("TCP"),
            });
            if let Some(name) = port["name"].as_str().filter(|n| !n.is_empty()) {
                endpoint_port["name"] = json!(name);
            }
            if let Some(p) = port.get("appProtocol").filter(|p| p.is_string()) {
                endpoint_port["appProtocol"] = p.clone();
            }
            let entry = by_port.entry(endpoint_port.to_string()).or_default();
            entry.0 = Some(endpoint_port);
            entry.1.insert(id.clone(), (address.clone(), ready));
        }
    }
    // Ports offered by the same addresses share a subset.
    let mut by_addresses: BTreeMap<String, (Vec<Value>, Addresses)> = BTreeMap::new();
    for (_, (port, addresses)) in by_port {
        let key = addresses
            .iter()
            .map(|((ip, uid), (_, ready))| format!("{ip}/{uid}/{ready}"))
            .collect::<Vec<_>>()
            .join(",");
        let entry = by_addresses.entry(key).or_default();
        entry.0.extend(port);
        entry.1 = addresses;
    }
    let mut out: Vec<Value> = by_addresses
        .into_values()
        .map(|(ports, addresses)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) =
                addresses.into_values().partition(|(_, ready)| *ready);
            let list = |v: Vec<(Value, bool)>| {
                (!v.is_empty()).then(|| v.into_iter().map(|(a, _)| a).collect::<Vec<_>>())
            };
            let mut subset = json!({});
            if let Some(a) = list(ready) {
                subset["addresses"] = json!(a);
            }
            if let Some(a) = list(not_ready) {
                subset["notReadyAddresses"] = json!(a);
            }
            if !ports.is_empty() {
                subset["ports"] = json!(ports);
            }
            subset
        })
        .collect();
    out.sort_by_key(|s| s.to_string());
    out.into_iter()
        .filter_map(|s| serde_json::from_value(s).ok())
        .collect()
}

/// What one EndpointSlice holds: the ports its endpoints share, and the endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceContent {
    /// Resolved ports (the same for every endpoint of the slice).
    pub ports: Vec<EndpointPort>,
    /// The endpoints, sorted by address and pod.
    pub endpoints: Vec<Endpoint>,
}

/// The EndpointSlices a Service should have: endpoints grouped by their resolved ports, at
/// most 100 to a slice; one empty placeholder when there are none.
pub fn slices(service: &Value, pods: &[impl Borrow<Value>]) -> Vec<SliceContent> {
    let tolerate = publish_not_ready(service);
    let ports = service_ports(service);
    // Endpoints by their resolved ports: (ports, [(ip, pod name, endpoint)]).
    type Group = (Vec<Value>, Vec<(String, String, Value)>);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods.iter().map(Borrow::borrow) {
        let ip = pod_ip(pod);
        // Terminating pods stay, marked so; the slices are IPv4.
        if !should_be_in_endpoints(pod, true) || ip.parse::<std::net::Ipv4Addr>().is_err() {
            continue;
        }
        let serving = is_ready(pod);
        let terminating = object::is_terminating(pod);
        let ready = tolerate || (serving && !terminating);
        let mut endpoint = json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            "targetRef": target_ref(pod),
        });
        if let Some(node) = node_name(pod) {
            endpoint["nodeName"] = json!(node);
        }
        if let Some(h) = hostname(service, pod) {
            endpoint["hostname"] = json!(h);
        }
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|port| {
                let number = find_port(pod, port)?;
                let mut p = json!({
                    "name": port["name"].as_str().unwrap_or(""),
                    "port": number,
                    "protocol": port["protocol"].as_str().unwrap_or("TCP"),
                });
                if let Some(a) = port.get("appProtocol").filter(|a| a.is_string()) {
                    p["appProtocol"] = a.clone();
                }
                Some(p)
            })
            .collect();
        let group = groups.entry(json!(resolved).to_string()).or_default();
        group.0 = resolved;
        group
            .1
            .push((ip.to_string(), object::name(pod).to_string(), endpoint));
    }
    let mut out = Vec::new();
    for (_, (ports, mut endpoints)) in groups {
        endpoints.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let ports: Vec<EndpointPort> = serde_json::from_value(json!(ports)).unwrap_or_default();
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            out.push(SliceContent {
                ports: ports.clone(),
                endpoints: chunk
                    .iter()
                    .filter_map(|(_, _, e)| serde_json::from_value(e.clone()).ok())
                    .collect(),
            });
        }
    }
    if out.is_empty() {
        out.push(SliceContent {
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }
    out
}

/// The Service's labels with `extra` set, and the headless label as it should be.
fn labels_for(service: &Value, extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut labels = object::labels(service)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for reserved in [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL] {
        labels.remove(reserved);
    }
    if headless(service) {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    }
    for (k, v) in extra {
        labels.insert((*k).into(), json!(v));
    }
    labels
}

fn labels_of(obj: &Value) -> serde_json::Map<String, Value> {
    object::labels(obj)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn not_found_ok<T>(r: Result<T, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[tracing::instrument(skip(api), fields(service = %format!("{ns}/{name}")))]
async fn sync(
    api: &Api,
    (ns, name): &Key,
    service: Option<Arc<Value>>,
) -> Result<Action, ApiError> {
    let endpoints_res = resources::core("endpoints");
    let service = match service {
        Some(s) => s,
        None => {
            // Its slices go with it (they are owned); its Endpoints are not, as upstream.
            let deleted = api
                .delete(endpoints_res, Some(ns), name, &DeleteOptions::default())
                .await;
            not_found_ok(deleted)?;
            return Ok(Action::Await);
        }
    };
    let Some(selector) = selector_of(&service) else {
        return Ok(Action::Await);
    };
    if object::is_terminating(&service) {
        return Ok(Action::Await);
    }
    let pods = api.list_shared(resources::core("pods"), Some(ns), |i| {
        selector.matches_json(Some(&i.labels))
    })?;

    // Endpoints.
    let subsets = subsets(&service, &pods);
    let labels = labels_for(&service, &[]);
    let subsets_json = json!(subsets);
    match api.get(endpoints_res, Some(ns), name) {
        Ok(current) => {
            let current_subsets: Vec<EndpointSubset> = current
                .get("subsets")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            if current_subsets != subsets || labels_of(&current) != labels {
                let mut updated = current.clone();
                updated["metadata"]["labels"] = json!(labels);
                match updated.as_object_mut() {
                    Some(o) if subsets.is_empty() => {
                        o.remove("subsets");
                    }
                    _ => updated["subsets"] = subsets_json,
                }
                let written = api
                    .update(
                        endpoints_res,
                        Some(ns),
                        name,
                        updated,
                        Target::Main,
                        &WriteOptions::default(),
                    )
                    .await;
                not_found_ok(written)?;
            }
        }
        Err(e) if e.code == 404 => {
            let mut endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": labels}});
            if !subsets.is_empty() {
                endpoints["subsets"] = subsets_json;
            }
            match api
                .create(endpoints_res, Some(ns), endpoints, &WriteOptions::default())
                .await
            {
                Ok(_) => {}
                // Written meanwhile: the watch event brings us back.
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }

    // EndpointSlices: reuse a slice with the same ports, create the missing, delete the rest.
    let slices_res = slices_res();
    let uid = object::uid(&service);
    let slice_labels = labels_for(
        &service,
        &[(SERVICE_NAME_LABEL, name), (MANAGED_BY_LABEL, MANAGED_BY)],
    );
    let opts = ListOptions {
        labels: Selector::parse(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        ))
        .map_err(|e| ApiError::internal(e.to_string()))?,
        ..Default::default()
    };
    let mut existing: Vec<(Value, SliceContent)> = api
        .list(slices_res, Some(ns), &opts)?
        .items
        .into_iter()
        .filter(|s| {
            s.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| r["controller"] == true && r["uid"] == uid)
        })
        .map(|s| {
            let content = SliceContent {
                ports: s
                    .get("ports")
                    .and_then(|p| serde_json::from_value(p.clone()).ok())
                    .unwrap_or_default(),
                endpoints: s
                    .get("endpoints")
                    .and_then(|p| serde_json::from_value(p.clone()).ok())
                    .unwrap_or_default(),
            };
            (s, content)
        })
        .collect();
    for want in slices(&service, &pods) {
        let body = |base: Value| {
            let mut slice = base;
            slice["metadata"]["labels"] = json!(slice_labels);
            slice["addressType"] = json!("IPv4");
            slice["endpoints"] = json!(want.endpoints);
            slice["ports"] = json!(want.ports);
            slice
        };
        if let Some(i) = existing.iter().position(|(_, c)| c.ports == want.ports) {
            let (current, content) = existing.remove(i);
            if content != want || labels_of(&current) != slice_labels {
                let written = api
                    .update(
                        slices_res,
                        Some(ns),
                        object::name(&current),
                        body(current.clone()),
                        Target::Main,
                        &WriteOptions::default(),
                    )
                    .await;
                not_found_ok(written)?;
            }
        } else {
            let slice = body(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": format!("{name}-"), "namespace": ns,
                             "ownerReferences": [owner_ref(&service, resources::core("services"))]},
            }));
            api.create(slices_res, Some(ns), slice, &WriteOptions::default())
                .await?;
        }
    }
    for (stale, _) in existing {
        let deleted = api
            .delete(
                slices_res,
                Some(ns),
                object::name(&stale),
                &DeleteOptions::default(),
            )
            .await;
        not_found_ok(deleted)?;
    }
    Ok(Action::Await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(extra: Value) -> Value {
        let mut s = json!({"metadata": {"name": "web", "namespace": "default", "uid": "s1",
                                        "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.1",
                     "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
                               {"name": "metrics", "port": 9090, "targetPort": 9091, "protocol": "TCP"}]}});
        if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        s
    }

    fn pod(name: &str, ip: &str, ready: bool, web_port: Option<i64>) -> Value {
        let ports = web_port.map_or(json!([]), |p| json!([{"name": "web", "containerPort": p}]));
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                            "labels": {"app": "web"}},
               "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "ports": ports}]},
               "status": {"phase": "Running", "podIP": ip, "conditions": [
                   {"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    fn json_of<T: serde::Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn ready_pods_are_addresses_and_the_others_not_ready_addresses() {
        let pods = [
            pod("b", "10.1.0.2", true, Some(8080)),
            pod("a", "10.1.0.1", false, Some(8080)),
            pod("c", "", true, Some(8080)),
        ];
        let subsets = json_of(&subsets(&service(json!({})), &pods));
        assert_eq!(
            subsets,
            json!([{
                "addresses": [{"ip": "10.1.0.2", "nodeName": "edge-1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "b", "uid": "u-b"}}],
                "notReadyAddresses": [{"ip": "10.1.0.1", "nodeName": "edge-1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "u-a"}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "metrics", "port": 9091, "protocol": "TCP"}],
            }])
        );
    }

    #[test]
    fn a_named_target_port_splits_pods_that_resolve_it_differently() {
        let pods = [
            pod("a", "10.1.0.1", true, Some(8080)),
            pod("b", "10.1.0.2", true, Some(8081)),
            pod("c", "10.1.0.3", true, None),
        ];
        let subsets = json_of(&subsets(&service(json!({})), &pods));
        let subsets = subsets.as_array().unwrap();
        // metrics (numeric) is offered by all three; http by a on 8080 and by b on 8081.
        assert_eq!(subsets.len(), 3, "{subsets:?}");
        let all = subsets
            .iter()
            .find(|s| s["addresses"].as_array().unwrap().len() == 3)
            .unwrap();
        assert_eq!(
            all["ports"],
            json!([{"name": "metrics", "port": 9091, "protocol": "TCP"}])
        );
        let b = subsets
            .iter()
            .find(|s| {
                s["addresses"][0]["ip"] == "10.1.0.2"
                    && s["addresses"].as_array().unwrap().len() == 1
            })
            .unwrap();
        assert_eq!(b["ports"][0]["port"], 8081);

        // In slices, each pod carries its own resolved ports: three groups.
        let slices = slices(&service(json!({})), &pods);
        assert_eq!(slices.len(), 3);
        assert!(slices.iter().all(|s| s.endpoints.len() == 1));
    }

    #[test]
    fn pods_of_the_same_node_share_an_ip_and_stay_distinct() {
        let pods = [
            pod("a", "127.0.0.1", true, Some(8080)),
            pod("b", "127.0.0.1", true, Some(8080)),
        ];
        let subsets = json_of(&subsets(&service(json!({})), &pods));
        assert_eq!(subsets[0]["addresses"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn terminating_and_finished_pods() {
        let mut terminating = pod("t", "10.1.0.1", true, Some(8080));
        terminating["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let mut done = pod("d", "10.1.0.2", false, Some(8080));
        done["spec"]["restartPolicy"] = json!("Never");
        done["status"]["phase"] = json!("Succeeded");
        let pods = [terminating, done];
        assert!(subsets(&service(json!({})), &pods).is_empty());
        let slices = slices(&service(json!({})), &pods);
        assert_eq!(slices.len(), 1);
        let endpoint = json_of(&slices[0].endpoints);
        assert_eq!(
            endpoint,
            json!([{"addresses": ["10.1.0.1"], "nodeName": "edge-1",
                "conditions": {"ready": false, "serving": true, "terminating": true},
                "targetRef": {"kind": "Pod", "namespace": "default", "name": "t", "uid": "u-t"}}])
        );
        assert_eq!(
            json_of(&slices[0].ports),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                   {"name": "metrics", "port": 9091, "protocol": "TCP"}])
        );
    }

    #[test]
    fn publish_not_ready_addresses_lists_every_pod_as_ready() {
        let svc = service(json!({"spec": {"selector": {"app": "web"},
            "publishNotReadyAddresses": true, "ports": [{"port": 80, "targetPort": 80}]}}));
        let pods = [pod("a", "10.1.0.1", false, None)];
        let subsets = json_of(&subsets(&svc, &pods));
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.1.0.1");
        assert!(subsets[0].get("notReadyAddresses").is_none());
        let slices = slices(&svc, &pods);
        assert_eq!(
            json_of(&slices[0].endpoints[0].conditions),
            json!({"ready": true, "serving": false, "terminating": false})
        );
    }

    #[test]
    fn headless_services_without_ports_list_bare_addresses() {
        let svc = service(json!({"spec": {"selector": {"app": "web"}, "clusterIP": "None"}}));
        let mut p = pod("a", "10.1.0.1", true, None);
        p["spec"]["hostname"] = json!("a");
        p["spec"]["subdomain"] = json!("web");
        let subsets = json_of(&subsets(&svc, &[p.clone()]));
        assert_eq!(
            subsets,
            json!([{"addresses": [{"ip": "10.1.0.1", "hostname": "a", "nodeName": "edge-1",
                "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "u-a"}}]}])
        );
        let labels = labels_for(&svc, &[]);
        assert_eq!(labels.get(HEADLESS_LABEL), Some(&json!("")));
        assert_eq!(labels.get("team"), Some(&json!("a")));
    }

    #[test]
    fn no_endpoints_leave_one_empty_slice_and_many_are_split() {
        let svc = service(json!({}));
        assert_eq!(
            slices(&svc, &[] as &[Value]),
            [SliceContent {
                ports: vec![],
                endpoints: vec![]
            }]
        );
        let pods: Vec<Value> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.1.{}.{}", i / 200, i % 200),
                    true,
                    Some(8080),
                )
            })
            .collect();
        let sizes: Vec<usize> = slices(&svc, &pods)
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    #[test]
    fn services_without_a_selector_are_not_managed() {
        let svc = service(json!({"spec": {"ports": [{"port": 80}]}}));
        assert!(selector_of(&svc).is_none());
        assert!(!Endpoints.relates(&svc, resources::core("pods"), &json!({"app": "web"})));
        let svc = service(json!({}));
        assert!(Endpoints.relates(&svc, resources::core("pods"), &json!({"app": "web"})));
        assert!(!Endpoints.relates(&svc, resources::core("pods"), &json!({"app": "db"})));
        assert!(Endpoints.relates(&svc, resources::core("endpoints"), &json!("web")));
    }
}
