//! The kinds the API server serves, as discovery describes them.

/// One served resource (a group/version/plural).
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group; "" for core.
    pub group: &'static str,
    /// API version served.
    pub version: &'static str,
    /// Plural name used in URLs and store keys.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource (the main resource then ignores status changes).
    pub status: bool,
    /// Has a `/scale` subresource.
    pub scale: bool,
    /// Tracks `metadata.generation` (kinds whose spec is desired state).
    pub generation: bool,
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as error messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store key prefix for a namespace, or for all of the resource when `ns` is `None`.
    pub fn prefix(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.plural),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    /// The store key of one object.
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(ns))
    }

    /// The path of the collection, for `selfLink`-like messages and tests.
    pub fn base_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

macro_rules! def {
    ($group:literal, $version:literal, $plural:literal, $singular:literal, $kind:literal,
     ns=$ns:literal, short=[$($short:literal),*], cat=[$($cat:literal),*],
     status=$status:literal, scale=$scale:literal, generation=$gen:literal) => {
        ResourceDef {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            status: $status,
            scale: $scale,
            generation: $gen,
        }
    };
}

/// Every served resource, in discovery order.
#[rustfmt::skip]
pub static RESOURCES: &[ResourceDef] = &[
    def!("", "v1", "namespaces", "namespace", "Namespace", ns=false, short=["ns"], cat=[], status=true, scale=false, generation=false),
    def!("", "v1", "nodes", "node", "Node", ns=false, short=["no"], cat=[], status=true, scale=false, generation=false),
    def!("", "v1", "pods", "pod", "Pod", ns=true, short=["po"], cat=["all"], status=true, scale=false, generation=true),
    def!("", "v1", "services", "service", "Service", ns=true, short=["svc"], cat=["all"], status=true, scale=false, generation=false),
    def!("", "v1", "endpoints", "endpoints", "Endpoints", ns=true, short=["ep"], cat=[], status=false, scale=false, generation=false),
    def!("", "v1", "configmaps", "configmap", "ConfigMap", ns=true, short=["cm"], cat=[], status=false, scale=false, generation=false),
    def!("", "v1", "secrets", "secret", "Secret", ns=true, short=[], cat=[], status=false, scale=false, generation=false),
    def!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", ns=true, short=["sa"], cat=[], status=false, scale=false, generation=false),
    def!("", "v1", "events", "event", "Event", ns=true, short=["ev"], cat=[], status=false, scale=false, generation=false),
    def!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", ns=true, short=["quota"], cat=[], status=true, scale=false, generation=false),
    def!("", "v1", "limitranges", "limitrange", "LimitRange", ns=true, short=["limits"], cat=[], status=false, scale=false, generation=false),
    def!("", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController", ns=true, short=["rc"], cat=["all"], status=true, scale=true, generation=true),
    def!("apps", "v1", "deployments", "deployment", "Deployment", ns=true, short=["deploy"], cat=["all"], status=true, scale=true, generation=true),
    def!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", ns=true, short=["rs"], cat=["all"], status=true, scale=true, generation=true),
    def!("batch", "v1", "jobs", "job", "Job", ns=true, short=[], cat=["all"], status=true, scale=false, generation=true),
    def!("batch", "v1", "cronjobs", "cronjob", "CronJob", ns=true, short=["cj"], cat=["all"], status=true, scale=false, generation=true),
    def!("coordination.k8s.io", "v1", "leases", "lease", "Lease", ns=true, short=[], cat=[], status=false, scale=false, generation=false),
    def!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", ns=false, short=[], cat=[], status=false, scale=false, generation=false),
    def!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", ns=false, short=[], cat=[], status=false, scale=false, generation=false),
    def!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", ns=true, short=[], cat=[], status=false, scale=false, generation=false),
    def!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", ns=true, short=[], cat=[], status=false, scale=false, generation=false),
    def!("skiff.dev", "v1", "modules", "module", "Module", ns=false, short=["mod"], cat=[], status=false, scale=false, generation=false),
    def!("skiff.dev", "v1", "wasmpolicies", "wasmpolicy", "WasmPolicy", ns=true, short=["wp"], cat=[], status=false, scale=false, generation=true),
    def!("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", ns=true, short=["hpa"], cat=["all"], status=true, scale=false, generation=true),
    def!("autoscaling", "v1", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", ns=true, short=["hpa"], cat=["all"], status=true, scale=false, generation=true),
    def!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", ns=true, short=[], cat=[], status=false, scale=false, generation=false),
];

/// Finds a served resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resources served in one group/version, in discovery order.
pub fn served(group: &str, version: &str) -> Vec<&'static ResourceDef> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

/// The resource for a kind in its group's preferred (first listed) version.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// Served group/versions in discovery order: `(group, [versions])`, preferred first.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Shorthand for the core kinds the service layer itself needs.
pub fn core(plural: &str) -> &'static ResourceDef {
    find("", "v1", plural).expect("core resource is served")
}
