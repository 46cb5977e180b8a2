//! `skiff describe`: an object and its recent events in the words and layout of
//! `kubectl describe`, for hosts without kubectl.

mod cluster;
mod config;
mod pods;
mod services;
mod text;
mod workloads;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod, ResourceQuota};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, ListParams};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::kubeconfig;
use super::manifest::message;
use super::resource::{self, Resource, Targets};
use text::Text;

/// Show details of objects and their recent events.
#[derive(Args)]
pub struct Describe {
    /// `TYPE` (all objects of the type), `TYPE NAME...` or `TYPE/NAME...`; types as `skiff get`
    /// takes them (pods, pod, po, deployments.apps).
    #[arg(required = true)]
    args: Vec<String>,
    /// The namespace (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// With a type only: the objects with these labels, e.g. `app=web`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// The kubeconfig (default: $KUBECONFIG, then the default data directory's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl Describe {
    pub async fn execute(self) -> anyhow::Result<()> {
        let targets = resource::targets(&self.args)?;
        let client = kubeconfig::client(self.kubeconfig.as_deref()).await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let mut resources: HashMap<String, Resource> = HashMap::new();
        let mut objects: Vec<(String, Result<DynamicObject, String>)> = Vec::new();
        match targets {
            Targets::All(res) => {
                let resource = resource::resolve(&client, &res).await?;
                let api = api(&client, &resource, &namespace);
                let mut lp = ListParams::default();
                if let Some(s) = &self.selector {
                    lp = lp.labels(s);
                }
                let list = api
                    .list(&lp)
                    .await
                    .map_err(|e| anyhow::anyhow!(message(&e)))?;
                if list.items.is_empty() {
                    if resource.namespaced {
                        eprintln!("No resources found in {namespace} namespace.");
                    } else {
                        eprintln!("No resources found");
                    }
                    return Ok(());
                }
                objects.extend(list.items.into_iter().map(|o| (res.clone(), Ok(o))));
                resources.insert(res, resource);
            }
            Targets::Named(named) => {
                if self.selector.is_some() {
                    bail!("name cannot be provided when a selector is specified");
                }
                for (res, name) in named {
                    if !resources.contains_key(&res) {
                        let resource = resource::resolve(&client, &res).await?;
                        resources.insert(res.clone(), resource);
                    }
                    let api = api(&client, &resources[&res], &namespace);
                    let got = api.get(&name).await.map_err(|e| message(&e));
                    objects.push((res, got));
                }
            }
        }
        if let [(_, Err(e))] = objects.as_slice() {
            bail!("{e}");
        }
        let mut failed = false;
        let mut first = true;
        for (res, object) in objects {
            match object {
                Ok(object) => {
                    let text = describe(&client, &resources[&res], object).await?;
                    if !first {
                        print!("\n\n");
                    }
                    first = false;
                    print!("{text}");
                }
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                }
            }
        }
        if failed {
            bail!("some objects could not be described");
        }
        Ok(())
    }
}

fn api(client: &kube::Client, resource: &Resource, namespace: &str) -> Api<DynamicObject> {
    if resource.namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource.api)
    } else {
        Api::all_with(client.clone(), &resource.api)
    }
}

