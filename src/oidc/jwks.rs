//! The provider's JSON Web Key Set, parsed once into verification keys.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::{Ed25519, Es256, RsaPublicKey};
use jwt_compact::jwk::JsonWebKey;
use serde_json::Value;

use super::common::json_error_kind;

/// RFC 7518 §3.3: smaller RSA keys must not be used with RS*/PS*.
const MIN_RSA_MODULUS_BITS: usize = 2048;

/// Verification keys from a JWKS document. Keys that cannot verify signatures
/// (`use: enc`, unsupported `kty`/`crv`) are skipped.
#[derive(Debug, Clone)]
pub struct Jwks {
    keys: Vec<VerificationKey>,
    /// SHA-256 of the document the keys came from: what was verified with
    /// one key set is trusted only while this stays the same.
    digest: crate::cache::Digest,
}

/// One usable key together with the JWK metadata that constrains its use.
#[derive(Debug, Clone)]
pub(crate) struct VerificationKey {
    pub(crate) kid: Option<String>,
    /// The JWK's `alg`, when the provider pinned one.
    pub(crate) alg: Option<String>,
    pub(crate) material: KeyMaterial,
}

#[derive(Debug, Clone)]
pub(crate) enum KeyMaterial {
    Rsa(RsaPublicKey),
    P256(<Es256 as jwt_compact::Algorithm>::VerifyingKey),
    Ed25519(<Ed25519 as jwt_compact::Algorithm>::VerifyingKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson(String),
    NoUsableKeys,
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksError::NotJson(reason) => write!(f, "JWKS document is not valid: {reason}"),
            JwksError::NoUsableKeys => {
                f.write_str("JWKS document has no usable signature verification key")
            }
        }
    }
}

impl std::error::Error for JwksError {}

impl Jwks {
    pub fn parse(body: &[u8]) -> Result<Jwks, JwksError> {
        // Parsing into `Value` first keeps serde's error text free of document
        // contents (type errors would quote them).
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| JwksError::NotJson(format!("invalid JSON ({})", json_error_kind(&e))))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NotJson("no \"keys\" array".to_owned()));
        };
        let keys: Vec<VerificationKey> = list.iter().filter_map(parse_key).collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(Jwks {
            keys,
            digest: crate::cache::digest(body),
        })
    }

    /// Identifies the key set: any change of the document changes it.
    pub fn digest(&self) -> &crate::cache::Digest {
        &self.digest
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    pub(crate) fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }
}

/// `None` for anything this relying party cannot verify with; a bad key must not
/// take the good ones down with it.
fn parse_key(jwk: &Value) -> Option<VerificationKey> {
    let obj = jwk.as_object()?;
    let optional_str = |name: &str| -> Result<Option<String>, ()> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(()),
        }
    };
    let kid = optional_str("kid").ok()?;
    let alg = optional_str("alg").ok()?;
    let key_use = optional_str("use").ok()?;
    if key_use.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = obj.get("key_ops") {
        // RFC 7517 §4.3: when present, only keys allowed to "verify" qualify.
        let ops = ops.as_array()?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return None;
        }
    }
    let bytes = |name: &str| -> Option<Vec<u8>> {
        let encoded = obj.get(name)?.as_str()?;
        URL_SAFE_NO_PAD.decode(encoded).ok()
    };
    let text = |name: &str| -> Option<&str> { obj.get(name)?.as_str() };

    let material = match text("kty")? {
        "RSA" => {
            let modulus = bytes("n")?;
            if modulus_bits(&modulus) < MIN_RSA_MODULUS_BITS {
                return None;
            }
            let jwk = JsonWebKey::Rsa {
                modulus: Cow::Owned(modulus),
                public_exponent: Cow::Owned(bytes("e")?),
                private_parts: None,
            };
            KeyMaterial::Rsa(RsaPublicKey::try_from(&jwk).ok()?)
        }
        "EC" => {
            if text("crv")? != "P-256" {
                return None;
            }
            let jwk = JsonWebKey::EllipticCurve {
                curve: Cow::Borrowed("P-256"),
                x: Cow::Owned(bytes("x")?),
                y: Cow::Owned(bytes("y")?),
                secret: None,
            };
            KeyMaterial::P256(TryFrom::try_from(&jwk).ok()?)
        }
        "OKP" => {
            if text("crv")? != "Ed25519" {
                return None;
            }
            let jwk = JsonWebKey::KeyPair {
                curve: Cow::Borrowed("Ed25519"),
                x: Cow::Owned(bytes("x")?),
                secret: None,
            };
            KeyMaterial::Ed25519(TryFrom::try_from(&jwk).ok()?)
        }
        _ => return None,
    };
    // A key pinned to an algorithm we do not implement can never verify anything.
    if let Some(name) = alg.as_deref() {
        let supported = super::jwt::Algorithm::from_name(name)?;
        if !material.fits(supported) {
            return None;
        }
    }
    Some(VerificationKey { kid, alg, material })
}

