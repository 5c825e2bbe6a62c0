//! Bearer JWT access token validation for APIs (RFC 9068 profile, loosely).

use super::common::{
    audiences, is_explicit_type, log_safe, numeric_date, required_date, string_claim, typ_is,
    ClaimError,
};
use super::jwks::Jwks;
use super::jwt::{verify_signature, Algorithm, JwtError};

pub struct AccessTokenExpectations<'a> {
    pub issuer: &'a str,
    /// Our client id: the audience of our ID tokens, which must not pass here.
    pub client_id: &'a str,
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
    let typed_access_token = jwt.typ.as_deref().is_some_and(|t| typ_is(t, "at+jwt"));
    if let Some(typ) = jwt.typ.as_deref() {
        if is_explicit_type(typ) && !typed_access_token {
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

    // A `nonce` only ever binds an ID token to a login: no access token, typed
    // `at+jwt` or not, carries one.
    if claims.contains_key("nonce")
        || (!typed_access_token && looks_like_id_token(&claims, &aud, expect.client_id))
    {
        return Err(JwtError::WrongType(Some("ID token".to_string())).into());
    }

    let sub = string_claim(&claims, "sub")?.map(str::to_owned);
    Ok(VerifiedAccessToken { sub, exp, claims })
}

/// An untyped token that is an ID token, not an access token. An ID token for
/// our own client has our client id as audience, which is also the default API
/// audience, and ID tokens leak (`id_token_hint` in logout URLs, an upstream
/// sent the ID token), and one from a refresh need not carry the `nonce` that
/// always gives one away. So with our client id as audience, a token is an
/// access token only if it names what it grants or to whom (`scope`, `scp`,
/// `client_id` as RFC 9068 requires, Okta's `cid`) and carries none of the
/// claims only ID tokens carry (`at_hash`, `c_hash`, `s_hash`). RFC 9068
/// `at+jwt` tokens are access tokens by their type, whatever these claims
/// (a `nonce` is refused before, whatever the type).
fn looks_like_id_token(
    claims: &serde_json::Map<String, serde_json::Value>,
    aud: &[&str],
    client_id: &str,
) -> bool {
    let has = |name: &str| claims.contains_key(name);
    if has("nonce") {
        return true;
    }
    if !aud.contains(&client_id) {
        return false;
    }
    let grants_something = has("scope") || has("scp") || has("client_id") || has("cid");
    !grants_something || has("at_hash") || has("c_hash") || has("s_hash")
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
            client_id: "rp",
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
        merged(good_claims(), changes)
    }

    /// `claims` with `changes` applied; a null removes the claim.
    fn merged(mut claims: Value, changes: Value) -> Value {
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
        let id_token = AccessTokenError::Jwt(JwtError::WrongType(Some("ID token".into())));
        assert_eq!(
            check_with(&with(json!({"nonce": "n"})), None, &apis()).unwrap_err(),
            id_token
        );
        // Found by the jwt_signed fuzz target: a type does not make a token with
        // a nonce an access token.
        assert_eq!(
            check_with(&with(json!({"nonce": "n"})), Some("at+jwt"), &apis()).unwrap_err(),
            id_token
        );
        // With our client id as audience (the default API audience), an ID
        // token without nonce, e.g. from a refresh, is told by its other claims.
        let ours = vec!["rp".to_string()];
        let id_claims = |changes: Value| {
            let id_token = with(json!({
                "aud": "rp", "azp": "rp", "auth_time": NOW - 60,
                "scope": null, "client_id": null, "jti": null
            }));
            merged(id_token, changes)
        };
        let refreshed = json!({
            "iss": ISS, "sub": "alice", "aud": "rp", "iat": NOW, "exp": NOW + 3600,
            "sid": "s1", "email": "alice@example.test"
        });
        for (name, claims) in [
            ("a bare ID token from a refresh", refreshed),
            ("auth_time and azp", id_claims(json!({}))),
            (
                "at_hash and a scope",
                id_claims(json!({"at_hash": "x", "scope": "openid"})),
            ),
            (
                "at_hash",
                id_claims(json!({"at_hash": "x", "auth_time": null})),
            ),
            (
                "c_hash",
                id_claims(json!({"c_hash": "x", "auth_time": null})),
            ),
            (
                "s_hash",
                id_claims(json!({"s_hash": "x", "auth_time": null})),
            ),
        ] {
            for typ in [None, Some("JWT")] {
                assert_eq!(
                    check_with(&claims, typ, &ours).unwrap_err(),
                    id_token,
                    "{name} {typ:?}"
                );
            }
            // An RFC 9068 access token is one by its type.
            assert!(check_with(&claims, Some("at+jwt"), &ours).is_ok(), "{name}");
        }
        // Access tokens for our client id with a scope are not ID tokens.
        let scoped = id_claims(json!({"scope": "openid api"}));
        assert!(check_with(&scoped, None, &ours).is_ok());
        let scp = id_claims(json!({"scp": ["api"]}));
        assert!(check_with(&scp, None, &ours).is_ok());
        // For another audience, only the nonce counts: those are not our ID tokens.
        let for_api =
            with(json!({"azp": "rp", "auth_time": NOW - 60, "at_hash": "x", "scope": null}));
        assert!(check_with(&for_api, None, &apis()).is_ok());
    }

    #[test]
    fn okta_custom_authorization_server_tokens_pass() {
        // What Okta's custom authorization servers send: no typ header,
        // aud api://default, cid (client), scp (a list), uid.
        let claims = json!({
            "ver": 1, "jti": "AT.x", "iss": ISS, "aud": "api://default", "iat": NOW,
            "exp": NOW + 3600, "cid": "rp", "uid": "00u1", "scp": ["openid", "email"],
            "auth_time": NOW - 60, "sub": "alice@example.com"
        });
        let audiences = vec!["api://default".to_string()];
        assert!(check_with(&claims, None, &audiences).is_ok());
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
            client_id: "rp",
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
