//! The roles and bindings every cluster starts with, as kube-apiserver bootstraps them:
//! `cluster-admin` for `system:masters`, the user-facing `admin`, `edit` and `view` built by
//! aggregation from ClusterRoles labelled `rbac.authorization.k8s.io/aggregate-to-*`, and what
//! every authenticated user may do (discovery, reviewing their own access).
//!
//! At each start the defaults are created when missing and, unless annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`, given back what they lack.

use serde_json::{Value, json};

use super::rbac::Rule;
use super::{AUTHENTICATED, MASTERS, RBAC_GROUP, UNAUTHENTICATED};
use crate::api::resources::{self, ResourceDef};
use crate::api::{Api, ApiError, PatchType, Target, WriteOptions, object};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The label a ClusterRole carries to be aggregated into `admin`, `edit` or `view`.
pub fn aggregate_label(role: &str) -> String {
    format!("rbac.authorization.k8s.io/aggregate-to-{role}")
}

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// A default ClusterRole: name, labels, rules, and the roles it aggregates from (by the
/// `aggregate-to-NAME` label), if it is aggregated.
struct DefaultRole {
    name: &'static str,
    labels: Vec<String>,
    rules: Vec<Rule>,
    aggregates: bool,
}

fn role(name: &'static str, rules: Vec<Rule>) -> DefaultRole {
    DefaultRole {
        name,
        labels: Vec::new(),
        rules,
        aggregates: false,
    }
}

fn aggregated(name: &'static str, into: Option<&str>) -> DefaultRole {
    DefaultRole {
        name,
        labels: into.map(aggregate_label).into_iter().collect(),
        rules: Vec::new(),
        aggregates: true,
    }
}

fn feeding(name: &'static str, into: &str, rules: Vec<Rule>) -> DefaultRole {
    DefaultRole {
        name,
        labels: vec![aggregate_label(into)],
        rules,
        aggregates: false,
    }
}

/// Skiff's default ClusterRoles. The aggregate-to-* rule sets follow upstream's for the kinds
/// Skiff serves, plus Skiff's own `wasmpolicies` (readable by viewers, managed by admins).
fn cluster_roles() -> Vec<DefaultRole> {
    let r = Rule::new;
    vec![
        role(
            "cluster-admin",
            vec![r(&["*"], &["*"], &["*"]), Rule::urls(&["*"], &["*"])],
        ),
        role(
            "system:discovery",
            vec![Rule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![Rule::urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        aggregated("admin", None),
        aggregated("edit", Some("admin")),
        aggregated("view", Some("edit")),
        feeding(
            "system:aggregate-to-admin",
            "admin",
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(ALL, &[RBAC_GROUP], &["rolebindings", "roles"]),
                r(ALL, &["skiff.dev"], &["wasmpolicies"]),
            ],
        ),
        feeding(
            "system:aggregate-to-edit",
            "edit",
            vec![
                r(READ, &[""], &["secrets"]),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                    ],
                ),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    WRITE,
                    &["apps"],
                    &[
                        "deployments",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["cronjobs", "jobs"]),
                r(ALL, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        feeding(
            "system:aggregate-to-view",
            "view",
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                r(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    READ,
                    &["apps"],
                    &[
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                    ],
                ),
                r(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                r(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                r(READ, &["skiff.dev"], &["wasmpolicies"]),
            ],
        ),
    ]
}

/// Default ClusterRoleBindings: name (= the role's) and subject groups.
const CLUSTER_ROLE_BINDINGS: &[(&str, &[&str])] = &[
    ("cluster-admin", &[MASTERS]),
    ("system:discovery", &[AUTHENTICATED]),
    ("system:basic-user", &[AUTHENTICATED]),
    (
        "system:public-info-viewer",
        &[AUTHENTICATED, UNAUTHENTICATED],
    ),
];

fn rbac(plural: &str) -> &'static ResourceDef {
    resources::find(RBAC_GROUP, "v1", plural).expect("RBAC kinds are served")
}

fn default_meta(name: &str, extra_labels: &[String]) -> Value {
    let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for l in extra_labels {
        labels[l] = json!("true");
    }
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role_object(d: &DefaultRole) -> Value {
    let mut obj = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": default_meta(d.name, &d.labels),
        "rules": d.rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
    });
    if d.aggregates {
        obj["aggregationRule"] = json!({"clusterRoleSelectors": [
            {"matchLabels": {aggregate_label(d.name): "true"}}
        ]});
    }
    obj
}

fn binding_object(name: &str, groups: &[&str]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": default_meta(name, &[]),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": groups.iter().map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g})).collect::<Vec<_>>(),
    })
}

