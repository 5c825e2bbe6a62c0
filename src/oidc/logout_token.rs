//! Logout token validation, OpenID Connect Back-Channel Logout 1.0 §2.6.

use serde_json::Value;

use super::common::{
    check_issued_at, check_issued_for, log_safe, numeric_date, string_claim, typ_is, ClaimError,
};
use super::jwks::Jwks;
use super::jwt::{verify_signature, Algorithm, JwtError};

/// The `events` member that makes a JWT a logout token (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

pub struct LogoutTokenExpectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub allowed_algorithms: &'a [Algorithm],
    pub now: u64,
    pub clock_skew: u64,
    /// `iat` older than this (seconds) is refused.
    pub max_age: u64,
}

/// A logout token that passed every check. Replay protection (`jti`) and matching
/// `sub`/`sid` to sessions are the caller's job (§2.6 steps 7–9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogoutToken {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    pub iat: u64,
    pub exp: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutTokenError {
    Jwt(JwtError),
    MissingClaim(&'static str),
    /// The claim is present but of the wrong JSON type, or an empty string.
    InvalidClaim(&'static str),
    WrongIssuer(String),
    WrongAudience,
    WrongAuthorizedParty,
    Expired,
    IssuedInFuture,
    IssuedTooLongAgo,
    /// `events` lacks the back-channel logout member, or its value is not an object.
    NotALogoutEvent,
    /// A `nonce` is present, which §2.4 forbids so an ID token cannot pass as one.
    NoncePresent,
    /// Neither `sub` nor `sid`: the token names no one to log out.
    NoSubjectOrSession,
}

impl std::fmt::Display for LogoutTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Jwt(e) => write!(f, "logout token rejected: {e}"),
            Self::MissingClaim(name) => write!(f, "logout token has no {name:?} claim"),
            Self::InvalidClaim(name) => {
                write!(f, "logout token claim {name:?} has an invalid value")
            }
            Self::WrongIssuer(found) => {
                write!(
                    f,
                    "logout token issuer {found:?} is not the configured issuer"
                )
            }
            Self::WrongAudience => {
                f.write_str("logout token audience does not include this client")
            }
            Self::WrongAuthorizedParty => {
                f.write_str("logout token authorized party (azp) is not this client")
            }
            Self::Expired => f.write_str("logout token has expired"),
            Self::IssuedInFuture => f.write_str("logout token is issued in the future"),
            Self::IssuedTooLongAgo => f.write_str("logout token was issued too long ago"),
            Self::NotALogoutEvent => {
                f.write_str("logout token events claim has no back-channel logout event")
            }
            Self::NoncePresent => f.write_str("logout token must not contain a nonce claim"),
            Self::NoSubjectOrSession => f.write_str("logout token has neither sub nor sid"),
        }
    }
}

super::common::token_error_conversions!(LogoutTokenError, issued_for);

