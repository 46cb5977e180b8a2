//! LimitRange: defaults for container resources and the min/max/ratio bounds a namespace's
//! pods must keep, with the upstream LimitRanger's messages.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;
use skiff_api::quantity;
use skiff_api::validation::{FieldError, quoted};

use super::admission::{self, Ctx};
use super::resources;
use super::{Api, ApiError, ListOptions, Result};

type List = BTreeMap<String, Quantity>;

impl Api {
    /// LimitRanger admission of a new pod in `ns`: applies the namespace's Container defaults,
    /// checks its bounds (403 with upstream's message), and validates the result again
    /// (defaults may leave a request above a limit).
    pub(crate) fn admit_limit_ranges(
        &self,
        ctx: &Ctx<'_>,
        ns: &str,
        obj: &mut Value,
    ) -> Result<()> {
        let Some(def) = resources::find("", "v1", "limitranges") else {
            return Ok(());
        };
        let ranges: Vec<core::LimitRange> = self
            .list(def, Some(ns), &ListOptions::default())?
            .items
            .into_iter()
            .filter_map(|r| serde_json::from_value(r).ok())
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }
        let mut pod: core::Pod =
            serde_json::from_value(obj.clone()).map_err(|e| ApiError::internal(e.to_string()))?;
        apply_defaults(&mut pod, &ranges);
        let name = pod.metadata.name.clone().unwrap_or_default();
        check(&pod, &ranges).map_err(|msg| ApiError::forbidden(ctx.res, &name, msg))?;
        *obj = serde_json::to_value(&pod).map_err(|e| ApiError::internal(e.to_string()))?;
        admission::admit(ctx, obj)?;
        Ok(())
    }
}

