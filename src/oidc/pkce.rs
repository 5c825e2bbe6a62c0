//! PKCE (RFC 7636) with the S256 method only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// 32 random bytes as base64url: a 43-character verifier.
pub fn new_verifier(rng: &mut impl rand_core::CryptoRngCore) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `BASE64URL(SHA256(verifier))`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_43_unreserved_chars_and_differ() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let a = new_verifier(&mut rng);
        let b = new_verifier(&mut rng);
        assert_ne!(a, b);
        for v in [&a, &b] {
            assert_eq!(v.len(), 43);
            assert!(v
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(s256_challenge(v).len(), 43);
        }
    }
}
