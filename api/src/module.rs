//! `Module` (`skiff.dev/v1`): a Wasm module in the control plane's module store, named
//! `<repository>.<tag>` and pointing at content-addressed bytes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A stored module, as `kubectl get modules` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    /// `skiff.dev/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Module`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Standard metadata; the name is `<repository>.<tag>`.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the name resolves to.
    #[serde(default)]
    pub spec: ModuleSpec,
}

/// A module's reference and content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSpec {
    /// The repository part of `repository:tag`.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Base64 ed25519 public key of the publisher that signed it, if signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// Splits `repository:tag` (tag `latest` when absent), checking both parts.
pub fn parse_reference(reference: &str) -> Result<(String, String), String> {
    let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    let valid_repo = !repo.is_empty()
        && repo.len() <= 128
        && repo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !repo.starts_with('-')
        && !repo.ends_with('-');
    if !valid_repo {
        return Err(format!(
            "invalid module name {repo:?}: use lowercase letters, digits and '-'"
        ));
    }
    let valid_tag = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric())
        && tag.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_tag {
        return Err(format!(
            "invalid module tag {tag:?}: use lowercase letters, digits, '.' and '-'"
        ));
    }
    Ok((repo.to_string(), tag.to_string()))
}

/// The object name of `repository:tag`.
pub fn object_name(repository: &str, tag: &str) -> String {
    format!("{repository}.{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("hello:1.0").unwrap(),
            ("hello".into(), "1.0".into())
        );
        assert_eq!(
            parse_reference("hello").unwrap(),
            ("hello".into(), "latest".into())
        );
        assert!(
            parse_reference("Hello:1")
                .unwrap_err()
                .contains("invalid module name")
        );
        assert!(
            parse_reference("hello:")
                .unwrap_err()
                .contains("invalid module tag")
        );
        assert_eq!(object_name("hello", "1.0"), "hello.1.0");
    }
}
