//! Provider discovery documents, and the discovery URL of arbitrary issuers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::oidc::discovery::{discovery_url, parse_discovery};
use oidc_filter_fuzz::ISSUER;

fuzz_target!(|data: &[u8]| {
    for allow_http in [false, true] {
        if let Ok(metadata) = parse_discovery(data, ISSUER, allow_http) {
            assert_eq!(metadata.issuer, ISSUER);
            if !allow_http {
                assert_eq!(metadata.token_endpoint.scheme(), "https");
                assert_eq!(metadata.jwks_uri.scheme(), "https");
            }
        }
    }
    if let Ok(issuer) = url::Url::parse(&String::from_utf8_lossy(data)) {
        let _ = discovery_url(&issuer);
    }
});
