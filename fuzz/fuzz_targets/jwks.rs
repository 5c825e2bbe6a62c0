//! JWKS documents, and verification of tokens against whatever keys they yield
//! (duplicate kids, keys without kid, keys pinned to other algorithms).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::oidc::jwks::Jwks;
use oidc_filter::oidc::jwt::{verify_signature, Algorithm};
use oidc_filter_fuzz::{header, sign, CLIENT_ID};

fuzz_target!(|data: &[u8]| {
    let Ok(jwks) = Jwks::parse(data) else {
        return;
    };
    assert_eq!(jwks.is_empty(), jwks.len() == 0);
    let payload = format!(r#"{{"aud":"{CLIENT_ID}"}}"#);
    for header in [
        header(None),
        br#"{"alg":"EdDSA"}"#.to_vec(),
        br#"{"alg":"RS256","kid":"test-rs256"}"#.to_vec(),
        br#"{"alg":"ES256"}"#.to_vec(),
        br#"{"alg":"PS256"}"#.to_vec(),
    ] {
        let _ = verify_signature(&sign(&header, payload.as_bytes()), &jwks, &Algorithm::ALL);
    }
});
