//! PKCE (RFC 7636) with the S256 method only.

/// 32 random bytes as base64url: a 43-character verifier.
pub fn new_verifier(rng: &mut impl rand_core::CryptoRngCore) -> String {
    let _ = rng;
    todo!()
}

/// `BASE64URL(SHA256(verifier))`.
pub fn s256_challenge(verifier: &str) -> String {
    todo!("{verifier}")
}
