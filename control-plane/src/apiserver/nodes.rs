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
        let key = base64::engine::general_purpose::STANDARD
            .decode(&request.public_key)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or("publicKey must be a base64 ed25519 public key (32 bytes)")?;
        let key = base64::engine::general_purpose::STANDARD.encode(key);
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

    fn mac(&self, name: &str, key: &str) -> String {
        let mut h = Sha256::new();
        for part in [self.secret.as_str(), name, key] {
            h.update(part.len().to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
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
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let join = |name: &str, key: &str| {
            nodes.join(&JoinRequest {
                node_name: name.into(),
                public_key: key.into(),
            })
        };
        let token = join("edge-1", &key).unwrap().token;
        assert_eq!(nodes.authenticate(&token).as_deref(), Some("edge-1"));
        assert_eq!(
            join("edge-1", &key).unwrap().token,
            token,
            "rejoining with the same key"
        );
        let other = base64::engine::general_purpose::STANDARD.encode([8u8; 32]);
        assert!(
            join("edge-1", &other)
                .unwrap_err()
                .contains("another node key")
        );
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
