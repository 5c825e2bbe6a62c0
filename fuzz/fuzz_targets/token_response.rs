//! Token endpoint responses (authorization code and refresh grants).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::oidc::token::parse_token_response;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = [200, 400, 401, 500, 201, 302][usize::from(selector) % 6];
    if let Ok(tokens) = parse_token_response(status, body) {
        let _ = format!("{tokens:?}");
    }
});
