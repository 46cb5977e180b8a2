//! Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`), `/version` and the
//! `/openapi/v3` stub that tells kubectl the server validates fields itself.

use serde_json::{Value, json};

use crate::api::resources::{self, ResourceDef};

/// The Kubernetes version Skiff reports: within one minor version of kubectl 1.31 to 1.33.
pub const KUBE_MINOR: u32 = 32;

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR.to_string(),
        "gitVersion": format!("v1.{KUBE_MINOR}.0-skiff.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "skiff",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

/// Served group/versions: the stored kinds' and the reviews'.
fn all_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out = resources::groups();
    for r in super::reviews::REVIEWS {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, vec![r.version]));
        }
    }
    out
}

/// `GET /apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = all_groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`.
pub fn group(name: &str) -> Option<Value> {
    let (g, vs) = all_groups()
        .into_iter()
        .find(|(g, _)| *g == name && !g.is_empty())?;
    let mut v = group_json(g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let defs = resources::served(group, version);
    let reviews: Vec<&ResourceDef> = super::reviews::REVIEWS
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() && reviews.is_empty() {
        return None;
    }
    let mut out: Vec<Value> = reviews
        .iter()
        .map(|r| json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": ["create"]}))
        .collect();
    for r in defs {
        let mut main = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        out.push(main);
        for sub in subresources(r) {
            let mut s = json!({"name": format!("{}/{}", r.plural, sub.name), "singularName": "",
                "namespaced": r.namespaced, "kind": sub.kind, "verbs": sub.verbs});
            if let Some((group, version)) = sub.group_version {
                s["group"] = json!(group);
                s["version"] = json!(version);
            }
            out.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

/// `GET /openapi/v3`: one entry per served group/version.
/// A subresource a kind serves, as discovery lists it.
pub struct Subresource {
    /// `status`, `scale`, `log`, ...
    pub name: &'static str,
    /// The kind its requests and answers carry.
    pub kind: &'static str,
    /// The verbs it serves.
    pub verbs: &'static [&'static str],
    /// Its group and version when they are not the resource's own.
    pub group_version: Option<(&'static str, &'static str)>,
}

/// The subresources `r` serves: the one list discovery shows and requests are checked against.
pub fn subresources(r: &ResourceDef) -> Vec<Subresource> {
    let sub = |name, kind, verbs| Subresource {
        name,
        kind,
        verbs,
        group_version: None,
    };
    let mut out = Vec::new();
    if r.status {
        out.push(sub("status", r.kind, &["get", "patch", "update"]));
    }
    if r.scale {
        out.push(Subresource {
            group_version: Some(("autoscaling", "v1")),
            ..sub("scale", "Scale", &["get", "patch", "update"])
        });
    }
    match r.kind {
        "Pod" => {
            out.push(sub("binding", "Binding", &["create"]));
            out.push(sub("log", "Pod", &["get"]));
        }
        "Namespace" => out.push(sub("finalize", "Namespace", &["update"])),
        "ServiceAccount" => out.push(Subresource {
            group_version: Some(("authentication.k8s.io", "v1")),
            ..sub("token", "TokenRequest", &["create"])
        }),
        _ => {}
    }
    out
}

/// Whether `r` serves the subresource `name`.
pub fn serves_subresource(r: &ResourceDef, name: &str) -> bool {
    subresources(r).iter().any(|s| s.name == name)
}

pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in resources::groups() {
        for v in vs {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=skiff-{}", env!("CARGO_PKG_VERSION"))}));
        }
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<gv>`: the minimal document that tells kubectl each kind supports the
/// `fieldValidation` parameter, so it leaves validation to the server. It deliberately has no
/// request body schemas (kubectl would then try to build patches from them).
pub fn openapi_group_version(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>()[..] {
        ["api", v] => ("", v),
        ["apis", g, v] => (g, v),
        _ => return None,
    };
    let defs = resources::served(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for r in defs {
        let base = r.base_path();
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        paths.insert(path, json!({"patch": {
            "operationId": format!("patch{}", r.kind),
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK"}},
        }}));
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")}, "paths": paths, "components": {"schemas": {}}}),
    )
}
