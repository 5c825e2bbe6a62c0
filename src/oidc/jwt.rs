//! Signature verification of compact JWS tokens against a [`Jwks`].

use super::jwks::Jwks;

/// Signature algorithms a relying party may allow. `none` and the HMAC family
/// are deliberately absent: they cannot be verified with a provider's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    EdDSA,
}

impl Algorithm {
    pub fn from_name(name: &str) -> Option<Algorithm> {
        todo!("{name}")
    }
    pub fn name(self) -> &'static str {
        todo!()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(String),
    /// The header's `alg` is not in the allow-list (this includes `none` and `HS*`).
    AlgorithmNotAllowed(String),
    /// No key in the set has this `kid`: the provider may have rotated its keys.
    UnknownKid(String),
    /// No `kid` and no single key of the right type and algorithm.
    NoMatchingKey,
    BadSignature,
    /// The header's `typ` is not the expected one.
    WrongType(Option<String>),
}

/// A token whose signature checked out. Only [`verify_signature`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

pub fn verify_signature(
    token: &str,
    jwks: &Jwks,
    allowed: &[Algorithm],
) -> Result<VerifiedJwt, JwtError> {
    todo!("{token}{jwks:?}{allowed:?}")
}
