//! The identity headers the upstream receives, from a session's or a bearer
//! token's claims: the configured claim-to-header map and, optionally, the
//! whole claim set as base64url JSON.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::config::Config;

/// `sub`, when given, wins over a `sub` in `claims` (a session keeps it apart).
pub(super) fn identity_headers(
    config: &Config,
    sub: Option<&str>,
    claims: &Map<String, Value>,
) -> Vec<(String, String)> {
    let upstream = &config.upstream;
    let mut headers = Vec::new();
    for (header, path) in &upstream.claim_headers {
        let value = match sub {
            Some(sub) if path.0.len() == 1 && path.root() == "sub" => safe(sub.to_string()),
            _ => path
                .lookup(claims)
                .and_then(|claim| header_value(claim, &upstream.claims_separator)),
        };
        if let Some(value) = value {
            headers.push((header.clone(), value));
        }
    }
    if let Some(header) = &upstream.claims_header {
        let mut all = claims.clone();
        if let Some(sub) = sub {
            all.insert("sub".to_string(), Value::String(sub.to_string()));
        }
        // JSON escapes control characters and base64url has none, so this value is always safe.
        if let Ok(json) = serde_json::to_vec(&all) {
            headers.push((header.clone(), URL_SAFE_NO_PAD.encode(json)));
        }
    }
    headers
}

/// A claim as a header value; arrays of scalars are joined with `separator`.
fn header_value(claim: &Value, separator: &str) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match claim {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(separator),
        other => scalar(other)?,
    };
    safe(text)
}

/// Values with control characters are dropped rather than cleaned: a header
/// must never smuggle CR/LF.
fn safe(text: String) -> Option<String> {
    if text.chars().any(char::is_control) {
        log::warn!("a claim value with control characters was not sent upstream");
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(upstream: Value) -> Config {
        let json = json!({
            "issuer": "https://idp.example", "client_id": "rp", "client_secret": "s",
            "redirect_uri": "https://app.example/cb", "provider_cluster": "idp",
            "upstream": upstream,
        });
        Config::parse(&serde_json::to_vec(&json).unwrap(), |_| None).unwrap()
    }

    #[test]
    fn claims_become_headers() {
        let c = config(json!({
            "claim_headers": {"x-user": "sub", "x-groups": "groups", "x-roles": "realm_access.roles",
                              "x-verified": "email_verified", "x-evil": "evil", "x-obj": "realm_access"},
            "claims_separator": "|",
            "claims_header": "X-Auth-Request-Claims"
        }));
        let claims = json!({"sub": "ignored", "groups": ["a", "b"], "email_verified": true,
                            "realm_access": {"roles": ["r1", 2]}, "evil": "x\r\nSet-Cookie: a=b"});
        let headers = identity_headers(&c, Some("alice"), claims.as_object().unwrap());
        let get = |n: &str| {
            headers
                .iter()
                .find(|(h, _)| h == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-user"), Some("alice"));
        assert_eq!(get("x-groups"), Some("a|b"));
        assert_eq!(get("x-roles"), Some("r1|2"));
        assert_eq!(get("x-verified"), Some("true"));
        assert_eq!(get("x-evil"), None);
        assert_eq!(get("x-obj"), None);
        let all = URL_SAFE_NO_PAD
            .decode(get("x-auth-request-claims").unwrap())
            .unwrap();
        let all: Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(all["sub"], "alice");
        assert_eq!(all["evil"], "x\r\nSet-Cookie: a=b");
        assert!(c.identity_headers().any(|h| h == "x-auth-request-claims"));
    }

    #[test]
    fn a_sub_with_control_characters_is_not_sent() {
        let c = config(json!({}));
        let headers = identity_headers(&c, Some("a\nb"), &Map::new());
        assert!(headers.iter().all(|(h, _)| h != "x-auth-request-user"));
        let headers = identity_headers(&c, None, json!({"sub": "bob"}).as_object().unwrap());
        assert_eq!(
            headers,
            [("x-auth-request-user".to_string(), "bob".to_string())]
        );
    }
}
