//! ID token validation, OIDC Core §3.1.3.7, numbered as in the spec.

use subtle::ConstantTimeEq;

use super::common::{
    check_issued_at, check_issued_for, is_explicit_type, log_safe, numeric_date, required_date,
    string_claim, ClaimError,
};
use super::jwks::Jwks;
use super::jwt::{verify_signature, Algorithm, JwtError};

pub enum NonceCheck<'a> {
    /// Authentication response: the claim must be present and equal.
    Equals(&'a str),
    /// Refresh response (§12.2): a nonce, if present, is not checked.
    NotRequired,
}

pub struct IdTokenExpectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: NonceCheck<'a>,
    pub allowed_algorithms: &'a [Algorithm],
    pub now: u64,
    pub clock_skew: u64,
    /// `iat` older than this (seconds) is refused.
    pub max_age: u64,
}

/// The claims the relying party needs, from a token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedIdToken {
    pub sub: String,
    pub sid: Option<String>,
    pub exp: u64,
    pub iat: u64,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    Jwt(JwtError),
    MissingClaim(&'static str),
    /// The claim is present but of the wrong JSON type (or an empty `sub`).
    InvalidClaim(&'static str),
    WrongIssuer(String),
    WrongAudience,
    WrongAuthorizedParty,
    Expired,
    IssuedInFuture,
    IssuedTooLongAgo,
    NonceMismatch,
}

impl std::fmt::Display for IdTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdTokenError::Jwt(e) => write!(f, "ID token rejected: {e}"),
            IdTokenError::MissingClaim(name) => write!(f, "ID token has no {name:?} claim"),
            IdTokenError::InvalidClaim(name) => {
                write!(f, "ID token claim {name:?} has an invalid value")
            }
            IdTokenError::WrongIssuer(found) => {
                write!(f, "ID token issuer {found:?} is not the configured issuer")
            }
            IdTokenError::WrongAudience => {
                f.write_str("ID token audience does not include this client")
            }
            IdTokenError::WrongAuthorizedParty => {
                f.write_str("ID token authorized party (azp) is not this client")
            }
            IdTokenError::Expired => f.write_str("ID token has expired"),
            IdTokenError::IssuedInFuture => f.write_str("ID token is issued in the future"),
            IdTokenError::IssuedTooLongAgo => f.write_str("ID token was issued too long ago"),
            IdTokenError::NonceMismatch => {
                f.write_str("ID token nonce does not match the login request")
            }
        }
    }
}

super::common::token_error_conversions!(IdTokenError, issued_for);

