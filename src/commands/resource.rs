//! Resource names as kubectl takes them on the command line (`pods`, `pod`, `po`,
//! `deployments.apps`), resolved against the server's discovery.

use anyhow::bail;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

/// kubectl's short names for the kinds Skiff serves.
const SHORT_NAMES: [(&str, &str); 14] = [
    ("po", "pods"),
    ("svc", "services"),
    ("deploy", "deployments"),
    ("ns", "namespaces"),
    ("no", "nodes"),
    ("cm", "configmaps"),
    ("rs", "replicasets"),
    ("ep", "endpoints"),
    ("ev", "events"),
    ("sa", "serviceaccounts"),
    ("cj", "cronjobs"),
    ("hpa", "horizontalpodautoscalers"),
    ("quota", "resourcequotas"),
    ("rc", "replicationcontrollers"),
];

/// A resource the server serves.
pub struct Resource {
    /// Its group, version, kind and plural.
    pub api: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
}

impl Resource {
    /// How kubectl names it in messages: `pod`, `deployment.apps`.
    pub fn display(&self) -> String {
        let kind = self.api.kind.to_lowercase();
        if self.api.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", self.api.group)
        }
    }
}

/// Finds the resource `name` names: a plural, a singular or a short name, optionally qualified
/// with its group (`deployments.apps`).
pub async fn resolve(client: &kube::Client, name: &str) -> anyhow::Result<Resource> {
    let name = name.to_lowercase();
    let (name, group) = match name.split_once('.') {
        Some((n, g)) => (n.to_string(), Some(g.to_string())),
        None => (name, None),
    };
    let name = SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == name)
        .map_or(name.clone(), |(_, plural)| plural.to_string());
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| anyhow::anyhow!(super::manifest::message(&e)))?;
    let mut candidates: Vec<(ApiResource, ApiCapabilities)> = Vec::new();
    // Core first, then the groups alphabetically, as kubectl prefers them.
    for g in discovery.groups_alphabetical() {
        if group.as_ref().is_some_and(|want| want != g.name()) {
            continue;
        }
        for (api, caps) in g.recommended_resources() {
            if api.plural == name || api.kind.to_lowercase() == name {
                candidates.push((api, caps));
            }
        }
    }
    candidates.sort_by_key(|(api, _)| !api.group.is_empty());
    match candidates.into_iter().next() {
        Some((api, caps)) => Ok(Resource {
            api,
            namespaced: caps.scope == Scope::Namespaced,
        }),
        None => bail!(
            "the server doesn't have a resource type \"{}\"",
            group.map_or(name.clone(), |g| format!("{name}.{g}"))
        ),
    }
}
