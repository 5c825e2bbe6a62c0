//! `Cookie` headers (one per input line): parsing, our cookies stripped before
//! the upstream, and session chunks joined and opened.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::http::cookies;
use oidc_filter::session::{chunks, cookie_codec};
use oidc_filter_fuzz::{configs, sealing_keys};

fuzz_target!(|data: &[u8]| {
    let config = &configs()[1];
    let base = config.cookies.session_name.as_str();
    let headers: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let parsed = cookies::parse_cookies(headers.iter().copied());
    let _ = cookies::cookie_value(&parsed, base);
    let _ = cookies::cookies_with_prefix(&parsed, &config.cookies.login_prefix).count();

    // Whatever passes upstream must hold none of our cookies.
    if let Some(kept) =
        cookies::strip_cookies(headers.iter().copied(), |n| config.cookies.is_ours(n))
    {
        for (name, _) in cookies::parse_cookies([kept.as_slice()]) {
            assert!(
                !config.cookies.is_ours(name.as_bytes()),
                "{name:?} passed upstream"
            );
        }
    }

    let names = chunks::present_names(&parsed, base);
    for name in &names {
        assert!(chunks::is_session_cookie(name.as_bytes(), base));
    }
    let _ = chunks::expire_headers(&names, &config.cookies.attributes);
    if let chunks::Joined::Sealed(sealed) = chunks::join(&parsed, base) {
        // A joined value splits back into cookies that join to the same value
        // (split only ever sees sealed values, which are base64url).
        let base64url = sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if let Some(parts) = chunks::split(base, &sealed).filter(|_| base64url) {
            assert_eq!(chunks::join(&parts, base), chunks::Joined::Sealed(sealed));
        }
    }
    let _ = cookie_codec::read(&parsed, sealing_keys(), base);
});
