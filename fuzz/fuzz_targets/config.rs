//! The filter configuration JSON (`Config::parse`), with an environment that
//! answers every variable, so `*_env` fields are followed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::config::Config;

fuzz_target!(|data: &[u8]| {
    let env = |name: &str| match name.len() % 3 {
        0 => None,
        1 => Some("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA".to_string()),
        _ => Some(name.to_string()),
    };
    if let Ok(config) = Config::parse(data, env) {
        let _ = config.identity_headers().count();
        let _ = config.retained_claims().count();
        let _ = format!("{config:?}");
        let _ = config.session.layout();
    }
});