/// Pod defaulting: a container's missing requests default to its limits (upstream does this
/// when decoding a Pod, not a pod template).
pub(crate) fn default_requests_from_limits(spec: &mut core::PodSpec) {
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in containers {
        let Some(res) = c.resources.as_mut() else {
            continue;
        };
        let Some(limits) = res.limits.as_ref().filter(|l| !l.is_empty()) else {
            continue;
        };
        let requests = res.requests.get_or_insert_with(Default::default);
        for (k, v) in limits {
            requests.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// LimitRange defaulting of `type: Container` items: `default` from `max`, `defaultRequest`
/// from `default`, then from `min`.
pub(crate) fn default_limit_range(lr: &mut core::LimitRange) {
    for item in lr.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
        if item.type_ != "Container" {
            continue;
        }
        let default = item.default.get_or_insert_with(Default::default);
        for (k, v) in item.max.iter().flatten() {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let request = item.default_request.get_or_insert_with(Default::default);
        for (k, v) in item
            .default
            .iter()
            .flatten()
            .chain(item.min.iter().flatten())
        {
            request.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Validates a LimitRange: known types, valid quantities, and min ≤ defaultRequest ≤ default ≤
/// max for each resource.
pub(crate) fn validate_limit_range(lr: &core::LimitRange, e: &mut Vec<FieldError>) {
    for (i, item) in lr.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
        let path = format!("spec.limits[{i}]");
        if !["Container", "Pod", "PersistentVolumeClaim"].contains(&item.type_.as_str()) {
            e.push(FieldError::not_supported(
                format!("{path}.type"),
                quoted(&item.type_),
                &["Container", "PersistentVolumeClaim", "Pod"],
            ));
        }
        let mut parsed: [BTreeMap<&str, i128>; 4] = Default::default();
        for (slot, (field, list)) in [
            ("min", &item.min),
            ("max", &item.max),
            ("default", &item.default),
            ("defaultRequest", &item.default_request),
        ]
        .into_iter()
        .enumerate()
        {
            for (k, q) in list.iter().flatten() {
                match quantity::parse_milli(&q.0) {
                    Ok(n) => {
                        parsed[slot].insert(k, n);
                    }
                    Err(msg) => e.push(FieldError::invalid(
                        format!("{path}.{field}[{k}]"),
                        format!("{:?}", q.0),
                        &msg,
                    )),
                }
            }
        }
        let [min, max, default, request] = &parsed;
        let show = |n: i128| quantity::format_milli(n, false);
        for (k, lo) in min {
            if let Some(hi) = max.get(k).filter(|hi| lo > hi) {
                e.push(FieldError::invalid(
                    format!("{path}.min[{k}]"),
                    show(*lo),
                    &format!(
                        "min value {} is greater than max value {}",
                        show(*lo),
                        show(*hi)
                    ),
                ));
            }
        }
        for (k, d) in request {
            if let Some(lo) = min.get(k).filter(|lo| d < lo) {
                e.push(FieldError::invalid(
                    format!("{path}.defaultRequest[{k}]"),
                    show(*d),
                    &format!(
                        "min value {} is greater than default request value {}",
                        show(*lo),
                        show(*d)
                    ),
                ));
            }
            if let Some(lim) = default.get(k).filter(|lim| d > lim) {
                e.push(FieldError::invalid(
                    format!("{path}.defaultRequest[{k}]"),
                    show(*d),
                    &format!(
                        "default request value {} is greater than default limit value {}",
                        show(*d),
                        show(*lim)
                    ),
                ));
            }
        }
        for (k, d) in default {
            if let Some(hi) = max.get(k).filter(|hi| d > hi) {
                e.push(FieldError::invalid(
                    format!("{path}.default[{k}]"),
                    show(*d),
                    &format!(
                        "default value {} is greater than max value {}",
                        show(*d),
                        show(*hi)
                    ),
                ));
            }
        }
    }
}

/// Applies the `type: Container` defaults of `ranges` to a pod's containers (`default` →
/// limits, `defaultRequest` → requests, only where unset) and records what was set in the
/// `kubernetes.io/limit-ranger` annotation, as upstream does.
pub(crate) fn apply_defaults(pod: &mut core::Pod, ranges: &[core::LimitRange]) {
    let (mut limits, mut requests) = (List::new(), List::new());
    for item in ranges
        .iter()
        .flat_map(|r| r.spec.iter().flat_map(|s| s.limits.iter()))
        .filter(|i| i.type_ == "Container")
    {
        for (k, v) in item.default.iter().flatten() {
            limits.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in item.default_request.iter().flatten() {
            requests.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if limits.is_empty() && requests.is_empty() {
        return;
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let mut notes = Vec::new();
    let containers = spec.containers.iter_mut().map(|c| ("container", c)).chain(
        spec.init_containers
            .iter_mut()
            .flatten()
            .map(|c| ("init container", c)),
    );
    for (what, c) in containers {
        let res = c.resources.get_or_insert_with(Default::default);
        let set = |have: &mut Option<List>, defaults: &List| {
            let have = have.get_or_insert_with(Default::default);
            let mut names = Vec::new();
            for (k, v) in defaults {
                if !have.contains_key(k) {
                    have.insert(k.clone(), v.clone());
                    names.push(k.clone());
                }
            }
            names
        };
        let set_requests = set(&mut res.requests, &requests);
        let set_limits = set(&mut res.limits, &limits);
        if !set_requests.is_empty() {
            notes.push(format!(
                "{} request for {what} {}",
                set_requests.join(", "),
                c.name
            ));
        }
        if !set_limits.is_empty() {
            notes.push(format!(
                "{} limit for {what} {}",
                set_limits.join(", "),
                c.name
            ));
        }
    }
    if !notes.is_empty() {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                "kubernetes.io/limit-ranger".into(),
                format!("LimitRanger plugin set: {}", notes.join("; ")),
            );
    }
}

/// Checks a pod against the min, max and maxLimitRequestRatio of `ranges` (per Container and
/// per Pod); the upstream LimitRanger's messages, several joined as `[a, b]`.
pub(crate) fn check(
    pod: &core::Pod,
    ranges: &[core::LimitRange],
) -> std::result::Result<(), String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let mut errors = Vec::new();
    for item in ranges
        .iter()
        .flat_map(|r| r.spec.iter().flat_map(|s| s.limits.iter()))
    {
        let kind = item.type_.as_str();
        let subjects: Vec<(List, List)> = match kind {
            "Container" => spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| {
                    let r = c.resources.clone().unwrap_or_default();
                    (r.requests.unwrap_or_default(), r.limits.unwrap_or_default())
                })
                .collect(),
            "Pod" => vec![pod_totals(spec)],
            _ => continue,
        };
        for (requests, limits) in &subjects {
            for (k, v) in item.min.iter().flatten() {
                errors.extend(min_constraint(kind, k, v, requests, limits));
            }
            for (k, v) in item.max.iter().flatten() {
                errors.extend(max_constraint(kind, k, v, requests, limits));
            }
            for (k, v) in item.max_limit_request_ratio.iter().flatten() {
                errors.extend(ratio_constraint(kind, k, v, requests, limits));
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// Sums of the containers' requests and limits, where the largest init container counts if
/// it is larger (as upstream's `PodRequests`/`PodLimits`), in canonical form.
fn pod_totals(spec: &core::PodSpec) -> (List, List) {
    let total = |get: fn(&core::ResourceRequirements) -> Option<&List>| {
        let mut sum: BTreeMap<String, (i128, bool)> = BTreeMap::new();
        for c in &spec.containers {
            for (k, q) in c.resources.as_ref().and_then(get).into_iter().flatten() {
                let e = sum
                    .entry(k.clone())
                    .or_insert((0, quantity::is_binary(&q.0)));
                e.0 += quantity::parse_milli(&q.0).unwrap_or(0);
            }
        }
        for c in spec.init_containers.iter().flatten() {
            for (k, q) in c.resources.as_ref().and_then(get).into_iter().flatten() {
                let n = quantity::parse_milli(&q.0).unwrap_or(0);
                let e = sum
                    .entry(k.clone())
                    .or_insert((0, quantity::is_binary(&q.0)));
                e.0 = e.0.max(n);
            }
        }
        sum.into_iter()
            .map(|(k, (n, b))| (k, Quantity(quantity::format_milli(n, b))))
            .collect::<List>()
    };
    (total(|r| r.requests.as_ref()), total(|r| r.limits.as_ref()))
}

fn milli(q: &Quantity) -> i128 {
    quantity::parse_milli(&q.0).unwrap_or(0)
}

/// A quantity as upstream's `Quantity.String()` shows it.
fn show(q: &Quantity) -> String {
    quantity::parse_milli(&q.0)
        .map(|n| quantity::format_milli(n, quantity::is_binary(&q.0)))
        .unwrap_or_else(|_| q.0.clone())
}

fn min_constraint(kind: &str, k: &str, min: &Quantity, req: &List, lim: &List) -> Option<String> {
    let (enforced, shown) = (milli(min), show(min));
    let Some(r) = req.get(k) else {
        return Some(format!(
            "minimum {k} usage per {kind} is {shown}.  No request is specified"
        ));
    };
    if milli(r) < enforced {
        return Some(format!(
            "minimum {k} usage per {kind} is {shown}, but request is {}",
            show(r)
        ));
    }
    match lim.get(k) {
        Some(l) if milli(l) < enforced => Some(format!(
            "minimum {k} usage per {kind} is {shown}, but limit is {}",
            show(l)
        )),
        _ => None,
    }
}

fn max_constraint(kind: &str, k: &str, max: &Quantity, req: &List, lim: &List) -> Option<String> {
    let (enforced, shown) = (milli(max), show(max));
    let Some(l) = lim.get(k) else {
        return Some(format!(
            "maximum {k} usage per {kind} is {shown}.  No limit is specified"
        ));
    };
    if milli(l) > enforced {
        return Some(format!(
            "maximum {k} usage per {kind} is {shown}, but limit is {}",
            show(l)
        ));
    }
    match req.get(k) {
        Some(r) if milli(r) > enforced => Some(format!(
            "maximum {k} usage per {kind} is {shown}, but request is {}",
            show(r)
        )),
        _ => None,
    }
}

fn ratio_constraint(
    kind: &str,
    k: &str,
    ratio: &Quantity,
    req: &List,
    lim: &List,
) -> Option<String> {
    let shown = show(ratio);
    let r = req.get(k).map(milli).filter(|n| *n != 0);
    let l = lim.get(k).map(milli).filter(|n| *n != 0);
    let Some(r) = r else {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {shown}, but no request is specified or request is 0"
        ));
    };
    let Some(l) = l else {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {shown}, but no limit is specified or limit is 0"
        ));
    };
    // Compare l/r > ratio exactly: l * 1000 > ratio_milli * r.
    if l * 1000 > milli(ratio) * r {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {shown}, but provided ratio is {:.6}",
            l as f64 / r as f64
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn range(items: serde_json::Value) -> core::LimitRange {
        let mut lr: core::LimitRange =
            serde_json::from_value(json!({"metadata": {"name": "lr"}, "spec": {"limits": items}}))
                .unwrap();
        default_limit_range(&mut lr);
        lr
    }

    fn pod(resources: serde_json::Value) -> core::Pod {
        let mut p: core::Pod = serde_json::from_value(json!({"metadata": {"name": "x"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}}))
        .unwrap();
        default_requests_from_limits(p.spec.as_mut().unwrap());
        p
    }

    #[test]
    fn defaults_fill_only_what_is_missing_and_are_annotated() {
        let lr = range(
            json!([{"type": "Container", "default": {"cpu": "500m", "memory": "64Mi"},
            "defaultRequest": {"cpu": "100m"}}]),
        );
        let mut p = pod(json!({"limits": {"memory": "128Mi"}}));
        apply_defaults(&mut p, &[lr]);
        let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
        let get = |l: &Option<List>, k: &str| l.as_ref().unwrap()[k].0.clone();
        assert_eq!(get(&r.limits, "cpu"), "500m");
        assert_eq!(get(&r.limits, "memory"), "128Mi");
        assert_eq!(get(&r.requests, "cpu"), "100m");
        assert_eq!(
            get(&r.requests, "memory"),
            "128Mi",
            "requests default to limits first"
        );
        assert_eq!(
            p.metadata.annotations.unwrap()["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu request for container c; cpu limit for container c"
        );
    }

    #[test]
    fn limit_range_defaults_follow_max_and_min() {
        let lr =
            range(json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "1Mi"}}]));
        let item = &lr.spec.unwrap().limits[0];
        assert_eq!(item.default.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(item.default_request.as_ref().unwrap()["memory"].0, "1Mi");
    }

    #[test]
    fn bounds_use_upstream_messages() {
        let lr = range(
            json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"},
            "maxLimitRequestRatio": {"cpu": "2"}}]),
        );
        let ranges = [lr];
        assert_eq!(
            check(&pod(json!({"limits": {"cpu": "2"}})), &ranges).unwrap_err(),
            "maximum cpu usage per Container is 1, but limit is 2"
        );
        assert_eq!(
            check(
                &pod(json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "1"}})),
                &ranges
            )
            .unwrap_err(),
            "[minimum cpu usage per Container is 100m, but request is 50m, cpu max limit to request ratio per Container is 2, but provided ratio is 20.000000]"
        );
        assert_eq!(
            check(&pod(json!({})), &ranges).unwrap_err(),
            "[minimum cpu usage per Container is 100m.  No request is specified, maximum cpu usage per Container is 1.  No limit is specified, cpu max limit to request ratio per Container is 2, but no request is specified or request is 0]"
        );
        assert!(
            check(
                &pod(json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "1000m"}})),
                &ranges
            )
            .is_ok()
        );
        let per_pod = [range(json!([{"type": "Pod", "max": {"memory": "1Gi"}}]))];
        assert_eq!(
            check(&pod(json!({"limits": {"memory": "2Gi"}})), &per_pod).unwrap_err(),
            "maximum memory usage per Pod is 1Gi, but limit is 2Gi"
        );
    }

    #[test]
    fn invalid_ranges_are_refused() {
        let mut e = Vec::new();
        validate_limit_range(
            &range(json!([{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}])),
            &mut e,
        );
        assert!(
            e.iter().any(|f| f
                .message
                .contains("min value 2 is greater than max value 1")),
            "{e:?}"
        );
    }
}
