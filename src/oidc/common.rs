//! Claim readers and log-safe text shared by the token verifiers.

use serde_json::{Map, Value};

/// A claim that is absent or of the wrong JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    Missing(&'static str),
    Invalid(&'static str),
}

/// serde_json's messages can quote the input; this names only the category.
pub(crate) fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

/// Untrusted text bound for logs and error pages: control characters are
/// replaced so a value cannot forge log lines, and length is capped.
pub(crate) fn log_safe(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// A NumericDate (RFC 7519 §2): non-negative, fractions allowed and floored.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, ClaimError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(ClaimError::Invalid(name));
    };
    if let Some(whole) = n.as_u64() {
        return Ok(Some(whole));
    }
    match n.as_f64() {
        // `as` saturates, so an absurd date becomes u64::MAX rather than wrapping.
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f.floor() as u64)),
        _ => Err(ClaimError::Invalid(name)),
    }
}

pub(crate) fn required_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<u64, ClaimError> {
    numeric_date(claims, name)?.ok_or(ClaimError::Missing(name))
}

pub(crate) fn string_claim<'c>(
    claims: &'c Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'c str>, ClaimError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ClaimError::Invalid(name)),
    }
}

/// `aud` as a list (RFC 7519 §4.1.3: a string or an array of strings).
pub(crate) fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, ClaimError> {
    match claims.get("aud") {
        None => Err(ClaimError::Missing("aud")),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(ClaimError::Invalid("aud")))
            .collect(),
        Some(_) => Err(ClaimError::Invalid("aud")),
    }
}

/// Whether a `typ` header names `media_type`. RFC 7515 §4.1.9: compared
/// case-insensitively, and the "application/" prefix may be left out.
pub(crate) fn typ_is(typ: &str, media_type: &str) -> bool {
    let short = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => typ.get(12..).unwrap_or(""),
        _ => typ,
    };
    short.eq_ignore_ascii_case(media_type)
}

