//! LoadBalancer Services served by the nodes themselves, as k3s's ServiceLB serves them.
//!
//! Every agent answers a LoadBalancer Service's ports at its own node address (see the agent's
//! proxy), so the nodes are the load balancer: this controller writes the addresses of the
//! Ready nodes (ExternalIP, else InternalIP) into the Service's `status.loadBalancer.ingress`
//! (`ip`, `ipMode: VIP`), which `kubectl get svc` shows as EXTERNAL-IP, and keeps them current
//! as nodes come, go and change readiness. The agents answer a Service's ports only once it
//! has addresses.
//!
//! Each port (and protocol) of the nodes can be answered for one Service only. The oldest
//! LoadBalancer Service asking for a port keeps it; a later one asking for a port another
//! LoadBalancer Service holds, or that is a Service's NodePort, stays pending (no addresses)
//! with a warning Event that says which Service holds it, and gets its addresses once the port
//! is free. Services with a `loadBalancerClass` belong to another load balancer and are left
//! alone, as are nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::write_status;
use crate::api::{Api, ListOptions, WatchEvent, object, resources};
use crate::events;

const COMPONENT: &str = "service-lb-controller";
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// `namespace`, `name` of a Service.
type Key = (String, String);

#[derive(Default)]
struct State {
    services: BTreeMap<Key, Value>,
    /// The address each node is reached at while it is Ready.
    nodes: HashMap<String, Option<String>>,
    /// Why each pending Service is pending, as last reported in an Event.
    pending: HashMap<Key, String>,
    dirty: bool,
}

/// Runs until `stop`.
pub async fn run(api: Api, stop: CancellationToken) {
    loop {
        let services = api.watch(
            resources::core("services"),
            None,
            &ListOptions::default(),
            None,
            false,
        );
        let nodes = api.watch(
            resources::core("nodes"),
            None,
            &ListOptions::default(),
            None,
            false,
        );
        let (Ok(services), Ok(nodes)) = (services, nodes) else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.cancelled() => return,
            }
        };
        let mut events =
            futures::stream::select(services.map(|e| (true, e)), nodes.map(|e| (false, e)));
        let mut state = State::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => {
                    let Some((is_service, event)) = e else { break };
                    state.observe(is_service, event);
                    // Take in everything that has arrived before deciding (a whole list).
                    while let Some(Some((is_service, event))) = events.next().now_or_never() {
                        state.observe(is_service, event);
                    }
                }
                // A status write failed: try again.
                _ = tokio::time::sleep(Duration::from_millis(500)), if state.dirty => {}
            }
            if std::mem::take(&mut state.dirty) {
                state.sync(&api).await;
            }
        }
        // The watches ended (compaction): start over from a fresh list.
    }
}

impl State {
    fn observe(&mut self, is_service: bool, event: WatchEvent) {
        let (obj, deleted) = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
            WatchEvent::Bookmark { .. } | WatchEvent::Error(_) => return,
        };
        let name = object::name(&obj).to_string();
        if is_service {
            let key = (object::namespace(&obj).to_string(), name);
            if deleted {
                self.services.remove(&key);
                self.pending.remove(&key);
            } else {
                self.services.insert(key, Value::clone(&obj));
            }
            self.dirty = true;
            return;
        }
        let address = if deleted { None } else { ready_address(&obj) };
        if self.nodes.get(&name) != Some(&address) {
            self.dirty = true;
        }
        if deleted {
            self.nodes.remove(&name);
        } else {
            self.nodes.insert(name, address);
        }
    }

    /// Writes the status each LoadBalancer Service should have, where it differs; a failed
    /// write leaves the state dirty, to be tried again.
    async fn sync(&mut self, api: &Api) {
        let mut addresses: Vec<String> = self.nodes.values().flatten().cloned().collect();
        addresses.sort();
        addresses.dedup();
        for (svc, decision) in plan(self.services.values(), &addresses) {
            let key = (
                object::namespace(svc).to_string(),
                object::name(svc).to_string(),
            );
            let current = ingress_of(svc);
            let wanted = match &decision {
                Ok(ingress) => ingress.clone(),
                Err(_) => Vec::new(),
            };
            if current != wanted {
                let ingress = if wanted.is_empty() {
                    Value::Null
                } else {
                    json!(wanted)
                };
                let status = json!({"loadBalancer": {"ingress": ingress}});
                if let Err(e) =
                    write_status(api, resources::core("services"), &key.0, &key.1, status).await
                {
                    tracing::debug!(service = %format!("{}/{}", key.0, key.1), error = %e.message, "cannot write the load balancer status");
                    self.dirty = true;
                    continue;
                }
            }
            match decision {
                Ok(ingress) => {
                    let was_pending = self.pending.remove(&key).is_some();
                    if !ingress.is_empty() && (current.is_empty() || was_pending) {
                        events::record(
                            api,
                            svc,
                            "Normal",
                            "EnsuredLoadBalancer",
                            "Ensured load balancer",
                            COMPONENT,
                        )
                        .await;
                    }
                }
                Err(why) => {
                    if self.pending.get(&key) != Some(&why) {
                        events::record(
                            api,
                            svc,
                            "Warning",
                            "SyncLoadBalancerFailed",
                            &format!("Error syncing load balancer: {why}"),
                            COMPONENT,
                        )
                        .await;
                        self.pending.insert(key, why);
                    }
                }
            }
        }
    }
}

