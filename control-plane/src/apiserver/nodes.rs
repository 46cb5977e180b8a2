//! Node identity: agents join with the node join token and their own ed25519 key, and get a
//! credential bound to their node name and that key.
//!
//! The credential is `skiff-node.<name>.<mac>`, where the MAC covers the name and the node's
//! public key under the server's node secret: the server keeps no table of issued tokens, only
//! which key each node name belongs to (`DIR/pki/nodes/<name>.pub`). A name stays bound to the
//! first key that joined with it; another key asking for it is refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// What a joining agent sends (`POST /skiff/join`, bearer: the node join token).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The node name it will register.
    pub node_name: String,
    /// Its ed25519 public key, base64.
    pub public_key: String,
    /// The certificate (PEM) its log endpoint serves; the server pins it when it connects.
    #[serde(default)]
    pub serving_cert: String,
    /// Ed25519 signature (base64) by the node key over [`JoinRequest::signed_text`]: only the
    /// holder of the key gets the key's credential.
    pub signature: String,
}

impl JoinRequest {
    /// What the node signs.
    pub fn signed_text(node_name: &str, public_key: &str, serving_cert: &str) -> String {
        format!("skiff-join-v1\n{node_name}\n{public_key}\n{serving_cert}")
    }
}

/// The answer: the node's credential.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// Bearer token for the node's requests.
    pub token: String,
}

/// The nodes that joined, and how to check their credentials.
pub struct NodeRegistry {
    dir: PathBuf,
    secret: String,
    keys: Mutex<HashMap<String, String>>,
}

