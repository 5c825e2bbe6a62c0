//! Cryptographic helpers on RustCrypto primitives: AEAD sealing, random tokens, digests.

pub mod seal;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` random bytes, base64url without padding.
pub fn random_token(rng: &mut impl rand_core::CryptoRngCore, n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256, base64url without padding.
pub fn sha256_b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(data))
}

/// Equality that takes the same time wherever the inputs differ.
///
/// Lengths are not secret here (tokens have fixed lengths), so a length mismatch
/// returns early.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn random_token_has_expected_length_and_alphabet() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let t = random_token(&mut rng, 32);
        assert_eq!(t.len(), 43);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        assert_ne!(t, random_token(&mut rng, 32));
        assert_eq!(random_token(&mut rng, 0), "");
    }

    #[test]
    fn random_token_is_reproducible_with_seeded_rng() {
        let a = random_token(&mut ChaCha20Rng::seed_from_u64(7), 16);
        let b = random_token(&mut ChaCha20Rng::seed_from_u64(7), 16);
        assert_eq!(a, b);
    }

    #[test]
    fn sha256_matches_rfc7636_example() {
        // RFC 7636 appendix B: the S256 challenge of this verifier.
        assert_eq!(
            sha256_b64url(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
