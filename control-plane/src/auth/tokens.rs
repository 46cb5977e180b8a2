//! Service-account tokens: JWTs signed with EdDSA (ed25519) by the server's key, with the
//! claims kube-apiserver puts in them (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and
//! `kubernetes.io`), issued by the TokenRequest API and checked on every request that bears
//! one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Kube-apiserver's usual issuer, which is also the API's audience.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Clock skew tolerated on `nbf` and `exp`, as upstream's validator allows.
const LEEWAY_SECONDS: i64 = 60;

/// Why a token was refused (the client only ever sees 401 Unauthorized).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// Not `EdDSA`, or not signed by this server's key.
    #[error("invalid signature")]
    Signature,
    /// Another issuer's token.
    #[error("token issued by {0:?}")]
    Issuer(String),
    /// Past `exp`.
    #[error("token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// No audience the server accepts.
    #[error("token audiences {0:?} do not include the API's")]
    Audience(Vec<String>),
}

/// A reference from a token to the service account it was issued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Name.
    pub name: String,
    /// Uid, checked against the live object.
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: Reference,
    /// The pod the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Reference>,
    /// The secret the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Reference>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences (a single string is accepted too).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    #[serde(default)]
    pub jti: String,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// What the token belongs to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(vec![s]),
        v => serde_json::from_value(v).map_err(serde::de::Error::custom),
    }
}

/// Signs and checks tokens with one ed25519 key.
pub struct Issuer {
    key: SigningKey,
    verifying: VerifyingKey,
    key_id: String,
    issuer: String,
    audiences: Vec<String>,
}

impl Issuer {
    /// An issuer named `issuer` whose tokens are accepted by the API when they name one of
    /// `audiences` (by default the issuer itself).
    pub fn new(key: SigningKey, issuer: &str, audiences: Vec<String>) -> Self {
        let verifying = key.verifying_key();
        let key_id = B64.encode(Sha256::digest(verifying.as_bytes()));
        Self {
            key,
            verifying,
            key_id,
            issuer: issuer.to_string(),
            audiences,
        }
    }

    /// The audiences the API accepts, which tokens get when the request names none.
    pub fn api_audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The issuer name (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` (their `iss` is set to this issuer).
    pub fn sign(&self, claims: &Claims) -> String {
        let header = serde_json::json!({"alg": "EdDSA", "kid": self.key_id});
        let mut claims = claims.clone();
        claims.iss = self.issuer.clone();
        let payload = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).expect("serializable")),
            B64.encode(serde_json::to_vec(&claims).expect("serializable"))
        );
        let signature = self.key.sign(payload.as_bytes());
        format!("{payload}.{}", B64.encode(signature.to_bytes()))
    }

    /// Checks the signature, issuer, validity window (at `now`, seconds) and audience.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Error> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Malformed);
        };
        let header: Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Error::Malformed)?;
        if header["alg"] != "EdDSA" {
            return Err(Error::Signature);
        }
        let signature: [u8; 64] = B64
            .decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::Signature)?;
        let signed_len = h.len() + 1 + p.len();
        self.verifying
            .verify_strict(
                &token.as_bytes()[..signed_len],
                &ed25519_dalek::Signature::from_bytes(&signature),
            )
            .map_err(|_| Error::Signature)?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Error::Malformed)?;
        if claims.iss != self.issuer {
            return Err(Error::Issuer(claims.iss));
        }
        if now > claims.exp + LEEWAY_SECONDS {
            return Err(Error::Expired);
        }
        if now + LEEWAY_SECONDS < claims.nbf {
            return Err(Error::NotYetValid);
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(Error::Audience(claims.aud));
        }
        Ok(claims)
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(seed: u8) -> Issuer {
        Issuer::new(
            SigningKey::from_bytes(&[seed; 32]),
            DEFAULT_ISSUER,
            vec![DEFAULT_ISSUER.into()],
        )
    }

    fn claims(aud: &[&str], iat: i64, ttl: i64) -> Claims {
        Claims {
            aud: aud.iter().map(|a| a.to_string()).collect(),
            exp: iat + ttl,
            iat,
            nbf: iat,
            iss: String::new(),
            jti: "j".into(),
            sub: "system:serviceaccount:a:bot".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: Reference {
                    name: "bot".into(),
                    uid: "u1".into(),
                },
                pod: None,
                secret: None,
            },
        }
    }

    #[test]
    fn signed_tokens_verify_with_their_claims() {
        let i = issuer(1);
        let t0 = 1_700_000_000;
        let token = i.sign(&claims(&[DEFAULT_ISSUER], t0, 3600));
        let c = i.verify(&token, t0 + 10).unwrap();
        assert_eq!(c.iss, DEFAULT_ISSUER);
        assert_eq!(c.kubernetes.serviceaccount.uid, "u1");
        // The claims are upstream's names, readable by anyone who decodes the payload.
        let payload = token.split('.').nth(1).unwrap();
        let raw: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        assert_eq!(raw["sub"], "system:serviceaccount:a:bot");
        assert_eq!(raw["kubernetes.io"]["serviceaccount"]["name"], "bot");
        assert_eq!(raw["aud"][0], DEFAULT_ISSUER);
        assert!(raw["kubernetes.io"].get("pod").is_none());
    }

    #[test]
    fn refuses_forged_expired_early_and_foreign_tokens() {
        let i = issuer(1);
        let t0 = 1_700_000_000;
        let good = i.sign(&claims(&[DEFAULT_ISSUER], t0, 600));
        assert_eq!(
            issuer(2).verify(&good, t0),
            Err(Error::Signature),
            "another key's token"
        );
        assert_eq!(i.verify(&good, t0 + 600 + 61), Err(Error::Expired));
        assert!(i.verify(&good, t0 + 600 + 59).is_ok(), "within the leeway");
        assert_eq!(i.verify(&good, t0 - 61), Err(Error::NotYetValid));
        let other = i.sign(&claims(&["vault"], t0, 600));
        assert_eq!(
            i.verify(&other, t0),
            Err(Error::Audience(vec!["vault".into()]))
        );
        let multi = i.sign(&claims(&["vault", DEFAULT_ISSUER], t0, 600));
        assert!(i.verify(&multi, t0).is_ok());

        // Changing any claim breaks the signature.
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut c: Value = serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
        c["sub"] = "system:serviceaccount:kube-system:admin".into();
        parts[1] = B64.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(i.verify(&parts.join("."), t0), Err(Error::Signature));
        // So does claiming another algorithm.
        parts[0] = B64.encode(br#"{"alg":"none"}"#);
        assert_eq!(i.verify(&parts.join("."), t0), Err(Error::Signature));
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(i.verify(bad, t0).is_err(), "{bad}");
        }
        // A token from another issuer, even signed with the same key, is not ours.
        let foreign = Issuer::new(
            SigningKey::from_bytes(&[1; 32]),
            "https://elsewhere",
            vec![DEFAULT_ISSUER.into()],
        );
        let t = foreign.sign(&claims(&[DEFAULT_ISSUER], t0, 600));
        assert_eq!(
            i.verify(&t, t0),
            Err(Error::Issuer("https://elsewhere".into()))
        );
    }
}
