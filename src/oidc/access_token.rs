//! Bearer JWT access token validation for APIs (RFC 9068 profile, loosely).

use super::common::{
    audiences, is_explicit_type, log_safe, numeric_date, required_date, string_claim, typ_is,
    ClaimError,
};
use super::jwks::Jwks;
use super::jwt::{verify_signature, Algorithm, JwtError};

pub struct AccessTokenExpectations<'a> {
    pub issuer: &'a str,
    /// The token's `aud` must contain one of these. Empty accepts nothing.
    pub audiences: &'a [String],
    pub allowed_algorithms: &'a [Algorithm],
    pub now: u64,
    pub clock_skew: u64,
}

#[derive(Debug, Clone)]
pub struct VerifiedAccessToken {
    pub sub: Option<String>,
    pub exp: u64,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTokenError {
    Jwt(JwtError),
    MissingClaim(&'static str),
    /// The claim is present but of the wrong JSON type.
    InvalidClaim(&'static str),
    WrongIssuer(String),
    WrongAudience,
    Expired,
    /// `nbf` (or `iat`) lies in the future.
    NotYetValid,
    /// Introspection says the token is not active (revoked, expired or unknown).
    Inactive,
}

impl std::fmt::Display for AccessTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Jwt(e) => write!(f, "access token rejected: {e}"),
            Self::MissingClaim(name) => write!(f, "access token has no {name:?} claim"),
            Self::InvalidClaim(name) => {
                write!(f, "access token claim {name:?} has an invalid value")
            }
            Self::WrongIssuer(found) => {
                write!(
                    f,
                    "access token issuer {found:?} is not the configured issuer"
                )
            }
            Self::WrongAudience => f.write_str("access token audience does not include this API"),
            Self::Expired => f.write_str("access token has expired"),
            Self::NotYetValid => f.write_str("access token is not valid yet"),
            Self::Inactive => f.write_str("access token is not active"),
        }
    }
}

super::common::token_error_conversions!(AccessTokenError);

/// Whether `token` has the shape of a compact JWS (three non-empty base64url
/// segments), to tell JWT access tokens from opaque ones without decoding.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut segments = 0;
    for segment in token.split('.') {
        segments += 1;
        if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    segments == 3
}

