//! AES-256-GCM sealing of small values into cookie-safe strings.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MIN_KEY_LEN: usize = 32;
const KEY_DERIVATION_LABEL: &[u8] = b"oidc-filter sealing key v1";

// Operators paste keys from many tools; accept either alphabet with or without padding.
const PADDING_INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose =
    GeneralPurpose::new(&alphabet::STANDARD, PADDING_INDIFFERENT);
const URL_SAFE_LENIENT: GeneralPurpose =
    GeneralPurpose::new(&alphabet::URL_SAFE, PADDING_INDIFFERENT);

/// Keys for sealing: the first seals, all open (key rotation).
#[derive(Clone)]
pub struct SealingKeys {
    // Never empty: both constructors refuse an empty list.
    ciphers: Vec<Aes256Gcm>,
    /// Tells key lists apart (a one-way digest of them), so what was opened
    /// with one list is not taken for what another would open.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKeys(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No key was given.
    Empty,
    /// The key at `index` decodes to only `len` bytes; at least 32 are required.
    TooShort { index: usize, len: usize },
    /// The key at `index` is not base64.
    Malformed { index: usize },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Empty => f.write_str("no sealing key given"),
            KeyError::TooShort { index, len } => write!(
                f,
                "sealing key {index} decodes to {len} bytes; at least {MIN_KEY_LEN} are required"
            ),
            KeyError::Malformed { index } => write!(f, "sealing key {index} is not valid base64"),
        }
    }
}

impl std::error::Error for KeyError {}

impl SealingKeys {
    /// Keys given as base64 (standard or url-safe, padded or not) of at least 32 bytes.
    ///
    /// Every key, whatever its length, is reduced to an AES-256 key with
    /// HMAC-SHA256(key = decoded secret, msg = "oidc-filter sealing key v1"). Treating
    /// all lengths the same way lets operators supply any long random secret, and a
    /// 32-byte secret does not silently mean something different from a 33-byte one.
    /// Surrounding whitespace (a trailing newline from a file or env var) is ignored.
    pub fn from_encoded(encoded: &[impl AsRef<str>]) -> Result<SealingKeys, KeyError> {
        if encoded.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut keys = Vec::with_capacity(encoded.len());
        for (index, key) in encoded.iter().enumerate() {
            let text = key.as_ref().trim_ascii();
            let secret = STANDARD_LENIENT
                .decode(text)
                .or_else(|_| URL_SAFE_LENIENT.decode(text))
                .map_err(|_| KeyError::Malformed { index })?;
            if secret.len() < MIN_KEY_LEN {
                return Err(KeyError::TooShort {
                    index,
                    len: secret.len(),
                });
            }
            keys.push(derive_key(&secret).ok_or(KeyError::Malformed { index })?);
        }
        SealingKeys::from_raw(keys)
    }

    /// Keys used as they are, e.g. one drawn at random when no key is configured.
    pub fn from_raw(keys: Vec<[u8; 32]>) -> Result<SealingKeys, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let ciphers = keys.iter().map(|k| Aes256Gcm::new(k.into())).collect();
        let mut fingerprint = Sha256::new_with_prefix(b"oidc-filter sealing keys fingerprint");
        for key in &keys {
            fingerprint.update(key);
        }
        Ok(SealingKeys {
            ciphers,
            fingerprint: fingerprint.finalize().into(),
        })
    }

    /// The same for the same keys in the same order, different otherwise.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
}

fn derive_key(secret: &[u8]) -> Option<[u8; 32]> {
    // HMAC takes keys of any length, so this never fails; stay panic-free anyway.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(KEY_DERIVATION_LABEL);
    Some(mac.finalize().into_bytes().into())
}

