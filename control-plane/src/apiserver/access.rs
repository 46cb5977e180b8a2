//! Authorization of requests by users that are neither the admin nor a node: RBAC, with
//! upstream's 403 wording, impersonation (`Impersonate-User`, `Impersonate-Group`), and the
//! escalation check that keeps a user from granting, through a role or binding, more than
//! they hold.

use http::HeaderMap;
use serde_json::{Value, json};

use super::{Server, User};
use crate::api::resources::ResourceDef;
use crate::api::{ApiError, object};
use crate::auth::rbac::{self, Binding, RoleKind, Rule};
use crate::auth::{self, Attributes, RBAC_GROUP, UserInfo};

/// Allows the request or answers 403 as kube-apiserver does.
pub(super) fn check(
    server: &Server,
    user: &UserInfo,
    attrs: &Attributes<'_>,
) -> Result<(), ApiError> {
    if user.is_master() {
        return Ok(());
    }
    let decision = server.auth.policy().authorize(user, attrs);
    if decision.allowed {
        return Ok(());
    }
    Err(forbidden(user, attrs, &decision.reason))
}

/// A 403 naming the refused request; `reason` (RBAC's, e.g. a missing role) is appended.
pub(super) fn forbidden(user: &UserInfo, attrs: &Attributes<'_>, reason: &str) -> ApiError {
    let mut message = attrs.denied_message(&user.name);
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    let prefix = attrs.forbidden_prefix();
    let message = if prefix.is_empty() {
        format!("forbidden: {message}")
    } else {
        format!("{prefix} is forbidden: {message}")
    };
    let mut e = ApiError::new(403, "Forbidden", message);
    e.details = Some(match attrs.target {
        auth::Target::Resource {
            group,
            resource,
            name,
            ..
        } => json!({"name": name, "group": group, "kind": resource}),
        auth::Target::NonResource { .. } => json!({}),
    });
    e
}

/// Applies `Impersonate-*` headers: the caller must be allowed to `impersonate` each user,
/// group and uid it names, and the request then runs as that user.
pub(super) fn impersonate(
    server: &Server,
    user: User,
    headers: &HeaderMap,
) -> Result<User, ApiError> {
    let value = |h: &http::HeaderValue| h.to_str().unwrap_or("").to_string();
    let as_user = headers.get("impersonate-user").map(value);
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .map(value)
        .collect();
    let uid = headers.get("impersonate-uid").map(value);
    let extras = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"));
    let Some(as_user) = as_user else {
        if !groups.is_empty() || uid.is_some() || extras {
            return Err(ApiError::bad_request(
                "impersonating groups, a uid or extra fields requires impersonating a user",
            ));
        }
        return Ok(user);
    };
    let actor = user.info().into_owned();
    if matches!(user, User::Node(_)) || extras {
        let attrs = Attributes::resource("impersonate", "", "users", "", "", &as_user);
        return Err(forbidden(&actor, &attrs, ""));
    }
    match auth::parse_service_account_username(&as_user) {
        Some((ns, name)) => check(
            server,
            &actor,
            &Attributes::resource("impersonate", "", "serviceaccounts", "", ns, name),
        )?,
        None => check(
            server,
            &actor,
            &Attributes::resource("impersonate", "", "users", "", "", &as_user),
        )?,
    }
    for g in &groups {
        check(
            server,
            &actor,
            &Attributes::resource("impersonate", "", "groups", "", "", g),
        )?;
    }
    if let Some(uid) = &uid {
        check(
            server,
            &actor,
            &Attributes::resource("impersonate", "authentication.k8s.io", "uids", "", "", uid),
        )?;
    }
    let mut info = match auth::parse_service_account_username(&as_user) {
        Some((ns, name)) if groups.is_empty() => UserInfo::service_account(ns, name, ""),
        _ => UserInfo {
            name: as_user.clone(),
            uid: String::new(),
            groups,
        },
    };
    if let Some(uid) = uid {
        info.uid = uid;
    }
    if as_user != "system:anonymous"
        && !info
            .groups
            .iter()
            .any(|g| g == auth::AUTHENTICATED || g == auth::UNAUTHENTICATED)
    {
        info.groups.push(auth::AUTHENTICATED.into());
    }
    Ok(User::Subject(info))
}

/// Upstream's escalation check for a Role, ClusterRole or binding `obj` about to be written by
/// `user` in `ns`: a role may hold only rules the user holds there (unless they may
/// `escalate`), a binding may grant only a role whose rules the user holds (unless they may
/// `bind` it), and only those who hold everything may set an aggregation rule.
pub(super) fn check_escalation(
    server: &Server,
    user: &UserInfo,
    res: &ResourceDef,
    ns: Option<&str>,
    obj: &Value,
) -> Result<(), ApiError> {
    if user.is_master() || res.group != RBAC_GROUP {
        return Ok(());
    }
    let ns = ns.unwrap_or("");
    let name = object::name(obj);
    let denied = |message: String| {
        let mut e = ApiError::new(
            403,
            "Forbidden",
            format!("{} {name:?} is forbidden: {message}", res.qualified()),
        );
        e.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        e
    };
    let policy = server.auth.policy();
    let may = |verb: &str, resource: &str, target: &str| {
        policy
            .authorize(
                user,
                &Attributes::resource(verb, RBAC_GROUP, resource, "", ns, target),
            )
            .allowed
    };
    if may("escalate", res.plural, name) {
        return Ok(());
    }
    let rules = match res.kind {
        "Role" | "ClusterRole" => {
            if res.kind == "ClusterRole" && obj.get("aggregationRule").is_some_and(|a| !a.is_null())
            {
                let everything = [
                    Rule::new(&["*"], &["*"], &["*"]),
                    Rule::urls(&["*"], &["*"]),
                ];
                if !rbac::uncovered(&policy.rules_for(user, ns), &everything).is_empty() {
                    return Err(denied(
                        "must have cluster-admin privileges to use the aggregationRule".into(),
                    ));
                }
            }
            Rule::of(obj)
        }
        _ => {
            // Malformed bindings are refused by validation after this.
            let Some(binding) = Binding::of(obj) else {
                return Ok(());
            };
            let (role_resource, role_ns) = match binding.role_kind {
                RoleKind::ClusterRole => ("clusterroles", ""),
                RoleKind::Role => ("roles", ns),
            };
            if may("bind", role_resource, &binding.role_name) {
                return Ok(());
            }
            match policy.role_rules(binding.role_kind, role_ns, &binding.role_name) {
                Some(rules) => rules,
                None => {
                    let kind = if role_ns.is_empty() {
                        "clusterrole"
                    } else {
                        "role"
                    };
                    return Err(denied(format!(
                        "{kind}.rbac.authorization.k8s.io {:?} not found",
                        binding.role_name
                    )));
                }
            }
        }
    };
    let missing = rbac::uncovered(&policy.rules_for(user, ns), &rules);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    Err(denied(format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        rbac::describe_missing(&missing).join("\n")
    )))
}
