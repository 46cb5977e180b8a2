//! Admission: decoding into the typed kind, defaulting and validation, as Kubernetes does them
//! for the served kinds. Every error names its field path.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::autoscaling::{v1 as autoscaling_v1, v2 as autoscaling_v2};
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use skiff_api::labels::Selector;
use skiff_api::policy::WasmPolicyObject;
use skiff_api::quantity;
use skiff_api::validation::{self as v, FieldError, quoted};

use super::error::{ApiError, Result};
use super::resources::ResourceDef;

/// How unknown fields in a request body are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Reject the request.
    Strict,
    /// Drop them and warn (the default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "Strict" => Ok(Self::Strict),
            "Warn" | "" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, or Strict, got {other:?}"
            ))),
        }
    }
}

/// Default seconds pods tolerate an unreachable or not-ready node before eviction.
#[derive(Debug, Clone, Copy)]
pub struct Tolerations {
    /// For `node.kubernetes.io/not-ready`.
    pub not_ready_seconds: i64,
    /// For `node.kubernetes.io/unreachable`.
    pub unreachable_seconds: i64,
}

impl Default for Tolerations {
    fn default() -> Self {
        Self {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

/// Context admission needs beyond the object.
pub struct Ctx<'a> {
    /// The resource being written.
    pub res: &'static ResourceDef,
    /// The stored object for updates.
    pub old: Option<&'a Value>,
    /// Unknown-field policy.
    pub validation: FieldValidation,
    /// Default toleration seconds.
    pub tolerations: Tolerations,
    /// A status write: the spec is the stored one (bindings set `spec.nodeName` this way).
    pub status_only: bool,
}

/// Decodes `obj` as its kind, applies defaults and validation, and writes the normalised object
/// back. Returns warnings for the `Warning` header.
pub fn admit(ctx: &Ctx<'_>, obj: &mut Value) -> Result<Vec<String>> {
    let r = ctx.res;
    match (r.group, r.kind) {
        ("", "Pod") => run::<core::Pod>(ctx, obj, |p, old, e| {
            default_pod(p, ctx.tolerations);
            if let Some(spec) = &p.spec {
                validate_pod_spec(spec, "spec", e);
            }
            if let (Some(old), Some(new), false) = (
                old.and_then(|o| o.spec.as_ref()),
                p.spec.as_ref(),
                ctx.status_only,
            ) {
                validate_pod_spec_update(old, new, e);
            }
        }),
        ("", "Namespace") => run::<core::Namespace>(ctx, obj, |ns, _, _| {
            let name = ns.metadata.name.clone().unwrap_or_default();
            ns.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("kubernetes.io/metadata.name".into(), name);
            ns.spec
                .get_or_insert_with(Default::default)
                .finalizers
                .get_or_insert_with(|| vec!["kubernetes".into()]);
            let status = ns.status.get_or_insert_with(Default::default);
            status.phase.get_or_insert_with(|| "Active".into());
        }),
        ("", "Node") => run::<core::Node>(ctx, obj, |_, _, _| {}),
        ("skiff.dev", "WasmPolicy") => run::<WasmPolicyObject>(ctx, obj, |p, _, e| {
            let value = serde_json::to_value(&*p).unwrap_or_default();
            if let Err(problems) = skiff_api::policy::WasmPolicy::parse(&value) {
                for (field, value, detail) in problems {
                    e.push(FieldError::invalid(field, value, &detail));
                }
            }
        }),
        ("skiff.dev", "Module") => run::<skiff_api::module::Module>(ctx, obj, |m, _, e| {
            let spec = &m.spec;
            if let Err(msg) =
                skiff_api::module::parse_reference(&format!("{}:{}", spec.repository, spec.tag))
            {
                e.push(FieldError::invalid("spec", quoted(&spec.repository), &msg));
            }
            let hex = spec.digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                e.push(FieldError::invalid(
                    "spec.digest",
                    quoted(&spec.digest),
                    "must be sha256:<64 hex digits>",
                ));
            }
        }),
        ("", "Service") => run::<core::Service>(ctx, obj, |s, old, e| {
            default_service(s);
            validate_service(s, old, e);
        }),
        ("", "Endpoints") => run::<core::Endpoints>(ctx, obj, |_, _, _| {}),
        ("", "ConfigMap") => run::<core::ConfigMap>(ctx, obj, |c, _, e| {
            let keys = c
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .chain(c.binary_data.iter().flatten().map(|(k, _)| k));
            validate_data_keys(keys, "data", e);
        }),
        ("", "Secret") => run::<core::Secret>(ctx, obj, |s, _, e| {
            if let Some(string_data) = s.string_data.take() {
                let data = s.data.get_or_insert_with(Default::default);
                for (k, val) in string_data {
                    data.insert(k, k8s_openapi::ByteString(val.into_bytes()));
                }
            }
            s.type_.get_or_insert_with(|| "Opaque".into());
            validate_data_keys(s.data.iter().flatten().map(|(k, _)| k), "data", e);
        }),
        ("", "ServiceAccount") => run::<core::ServiceAccount>(ctx, obj, |_, _, _| {}),
        ("", "Event") => run::<core::Event>(ctx, obj, |ev, _, e| {
            if ev.involved_object.name.as_deref().unwrap_or("").is_empty()
                && ev.involved_object.kind.is_none()
            {
                e.push(FieldError::required("involvedObject", ""));
            }
        }),
        ("", "ResourceQuota") => run::<core::ResourceQuota>(ctx, obj, |q, _, e| {
            if let Some(hard) = q.spec.as_ref().and_then(|s| s.hard.as_ref()) {
                for (k, qty) in hard {
                    validate_quantity(qty, &format!("spec.hard[{k}]"), e);
                }
            }
            if let Some(scopes) = q.spec.as_ref().and_then(|s| s.scopes.as_ref()) {
                super::quota::validate_scopes(scopes, e);
            }
        }),
        ("", "LimitRange") => run::<core::LimitRange>(ctx, obj, |lr, _, e| {
            super::limits::default_limit_range(lr);
            super::limits::validate_limit_range(lr, e);
        }),
        ("", "ReplicationController") => {
            run::<core::ReplicationController>(ctx, obj, |rc, _, e| {
                let spec = rc.spec.get_or_insert_with(Default::default);
                spec.replicas.get_or_insert(1);
                spec.min_ready_seconds.get_or_insert(0);
                let template_labels = spec
                    .template
                    .as_ref()
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.clone());
                if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
                    spec.selector = template_labels.clone();
                }
                if rc.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
                    rc.metadata.labels = template_labels;
                }
                if let Some(t) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
                    default_pod_spec(t);
                }
                validate_replicas(spec.replicas, "spec.replicas", e);
                nonnegative(
                    spec.min_ready_seconds.map(i64::from),
                    "spec.minReadySeconds",
                    e,
                );
                match (&spec.selector, &spec.template) {
                    (None, _) => e.push(FieldError::required("spec.selector", "")),
                    (Some(sel), Some(t)) => {
                        let labels = t
                            .metadata
                            .as_ref()
                            .and_then(|m| m.labels.clone())
                            .unwrap_or_default();
                        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                            e.push(FieldError::invalid(
                                "spec.template.metadata.labels",
                                format!("{labels:?}"),
                                "`selector` does not match template `labels`",
                            ));
                        }
                        validate_template(t, "spec.template", e);
                    }
                    (Some(_), None) => e.push(FieldError::required("spec.template", "")),
                }
            })
        }
        ("apps", "Deployment") => run::<apps::Deployment>(ctx, obj, |d, old, e| {
            let spec = d.spec.get_or_insert_with(Default::default);
            spec.replicas.get_or_insert(1);
            spec.revision_history_limit.get_or_insert(10);
            spec.progress_deadline_seconds.get_or_insert(600);
            let strategy = spec.strategy.get_or_insert_with(Default::default);
            let kind = strategy
                .type_
                .get_or_insert_with(|| "RollingUpdate".into())
                .clone();
            if kind == "RollingUpdate" {
                let ru = strategy.rolling_update.get_or_insert_with(Default::default);
                ru.max_surge
                    .get_or_insert(IntOrString::String("25%".into()));
                ru.max_unavailable
                    .get_or_insert(IntOrString::String("25%".into()));
            } else if kind != "Recreate" {
                e.push(FieldError::not_supported(
                    "spec.strategy.type",
                    quoted(&kind),
                    &["Recreate", "RollingUpdate"],
                ));
            } else if strategy.rolling_update.is_some() {
                e.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
            default_pod_spec(spec.template.spec.get_or_insert_with(Default::default));
            validate_replicas(spec.replicas, "spec.replicas", e);
            validate_deployment_numbers(spec, e);
            validate_selector_template(&spec.selector, &spec.template, e);
            immutable(
                "spec.selector",
                old.and_then(|o| o.spec.as_ref()).map(|o| &o.selector),
                &spec.selector,
                e,
            );
        }),
        ("apps", "ReplicaSet") => run::<apps::ReplicaSet>(ctx, obj, |rs, old, e| {
            let spec = rs.spec.get_or_insert_with(Default::default);
            spec.replicas.get_or_insert(1);
            spec.min_ready_seconds.get_or_insert(0);
            validate_replicas(spec.replicas, "spec.replicas", e);
            nonnegative(
                spec.min_ready_seconds.map(i64::from),
                "spec.minReadySeconds",
                e,
            );
            match spec.template.as_mut() {
                Some(t) => {
                    default_pod_spec(t.spec.get_or_insert_with(Default::default));
                    validate_selector_template(&spec.selector, t, e);
                }
                None => e.push(FieldError::required("spec.template", "")),
            }
            immutable(
                "spec.selector",
                old.and_then(|o| o.spec.as_ref()).map(|o| &o.selector),
                &spec.selector,
                e,
            );
        }),
        ("batch", "Job") => run::<batch::Job>(ctx, obj, |j, old, e| {
            let uid = j.metadata.uid.clone().unwrap_or_default();
            default_job(
                j.spec.get_or_insert_with(Default::default),
                &uid,
                j.metadata.name.as_deref().unwrap_or(""),
            );
            let spec = j.spec.as_ref().expect("defaulted");
            validate_job_spec(spec, "spec", e);
            if let Some(old) = old.and_then(|o| o.spec.as_ref()) {
                immutable("spec.selector", Some(&old.selector), &spec.selector, e);
                if old.completions != spec.completions
                    && old.completion_mode.as_deref() != Some("Indexed")
                {
                    e.push(FieldError::invalid(
                        "spec.completions",
                        format!("{:?}", spec.completions),
                        "field is immutable",
                    ));
                }
                if strip_job_template(&old.template) != strip_job_template(&spec.template) {
                    e.push(FieldError::invalid(
                        "spec.template",
                        "core.PodTemplateSpec{...}",
                        "field is immutable",
                    ));
                }
            }
        }),
        ("batch", "CronJob") => run::<batch::CronJob>(ctx, obj, |c, _, e| {
            let spec = c.spec.get_or_insert_with(Default::default);
            spec.concurrency_policy
                .get_or_insert_with(|| "Allow".into());
            spec.suspend.get_or_insert(false);
            spec.successful_jobs_history_limit.get_or_insert(3);
            spec.failed_jobs_history_limit.get_or_insert(1);
            nonnegative(
                spec.starting_deadline_seconds,
                "spec.startingDeadlineSeconds",
                e,
            );
            nonnegative(
                spec.successful_jobs_history_limit.map(i64::from),
                "spec.successfulJobsHistoryLimit",
                e,
            );
            nonnegative(
                spec.failed_jobs_history_limit.map(i64::from),
                "spec.failedJobsHistoryLimit",
                e,
            );
            if spec.schedule.is_empty() {
                e.push(FieldError::required("spec.schedule", ""));
            } else if let Err(msg) = skiff_api::cron::Schedule::parse(&spec.schedule) {
                e.push(FieldError::invalid(
                    "spec.schedule",
                    quoted(&spec.schedule),
                    &msg,
                ));
            }
            if let Some(tz) = &spec.time_zone
                && (tz.is_empty() || jiff::tz::TimeZone::get(tz).is_err())
            {
                e.push(FieldError::invalid(
                    "spec.timeZone",
                    quoted(tz),
                    "unknown time zone",
                ));
            }
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if !["Allow", "Forbid", "Replace"].contains(&policy) {
                e.push(FieldError::not_supported(
                    "spec.concurrencyPolicy",
                    quoted(policy),
                    &["Allow", "Forbid", "Replace"],
                ));
            }
            if let Some(js) = spec.job_template.spec.as_mut() {
                if let Some(t) = js.template.spec.as_mut() {
                    default_pod_spec(t);
                }
                js.backoff_limit.get_or_insert(6);
                js.completion_mode
                    .get_or_insert_with(|| "NonIndexed".into());
                validate_job_numbers(js, "spec.jobTemplate.spec", e);
                validate_template(&js.template, "spec.jobTemplate.spec.template", e);
                validate_job_restart_policy(&js.template, "spec.jobTemplate.spec.template", e);
            } else {
                e.push(FieldError::required("spec.jobTemplate.spec", ""));
            }
        }),
        ("coordination.k8s.io", "Lease") => run::<coordination::Lease>(ctx, obj, |_, _, _| {}),
        ("discovery.k8s.io", "EndpointSlice") => {
            run::<discovery::EndpointSlice>(ctx, obj, |s, _, e| {
                if !["IPv4", "IPv6", "FQDN"].contains(&s.address_type.as_str()) {
                    e.push(FieldError::not_supported(
                        "addressType",
                        quoted(&s.address_type),
                        &["FQDN", "IPv4", "IPv6"],
                    ));
                }
            })
        }
        ("autoscaling", "HorizontalPodAutoscaler") if r.version == "v2" => {
            run::<autoscaling_v2::HorizontalPodAutoscaler>(ctx, obj, |h, _, e| {
                let spec = h.spec.get_or_insert_with(Default::default);
                admit_hpa_spec(
                    &mut spec.min_replicas,
                    spec.max_replicas,
                    &spec.scale_target_ref.name,
                    e,
                );
            })
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            run::<autoscaling_v1::HorizontalPodAutoscaler>(ctx, obj, |h, _, e| {
                let spec = h.spec.get_or_insert_with(Default::default);
                admit_hpa_spec(
                    &mut spec.min_replicas,
                    spec.max_replicas,
                    &spec.scale_target_ref.name,
                    e,
                );
            })
        }
        ("rbac.authorization.k8s.io", "Role") => run::<rbac::Role>(ctx, obj, |r, _, e| {
            validate_policy_rules(r.rules.as_deref(), true, e);
        }),
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            run::<rbac::ClusterRole>(ctx, obj, |r, _, e| {
                validate_policy_rules(r.rules.as_deref(), false, e);
                if let Some(agg) = &r.aggregation_rule {
                    let selectors = agg.cluster_role_selectors.as_deref().unwrap_or_default();
                    if selectors.is_empty() {
                        e.push(FieldError::required(
                            "aggregationRule.clusterRoleSelectors",
                            "at least one clusterRoleSelector required if aggregationRule is non-nil",
                        ));
                    }
                    for (i, sel) in selectors.iter().enumerate() {
                        if let Err(err) = Selector::from_label_selector(sel) {
                            e.push(FieldError::invalid(
                                format!("aggregationRule.clusterRoleSelectors[{i}]"),
                                "",
                                &err.to_string(),
                            ));
                        }
                    }
                }
            })
        }
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            run::<rbac::RoleBinding>(ctx, obj, |b, old, e| {
                admit_binding(
                    &mut b.role_ref,
                    &mut b.subjects,
                    old.map(|o| &o.role_ref),
                    true,
                    e,
                );
            })
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            run::<rbac::ClusterRoleBinding>(ctx, obj, |b, old, e| {
                admit_binding(
                    &mut b.role_ref,
                    &mut b.subjects,
                    old.map(|o| &o.role_ref),
                    false,
                    e,
                );
            })
        }
        _ => Ok(Vec::new()),
    }
}