/// `base64url(nonce || ciphertext || tag)` with a fresh 96-bit nonce.
///
/// Returns an empty string (which never opens) only if AES-GCM refuses the input,
/// which needs a plaintext of 64 GiB.
pub fn seal(
    keys: &SealingKeys,
    associated_data: &[u8],
    plaintext: &[u8],
    rng: &mut impl rand_core::CryptoRngCore,
) -> String {
    let Some(cipher) = keys.ciphers.first() else {
        return String::new();
    };
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let payload = Payload {
        msg: plaintext,
        aad: associated_data,
    };
    match cipher.encrypt(&Nonce::from(nonce), payload) {
        Ok(ciphertext) => {
            let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&ciphertext);
            URL_SAFE_NO_PAD.encode(out)
        }
        Err(_) => String::new(),
    }
}

/// The plaintext if any key opens the value with this associated data.
pub fn open(keys: &SealingKeys, associated_data: &[u8], sealed: &str) -> Option<Vec<u8>> {
    open_with_key_index(keys, associated_data, sealed).map(|(plaintext, _)| plaintext)
}

/// Like [`open`], also saying which key opened it: anything but 0 was sealed
/// with a retired key and should be sealed again with the first.
pub fn open_with_key_index(
    keys: &SealingKeys,
    associated_data: &[u8],
    sealed: &str,
) -> Option<(Vec<u8>, usize)> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::from(<[u8; NONCE_LEN]>::try_from(nonce).ok()?);
    keys.ciphers.iter().enumerate().find_map(|(index, cipher)| {
        let payload = Payload {
            msg: ciphertext,
            aad: associated_data,
        };
        cipher.decrypt(&nonce, payload).ok().map(|p| (p, index))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(42)
    }

    fn keys(raw: &[[u8; 32]]) -> SealingKeys {
        SealingKeys::from_raw(raw.to_vec()).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = keys(&[[1; 32]]);
        let sealed = seal(&k, b"session", b"hello world", &mut rng());
        assert!(sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(open(&k, b"session", &sealed).unwrap(), b"hello world");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let k = keys(&[[1; 32]]);
        let sealed = seal(&k, b"", b"", &mut rng());
        assert_eq!(open(&k, b"", &sealed).unwrap(), b"");
    }

    #[test]
    fn output_length_is_nonce_ciphertext_tag() {
        let k = keys(&[[1; 32]]);
        let sealed = seal(&k, b"", &[0; 10], &mut rng());
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        assert_eq!(bytes.len(), NONCE_LEN + 10 + TAG_LEN);
    }

    #[test]
    fn fresh_nonce_each_time() {
        let k = keys(&[[1; 32]]);
        let mut r = rng();
        let a = seal(&k, b"ad", b"same", &mut r);
        let b = seal(&k, b"ad", b"same", &mut r);
        assert_ne!(a, b);
        assert_ne!(a[..16], b[..16]);
    }

    #[test]
    fn wrong_associated_data_fails() {
        let k = keys(&[[1; 32]]);
        let sealed = seal(&k, b"session", b"secret", &mut rng());
        assert_eq!(open(&k, b"state", &sealed), None);
        assert_eq!(open(&k, b"", &sealed), None);
    }

    #[test]
    fn any_flipped_bit_fails() {
        let k = keys(&[[1; 32]]);
        let sealed = seal(&k, b"ad", b"secret", &mut rng());
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                let tampered = URL_SAFE_NO_PAD.encode(tampered);
                assert_eq!(open(&k, b"ad", &tampered), None, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_or_garbage_input_fails() {
        let k = keys(&[[1; 32]]);
        let sealed = seal(&k, b"ad", b"secret", &mut rng());
        for cut in 0..sealed.len() {
            assert_eq!(open(&k, b"ad", &sealed[..cut]), None);
        }
        for garbage in ["", "!!!!", "a", "====", "é", &format!("{sealed}=")] {
            assert_eq!(open(&k, b"ad", garbage), None);
        }
        let short = URL_SAFE_NO_PAD.encode([0u8; NONCE_LEN + TAG_LEN - 1]);
        assert_eq!(open(&k, b"ad", &short), None);
    }

    #[test]
    fn rotation_old_key_opens_when_second() {
        let old = [1; 32];
        let new = [2; 32];
        let sealed_old = seal(&keys(&[old]), b"ad", b"v", &mut rng());
        let rotated = keys(&[new, old]);
        assert_eq!(open(&rotated, b"ad", &sealed_old).unwrap(), b"v");
        // New values are sealed with the first key only.
        let sealed_new = seal(&rotated, b"ad", b"w", &mut rng());
        assert_eq!(open(&keys(&[new]), b"ad", &sealed_new).unwrap(), b"w");
        assert_eq!(open(&keys(&[old]), b"ad", &sealed_new), None);
    }

    #[test]
    fn the_opening_key_is_reported() {
        let sealed = seal(&keys(&[[1; 32]]), b"ad", b"v", &mut rng());
        let rotated = keys(&[[2; 32], [1; 32]]);
        assert_eq!(
            open_with_key_index(&rotated, b"ad", &sealed),
            Some((b"v".to_vec(), 1))
        );
        assert_eq!(
            open_with_key_index(&keys(&[[1; 32]]), b"ad", &sealed),
            Some((b"v".to_vec(), 0))
        );
    }

    #[test]
    fn unknown_key_fails() {
        let sealed = seal(&keys(&[[1; 32]]), b"ad", b"v", &mut rng());
        assert_eq!(open(&keys(&[[2; 32], [3; 32]]), b"ad", &sealed), None);
    }

    #[test]
    fn from_raw_refuses_empty() {
        assert_eq!(SealingKeys::from_raw(vec![]).unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn from_encoded_refuses_empty() {
        let none: [&str; 0] = [];
        assert_eq!(
            SealingKeys::from_encoded(&none).unwrap_err(),
            KeyError::Empty
        );
    }

    #[test]
    fn from_encoded_refuses_short_keys() {
        let ok = STANDARD.encode([7u8; 32]);
        let short = STANDARD.encode([7u8; 31]);
        assert_eq!(
            SealingKeys::from_encoded(&[ok.as_str(), short.as_str()]).unwrap_err(),
            KeyError::TooShort { index: 1, len: 31 }
        );
        assert_eq!(
            SealingKeys::from_encoded(&[""]).unwrap_err(),
            KeyError::TooShort { index: 0, len: 0 }
        );
    }

    #[test]
    fn from_encoded_refuses_malformed_keys() {
        let ok = STANDARD.encode([7u8; 32]);
        for bad in ["not base64!", "a+b_", "ab=c"] {
            assert_eq!(
                SealingKeys::from_encoded(&[ok.as_str(), bad]).unwrap_err(),
                KeyError::Malformed { index: 1 },
                "{bad}"
            );
        }
    }

    #[test]
    fn from_encoded_accepts_every_alphabet_and_padding() {
        // 0xfb-heavy bytes make the alphabets differ ('+/' vs '-_').
        let secret = [0xfbu8; 40];
        let reference = SealingKeys::from_encoded(&[STANDARD.encode(secret)]).unwrap();
        let sealed = seal(&reference, b"ad", b"v", &mut rng());
        for text in [
            STANDARD_NO_PAD.encode(secret),
            URL_SAFE.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            format!("  {}\n", STANDARD.encode(secret)),
        ] {
            let k = SealingKeys::from_encoded(&[text.as_str()]).unwrap();
            assert_eq!(open(&k, b"ad", &sealed).unwrap(), b"v", "{text}");
        }
    }

    #[test]
    fn encoded_keys_are_derived_not_used_raw() {
        let secret = [9u8; 32];
        let derived = SealingKeys::from_encoded(&[STANDARD.encode(secret)]).unwrap();
        let sealed = seal(&derived, b"ad", b"v", &mut rng());
        assert_eq!(open(&keys(&[secret]), b"ad", &sealed), None);
        assert_eq!(
            open(&keys(&[derive_key(&secret).unwrap()]), b"ad", &sealed).unwrap(),
            b"v"
        );
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", keys(&[[1; 32]])), "SealingKeys(<redacted>)");
    }
}
