//! Signature verification of compact JWS tokens against a [`Jwks`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::AlgorithmSignature as _;

use super::common::log_safe;
use super::jwks::{Jwks, KeyMaterial, VerificationKey};

/// Far above any real ID or logout token; bounds the work an attacker can ask for.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Signature algorithms a relying party may allow. `none` and the HMAC family
/// are deliberately absent: they cannot be verified with a provider's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 8] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (RFC 7518 §3.1, RFC 8037 §3.1); exact, case-sensitive match.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|alg| alg.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(String),
    /// The header's `alg` is not in the allow-list (this includes `none` and `HS*`).
    AlgorithmNotAllowed(String),
    /// No key in the set has this `kid`: the provider may have rotated its keys.
    UnknownKid(String),
    /// No `kid` and no single key of the right type and algorithm.
    NoMatchingKey,
    BadSignature,
    /// The header's `typ` is not the expected one.
    WrongType(Option<String>),
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed(reason) => write!(f, "malformed JWT: {reason}"),
            JwtError::AlgorithmNotAllowed(alg) => {
                write!(f, "JWT algorithm {alg:?} is not allowed")
            }
            JwtError::UnknownKid(kid) => {
                write!(f, "JWT key id {kid:?} is not in the provider's key set")
            }
            JwtError::NoMatchingKey => {
                f.write_str("no single key in the provider's key set fits the JWT's algorithm")
            }
            JwtError::BadSignature => f.write_str("JWT signature is invalid"),
            JwtError::WrongType(Some(typ)) => {
                write!(f, "JWT type (typ header) {typ:?} is not acceptable here")
            }
            JwtError::WrongType(None) => f.write_str("JWT has no type (typ header)"),
        }
    }
}

impl std::error::Error for JwtError {}

/// A token whose signature checked out. Only [`verify_signature`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// The JOSE header as sent; nothing in it is trusted until the signature is.
#[derive(serde::Deserialize)]
struct UnverifiedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

fn malformed(reason: &str) -> JwtError {
    JwtError::Malformed(reason.to_owned())
}

pub fn verify_signature(
    token: &str,
    jwks: &Jwks,
    allowed: &[Algorithm],
) -> Result<VerifiedJwt, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not a compact JWS of three dot-separated parts"));
    };

    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| malformed("header is not base64url"))?;
    let header: UnverifiedHeader = serde_json::from_slice(&header_json)
        .map_err(|_| malformed("header is not a JSON object with string alg/kid/typ"))?;
    // RFC 7515 §4.1.11: extensions we do not understand must make the token invalid,
    // and this verifier understands none (e.g. unencoded payloads, RFC 7797).
    if header.crit.is_some() {
        return Err(malformed("unsupported critical header parameters"));
    }

    // Only allow-listed asymmetric algorithms exist past this point, so `none`,
    // HS256-with-the-public-key and similar confusions cannot be reached.
    let algorithm = Algorithm::from_name(&header.alg)
        .filter(|alg| allowed.contains(alg))
        .ok_or_else(|| JwtError::AlgorithmNotAllowed(log_safe(&header.alg, 32)))?;

    let candidates = candidate_keys(jwks, algorithm, header.kid.as_deref())?;

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| malformed("signature is not base64url"))?;
    let signed_len = header_b64.len() + 1 + payload_b64.len();
    let signed = token
        .as_bytes()
        .get(..signed_len)
        .ok_or_else(|| malformed("token structure"))?;

    if !candidates
        .iter()
        .any(|key| verify_with_key(algorithm, key, signed, &signature))
    {
        return Err(JwtError::BadSignature);
    }

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| malformed("payload is not base64url"))?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&payload).map_err(|_| malformed("payload is not a JSON object"))?;

    Ok(VerifiedJwt {
        algorithm,
        kid: header.kid,
        typ: header.typ,
        claims,
    })
}

