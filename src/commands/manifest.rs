//! Manifests: YAML or JSON files (several documents per file, `kind: List` expanded) read from
//! files, directories or stdin, and applied through the Kubernetes API with server-side apply,
//! as `kubectl apply --server-side` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::Deserialize as _;
use serde_json::Value;

/// The field manager Skiff's client commands apply as.
const FIELD_MANAGER: &str = "skiff";

/// One object from a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from (a file name, or `-` for stdin), for messages.
    pub source: String,
    /// The object.
    pub object: Value,
}

impl Manifest {
    /// `kind/name`, as messages name it.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.object["kind"].as_str().unwrap_or("?").to_lowercase(),
            self.object["metadata"]["name"].as_str().unwrap_or("?")
        )
    }
}

/// Reads the manifests in `paths`: files, directories (their `.yaml`, `.yml` and `.json` files
/// in name order) or `-` for stdin.
pub fn read(paths: &[PathBuf]) -> anyhow::Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let text = std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?;
            out.extend(parse("-", &text)?);
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read directory {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{} has no .yaml, .yml or .json files", path.display());
            }
            for file in files {
                out.extend(read_file(&file)?);
            }
        } else {
            out.extend(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<Manifest>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// Parses the documents of one manifest text (YAML, or JSON, which is YAML too). Empty documents
/// are skipped; every object must have `apiVersion`, `kind` and `metadata.name`.
pub fn parse(source: &str, text: &str) -> anyhow::Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .with_context(|| format!("{source}: document {} is not valid YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        let items = match value["kind"].as_str() {
            Some(kind) if kind.ends_with("List") && value["items"].is_array() => {
                value["items"].as_array().cloned().unwrap_or_default()
            }
            _ => vec![value],
        };
        for object in items {
            for field in ["apiVersion", "kind"] {
                if object[field].as_str().is_none_or(str::is_empty) {
                    bail!("{source}: document {}: {field} is not set", i + 1);
                }
            }
            if object["metadata"]["name"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                bail!(
                    "{source}: document {} ({}): metadata.name is not set",
                    i + 1,
                    object["kind"].as_str().unwrap_or_default()
                );
            }
            out.push(Manifest {
                source: source.to_string(),
                object,
            });
        }
    }
    Ok(out)
}

/// What applying did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and was already as applied.
    Unchanged,
}

/// An applied object.
#[derive(Debug, Clone)]
pub struct Applied {
    /// `pod`, `deployment.apps`, ...: how kubectl names the resource in its messages.
    pub resource: String,
    /// The object's kind.
    pub kind: String,
    /// Its namespace (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// What applying did.
    pub outcome: Outcome,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = match self.outcome {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        };
        write!(f, "{}/{} {outcome}", self.resource, self.name)
    }
}

/// Applies manifests through the API, finding each kind's resource by discovery once.
pub struct Applier {
    client: kube::Client,
    resources: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
}

impl Applier {
    /// An applier that talks to the cluster through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            resources: HashMap::new(),
        }
    }

    /// Creates the object, or updates it to what the manifest says (server-side apply, taking
    /// over fields other managers set). Namespaced objects without a namespace go to
    /// `namespace`.
    pub async fn apply(&mut self, manifest: &Manifest, namespace: &str) -> anyhow::Result<Applied> {
        let object = &manifest.object;
        let what = || format!("{}: {}", manifest.source, manifest.describe());
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        if !self.resources.contains_key(&gvk) {
            let found = kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .map_err(|e| anyhow::anyhow!(message(&e)))
                .with_context(|| {
                    format!(
                        "{}: the server does not serve {kind} in {api_version}",
                        what()
                    )
                })?;
            self.resources.insert(gvk.clone(), found);
        }
        let (resource, caps) = &self.resources[&gvk];
        let (api, namespace): (Api<DynamicObject>, _) = match caps.scope {
            Scope::Namespaced => {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or(namespace)
                    .to_string();
                (
                    Api::namespaced_with(self.client.clone(), &ns, resource),
                    Some(ns),
                )
            }
            Scope::Cluster => (Api::all_with(self.client.clone(), resource), None),
        };
        let before = api
            .get_opt(name)
            .await
            .map_err(|e| anyhow::anyhow!(message(&e)))
            .with_context(what)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let after = api
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| anyhow::anyhow!(message(&e)))
            .with_context(what)?;
        let outcome = match &before {
            None => Outcome::Created,
            Some(b) if applied_parts(b) == applied_parts(&after) => Outcome::Unchanged,
            Some(_) => Outcome::Configured,
        };
        Ok(Applied {
            resource: if resource.group.is_empty() {
                kind.to_lowercase()
            } else {
                format!("{}.{}", kind.to_lowercase(), resource.group)
            },
            kind: kind.to_string(),
            namespace,
            name: name.to_string(),
            uid: after.metadata.uid.unwrap_or_default(),
            outcome,
        })
    }
}

/// What applying can change in an object: everything but its status and the metadata the server
/// keeps (versions, managed fields). Comparing resource versions instead would call an object
/// "configured" whenever its agent wrote the status between the read and the apply.
fn applied_parts(object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = value["metadata"].as_object_mut() {
        for field in ["resourceVersion", "managedFields", "generation"] {
            meta.remove(field);
        }
    }
    value
}

/// The server's message for an API error, as kubectl shows it; other errors as they are.
pub fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("Error from server ({}): {}", status.reason, status.message)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_empty_documents() {
        let text = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n";
        let docs = parse("x.yaml", text).unwrap();
        let names: Vec<_> = docs.iter().map(Manifest::describe).collect();
        assert_eq!(names, ["pod/a", "configmap/b"]);
    }

    #[test]
    fn missing_fields_are_named() {
        let err = parse("x.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.yaml: document 1 (Pod): metadata.name is not set"
        );
        let err = parse("x.yaml", "kind: Pod\n").unwrap_err();
        assert_eq!(err.to_string(), "x.yaml: document 1: apiVersion is not set");
        let err = parse("x.yaml", "a: [\n").unwrap_err();
        assert!(
            err.to_string().contains("document 1 is not valid YAML"),
            "{err}"
        );
    }
}
