//! Who a request comes from and what they may do: service-account tokens ([`tokens`]), RBAC
//! ([`rbac`]) over the policy objects kept in memory by [`Cache`], and the default roles every
//! cluster starts with ([`policy`]).
//!
//! The admin (group `system:masters`) and nodes are decided before RBAC; in-process
//! controllers and the scheduler call the API layer directly and are not authorized at all.

mod cache;
pub mod policy;
pub mod rbac;
pub mod tokens;

use std::sync::LazyLock;

pub use cache::Cache;

/// The API group of Roles, ClusterRoles and their bindings.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The group whose members may do anything (kube-apiserver's privileged group).
pub const MASTERS: &str = "system:masters";
/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Requests without credentials would be in this group (Skiff refuses them before RBAC).
pub const UNAUTHENTICATED: &str = "system:unauthenticated";

/// An authenticated user, as authorizers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:NS:NAME`, or an impersonated user's name.
    pub name: String,
    /// The service account's uid, when there is one.
    pub uid: String,
    /// Groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The holder of the admin kubeconfig.
    pub fn admin() -> &'static UserInfo {
        static ADMIN: LazyLock<UserInfo> = LazyLock::new(|| UserInfo {
            name: "kubernetes-admin".into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        });
        &ADMIN
    }

    /// A service account's user, with the groups upstream gives it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            name: service_account_username(namespace, name),
            uid: uid.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    /// Whether the user is in `system:masters`.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The namespace and name of a service account's username.
pub fn parse_service_account_username(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// What a request asks to do, as kube-apiserver's `authorizer.Attributes` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, ... for resources; the lowercase HTTP method for
    /// other paths.
    pub verb: &'a str,
    /// What the verb applies to.
    pub target: Target<'a>,
}

/// The object of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An API resource.
    Resource {
        /// API group ("" for core).
        group: &'a str,
        /// Plural resource name.
        resource: &'a str,
        /// Subresource (`log`, `status`), or "".
        subresource: &'a str,
        /// Namespace, or "" at the cluster scope.
        namespace: &'a str,
        /// Object name, or "" for collections.
        name: &'a str,
    },
    /// Any other path (`/version`, `/apis`, `/metrics`).
    NonResource {
        /// The URL path.
        path: &'a str,
    },
}

impl<'a> Attributes<'a> {
    /// A resource request.
    pub fn resource(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        subresource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Self {
        Self {
            verb,
            target: Target::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
            },
        }
    }

    /// A request for a path that is not a resource.
    pub fn non_resource(verb: &'a str, path: &'a str) -> Self {
        Self {
            verb,
            target: Target::NonResource { path },
        }
    }

    /// The namespace the request is in ("" at the cluster scope and for other paths).
    pub fn namespace(&self) -> &'a str {
        match self.target {
            Target::Resource { namespace, .. } => namespace,
            Target::NonResource { .. } => "",
        }
    }

    /// Upstream's 403 message for `user` being refused this request, without the leading
    /// `pods "web" is forbidden: ` part (see [`Attributes::forbidden_prefix`]).
    pub fn denied_message(&self, user: &str) -> String {
        match self.target {
            Target::NonResource { path } => {
                format!("User {user:?} cannot {} path {path:?}", self.verb)
            }
            Target::Resource {
                group,
                resource,
                subresource,
                namespace,
                ..
            } => {
                let resource = if subresource.is_empty() {
                    resource.to_string()
                } else {
                    format!("{resource}/{subresource}")
                };
                let scope = if namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace {namespace:?}")
                };
                format!(
                    "User {user:?} cannot {} resource {resource:?} in API group {group:?} {scope}",
                    self.verb
                )
            }
        }
    }

    /// What a Forbidden Status names before `is forbidden:`: `pods`, `deployments.apps`,
    /// `pods "web"`, or nothing for paths that are not resources.
    pub fn forbidden_prefix(&self) -> String {
        match self.target {
            Target::NonResource { .. } => String::new(),
            Target::Resource {
                group,
                resource,
                name,
                ..
            } => {
                let qualified = if group.is_empty() {
                    resource.to_string()
                } else {
                    format!("{resource}.{group}")
                };
                if name.is_empty() {
                    qualified
                } else {
                    format!("{qualified} {name:?}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_read_as_upstream_writes_them() {
        let user = "system:serviceaccount:team-a:bot";
        let list = Attributes::resource("list", "", "pods", "", "team-b", "");
        assert_eq!(
            format!(
                "{} is forbidden: {}",
                list.forbidden_prefix(),
                list.denied_message(user)
            ),
            r#"pods is forbidden: User "system:serviceaccount:team-a:bot" cannot list resource "pods" in API group "" in the namespace "team-b""#
        );
        let log = Attributes::resource("get", "", "pods", "log", "b", "web");
        assert_eq!(
            format!(
                "{} is forbidden: {}",
                log.forbidden_prefix(),
                log.denied_message(user)
            ),
            r#"pods "web" is forbidden: User "system:serviceaccount:team-a:bot" cannot get resource "pods/log" in API group "" in the namespace "b""#
        );
        let nodes = Attributes::resource("list", "", "nodes", "", "", "");
        assert!(
            nodes
                .denied_message(user)
                .ends_with(r#"cannot list resource "nodes" in API group "" at the cluster scope"#)
        );
        let deploy = Attributes::resource("create", "apps", "deployments", "", "a", "");
        assert_eq!(deploy.forbidden_prefix(), "deployments.apps");
        assert_eq!(
            Attributes::non_resource("get", "/metrics").denied_message("u"),
            r#"User "u" cannot get path "/metrics""#
        );
    }

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            parse_service_account_username("system:serviceaccount:a:bot"),
            Some(("a", "bot"))
        );
        assert_eq!(
            parse_service_account_username("system:serviceaccount:a"),
            None
        );
        assert_eq!(parse_service_account_username("alice"), None);
        let u = UserInfo::service_account("a", "bot", "u1");
        assert_eq!(u.name, "system:serviceaccount:a:bot");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:a",
                "system:authenticated"
            ]
        );
        assert!(UserInfo::admin().is_master());
        assert!(!u.is_master());
    }
}
