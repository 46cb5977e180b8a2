//! `WasmPolicy` (`skiff.dev/v1`): what the Wasm workloads of one namespace may do, set by the
//! namespace's admin and visible to its users (`kubectl get wasmpolicies`).
//!
//! ```yaml
//! apiVersion: skiff.dev/v1
//! kind: WasmPolicy
//! metadata: {name: default, namespace: team-a}
//! spec:
//!   hostPaths: [/srv/sensors]          # hostPath volumes only at or below these ([]: none)
//!   egress:
//!     allowed: true                    # outgoing HTTP to hosts outside the cluster at all
//!     hosts: [api.example.com, "*.example.org"]   # and then only to these
//!   publishers:                        # modules must be signed by one of these keys
//!     - name: acme
//!       publicKey: <base64 ed25519 public key, as `skiff keygen` prints it>
//! ```
//!
//! Every field is optional; an absent field restricts nothing. A namespace may hold several
//! policies: a workload must satisfy each of them. The API server checks pods against them at
//! admission; agents keep the policies of the cluster on disk and check again before anything
//! runs (signatures and host paths) and on every outgoing request (egress), so a node holds
//! the line when the control plane is out of reach. Calls to the cluster's own Services are not
//! egress.

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The stored object, typed so the API server can report unknown fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPolicyObject {
    /// `skiff.dev/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `WasmPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Standard metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the namespace's workloads may do.
    #[serde(default)]
    pub spec: WasmPolicySpec,
}

/// The policy's rules, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPolicySpec {
    /// Allowed hostPath prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_paths: Option<Vec<String>>,
    /// Outgoing HTTP to hosts outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSpec>,
    /// Publishers a module must be signed by (one of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<Vec<PublisherSpec>>,
}

/// `spec.egress`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressSpec {
    /// Whether guests may call outside hosts at all (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// The only outside hosts allowed, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

/// `spec.publishers[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherSpec {
    /// A name for messages.
    #[serde(default)]
    pub name: String,
    /// Base64 ed25519 public key.
    #[serde(default)]
    pub public_key: String,
}

/// One parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmPolicy {
    /// The policy object's name, for messages.
    pub name: String,
    /// Allowed hostPath prefixes; `None` leaves host paths to the node.
    pub host_paths: Option<Vec<String>>,
    /// Whether guests may call hosts outside the cluster.
    pub egress_allowed: bool,
    /// When set, the only outside hosts guests may call (`*.example.org` matches subdomains).
    pub egress_hosts: Option<Vec<String>>,
    /// Publishers whose signature a module needs (one of them); empty: no signature required.
    pub publishers: Vec<Publisher>,
}

/// A publisher key a policy trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// A name for messages.
    pub name: String,
    /// The ed25519 key.
    pub key: VerifyingKey,
}

/// A problem with a policy's spec: the field path, the value as JSON, and what is wrong.
pub type FieldProblem = (String, String, String);