/// The keys that may have signed a token with this `alg` and `kid`.
fn candidate_keys<'k>(
    jwks: &'k Jwks,
    algorithm: Algorithm,
    kid: Option<&str>,
) -> Result<Vec<&'k VerificationKey>, JwtError> {
    let fits = |key: &&VerificationKey| {
        key.material.fits(algorithm) && key.alg.as_deref().is_none_or(|a| a == algorithm.name())
    };
    match kid {
        Some(kid) => {
            let named: Vec<&VerificationKey> = jwks
                .keys()
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid))
                .collect();
            if named.is_empty() {
                return Err(JwtError::UnknownKid(log_safe(kid, 64)));
            }
            let usable: Vec<&VerificationKey> = named.into_iter().filter(fits).collect();
            if usable.is_empty() {
                return Err(JwtError::NoMatchingKey);
            }
            // Duplicate kids happen during sloppy rotations; any of the provider's
            // keys is an acceptable signer.
            Ok(usable)
        }
        None => {
            let usable: Vec<&VerificationKey> = jwks.keys().iter().filter(fits).collect();
            // Trying every key would make an unnamed key set a guessing game; RFC 7517
            // leaves the choice to `kid`, so without one the key must be unambiguous.
            if usable.len() == 1 {
                Ok(usable)
            } else {
                Err(JwtError::NoMatchingKey)
            }
        }
    }
}

fn verify_with_key(algorithm: Algorithm, key: &VerificationKey, signed: &[u8], sig: &[u8]) -> bool {
    match (&key.material, algorithm) {
        (KeyMaterial::Rsa(pk), Algorithm::RS256) => verify_with(&Rsa::rs256(), pk, signed, sig),
        (KeyMaterial::Rsa(pk), Algorithm::RS384) => verify_with(&Rsa::rs384(), pk, signed, sig),
        (KeyMaterial::Rsa(pk), Algorithm::RS512) => verify_with(&Rsa::rs512(), pk, signed, sig),
        (KeyMaterial::Rsa(pk), Algorithm::PS256) => verify_with(&Rsa::ps256(), pk, signed, sig),
        (KeyMaterial::Rsa(pk), Algorithm::PS384) => verify_with(&Rsa::ps384(), pk, signed, sig),
        (KeyMaterial::Rsa(pk), Algorithm::PS512) => verify_with(&Rsa::ps512(), pk, signed, sig),
        (KeyMaterial::P256(pk), Algorithm::ES256) => verify_with(&Es256, pk, signed, sig),
        (KeyMaterial::Ed25519(pk), Algorithm::EdDSA) => verify_with(&Ed25519, pk, signed, sig),
        _ => false,
    }
}

