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

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Result alias for API operations.
pub type Result<T> = std::result::Result<T, ApiError>;
