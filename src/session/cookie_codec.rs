//! A [`Session`] sealed into cookies: the store of `session.store: cookie`.
//!
//! The plaintext is the session's JSON; it is sealed with AES-256-GCM under the
//! first configured key with a fresh nonce, and the associated data names the
//! format version and the cookie's base name, so a value cannot be replayed
//! under another cookie name or read as another format.

use super::chunks::{self, Joined};
use super::Session;
use crate::crypto::seal::{self, SealingKeys};

const FORMAT: &str = "oidc-filter session v1";

/// A session read back from the browser.
#[derive(Debug)]
pub struct Opened {
    pub session: Session,
    /// Sealed with a key that is no longer first: write it again with the first.
    pub sealed_with_retired_key: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The chunks do not fit together (the reason, for the log).
    Chunks(&'static str),
    /// No key opens the value, or it opened but is not a session.
    Seal,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Chunks(reason) => f.write_str(reason),
            Refused::Seal => f.write_str("the session cookie does not open with any key"),
        }
    }
}

fn associated_data(base: &str) -> Vec<u8> {
    format!("{FORMAT}|{base}").into_bytes()
}

pub fn seal(
    session: &Session,
    keys: &SealingKeys,
    base: &str,
    rng: &mut impl rand_core::CryptoRngCore,
) -> String {
    seal::seal(keys, &associated_data(base), &session.encode(), rng)
}

pub fn open(keys: &SealingKeys, base: &str, sealed: &str) -> Option<Opened> {
    let (plaintext, key_index) = seal::open_with_key_index(keys, &associated_data(base), sealed)?;
    Some(Opened {
        session: Session::decode(&plaintext)?,
        sealed_with_retired_key: key_index != 0,
    })
}

/// The session from the request's cookies; `Ok(None)` when it carries none.
pub fn read(
    parsed: &[(String, String)],
    keys: &SealingKeys,
    base: &str,
) -> Result<Option<Opened>, Refused> {
    match chunks::join(parsed, base) {
        Joined::Absent => Ok(None),
        Joined::Invalid(reason) => Err(Refused::Chunks(reason)),
        Joined::Sealed(sealed) => open(keys, base, &sealed).map(Some).ok_or(Refused::Seal),
    }
}