/// jwt-compact's own validator would also parse the claims through chrono and drop
/// `exp`/`iat`/`nbf` from the map; only its signature primitives are used here.
fn verify_with<A: jwt_compact::Algorithm>(
    alg: &A,
    key: &A::VerifyingKey,
    signed: &[u8],
    sig: &[u8],
) -> bool {
    // Some `try_from_slice` impls (Ed25519) panic on a wrong length.
    if let Some(len) = A::Signature::LENGTH {
        if sig.len() != len.get() {
            return false;
        }
    }
    match A::Signature::try_from_slice(sig) {
        Ok(signature) => alg.verify_signature(&signature, key, signed),
        Err(_) => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oidc::jwks::tests::{ed_jwk, ed_key, es_jwk, es_key, jwks_of, rsa_jwk, rsa_key};
    use jwt_compact::alg::{Hs256, Hs256Key};
    use jwt_compact::jwk::JsonWebKey;
    use jwt_compact::{AlgorithmExt, Claims, Header};
    use serde_json::{json, Map, Value};

    pub(crate) fn header(kid: Option<&str>, typ: Option<&str>) -> Header {
        let mut h = Header::empty();
        if let Some(kid) = kid {
            h = h.with_key_id(kid);
        }
        if let Some(typ) = typ {
            h = h.with_token_type(typ);
        }
        h
    }

    fn claims_of(claims: &Value) -> Claims<Map<String, Value>> {
        let map = claims.as_object().cloned().unwrap_or_default();
        Claims::new(map)
    }

    /// Signs `claims` exactly as given (no chrono round trip for exp/iat).
    pub(crate) fn sign(alg: Algorithm, header: &Header, claims: &Value) -> String {
        let c = claims_of(claims);
        let token = match alg {
            Algorithm::ES256 => Es256.token(header, &c, &es_key()),
            Algorithm::EdDSA => Ed25519.token(header, &c, &ed_key()),
            rsa => Rsa::with_name(rsa.name()).token(header, &c, rsa_key(0)),
        };
        token.expect("signing")
    }

    /// RS256 over exactly these header and payload bytes, for shapes jwt-compact
    /// will not produce.
    pub(crate) fn sign_raw(header_json: &str, payload_json: &str) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload_json)
        );
        let sig = jwt_compact::Algorithm::sign(&Rsa::rs256(), rsa_key(0), signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_bytes()))
    }

    pub(crate) fn sign_rsa(which: usize, header: &Header, claims: &Value) -> String {
        Rsa::rs256()
            .token(header, &claims_of(claims), rsa_key(which))
            .expect("signing")
    }

    /// One key of each type, each named and pinned to its algorithm family.
    pub(crate) fn test_jwks() -> Jwks {
        jwks_of(vec![
            rsa_jwk(0, json!({"kid": "rsa", "use": "sig"})),
            es_jwk(json!({"kid": "ec", "alg": "ES256"})),
            ed_jwk(json!({"kid": "ed", "alg": "EdDSA"})),
        ])
    }

    fn kid_for(alg: Algorithm) -> &'static str {
        match alg {
            Algorithm::ES256 => "ec",
            Algorithm::EdDSA => "ed",
            _ => "rsa",
        }
    }

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        for bad in ["none", "HS256", "rs256", "ES384", "Ed25519", ""] {
            assert_eq!(Algorithm::from_name(bad), None);
        }
    }

    #[test]
    fn valid_token_for_each_algorithm() {
        let jwks = test_jwks();
        let claims = json!({"sub": "alice", "exp": 1.5e9, "n": [1, 2]});
        for alg in Algorithm::ALL {
            let token = sign(alg, &header(Some(kid_for(alg)), Some("JWT")), &claims);
            let v = verify_signature(&token, &jwks, &Algorithm::ALL).unwrap_or_else(|e| {
                panic!("{alg}: {e}");
            });
            assert_eq!(v.algorithm, alg);
            assert_eq!(v.kid.as_deref(), Some(kid_for(alg)));
            assert_eq!(v.typ.as_deref(), Some("JWT"));
            assert_eq!(Value::Object(v.claims), claims);
        }
    }

    #[test]
    fn algorithm_must_be_allowed() {
        let jwks = test_jwks();
        let token = sign(Algorithm::PS256, &header(Some("rsa"), None), &json!({}));
        assert_eq!(
            verify_signature(&token, &jwks, &[Algorithm::RS256]).unwrap_err(),
            JwtError::AlgorithmNotAllowed("PS256".into())
        );
    }

    #[test]
    fn tampering_is_detected() {
        let jwks = test_jwks();
        for alg in Algorithm::ALL {
            let token = sign(
                alg,
                &header(Some(kid_for(alg)), None),
                &json!({"sub": "alice"}),
            );
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory"}"#);
            parts[1] = &forged;
            let tampered = parts.join(".");
            assert_eq!(
                verify_signature(&tampered, &jwks, &Algorithm::ALL).unwrap_err(),
                JwtError::BadSignature,
                "{alg}"
            );

            let mut sig = URL_SAFE_NO_PAD
                .decode(token.rsplit('.').next().unwrap())
                .unwrap();
            sig[5] ^= 1;
            let bad_sig = format!(
                "{}.{}",
                token.rsplit_once('.').unwrap().0,
                URL_SAFE_NO_PAD.encode(&sig)
            );
            assert_eq!(
                verify_signature(&bad_sig, &jwks, &Algorithm::ALL).unwrap_err(),
                JwtError::BadSignature,
                "{alg}"
            );

            let short_sig = format!("{}.AAAA", token.rsplit_once('.').unwrap().0);
            assert_eq!(
                verify_signature(&short_sig, &jwks, &Algorithm::ALL).unwrap_err(),
                JwtError::BadSignature,
                "{alg}"
            );
            let no_sig = format!("{}.", token.rsplit_once('.').unwrap().0);
            assert_eq!(
                verify_signature(&no_sig, &jwks, &Algorithm::ALL).unwrap_err(),
                JwtError::BadSignature,
                "{alg}"
            );
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let jwks = test_jwks();
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"rsa"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice"}"#);
        for token in [format!("{h}.{p}."), format!("{h}.{p}")] {
            assert!(verify_signature(&token, &jwks, &Algorithm::ALL).is_err());
        }
        assert_eq!(
            verify_signature(&format!("{h}.{p}."), &jwks, &Algorithm::ALL).unwrap_err(),
            JwtError::AlgorithmNotAllowed("none".into())
        );
    }

    #[test]
    fn hmac_with_public_key_as_secret_is_refused() {
        let jwks = test_jwks();
        let public = rsa_key(0).to_public_key();
        let public_jwk = JsonWebKey::from(&public).to_string();
        let JsonWebKey::Rsa { modulus, .. } = JsonWebKey::from(&public) else {
            unreachable!()
        };
        for secret in [public_jwk.as_bytes(), &modulus[..]] {
            let token = Hs256
                .token(
                    &header(Some("rsa"), None),
                    &claims_of(&json!({"sub": "mallory"})),
                    &Hs256Key::new(secret),
                )
                .unwrap();
            assert_eq!(
                verify_signature(&token, &jwks, &Algorithm::ALL).unwrap_err(),
                JwtError::AlgorithmNotAllowed("HS256".into())
            );
        }
    }

    #[test]
    fn unknown_kid() {
        let jwks = test_jwks();
        let token = sign(Algorithm::RS256, &header(Some("rotated"), None), &json!({}));
        assert_eq!(
            verify_signature(&token, &jwks, &Algorithm::ALL).unwrap_err(),
            JwtError::UnknownKid("rotated".into())
        );
    }

    #[test]
    fn kid_of_wrong_key_type_or_pinned_alg() {
        let jwks = test_jwks();
        // The "ec" key is an EC key: an RSA-signed token cannot name it.
        let token = sign(Algorithm::RS256, &header(Some("ec"), None), &json!({}));
        assert_eq!(
            verify_signature(&token, &jwks, &Algorithm::ALL).unwrap_err(),
            JwtError::NoMatchingKey
        );
        let pinned = jwks_of(vec![rsa_jwk(0, json!({"kid": "rsa", "alg": "PS256"}))]);
        let token = sign(Algorithm::RS256, &header(Some("rsa"), None), &json!({}));
        assert_eq!(
            verify_signature(&token, &pinned, &Algorithm::ALL).unwrap_err(),
            JwtError::NoMatchingKey
        );
        let token = sign(Algorithm::PS256, &header(Some("rsa"), None), &json!({}));
        assert!(verify_signature(&token, &pinned, &Algorithm::ALL).is_ok());
    }

    #[test]
    fn kid_absent() {
        // One RSA key among keys of other types is unambiguous for RS256.
        let jwks = test_jwks();
        let token = sign(Algorithm::RS256, &header(None, None), &json!({"sub": "a"}));
        assert!(verify_signature(&token, &jwks, &Algorithm::ALL).is_ok());
        let token = sign(Algorithm::EdDSA, &header(None, None), &json!({"sub": "a"}));
        assert!(verify_signature(&token, &jwks, &Algorithm::ALL).is_ok());

        let two = jwks_of(vec![rsa_jwk(0, json!({})), rsa_jwk(1, json!({}))]);
        let token = sign_rsa(1, &header(None, None), &json!({"sub": "a"}));
        assert_eq!(
            verify_signature(&token, &two, &Algorithm::ALL).unwrap_err(),
            JwtError::NoMatchingKey
        );
        let named = jwks_of(vec![
            rsa_jwk(0, json!({"kid": "0"})),
            rsa_jwk(1, json!({"kid": "1"})),
        ]);
        let token = sign_rsa(1, &header(Some("1"), None), &json!({"sub": "a"}));
        assert!(verify_signature(&token, &named, &Algorithm::ALL).is_ok());
        let token = sign_rsa(1, &header(Some("0"), None), &json!({"sub": "a"}));
        assert_eq!(
            verify_signature(&token, &named, &Algorithm::ALL).unwrap_err(),
            JwtError::BadSignature
        );
    }

    #[test]
    fn crit_header_is_refused() {
        let jwks = test_jwks();
        // jwt-compact cannot emit `crit`.
        let token = sign_raw(
            r#"{"alg":"RS256","kid":"rsa","crit":["b64"],"b64":false}"#,
            "{}",
        );
        assert!(matches!(
            verify_signature(&token, &jwks, &Algorithm::ALL),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let jwks = test_jwks();
        let good = sign(Algorithm::ES256, &header(Some("ec"), None), &json!({}));
        let (signing_input, sig) = good.rsplit_once('.').unwrap();
        let huge = "A".repeat(MAX_TOKEN_LEN + 1);
        let b = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let cases = vec![
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "a.b".into(),
            "a.b.c".into(),
            "a.b.c.d.e".into(),
            "!!!.###.$$$".into(),
            "é.é.é".into(),
            huge,
            format!("{}.{}.", b("[]"), b("{}")),
            format!("{}.{}.", b("{\"alg\":5}"), b("{}")),
            format!("{}.{}.", b("{\"alg\":\"ES256\",\"kid\":[1]}"), b("{}")),
            format!(
                "{}.{}.",
                b("{\"alg\":\"ES256\",\"alg\":\"ES256\"}"),
                b("{}")
            ),
            format!("{}.{}.xx", b("{\"alg\":\"ES256\",\"kid\":\"ec\"}"), b("{}")),
            format!(
                "{}.{}.{sig}",
                b("{\"alg\":\"ES256\",\"kid\":\"ec\"}"),
                b("[1,2]")
            ),
            format!("{signing_input}=.{sig}"),
            format!("{signing_input}.{sig}="),
            format!("{signing_input}.{sig}.{sig}"),
            format!(
                "{}.{}.{}",
                b("{\"alg\":\"EdDSA\"}"),
                b("{}"),
                "A".repeat(500)
            ),
            format!(
                "{}.{}.{}",
                b("{\"alg\":\"RS256\"}"),
                b("{}"),
                "A".repeat(5000)
            ),
            format!(
                "{}.{}.{}",
                b("{\"alg\":\"ES256\"}"),
                b("{}"),
                "A".repeat(86)
            ),
        ];
        for case in cases {
            assert!(
                verify_signature(&case, &jwks, &Algorithm::ALL).is_err(),
                "{}",
                log_safe(&case, 80)
            );
        }
        assert!(verify_signature(&good, &jwks, &Algorithm::ALL).is_ok());
    }

    #[test]
    fn messages_do_not_leak_token_contents() {
        let jwks = test_jwks();
        let token = sign(
            Algorithm::RS256,
            &header(Some("k\nid"), None),
            &json!({"sub": "SECRET"}),
        );
        let msg = verify_signature(&token, &jwks, &Algorithm::ALL)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "JWT key id \"k?id\" is not in the provider's key set");
        let msg = verify_signature("x!SECRET.a.b", &jwks, &Algorithm::ALL)
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("SECRET"), "{msg}");
        assert_eq!(msg, "malformed JWT: header is not base64url");
    }
}
