//! RBAC as kube-apiserver evaluates it: rules of Roles and ClusterRoles, granted to users,
//! groups and service accounts by RoleBindings (in their namespace) and ClusterRoleBindings
//! (everywhere). Nothing is denied explicitly; a request is allowed when one rule of one role
//! bound to the user matches it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Attributes, Target, UserInfo, parse_service_account_username};

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    /// Verbs, or `*`.
    pub verbs: Vec<String>,
    /// API groups, or `*`.
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*/scale`), or `*`.
    pub resources: Vec<String>,
    /// Object names the rule is limited to (none: all).
    pub resource_names: Vec<String>,
    /// Paths that are not resources (`/healthz`, `/apis/*`).
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

impl Rule {
    /// A rule for resources.
    pub fn new(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            verbs: own(verbs),
            api_groups: own(groups),
            resources: own(resources),
            ..Default::default()
        }
    }

    /// A rule for paths that are not resources.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Self {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            verbs: own(verbs),
            non_resource_urls: own(urls),
            ..Default::default()
        }
    }

    /// The rule as a `PolicyRule` object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"verbs": self.verbs});
        for (key, list) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !list.is_empty() {
                v[key] = json!(list);
            }
        }
        v
    }

    /// The rules of a Role or ClusterRole object (malformed entries are skipped).
    pub fn of(obj: &Value) -> Vec<Rule> {
        obj["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Rule::deserialize(r).ok())
            .collect()
    }

    /// Whether this rule allows the request (upstream's `RuleAllows`).
    pub fn allows(&self, attrs: &Attributes<'_>) -> bool {
        if !(has(&self.verbs, "*") || has(&self.verbs, attrs.verb)) {
            return false;
        }
        match attrs.target {
            Target::Resource {
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                let group_ok = has(&self.api_groups, "*") || has(&self.api_groups, group);
                let resource_ok = self.resources.iter().any(|r| {
                    r == "*"
                        || (subresource.is_empty() && r == resource)
                        || (!subresource.is_empty()
                            && (r.strip_prefix(resource).and_then(|s| s.strip_prefix('/'))
                                == Some(subresource)
                                || r.strip_prefix("*/") == Some(subresource)))
                });
                let name_ok = self.resource_names.is_empty() || has(&self.resource_names, name);
                group_ok && resource_ok && name_ok
            }
            Target::NonResource { path } => self.non_resource_urls.iter().any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            }),
        }
    }

    /// Whether this rule grants everything `sub` does (upstream's `ruleCovers`).
    fn covers(&self, sub: &Rule) -> bool {
        let verbs = has(&self.verbs, "*") || has_all(&self.verbs, &sub.verbs);
        let groups = has(&self.api_groups, "*") || has_all(&self.api_groups, &sub.api_groups);
        let resources = has(&self.resources, "*")
            || sub.resources.iter().all(|r| {
                has(&self.resources, r)
                    || r.split_once('/')
                        .is_some_and(|(_, s)| has(&self.resources, &format!("*/{s}")))
            });
        let urls = sub.non_resource_urls.iter().all(|p| {
            self.non_resource_urls.iter().any(|o| {
                o == p
                    || o.strip_suffix('*')
                        .is_some_and(|prefix| p.starts_with(prefix.trim_end_matches('*')))
            })
        });
        let names = if sub.resource_names.is_empty() {
            self.resource_names.is_empty()
        } else {
            self.resource_names.is_empty() || has_all(&self.resource_names, &sub.resource_names)
        };
        verbs && groups && resources && urls && names
    }

    /// The rule split into rules of one verb, group, resource and name each.
    fn atoms(&self) -> Vec<Rule> {
        let one = |s: &String| vec![s.clone()];
        let mut out = Vec::new();
        for verb in &self.verbs {
            for group in &self.api_groups {
                for resource in &self.resources {
                    let names: Vec<Vec<String>> = if self.resource_names.is_empty() {
                        vec![Vec::new()]
                    } else {
                        self.resource_names.iter().map(one).collect()
                    };
                    for n in names {
                        out.push(Rule {
                            verbs: one(verb),
                            api_groups: one(group),
                            resources: one(resource),
                            resource_names: n,
                            non_resource_urls: Vec::new(),
                        });
                    }
                }
            }
            for url in &self.non_resource_urls {
                out.push(Rule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Default::default()
                });
            }
        }
        out
    }

    /// Upstream's compact form, `{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}`.
    pub fn compact_string(&self) -> String {
        let q = |v: &[String]| {
            let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", quoted.join(" "))
        };
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:{}", q(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// The rules of `servant` that `owner` does not grant, one verb/group/resource/name each
/// (empty when `owner` covers them all).
pub fn uncovered(owner: &[Rule], servant: &[Rule]) -> Vec<Rule> {
    servant
        .iter()
        .flat_map(Rule::atoms)
        .filter(|atom| !owner.iter().any(|o| o.covers(atom)))
        .collect()
}

/// Merges atomic rules that differ only in their verb, as upstream's `CompactRules` does, and
/// describes each in its compact form, sorted.
pub fn describe_missing(missing: &[Rule]) -> Vec<String> {
    let mut merged: Vec<Rule> = Vec::new();
    for rule in missing {
        match merged.iter_mut().find(|m| {
            m.api_groups == rule.api_groups
                && m.resources == rule.resources
                && m.resource_names == rule.resource_names
                && m.non_resource_urls.is_empty()
                && rule.non_resource_urls.is_empty()
        }) {
            Some(m) => {
                for v in &rule.verbs {
                    if !has(&m.verbs, v) {
                        m.verbs.push(v.clone());
                    }
                }
            }
            None => merged.push(rule.clone()),
        }
    }
    let set: BTreeSet<String> = merged.iter().map(Rule::compact_string).collect();
    set.into_iter().collect()
}

/// Which kind of role a binding refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// A Role in the binding's namespace.
    Role,
    /// A ClusterRole.
    ClusterRole,
}

