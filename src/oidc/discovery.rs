//! OpenID Provider metadata (`/.well-known/openid-configuration`).

use serde_json::{Map, Value};
use url::Url;

use super::common::{json_error_kind, log_safe};

/// The parts of the provider's metadata the relying party uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    #[serde(deserialize_with = "ascii_url::required")]
    pub authorization_endpoint: Url,
    #[serde(deserialize_with = "ascii_url::required")]
    pub token_endpoint: Url,
    #[serde(deserialize_with = "ascii_url::required")]
    pub jwks_uri: Url,
    #[serde(deserialize_with = "ascii_url::optional")]
    pub end_session_endpoint: Option<Url>,
    #[serde(deserialize_with = "ascii_url::optional")]
    pub introspection_endpoint: Option<Url>,
    #[serde(deserialize_with = "ascii_url::optional")]
    pub revocation_endpoint: Option<Url>,
    #[serde(deserialize_with = "ascii_url::optional")]
    pub userinfo_endpoint: Option<Url>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    NotJson(String),
    MissingField(&'static str),
    /// The field is present but of the wrong JSON type.
    InvalidField(&'static str),
    BadUrl {
        field: &'static str,
        reason: String,
    },
    InsecureUrl {
        field: &'static str,
    },
    IssuerMismatch {
        expected: String,
        found: String,
    },
}

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotJson(reason) => write!(f, "discovery document is not valid: {reason}"),
            Self::MissingField(field) => write!(f, "discovery document has no {field:?}"),
            Self::InvalidField(field) => {
                write!(f, "discovery document field {field:?} has the wrong type")
            }
            Self::BadUrl { field, reason } => {
                write!(
                    f,
                    "discovery document {field:?} is not a usable URL: {reason}"
                )
            }
            Self::InsecureUrl { field } => {
                write!(f, "discovery document {field:?} is not an https URL")
            }
            Self::IssuerMismatch { expected, found } => write!(
                f,
                "discovery document issuer {found:?} differs from the configured {expected:?}"
            ),
        }
    }
}

impl std::error::Error for DiscoveryError {}

/// `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4: the issuer's
/// path is kept and a trailing slash is not doubled).
pub fn discovery_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Judges a discovery document. `allow_http` permits `http:` endpoints (local testing only).
pub fn parse_discovery(
    body: &[u8],
    expected_issuer: &str,
    allow_http: bool,
) -> Result<ProviderMetadata, DiscoveryError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| DiscoveryError::NotJson(format!("invalid JSON ({})", json_error_kind(&e))))?;
    let Value::Object(doc) = doc else {
        return Err(DiscoveryError::NotJson("not a JSON object".to_owned()));
    };

    // OIDC Discovery §4.3: a mismatch means the document may speak for another
    // provider, which would let it mint identities for ours.
    let issuer = text(&doc, "issuer")?.ok_or(DiscoveryError::MissingField("issuer"))?;
    if issuer != expected_issuer {
        return Err(DiscoveryError::IssuerMismatch {
            expected: log_safe(expected_issuer, 128),
            found: log_safe(issuer, 128),
        });
    }

    let endpoint = |field: &'static str| -> Result<Option<Url>, DiscoveryError> {
        text(&doc, field)?
            .map(|raw| endpoint_url(field, raw, allow_http))
            .transpose()
    };
    let required = |field: &'static str| -> Result<Url, DiscoveryError> {
        endpoint(field)?.ok_or(DiscoveryError::MissingField(field))
    };

    let algs = match doc.get("id_token_signing_alg_values_supported") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or(DiscoveryError::InvalidField(
                "id_token_signing_alg_values_supported",
            ))?,
        Some(_) => {
            return Err(DiscoveryError::InvalidField(
                "id_token_signing_alg_values_supported",
            ))
        }
    };
    let iss_parameter = match doc.get("authorization_response_iss_parameter_supported") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(DiscoveryError::InvalidField(
                "authorization_response_iss_parameter_supported",
            ))
        }
    };

    Ok(ProviderMetadata {
        issuer: issuer.to_owned(),
        authorization_endpoint: required("authorization_endpoint")?,
        token_endpoint: required("token_endpoint")?,
        jwks_uri: required("jwks_uri")?,
        end_session_endpoint: endpoint("end_session_endpoint")?,
        introspection_endpoint: endpoint("introspection_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
        userinfo_endpoint: endpoint("userinfo_endpoint")?,
        id_token_signing_alg_values_supported: algs,
        authorization_response_iss_parameter_supported: iss_parameter,
    })
}