/// The describe text of one object: what its kind's describer shows, then its events.
async fn describe(
    client: &kube::Client,
    resource: &Resource,
    object: DynamicObject,
) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(&object)?;
    value["apiVersion"] = resource.api.api_version.clone().into();
    value["kind"] = resource.api.kind.clone().into();
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let uid = object.metadata.uid.clone().unwrap_or_default();
    let mut t = Text::default();
    match (resource.api.group.as_str(), resource.api.kind.as_str()) {
        ("", "Pod") => pods::pod(&mut t, &typed(value)?),
        ("apps", "Deployment") => {
            let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
            let owned: Vec<ReplicaSet> = list(&rs, ListParams::default())
                .await?
                .into_iter()
                .filter(|rs| controlled_by(&rs.metadata, &uid))
                .collect();
            workloads::deployment(&mut t, &typed(value)?, &owned);
        }
        ("apps", "ReplicaSet") => {
            let rs: ReplicaSet = typed(value)?;
            let selector = text::selector(rs.spec.as_ref().map(|s| &s.selector));
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let pods: Vec<Pod> = if selector == "<none>" {
                Vec::new()
            } else {
                list(&api, ListParams::default().labels(&selector))
                    .await?
                    .into_iter()
                    .filter(|p| controlled_by(&p.metadata, &uid))
                    .collect()
            };
            workloads::replica_set(&mut t, &rs, &pods);
        }
        ("batch", "Job") => workloads::job(&mut t, &typed(value)?),
        ("batch", "CronJob") => workloads::cron_job(&mut t, &typed(value)?),
        ("", "Service") => {
            let name = object.metadata.name.clone().unwrap_or_default();
            let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
            let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
            // As kubectl: slices that cannot be read show as none.
            let slices = list(&api, lp).await.unwrap_or_default();
            services::service(&mut t, &typed(value)?, &slices);
        }
        ("", "Node") => {
            let name = object.metadata.name.clone().unwrap_or_default();
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
            let lease = leases.get_opt(&name).await.ok().flatten();
            let pods: Api<Pod> = Api::all(client.clone());
            let on_node = list(
                &pods,
                ListParams::default().fields(&format!(
                    "spec.nodeName={name},status.phase!=Succeeded,status.phase!=Failed"
                )),
            )
            .await?;
            cluster::node(&mut t, &typed(value)?, lease.as_ref(), &on_node);
        }
        ("", "Namespace") => {
            let name = object.metadata.name.clone().unwrap_or_default();
            let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &name);
            // As kubectl: quotas that cannot be read are left out.
            let quotas = list(&api, ListParams::default()).await.unwrap_or_default();
            cluster::namespace(&mut t, &typed(value)?, &quotas);
        }
        ("", "ConfigMap") => config::config_map(&mut t, &typed(value)?),
        ("", "Secret") => config::secret(&mut t, &typed(value)?),
        _ => generic(&mut t, &value),
    }
    // kubectl shows no events for Secrets and Namespaces.
    let without_events = resource.api.group.is_empty()
        && ["Secret", "Namespace"].contains(&resource.api.kind.as_str());
    if !without_events && let Some(events) = events(client, resource, &object).await {
        describe_events(&mut t, events);
    }
    Ok(t.render())
}

fn typed<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(value)?)
}

async fn list<K>(api: &Api<K>, lp: ListParams) -> anyhow::Result<Vec<K>>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&lp)
        .await
        .map_err(|e| anyhow::anyhow!(message(&e)))?
        .items)
}

fn controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The events about `object`, oldest first: those naming it (and, for namespaced objects, its
/// namespace) as their involved object, narrowed to this incarnation by uid where an event
/// records one. `None` when they cannot be read (describe then shows none, as kubectl does).
async fn events(
    client: &kube::Client,
    resource: &Resource,
    object: &DynamicObject,
) -> Option<Vec<Event>> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let kind = &resource.api.kind;
    let (api, fields): (Api<Event>, String) = match object.metadata.namespace.as_deref() {
        Some(ns) if resource.namespaced => (
            Api::namespaced(client.clone(), ns),
            format!(
                "involvedObject.name={name},involvedObject.namespace={ns},involvedObject.kind={kind}"
            ),
        ),
        // Cluster-scoped objects' events live in any namespace (kubelets record node events in
        // `default`, with the node's name as its uid).
        _ => (
            Api::all(client.clone()),
            format!("involvedObject.name={name},involvedObject.kind={kind}"),
        ),
    };
    let list = api
        .list(&ListParams::default().fields(&fields))
        .await
        .ok()?;
    let uid = object.metadata.uid.as_deref().unwrap_or_default();
    let mut events: Vec<Event> = list
        .items
        .into_iter()
        .filter(|e| {
            !resource.namespaced
                || e.involved_object
                    .uid
                    .as_deref()
                    .is_none_or(|u| u.is_empty() || u == uid)
        })
        .collect();
    events.sort_by_key(last_seen);
    Some(events)
}

fn last_seen(e: &Event) -> Option<jiff::Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
}

/// The Events table of kubectl's describers.
fn describe_events(t: &mut Text, events: Vec<Event>) {
    if events.is_empty() {
        t.field(0, "Events", "<none>");
        return;
    }
    t.line(0, "Events:");
    t.line(1, "Type\tReason\tAge\tFrom\tMessage");
    t.line(1, "----\t------\t----\t----\t-------");
    for e in events {
        let first = match &e.event_time {
            Some(t) => text::since(Some(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                t.0,
            ))),
            None => text::since(e.first_timestamp.as_ref()),
        };
        let age = match (&e.series, e.count.unwrap_or(0)) {
            (Some(series), _) => format!(
                "{} (x{} over {first})",
                text::since(
                    series
                        .last_observed_time
                        .as_ref()
                        .map(|t| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.0))
                        .as_ref()
                ),
                series.count.unwrap_or(0)
            ),
            (None, count) if count > 1 => format!(
                "{} (x{count} over {first})",
                text::since(e.last_timestamp.as_ref())
            ),
            _ => first,
        };
        let from = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .filter(|c| !c.is_empty())
            .or(e.reporting_component.clone())
            .unwrap_or_default();
        t.line(
            1,
            format!(
                "{}\t{}\t{age}\t{from}\t{}",
                e.type_.as_deref().unwrap_or_default(),
                e.reason.as_deref().unwrap_or_default(),
                e.message
                    .as_deref()
                    .unwrap_or_default()
                    .trim()
                    .replace('\n', " ")
            ),
        );
    }
}

