//! Token introspection (RFC 7662): judging the provider's answer about an
//! opaque access token. The request is [`super::token::introspection_request`].

use serde_json::{Map, Value};

use super::access_token::AccessTokenError;
use super::common::{audiences, log_safe, numeric_date, string_claim, ClaimError};

/// The provider could not tell us; unlike an inactive token, worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionFailed(pub String);

impl std::fmt::Display for IntrospectionFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "introspection failed: {}", self.0)
    }
}

/// The answer's members, or a failure. `Ok` may still say `active: false`.
pub fn parse_introspection_response(
    status: u16,
    body: &[u8],
) -> Result<Map<String, Value>, IntrospectionFailed> {
    if status == 400 && error_code(body).as_deref() == Some("unsupported_token_type") {
        // RFC 7662 §4: the provider cannot introspect tokens of this kind (oidc-provider
        // says so for JWTs), so it vouches for nothing.
        let mut members = Map::new();
        members.insert("active".to_string(), Value::Bool(false));
        return Ok(members);
    }
    if status != 200 {
        return Err(IntrospectionFailed(format!("status {status}")));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(members)) => Ok(members),
        Ok(_) => Err(IntrospectionFailed(
            "the answer is not a JSON object".into(),
        )),
        Err(e) => Err(IntrospectionFailed(format!(
            "the answer is not JSON ({})",
            super::common::json_error_kind(&e)
        ))),
    }
}

fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(value.get("error")?.as_str()?.to_string())
}

pub struct IntrospectionExpectations<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub now: u64,
    pub clock_skew: u64,
}

/// Whether an introspection answer admits the token, with the same claim checks
/// as a JWT access token where the answer carries the claim.
///
/// - `active` must be the JSON value `true` (§2.2).
/// - `token_type` must be `Bearer`: oidc-provider and others also answer for
///   refresh tokens, which must never work as access tokens.
/// - `exp`, `nbf` and `iat`, when present, are checked with the clock skew.
/// - `iss`, when present, must be the configured issuer.
/// - `aud`, when present, must contain a configured audience; without `aud`,
///   the token's `client_id` must be one, so a token issued to some other
///   client of the provider does not pass.
pub fn judge_introspection(
    members: &Map<String, Value>,
    expect: &IntrospectionExpectations<'_>,
) -> Result<(), AccessTokenError> {
    if members.get("active") != Some(&Value::Bool(true)) {
        return Err(AccessTokenError::Inactive);
    }
    match string_claim(members, "token_type")? {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(AccessTokenError::InvalidClaim("token_type")),
        None => return Err(AccessTokenError::MissingClaim("token_type")),
    }
    if let Some(exp) = numeric_date(members, "exp")? {
        if expect.now > exp.saturating_add(expect.clock_skew) {
            return Err(AccessTokenError::Expired);
        }
    }
    let latest_start = expect.now.saturating_add(expect.clock_skew);
    for name in ["nbf", "iat"] {
        if numeric_date(members, name)?.is_some_and(|t| t > latest_start) {
            return Err(AccessTokenError::NotYetValid);
        }
    }
    if let Some(issuer) = string_claim(members, "iss")? {
        if issuer != expect.issuer {
            return Err(AccessTokenError::WrongIssuer(log_safe(issuer, 128)));
        }
    }
    let wanted = |a: &str| expect.audiences.iter().any(|w| w == a);
    let ok = match audiences(members) {
        Ok(aud) => aud.into_iter().any(wanted),
        Err(ClaimError::Missing(_)) => string_claim(members, "client_id")?.is_some_and(wanted),
        Err(e) => return Err(e.into()),
    };
    if !ok {
        return Err(AccessTokenError::WrongAudience);
    }
    string_claim(members, "sub")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn judge(members: Value) -> Result<(), AccessTokenError> {
        let audiences = vec!["https://api.example/".to_string(), "rp".to_string()];
        judge_introspection(
            members.as_object().unwrap(),
            &IntrospectionExpectations {
                issuer: "https://op.example",
                audiences: &audiences,
                now: NOW,
                clock_skew: 10,
            },
        )
    }

    fn good() -> Value {
        json!({"active": true, "token_type": "Bearer", "sub": "alice", "client_id": "rp",
               "iss": "https://op.example", "exp": NOW + 60, "iat": NOW - 5, "scope": "openid"})
    }

    fn with(changes: Value) -> Value {
        let mut v = good();
        for (k, c) in changes.as_object().unwrap() {
            if c.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = c.clone();
            }
        }
        v
    }

    #[test]
    fn active_answers_pass() {
        assert_eq!(judge(good()), Ok(()));
        assert_eq!(
            judge(with(
                json!({"aud": "https://api.example/", "client_id": "x"})
            )),
            Ok(())
        );
        assert_eq!(
            judge(with(json!({"iss": null, "exp": null, "iat": null}))),
            Ok(())
        );
        assert_eq!(judge(with(json!({"token_type": "bearer"}))), Ok(()));
    }

    #[test]
    fn refusals() {
        let cases = [
            (json!({"active": false}), AccessTokenError::Inactive),
            (with(json!({"active": "true"})), AccessTokenError::Inactive),
            (with(json!({"active": null})), AccessTokenError::Inactive),
            (
                with(json!({"token_type": null})),
                AccessTokenError::MissingClaim("token_type"),
            ),
            (
                with(json!({"token_type": "refresh_token"})),
                AccessTokenError::InvalidClaim("token_type"),
            ),
            (with(json!({"exp": NOW - 11})), AccessTokenError::Expired),
            (
                with(json!({"nbf": NOW + 11})),
                AccessTokenError::NotYetValid,
            ),
            (
                with(json!({"iss": "https://evil.example"})),
                AccessTokenError::WrongIssuer("https://evil.example".into()),
            ),
            (
                with(json!({"client_id": "other"})),
                AccessTokenError::WrongAudience,
            ),
            (
                with(json!({"client_id": null})),
                AccessTokenError::WrongAudience,
            ),
            (
                with(json!({"aud": ["other"]})),
                AccessTokenError::WrongAudience,
            ),
            (
                with(json!({"aud": 5})),
                AccessTokenError::InvalidClaim("aud"),
            ),
            (
                with(json!({"sub": 5})),
                AccessTokenError::InvalidClaim("sub"),
            ),
        ];
        for (members, want) in cases {
            assert_eq!(judge(members.clone()), Err(want), "{members}");
        }
    }

    #[test]
    fn responses() {
        assert!(parse_introspection_response(200, br#"{"active":false}"#).is_ok());
        assert!(parse_introspection_response(401, br#"{"active":true}"#).is_err());
        assert!(parse_introspection_response(200, b"[]").is_err());
        assert!(parse_introspection_response(200, b"<html>").is_err());
        let unsupported = br#"{"error":"unsupported_token_type"}"#;
        let members = parse_introspection_response(400, unsupported).unwrap();
        assert_eq!(members.get("active"), Some(&Value::Bool(false)));
        assert!(parse_introspection_response(400, br#"{"error":"invalid_request"}"#).is_err());
    }
}
