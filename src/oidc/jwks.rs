//! The provider's JSON Web Key Set, parsed once into verification keys.

/// Verification keys from a JWKS document. Keys that cannot verify signatures
/// (`use: enc`, unsupported `kty`/`crv`) are skipped.
#[derive(Debug, Clone)]
pub struct Jwks {/* helper fills */}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson(String),
    NoUsableKeys,
}

impl Jwks {
    pub fn parse(body: &[u8]) -> Result<Jwks, JwksError> {
        todo!("{body:?}")
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