impl WasmPolicy {
    /// Parses a `WasmPolicy` object, naming every invalid field.
    pub fn parse(object: &Value) -> Result<Self, Vec<FieldProblem>> {
        let spec = &object["spec"];
        let mut problems = Vec::new();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !spec.is_null() && !spec.is_object() {
            problems.push(("spec".into(), spec.to_string(), "must be an object".into()));
        }
        let host_paths = strings(&spec["hostPaths"], "spec.hostPaths", &mut problems);
        for (i, p) in host_paths.iter().flatten().enumerate() {
            if !p.starts_with('/') {
                problems.push((
                    format!("spec.hostPaths[{i}]"),
                    format!("{p:?}"),
                    "must be an absolute path".into(),
                ));
            } else if p.split('/').any(|s| s == "..") {
                problems.push((
                    format!("spec.hostPaths[{i}]"),
                    format!("{p:?}"),
                    "must not contain '..'".into(),
                ));
            }
        }
        let egress = &spec["egress"];
        let egress_allowed = match &egress["allowed"] {
            Value::Null => true,
            Value::Bool(b) => *b,
            other => {
                problems.push((
                    "spec.egress.allowed".into(),
                    other.to_string(),
                    "must be true or false".into(),
                ));
                true
            }
        };
        let egress_hosts = strings(&egress["hosts"], "spec.egress.hosts", &mut problems);
        for (i, h) in egress_hosts.iter().flatten().enumerate() {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if bare.is_empty()
                || bare.contains('*')
                || !bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                problems.push((
                    format!("spec.egress.hosts[{i}]"),
                    format!("{h:?}"),
                    "must be a host name, or *. and a domain".into(),
                ));
            }
        }
        let mut publishers = Vec::new();
        match &spec["publishers"] {
            Value::Null => {}
            Value::Array(items) => {
                for (i, p) in items.iter().enumerate() {
                    let path = format!("spec.publishers[{i}]");
                    let name = p["name"].as_str().unwrap_or_default().to_string();
                    let key = p["publicKey"].as_str().unwrap_or_default();
                    match parse_key(key) {
                        Ok(key) => publishers.push(Publisher {
                            name: if name.is_empty() {
                                format!("#{i}")
                            } else {
                                name
                            },
                            key,
                        }),
                        Err(why) => {
                            problems.push((format!("{path}.publicKey"), format!("{key:?}"), why))
                        }
                    }
                }
            }
            other => problems.push((
                "spec.publishers".into(),
                other.to_string(),
                "must be a list".into(),
            )),
        }
        if problems.is_empty() {
            Ok(Self {
                name,
                host_paths,
                egress_allowed,
                egress_hosts,
                publishers,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether a `hostPath` volume at `path` is allowed.
    pub fn check_host_path(&self, path: &str) -> Result<(), String> {
        let Some(allowed) = &self.host_paths else {
            return Ok(());
        };
        if allowed.iter().any(|prefix| under(path, prefix)) {
            return Ok(());
        }
        Err(if allowed.is_empty() {
            format!("hostPath {path} is not allowed: the policy allows no host paths")
        } else {
            format!(
                "hostPath {path} is not allowed: the policy allows only {}",
                allowed.join(", ")
            )
        })
    }

    /// Whether a guest may call `host`, which is outside the cluster.
    pub fn check_egress(&self, host: &str) -> Result<(), String> {
        if !self.egress_allowed {
            return Err(format!(
                "outgoing request to {host} denied: the policy allows no egress"
            ));
        }
        let Some(hosts) = &self.egress_hosts else {
            return Ok(());
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let matches = |pattern: &String| match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(&domain.to_ascii_lowercase())
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => pattern.eq_ignore_ascii_case(&host),
        };
        if hosts.iter().any(matches) {
            Ok(())
        } else {
            Err(format!(
                "outgoing request to {host} denied: the policy allows only {}",
                hosts.join(", ")
            ))
        }
    }

    /// Whether a module with `digest` (sha256) and `signature` satisfies the policy's publishers.
    pub fn check_signature(
        &self,
        digest: &[u8; 32],
        signature: Option<&[u8]>,
    ) -> Result<(), String> {
        if self.publishers.is_empty() {
            return Ok(());
        }
        let names = self
            .publishers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(signature) = signature else {
            return Err(format!(
                "the module is not signed; the policy requires a signature by {names}"
            ));
        };
        let keys: Vec<VerifyingKey> = self.publishers.iter().map(|p| p.key).collect();
        if crate::signature::verify_digest(&keys, digest, signature) {
            Ok(())
        } else {
            Err(format!(
                "the module's signature does not verify with the key of {names}"
            ))
        }
    }
}

/// The first policy that refuses, with its reason: `(policy name, why)`.
pub fn first_refusal(
    policies: &[WasmPolicy],
    check: impl Fn(&WasmPolicy) -> Result<(), String>,
) -> Option<(String, String)> {
    policies
        .iter()
        .find_map(|p| check(p).err().map(|why| (p.name.clone(), why)))
}

/// Parses a base64 ed25519 public key.
pub fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| {
            "must be a base64 ed25519 public key (as `skiff keygen` prints)".to_string()
        })?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "must be 32 bytes: an ed25519 public key".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "is not a valid ed25519 public key".to_string())
}

