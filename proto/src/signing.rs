//! Publisher keys and package signatures (Ed25519).
//!
//! A signature covers a package's sha256 with a domain prefix,
//! `flotilla-package-v1:<sha256 hex>`, so a signature made for anything else
//! never verifies as a package signature. Keys and signatures are written as
//! lowercase hex; a key's id is the first 16 hex digits of the sha256 of its
//! public half. Verification uses `verify_strict`.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const DOMAIN: &str = "flotilla-package-v1:";

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("{what} is not valid: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("the signature does not match any trusted publisher key (trusted: {trusted})")]
    Untrusted { trusted: String },
    #[error("cannot draw random bytes for a new key: {0}")]
    Random(String),
}

/// A publisher's secret key. Its `Debug` never shows the key.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, secret hidden)", self.public().id())
    }
}

/// A publisher's public key, as agents trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], SigningError> {
    let text = text.trim();
    let malformed = |why: String| SigningError::Malformed { what, why };
    if text.len() != N * 2 {
        return Err(malformed(format!(
            "expected {} hex digits, found {}",
            N * 2,
            text.len()
        )));
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16)
            .map_err(|_| malformed("not hexadecimal".into()))?;
    }
    Ok(bytes)
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<SecretKey, SigningError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Reads the hex form written by [`SecretKey::to_hex`].
    pub fn from_hex(text: &str) -> Result<SecretKey, SigningError> {
        Ok(SecretKey(SigningKey::from_bytes(&unhex::<32>(
            "secret key",
            text,
        )?)))
    }

    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs a package, given its sha256 in hex; returns the signature in hex.
    pub fn sign_package(&self, sha256: &str) -> String {
        let message = format!("{DOMAIN}{}", sha256.trim().to_ascii_lowercase());
        hex(&self.0.sign(message.as_bytes()).to_bytes())
    }
}

impl PublicKey {
    pub fn from_hex(text: &str) -> Result<PublicKey, SigningError> {
        let bytes = unhex::<32>("public key", text)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| SigningError::Malformed {
                what: "public key",
                why: e.to_string(),
            })
    }

    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    /// A short, stable name for the key.
    pub fn id(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))[..16].to_owned()
    }
}

/// Checks a package signature against the trusted keys; returns the id of
/// the key that made it.
pub fn verify_package(
    trusted: &[PublicKey],
    sha256: &str,
    signature: &str,
) -> Result<String, SigningError> {
    let signature = Signature::from_bytes(&unhex::<64>("signature", signature)?);
    let message = format!("{DOMAIN}{}", sha256.trim().to_ascii_lowercase());
    trusted
        .iter()
        .find(|key| key.0.verify_strict(message.as_bytes(), &signature).is_ok())
        .map(PublicKey::id)
        .ok_or_else(|| SigningError::Untrusted {
            trusted: if trusted.is_empty() {
                "none".into()
            } else {
                trusted
                    .iter()
                    .map(PublicKey::id)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_signature_verifies_with_its_key_and_no_other() {
        let publisher = SecretKey::generate().expect("key");
        let stranger = SecretKey::generate().expect("key");
        let signature = publisher.sign_package(SHA);
        let trusted = [stranger.public(), publisher.public()];
        assert_eq!(
            verify_package(&trusted, SHA, &signature),
            Ok(publisher.public().id())
        );
        let err = verify_package(&[stranger.public()], SHA, &signature).expect_err("untrusted");
        assert!(err.to_string().contains(&stranger.public().id()), "{err}");
        let other_package = SHA.replace('9', "8");
        assert!(verify_package(&trusted, &other_package, &signature).is_err());
    }

    #[test]
    fn keys_round_trip_and_secrets_stay_hidden() {
        let key = SecretKey::generate().expect("key");
        let again = SecretKey::from_hex(&key.to_hex()).expect("hex");
        assert_eq!(again.public(), key.public());
        assert_eq!(
            PublicKey::from_hex(&key.public().to_hex()),
            Ok(key.public())
        );
        assert!(!format!("{key:?}").contains(&key.to_hex()));
        assert!(PublicKey::from_hex("zz").is_err());
    }
}
