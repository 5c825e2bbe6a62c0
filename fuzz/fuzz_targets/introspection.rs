//! Token introspection answers (RFC 7662) and the judgement of their members.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::oidc::introspection::{
    judge_introspection, parse_introspection_response, IntrospectionExpectations,
};
use oidc_filter_fuzz::{CLIENT_ID, ISSUER, NOW};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = [200, 400, 401, 500][usize::from(selector) % 4];
    let Ok(members) = parse_introspection_response(status, body) else {
        return;
    };
    let audiences = ["api".to_string(), CLIENT_ID.to_string()];
    let expect = IntrospectionExpectations {
        issuer: ISSUER,
        audiences: &audiences,
        now: NOW,
        clock_skew: 60,
    };
    if judge_introspection(&members, &expect).is_ok() {
        assert_eq!(members.get("active"), Some(&serde_json::Value::Bool(true)));
    }
});