/// A RoleBinding or ClusterRoleBinding, as the authorizer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The role's kind.
    pub role_kind: RoleKind,
    /// The role's name.
    pub role_name: String,
    /// `(kind, name, namespace)` of each subject.
    pub subjects: Vec<(String, String, String)>,
}

impl Binding {
    /// Reads a binding object; `None` when its roleRef is not usable.
    pub fn of(obj: &Value) -> Option<Self> {
        let role_kind = match obj.pointer("/roleRef/kind").and_then(Value::as_str)? {
            "Role" => RoleKind::Role,
            "ClusterRole" => RoleKind::ClusterRole,
            _ => return None,
        };
        let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
        Some(Self {
            role_kind,
            role_name: obj.pointer("/roleRef/name")?.as_str()?.to_string(),
            subjects: obj["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sub| (s(sub, "kind"), s(sub, "name"), s(sub, "namespace")))
                .collect(),
        })
    }

    /// The subject that names `user`, if any (upstream's `appliesTo`); `namespace` is the
    /// binding's, which service-account subjects default to.
    fn subject_for(&self, user: &UserInfo, namespace: &str) -> Option<usize> {
        self.subjects
            .iter()
            .position(|(kind, name, ns)| match kind.as_str() {
                "User" => &user.name == name,
                "Group" => has(&user.groups, name),
                "ServiceAccount" => {
                    let ns = if ns.is_empty() { namespace } else { ns };
                    !ns.is_empty()
                        && parse_service_account_username(&user.name) == Some((ns, name.as_str()))
                }
                _ => false,
            })
    }

    fn describe_subject(&self, i: usize) -> String {
        let (kind, name, ns) = &self.subjects[i];
        if kind == "ServiceAccount" {
            format!("{kind} \"{name}/{ns}\"")
        } else {
            format!("{kind} {name:?}")
        }
    }
}

/// The RBAC objects of the cluster, kept current by [`super::Cache`].
#[derive(Debug, Default)]
pub struct Policy {
    roles: HashMap<(String, String), Arc<[Rule]>>,
    cluster_roles: HashMap<String, Arc<[Rule]>>,
    role_bindings: HashMap<String, BTreeMap<String, Binding>>,
    cluster_role_bindings: BTreeMap<String, Binding>,
}

/// The answer to an authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Which binding allowed it (upstream's reason text), or why nothing could.
    pub reason: String,
}

impl Policy {
    /// Sets or removes (`None`) a Role.
    pub fn set_role(&mut self, ns: &str, name: &str, rules: Option<Vec<Rule>>) {
        let key = (ns.to_string(), name.to_string());
        match rules {
            Some(r) => self.roles.insert(key, r.into()),
            None => self.roles.remove(&key),
        };
    }

    /// Sets or removes a ClusterRole.
    pub fn set_cluster_role(&mut self, name: &str, rules: Option<Vec<Rule>>) {
        match rules {
            Some(r) => self.cluster_roles.insert(name.to_string(), r.into()),
            None => self.cluster_roles.remove(name),
        };
    }