/// Decodes as `T`, reports unknown fields, runs `f`, validates metadata and writes back.
fn run<T: DeserializeOwned + Serialize + HasMeta>(
    ctx: &Ctx<'_>,
    obj: &mut Value,
    f: impl FnOnce(&mut T, Option<&T>, &mut Vec<FieldError>),
) -> Result<Vec<String>> {
    let r = ctx.res;
    let cannot = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!(
            "{kind} in version \"{ver}\" cannot be handled as a {kind}: {e}",
            kind = r.kind,
            ver = r.version
        ))
    };
    let mut typed = <T as serde::Deserialize>::deserialize(&*obj).map_err(|e| cannot(&e))?;
    let old = ctx
        .old
        .and_then(|o| <T as serde::Deserialize>::deserialize(o).ok());
    let mut errors = Vec::new();
    validate_meta(r, typed.meta(), &mut errors);
    f(&mut typed, old.as_ref(), &mut errors);
    let out = serde_json::to_value(&typed).map_err(|e| ApiError::internal(e.to_string()))?;
    // Defaulting only adds fields, so whatever the request had that the typed form lacks was
    // not understood (except what admission itself consumes, like a Secret's stringData).
    let mut unknown = Vec::new();
    unknown_fields(obj, &out, "", &mut unknown);
    unknown.retain(|f| f != "stringData");
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let described: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match ctx.validation {
            FieldValidation::Strict => {
                return Err(cannot(&format!(
                    "strict decoding error: {}",
                    described.join(", ")
                )));
            }
            FieldValidation::Warn => warnings.extend(described),
            FieldValidation::Ignore => {}
        }
    }
    if !errors.is_empty() {
        let name = typed.meta().name.clone().unwrap_or_default();
        return Err(ApiError::invalid(r, &name, &errors));
    }
    *obj = out;
    Ok(warnings)
}