/// The `(name, value)` cookies carrying `session`; `None` when it is too large
/// for [`chunks::MAX_CHUNKS`] cookies.
pub fn write(
    session: &Session,
    keys: &SealingKeys,
    base: &str,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Option<Vec<(String, String)>> {
    let sealed = seal(session, keys, base, rng);
    let written = chunks::split(base, &sealed);
    match &written {
        Some(parts) if parts.len() > chunks::WARN_CHUNKS => log::warn!(
            "the session cookie needs {} chunks ({} bytes): keep fewer tokens or claims in it (see docs/configuration.md)",
            parts.len(),
            sealed.len()
        ),
        Some(_) => {}
        None => log::error!(
            "the session ({} bytes sealed) does not fit in {} cookies",
            sealed.len(),
            chunks::MAX_CHUNKS
        ),
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const BASE: &str = "__Host-oidc-session";

    fn keys(raw: &[[u8; 32]]) -> SealingKeys {
        SealingKeys::from_raw(raw.to_vec()).unwrap()
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(9)
    }

    fn session(id_token_len: usize) -> Session {
        Session {
            sub: "alice".to_string(),
            sid: Some("sid-1".to_string()),
            created_at: 1_800_000_000,
            expires_at: 1_800_028_800,
            last_seen: 1_800_000_000,
            access_token: "at-123".to_string(),
            access_token_expires_at: Some(1_800_003_600),
            access_token_lifetime: None,
            refresh_token: Some("rt-1".to_string()),
            id_token: Some("x".repeat(id_token_len)),
            claims: serde_json::json!({"email": "alice@example.test"})
                .as_object()
                .unwrap()
                .clone(),
            refreshing_until: None,
        }
    }

    #[test]
    fn a_session_round_trips_through_one_cookie() {
        let k = keys(&[[1; 32]]);
        let written = write(&session(800), &k, BASE, &mut rng()).unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].0, BASE);
        let opened = read(&written, &k, BASE).unwrap().unwrap();
        assert_eq!(opened.session, session(800));
        assert!(!opened.sealed_with_retired_key);
    }

    #[test]
    fn a_large_session_round_trips_through_chunks() {
        let k = keys(&[[1; 32]]);
        let written = write(&session(9000), &k, BASE, &mut rng()).unwrap();
        assert_eq!(written.len(), 4);
        assert_eq!(
            read(&written, &k, BASE).unwrap().unwrap().session,
            session(9000)
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let k = keys(&[[1; 32]]);
        let mut r = rng();
        assert_ne!(
            seal(&session(10), &k, BASE, &mut r),
            seal(&session(10), &k, BASE, &mut r)
        );
    }

    #[test]
    fn a_value_moved_to_another_cookie_name_or_format_is_refused() {
        let k = keys(&[[1; 32]]);
        let sealed = seal(&session(10), &k, BASE, &mut rng());
        assert!(open(&k, "__Host-other-session", &sealed).is_none());
        // The login cookie's format cannot be read as a session, nor the reverse.
        let as_login = crate::crypto::seal::open(
            &k,
            format!("oidc-filter login v1|{BASE}").as_bytes(),
            &sealed,
        );
        assert!(as_login.is_none());
        let moved = vec![("__Host-other-session".to_string(), sealed)];
        assert_eq!(
            read(&moved, &k, "__Host-other-session").unwrap_err(),
            Refused::Seal
        );
    }

    #[test]
    fn a_flipped_bit_in_any_chunk_is_refused() {
        let k = keys(&[[1; 32]]);
        let written = write(&session(9000), &k, BASE, &mut rng()).unwrap();
        for chunk in 0..written.len() {
            for position in [0, 7, 1000, 3000] {
                let mut tampered = written.clone();
                let value = &mut tampered[chunk].1;
                let start = if chunk == 0 { 2 } else { 0 };
                let Some(c) = value.chars().nth(start + position) else {
                    continue;
                };
                let replacement = if c == 'A' { "B" } else { "A" };
                value.replace_range(start + position..start + position + 1, replacement);
                assert!(
                    read(&tampered, &k, BASE).is_err(),
                    "chunk {chunk} position {position}"
                );
            }
        }
        // Whole-byte flips of a single cookie, across the value.
        let single = write(&session(100), &k, BASE, &mut rng()).unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(&single[0].1).unwrap();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            let parsed = vec![(BASE.to_string(), URL_SAFE_NO_PAD.encode(flipped))];
            assert_eq!(
                read(&parsed, &k, BASE).unwrap_err(),
                Refused::Seal,
                "byte {i}"
            );
        }
    }

    #[test]
    fn reordered_chunks_and_chunks_of_another_session_are_refused() {
        let k = keys(&[[1; 32]]);
        let mut r = rng();
        let written = write(&session(9000), &k, BASE, &mut r).unwrap();
        let mut swapped = written.clone();
        let (one, two) = (swapped[1].1.clone(), swapped[2].1.clone());
        swapped[1].1 = two;
        swapped[2].1 = one;
        assert_eq!(read(&swapped, &k, BASE).unwrap_err(), Refused::Seal);

        let mut other = session(9000);
        other.sub = "mallory".to_string();
        let theirs = write(&other, &k, BASE, &mut r).unwrap();
        assert_eq!(theirs.len(), written.len());
        for i in 0..written.len() {
            let mut mixed = written.clone();
            mixed[i] = theirs[i].clone();
            assert!(
                read(&mixed, &k, BASE).is_err(),
                "chunk {i} from another session"
            );
        }
    }

    #[test]
    fn missing_and_extra_chunks_are_refused() {
        let k = keys(&[[1; 32]]);
        let written = write(&session(9000), &k, BASE, &mut rng()).unwrap();
        let mut missing = written.clone();
        missing.pop();
        assert!(matches!(read(&missing, &k, BASE), Err(Refused::Chunks(_))));
        let mut extra = written.clone();
        extra.push((format!("{BASE}-{}", written.len()), "AAAA".to_string()));
        assert!(matches!(read(&extra, &k, BASE), Err(Refused::Chunks(_))));
    }

    #[test]
    fn rotation_opens_with_a_listed_old_key_and_reports_it() {
        let (old, new) = ([1; 32], [2; 32]);
        let written = write(&session(10), &keys(&[old]), BASE, &mut rng()).unwrap();

        let rotated = keys(&[new, old]);
        let opened = read(&written, &rotated, BASE).unwrap().unwrap();
        assert!(opened.sealed_with_retired_key);
        let resealed = write(&opened.session, &rotated, BASE, &mut rng()).unwrap();
        let reopened = read(&resealed, &keys(&[new]), BASE).unwrap().unwrap();
        assert!(!reopened.sealed_with_retired_key);
        assert_eq!(reopened.session, session(10));

        assert_eq!(
            read(&written, &keys(&[new]), BASE).unwrap_err(),
            Refused::Seal,
            "the old key removed: the cookie no longer opens"
        );
    }

    #[test]
    fn no_session_cookie_is_not_an_error() {
        let k = keys(&[[1; 32]]);
        let parsed = vec![("theirs".to_string(), "1".to_string())];
        assert!(read(&parsed, &k, BASE).unwrap().is_none());
    }

    #[test]
    fn a_sealed_non_session_is_refused() {
        let k = keys(&[[1; 32]]);
        let sealed = crate::crypto::seal::seal(&k, &associated_data(BASE), b"{}", &mut rng());
        assert!(open(&k, BASE, &sealed).is_none());
    }
}