/// Bit length of a big-endian unsigned integer, ignoring leading zero bytes.
fn modulus_bits(bytes: &[u8]) -> usize {
    let significant: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(start) => bytes.get(start..).unwrap_or_default(),
        None => return 0,
    };
    match significant.first() {
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

impl KeyMaterial {
    /// Whether this key type belongs to the algorithm's family.
    pub(crate) fn fits(&self, alg: super::jwt::Algorithm) -> bool {
        use super::jwt::Algorithm as A;
        matches!(
            (self, alg),
            (
                KeyMaterial::Rsa(_),
                A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
            ) | (KeyMaterial::P256(_), A::ES256)
                | (KeyMaterial::Ed25519(_), A::EdDSA)
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jwt_compact::alg::{ModulusBits, Rsa, RsaPrivateKey};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use serde_json::json;
    use std::sync::OnceLock;

    pub(crate) type EsSigningKey = <Es256 as jwt_compact::Algorithm>::SigningKey;
    pub(crate) type EdSigningKey = <Ed25519 as jwt_compact::Algorithm>::SigningKey;

    /// Test keys are deterministic so failures reproduce; RSA generation is slow,
    /// so each key is built once per test binary.
    pub(crate) fn rsa_key(which: usize) -> &'static RsaPrivateKey {
        static KEYS: [OnceLock<RsaPrivateKey>; 2] = [OnceLock::new(), OnceLock::new()];
        KEYS[which].get_or_init(|| {
            let mut rng = ChaCha20Rng::seed_from_u64(1000 + which as u64);
            Rsa::generate(&mut rng, ModulusBits::TwoKibibytes)
                .expect("rsa keygen")
                .0
                .into_inner()
        })
    }

    pub(crate) fn es_key() -> EsSigningKey {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        EsSigningKey::random(&mut rng)
    }

    pub(crate) fn ed_key() -> EdSigningKey {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        Ed25519::generate(&mut rng).0
    }

    /// The public JWK of `key` with the given metadata merged in.
    pub(crate) fn public_jwk(key: JsonWebKey<'_>, extra: Value) -> Value {
        let mut jwk = serde_json::to_value(key.to_verifying_key()).expect("jwk json");
        if let (Some(obj), Value::Object(extra)) = (jwk.as_object_mut(), extra) {
            obj.extend(extra);
        }
        jwk
    }

    pub(crate) fn rsa_jwk(which: usize, extra: Value) -> Value {
        public_jwk(JsonWebKey::from(&rsa_key(which).to_public_key()), extra)
    }

    pub(crate) fn es_jwk(extra: Value) -> Value {
        public_jwk(JsonWebKey::from(es_key().verifying_key()), extra)
    }

    pub(crate) fn ed_jwk(extra: Value) -> Value {
        public_jwk(JsonWebKey::from(&ed_key().public_key()), extra)
    }

    pub(crate) fn jwks_of(keys: Vec<Value>) -> Jwks {
        let doc = json!({ "keys": keys });
        Jwks::parse(doc.to_string().as_bytes()).expect("test jwks parses")
    }

    #[test]
    fn parses_each_supported_key_type() {
        let jwks = jwks_of(vec![
            rsa_jwk(0, json!({"kid": "r", "alg": "RS256", "use": "sig"})),
            es_jwk(json!({"kid": "e"})),
            ed_jwk(json!({"kid": "d", "alg": "EdDSA"})),
        ]);
        assert_eq!(jwks.len(), 3);
        assert!(matches!(jwks.keys()[0].material, KeyMaterial::Rsa(_)));
        assert_eq!(jwks.keys()[0].kid.as_deref(), Some("r"));
        assert_eq!(jwks.keys()[0].alg.as_deref(), Some("RS256"));
        assert!(matches!(jwks.keys()[1].material, KeyMaterial::P256(_)));
        assert!(matches!(jwks.keys()[2].material, KeyMaterial::Ed25519(_)));
    }

    #[test]
    fn skips_unusable_keys() {
        let doc = json!({"keys": [
            rsa_jwk(0, json!({"kid": "enc", "use": "enc"})),
            rsa_jwk(0, json!({"kid": "ops", "key_ops": ["encrypt"]})),
            rsa_jwk(0, json!({"kid": "hs", "alg": "HS256"})),
            es_jwk(json!({"kid": "wrong-alg", "alg": "RS256"})),
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "x": "AA"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": "not base64!", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
            {"kty": 5},
            {"kid": "no-kty"},
            "not an object",
            42,
            rsa_jwk(0, json!({"kid": 7})),
            ed_jwk(json!({"kid": "good"})),
        ]});
        let jwks = Jwks::parse(doc.to_string().as_bytes()).expect("one good key");
        assert_eq!(jwks.len(), 1);
        assert_eq!(jwks.keys()[0].kid.as_deref(), Some("good"));
    }

    #[test]
    fn small_rsa_modulus_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let small = RsaPrivateKey::new(&mut rng, 1024).expect("keygen");
        let jwk = public_jwk(JsonWebKey::from(&small.to_public_key()), json!({}));
        let doc = json!({ "keys": [jwk] });
        assert_eq!(
            Jwks::parse(doc.to_string().as_bytes()).unwrap_err(),
            JwksError::NoUsableKeys
        );
    }

    #[test]
    fn bad_documents() {
        for body in [
            &b""[..],
            b"not json",
            b"[]",
            b"{\"keys\": {}}",
            b"{\"keys\": \"x\"}",
            b"{}",
        ] {
            assert!(
                matches!(Jwks::parse(body), Err(JwksError::NotJson(_))),
                "{body:?}"
            );
        }
        assert_eq!(
            Jwks::parse(b"{\"keys\": []}").unwrap_err(),
            JwksError::NoUsableKeys
        );
        let msg = Jwks::parse(b"{\"keys\": \"secret-ish\"}")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("secret-ish"), "{msg}");
    }

    #[test]
    fn modulus_bit_length() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[0, 1]), 1);
        assert_eq!(modulus_bits(&[0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0, 0x7f, 0xff]), 15);
    }
}