    /// Sets or removes a RoleBinding.
    pub fn set_role_binding(&mut self, ns: &str, name: &str, binding: Option<Binding>) {
        match binding {
            Some(b) => {
                self.role_bindings
                    .entry(ns.to_string())
                    .or_default()
                    .insert(name.to_string(), b);
            }
            None => {
                if let Some(in_ns) = self.role_bindings.get_mut(ns) {
                    in_ns.remove(name);
                    if in_ns.is_empty() {
                        self.role_bindings.remove(ns);
                    }
                }
            }
        }
    }

    /// Sets or removes a ClusterRoleBinding.
    pub fn set_cluster_role_binding(&mut self, name: &str, binding: Option<Binding>) {
        match binding {
            Some(b) => self.cluster_role_bindings.insert(name.to_string(), b),
            None => self.cluster_role_bindings.remove(name),
        };
    }

    /// Drops every object of one kind (before a fresh list replaces them).
    pub fn clear(&mut self, kind: &str) {
        match kind {
            "Role" => self.roles.clear(),
            "ClusterRole" => self.cluster_roles.clear(),
            "RoleBinding" => self.role_bindings.clear(),
            _ => self.cluster_role_bindings.clear(),
        }
    }

    fn rules_of(&self, binding: &Binding, namespace: &str) -> Option<&Arc<[Rule]>> {
        match binding.role_kind {
            RoleKind::ClusterRole => self.cluster_roles.get(&binding.role_name),
            RoleKind::Role => self
                .roles
                .get(&(namespace.to_string(), binding.role_name.clone())),
        }
    }

