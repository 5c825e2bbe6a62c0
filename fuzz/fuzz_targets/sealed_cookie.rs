//! The sealed cookie codec with a fixed key: opening arbitrary values as a
//! session or login cookie, and sealing arbitrary sessions and bytes back and forth.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::crypto::seal;
use oidc_filter::http::cookies;
use oidc_filter::session::login::LoginState;
use oidc_filter::session::{cookie_codec, Session};
use oidc_filter_fuzz::{configs, rng, sealing_keys};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let keys = sealing_keys();
    let base = configs()[1].cookies.session_name.as_str();
    let text = String::from_utf8_lossy(rest);
    match selector % 5 {
        0 => {
            let _ = seal::open_with_key_index(keys, b"ad", &text);
        }
        1 => {
            let _ = cookie_codec::open(keys, base, &text);
        }
        2 => {
            let _ = LoginState::open(keys, "oidc_login_abcdefgh", &text);
        }
        3 => {
            // Anything sealed opens to itself, and only under its own associated data.
            let sealed = seal::seal(keys, b"ad", rest, &mut rng(1));
            assert_eq!(seal::open(keys, b"ad", &sealed).as_deref(), Some(rest));
            assert_eq!(seal::open(keys, b"other", &sealed), None);
        }
        _ => {
            // Any session the codec accepts survives the cookies it is written to.
            let Some(session) = Session::decode(rest) else {
                return;
            };
            let Some(parts) = cookie_codec::write(&session, keys, base, &mut rng(2)) else {
                return;
            };
            let header: Vec<String> = parts.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let header = header.join("; ");
            let parsed = cookies::parse_cookies([header.as_bytes()]);
            let opened = cookie_codec::read(&parsed, keys, base)
                .expect("our own cookies open")
                .expect("our own cookies are present");
            assert!(opened.session == session, "session changed in the cookie");
        }
    }
});
