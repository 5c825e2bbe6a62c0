//! Raw bytes as ID, logout and access tokens against the fixture's key set
//! (Ed25519 and RSA keys), so malformed structure, headers and signatures are covered.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    oidc_filter_fuzz::verify_all(&String::from_utf8_lossy(data));
});