/// Access to `metadata` of a typed kind.
trait HasMeta {
    fn meta(&self) -> &ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),*) => { $(impl HasMeta for $t { fn meta(&self) -> &ObjectMeta { &self.metadata } })* };
}
has_meta!(
    skiff_api::module::Module,
    WasmPolicyObject,
    core::Pod,
    core::Namespace,
    core::Node,
    core::Service,
    core::Endpoints,
    core::ConfigMap,
    core::Secret,
    core::ServiceAccount,
    core::Event,
    core::ResourceQuota,
    core::LimitRange,
    core::ReplicationController,
    apps::Deployment,
    apps::ReplicaSet,
    batch::Job,
    batch::CronJob,
    coordination::Lease,
    discovery::EndpointSlice,
    autoscaling_v2::HorizontalPodAutoscaler,
    autoscaling_v1::HorizontalPodAutoscaler,
    rbac::Role,
    rbac::ClusterRole,
    rbac::RoleBinding,
    rbac::ClusterRoleBinding
);

/// Collects paths present (non-null) in `orig` but missing from the typed round trip.
fn unknown_fields(orig: &Value, round: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, round) {
        (Value::Object(o), Value::Object(r)) => {
            for (k, ov) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match r.get(k) {
                    Some(rv) => unknown_fields(ov, rv, &p, out),
                    None if ov.is_null() => {}
                    // Empty objects and lists are dropped by the typed form without loss.
                    None if ov.as_object().is_some_and(|m| m.is_empty()) => {}
                    None if ov.as_array().is_some_and(|a| a.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(r)) => {
            for (i, (ov, rv)) in o.iter().zip(r).enumerate() {
                unknown_fields(ov, rv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn validate_meta(res: &ResourceDef, meta: &ObjectMeta, e: &mut Vec<FieldError>) {
    let name = meta.name.as_deref().unwrap_or("");
    if name.is_empty() {
        e.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let check = match res.kind {
            "Namespace" => v::dns1123_label(name),
            "Service" => v::dns1035_label(name),
            "Event" | "Lease" => Ok(()),
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => {
                path_segment_name(name)
            }
            _ => v::dns1123_subdomain(name),
        };
        if let Err(msg) = check {
            e.push(FieldError::invalid("metadata.name", quoted(name), &msg));
        }
    }
    for (k, val) in meta.labels.iter().flatten() {
        if let Err(msg) = v::qualified_name(k) {
            e.push(FieldError::invalid("metadata.labels", quoted(k), &msg));
        }
        if let Err(msg) = v::label_value(val) {
            e.push(FieldError::invalid(
                format!("metadata.labels[{k}]"),
                quoted(val),
                &msg,
            ));
        }
    }
    let mut total = 0;
    for (k, val) in meta.annotations.iter().flatten() {
        total += k.len() + val.len();
        if let Err(msg) = v::qualified_name(k) {
            e.push(FieldError::invalid("metadata.annotations", quoted(k), &msg));
        }
    }
    if total > 256 * 1024 {
        e.push(FieldError {
            reason: "FieldValueTooLong",
            field: "metadata.annotations".into(),
            message: format!(
                "metadata.annotations: Too long: may not be more than 262144 bytes (got {total})"
            ),
        });
    }
    if let Some(ns) = meta.namespace.as_deref().filter(|ns| !ns.is_empty())
        && let Err(msg) = v::dns1123_label(ns)
    {
        e.push(FieldError::invalid("metadata.namespace", quoted(ns), &msg));
    }
}

fn default_pod(p: &mut core::Pod, tolerations: Tolerations) {
    let spec = p.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec);
    super::limits::default_requests_from_limits(spec);
    spec.service_account_name
        .get_or_insert_with(|| "default".into());
    spec.priority.get_or_insert(0);
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, seconds) in [
        (
            "node.kubernetes.io/not-ready",
            tolerations.not_ready_seconds,
        ),
        (
            "node.kubernetes.io/unreachable",
            tolerations.unreachable_seconds,
        ),
    ] {
        let covered = tols.iter().any(|t| {
            (t.key.as_deref() == Some(key)
                || (t.key.is_none() && t.operator.as_deref() == Some("Exists")))
                && t.effect.as_deref().is_none_or(|e| e == "NoExecute")
        });
        if !covered {
            tols.push(core::Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(seconds),
                value: None,
            });
        }
    }
}

/// Defaults shared by pods and pod templates.
pub(crate) fn default_pod_spec(spec: &mut core::PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in containers {
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy
            .get_or_insert_with(|| "File".into());
        c.resources.get_or_insert_with(Default::default);
        if c.image_pull_policy.is_none() {
            let image = c.image.as_deref().unwrap_or("");
            let tag = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split_once(':'))
                .map(|(_, t)| t);
            let latest = !image.contains('@') && tag.is_none_or(|t| t == "latest");
            c.image_pull_policy = Some(if latest { "Always" } else { "IfNotPresent" }.into());
        }
        for p in c.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
        }
    }
    for vol in spec.volumes.iter_mut().flatten() {
        if let Some(cm) = vol.config_map.as_mut() {
            cm.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = vol.secret.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
    }
}

fn validate_pod_spec(spec: &core::PodSpec, path: &str, e: &mut Vec<FieldError>) {
    if spec.containers.is_empty() {
        e.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    let volumes: HashSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let mut seen_volumes = HashSet::new();
    for (i, vol) in spec.volumes.iter().flatten().enumerate() {
        let p = format!("{path}.volumes[{i}].name");
        if let Err(msg) = v::dns1123_label(&vol.name) {
            e.push(FieldError::invalid(&p, quoted(&vol.name), &msg));
        }
        if !seen_volumes.insert(vol.name.as_str()) {
            e.push(FieldError::duplicate(&p, quoted(&vol.name)));
        }
        let items = [
            (
                "configMap",
                vol.config_map.as_ref().and_then(|c| c.items.as_ref()),
            ),
            ("secret", vol.secret.as_ref().and_then(|s| s.items.as_ref())),
        ];
        for (source, items) in items {
            for (j, item) in items.into_iter().flatten().enumerate() {
                let ip = format!("{path}.volumes[{i}].{source}.items[{j}]");
                if item.key.is_empty() {
                    e.push(FieldError::required(format!("{ip}.key"), ""));
                }
                validate_volume_path(&item.path, &format!("{ip}.path"), e);
            }
        }
    }
    let groups = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
        ),
        ("containers", &spec.containers[..]),
    ];
    for (field, list) in groups {
        for (i, c) in list.iter().enumerate() {
            let cp = format!("{path}.{field}[{i}]");
            if c.name.is_empty() {
                e.push(FieldError::required(format!("{cp}.name"), ""));
            } else if let Err(msg) = v::dns1123_label(&c.name) {
                e.push(FieldError::invalid(
                    format!("{cp}.name"),
                    quoted(&c.name),
                    &msg,
                ));
            } else if !names.insert(c.name.as_str()) {
                e.push(FieldError::duplicate(format!("{cp}.name"), quoted(&c.name)));
            }
            if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                e.push(FieldError::required(format!("{cp}.image"), ""));
            }
            validate_container(c, &cp, &volumes, e);
        }
    }
    let rp = spec.restart_policy.as_deref().unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&rp) {
        e.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            quoted(rp),
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        e.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(a) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&a)
    {
        e.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            a,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            e.push(FieldError::invalid(
                format!("{path}.tolerations[{i}].effect"),
                quoted(t.effect.as_deref().unwrap_or("")),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let op = t.operator.as_deref().unwrap_or("Equal");
        if !["Equal", "Exists"].contains(&op) {
            e.push(FieldError::not_supported(
                format!("{path}.tolerations[{i}].operator"),
                quoted(op),
                &["Equal", "Exists"],
            ));
        }
        if let Some(eff) = t.effect.as_deref().filter(|e| !e.is_empty())
            && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&eff)
        {
            e.push(FieldError::not_supported(
                format!("{path}.tolerations[{i}].effect"),
                quoted(eff),
                &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            ));
        }
    }
}