/// A string field; `null` counts as absent, which some providers emit.
fn text<'d>(
    doc: &'d Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'d str>, DiscoveryError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DiscoveryError::InvalidField(field)),
    }
}

/// URLs the filter accepts are ASCII, as RFC 3986 URIs are: a host outside
/// ASCII is written in punycode, anything else percent-encoded. Checked before
/// `url` sees the text, since its ASCII-only IDNA back end (chosen for size)
/// only refuses such hosts after a debug assertion that fuzzing tripped (an
/// upper-case letter beside a non-ASCII one, raw or percent-escaped).
pub fn parse_ascii_url(raw: &str) -> Result<Url, String> {
    if !raw.is_ascii() {
        return Err("not ASCII (use punycode for the host, percent-encoding elsewhere)".into());
    }
    // A percent-escape of a non-ASCII byte in the host reaches the same
    // assertion once decoded; provider and redirect URLs have no use for one.
    if percent_encoding::percent_decode_str(raw).any(|b| !b.is_ascii()) {
        return Err("percent-escapes a byte outside ASCII".into());
    }
    Url::parse(raw).map_err(|e| e.to_string())
}

/// [`parse_ascii_url`] for provider metadata read back from shared data.
mod ascii_url {
    use serde::{de::Error, Deserialize, Deserializer};
    use url::Url;

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
        let raw = String::deserialize(d)?;
        super::parse_ascii_url(&raw).map_err(D::Error::custom)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|raw| super::parse_ascii_url(&raw).map_err(D::Error::custom))
            .transpose()
    }
}