pub fn verify_id_token(
    raw: &str,
    jwks: &Jwks,
    expect: &IdTokenExpectations<'_>,
) -> Result<VerifiedIdToken, IdTokenError> {
    // 1. Encrypted ID tokens (JWE) are not supported: a JWE has five parts and is
    //    refused as malformed by the signature check below.
    // 6.–8. The signature is checked first, with the key from the provider's JWKS and
    //    only the configured algorithms (7.), so no claim below is trusted unsigned. MAC
    //    algorithms (8.) are never allowed.
    let jwt = verify_signature(raw, jwks, expect.allowed_algorithms)?;
    // An explicitly typed JWT (logout+jwt, at+jwt) is some other token: refusing it
    // stops a logout or access token from being replayed as an ID token.
    if let Some(typ) = jwt.typ.as_deref().filter(|t| is_explicit_type(t)) {
        return Err(JwtError::WrongType(Some(log_safe(typ, 32))).into());
    }
    let claims = jwt.claims;

    // 2. The issuer must exactly match the configured one. 3. The audience must
    // contain this client. 4. With several audiences an azp is required, and 5.
    // any azp must be this client.
    check_issued_for(&claims, expect.issuer, expect.client_id)?;

    // 9. The current time must be before exp (allowing for clock skew).
    let exp = required_date(&claims, "exp")?;
    if expect.now > exp.saturating_add(expect.clock_skew) {
        return Err(IdTokenError::Expired);
    }

    // 10. iat bounds how old a token may be; one from the future means a broken clock
    //     or a forged date.
    let iat = check_issued_at(&claims, expect.now, expect.clock_skew, expect.max_age)?;
    // nbf is optional in OIDC but, when present, still binds (RFC 7519 §4.1.5).
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if nbf > expect.now.saturating_add(expect.clock_skew) {
            return Err(IdTokenError::IssuedInFuture);
        }
    }

    // 11. The nonce binds the token to this browser's login request. Constant time,
    //     since the expected value is a secret the attacker would like to learn.
    match expect.nonce {
        NonceCheck::Equals(expected) => {
            let nonce = string_claim(&claims, "nonce")?.ok_or(ClaimError::Missing("nonce"))?;
            if !bool::from(nonce.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(IdTokenError::NonceMismatch);
            }
        }
        NonceCheck::NotRequired => {}
    }

    // 12.–13. acr and auth_time are not requested by this relying party.

    // §2: sub is required, and it is the user's identity here, so it must be usable.
    let sub = string_claim(&claims, "sub")?.ok_or(ClaimError::Missing("sub"))?;
    if sub.is_empty() {
        return Err(IdTokenError::InvalidClaim("sub"));
    }
    let sub = sub.to_owned();
    let sid = string_claim(&claims, "sid")?.map(str::to_owned);

    Ok(VerifiedIdToken {
        sub,
        sid,
        exp,
        iat,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwt::tests::{header, sign, sign_raw, sign_rsa, test_jwks};
    use serde_json::{json, Value};

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://op.example/";
    const CLIENT: &str = "rp";

    fn expect<'a>(nonce: NonceCheck<'a>) -> IdTokenExpectations<'a> {
        IdTokenExpectations {
            issuer: ISS,
            client_id: CLIENT,
            nonce,
            allowed_algorithms: &Algorithm::ALL,
            now: NOW,
            clock_skew: 60,
            max_age: 600,
        }
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISS, "aud": CLIENT, "sub": "alice", "sid": "s-1",
            "exp": NOW + 3600, "iat": NOW, "nonce": "n-123"
        })
    }

    /// The good claims with `changes` merged in; a `null` change removes the claim.
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

    fn check(claims: &Value) -> Result<VerifiedIdToken, IdTokenError> {
        let token = sign(Algorithm::RS256, &header(Some("rsa"), None), claims);
        verify_id_token(&token, &test_jwks(), &expect(NonceCheck::Equals("n-123")))
    }

    #[test]
    fn valid_token_for_each_algorithm() {
        let jwks = test_jwks();
        for alg in Algorithm::ALL {
            let kid = match alg {
                Algorithm::ES256 => "ec",
                Algorithm::EdDSA => "ed",
                _ => "rsa",
            };
            let token = sign(alg, &header(Some(kid), Some("JWT")), &good_claims());
            let v = verify_id_token(&token, &jwks, &expect(NonceCheck::Equals("n-123")))
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(v.sub, "alice");
            assert_eq!(v.sid.as_deref(), Some("s-1"));
            assert_eq!(v.exp, NOW + 3600);
            assert_eq!(v.iat, NOW);
            assert_eq!(Value::Object(v.claims), good_claims());
        }
    }

    #[test]
    fn signature_problems_surface_as_jwt_errors() {
        let token = sign_rsa(1, &header(Some("rsa"), None), &good_claims());
        let err = verify_id_token(&token, &test_jwks(), &expect(NonceCheck::NotRequired));
        assert_eq!(err.unwrap_err(), IdTokenError::Jwt(JwtError::BadSignature));
        let only_es = IdTokenExpectations {
            allowed_algorithms: &[Algorithm::ES256],
            ..expect(NonceCheck::NotRequired)
        };
        let token = sign(Algorithm::RS256, &header(Some("rsa"), None), &good_claims());
        assert_eq!(
            verify_id_token(&token, &test_jwks(), &only_es).unwrap_err(),
            IdTokenError::Jwt(JwtError::AlgorithmNotAllowed("RS256".into()))
        );
    }

    #[test]
    fn other_token_types_are_refused() {
        for typ in ["logout+jwt", "at+jwt", "application/at+JWT"] {
            let token = sign(
                Algorithm::RS256,
                &header(Some("rsa"), Some(typ)),
                &good_claims(),
            );
            let err = verify_id_token(&token, &test_jwks(), &expect(NonceCheck::Equals("n-123")));
            assert_eq!(
                err.unwrap_err(),
                IdTokenError::Jwt(JwtError::WrongType(Some(typ.into())))
            );
        }
    }

    #[test]
    fn issuer() {
        assert_eq!(
            check(&with(json!({"iss": "https://op.example"}))).unwrap_err(),
            IdTokenError::WrongIssuer("https://op.example".into())
        );
        assert_eq!(
            check(&with(json!({"iss": null}))).unwrap_err(),
            IdTokenError::MissingClaim("iss")
        );
        assert_eq!(
            check(&with(json!({"iss": [ISS]}))).unwrap_err(),
            IdTokenError::InvalidClaim("iss")
        );
    }

    #[test]
    fn audience_and_authorized_party() {
        assert!(check(&with(json!({"aud": [CLIENT]}))).is_ok());
        assert!(check(&with(json!({"aud": [CLIENT, "api"], "azp": CLIENT}))).is_ok());
        assert!(check(&with(json!({"azp": CLIENT}))).is_ok());
        let cases = [
            (json!({"aud": "other"}), IdTokenError::WrongAudience),
            (
                json!({"aud": ["other", "api"], "azp": CLIENT}),
                IdTokenError::WrongAudience,
            ),
            (json!({"aud": []}), IdTokenError::WrongAudience),
            (json!({"aud": "rp2"}), IdTokenError::WrongAudience),
            (json!({"aud": null}), IdTokenError::MissingClaim("aud")),
            (json!({"aud": 5}), IdTokenError::InvalidClaim("aud")),
            (
                json!({"aud": [CLIENT, "api"]}),
                IdTokenError::WrongAuthorizedParty,
            ),
            (
                json!({"aud": [CLIENT, "api"], "azp": "api"}),
                IdTokenError::WrongAuthorizedParty,
            ),
            (json!({"azp": "other"}), IdTokenError::WrongAuthorizedParty),
            (json!({"azp": 1}), IdTokenError::InvalidClaim("azp")),
        ];
        for (changes, want) in cases {
            assert_eq!(
                check(&with(changes.clone())).unwrap_err(),
                want,
                "{changes}"
            );
        }
    }

    #[test]
    fn times() {
        assert!(
            check(&with(json!({"exp": NOW - 59}))).is_ok(),
            "within skew"
        );
        assert!(
            check(&with(json!({"iat": NOW + 60}))).is_ok(),
            "within skew"
        );
        assert!(
            check(&with(json!({"iat": NOW - 660}))).is_ok(),
            "max_age + skew"
        );
        assert!(check(&with(json!({"exp": (NOW + 10) as f64 + 0.5}))).is_ok());
        let cases = [
            (json!({"exp": NOW - 61}), IdTokenError::Expired),
            (json!({"exp": null}), IdTokenError::MissingClaim("exp")),
            (
                json!({"exp": "9999999999"}),
                IdTokenError::InvalidClaim("exp"),
            ),
            (json!({"exp": -1}), IdTokenError::InvalidClaim("exp")),
            (json!({"iat": NOW + 61}), IdTokenError::IssuedInFuture),
            (json!({"iat": NOW - 661}), IdTokenError::IssuedTooLongAgo),
            (json!({"iat": null}), IdTokenError::MissingClaim("iat")),
            (json!({"iat": true}), IdTokenError::InvalidClaim("iat")),
            (json!({"iat": 1e300}), IdTokenError::IssuedInFuture),
            (json!({"nbf": NOW + 61}), IdTokenError::IssuedInFuture),
            (json!({"nbf": "x"}), IdTokenError::InvalidClaim("nbf")),
        ];
        for (changes, want) in cases {
            assert_eq!(
                check(&with(changes.clone())).unwrap_err(),
                want,
                "{changes}"
            );
        }
        // Huge exp saturates instead of overflowing.
        assert!(check(&with(json!({"exp": 1e300}))).is_ok());
        assert!(check(&with(json!({"exp": u64::MAX}))).is_ok());
    }

    #[test]
    fn nonce() {
        assert_eq!(
            check(&with(json!({"nonce": "n-124"}))).unwrap_err(),
            IdTokenError::NonceMismatch
        );
        assert_eq!(
            check(&with(json!({"nonce": "n-12"}))).unwrap_err(),
            IdTokenError::NonceMismatch
        );
        assert_eq!(
            check(&with(json!({"nonce": null}))).unwrap_err(),
            IdTokenError::MissingClaim("nonce")
        );
        assert_eq!(
            check(&with(json!({"nonce": 5}))).unwrap_err(),
            IdTokenError::InvalidClaim("nonce")
        );
        // A refresh response may carry any nonce, or none.
        let jwks = test_jwks();
        for claims in [
            with(json!({"nonce": null})),
            with(json!({"nonce": "other"})),
        ] {
            let token = sign(Algorithm::RS256, &header(Some("rsa"), None), &claims);
            assert!(verify_id_token(&token, &jwks, &expect(NonceCheck::NotRequired)).is_ok());
        }
    }

    #[test]
    fn subject_and_session() {
        assert_eq!(
            check(&with(json!({"sub": null}))).unwrap_err(),
            IdTokenError::MissingClaim("sub")
        );
        assert_eq!(
            check(&with(json!({"sub": ""}))).unwrap_err(),
            IdTokenError::InvalidClaim("sub")
        );
        assert_eq!(
            check(&with(json!({"sub": 42}))).unwrap_err(),
            IdTokenError::InvalidClaim("sub")
        );
        assert_eq!(check(&with(json!({"sid": null}))).unwrap().sid, None);
        assert_eq!(
            check(&with(json!({"sid": {"x": 1}}))).unwrap_err(),
            IdTokenError::InvalidClaim("sid")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let jwks = test_jwks();
        for raw in ["", "a.b", "a.b.c", "...", "\u{0}", "eyJ.eyJ.eyJ"] {
            assert!(matches!(
                verify_id_token(raw, &jwks, &expect(NonceCheck::Equals("n"))),
                Err(IdTokenError::Jwt(JwtError::Malformed(_)))
            ));
        }
        // Signed but not an object of claims.
        for payload in [
            "[1]",
            "\"s\"",
            "null",
            "1e400",
            "{\"a\":1,",
            "{\"exp\":1e999}",
        ] {
            let token = sign_raw(r#"{"alg":"RS256","kid":"rsa"}"#, payload);
            assert!(matches!(
                verify_id_token(&token, &jwks, &expect(NonceCheck::NotRequired)),
                Err(IdTokenError::Jwt(JwtError::Malformed(_)))
            ));
        }
    }

    /// Tokens and keys made by an independent implementation (node `jose`, the
    /// library oidc-provider signs with), so this is not jwt-compact agreeing
    /// with itself.
    #[test]
    fn interoperates_with_jose() {
        let fixture: Value =
            serde_json::from_str(include_str!("testdata/jose-tokens.json")).unwrap();
        let jwks = Jwks::parse(fixture.to_string().as_bytes()).unwrap();
        assert_eq!(jwks.len(), 4);
        let expect = IdTokenExpectations {
            issuer: "http://127.0.0.1:9601",
            client_id: "rp",
            nonce: NonceCheck::Equals("n"),
            allowed_algorithms: &Algorithm::ALL,
            now: 1_700_000_100,
            clock_skew: 0,
            max_age: 3600,
        };
        for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
            let token = fixture["tokens"][alg].as_str().unwrap();
            let v = verify_id_token(token, &jwks, &expect).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!((v.sub.as_str(), v.sid.as_deref()), ("alice", Some("s")));
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            IdTokenError::WrongIssuer("https://evil\n".into()).to_string(),
            "ID token issuer \"https://evil\\n\" is not the configured issuer"
        );
        assert_eq!(
            IdTokenError::MissingClaim("nonce").to_string(),
            "ID token has no \"nonce\" claim"
        );
        assert_eq!(
            IdTokenError::Jwt(JwtError::BadSignature).to_string(),
            "ID token rejected: JWT signature is invalid"
        );
        let err = check(&with(json!({"iss": "https://evil\n"}))).unwrap_err();
        assert_eq!(err, IdTokenError::WrongIssuer("https://evil?".into()));
    }
}
