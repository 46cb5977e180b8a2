//! Requests that are answered rather than stored: the TokenRequest API
//! (`serviceaccounts/NAME/token`), access reviews (`kubectl auth can-i`) and
//! SelfSubjectReview (`kubectl auth whoami`).

use serde_json::{Value, json};
use skiff_api::validation::FieldError;

use super::access;
use super::{Server, User};
use crate::api::resources::{self, ResourceDef};
use crate::api::{ApiError, object};
use crate::auth::tokens::{Claims, KubernetesClaims, Reference, now};
use crate::auth::{Attributes, UserInfo};

macro_rules! review {
    ($group:literal, $plural:literal, $singular:literal, $kind:literal, ns=$ns:literal) => {
        ResourceDef {
            group: $group,
            version: "v1",
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            generation: false,
        }
    };
}

/// The create-only review kinds, in discovery order.
#[rustfmt::skip]
pub(super) static REVIEWS: &[ResourceDef] = &[
    review!("authentication.k8s.io", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", ns=false),
    review!("authorization.k8s.io", "localsubjectaccessreviews", "localsubjectaccessreview", "LocalSubjectAccessReview", ns=true),
    review!("authorization.k8s.io", "selfsubjectaccessreviews", "selfsubjectaccessreview", "SelfSubjectAccessReview", ns=false),
    review!("authorization.k8s.io", "selfsubjectrulesreviews", "selfsubjectrulesreview", "SelfSubjectRulesReview", ns=false),
    review!("authorization.k8s.io", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview", ns=false),
];

static TOKEN_REQUEST: ResourceDef = review!(
    "authentication.k8s.io",
    "tokenrequests",
    "tokenrequest",
    "TokenRequest",
    ns = true
);

/// The review a path names: `(kind, namespace)`.
pub(super) fn find(segs: &[&str]) -> Option<(&'static ResourceDef, Option<String>)> {
    let (group, plural, ns) = match segs {
        ["apis", g, "v1", plural] => (*g, *plural, None),
        ["apis", g, "v1", "namespaces", ns, plural] => (*g, *plural, Some(ns.to_string())),
        _ => return None,
    };
    let res = REVIEWS
        .iter()
        .find(|r| r.group == group && r.plural == plural)?;
    (res.namespaced == ns.is_some()).then_some((res, ns))
}

fn created(body: Value) -> http::Response<axum::body::Body> {
    super::handlers::json_response(http::StatusCode::CREATED, &body)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Answers a review of kind `res` posted by `user`.
pub(super) fn review(
    server: &Server,
    user: &User,
    res: &'static ResourceDef,
    ns: Option<&str>,
    mut body: Value,
) -> Result<http::Response<axum::body::Body>, ApiError> {
    let me = user.info();
    body["apiVersion"] = json!(res.api_version());
    body["kind"] = json!(res.kind);
    body["metadata"] = json!({"creationTimestamp": null});
    let status = match res.kind {
        "SelfSubjectReview" => json!({"userInfo": user_info_json(&me)}),
        "SelfSubjectRulesReview" => {
            let ns = s(&body["spec"], "namespace").to_string();
            if ns.is_empty() {
                return Err(ApiError::invalid(
                    res,
                    "",
                    &[FieldError::required("spec.namespace", "")],
                ));
            }
            let rules = server.auth.policy().rules_for(&me, &ns);
            let (urls, resources): (Vec<_>, Vec<_>) =
                rules.iter().partition(|r| !r.non_resource_urls.is_empty());
            json!({
                "resourceRules": resources.iter().map(|r| {
                    let mut v = r.to_json();
                    v.as_object_mut().expect("object").remove("nonResourceURLs");
                    v
                }).collect::<Vec<_>>(),
                "nonResourceRules": urls.iter().map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls})).collect::<Vec<_>>(),
                "incomplete": false,
            })
        }
        _ => {
            let spec = &body["spec"];
            let subject = match res.kind {
                "SelfSubjectAccessReview" => me.into_owned(),
                _ => {
                    let groups: Vec<String> = spec["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|g| g.as_str().map(String::from))
                        .collect();
                    if s(spec, "user").is_empty() && groups.is_empty() {
                        return Err(ApiError::invalid(
                            res,
                            "",
                            &[FieldError::invalid(
                                "spec.user",
                                "\"\"",
                                "at least one of user or group must be specified",
                            )],
                        ));
                    }
                    UserInfo {
                        name: s(spec, "user").to_string(),
                        uid: s(spec, "uid").to_string(),
                        groups,
                    }
                }
            };
            let ra = &spec["resourceAttributes"];
            let nra = &spec["nonResourceAttributes"];
            if ra.is_object() == nra.is_object() {
                return Err(ApiError::invalid(
                    res,
                    "",
                    &[FieldError::invalid(
                        "spec.resourceAttributes",
                        "",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
            let mut ra_ns = s(ra, "namespace");
            if let Some(ns) = ns {
                if !ra_ns.is_empty() && ra_ns != ns {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
                ra_ns = ns;
            }
            let attrs = if ra.is_object() {
                Attributes::resource(
                    s(ra, "verb"),
                    s(ra, "group"),
                    s(ra, "resource"),
                    s(ra, "subresource"),
                    ra_ns,
                    s(ra, "name"),
                )
            } else {
                Attributes::non_resource(s(nra, "verb"), s(nra, "path"))
            };
            let decision = if subject.is_master() {
                crate::auth::rbac::Decision {
                    allowed: true,
                    reason: String::new(),
                }
            } else {
                server.auth.policy().authorize(&subject, &attrs)
            };
            let mut status = json!({"allowed": decision.allowed});
            if !decision.reason.is_empty() {
                status["reason"] = json!(decision.reason);
            }
            status
        }
    };
    body["status"] = status;
    Ok(created(body))
}

fn user_info_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    v
}

/// The TokenRequest API: a signed token for the service account `ns/name`.
pub(super) async fn token_request(
    server: &Server,
    ns: &str,
    name: &str,
    body: Value,
) -> Result<http::Response<axum::body::Body>, ApiError> {
    let accounts = resources::core("serviceaccounts");
    let sa = server.api.get(accounts, Some(ns), name)?;
    let spec = &body["spec"];
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => server.tokens.api_audiences().to_vec(),
    };
    let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    let mut errors = Vec::new();
    if expiration < 600 {
        errors.push(FieldError::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration less than 10 minutes",
        ));
    } else if expiration > 1 << 32 {
        errors.push(FieldError::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let bound = &spec["boundObjectRef"];
    let mut pod = None;
    let mut secret = None;
    if bound.is_object() {
        let kind = s(bound, "kind");
        let target = match kind {
            "Pod" => Some(("pods", &mut pod)),
            "Secret" => Some(("secrets", &mut secret)),
            other => {
                errors.push(FieldError::not_supported(
                    "spec.boundObjectRef.kind",
                    format!("{other:?}"),
                    &["Pod", "Secret"],
                ));
                None
            }
        };
        if !matches!(s(bound, "apiVersion"), "v1" | "") {
            errors.push(FieldError::not_supported(
                "spec.boundObjectRef.apiVersion",
                format!("{:?}", s(bound, "apiVersion")),
                &["v1"],
            ));
        }
        if s(bound, "name").is_empty() {
            errors.push(FieldError::required("spec.boundObjectRef.name", ""));
        }
        if errors.is_empty()
            && let Some((plural, slot)) = target
        {
            let res = resources::core(plural);
            let obj = server.api.get(res, Some(ns), s(bound, "name"))?;
            let uid = object::uid(&obj);
            if !s(bound, "uid").is_empty() && s(bound, "uid") != uid {
                return Err(ApiError::conflict_because(
                    res,
                    s(bound, "name"),
                    &format!(
                        "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                        s(bound, "uid")
                    ),
                ));
            }
            *slot = Some(Reference {
                name: s(bound, "name").to_string(),
                uid: uid.to_string(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(&TOKEN_REQUEST, name, &errors));
    }
    let issued = now();
    let claims = Claims {
        aud: audiences.clone(),
        exp: issued + expiration,
        iat: issued,
        nbf: issued,
        iss: server.tokens.issuer().to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        sub: crate::auth::service_account_username(ns, name),
        kubernetes: KubernetesClaims {
            namespace: ns.to_string(),
            serviceaccount: Reference {
                name: name.to_string(),
                uid: object::uid(&sa).to_string(),
            },
            pod,
            secret,
        },
    };
    let token = server.tokens.sign(&claims);
    // The token is usable as soon as the answer arrives: the authenticator knows the account.
    if let Ok(rv) = object::meta_str(&sa, "resourceVersion").parse() {
        server.auth.caught_up(accounts, rv).await;
    }
    let expires = jiff::Timestamp::from_second(claims.exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut spec =
        json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null});
    if bound.is_object() {
        spec["boundObjectRef"] = bound.clone();
    }
    tracing::info!(account = %claims.sub, expires = %expires, "issued a service-account token");
    Ok(created(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires},
    })))
}

/// Whether `user` may post the review `res` (everyone authenticated may review themselves,
/// through `system:basic-user`).
pub(super) fn authorize(
    server: &Server,
    user: &User,
    res: &ResourceDef,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let attrs = Attributes::resource("create", res.group, res.plural, "", ns.unwrap_or(""), "");
    match user {
        User::Admin => Ok(()),
        User::Node(_) => Err(access::forbidden(&user.info(), &attrs, "")),
        User::Subject(info) => access::check(server, info, &attrs),
    }
}