/// The address a Ready node is reached at (its ExternalIP, else its InternalIP); `None` for a
/// node that is not Ready or is excluded from load balancers.
fn ready_address(node: &Value) -> Option<String> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let excluded = object::labels(node).is_some_and(|l| l.get(EXCLUDE_LABEL).is_some());
    if !ready || excluded {
        return None;
    }
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    ["ExternalIP", "InternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a["type"] == *kind)
            .and_then(|a| a["address"].as_str())
            .map(String::from)
    })
}

fn ingress_of(svc: &Value) -> Vec<Value> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// What each LoadBalancer Service gets: the nodes' `addresses` as its ingress, or why it is
/// pending (a port of the nodes that another Service holds).
fn plan<'a>(
    services: impl Iterator<Item = &'a Value> + Clone,
    addresses: &[String],
) -> Vec<(&'a Value, Result<Vec<Value>, String>)> {
    let owner = |svc: &Value| format!("{}/{}", object::namespace(svc), object::name(svc));
    let ports = |svc: &'a Value| {
        svc.pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    // Every NodePort is answered on every node: nobody else can have it.
    let mut held: HashMap<(String, i64), String> = HashMap::new();
    for svc in services.clone() {
        for p in ports(svc) {
            if let Some(np) = p["nodePort"].as_i64() {
                let protocol = p["protocol"].as_str().unwrap_or("TCP").to_string();
                held.insert(
                    (protocol, np),
                    format!("the NodePort of Service {}", owner(svc)),
                );
            }
        }
    }
    let mut balanced: Vec<&Value> = services
        .filter(|svc| {
            svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
                && svc
                    .pointer("/spec/loadBalancerClass")
                    .is_none_or(Value::is_null)
                && !object::is_terminating(svc)
        })
        .collect();
    // A Service that already has the nodes keeps them; otherwise the oldest (creation times
    // have a resolution of a second, so Services made in the same second go by name).
    balanced.sort_by_key(|svc| {
        let serving = svc
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .is_some_and(|i| !i.is_empty());
        (
            !serving,
            object::path(svc, "metadata.creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            owner(svc),
        )
    });
    let ingress: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    let mut out = Vec::new();
    for svc in balanced {
        let me = owner(svc);
        let wanted: Vec<(String, i64)> = ports(svc)
            .filter_map(|p| {
                let protocol = p["protocol"].as_str().unwrap_or("TCP").to_string();
                Some((protocol, p["port"].as_i64()?))
            })
            .collect();
        let conflict = wanted.iter().find_map(|(protocol, port)| {
            let holder = held.get(&(protocol.clone(), *port))?;
            (!holder.ends_with(&format!(" {me}")))
                .then(|| format!("port {port}/{protocol} of the nodes is already used by {holder}"))
        });
        match conflict {
            Some(why) => out.push((svc, Err(why))),
            None => {
                for key in wanted {
                    held.insert(key, format!("LoadBalancer Service {me}"));
                }
                out.push((svc, Ok(ingress.clone())));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, created: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
               "spec": spec})
    }

    fn outcome(plan: Vec<(&Value, Result<Vec<Value>, String>)>) -> Vec<(String, String)> {
        plan.into_iter()
            .map(|(svc, d)| {
                let d = match d {
                    Ok(ingress) => ingress
                        .iter()
                        .map(|i| {
                            format!(
                                "{} {}",
                                i["ip"].as_str().unwrap(),
                                i["ipMode"].as_str().unwrap()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    Err(why) => why,
                };
                (object::name(svc).to_string(), d)
            })
            .collect()
    }

    #[test]
    fn a_service_that_has_the_nodes_keeps_them() {
        let addresses = vec!["127.0.0.2".to_string()];
        let spec = json!({"type": "LoadBalancer", "ports": [{"port": 8080, "protocol": "TCP"}]});
        let mut holder = service("web", "2024-01-01T00:00:01Z", spec.clone());
        holder["status"] = json!({"loadBalancer": {"ingress": [{"ip": "127.0.0.2"}]}});
        // Made in the same second, and first by name: it still waits for the holder.
        let later = service("later", "2024-01-01T00:00:01Z", spec);
        let services = [later, holder];
        assert_eq!(
            outcome(plan(services.iter(), &addresses)),
            [
                ("web".to_string(), "127.0.0.2 VIP".to_string()),
                (
                    "later".to_string(),
                    "port 8080/TCP of the nodes is already used by LoadBalancer Service default/web"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn the_oldest_service_keeps_a_port_and_later_ones_wait() {
        let addresses = vec!["127.0.0.2".to_string(), "127.0.0.3".to_string()];
        let services = [
            service(
                "second",
                "2024-01-01T00:00:02Z",
                json!({"type": "LoadBalancer", "ports": [{"port": 8080, "protocol": "TCP", "nodePort": 30001}]}),
            ),
            service(
                "first",
                "2024-01-01T00:00:01Z",
                json!({"type": "LoadBalancer", "ports": [{"port": 8080, "protocol": "TCP", "nodePort": 30002}]}),
            ),
            service(
                "udp",
                "2024-01-01T00:00:03Z",
                json!({"type": "LoadBalancer", "ports": [{"port": 8080, "protocol": "UDP", "nodePort": 30003}]}),
            ),
            service(
                "on-a-node-port",
                "2024-01-01T00:00:04Z",
                json!({"type": "LoadBalancer", "ports": [{"port": 30005, "protocol": "TCP", "nodePort": 30004}]}),
            ),
            service(
                "own-node-port",
                "2024-01-01T00:00:05Z",
                json!({"type": "LoadBalancer", "ports": [{"port": 30006, "protocol": "TCP", "nodePort": 30006}]}),
            ),
            service(
                "node-port",
                "2024-01-01T00:00:00Z",
                json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30005}]}),
            ),
            service(
                "other-class",
                "2024-01-01T00:00:00Z",
                json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb", "ports": [{"port": 8080}]}),
            ),
        ];
        let both = "127.0.0.2 VIP,127.0.0.3 VIP".to_string();
        assert_eq!(
            outcome(plan(services.iter(), &addresses)),
            [
                ("first".to_string(), both.clone()),
                (
                    "second".to_string(),
                    "port 8080/TCP of the nodes is already used by LoadBalancer Service default/first".to_string()
                ),
                ("udp".to_string(), both.clone()),
                (
                    "on-a-node-port".to_string(),
                    "port 30005/TCP of the nodes is already used by the NodePort of Service default/node-port".to_string()
                ),
                ("own-node-port".to_string(), both),
            ]
        );
        // Once the holder is gone, the waiting Service gets the port.
        let rest: Vec<&Value> = services
            .iter()
            .filter(|s| object::name(s) != "first")
            .collect();
        let second = outcome(plan(rest.into_iter(), &addresses));
        assert_eq!(
            second[0],
            (
                "second".to_string(),
                "127.0.0.2 VIP,127.0.0.3 VIP".to_string()
            )
        );
    }

    #[test]
    fn only_ready_nodes_that_are_not_excluded_serve() {
        let node = |ready: &str, labels: Value, addresses: Value| {
            json!({"metadata": {"name": "n", "labels": labels},
                   "status": {"conditions": [{"type": "Ready", "status": ready}], "addresses": addresses}})
        };
        let internal = json!([{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "n"}]);
        assert_eq!(
            ready_address(&node("True", json!({}), internal.clone())),
            Some("10.0.0.5".into())
        );
        assert_eq!(
            ready_address(&node("Unknown", json!({}), internal.clone())),
            None
        );
        assert_eq!(
            ready_address(&node("True", json!({EXCLUDE_LABEL: ""}), internal)),
            None
        );
        let both = json!([{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "ExternalIP", "address": "203.0.113.5"}]);
        assert_eq!(
            ready_address(&node("True", json!({}), both)),
            Some("203.0.113.5".into())
        );
    }
}
