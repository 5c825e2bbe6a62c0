//! AES-256-GCM sealing of small values into cookie-safe strings.

/// Keys for sealing: the first seals, all open (key rotation).
#[derive(Clone)]
pub struct SealingKeys {/* helper fills */}

impl std::fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKeys(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooShort { index: usize, len: usize },
    Malformed { index: usize },
}

impl SealingKeys {
    /// Keys given as base64 (standard or url-safe, padded or not) of at least 32 bytes.
    pub fn from_encoded(encoded: &[impl AsRef<str>]) -> Result<SealingKeys, KeyError> {
        let _ = encoded;
        todo!()
    }
    pub fn from_raw(keys: Vec<[u8; 32]>) -> Result<SealingKeys, KeyError> {
        let _ = keys;
        todo!()
    }
}

/// `base64url(nonce || ciphertext || tag)` with a fresh 96-bit nonce.
pub fn seal(
    keys: &SealingKeys,
    associated_data: &[u8],
    plaintext: &[u8],
    rng: &mut impl rand_core::CryptoRngCore,
) -> String {
    let _ = (keys, associated_data, plaintext, rng);
    todo!()
}

/// The plaintext if any key opens the value with this associated data.
pub fn open(keys: &SealingKeys, associated_data: &[u8], sealed: &str) -> Option<Vec<u8>> {
    let _ = (keys, associated_data, sealed);
    todo!()
}