pub fn verify_logout_token(
    raw: &str,
    jwks: &Jwks,
    expect: &LogoutTokenExpectations<'_>,
) -> Result<VerifiedLogoutToken, LogoutTokenError> {
    // 1. Encrypted logout tokens are not supported (a JWE is refused as malformed).
    // 2. Signature as for ID tokens: provider key, allow-listed algorithms only.
    let jwt = verify_signature(raw, jwks, expect.allowed_algorithms)?;
    // §2.4 asks providers to type logout tokens, but §4.1 warns that requiring
    // it breaks most deployments: no typ and RFC 7519's generic `JWT` are untyped
    // tokens (real providers send them). Any other explicit type is some other
    // token; `events` and the ban on `nonce` keep an ID token out.
    if let Some(typ) = jwt.typ.as_deref() {
        if !typ_is(typ, "logout+jwt") && !typ_is(typ, "jwt") {
            return Err(JwtError::WrongType(Some(log_safe(typ, 32))).into());
        }
    }
    let claims = jwt.claims;

    // 3. iss, aud, iat and exp are validated as for ID tokens (OIDC Core §3.1.3.7).
    check_issued_for(&claims, expect.issuer, expect.client_id)?;
    let iat = check_issued_at(&claims, expect.now, expect.clock_skew, expect.max_age)?;
    let exp = numeric_date(&claims, "exp")?;
    if exp.is_some_and(|exp| expect.now > exp.saturating_add(expect.clock_skew)) {
        return Err(LogoutTokenError::Expired);
    }

    // 4. sub, sid, or both.
    let non_empty = |name: &'static str| -> Result<Option<String>, ClaimError> {
        match string_claim(&claims, name)? {
            Some("") => Err(ClaimError::Invalid(name)),
            other => Ok(other.map(str::to_owned)),
        }
    };
    let sub = non_empty("sub")?;
    let sid = non_empty("sid")?;
    if sub.is_none() && sid.is_none() {
        return Err(LogoutTokenError::NoSubjectOrSession);
    }

    // 5. events must hold the back-channel logout member with an object value.
    match claims.get("events") {
        None => return Err(LogoutTokenError::MissingClaim("events")),
        Some(Value::Object(events)) => {
            if !events
                .get(BACKCHANNEL_LOGOUT_EVENT)
                .is_some_and(Value::is_object)
            {
                return Err(LogoutTokenError::NotALogoutEvent);
            }
        }
        Some(_) => return Err(LogoutTokenError::InvalidClaim("events")),
    }

    // 6. No nonce, whatever its value.
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::NoncePresent);
    }

    // 7. jti is required so the caller can refuse replays.
    let jti = non_empty("jti")?.ok_or(ClaimError::Missing("jti"))?;

    Ok(VerifiedLogoutToken {
        sub,
        sid,
        jti,
        iat,
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwt::tests::{header, sign, test_jwks};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://op.example";
    const CLIENT: &str = "rp";

    fn expect() -> LogoutTokenExpectations<'static> {
        LogoutTokenExpectations {
            issuer: ISS,
            client_id: CLIENT,
            allowed_algorithms: &[Algorithm::RS256, Algorithm::ES256],
            now: NOW,
            clock_skew: 30,
            max_age: 300,
        }
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISS, "aud": CLIENT, "iat": NOW, "exp": NOW + 120, "jti": "j-1",
            "sub": "alice", "sid": "s-1",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}}
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

    fn check_typ(
        claims: &Value,
        typ: Option<&str>,
    ) -> Result<VerifiedLogoutToken, LogoutTokenError> {
        let token = sign(Algorithm::RS256, &header(Some("rsa"), typ), claims);
        verify_logout_token(&token, &test_jwks(), &expect())
    }

    fn check(claims: &Value) -> Result<VerifiedLogoutToken, LogoutTokenError> {
        check_typ(claims, Some("logout+jwt"))
    }

    #[test]
    fn valid_token() {
        let want = VerifiedLogoutToken {
            sub: Some("alice".into()),
            sid: Some("s-1".into()),
            jti: "j-1".into(),
            iat: NOW,
            exp: Some(NOW + 120),
        };
        assert_eq!(check(&good_claims()), Ok(want.clone()));
        assert_eq!(check_typ(&good_claims(), None), Ok(want.clone()));
        for typ in [
            "application/logout+jwt",
            "Logout+JWT",
            "JWT",
            "jwt",
            "application/jwt",
        ] {
            assert_eq!(
                check_typ(&good_claims(), Some(typ)),
                Ok(want.clone()),
                "{typ}"
            );
        }
        let token = sign(
            Algorithm::ES256,
            &header(Some("ec"), Some("logout+jwt")),
            &good_claims(),
        );
        assert!(verify_logout_token(&token, &test_jwks(), &expect()).is_ok());

        let only_sid = check(&with(json!({"sub": null, "exp": null}))).unwrap();
        assert_eq!(
            (only_sid.sub, only_sid.sid, only_sid.exp),
            (None, Some("s-1".into()), None)
        );
        let only_sub = check(&with(json!({"sid": null}))).unwrap();
        assert_eq!((only_sub.sub, only_sub.sid), (Some("alice".into()), None));
        let event_with_members =
            json!({"events": {BACKCHANNEL_LOGOUT_EVENT: {"x": 1}, "other": 2}});
        assert!(check(&with(event_with_members)).is_ok());
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                json!({"events": null}),
                LogoutTokenError::MissingClaim("events"),
            ),
            (json!({"events": {}}), LogoutTokenError::NotALogoutEvent),
            (
                json!({"events": {BACKCHANNEL_LOGOUT_EVENT: true}}),
                LogoutTokenError::NotALogoutEvent,
            ),
            (
                json!({"events": {"http://other": {}}}),
                LogoutTokenError::NotALogoutEvent,
            ),
            (
                json!({"events": [BACKCHANNEL_LOGOUT_EVENT]}),
                LogoutTokenError::InvalidClaim("events"),
            ),
            (json!({"nonce": "n"}), LogoutTokenError::NoncePresent),
            (json!({"nonce": ""}), LogoutTokenError::NoncePresent),
            (
                json!({"sub": null, "sid": null}),
                LogoutTokenError::NoSubjectOrSession,
            ),
            (json!({"sub": ""}), LogoutTokenError::InvalidClaim("sub")),
            (json!({"sid": 3}), LogoutTokenError::InvalidClaim("sid")),
            (json!({"aud": "other"}), LogoutTokenError::WrongAudience),
            (
                json!({"aud": ["other", CLIENT]}),
                LogoutTokenError::WrongAuthorizedParty,
            ),
            (
                json!({"azp": "other"}),
                LogoutTokenError::WrongAuthorizedParty,
            ),
            (json!({"aud": null}), LogoutTokenError::MissingClaim("aud")),
            (
                json!({"iss": "https://op.example/"}),
                LogoutTokenError::WrongIssuer("https://op.example/".into()),
            ),
            (json!({"iat": null}), LogoutTokenError::MissingClaim("iat")),
            (json!({"iat": NOW + 31}), LogoutTokenError::IssuedInFuture),
            (
                json!({"iat": NOW - 331}),
                LogoutTokenError::IssuedTooLongAgo,
            ),
            (json!({"exp": NOW - 31}), LogoutTokenError::Expired),
            (
                json!({"exp": "soon"}),
                LogoutTokenError::InvalidClaim("exp"),
            ),
            (json!({"jti": null}), LogoutTokenError::MissingClaim("jti")),
            (json!({"jti": ""}), LogoutTokenError::InvalidClaim("jti")),
        ];
        for (changes, want) in cases {
            assert_eq!(check(&with(changes.clone())), Err(want), "{changes}");
        }
    }

    #[test]
    fn other_token_types_are_refused() {
        for typ in [
            "at+jwt",
            "logout",
            "JOSE",
            "application/at+jwt",
            "jwt+logout",
            "",
        ] {
            assert_eq!(
                check_typ(&good_claims(), Some(typ)),
                Err(LogoutTokenError::Jwt(JwtError::WrongType(Some(typ.into()))))
            );
        }
        // An ID token (nonce, no events) signed by the same provider is no logout token.
        let id_token = json!({"iss": ISS, "aud": CLIENT, "iat": NOW, "exp": NOW + 60,
                              "sub": "alice", "nonce": "n"});
        assert!(check_typ(&id_token, None).is_err());
        assert!(check_typ(&id_token, Some("JWT")).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        for raw in ["", "a.b", "x.y.z", "logout_token=abc"] {
            assert!(matches!(
                verify_logout_token(raw, &test_jwks(), &expect()),
                Err(LogoutTokenError::Jwt(JwtError::Malformed(_)))
            ));
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            LogoutTokenError::NoncePresent.to_string(),
            "logout token must not contain a nonce claim"
        );
        assert_eq!(
            LogoutTokenError::Jwt(JwtError::WrongType(Some("at+jwt".into()))).to_string(),
            "logout token rejected: JWT type (typ header) \"at+jwt\" is not acceptable here"
        );
    }
}