/// An explicitly typed JWT (RFC 8725 §3.11), e.g. `logout+jwt` or `at+jwt`:
/// a token of some other kind that must not be accepted in place of this one.
pub(crate) fn is_explicit_type(typ: &str) -> bool {
    typ.len() > 4
        && typ
            .get(typ.len() - 4..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+jwt"))
}

/// Why a token was not issued by the expected issuer for this client.
pub(crate) enum PartyError {
    Claim(ClaimError),
    WrongIssuer(String),
    WrongAudience,
    WrongAuthorizedParty,
}

impl From<ClaimError> for PartyError {
    fn from(e: ClaimError) -> Self {
        PartyError::Claim(e)
    }
}

/// OIDC Core §3.1.3.7 steps 2–5, shared by ID and logout tokens: `iss` is
/// exactly the issuer, `aud` contains the client, several audiences need an
/// `azp`, and any `azp` is the client.
pub(crate) fn check_issued_for(
    claims: &Map<String, Value>,
    issuer: &str,
    client_id: &str,
) -> Result<(), PartyError> {
    let found = string_claim(claims, "iss")?.ok_or(ClaimError::Missing("iss"))?;
    if found != issuer {
        return Err(PartyError::WrongIssuer(log_safe(found, 128)));
    }
    let aud = audiences(claims)?;
    if !aud.contains(&client_id) {
        return Err(PartyError::WrongAudience);
    }
    let azp = string_claim(claims, "azp")?;
    if (aud.len() > 1 && azp.is_none()) || azp.is_some_and(|azp| azp != client_id) {
        return Err(PartyError::WrongAuthorizedParty);
    }
    Ok(())
}

/// Why `iat` is out of bounds.
pub(crate) enum IssuedAtError {
    Claim(ClaimError),
    InFuture,
    TooLongAgo,
}

impl From<ClaimError> for IssuedAtError {
    fn from(e: ClaimError) -> Self {
        IssuedAtError::Claim(e)
    }
}

/// `iat` is required, not in the future and not older than `max_age`, both
/// with `clock_skew`. Returns it.
pub(crate) fn check_issued_at(
    claims: &Map<String, Value>,
    now: u64,
    clock_skew: u64,
    max_age: u64,
) -> Result<u64, IssuedAtError> {
    let iat = required_date(claims, "iat")?;
    if iat > now.saturating_add(clock_skew) {
        return Err(IssuedAtError::InFuture);
    }
    if iat < now.saturating_sub(max_age.saturating_add(clock_skew)) {
        return Err(IssuedAtError::TooLongAgo);
    }
    Ok(iat)
}

/// The error plumbing every token check shares: `source()` for the signature
/// error, and conversions from signature and claim errors into the check's own
/// `Jwt`, `MissingClaim` and `InvalidClaim` variants.
macro_rules! token_error_conversions {
    ($error:ident) => {
        impl std::error::Error for $error {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    Self::Jwt(e) => Some(e),
                    _ => None,
                }
            }
        }

        impl From<$crate::oidc::jwt::JwtError> for $error {
            fn from(e: $crate::oidc::jwt::JwtError) -> Self {
                Self::Jwt(e)
            }
        }

        impl From<$crate::oidc::common::ClaimError> for $error {
            fn from(e: $crate::oidc::common::ClaimError) -> Self {
                match e {
                    $crate::oidc::common::ClaimError::Missing(name) => Self::MissingClaim(name),
                    $crate::oidc::common::ClaimError::Invalid(name) => Self::InvalidClaim(name),
                }
            }
        }
    };
    ($error:ident, issued_for) => {
        $crate::oidc::common::token_error_conversions!($error);

        impl From<$crate::oidc::common::PartyError> for $error {
            fn from(e: $crate::oidc::common::PartyError) -> Self {
                match e {
                    $crate::oidc::common::PartyError::Claim(e) => e.into(),
                    $crate::oidc::common::PartyError::WrongIssuer(found) => {
                        Self::WrongIssuer(found)
                    }
                    $crate::oidc::common::PartyError::WrongAudience => Self::WrongAudience,
                    $crate::oidc::common::PartyError::WrongAuthorizedParty => {
                        Self::WrongAuthorizedParty
                    }
                }
            }
        }

        impl From<$crate::oidc::common::IssuedAtError> for $error {
            fn from(e: $crate::oidc::common::IssuedAtError) -> Self {
                match e {
                    $crate::oidc::common::IssuedAtError::Claim(e) => e.into(),
                    $crate::oidc::common::IssuedAtError::InFuture => Self::IssuedInFuture,
                    $crate::oidc::common::IssuedAtError::TooLongAgo => Self::IssuedTooLongAgo,
                }
            }
        }
    };
}
pub(crate) use token_error_conversions;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn numeric_dates() {
        let c: Map<String, Value> = serde_json::from_str(
            r#"{"a": 5, "b": 5.9, "c": -1, "d": "5", "e": 1e300, "f": -0.5,
                "g": 18446744073709551616, "h": null}"#,
        )
        .unwrap();
        assert_eq!(numeric_date(&c, "a"), Ok(Some(5)));
        assert_eq!(numeric_date(&c, "b"), Ok(Some(5)));
        assert_eq!(numeric_date(&c, "c"), Err(ClaimError::Invalid("c")));
        assert_eq!(numeric_date(&c, "d"), Err(ClaimError::Invalid("d")));
        assert_eq!(numeric_date(&c, "e"), Ok(Some(u64::MAX)));
        assert_eq!(numeric_date(&c, "f"), Err(ClaimError::Invalid("f")));
        assert_eq!(numeric_date(&c, "g"), Ok(Some(u64::MAX)));
        assert_eq!(numeric_date(&c, "h"), Err(ClaimError::Invalid("h")));
        assert_eq!(numeric_date(&c, "zz"), Ok(None));
        assert_eq!(required_date(&c, "zz"), Err(ClaimError::Missing("zz")));
    }

    #[test]
    fn audience_forms() {
        assert_eq!(audiences(&map(json!({"aud": "x"}))), Ok(vec!["x"]));
        assert_eq!(
            audiences(&map(json!({"aud": ["x", "y"]}))),
            Ok(vec!["x", "y"])
        );
        assert_eq!(audiences(&map(json!({"aud": []}))), Ok(vec![]));
        assert_eq!(
            audiences(&map(json!({"aud": ["x", 1]}))),
            Err(ClaimError::Invalid("aud"))
        );
        assert_eq!(
            audiences(&map(json!({"aud": 1}))),
            Err(ClaimError::Invalid("aud"))
        );
        assert_eq!(audiences(&map(json!({}))), Err(ClaimError::Missing("aud")));
    }

    #[test]
    fn type_names() {
        assert!(typ_is("logout+jwt", "logout+jwt"));
        assert!(typ_is("application/Logout+JWT", "logout+jwt"));
        assert!(!typ_is("application/", "logout+jwt"));
        assert!(!typ_is("JWT", "logout+jwt"));
        assert!(is_explicit_type("at+jwt"));
        assert!(is_explicit_type("application/logout+JWT"));
        assert!(!is_explicit_type("JWT"));
        assert!(!is_explicit_type("+jwt"));
        assert!(!is_explicit_type("éjwt"));
    }

    #[test]
    fn log_safe_text() {
        assert_eq!(log_safe("abc", 5), "abc");
        assert_eq!(log_safe("abcdef", 3), "abc…");
        assert_eq!(log_safe("a\nb\u{1b}", 10), "a?b?");
        assert_eq!(log_safe("ééé", 2), "éé…");
    }
}
