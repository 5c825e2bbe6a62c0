//! The identity headers the upstream receives, from a session's or a bearer
//! token's claims: the configured claim-to-header map and, optionally, the
//! whole claim set as base64url JSON.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::config::{ClaimPath, ClaimSource, Config};

/// `sub`, when given, wins over a `sub` in `claims` (a session keeps it apart).
/// Each header takes the first of its claims for `source` that is present; a
/// present claim that cannot be a header value (an object, control characters)
/// sends no header rather than falling back, so the fallback never depends on
/// what a token's issuer chose to put in a claim's value.
pub(super) fn identity_headers(
    config: &Config,
    source: ClaimSource,
    sub: Option<&str>,
    claims: &Map<String, Value>,
) -> Vec<(String, String)> {
    let upstream = &config.upstream;
    let mut headers = Vec::new();
    for (header, spec) in &upstream.claim_headers {
        let value = spec
            .for_source(source)
            .iter()
            .find_map(|path| claim(path, sub, claims))
            .and_then(|claim| header_value(&claim, &upstream.claims_separator));
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

/// The claim at `path`, unless absent or `null`; borrowed, since this runs for
/// every header of every request.
fn claim<'a>(
    path: &ClaimPath,
    sub: Option<&str>,
    claims: &'a Map<String, Value>,
) -> Option<Cow<'a, Value>> {
    match sub {
        Some(sub) if path.0.len() == 1 && path.root() == "sub" => {
            Some(Cow::Owned(Value::from(sub)))
        }
        _ => path
            .lookup(claims)
            .filter(|v| !v.is_null())
            .map(Cow::Borrowed),
    }
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
        let headers = identity_headers(
            &c,
            ClaimSource::Session,
            Some("alice"),
            claims.as_object().unwrap(),
        );
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
        let headers = identity_headers(&c, ClaimSource::Session, Some("a\nb"), &Map::new());
        assert!(headers.iter().all(|(h, _)| h != "x-auth-request-user"));
        let headers = identity_headers(
            &c,
            ClaimSource::Bearer,
            None,
            json!({"sub": "bob"}).as_object().unwrap(),
        );
        assert_eq!(
            headers,
            [("x-auth-request-user".to_string(), "bob".to_string())]
        );
    }

    /// Okta: the ID token's `sub` is the user id, an access token's `sub` is the
    /// login and its `uid` the user id; one mapping gives the same header.
    #[test]
    fn each_source_has_its_claims_and_fallbacks() {
        let c = config(json!({"claim_headers": {
            "x-user": {"session": "sub", "bearer": ["uid", "sub"]},
            "x-groups": ["groups", "roles"],
        }}));
        let get = |headers: &[(String, String)], n: &str| {
            headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone())
        };
        let session = identity_headers(
            &c,
            ClaimSource::Session,
            Some("00u1"),
            json!({"groups": ["admins"]}).as_object().unwrap(),
        );
        assert_eq!(get(&session, "x-user").as_deref(), Some("00u1"));
        assert_eq!(get(&session, "x-groups").as_deref(), Some("admins"));
        let user_token =
            json!({"sub": "alice@example.test", "uid": "00u1", "groups": null, "roles": ["r"]});
        let bearer = identity_headers(
            &c,
            ClaimSource::Bearer,
            Some("alice@example.test"),
            user_token.as_object().unwrap(),
        );
        assert_eq!(get(&bearer, "x-user").as_deref(), Some("00u1"));
        assert_eq!(get(&bearer, "x-groups").as_deref(), Some("r"));
        // A client-credentials token has no uid: the fallback is its sub.
        let machine = identity_headers(
            &c,
            ClaimSource::Bearer,
            Some("0oa9"),
            json!({"sub": "0oa9"}).as_object().unwrap(),
        );
        assert_eq!(get(&machine, "x-user").as_deref(), Some("0oa9"));
        // A present but unusable first claim does not fall through to the next.
        let odd = identity_headers(
            &c,
            ClaimSource::Bearer,
            Some("s"),
            json!({"uid": {"x": 1}}).as_object().unwrap(),
        );
        assert_eq!(get(&odd, "x-user"), None);
        // Sessions keep only the claims their own mapping reads.
        let retained: Vec<&str> = c.retained_claims().collect();
        assert!(retained.contains(&"groups") && retained.contains(&"roles"));
        assert!(!retained.contains(&"uid"));
    }
}
