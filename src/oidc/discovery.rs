//! OpenID Provider metadata (`/.well-known/openid-configuration`).

use url::Url;

/// The parts of the provider's metadata the relying party uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    pub end_session_endpoint: Option<Url>,
    pub introspection_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    pub userinfo_endpoint: Option<Url>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    NotJson(String),
    MissingField(&'static str),
    BadUrl { field: &'static str, reason: String },
    InsecureUrl { field: &'static str },
    IssuerMismatch { expected: String, found: String },
}

/// `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4: the issuer's
/// path is kept and a trailing slash is not doubled).
pub fn discovery_url(issuer: &Url) -> Url {
    todo!("{issuer}")
}

/// Judges a discovery document. `allow_http` permits `http:` endpoints (local testing only).
pub fn parse_discovery(
    body: &[u8],
    expected_issuer: &str,
    allow_http: bool,
) -> Result<ProviderMetadata, DiscoveryError> {
    todo!("{body:?}{expected_issuer}{allow_http}")
}