    /// Visits the bindings that apply to `user` in `namespace` (cluster-wide ones first) with
    /// their role's rules, until `visit` returns true. Bindings whose role is missing are
    /// reported as such in the returned errors.
    fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&str, &Binding, usize, &[Rule]) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let cluster = self
            .cluster_role_bindings
            .iter()
            .map(|(name, b)| (name, b, ""));
        let local = self
            .role_bindings
            .get(namespace)
            .filter(|_| !namespace.is_empty())
            .into_iter()
            .flatten()
            .map(|(name, b)| (name, b, namespace));
        for (name, binding, ns) in cluster.chain(local) {
            let Some(subject) = binding.subject_for(user, ns) else {
                continue;
            };
            let Some(rules) = self.rules_of(binding, ns) else {
                errors.push(match binding.role_kind {
                    RoleKind::ClusterRole => format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        binding.role_name
                    ),
                    RoleKind::Role => {
                        format!(
                            "role.rbac.authorization.k8s.io {:?} not found",
                            binding.role_name
                        )
                    }
                });
                continue;
            };
            let binding_name = if ns.is_empty() {
                name.to_string()
            } else {
                format!("{name}/{ns}")
            };
            if visit(&binding_name, binding, subject, rules) {
                break;
            }
        }
        errors
    }

    /// Whether RBAC allows `user` the request.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes<'_>) -> Decision {
        let mut reason = None;
        let errors = self.visit(
            user,
            attrs.namespace(),
            |binding_name, binding, i, rules| {
                if rules.iter().any(|r| r.allows(attrs)) {
                    let (kind, role) = match binding.role_kind {
                        RoleKind::ClusterRole => ("ClusterRole", &binding.role_name),
                        RoleKind::Role => ("Role", &binding.role_name),
                    };
                    let binding_kind = if binding_name.contains('/') {
                        "RoleBinding"
                    } else {
                        "ClusterRoleBinding"
                    };
                    reason = Some(format!(
                        "RBAC: allowed by {binding_kind} {binding_name:?} of {kind} {role:?} to {}",
                        binding.describe_subject(i)
                    ));
                    return true;
                }
                false
            },
        );
        match reason {
            Some(reason) => Decision {
                allowed: true,
                reason,
            },
            None => Decision {
                allowed: false,
                reason: if errors.is_empty() {
                    String::new()
                } else {
                    format!("RBAC: [{}]", errors.join(", "))
                },
            },
        }
    }

    /// Every rule `user` holds in `namespace` ("" for cluster-wide rules only).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let mut out = Vec::new();
        self.visit(user, namespace, |_, _, _, rules| {
            out.extend(rules.iter().cloned());
            false
        });
        out
    }

    /// The rules a binding's role grants, or why it cannot be resolved.
    pub fn role_rules(&self, kind: RoleKind, namespace: &str, name: &str) -> Option<Vec<Rule>> {
        let b = Binding {
            role_kind: kind,
            role_name: name.to_string(),
            subjects: Vec::new(),
        };
        self.rules_of(&b, namespace).map(|r| r.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ns: &str, name: &str) -> UserInfo {
        UserInfo::service_account(ns, name, "uid")
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = Rule::new(&["get", "list"], &[""], &["pods", "configmaps"]);
        let get = |res, sub, name| Attributes::resource("get", "", res, sub, "a", name);
        assert!(rule.allows(&get("pods", "", "web")));
        assert!(rule.allows(&Attributes::resource("list", "", "pods", "", "a", "")));
        assert!(!rule.allows(&Attributes::resource("watch", "", "pods", "", "a", "")));
        assert!(!rule.allows(&Attributes::resource("get", "apps", "pods", "", "a", "")));
        // A subresource needs its own entry: `pods` does not grant `pods/log`.
        assert!(!rule.allows(&get("pods", "log", "web")));
        let log = Rule::new(&["get"], &[""], &["pods/log"]);
        assert!(log.allows(&get("pods", "log", "web")));
        assert!(!log.allows(&get("pods", "", "web")));
        assert!(!log.allows(&get("pods", "status", "web")));
        let any_scale = Rule::new(&["get"], &["apps"], &["*/scale"]);
        assert!(any_scale.allows(&Attributes::resource(
            "get",
            "apps",
            "deployments",
            "scale",
            "a",
            "d"
        )));
        assert!(!any_scale.allows(&Attributes::resource(
            "get",
            "apps",
            "deployments",
            "",
            "a",
            "d"
        )));
        let all = Rule::new(&["*"], &["*"], &["*"]);
        assert!(all.allows(&Attributes::resource(
            "deletecollection",
            "batch",
            "jobs",
            "",
            "",
            ""
        )));
        assert!(all.allows(&get("pods", "log", "x")));
        let mut named = Rule::new(&["get"], &[""], &["configmaps"]);
        named.resource_names = vec!["settings".into()];
        assert!(named.allows(&get("configmaps", "", "settings")));
        assert!(!named.allows(&get("configmaps", "", "other")));
        // resourceNames never match a request without a name (a list).
        assert!(!named.allows(&Attributes::resource("get", "", "configmaps", "", "a", "")));
        let urls = Rule::urls(&["get"], &["/healthz", "/apis/*"]);
        assert!(urls.allows(&Attributes::non_resource("get", "/healthz")));
        assert!(urls.allows(&Attributes::non_resource("get", "/apis/apps/v1")));
        assert!(!urls.allows(&Attributes::non_resource("get", "/api/v1")));
        assert!(!urls.allows(&Attributes::non_resource("post", "/healthz")));
        // Resource rules never match paths, and path rules never match resources.
        assert!(!all.allows(&Attributes::non_resource("get", "/healthz")));
        assert!(!urls.allows(&get("pods", "", "")));
    }

    fn binding(kind: RoleKind, role: &str, subjects: &[(&str, &str, &str)]) -> Binding {
        Binding {
            role_kind: kind,
            role_name: role.into(),
            subjects: subjects
                .iter()
                .map(|(k, n, ns)| (k.to_string(), n.to_string(), ns.to_string()))
                .collect(),
        }
    }

    #[test]
    fn bindings_grant_in_their_namespace_only() {
        let mut p = Policy::default();
        p.set_cluster_role(
            "edit",
            Some(vec![Rule::new(
                &["get", "list", "create"],
                &[""],
                &["pods"],
            )]),
        );
        p.set_role(
            "a",
            "cm-reader",
            Some(vec![Rule::new(&["get"], &[""], &["configmaps"])]),
        );
        p.set_role_binding(
            "a",
            "bot-edit",
            Some(binding(
                RoleKind::ClusterRole,
                "edit",
                &[("ServiceAccount", "bot", "a")],
            )),
        );
        p.set_role_binding(
            "a",
            "readers",
            Some(binding(
                RoleKind::Role,
                "cm-reader",
                &[("Group", "system:serviceaccounts:a", "")],
            )),
        );
        let bot = sa("a", "bot");
        let list = |ns| Attributes::resource("list", "", "pods", "", ns, "");
        let d = p.authorize(&bot, &list("a"));
        assert!(d.allowed);
        assert_eq!(
            d.reason,
            r#"RBAC: allowed by RoleBinding "bot-edit/a" of ClusterRole "edit" to ServiceAccount "bot/a""#
        );
        assert!(!p.authorize(&bot, &list("b")).allowed);
        assert!(!p.authorize(&bot, &list("")).allowed, "cluster scope");
        assert!(!p.authorize(&sa("b", "bot"), &list("a")).allowed);
        // Groups: every service account of `a` reads configmaps there, and only that.
        let other = sa("a", "other");
        let cm = |verb| Attributes::resource(verb, "", "configmaps", "", "a", "x");
        assert!(p.authorize(&other, &cm("get")).allowed);
        assert!(!p.authorize(&other, &cm("delete")).allowed);
        assert!(!p.authorize(&other, &list("a")).allowed);
        // A binding is only as good as its role: gone role, nothing granted, and it says so.
        p.set_cluster_role("edit", None);
        let d = p.authorize(&bot, &list("a"));
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            r#"RBAC: [clusterrole.rbac.authorization.k8s.io "edit" not found]"#
        );
        // Removing the binding removes the grant.
        p.set_role_binding("a", "readers", None);
        assert!(!p.authorize(&other, &cm("get")).allowed);
    }

    #[test]
    fn cluster_role_bindings_grant_everywhere() {
        let mut p = Policy::default();
        p.set_cluster_role(
            "view-nodes",
            Some(vec![Rule::new(&["list"], &[""], &["nodes"])]),
        );
        p.set_cluster_role_binding(
            "ops",
            Some(binding(
                RoleKind::ClusterRole,
                "view-nodes",
                &[("User", "alice", ""), ("ServiceAccount", "bot", "ops")],
            )),
        );
        let nodes = Attributes::resource("list", "", "nodes", "", "", "");
        let alice = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
        };
        assert!(p.authorize(&alice, &nodes).allowed);
        assert!(p.authorize(&sa("ops", "bot"), &nodes).allowed);
        // A service-account subject of a ClusterRoleBinding needs its namespace.
        assert!(!p.authorize(&sa("other", "bot"), &nodes).allowed);
        assert_eq!(p.rules_for(&alice, "anywhere").len(), 1);
        assert_eq!(p.rules_for(&sa("x", "y"), "anywhere").len(), 0);
    }

    #[test]
    fn escalation_checks_cover_atoms() {
        let owner = vec![
            Rule::new(&["get", "list"], &[""], &["pods", "configmaps"]),
            Rule::new(&["*"], &["apps"], &["*"]),
            Rule::new(&["get"], &[""], &["*/log"]),
            Rule::urls(&["get"], &["/apis/*"]),
        ];
        assert!(uncovered(&owner, &[Rule::new(&["get"], &[""], &["pods"])]).is_empty());
        assert!(
            uncovered(
                &owner,
                &[Rule::new(
                    &["create", "delete"],
                    &["apps"],
                    &["deployments"]
                )]
            )
            .is_empty()
        );
        assert!(uncovered(&owner, &[Rule::new(&["get"], &[""], &["pods/log"])]).is_empty());
        assert!(uncovered(&owner, &[Rule::urls(&["get"], &["/apis/apps"])]).is_empty());
        let mut named = Rule::new(&["get"], &[""], &["configmaps"]);
        named.resource_names = vec!["a".into()];
        assert!(uncovered(&owner, &[named]).is_empty());
        // A wildcard is only covered by a wildcard.
        let missing = uncovered(&owner, &[Rule::new(&["get"], &[""], &["*"])]);
        assert_eq!(missing.len(), 1);
        let missing = uncovered(
            &owner,
            &[Rule::new(
                &["get", "create", "delete"],
                &["", "batch"],
                &["pods"],
            )],
        );
        assert_eq!(
            describe_missing(&missing),
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["create" "delete"]}"#,
                r#"{APIGroups:["batch"], Resources:["pods"], Verbs:["get" "create" "delete"]}"#,
            ]
        );
        // Owner names limit what it can hand out.
        let mut limited = Rule::new(&["get"], &[""], &["secrets"]);
        limited.resource_names = vec!["mine".into()];
        assert_eq!(
            uncovered(&[limited], &[Rule::new(&["get"], &[""], &["secrets"])]).len(),
            1
        );
    }

    #[test]
    fn rules_read_from_objects() {
        let role = json!({"rules": [
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]},
            {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
        ]});
        let rules = Rule::of(&role);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].resource_names, ["x"]);
        assert_eq!(rules[1].non_resource_urls, ["/healthz"]);
        assert_eq!(rules[0].to_json(), role["rules"][0]);
        let b = Binding::of(&json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}))
        .unwrap();
        assert_eq!(b.role_kind, RoleKind::Role);
        assert_eq!(
            b.subjects[0],
            ("ServiceAccount".into(), "bot".into(), "".into())
        );
        // A subject without a namespace means the binding's own.
        let mut p = Policy::default();
        p.set_role("a", "r", Some(vec![Rule::new(&["get"], &[""], &["pods"])]));
        p.set_role_binding("a", "b", Some(b));
        assert!(
            p.authorize(
                &sa("a", "bot"),
                &Attributes::resource("get", "", "pods", "", "a", "p")
            )
            .allowed
        );
    }
}