/// Creates the default roles and bindings, and restores what the ones that auto-update lack.
pub async fn bootstrap(api: &Api) -> Result<(), ApiError> {
    for d in cluster_roles() {
        let want = cluster_role_object(&d);
        reconcile(api, rbac("clusterroles"), d.name, want, |cur, want| {
            let mut patch = json!({});
            if d.aggregates {
                let selectors = cur.pointer("/aggregationRule/clusterRoleSelectors");
                let wanted = &want["aggregationRule"]["clusterRoleSelectors"][0];
                if !selectors
                    .and_then(Value::as_array)
                    .is_some_and(|s| s.contains(wanted))
                {
                    let mut all = selectors
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    all.push(wanted.clone());
                    patch["aggregationRule"] = json!({"clusterRoleSelectors": all});
                }
            } else {
                let have = Rule::of(cur);
                let missing: Vec<&Rule> = d.rules.iter().filter(|r| !have.contains(r)).collect();
                if !missing.is_empty() {
                    let mut rules = cur["rules"].as_array().cloned().unwrap_or_default();
                    rules.extend(missing.iter().map(|r| r.to_json()));
                    patch["rules"] = Value::Array(rules);
                }
            }
            patch
        })
        .await?;
    }
    for (name, groups) in CLUSTER_ROLE_BINDINGS {
        let want = binding_object(name, groups);
        reconcile(api, rbac("clusterrolebindings"), name, want, |cur, want| {
            let mut subjects = cur["subjects"].as_array().cloned().unwrap_or_default();
            let before = subjects.len();
            for s in want["subjects"].as_array().into_iter().flatten() {
                let present = subjects
                    .iter()
                    .any(|c| c["kind"] == s["kind"] && c["name"] == s["name"]);
                if !present {
                    subjects.push(s.clone());
                }
            }
            if subjects.len() == before {
                json!({})
            } else {
                json!({"subjects": subjects})
            }
        })
        .await?;
    }
    Ok(())
}

/// Creates `want` when missing; otherwise merges what `missing(current, want)` returns, with
/// the default labels and annotations, unless the object opted out of updates.
async fn reconcile(
    api: &Api,
    res: &'static ResourceDef,
    name: &str,
    want: Value,
    missing: impl FnOnce(&Value, &Value) -> Value,
) -> Result<(), ApiError> {
    let opts = WriteOptions::default();
    let cur = match api.get(res, None, name) {
        Ok(cur) => cur,
        Err(e) if e.code == 404 => {
            return match api.create(res, None, want, &opts).await {
                Ok(_) => Ok(()),
                Err(e) if e.reason == "AlreadyExists" => Ok(()),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    if cur.pointer(&format!(
        "/metadata/annotations/{}",
        AUTOUPDATE.replace('/', "~1")
    )) == Some(&json!("false"))
    {
        return Ok(());
    }
    let mut patch = missing(&cur, &want);
    for field in ["labels", "annotations"] {
        for (k, v) in want["metadata"][field].as_object().into_iter().flatten() {
            if object::meta(&cur)
                .and_then(|m| m.get(field))
                .and_then(|l| l.get(k))
                != Some(v)
            {
                patch["metadata"][field][k] = v.clone();
            }
        }
    }
    if patch.as_object().is_some_and(|p| !p.is_empty()) {
        api.patch(
            res,
            None,
            name,
            PatchType::Merge,
            patch,
            Target::Main,
            &opts,
        )
        .await?;
        tracing::info!(kind = res.kind, name, "restored a default RBAC object");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Attributes;

    #[test]
    fn defaults_chain_aggregation_and_grant_what_tenants_need() {
        let roles = cluster_roles();
        let find = |n: &str| roles.iter().find(|r| r.name == n).unwrap();
        // view → edit → admin: each aggregated role is itself labelled into the next.
        assert_eq!(find("view").labels, [aggregate_label("edit")]);
        assert_eq!(find("edit").labels, [aggregate_label("admin")]);
        assert!(find("admin").labels.is_empty());
        let allows = |role: &str, verb, group, resource| {
            find(role)
                .rules
                .iter()
                .any(|r| r.allows(&Attributes::resource(verb, group, resource, "", "a", "")))
        };
        assert!(allows(
            "system:aggregate-to-view",
            "list",
            "skiff.dev",
            "wasmpolicies"
        ));
        assert!(!allows(
            "system:aggregate-to-edit",
            "create",
            "skiff.dev",
            "wasmpolicies"
        ));
        assert!(allows(
            "system:aggregate-to-admin",
            "delete",
            "skiff.dev",
            "wasmpolicies"
        ));
        assert!(allows("system:aggregate-to-edit", "create", "", "pods"));
        assert!(!allows("system:aggregate-to-view", "get", "", "secrets"));
        assert!(allows(
            "system:aggregate-to-admin",
            "create",
            RBAC_GROUP,
            "rolebindings"
        ));
        let obj = cluster_role_object(find("edit"));
        assert_eq!(
            obj["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
        assert_eq!(
            obj["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"],
            "true"
        );
    }
}
