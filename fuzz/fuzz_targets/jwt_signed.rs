//! Tokens with fuzzed headers and claims, validly signed with the provider's
//! key inside the target, so every claim check past the signature is reached.
//!
//! Input: one byte choosing the claims the fuzzed ones are laid over (ID,
//! logout or access token, or none: the payload is taken as it is), then the
//! header line (empty: the provider's usual header; `{…}`: taken as it is;
//! anything else: the usual header with that `typ`), a newline, and the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter_fuzz::{header, merge_claims, sign, verify_all, CLIENT_ID, ISSUER, NOW};
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (header_line, payload) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let header = match header_line {
        [] => header(None),
        [b'{', ..] => header_line.to_vec(),
        typ => header(Some(&String::from_utf8_lossy(typ))),
    };
    let payload = match kind % 4 {
        0 => merge_claims(
            json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice", "nonce": "n-0S6_WzA2Mj",
                   "exp": NOW + 300, "iat": NOW, "sid": "s1"}),
            payload,
        ),
        1 => merge_claims(
            json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice", "sid": "s1", "jti": "j1",
                   "iat": NOW, "exp": NOW + 120,
                   "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
            payload,
        ),
        2 => merge_claims(
            json!({"iss": ISSUER, "aud": "api", "sub": "alice", "exp": NOW + 300, "iat": NOW,
                   "scope": "openid email", "client_id": CLIENT_ID}),
            payload,
        ),
        _ => payload.to_vec(),
    };
    verify_all(&sign(&header, &payload));
});