/// Any other kind, as kubectl's generic describer shows it: name, namespace, labels and
/// annotations, then every other field of the object, nested, with labels made from the field
/// names.
fn generic(t: &mut Text, object: &Value) {
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(object["metadata"].clone()).unwrap_or_default();
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", &meta);
    if let Some(fields) = object.as_object() {
        const SKIP: [&str; 5] = [
            ".metadata.managedFields",
            ".metadata.name",
            ".metadata.namespace",
            ".metadata.labels",
            ".metadata.annotations",
        ];
        nested(t, 0, fields, "", &SKIP);
    }
}

/// kubectl's printUnstructuredContent: fields in name order, maps and lists nested a level.
fn nested(
    t: &mut Text,
    level: usize,
    fields: &serde_json::Map<String, Value>,
    path: &str,
    skip: &[&str],
) {
    let mut names: Vec<&String> = fields.keys().collect();
    names.sort();
    for name in names {
        let path = format!("{path}.{name}");
        if skip.contains(&path.as_str()) {
            continue;
        }
        match &fields[name] {
            Value::Object(map) => {
                t.line(level, format!("{}:", label(name)));
                nested(t, level + 1, map, &path, skip);
            }
            Value::Array(items) => {
                t.line(level, format!("{}:", label(name)));
                for item in items {
                    match item {
                        Value::Object(map) => nested(t, level + 1, map, &path, skip),
                        other => t.line(level + 1, scalar(other)),
                    }
                }
            }
            other => t.field(level, &label(name), scalar(other)),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

/// A field name as kubectl's generic describer labels it (`involvedObject` → `Involved
/// Object`, `apiVersion` → `API Version`); names with other characters than letters and `-`
/// stay as they are.
fn label(field: &str) -> String {
    if field.chars().any(|c| !c.is_alphabetic() && c != '-') {
        return field.to_string();
    }
    camel_case_words(field)
        .into_iter()
        .filter(|w| w != "_")
        .map(|w| {
            let upper = w.to_uppercase();
            if ["API", "URL", "UID", "OSB", "GUID"].contains(&upper.as_str()) {
                upper
            } else {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits as github.com/fatih/camelcase does: runs of lower-case, upper-case and other
/// characters, the last capital of an upper-case run starting the next word when lower-case
/// follows (`HTTPServer` → `HTTP`, `Server`).
fn camel_case_words(s: &str) -> Vec<String> {
    let class = |c: char| {
        if c.is_lowercase() {
            0
        } else if c.is_uppercase() {
            1
        } else if c.is_numeric() {
            2
        } else {
            3
        }
    };
    let mut runs: Vec<Vec<char>> = Vec::new();
    let mut last = None;
    for c in s.chars() {
        let k = class(c);
        if Some(k) == last {
            if let Some(run) = runs.last_mut() {
                run.push(c);
            }
        } else {
            runs.push(vec![c]);
        }
        last = Some(k);
    }
    for i in 0..runs.len().saturating_sub(1) {
        let upper_then_lower = runs[i].first().is_some_and(|c| c.is_uppercase())
            && runs[i + 1].first().is_some_and(|c| c.is_lowercase());
        if upper_then_lower && let Some(moved) = runs[i].pop() {
            runs[i + 1].insert(0, moved);
        }
    }
    runs.into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.into_iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_become_labels_as_kubectl_makes_them() {
        assert_eq!(label("spec"), "Spec");
        assert_eq!(label("involvedObject"), "Involved Object");
        assert_eq!(label("apiVersion"), "API Version");
        assert_eq!(label("clusterIP"), "Cluster IP");
        assert_eq!(label("podIPs"), "Pod I Ps");
        assert_eq!(label("uid"), "UID");
        assert_eq!(label("x_y"), "x_y");
    }
}
