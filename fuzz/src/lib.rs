//! Fixtures shared by the fuzz targets: a fixed configuration, sealing key,
//! clock, and a provider whose Ed25519 signing key the targets hold, so that
//! fuzzed claims can be signed and reach past the signature check.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use oidc_filter::config::Config;
use oidc_filter::crypto::seal::SealingKeys;
use oidc_filter::oidc::discovery::ProviderMetadata;
use oidc_filter::oidc::jwks::Jwks;
use oidc_filter::provider::Provider;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use url::Url;

pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "https://idp.example";
pub const CLIENT_ID: &str = "rp";
/// The `kid` of the key the targets sign with.
pub const KID: &str = "fuzz-ed25519";

/// The public half of the provider's test RSA key (tests/idp/keys), so the
/// key set has every key type the filter verifies with.
const RSA_N: &str =
    "ppw0WjeAC5ploOXDifz9wFiyghi74EJ4HOBg0RyRf4ab3tLC6OrnI4kbtYE3zAgq4KvRLeQqcVtqUIiawx5sbdSy3Ev9P3T9VClgv6S-HCwxRtuSRClvVgHtbwNQg8re8MyTfAsy4_gEMY_GsiPE_WwFGBiw-2P2R_9E-yQYqEkjxxnHg0FdR4Oe5e-kqlByqvtif0jC_d4uO7-p4TQyjvGIeUx1POmAA54_SdXFPppC0QgnfYzF_eXQO1o02QRCh5cvpF6vbSDoDjRSt0q5ZB9ijaQ-PkfA0Hhfrsay8_PXMx0sLTykGyBkwLCevdqj--QQAGbpHuMS3L0LwjQKVQ";

const CONFIG: &str = r#"{
    "issuer": "https://idp.example",
    "client_id": "rp",
    "client_secret": "s3cret",
    "redirect_uri": "https://app.example/oauth2/callback",
    "logout_path": "/oauth2/logout",
    "backchannel_logout_path": "/oauth2/backchannel-logout",
    "provider_cluster": "idp",
    "scopes": ["email"],
    "cookie": {"keys": ["ZnV6ei1maXhlZC1rZXktZnV6ei1maXhlZC1rZXktMDE"]},
    "public_paths": ["/public/", "/health"],
    "api_path_prefixes": ["/api/"],
    "upstream": {"claim_headers": {"x-user": "sub", "x-email": "email"}},
    "authorization": {"rules": [{"path_prefix": "/admin/", "require": {"claims": {"groups": "admin"}, "scopes": ["admin"]}}]}
}"#;

/// The configurations the flow target picks from: shared-data sessions, cookie
/// sessions, and bearer tokens verified locally or by introspection.
pub fn configs() -> &'static [Config] {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let base: serde_json::Value = serde_json::from_str(CONFIG).expect("fixture config");
        let variants = [
            serde_json::json!({}),
            serde_json::json!({"session": {"store": "cookie"}}),
            serde_json::json!({"bearer": {"mode": "accept", "audiences": ["api", "rp"]}}),
            serde_json::json!({"bearer": {"mode": "require", "audiences": ["api"],
                "introspection": {"enabled": true, "cache_seconds": 30}}}),
        ];
        variants
            .iter()
            .map(|extra| {
                let mut json = base.clone();
                if let (Some(obj), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
                    obj.extend(extra.clone());
                }
                Config::parse(json.to_string().as_bytes(), |_| None).expect("fixture config parses")
            })
            .collect()
    })
}

pub fn sealing_keys() -> &'static SealingKeys {
    static KEYS: OnceLock<SealingKeys> = OnceLock::new();
    KEYS.get_or_init(|| SealingKeys::from_raw(vec![[7; 32], [9; 32]]).expect("fixed keys"))
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn key_pair() -> &'static ed25519_compact::KeyPair {
    static PAIR: OnceLock<ed25519_compact::KeyPair> = OnceLock::new();
    PAIR.get_or_init(|| ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([42; 32])))
}

/// The provider's key set: the Ed25519 key the targets sign with, plus an RSA key.
pub fn jwks_json() -> String {
    serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": KID, "use": "sig", "alg": "EdDSA",
         "x": URL_SAFE_NO_PAD.encode(key_pair().pk.as_ref())},
        {"kty": "RSA", "kid": "test-rs256", "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"},
    ]})
    .to_string()
}