pub fn verify_access_token(
    raw: &str,
    jwks: &Jwks,
    expect: &AccessTokenExpectations<'_>,
) -> Result<VerifiedAccessToken, AccessTokenError> {
    let jwt = verify_signature(raw, jwks, expect.allowed_algorithms)?;
    // RFC 9068 types access tokens "at+jwt", but many providers send "JWT" or
    // nothing. Other explicit types (logout+jwt, …) are tokens of another kind.
    if let Some(typ) = jwt.typ.as_deref() {
        if is_explicit_type(typ) && !typ_is(typ, "at+jwt") {
            return Err(JwtError::WrongType(Some(log_safe(typ, 32))).into());
        }
    }
    let claims = jwt.claims;

    let issuer = string_claim(&claims, "iss")?.ok_or(ClaimError::Missing("iss"))?;
    if issuer != expect.issuer {
        return Err(AccessTokenError::WrongIssuer(log_safe(issuer, 128)));
    }

    let exp = required_date(&claims, "exp")?;
    if expect.now > exp.saturating_add(expect.clock_skew) {
        return Err(AccessTokenError::Expired);
    }
    let latest_start = expect.now.saturating_add(expect.clock_skew);
    for name in ["nbf", "iat"] {
        if numeric_date(&claims, name)?.is_some_and(|t| t > latest_start) {
            return Err(AccessTokenError::NotYetValid);
        }
    }

    let aud = audiences(&claims)?;
    if !aud
        .iter()
        .any(|a| expect.audiences.iter().any(|want| want == a))
    {
        return Err(AccessTokenError::WrongAudience);
    }

    // An ID token for our own client has our client id as audience, which is
    // also the default API audience; its nonce gives it away (the filter always
    // sends one), so it cannot be replayed as an access token.
    if claims.contains_key("nonce") {
        return Err(JwtError::WrongType(Some("ID token".to_string())).into());
    }

    let sub = string_claim(&claims, "sub")?.map(str::to_owned);
    Ok(VerifiedAccessToken { sub, exp, claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwt::tests::{header, sign, test_jwks};
    use serde_json::{json, Value};

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://op.example";

    fn check_with(
        claims: &Value,
        typ: Option<&str>,
        audiences: &[String],
    ) -> Result<VerifiedAccessToken, AccessTokenError> {
        let token = sign(Algorithm::RS256, &header(Some("rsa"), typ), claims);
        let expect = AccessTokenExpectations {
            issuer: ISS,
            audiences,
            allowed_algorithms: &[Algorithm::RS256],
            now: NOW,
            clock_skew: 10,
        };
        verify_access_token(&token, &test_jwks(), &expect)
    }

    fn apis() -> Vec<String> {
        vec![
            "https://api.example/".into(),
            "https://other.example/".into(),
        ]
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISS, "aud": "https://api.example/", "sub": "alice", "client_id": "rp",
            "iat": NOW, "exp": NOW + 300, "scope": "api:read", "jti": "j"
        })
    }

    fn with(changes: Value) -> Value {
        let mut claims = good_claims();
        if let (Some(obj), Value::Object(changes)) = (claims.as_object_mut(), changes) {
            for (k, v) in changes {
                if v.is_null() {
                    obj.remove(&k);
                } else {
                    obj.insert(k, v);
                }
            }
        }
        claims
    }

    fn check(claims: &Value) -> Result<VerifiedAccessToken, AccessTokenError> {
        check_with(claims, Some("at+jwt"), &apis())
    }

    #[test]
    fn valid_token() {
        let v = check(&good_claims()).unwrap();
        assert_eq!(v.sub.as_deref(), Some("alice"));
        assert_eq!(v.exp, NOW + 300);
        assert_eq!(v.claims.get("scope"), Some(&json!("api:read")));
        for typ in [None, Some("JWT"), Some("application/at+jwt")] {
            assert!(check_with(&good_claims(), typ, &apis()).is_ok(), "{typ:?}");
        }
        let multi = with(json!({"aud": ["https://x.example/", "https://other.example/"]}));
        assert!(check(&multi).is_ok());
        let no_sub = check(&with(json!({"sub": null}))).unwrap();
        assert_eq!(no_sub.sub, None);
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                json!({"aud": "https://api.example"}),
                AccessTokenError::WrongAudience,
            ),
            (json!({"aud": ["rp"]}), AccessTokenError::WrongAudience),
            (json!({"aud": null}), AccessTokenError::MissingClaim("aud")),
            (json!({"exp": NOW - 11}), AccessTokenError::Expired),
            (json!({"exp": null}), AccessTokenError::MissingClaim("exp")),
            (json!({"nbf": NOW + 11}), AccessTokenError::NotYetValid),
            (json!({"iat": NOW + 11}), AccessTokenError::NotYetValid),
            (json!({"nbf": [1]}), AccessTokenError::InvalidClaim("nbf")),
            (
                json!({"iss": "https://evil.example"}),
                AccessTokenError::WrongIssuer("https://evil.example".into()),
            ),
            (json!({"iss": null}), AccessTokenError::MissingClaim("iss")),
            (json!({"sub": 1}), AccessTokenError::InvalidClaim("sub")),
        ];
        for (changes, want) in cases {
            assert_eq!(
                check(&with(changes.clone())).unwrap_err(),
                want,
                "{changes}"
            );
        }
        assert!(check(&with(json!({"exp": NOW - 10, "nbf": NOW + 10}))).is_ok());
        assert_eq!(
            check_with(&good_claims(), Some("at+jwt"), &[]).unwrap_err(),
            AccessTokenError::WrongAudience
        );
    }

    #[test]
    fn id_tokens_are_not_access_tokens() {
        assert_eq!(
            check_with(&with(json!({"nonce": "n"})), None, &apis()).unwrap_err(),
            AccessTokenError::Jwt(JwtError::WrongType(Some("ID token".into())))
        );
    }

    #[test]
    fn other_token_types_are_refused() {
        for typ in ["logout+jwt", "application/secevent+jwt"] {
            assert_eq!(
                check_with(&good_claims(), Some(typ), &apis()).unwrap_err(),
                AccessTokenError::Jwt(JwtError::WrongType(Some(typ.into())))
            );
        }
    }

    #[test]
    fn jwt_shape() {
        let token = sign(Algorithm::RS256, &header(Some("rsa"), None), &good_claims());
        assert!(looks_like_jwt(&token));
        assert!(looks_like_jwt("a.b.c"));
        for not in [
            "",
            "..",
            "a.b",
            "a.b.",
            ".b.c",
            "a.b.c.d",
            "a.b=.c",
            "a b.c.d",
            "a.b.c\n",
            "2YotnFZFEjr1zCsicMWpAA",
            "é.b.c",
        ] {
            assert!(!looks_like_jwt(not), "{not:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let expect = AccessTokenExpectations {
            issuer: ISS,
            audiences: &apis(),
            allowed_algorithms: &Algorithm::ALL,
            now: NOW,
            clock_skew: 10,
        };
        for raw in ["", "a.b.c", "Bearer x", "\u{0}.\u{0}.\u{0}"] {
            assert!(matches!(
                verify_access_token(raw, &test_jwks(), &expect),
                Err(AccessTokenError::Jwt(JwtError::Malformed(_)))
            ));
        }
    }
}