impl NodeRegistry {
    /// Loads the keys of nodes that joined before from `dir`.
    pub fn load(dir: PathBuf, secret: String) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut keys = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if let (Some(name), Some("pub")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) {
                keys.insert(
                    name.to_string(),
                    std::fs::read_to_string(&path)?.trim().to_string(),
                );
            }
        }
        Ok(Self {
            dir,
            secret,
            keys: Mutex::new(keys),
        })
    }

    /// Whether `token` is the node join token (`skiff1:<ca-hash>:<secret>`).
    pub fn is_join_token(&self, token: &str) -> bool {
        token
            .rsplit(':')
            .next()
            .is_some_and(|s| super::constant_time_eq(s.as_bytes(), self.secret.as_bytes()))
    }

    /// Binds `node_name` to the key on first join and issues its credential.
    pub fn join(&self, request: &JoinRequest) -> Result<JoinResponse, String> {
        let name = &request.node_name;
        if name.is_empty()
            || name.len() > 253
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            || name.starts_with(['-', '.'])
            || name.ends_with(['-', '.'])
        {
            return Err(format!(
                "invalid node name {name:?}: it must be a lowercase RFC 1123 subdomain"
            ));
        }
        let raw: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(&request.public_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or("publicKey must be a base64 ed25519 public key (32 bytes)")?;
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map_err(|_| "publicKey is not a valid ed25519 public key")?;
        let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(&request.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or("signature must be a base64 ed25519 signature (64 bytes)")?;
        let text = JoinRequest::signed_text(name, &request.public_key, &request.serving_cert);
        verifying
            .verify_strict(
                text.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&signature),
            )
            .map_err(|_| "the join request is not signed by the node key it names")?;
        let key = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        match keys.get(name) {
            Some(existing) if *existing != key => {
                return Err(format!(
                    "node name {name:?} already belongs to another node key"
                ));
            }
            Some(_) => {}
            None => {
                std::fs::write(self.dir.join(format!("{name}.pub")), format!("{key}\n"))
                    .map_err(|e| format!("cannot record the node key: {e}"))?;
                keys.insert(name.clone(), key.clone());
            }
        }
        if !request.serving_cert.is_empty() {
            std::fs::write(self.dir.join(format!("{name}.crt")), &request.serving_cert)
                .map_err(|e| format!("cannot record the node's serving certificate: {e}"))?;
        }
        Ok(JoinResponse {
            token: format!("skiff-node.{name}.{}", self.mac(name, &key)),
        })
    }

    /// The node a credential belongs to.
    pub fn authenticate(&self, token: &str) -> Option<String> {
        let rest = token.strip_prefix("skiff-node.")?;
        let (name, mac) = rest.rsplit_once('.')?;
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let key = keys.get(name)?;
        super::constant_time_eq(mac.as_bytes(), self.mac(name, key).as_bytes())
            .then(|| name.to_string())
    }

    /// The certificate a node's log endpoint must present (DER), as it joined with it.
    pub fn serving_cert(&self, name: &str) -> Option<Vec<u8>> {
        let pem = std::fs::read_to_string(self.dir.join(format!("{name}.crt"))).ok()?;
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        base64::engine::general_purpose::STANDARD.decode(body).ok()
    }

    /// The token the server presents to a node's agent (derived from the node's credential,
    /// which the agent knows and can derive the same way).
    pub fn agent_token(&self, name: &str) -> Option<String> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let key = keys.get(name)?;
        Some(agent_token(&format!(
            "skiff-node.{name}.{}",
            self.mac(name, key)
        )))
    }

    fn mac(&self, name: &str, key: &str) -> String {
        let mut h = Sha256::new();
        for part in [self.secret.as_str(), name, key] {
            h.update(part.len().to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The token that opens a node's agent endpoints, derived from its credential.
pub fn agent_token(credential: &str) -> String {
    Sha256::digest(format!("skiff-agent-api\n{credential}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_bound_to_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = NodeRegistry::load(dir.path().into(), "s3cret".into()).unwrap();
        assert!(nodes.is_join_token("skiff1:abcd:s3cret"));
        assert!(!nodes.is_join_token("skiff1:abcd:wrong"));
        let signer = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let key =
            base64::engine::general_purpose::STANDARD.encode(signer.verifying_key().as_bytes());
        let sign = |name: &str, key: &str| {
            use ed25519_dalek::Signer as _;
            let text = JoinRequest::signed_text(name, key, "");
            base64::engine::general_purpose::STANDARD
                .encode(signer.sign(text.as_bytes()).to_bytes())
        };
        let join = |name: &str, key: &str| {
            nodes.join(&JoinRequest {
                node_name: name.into(),
                public_key: key.into(),
                serving_cert: String::new(),
                signature: sign(name, key),
            })
        };
        let token = join("edge-1", &key).unwrap().token;
        assert_eq!(nodes.authenticate(&token).as_deref(), Some("edge-1"));
        assert_eq!(
            join("edge-1", &key).unwrap().token,
            token,
            "rejoining with the same key"
        );
        // Another key asking for the name, properly signed by itself, is refused.
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        let other_key =
            base64::engine::general_purpose::STANDARD.encode(other.verifying_key().as_bytes());
        let other_signature = {
            use ed25519_dalek::Signer as _;
            let text = JoinRequest::signed_text("edge-1", &other_key, "");
            base64::engine::general_purpose::STANDARD.encode(other.sign(text.as_bytes()).to_bytes())
        };
        let err = nodes
            .join(&JoinRequest {
                node_name: "edge-1".into(),
                public_key: other_key,
                serving_cert: String::new(),
                signature: other_signature,
            })
            .unwrap_err();
        assert!(err.contains("another node key"), "{err}");
        // Knowing a node's public key is not enough: the request must be signed by it.
        let forged = nodes.join(&JoinRequest {
            node_name: "edge-1".into(),
            public_key: key.clone(),
            serving_cert: String::new(),
            signature: base64::engine::general_purpose::STANDARD.encode([0u8; 64]),
        });
        assert!(forged.unwrap_err().contains("not signed by the node key"));
        assert!(
            join("Edge_1", &key)
                .unwrap_err()
                .contains("invalid node name")
        );
        assert!(
            nodes
                .authenticate(&token.replace("edge-1", "edge-2"))
                .is_none()
        );
        // A restarted server still knows the node.
        let again = NodeRegistry::load(dir.path().into(), "s3cret".into()).unwrap();
        assert_eq!(again.authenticate(&token).as_deref(), Some("edge-1"));
    }
}