pub fn jwks() -> &'static Jwks {
    static JWKS: OnceLock<Jwks> = OnceLock::new();
    JWKS.get_or_init(|| Jwks::parse(jwks_json().as_bytes()).expect("fixture jwks"))
}

pub fn provider() -> &'static Provider {
    static PROVIDER: OnceLock<Provider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let url = |s: &str| Url::parse(s).expect("fixture url");
        Provider {
            metadata: ProviderMetadata {
                issuer: ISSUER.to_string(),
                authorization_endpoint: url("https://idp.example/auth"),
                token_endpoint: url("https://idp.example/token"),
                jwks_uri: url("https://idp.example/jwks"),
                end_session_endpoint: Some(url("https://idp.example/session/end")),
                introspection_endpoint: Some(url("https://idp.example/token/introspection")),
                revocation_endpoint: None,
                userinfo_endpoint: None,
                id_token_signing_alg_values_supported: vec!["EdDSA".into(), "RS256".into()],
                authorization_response_iss_parameter_supported: true,
            },
            jwks: jwks().clone(),
            jwks_fetched_at: NOW - 3600,
            kid_refetches: Default::default(),
        }
    })
}

/// A compact JWS over exactly these header and payload bytes, signed with the
/// provider's Ed25519 key, so claims need not even be valid JSON to be signed.
pub fn sign(header: &[u8], payload: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key_pair().sk.sign(signing_input.as_bytes(), None);
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

/// The usual header of a provider's token of this `typ`.
pub fn header(typ: Option<&str>) -> Vec<u8> {
    let mut header = serde_json::json!({"alg": "EdDSA", "kid": KID});
    if let Some(typ) = typ {
        header["typ"] = typ.into();
    }
    header.to_string().into_bytes()
}

/// `base` with the members of `extra` (fuzzed JSON) laid over it, when it is an object.
pub fn merge_claims(mut base: serde_json::Value, extra: &[u8]) -> Vec<u8> {
    if let Ok(serde_json::Value::Object(extra)) = serde_json::from_slice(extra) {
        if let Some(obj) = base.as_object_mut() {
            obj.extend(extra);
        }
    }
    base.to_string().into_bytes()
}

/// Runs every token verifier of the filter on `raw` with the fixture's provider
/// and checks what each promises about the tokens it accepts.
pub fn verify_all(raw: &str) {
    use oidc_filter::oidc::access_token::{verify_access_token, AccessTokenExpectations};
    use oidc_filter::oidc::id_token::{verify_id_token, IdTokenExpectations, NonceCheck};
    use oidc_filter::oidc::jwt::{verify_signature, Algorithm};
    use oidc_filter::oidc::logout_token::{verify_logout_token, LogoutTokenExpectations};

    let jwks = jwks();
    let algs = &Algorithm::ALL;
    let skew = 60;
    let _ = verify_signature(raw, jwks, algs);
    let _ = oidc_filter::oidc::access_token::looks_like_jwt(raw);
    for nonce in [NonceCheck::Equals("n-0S6_WzA2Mj"), NonceCheck::NotRequired] {
        let expect = IdTokenExpectations {
            issuer: ISSUER,
            client_id: CLIENT_ID,
            nonce,
            allowed_algorithms: algs,
            now: NOW,
            clock_skew: skew,
            max_age: 600,
        };
        if let Ok(token) = verify_id_token(raw, jwks, &expect) {
            assert!(!token.sub.is_empty());
            assert!(token.exp.saturating_add(skew) >= NOW);
            assert!(token.iat <= NOW + skew);
            assert_eq!(
                token.claims.get("iss").and_then(|v| v.as_str()),
                Some(ISSUER)
            );
        }
    }
    let expect = LogoutTokenExpectations {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        allowed_algorithms: algs,
        now: NOW,
        clock_skew: skew,
        max_age: 600,
    };
    if let Ok(token) = verify_logout_token(raw, jwks, &expect) {
        assert!(token.sub.is_some() || token.sid.is_some());
        assert!(!token.jti.is_empty());
    }
    let audiences = ["api".to_string(), CLIENT_ID.to_string()];
    let expect = AccessTokenExpectations {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        audiences: &audiences,
        allowed_algorithms: algs,
        now: NOW,
        clock_skew: skew,
    };
    if let Ok(token) = verify_access_token(raw, jwks, &expect) {
        assert!(token.exp.saturating_add(skew) >= NOW);
        assert!(!token.claims.contains_key("nonce"));
    }
}
