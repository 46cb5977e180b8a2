//! Module signatures: ed25519 over a module's sha256 digest, so a node can refuse modules its
//! operator's publishers did not sign, offline, from keys it holds.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::Digest as _;

/// What is signed: a domain tag and the module's sha256 digest.
fn message(module: &[u8]) -> Vec<u8> {
    let mut m = b"skiff-module-v1:".to_vec();
    m.extend_from_slice(&sha2::Sha256::digest(module));
    m
}

/// Signs a module with a publisher key.
pub fn sign_module(key: &SigningKey, module: &[u8]) -> [u8; 64] {
    key.sign(&message(module)).to_bytes()
}

/// True when `signature` is a valid signature of `module` by one of `keys`.
pub fn verify_module(keys: &[VerifyingKey], module: &[u8], signature: &[u8]) -> bool {
    verify_digest(keys, &sha2::Sha256::digest(module).into(), signature)
}

/// True when `signature` is a valid signature, by one of `keys`, of the module whose sha256
/// digest is `digest` (what a node checks again without reading the module).
pub fn verify_digest(keys: &[VerifyingKey], digest: &[u8; 32], signature: &[u8]) -> bool {
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    let mut msg = b"skiff-module-v1:".to_vec();
    msg.extend_from_slice(digest);
    keys.iter().any(|k| k.verify(&msg, &sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_key_and_content() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let sig = sign_module(&key, b"\0asm module");
        assert!(verify_module(&[key.verifying_key()], b"\0asm module", &sig));
        assert!(
            !verify_module(&[other.verifying_key()], b"\0asm module", &sig),
            "another publisher's key"
        );
        assert!(
            !verify_module(&[key.verifying_key()], b"\0asm tampered", &sig),
            "changed content"
        );
        assert!(
            !verify_module(&[key.verifying_key()], b"\0asm module", b"short"),
            "garbage signature"
        );
    }
}
