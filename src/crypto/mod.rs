//! Cryptographic helpers on RustCrypto primitives: AEAD sealing, random tokens, digests.

pub mod seal;

/// `n` random bytes, base64url without padding.
pub fn random_token(rng: &mut impl rand_core::CryptoRngCore, n: usize) -> String {
    let _ = (rng, n);
    todo!()
}

/// SHA-256, base64url without padding.
pub fn sha256_b64url(data: &[u8]) -> String {
    let _ = data;
    todo!()
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let _ = (a, b);
    todo!()
}
