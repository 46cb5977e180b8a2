//! API errors are Kubernetes `Status` objects; this is the one place they are built.

use serde_json::{Value, json};
use skiff_api::validation::FieldError;

use super::resources::ResourceDef;
use crate::store;

/// An API failure, carrying exactly what the `Status` body reports.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `metav1.StatusReason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details` of the Status, when there is something to say.
    pub details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(res: &ResourceDef, name: &str, message: impl Into<String>) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: {}",
                res.qualified(),
                message.into()
            ),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    /// 404 for a path that names no resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 404 for a missing object.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    /// 409 for a create that found the object.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    /// 409 for a stale resourceVersion.
    pub fn conflict(res: &ResourceDef, name: &str) -> Self {
        Self::conflict_because(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 with a specific explanation.
    pub fn conflict_because(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.qualified()
            ),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    /// 422 Invalid with one cause per field.
    pub fn invalid(res: &ResourceDef, name: &str, errors: &[FieldError]) -> Self {
        let kind = if res.group.is_empty() {
            res.kind.to_string()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        let summary = match errors {
            [one] => one.message.clone(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        // A cause's message leaves out its field, which the cause names (kubectl joins them).
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let body = e
                    .message
                    .strip_prefix(&format!("{}: ", e.field))
                    .unwrap_or(&e.message);
                json!({"reason": e.reason, "message": body, "field": e.field})
            })
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {summary}"),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.kind, "causes": causes}))
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 415.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            ),
        )
    }

    /// 410 for a watch or continue token older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500 for failures that are the server's, not the caller's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 504 for a read at a resourceVersion the server has not reached, as kube-apiserver's
    /// watch cache answers it after waiting for the version to arrive.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let mut e = Self::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {requested}, current: {current}"),
        );
        e.details = Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }));
        e
    }

    /// 503 while shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// Maps a store failure for an object of `res` named `name`.
    pub fn from_store(res: &ResourceDef, name: &str, err: store::Error) -> Self {
        match err {
            store::Error::AlreadyExists(_) => Self::already_exists(res, name),
            store::Error::NotFound(_) => Self::not_found(res, name),
            store::Error::Conflict { .. } => Self::conflict(res, name),
            store::Error::Compacted {
                requested,
                compacted,
            } => Self::expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            store::Error::Closed => Self::unavailable("the server is shutting down"),
            store::Error::Failed => {
                Self::unavailable("the store stopped after a failed write; the server is stopping")
            }
            e @ store::Error::Backend(_) => {
                tracing::error!(error = ?e, "store failure");
                Self::internal(e.to_string())
            }
        }
    }

    /// The `metav1.Status` body as a JSON value (for callers that embed or re-encode it; its
    /// keys have no order: use [`status_json`](Self::status_json) to answer a client).
    pub fn status(&self) -> Value {
        serde_json::from_slice(&self.status_json()).expect("a Status is valid JSON")
    }

    /// The `metav1.Status` body, encoded with kube-apiserver's field order (kind, apiVersion,
    /// metadata, status, message, reason, details, code; in details name, group, kind, causes;
    /// in a cause reason, message, field), whatever order `serde_json` keeps maps in: clients
    /// compare error text.
    pub fn status_json(&self) -> Vec<u8> {
        serde_json::to_vec(&StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_ref().map(|d| Ordered(d, DETAILS_ORDER)),
            code: self.code,
        })
        .expect("a Status serializes")
    }
}

/// `metav1.Status` in the order Go's encoder writes its fields.
#[derive(serde::Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Ordered<'a>>,
    code: u16,
}

#[derive(serde::Serialize)]
struct Empty {}

/// `metav1.StatusDetails` and `metav1.StatusCause` fields, in their Go order.
const DETAILS_ORDER: &[&str] = &[
    "name",
    "group",
    "kind",
    "uid",
    "causes",
    "retryAfterSeconds",
];
const CAUSE_ORDER: &[&str] = &["reason", "message", "field"];

/// A JSON object written with the keys in `.1` first, in that order (left out when empty
/// strings), then any others.
struct Ordered<'a>(&'a Value, &'static [&'static str]);

impl serde::Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap as _, SerializeSeq as _};
        let Some(map) = self.0.as_object() else {
            return self.0.serialize(serializer);
        };
        let mut out = serializer.serialize_map(Some(map.len()))?;
        // Go leaves out empty strings of these fields (`omitempty`): no `"group": ""`.
        let known = self
            .1
            .iter()
            .filter_map(|k| map.get_key_value(*k))
            .filter(|(_, v)| v.as_str() != Some(""));
        let rest = map.iter().filter(|(k, _)| !self.1.contains(&k.as_str()));
        for (k, v) in known.chain(rest) {
            match (k.as_str(), v) {
                ("causes", Value::Array(causes)) => {
                    out.serialize_entry(k, &Causes(causes))?;
                }
                _ => out.serialize_entry(k, v)?,
            }
        }
        return out.end();

        struct Causes<'a>(&'a [Value]);
        impl serde::Serialize for Causes<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                serializer: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for cause in self.0 {
                    seq.serialize_element(&Ordered(cause, CAUSE_ORDER))?;
                }
                seq.end()
            }
        }
    }
}

/// Result alias for API operations.
pub type Result<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;

    /// The top-level keys of a JSON object, in the order they appear in `text`.
    fn keys_in_order(text: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        let ordered: OrderedKeys = serde::Deserialize::deserialize(&mut de).expect("a JSON object");
        keys.extend(ordered.0);
        keys
    }

    /// Deserializes an object's keys in the order they come.
    struct OrderedKeys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for OrderedKeys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = OrderedKeys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<OrderedKeys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(OrderedKeys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[test]
    fn status_bodies_keep_kube_apiservers_field_order() {
        let pods = resources::core("pods");
        let text = String::from_utf8(ApiError::not_found(pods, "web").status_json()).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"web\" not found","reason":"NotFound","details":{"name":"web","kind":"pods"},"code":404}"#
        );
        assert_eq!(
            keys_in_order(&text),
            [
                "kind",
                "apiVersion",
                "metadata",
                "status",
                "message",
                "reason",
                "details",
                "code"
            ]
        );

        let invalid = ApiError::invalid(
            pods,
            "web",
            &[FieldError::invalid(
                "spec.activeDeadlineSeconds",
                -1,
                "must be between 1 and 2147483647, inclusive",
            )],
        );
        let text = String::from_utf8(invalid.status_json()).unwrap();
        assert!(
            text.contains(r#""details":{"name":"web","kind":"Pod","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: -1: must be between 1 and 2147483647, inclusive","field":"spec.activeDeadlineSeconds"}]},"code":422}"#),
            "{text}"
        );

        // Without details (or a reason) the keys are left out, not null.
        let bare = ApiError::new(500, "", "boom");
        assert_eq!(
            keys_in_order(&String::from_utf8(bare.status_json()).unwrap()),
            [
                "kind",
                "apiVersion",
                "metadata",
                "status",
                "message",
                "code"
            ]
        );
    }
}