/// Whether `path` is `prefix` or below it, by whole components.
fn under(path: &str, prefix: &str) -> bool {
    if path.split('/').any(|s| s == "..") {
        return false;
    }
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn strings(v: &Value, path: &str, problems: &mut Vec<FieldProblem>) -> Option<Vec<String>> {
    match v {
        Value::Null => None,
        Value::Array(items) => Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s.as_str() {
                    Some(s) => Some(s.to_string()),
                    None => {
                        problems.push((
                            format!("{path}[{i}]"),
                            s.to_string(),
                            "must be a string".into(),
                        ));
                        None
                    }
                })
                .collect(),
        ),
        other => {
            problems.push((
                path.to_string(),
                other.to_string(),
                "must be a list of strings".into(),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use serde_json::json;
    use sha2::Digest as _;

    fn key_b64(k: &SigningKey) -> String {
        base64::engine::general_purpose::STANDARD.encode(k.verifying_key().as_bytes())
    }

    #[test]
    fn an_empty_policy_restricts_nothing() {
        let p = WasmPolicy::parse(&json!({"metadata": {"name": "p"}})).unwrap();
        assert!(p.check_host_path("/etc").is_ok());
        assert!(p.check_egress("example.com").is_ok());
        assert!(p.check_signature(&[0; 32], None).is_ok());
    }

    #[test]
    fn host_paths_by_whole_components() {
        let p = WasmPolicy::parse(&json!({"metadata": {"name": "p"},
            "spec": {"hostPaths": ["/srv/sensors/"]}}))
        .unwrap();
        assert!(p.check_host_path("/srv/sensors").is_ok());
        assert!(p.check_host_path("/srv/sensors/a").is_ok());
        assert!(p.check_host_path("/srv/sensors2").is_err());
        assert!(p.check_host_path("/srv/sensors/../../etc").is_err());
        let none = WasmPolicy::parse(&json!({"spec": {"hostPaths": []}})).unwrap();
        assert_eq!(
            none.check_host_path("/srv").unwrap_err(),
            "hostPath /srv is not allowed: the policy allows no host paths"
        );
    }

    #[test]
    fn egress_by_host_and_domain() {
        let p = WasmPolicy::parse(&json!({"spec": {"egress":
            {"hosts": ["api.example.com", "*.example.org"]}}}))
        .unwrap();
        assert!(p.check_egress("api.example.com").is_ok());
        assert!(p.check_egress("API.example.com.").is_ok());
        assert!(p.check_egress("a.b.example.org").is_ok());
        assert!(p.check_egress("example.org").is_err());
        assert!(p.check_egress("badexample.org").is_err());
        assert_eq!(
            p.check_egress("evil.com").unwrap_err(),
            "outgoing request to evil.com denied: the policy allows only api.example.com, *.example.org"
        );
        let off = WasmPolicy::parse(&json!({"spec": {"egress": {"allowed": false}}})).unwrap();
        assert!(off.check_egress("api.example.com").is_err());
    }

    #[test]
    fn signatures_by_the_named_publishers() {
        let acme = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let p = WasmPolicy::parse(&json!({"spec": {"publishers":
            [{"name": "acme", "publicKey": key_b64(&acme)}]}}))
        .unwrap();
        let module = b"\0asm module";
        let digest: [u8; 32] = sha2::Sha256::digest(module).into();
        let good = crate::signature::sign_module(&acme, module);
        let foreign = crate::signature::sign_module(&other, module);
        assert!(p.check_signature(&digest, Some(&good)).is_ok());
        assert_eq!(
            p.check_signature(&digest, Some(&foreign)).unwrap_err(),
            "the module's signature does not verify with the key of acme"
        );
        assert_eq!(
            p.check_signature(&digest, None).unwrap_err(),
            "the module is not signed; the policy requires a signature by acme"
        );
        let tampered: [u8; 32] = sha2::Sha256::digest(b"\0asm tampered").into();
        assert!(p.check_signature(&tampered, Some(&good)).is_err());
    }

    #[test]
    fn invalid_fields_are_named() {
        let err = WasmPolicy::parse(&json!({"spec": {
            "hostPaths": ["relative"],
            "egress": {"allowed": "yes", "hosts": ["a*b"]},
            "publishers": [{"name": "x", "publicKey": "bm90IGEga2V5"}]}}))
        .unwrap_err();
        let paths: Vec<_> = err.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.hostPaths[0]",
                "spec.egress.allowed",
                "spec.egress.hosts[0]",
                "spec.publishers[0].publicKey"
            ]
        );
    }
}