fn endpoint_url(field: &'static str, raw: &str, allow_http: bool) -> Result<Url, DiscoveryError> {
    let bad = |reason: &str| DiscoveryError::BadUrl {
        field,
        reason: reason.to_owned(),
    };
    let url = parse_ascii_url(raw).map_err(|e| bad(&e))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(DiscoveryError::InsecureUrl { field }),
        _ => return Err(bad("scheme is neither https nor http")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    // RFC 6749 §3.1/§3.2: endpoint URIs carry no fragment.
    if url.fragment().is_some() {
        return Err(bad("has a fragment"));
    }
    // Credentials in a URL would end up in logs and request lines.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("contains credentials"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://op.example/realms/main";

    fn good_doc() -> Value {
        json!({
            "issuer": ISS,
            "authorization_endpoint": "https://op.example/auth",
            "token_endpoint": "https://op.example/token",
            "jwks_uri": "https://op.example/jwks",
            "end_session_endpoint": "https://op.example/session/end",
            "userinfo_endpoint": "https://op.example/me",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "authorization_response_iss_parameter_supported": true,
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "sid"]
        })
    }

    fn with(changes: Value) -> Vec<u8> {
        let mut doc = good_doc();
        if let (Some(obj), Value::Object(changes)) = (doc.as_object_mut(), changes) {
            for (k, v) in changes {
                if v.is_null() {
                    obj.remove(&k);
                } else {
                    obj.insert(k, v);
                }
            }
        }
        doc.to_string().into_bytes()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn well_known_url() {
        let cases = [
            (
                "https://op.example",
                "https://op.example/.well-known/openid-configuration",
            ),
            (
                "https://op.example/",
                "https://op.example/.well-known/openid-configuration",
            ),
            (
                "https://op.example/realms/main",
                "https://op.example/realms/main/.well-known/openid-configuration",
            ),
            (
                "https://op.example/realms/main/",
                "https://op.example/realms/main/.well-known/openid-configuration",
            ),
            (
                "http://127.0.0.1:9601",
                "http://127.0.0.1:9601/.well-known/openid-configuration",
            ),
        ];
        for (issuer, want) in cases {
            assert_eq!(discovery_url(&url(issuer)).as_str(), want);
        }
    }

    #[test]
    fn good_document() {
        let m = parse_discovery(&with(json!({})), ISS, false).unwrap();
        assert_eq!(m.issuer, ISS);
        assert_eq!(m.authorization_endpoint, url("https://op.example/auth"));
        assert_eq!(m.token_endpoint, url("https://op.example/token"));
        assert_eq!(m.jwks_uri, url("https://op.example/jwks"));
        assert_eq!(
            m.end_session_endpoint,
            Some(url("https://op.example/session/end"))
        );
        assert_eq!(m.userinfo_endpoint, Some(url("https://op.example/me")));
        assert_eq!(m.introspection_endpoint, None);
        assert_eq!(m.revocation_endpoint, None);
        assert_eq!(
            m.id_token_signing_alg_values_supported,
            vec!["RS256", "ES256"]
        );
        assert!(m.authorization_response_iss_parameter_supported);

        let minimal = json!({
            "issuer": ISS,
            "authorization_endpoint": "https://op.example/auth",
            "token_endpoint": "https://op.example/token",
            "jwks_uri": "https://op.example/jwks",
            "end_session_endpoint": null
        });
        let m = parse_discovery(minimal.to_string().as_bytes(), ISS, false).unwrap();
        assert!(m.id_token_signing_alg_values_supported.is_empty());
        assert!(!m.authorization_response_iss_parameter_supported);
        assert_eq!(m.end_session_endpoint, None);
    }

    #[test]
    fn issuer_must_match_exactly() {
        for found in [
            format!("{ISS}/"),
            "https://op.example".to_owned(),
            ISS.to_uppercase(),
        ] {
            assert_eq!(
                parse_discovery(&with(json!({"issuer": found})), ISS, false).unwrap_err(),
                DiscoveryError::IssuerMismatch {
                    expected: ISS.into(),
                    found: found.clone()
                }
            );
        }
        assert_eq!(
            parse_discovery(&with(json!({"issuer": null})), ISS, false).unwrap_err(),
            DiscoveryError::MissingField("issuer")
        );
        assert_eq!(
            parse_discovery(&with(json!({"issuer": [ISS]})), ISS, false).unwrap_err(),
            DiscoveryError::InvalidField("issuer")
        );
    }

    #[test]
    fn http_only_when_allowed() {
        let doc = with(json!({"token_endpoint": "http://op.example/token"}));
        assert_eq!(
            parse_discovery(&doc, ISS, false).unwrap_err(),
            DiscoveryError::InsecureUrl {
                field: "token_endpoint"
            }
        );
        let m = parse_discovery(&doc, ISS, true).unwrap();
        assert_eq!(m.token_endpoint, url("http://op.example/token"));

        let doc = with(json!({"end_session_endpoint": "http://op.example/end"}));
        assert_eq!(
            parse_discovery(&doc, ISS, false).unwrap_err(),
            DiscoveryError::InsecureUrl {
                field: "end_session_endpoint"
            }
        );
    }

    #[test]
    fn bad_fields() {
        for field in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
            assert_eq!(
                parse_discovery(&with(json!({ field: null })), ISS, false).unwrap_err(),
                DiscoveryError::MissingField(field)
            );
        }
        let bad_url = |field: &'static str, value: Value| match parse_discovery(
            &with(json!({ field: value })),
            ISS,
            true,
        ) {
            Err(DiscoveryError::BadUrl { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        };
        bad_url("jwks_uri", json!("/jwks"));
        bad_url("jwks_uri", json!("not a url"));
        bad_url("token_endpoint", json!("javascript:alert(1)"));
        bad_url("token_endpoint", json!("file:///etc/passwd"));
        bad_url("authorization_endpoint", json!("https://op.example/auth#x"));
        bad_url("token_endpoint", json!("https://user:pw@op.example/token"));
        bad_url("userinfo_endpoint", json!("https://"));
        let invalid = |field: &'static str, value: Value| {
            assert_eq!(
                parse_discovery(&with(json!({ field: value })), ISS, false).unwrap_err(),
                DiscoveryError::InvalidField(field)
            );
        };
        invalid("token_endpoint", json!(5));
        invalid("revocation_endpoint", json!({"url": "https://x"}));
        invalid("id_token_signing_alg_values_supported", json!("RS256"));
        invalid("id_token_signing_alg_values_supported", json!(["RS256", 1]));
        invalid(
            "authorization_response_iss_parameter_supported",
            json!("true"),
        );
    }

    /// The module carries no Unicode IDNA tables (Cargo.toml pins `idna_adapter` to its
    /// ASCII-only back end): a host outside ASCII is refused, its punycode spelling works.
    #[test]
    fn hosts_outside_ascii_are_refused_and_punycode_works() {
        match parse_discovery(
            &with(json!({"token_endpoint": "https://bücher.example/token"})),
            ISS,
            false,
        ) {
            Err(DiscoveryError::BadUrl { field, .. }) => assert_eq!(field, "token_endpoint"),
            other => panic!("{other:?}"),
        }
        // Upper case beside a non-ASCII letter reached a debug assertion of the
        // ASCII-only IDNA back end (found by the shared_records fuzz target).
        match parse_discovery(
            &with(json!({"jwks_uri": "https://IDP.Example\u{327}/jwks"})),
            ISS,
            false,
        ) {
            Err(DiscoveryError::BadUrl { field, .. }) => assert_eq!(field, "jwks_uri"),
            other => panic!("{other:?}"),
        }
        let doc = with(json!({"token_endpoint": "https://xn--bcher-kva.example/token"}));
        let meta = parse_discovery(&doc, ISS, false).unwrap();
        assert_eq!(
            meta.token_endpoint.host_str(),
            Some("xn--bcher-kva.example")
        );
    }

    #[test]
    fn metadata_read_back_refuses_urls_outside_ascii() {
        let doc = with(json!({}));
        let meta = parse_discovery(&doc, ISS, false).unwrap();
        let mut record = serde_json::to_value(&meta).unwrap();
        let back: ProviderMetadata = serde_json::from_value(record.clone()).unwrap();
        assert_eq!(back, meta);
        record["jwks_uri"] = json!("https://iEv6P3T9VClvFdR\u{327}XQO1");
        assert!(serde_json::from_value::<ProviderMetadata>(record.clone()).is_err());
        record["jwks_uri"] = json!("https://idp.example/jwks");
        record["end_session_endpoint"] = json!("https://IDP.Example\u{327}/logout");
        assert!(serde_json::from_value::<ProviderMetadata>(record.clone()).is_err());
        record["end_session_endpoint"] = json!("https://idpL%aex.example/logout");
        assert!(serde_json::from_value::<ProviderMetadata>(record.clone()).is_err());
        record["end_session_endpoint"] = json!("https://idp.example/log%2Fout");
        assert!(serde_json::from_value::<ProviderMetadata>(record).is_ok());
    }

    #[test]
    fn not_json() {
        for body in [
            &b""[..],
            b"<html>",
            b"[]",
            b"\"issuer\"",
            b"null",
            b"{\"issuer\":",
        ] {
            assert!(
                matches!(
                    parse_discovery(body, ISS, false),
                    Err(DiscoveryError::NotJson(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            DiscoveryError::InsecureUrl { field: "jwks_uri" }.to_string(),
            "discovery document \"jwks_uri\" is not an https URL"
        );
        assert_eq!(
            DiscoveryError::IssuerMismatch {
                expected: "https://a".into(),
                found: "https://b".into()
            }
            .to_string(),
            "discovery document issuer \"https://b\" differs from the configured \"https://a\""
        );
    }
}