fn validate_container(
    c: &core::Container,
    cp: &str,
    volumes: &HashSet<&str>,
    e: &mut Vec<FieldError>,
) {
    let mut port_names = HashSet::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{cp}.ports[{j}]");
        if !(1..=65535).contains(&p.container_port) {
            e.push(FieldError::invalid(
                format!("{pp}.containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(hp) = p.host_port
            && !(0..=65535).contains(&hp)
        {
            e.push(FieldError::invalid(
                format!("{pp}.hostPort"),
                hp,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            e.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                quoted(proto),
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if let Some(n) = p.name.as_deref() {
            if let Err(msg) = v::port_name(n) {
                e.push(FieldError::invalid(format!("{pp}.name"), quoted(n), &msg));
            } else if !port_names.insert(n) {
                e.push(FieldError::duplicate(format!("{pp}.name"), quoted(n)));
            }
        }
    }
    for (j, env) in c.env.iter().flatten().enumerate() {
        if let Err(msg) = v::env_var_name(&env.name) {
            e.push(FieldError::invalid(
                format!("{cp}.env[{j}].name"),
                quoted(&env.name),
                &msg,
            ));
        }
    }
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            e.push(FieldError {
                reason: "FieldValueNotFound",
                field: format!("{cp}.volumeMounts[{j}].name"),
                message: format!(
                    "{cp}.volumeMounts[{j}].name: Not found: {}",
                    quoted(&m.name)
                ),
            });
        }
        if m.mount_path.is_empty() {
            e.push(FieldError::required(
                format!("{cp}.volumeMounts[{j}].mountPath"),
                "",
            ));
        }
    }
    if let Some(res) = &c.resources {
        let rp = format!("{cp}.resources");
        let mut limits = BTreeMap::new();
        for (k, q) in res.limits.iter().flatten() {
            if let Some(n) = validate_quantity(q, &format!("{rp}.limits[{k}]"), e) {
                limits.insert(k.clone(), n);
            }
        }
        for (k, q) in res.requests.iter().flatten() {
            if let Some(n) = validate_quantity(q, &format!("{rp}.requests[{k}]"), e)
                && limits.get(k).is_some_and(|l| n > *l)
            {
                let limit = &res.limits.as_ref().expect("limit present")[k].0;
                e.push(FieldError::invalid(
                    format!("{rp}.requests"),
                    quoted(&q.0),
                    &format!("must be less than or equal to {k} limit of {limit}"),
                ));
            }
        }
    }
    for (probe_name, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if probe.as_ref().is_some_and(|p| p.exec.is_some()) {
            e.push(FieldError::forbidden(
                format!("{cp}.{probe_name}.exec"),
                "exec probes are not supported: Wasm containers have no processes to exec into; use httpGet or tcpSocket",
            ));
        }
        if let Some(p) = probe {
            validate_probe_numbers(p, &format!("{cp}.{probe_name}"), e);
        }
    }
}

fn validate_quantity(q: &Quantity, path: &str, e: &mut Vec<FieldError>) -> Option<i128> {
    match quantity::parse_milli(&q.0) {
        Ok(n) if n < 0 => {
            e.push(FieldError::invalid(
                path,
                quoted(&q.0),
                "must be greater than or equal to 0",
            ));
            None
        }
        Ok(n) => Some(n),
        Err(msg) => {
            e.push(FieldError::invalid(path, quoted(&q.0), &msg));
            None
        }
    }
}

/// Pods may change only images, tolerations (by adding), activeDeadlineSeconds and the grace
/// period once created.
fn validate_pod_spec_update(old: &core::PodSpec, new: &core::PodSpec, e: &mut Vec<FieldError>) {
    let normalize = |s: &core::PodSpec| {
        let mut s = s.clone();
        for c in s
            .containers
            .iter_mut()
            .chain(s.init_containers.iter_mut().flatten())
        {
            c.image = None;
        }
        s.active_deadline_seconds = None;
        s.tolerations = None;
        s.termination_grace_period_seconds = None;
        s
    };
    if normalize(old) != normalize(new) {
        e.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    if old.node_name.is_some() && old.node_name != new.node_name {
        e.push(FieldError::forbidden(
            "spec.nodeName",
            "may not be changed once set",
        ));
    }
}

fn validate_template(t: &core::PodTemplateSpec, path: &str, e: &mut Vec<FieldError>) {
    match &t.spec {
        Some(spec) => validate_pod_spec(spec, &format!("{path}.spec"), e),
        None => e.push(FieldError::required(format!("{path}.spec"), "")),
    }
}

fn validate_selector_template(
    sel: &LabelSelector,
    t: &core::PodTemplateSpec,
    e: &mut Vec<FieldError>,
) {
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    if empty {
        e.push(FieldError::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for deployment",
        ));
    } else {
        match Selector::from_label_selector(sel) {
            Ok(s) => {
                let labels = t
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                if !s.matches(&labels) {
                    e.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        format!("{labels:?}"),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(err) => e.push(FieldError::invalid("spec.selector", "", &err.to_string())),
        }
    }
    validate_template(t, "spec.template", e);
}

/// Upstream's `IsValidPathSegmentName`: the names RBAC objects may have (`system:basic-user`).
fn path_segment_name(name: &str) -> std::result::Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!("may not be '{name}'"));
    }
    let bad: Vec<String> = ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join(", "))
    }
}

/// Upstream's `ValidatePolicyRule` for each rule of a Role (`namespaced`) or ClusterRole.
fn validate_policy_rules(
    rules: Option<&[rbac::PolicyRule]>,
    namespaced: bool,
    e: &mut Vec<FieldError>,
) {
    for (i, rule) in rules.unwrap_or_default().iter().enumerate() {
        let path = format!("rules[{i}]");
        if rule.verbs.is_empty() {
            e.push(FieldError::required(
                format!("{path}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let list = |v: &Option<Vec<String>>| v.as_deref().unwrap_or_default().len();
        if let Some(urls) = rule.non_resource_urls.as_ref().filter(|u| !u.is_empty()) {
            let shown = format!(
                "[]string{{{}}}",
                urls.iter()
                    .map(|u| quoted(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if namespaced {
                e.push(FieldError::invalid(
                    format!("{path}.nonResourceURLs"),
                    &shown,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if list(&rule.api_groups) > 0
                || list(&rule.resources) > 0
                || list(&rule.resource_names) > 0
            {
                e.push(FieldError::invalid(
                    format!("{path}.nonResourceURLs"),
                    &shown,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if rule.api_groups.is_none() {
            e.push(FieldError::required(
                format!("{path}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if list(&rule.resources) == 0 {
            e.push(FieldError::required(
                format!("{path}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Defaults and validates a RoleBinding (`namespaced`) or ClusterRoleBinding as upstream:
/// roleRef's group defaults to RBAC's, User and Group subjects' too; the roleRef must name a
/// role and may never change.
fn admit_binding(
    role_ref: &mut rbac::RoleRef,
    subjects: &mut Option<Vec<rbac::Subject>>,
    old: Option<&rbac::RoleRef>,
    namespaced: bool,
    e: &mut Vec<FieldError>,
) {
    if role_ref.api_group.is_empty() {
        role_ref.api_group = RBAC_GROUP.into();
    }
    if role_ref.api_group != RBAC_GROUP {
        e.push(FieldError::not_supported(
            "roleRef.apiGroup",
            quoted(&role_ref.api_group),
            &[RBAC_GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&role_ref.kind.as_str()) {
        e.push(FieldError::not_supported(
            "roleRef.kind",
            quoted(&role_ref.kind),
            kinds,
        ));
    }
    if role_ref.name.is_empty() {
        e.push(FieldError::required("roleRef.name", ""));
    } else if let Err(msg) = path_segment_name(&role_ref.name) {
        e.push(FieldError::invalid(
            "roleRef.name",
            quoted(&role_ref.name),
            &msg,
        ));
    }
    for (i, s) in subjects.iter_mut().flatten().enumerate() {
        let path = format!("subjects[{i}]");
        let group = s.api_group.get_or_insert_with(String::new);
        if group.is_empty() && matches!(s.kind.as_str(), "User" | "Group") {
            *group = RBAC_GROUP.into();
        }
        if s.name.is_empty() {
            e.push(FieldError::required(format!("{path}.name"), ""));
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.name.is_empty()
                    && let Err(msg) = v::dns1123_subdomain(&s.name)
                {
                    e.push(FieldError::invalid(
                        format!("{path}.name"),
                        quoted(&s.name),
                        &msg,
                    ));
                }
                if !group.is_empty() {
                    e.push(FieldError::not_supported(
                        format!("{path}.apiGroup"),
                        quoted(group),
                        &[""],
                    ));
                }
                if !namespaced && s.namespace.as_deref().unwrap_or("").is_empty() {
                    e.push(FieldError::required(format!("{path}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    e.push(FieldError::not_supported(
                        format!("{path}.apiGroup"),
                        quoted(group),
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => e.push(FieldError::not_supported(
                format!("{path}.kind"),
                quoted(other),
                &["ServiceAccount", "User", "Group"],
            )),
        }
        if s.api_group.as_deref() == Some("") {
            s.api_group = None;
        }
    }
    if old.is_some_and(|o| o != role_ref) {
        e.push(FieldError::invalid(
            "roleRef",
            format!(
                "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
                role_ref.api_group, role_ref.kind, role_ref.name
            ),
            "cannot change roleRef",
        ));
    }
}

/// Reports a change to a field that may not change after creation.
fn immutable<T: PartialEq + std::fmt::Debug>(
    path: &str,
    old: Option<&T>,
    new: &T,
    e: &mut Vec<FieldError>,
) {
    if old.is_some_and(|o| o != new) {
        e.push(FieldError::invalid(
            path,
            format!("{new:?}"),
            "field is immutable",
        ));
    }
}

fn validate_replicas(r: Option<i32>, path: &str, e: &mut Vec<FieldError>) {
    if let Some(r) = r.filter(|r| *r < 0) {
        e.push(FieldError::invalid(
            path,
            r,
            "must be greater than or equal to 0",
        ));
    }
}

fn default_job(spec: &mut batch::JobSpec, uid: &str, name: &str) {
    spec.parallelism.get_or_insert(1);
    if spec.completions.is_none() && spec.completion_mode.as_deref() != Some("Indexed") {
        spec.completions = Some(1);
    }
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    if let Some(t) = spec.template.spec.as_mut() {
        default_pod_spec(t);
    }
    // The job controller's labels: a selector unique to this Job (by uid), set at creation.
    if spec.manual_selector != Some(true) && spec.selector.is_none() && !uid.is_empty() {
        let labels = [
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name),
            ("controller-uid", uid),
            ("job-name", name),
        ];
        let tl = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for (k, v) in labels {
            tl.insert(k.into(), v.into());
        }
        spec.selector = Some(LabelSelector {
            match_labels: Some(
                [(
                    "batch.kubernetes.io/controller-uid".to_string(),
                    uid.to_string(),
                )]
                .into(),
            ),
            match_expressions: None,
        });
    }
}

/// The upper bound of `parallelism` of an Indexed Job (upstream's).
const MAX_PARALLELISM_FOR_INDEXED_JOB: i32 = 100_000;

/// A Job's counts and seconds, as upstream bounds them: none negative. Deadlines and TTLs
/// may be as large as `int64` goes (the controller treats one beyond time as never).
fn validate_job_numbers(spec: &batch::JobSpec, path: &str, e: &mut Vec<FieldError>) {
    for (field, value) in [
        ("parallelism", spec.parallelism.map(i64::from)),
        ("completions", spec.completions.map(i64::from)),
        ("activeDeadlineSeconds", spec.active_deadline_seconds),
        ("backoffLimit", spec.backoff_limit.map(i64::from)),
        (
            "ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished.map(i64::from),
        ),
        (
            "backoffLimitPerIndex",
            spec.backoff_limit_per_index.map(i64::from),
        ),
        ("maxFailedIndexes", spec.max_failed_indexes.map(i64::from)),
    ] {
        nonnegative(value, &format!("{path}.{field}"), e);
    }
    if spec.completion_mode.as_deref() == Some("Indexed")
        && let Some(p) = spec
            .parallelism
            .filter(|p| *p > MAX_PARALLELISM_FOR_INDEXED_JOB)
    {
        e.push(FieldError::invalid(
            format!("{path}.parallelism"),
            p,
            &format!(
                "must be less than or equal to {MAX_PARALLELISM_FOR_INDEXED_JOB} when completion mode is Indexed"
            ),
        ));
    }
}

/// `ValidateNonnegativeField`: a number that may not be negative.
fn nonnegative(value: Option<i64>, path: &str, e: &mut Vec<FieldError>) {
    if let Some(n) = value.filter(|n| *n < 0) {
        e.push(FieldError::invalid(
            path,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

/// A probe's seconds and thresholds (none negative) and its own grace period (positive).
fn validate_probe_numbers(p: &core::Probe, path: &str, e: &mut Vec<FieldError>) {
    for (field, value) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        nonnegative(value.map(i64::from), &format!("{path}.{field}"), e);
    }
    if let Some(g) = p.termination_grace_period_seconds.filter(|g| *g <= 0) {
        e.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            g,
            "must be greater than 0",
        ));
    }
}

/// A Deployment's seconds, history and rolling-update bounds, as upstream validates them.
fn validate_deployment_numbers(spec: &apps::DeploymentSpec, e: &mut Vec<FieldError>) {
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    nonnegative(Some(i64::from(min_ready)), "spec.minReadySeconds", e);
    nonnegative(
        spec.revision_history_limit.map(i64::from),
        "spec.revisionHistoryLimit",
        e,
    );
    if let Some(p) = spec.progress_deadline_seconds {
        nonnegative(Some(i64::from(p)), "spec.progressDeadlineSeconds", e);
        if p <= min_ready {
            e.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                p,
                "must be greater than minReadySeconds",
            ));
        }
    }
    let Some(ru) = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
    else {
        return;
    };
    let path = "spec.strategy.rollingUpdate";
    for (field, value) in [
        ("maxUnavailable", &ru.max_unavailable),
        ("maxSurge", &ru.max_surge),
    ] {
        let p = format!("{path}.{field}");
        match value {
            Some(IntOrString::Int(n)) => nonnegative(Some(i64::from(*n)), &p, e),
            Some(IntOrString::String(s)) => match percent(s) {
                None => e.push(FieldError::invalid(
                    &p,
                    quoted(s),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                )),
                Some(n) if field == "maxUnavailable" && n > 100 => {
                    e.push(FieldError::invalid(&p, quoted(s), "must not be greater than 100%"))
                }
                Some(_) => {}
            },
            None => {}
        }
    }
    let zero = |v: &Option<IntOrString>| match v {
        Some(IntOrString::Int(n)) => *n == 0,
        Some(IntOrString::String(s)) => percent(s) == Some(0),
        None => false,
    };
    if zero(&ru.max_unavailable) && zero(&ru.max_surge) {
        e.push(FieldError::invalid(
            format!("{path}.maxUnavailable"),
            0,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

/// The number of a percent string (`[0-9]+%`), saturating at `u64::MAX`; `None` if it is not one.
pub(crate) fn percent(s: &str) -> Option<u64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

fn validate_job_spec(spec: &batch::JobSpec, path: &str, e: &mut Vec<FieldError>) {
    validate_job_numbers(spec, path, e);
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    if !["NonIndexed", "Indexed"].contains(&mode) {
        e.push(FieldError::not_supported(
            format!("{path}.completionMode"),
            quoted(mode),
            &["Indexed", "NonIndexed"],
        ));
    }
    if mode == "Indexed" && spec.completions.is_none() {
        e.push(FieldError::required(
            format!("{path}.completions"),
            "when completion mode is Indexed",
        ));
    }
    validate_template(&spec.template, &format!("{path}.template"), e);
    validate_job_restart_policy(&spec.template, &format!("{path}.template"), e);
}

fn validate_job_restart_policy(t: &core::PodTemplateSpec, path: &str, e: &mut Vec<FieldError>) {
    let rp = t
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if !["OnFailure", "Never"].contains(&rp) {
        e.push(FieldError::not_supported(
            format!("{path}.spec.restartPolicy"),
            quoted(rp),
            &["OnFailure", "Never"],
        ));
    }
}

fn strip_job_template(t: &core::PodTemplateSpec) -> core::PodTemplateSpec {
    let mut t = t.clone();
    // Scheduling directives may change on suspended Jobs; the rest of the template is fixed.
    if let Some(s) = t.spec.as_mut() {
        s.node_selector = None;
        s.tolerations = None;
        s.affinity = None;
        s.scheduling_gates = None;
    }
    t
}

fn default_service(s: &mut core::Service) {
    let spec = s.spec.get_or_insert_with(Default::default);
    let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    spec.session_affinity.get_or_insert_with(|| "None".into());
    if kind != "ExternalName" {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
        spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if p.target_port.is_none() {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    s.status.get_or_insert_with(|| core::ServiceStatus {
        load_balancer: Some(Default::default()),
        conditions: None,
    });
}

fn validate_service(s: &core::Service, old: Option<&core::Service>, e: &mut Vec<FieldError>) {
    let spec = s.spec.as_ref().expect("defaulted");
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&kind) {
        e.push(FieldError::not_supported("spec.type", quoted(kind), &TYPES));
    }
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if ports.is_empty() && kind != "ExternalName" && !headless {
        e.push(FieldError::required("spec.ports", ""));
    }
    if kind == "ExternalName" && spec.external_name.as_deref().is_none_or(str::is_empty) {
        e.push(FieldError::required("spec.externalName", ""));
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        if !(1..=65535).contains(&p.port) {
            e.push(FieldError::invalid(
                format!("{pp}.port"),
                p.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = p.name.as_deref().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            e.push(FieldError::required(format!("{pp}.name"), ""));
        } else if !name.is_empty()
            && let Err(msg) = v::dns1123_label(name)
        {
            e.push(FieldError::invalid(
                format!("{pp}.name"),
                quoted(name),
                &msg,
            ));
        }
        if !names.insert(name) {
            e.push(FieldError::duplicate(format!("{pp}.name"), quoted(name)));
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            e.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                quoted(proto),
                &["SCTP", "TCP", "UDP"],
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                e.push(FieldError::invalid(
                    format!("{pp}.targetPort"),
                    t,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            Some(IntOrString::String(t)) => {
                if let Err(msg) = v::port_name(t) {
                    e.push(FieldError::invalid(
                        format!("{pp}.targetPort"),
                        quoted(t),
                        &msg,
                    ));
                }
            }
            _ => {}
        }
        if let Some(np) = p.node_port {
            if kind != "NodePort" && kind != "LoadBalancer" {
                e.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(30000..=32767).contains(&np) {
                e.push(FieldError::invalid(format!("{pp}.nodePort"), np, "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
        }
    }
    validate_cluster_ips(spec, old.and_then(|o| o.spec.as_ref()), e);
}

/// `clusterIP`, `clusterIPs`, `ipFamilies` and `ipFamilyPolicy` on a single-stack IPv4
/// cluster, with upstream's messages; a ClusterIP may not change once set.
fn validate_cluster_ips(
    spec: &core::ServiceSpec,
    old: Option<&core::ServiceSpec>,
    e: &mut Vec<FieldError>,
) {
    use super::service_ips::go_strings;
    let ips: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let ip = spec.cluster_ip.as_deref().unwrap_or("");
    if spec.type_.as_deref() == Some("ExternalName") {
        if !ip.is_empty() || !ips.is_empty() {
            e.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        let carried =
            |same: bool| old.is_some_and(|o| o.type_.as_deref() != Some("ExternalName")) && same;
        let old_families = old.and_then(|o| o.ip_families.as_ref());
        if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty())
            && !carried(spec.ip_families.as_ref() == old_families)
        {
            e.push(FieldError::forbidden(
                "spec.ipFamilies",
                "may not be set for ExternalName services",
            ));
        }
        let old_policy = old.and_then(|o| o.ip_family_policy.as_ref());
        if spec.ip_family_policy.is_some() && !carried(spec.ip_family_policy.as_ref() == old_policy)
        {
            e.push(FieldError::forbidden(
                "spec.ipFamilyPolicy",
                "may not be set for ExternalName services",
            ));
        }
        return;
    }
    if !ip.is_empty() {
        if ips.is_empty() {
            e.push(FieldError::required("spec.clusterIPs", ""));
        } else if ips[0] != ip {
            e.push(FieldError::invalid(
                "spec.clusterIPs",
                go_strings(&ips),
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        e.push(FieldError::invalid(
            "spec.clusterIPs",
            go_strings(&ips),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    for (i, value) in ips.iter().enumerate() {
        if *value == "None" {
            continue;
        }
        match value.parse::<std::net::IpAddr>() {
            Err(_) => e.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                quoted(value),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )),
            Ok(std::net::IpAddr::V6(_)) => e.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                go_strings(&ips),
                "IPv6 is not configured on this cluster",
            )),
            Ok(std::net::IpAddr::V4(_)) if i > 0 => e.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                go_strings(&ips),
                "this cluster is not configured for dual-stack services",
            )),
            Ok(_) => {}
        }
    }
    const POLICIES: [&str; 3] = ["PreferDualStack", "RequireDualStack", "SingleStack"];
    match spec.ip_family_policy.as_deref() {
        Some(p) if !POLICIES.contains(&p) => e.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            quoted(p),
            &POLICIES,
        )),
        Some("RequireDualStack") => e.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            quoted("RequireDualStack"),
            "this cluster is not configured for dual-stack services",
        )),
        Some("SingleStack") if ips.len() > 1 => e.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            quoted("SingleStack"),
            "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
        )),
        _ => {}
    }
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        match family.as_str() {
            "IPv4" => {}
            "IPv6" => e.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                quoted(family),
                "not configured on this cluster",
            )),
            other => e.push(FieldError::not_supported(
                format!("spec.ipFamilies[{i}]"),
                quoted(other),
                &["IPv4", "IPv6"],
            )),
        }
    }
    // The primary ClusterIP may not change once set (upstream's
    // `validateUpgradeDowngradeClusterIPs`).
    let Some(old) = old.filter(|o| o.type_.as_deref() != Some("ExternalName")) else {
        return;
    };
    let old_ips: Vec<&str> = old
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if old_ips.first() == Some(&"None") && ips.first() == Some(&"None") {
        return;
    }
    match (old_ips.first(), ips.first()) {
        (Some(_), None) => e.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            go_strings(&ips),
            "primary clusterIP can not be unset",
        )),
        (Some(before), Some(now)) if before != now => e.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            go_strings(&ips),
            "may not change once set",
        )),
        _ => {}
    }
}

/// A file path inside a volume, as upstream's validateLocalNonReservedPath checks it: relative,
/// without `..` components, not starting with `..`.
fn validate_volume_path(target: &str, path: &str, e: &mut Vec<FieldError>) {
    if target.is_empty() {
        e.push(FieldError::required(path, ""));
        return;
    }
    if target.starts_with('/') {
        e.push(FieldError::invalid(
            path,
            quoted(target),
            "must be a relative path",
        ));
    }
    if target.split('/').any(|part| part == "..") {
        e.push(FieldError::invalid(
            path,
            quoted(target),
            "must not contain '..'",
        ));
    } else if target.starts_with("..") {
        e.push(FieldError::invalid(
            path,
            quoted(target),
            "must not start with '..'",
        ));
    }
}

fn validate_data_keys<'a>(
    keys: impl Iterator<Item = &'a String>,
    path: &str,
    e: &mut Vec<FieldError>,
) {
    for k in keys {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && k != "."
            && k != "..";
        if !ok {
            e.push(FieldError::invalid(
                format!("{path}[{k}]"),
                quoted(k),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
    }
}

/// Defaults and checks what both HPA versions share.
fn admit_hpa_spec(min: &mut Option<i32>, max: i32, target: &str, e: &mut Vec<FieldError>) {
    let min = *min.get_or_insert(1);
    if target.is_empty() {
        e.push(FieldError::required("spec.scaleTargetRef.name", ""));
    }
    if min < 1 {
        e.push(FieldError::invalid(
            "spec.minReplicas",
            min,
            "must be greater than or equal to 1",
        ));
    }
    if max < min {
        e.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
}

#[cfg(test)]
mod tests {

    use serde_json::{Value, json};

    use crate::api::resources::{self, ResourceDef};
    use crate::api::{Api, Config, WriteOptions};

    async fn api() -> (Api, tempfile::TempDir) {
        Api::scratch(Config::default()).await
    }

    fn res(plural: &str) -> &'static ResourceDef {
        resources::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .unwrap()
    }

    /// Creates `obj`; `Ok` or the (code, "field: message") of each cause of the refusal.
    async fn create(api: &Api, plural: &str, obj: Value) -> Result<(), (u16, Vec<String>)> {
        match api
            .create(res(plural), Some("default"), obj, &WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let causes = e
                    .details
                    .as_ref()
                    .and_then(|d| d["causes"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c["field"].as_str().unwrap_or(""),
                            c["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                Err((e.code, causes))
            }
        }
    }

    fn pod_spec(extra: Value) -> Value {
        let mut spec = json!({"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x"}]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    }

    fn job(name: &str, spec: Value) -> Value {
        let mut s = json!({"template": {"spec": pod_spec(json!({}))}});
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        json!({"metadata": {"name": name}, "spec": s})
    }

    fn pod(name: &str, extra: Value) -> Value {
        json!({"metadata": {"name": name}, "spec": pod_spec(extra)})
    }

    fn deployment(name: &str, spec: Value) -> Value {
        let mut s = json!({"selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}}});
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        json!({"metadata": {"name": name}, "spec": s})
    }

    /// One refusal naming `field` with upstream's message.
    #[track_caller]
    fn refused(result: Result<(), (u16, Vec<String>)>, cause: &str) {
        match result {
            Err((422, causes)) => assert_eq!(causes, [cause]),
            other => panic!("expected 422 with {cause:?}, got {other:?}"),
        }
    }

    /// A tenant's ConfigMap or Secret volume may name only paths inside the volume: an
    /// absolute path or one with `..` would make the agent write outside it, on the node.
    #[tokio::test]
    async fn volume_item_paths_stay_inside_the_volume() {
        let (api, _dir) = api().await;
        let volume = |source: &str, path: &str| {
            let mut v = json!({"name": "v"});
            v[source] = match source {
                "configMap" => json!({"name": "cm", "items": [{"key": "k", "path": path}]}),
                _ => json!({"secretName": "s", "items": [{"key": "k", "path": path}]}),
            };
            json!({"volumes": [v]})
        };
        for source in ["configMap", "secret"] {
            let field = format!("spec.volumes[0].{source}.items[0].path");
            for (path, why) in [
                ("/tmp/x", "must be a relative path"),
                ("../x", "must not contain '..'"),
                ("a/../../x", "must not contain '..'"),
                ("..x", "must not start with '..'"),
            ] {
                refused(
                    create(&api, "pods", pod("p", volume(source, path))).await,
                    &format!("{field}: Invalid value: \"{path}\": {why}"),
                );
            }
            refused(
                create(&api, "pods", pod("p", volume(source, ""))).await,
                &format!("{field}: Required value"),
            );
            for (i, ok) in ["x", "a/b/c", "x..y", ".hidden"].iter().enumerate() {
                let name = format!("ok-{}-{i}", source.to_lowercase());
                assert_eq!(
                    create(&api, "pods", pod(&name, volume(source, ok))).await,
                    Ok(()),
                    "{ok}"
                );
            }
        }
    }

    #[tokio::test]
    async fn numbers_are_bounded_as_upstream_bounds_them() {
        let (api, _dir) = api().await;
        let max = i64::MAX;

        // Jobs: anything non-negative, up to the end of int64 (the controller saturates).
        for (i, v) in [0, 1, i64::from(i32::MAX), max].into_iter().enumerate() {
            let ok = create(
                &api,
                "jobs",
                job(&format!("ok-{i}"), json!({"activeDeadlineSeconds": v})),
            )
            .await;
            assert_eq!(ok, Ok(()), "activeDeadlineSeconds {v}");
        }
        for v in [-1, i64::MIN] {
            refused(
                create(
                    &api,
                    "jobs",
                    job("neg", json!({"activeDeadlineSeconds": v})),
                )
                .await,
                &format!(
                    "spec.activeDeadlineSeconds: Invalid value: {v}: must be greater than or equal to 0"
                ),
            );
        }
        for field in [
            "ttlSecondsAfterFinished",
            "backoffLimit",
            "parallelism",
            "completions",
        ] {
            refused(
                create(&api, "jobs", job("neg", json!({field: i32::MIN}))).await,
                &format!(
                    "spec.{field}: Invalid value: {}: must be greater than or equal to 0",
                    i32::MIN
                ),
            );
        }
        assert_eq!(
            create(
                &api,
                "jobs",
                job("ttl", json!({"ttlSecondsAfterFinished": i32::MAX}))
            )
            .await,
            Ok(())
        );
        refused(
            create(
                &api,
                "jobs",
                job(
                    "wide",
                    json!({"completionMode": "Indexed", "completions": 5, "parallelism": i32::MAX}),
                ),
            )
            .await,
            &format!(
                "spec.parallelism: Invalid value: {}: must be less than or equal to 100000 when completion mode is Indexed",
                i32::MAX
            ),
        );
        // A number no int64 holds is a decoding error, not a panic or a 500.
        for v in [
            json!(1e300),
            json!(9_223_372_036_854_775_808u64),
            json!("9223372036854775807"),
        ] {
            let r = create(
                &api,
                "jobs",
                job("huge", json!({"activeDeadlineSeconds": v})),
            )
            .await;
            assert!(matches!(r, Err((400 | 422, _))), "{v}: {r:?}");
        }

        // CronJobs.
        let cronjob = |name: &str, spec: Value| {
            let mut s = json!({"schedule": "* * * * *",
                "jobTemplate": {"spec": {"template": {"spec": pod_spec(json!({}))}}}});
            s.as_object_mut()
                .unwrap()
                .extend(spec.as_object().unwrap().clone());
            json!({"metadata": {"name": name}, "spec": s})
        };
        assert_eq!(
            create(
                &api,
                "cronjobs",
                cronjob("far", json!({"startingDeadlineSeconds": max}))
            )
            .await,
            Ok(())
        );
        for field in [
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ] {
            refused(
                create(&api, "cronjobs", cronjob("neg", json!({field: -1}))).await,
                &format!("spec.{field}: Invalid value: -1: must be greater than or equal to 0"),
            );
        }
        let mut deep = cronjob("deep", json!({}));
        deep["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] = json!(-5);
        refused(
            create(&api, "cronjobs", deep).await,
            "spec.jobTemplate.spec.activeDeadlineSeconds: Invalid value: -5: must be greater than or equal to 0",
        );

        // Pods: activeDeadlineSeconds is an int32 range; grace periods may be huge.
        for v in [0, i64::from(i32::MAX) + 1, max, i64::MIN] {
            refused(
                create(
                    &api,
                    "pods",
                    pod("deadline", json!({"activeDeadlineSeconds": v})),
                )
                .await,
                &format!(
                    "spec.activeDeadlineSeconds: Invalid value: {v}: must be between 1 and 2147483647, inclusive"
                ),
            );
        }
        assert_eq!(
            create(
                &api,
                "pods",
                pod(
                    "long",
                    json!({"activeDeadlineSeconds": i32::MAX, "terminationGracePeriodSeconds": max})
                )
            )
            .await,
            Ok(())
        );
        let probe =
            |p: Value| json!({"containers": [{"name": "c", "image": "x", "livenessProbe": p}]});
        for field in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            let mut p = json!({"tcpSocket": {"port": 80}});
            p[field] = json!(-1);
            refused(
                create(&api, "pods", pod("probe", probe(p))).await,
                &format!(
                    "spec.containers[0].livenessProbe.{field}: Invalid value: -1: must be greater than or equal to 0"
                ),
            );
        }
        refused(
            create(
                &api,
                "pods",
                pod(
                    "probe",
                    probe(json!({"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 0})),
                ),
            )
            .await,
            "spec.containers[0].livenessProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0",
        );
        assert_eq!(
            create(&api, "pods", pod("probe-max", probe(json!({"tcpSocket": {"port": 80}, "periodSeconds": i32::MAX, "terminationGracePeriodSeconds": max})))).await,
            Ok(())
        );
        refused(
            create(&api, "pods", pod("tol", json!({"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": max}]}))).await,
            "spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        );
        assert_eq!(
            create(&api, "pods", pod("tol", json!({"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": i64::MIN}]}))).await,
            Ok(())
        );

        // Deployments and ReplicaSets.
        for (spec, cause) in [
            (
                json!({"minReadySeconds": -1}),
                "spec.minReadySeconds: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                json!({"revisionHistoryLimit": i32::MIN}),
                "spec.revisionHistoryLimit: Invalid value: -2147483648: must be greater than or equal to 0",
            ),
            (
                json!({"minReadySeconds": 30, "progressDeadlineSeconds": 30}),
                "spec.progressDeadlineSeconds: Invalid value: 30: must be greater than minReadySeconds",
            ),
            (
                json!({"strategy": {"rollingUpdate": {"maxUnavailable": "101%"}}}),
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"101%\": must not be greater than 100%",
            ),
            (
                json!({"strategy": {"rollingUpdate": {"maxSurge": "99999999999999999999999%x"}}}),
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"99999999999999999999999%x\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ),
            (
                json!({"strategy": {"rollingUpdate": {"maxSurge": -1}}}),
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                json!({"strategy": {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": 0}}}),
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
            ),
        ] {
            refused(
                create(&api, "deployments", deployment("d", spec)).await,
                cause,
            );
        }
        let big = json!({"replicas": i32::MAX, "minReadySeconds": i32::MAX - 1,
            "progressDeadlineSeconds": i32::MAX, "revisionHistoryLimit": i32::MAX,
            "strategy": {"rollingUpdate": {"maxSurge": "99999999999999999999999%", "maxUnavailable": "100%"}}});
        assert_eq!(
            create(&api, "deployments", deployment("big", big)).await,
            Ok(())
        );
        let mut rs = deployment("rs", json!({"minReadySeconds": -1}));
        rs["spec"]["replicas"] = json!(1);
        refused(
            create(&api, "replicasets", rs).await,
            "spec.minReadySeconds: Invalid value: -1: must be greater than or equal to 0",
        );
    }
}
