//! Validation helpers with apimachinery's messages, and the field-error type every validator
//! returns so the API layer can answer 422 Invalid with one cause per field.

use std::fmt;

/// One validation failure at a field path (`spec.template.spec.containers[0].name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The reason, as in `metav1.CauseType` (`FieldValueRequired`, `FieldValueInvalid`, ...).
    pub reason: &'static str,
    /// The field path.
    pub field: String,
    /// The full message, e.g. `spec.replicas: Invalid value: -1: must be ...`.
    pub message: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        let message = if detail.is_empty() {
            format!("{field}: Required value")
        } else {
            format!("{field}: Required value: {detail}")
        };
        Self {
            reason: "FieldValueRequired",
            field,
            message,
        }
    }

    /// A field has a value that is not allowed.
    pub fn invalid(field: impl Into<String>, value: impl fmt::Display, detail: &str) -> Self {
        let field = field.into();
        let message = format!("{field}: Invalid value: {value}: {detail}");
        Self {
            reason: "FieldValueInvalid",
            field,
            message,
        }
    }

    /// A value listed twice where values must be unique.
    pub fn duplicate(field: impl Into<String>, value: impl fmt::Display) -> Self {
        let field = field.into();
        let message = format!("{field}: Duplicate value: {value}");
        Self {
            reason: "FieldValueDuplicate",
            field,
            message,
        }
    }

    /// A value outside a fixed set.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl fmt::Display,
        allowed: &[&str],
    ) -> Self {
        let field = field.into();
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        let message = format!(
            "{field}: Unsupported value: {value}: supported values: {}",
            allowed.join(", ")
        );
        Self {
            reason: "FieldValueNotSupported",
            field,
            message,
        }
    }

    /// A field that may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        let message = format!("{field}: Forbidden: {detail}");
        Self {
            reason: "FieldValueForbidden",
            field,
            message,
        }
    }
}

/// Quotes a string value as Go's `%q` would in apimachinery messages.
pub fn quoted(s: &str) -> String {
    format!("{s:?}")
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 label (namespaces, container names, port names' base): at most 63 characters.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_label_chars(s) {
        return Err(DNS1123_LABEL_MSG.into());
    }
    Ok(())
}

/// An RFC 1123 subdomain (most object names): at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if s.is_empty() || !s.split('.').all(is_label_chars) {
        return Err(DNS1123_SUBDOMAIN_MSG.into());
    }
    Ok(())
}

/// An RFC 1035 label (service names): starts with a letter.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_label_chars(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(DNS1035_LABEL_MSG.into());
    }
    Ok(())
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A qualified name (label and annotation keys): `[prefix/]name`.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        dns1123_subdomain(p).map_err(|m| format!("prefix part {m}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if !is_name_part(name) {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    Ok(())
}

/// A label value: empty, or like a qualified name's name part.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || is_name_part(s) {
        Ok(())
    } else if s.len() > 63 {
        Err("must be no more than 63 characters".into())
    } else {
        Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
    }
}

/// A port name (IANA_SVC_NAME): at most 15 characters, letters, digits and '-', one letter.
pub fn port_name(s: &str) -> Result<(), String> {
    if s.len() > 15 {
        return Err("must be no more than 15 characters".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || s.starts_with('-')
        || s.ends_with('-')
        || s.contains("--")
    {
        return Err(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
        );
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)".into());
    }
    Ok(())
}

/// A C identifier-ish environment variable name, as Kubernetes accepts them.
pub fn env_var_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.contains('=') || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err("a valid environment variable name must consist only of printable ASCII characters other than '='".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("web-1.example").is_ok());
        assert!(dns1123_subdomain("Web").is_err());
        assert!(dns1123_subdomain("-web").is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1035_label("1abc").is_err());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("/x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("a b").is_err());
        assert!(port_name("http").is_ok());
        assert!(port_name("80").is_err());
    }
}
