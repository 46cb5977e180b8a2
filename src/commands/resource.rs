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

/// What the command line names: `TYPE` (every object of that type), `TYPE NAME...` or
/// `TYPE/NAME...`.
#[derive(Debug, PartialEq, Eq)]
pub enum Targets {
    /// Every object of this resource type.
    All(String),
    /// (resource type, name) pairs.
    Named(Vec<(String, String)>),
}

/// Parses `TYPE [NAME...]` or `TYPE/NAME...` as kubectl does (and with its messages).
pub fn targets(args: &[String]) -> anyhow::Result<Targets> {
    let Some((first, rest)) = args.split_first() else {
        bail!("you must specify the type of resource");
    };
    if first.contains('/') {
        let mut named = Vec::new();
        for arg in args {
            match arg.split_once('/') {
                Some((res, name)) if !res.is_empty() && !name.is_empty() => {
                    named.push((res.to_string(), name.to_string()))
                }
                Some(_) => {
                    bail!("arguments in resource/name form must have a single resource and name")
                }
                None => bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skiff get resource/<resource_name>' instead of 'skiff get resource resource/<resource_name>'"
                ),
            }
        }
        return Ok(Targets::Named(named));
    }
    if rest.is_empty() {
        return Ok(Targets::All(first.clone()));
    }
    if let Some(bad) = rest.iter().find(|r| r.contains('/')) {
        bail!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skiff get resource/<resource_name>' instead of 'skiff get resource {bad}'"
        );
    }
    Ok(Targets::Named(
        rest.iter().map(|n| (first.clone(), n.clone())).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn targets_as_kubectl_takes_them() {
        assert_eq!(
            targets(&args(&["pods"])).unwrap(),
            Targets::All("pods".into())
        );
        assert_eq!(
            targets(&args(&["pod", "a", "b"])).unwrap(),
            Targets::Named(vec![("pod".into(), "a".into()), ("pod".into(), "b".into())])
        );
        assert_eq!(
            targets(&args(&["pod/a", "deploy/b"])).unwrap(),
            Targets::Named(vec![
                ("pod".into(), "a".into()),
                ("deploy".into(), "b".into())
            ])
        );
        assert!(targets(&args(&["pod/a", "b"])).is_err());
        assert!(targets(&args(&["pod", "deploy/b"])).is_err());
        assert!(targets(&[]).is_err());
    }
}
