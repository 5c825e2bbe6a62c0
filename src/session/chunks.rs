//! Splitting a sealed session over numbered cookies and joining it back, strictly.
//!
//! Browsers keep about 4 KB per cookie, so a value longer than [`MAX_CHUNK_VALUE`]
//! becomes `<base>-0`, `<base>-1`, … with the count in front of the first value
//! (`<count>.<part>`). Joining refuses anything that is not exactly what
//! [`split`] wrote: a count out of range, a missing, repeated or surplus chunk,
//! or a single cookie next to chunks. Reordered chunks or chunks of another
//! session join into a value whose AEAD tag no longer matches.

use crate::http::cookies::{self, CookieAttributes};

/// Longest value per cookie: with the name and attributes it stays under 4096 bytes.
pub const MAX_CHUNK_VALUE: usize = 3800;
/// Beyond this a session is refused: browsers and Envoy (60 KiB of request
/// headers by default) would start dropping cookies.
pub const MAX_CHUNKS: usize = 10;
/// More chunks than this deserves a warning in the log: beyond two, the Cookie
/// header passes 8 KB, where curl stops sending cookies and many proxies
/// (nginx's default header buffers, for one) refuse the request.
pub const WARN_CHUNKS: usize = 2;
/// At most this many of our cookie names are expired in one response.
const MAX_EXPIRED: usize = 2 * MAX_CHUNKS;
/// Room for the `<count>.` prefix of the first chunk.
const COUNT_PREFIX: usize = 3;

/// The base name itself or `<base>-<digits>`.
pub fn is_session_cookie(name: &[u8], base: &str) -> bool {
    match name.strip_prefix(base.as_bytes()) {
        Some([]) => true,
        Some([b'-', digits @ ..]) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// `Some(i)` for `<base>-<i>` written the way [`split`] writes it.
fn chunk_index(name: &str, base: &str) -> Option<usize> {
    let digits = name.strip_prefix(base)?.strip_prefix('-')?;
    if digits.len() > 2 || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok().filter(|&i| i < MAX_CHUNKS)
}

/// Session cookie names in the request, each once, for expiring them later.
pub fn present_names(parsed: &[(String, String)], base: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in parsed {
        if is_session_cookie(name.as_bytes(), base) && !names.contains(name) {
            if names.len() == MAX_EXPIRED {
                break;
            }
            names.push(name.clone());
        }
    }
    names
}

#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// No session cookie at all.
    Absent,
    /// Session cookies that [`split`] cannot have written, with the reason for the log.
    Invalid(&'static str),
    Sealed(String),
}

pub fn join(parsed: &[(String, String)], base: &str) -> Joined {
    let ours: Vec<(&str, &str)> = parsed
        .iter()
        .filter(|(name, _)| is_session_cookie(name.as_bytes(), base))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if ours.is_empty() {
        return Joined::Absent;
    }
    let whole: Vec<&str> = ours
        .iter()
        .filter(|(n, _)| *n == base)
        .map(|(_, v)| *v)
        .collect();
    match (whole.as_slice(), ours.len()) {
        ([value], 1) => return Joined::Sealed((*value).to_string()),
        ([_], _) => return Joined::Invalid("a single session cookie next to chunks"),
        ([_, _, ..], _) => return Joined::Invalid("the session cookie is repeated"),
        ([], _) => {}
    }

    let mut slots: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    for (name, value) in ours {
        let Some(slot) = chunk_index(name, base).and_then(|i| slots.get_mut(i)) else {
            return Joined::Invalid("a session chunk with an unexpected number");
        };
        if slot.replace(value).is_some() {
            return Joined::Invalid("a session chunk is repeated");
        }
    }
    let Some((count, first)) = slots
        .first()
        .copied()
        .flatten()
        .and_then(|v| v.split_once('.'))
    else {
        return Joined::Invalid("the first session chunk is missing or has no count");
    };
    let count = match count.parse::<usize>() {
        Ok(n) if (2..=MAX_CHUNKS).contains(&n) && !count.starts_with('0') => n,
        _ => return Joined::Invalid("the session chunk count is out of range"),
    };
    let Some((expected, surplus)) = slots.split_at_checked(count) else {
        return Joined::Invalid("the session chunk count is out of range");
    };
    if surplus.iter().any(Option::is_some) {
        return Joined::Invalid("more session chunks than the count says");
    }
    let mut sealed = first.to_string();
    for part in expected.iter().skip(1) {
        match part {
            Some(part) => sealed.push_str(part),
            None => return Joined::Invalid("a session chunk is missing"),
        }
    }
    Joined::Sealed(sealed)
}

/// `(name, value)` pairs carrying `sealed`; `None` when it needs more than
/// [`MAX_CHUNKS`] cookies.
pub fn split(base: &str, sealed: &str) -> Option<Vec<(String, String)>> {
    if sealed.len() <= MAX_CHUNK_VALUE {
        return Some(vec![(base.to_string(), sealed.to_string())]);
    }
    let per_chunk = MAX_CHUNK_VALUE - COUNT_PREFIX;
    let count = sealed.len().div_ceil(per_chunk);
    if count > MAX_CHUNKS {
        return None;
    }
    // Sealed values are base64url, so any byte boundary is a char boundary.
    let parts = sealed
        .as_bytes()
        .chunks(per_chunk)
        .map(String::from_utf8_lossy)
        .enumerate()
        .map(|(i, part)| {
            let value = if i == 0 {
                format!("{count}.{part}")
            } else {
                part.into_owned()
            };
            (format!("{base}-{i}"), value)
        })
        .collect();
    Some(parts)
}

/// `Set-Cookie` headers writing `chunks` and expiring every name in `present`
/// that they do not overwrite (what is left of a larger or differently split session).
pub fn write_headers(
    chunks: &[(String, String)],
    present: &[String],
    max_age: u64,
    attrs: &CookieAttributes,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = chunks
        .iter()
        .map(|(name, value)| {
            (
                "set-cookie".to_string(),
                cookies::set_cookie(name, value, Some(max_age), attrs),
            )
        })
        .collect();
    let stale = present
        .iter()
        .filter(|name| !chunks.iter().any(|(written, _)| written == *name));
    headers.extend(expire_headers(stale, attrs));
    headers
}

pub fn expire_headers<'a>(
    names: impl IntoIterator<Item = &'a String>,
    attrs: &CookieAttributes,
) -> Vec<(String, String)> {
    names
        .into_iter()
        .take(MAX_EXPIRED)
        .map(|name| {
            (
                "set-cookie".to_string(),
                cookies::set_cookie(name, "", Some(0), attrs),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::cookies::SameSite;

    const BASE: &str = "__Host-oidc-session";

    fn attrs() -> CookieAttributes {
        CookieAttributes {
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_string(),
            domain: None,
        }
    }

    fn value(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"[i % 54]))
            .collect()
    }

    fn owned(pairs: &[(String, String)]) -> Vec<(String, String)> {
        pairs.to_vec()
    }

    #[test]
    fn a_small_value_is_one_cookie_under_the_base_name() {
        let sealed = value(MAX_CHUNK_VALUE);
        let chunks = split(BASE, &sealed).unwrap();
        assert_eq!(chunks, vec![(BASE.to_string(), sealed.clone())]);
        assert_eq!(join(&chunks, BASE), Joined::Sealed(sealed));
    }

    #[test]
    fn a_large_value_is_split_in_order_and_joined_back() {
        for len in [MAX_CHUNK_VALUE + 1, 3 * MAX_CHUNK_VALUE, 20_000] {
            let sealed = value(len);
            let chunks = split(BASE, &sealed).unwrap();
            assert!(chunks.len() >= 2);
            for (i, (name, v)) in chunks.iter().enumerate() {
                assert_eq!(name, &format!("{BASE}-{i}"));
                assert!(
                    v.len() <= MAX_CHUNK_VALUE,
                    "{len}: chunk {i} is {}",
                    v.len()
                );
            }
            assert!(chunks[0].1.starts_with(&format!("{}.", chunks.len())));
            assert_eq!(join(&chunks, BASE), Joined::Sealed(sealed.clone()));
            // The browser may send them in any order.
            let mut reversed = owned(&chunks);
            reversed.reverse();
            assert_eq!(join(&reversed, BASE), Joined::Sealed(sealed));
        }
    }

    #[test]
    fn a_value_needing_too_many_chunks_is_refused() {
        assert!(split(BASE, &value(MAX_CHUNKS * MAX_CHUNK_VALUE)).is_none());
    }

    #[test]
    fn other_cookies_are_ignored_and_no_session_is_absent() {
        let parsed = vec![
            ("theirs".to_string(), "1".to_string()),
            (format!("{BASE}x"), "1".to_string()),
            ("__Host-oidc-login-abc".to_string(), "1".to_string()),
        ];
        assert_eq!(join(&parsed, BASE), Joined::Absent);
        assert!(present_names(&parsed, BASE).is_empty());
    }

    #[test]
    fn missing_extra_repeated_and_mixed_chunks_are_invalid() {
        let chunks = split(BASE, &value(3 * MAX_CHUNK_VALUE)).unwrap();
        assert_eq!(chunks.len(), 4);
        let invalid = |parsed: Vec<(String, String)>| {
            assert!(
                matches!(join(&parsed, BASE), Joined::Invalid(_)),
                "{:?}",
                parsed.iter().map(|(n, _)| n).collect::<Vec<_>>()
            );
        };
        for missing in 0..chunks.len() {
            let mut parsed = owned(&chunks);
            parsed.remove(missing);
            invalid(parsed);
        }
        let mut extra = owned(&chunks);
        extra.push((format!("{BASE}-4"), "AAAA".to_string()));
        invalid(extra);
        let mut repeated = owned(&chunks);
        repeated.push(chunks[2].clone());
        invalid(repeated);
        let mut mixed = owned(&chunks);
        mixed.push((BASE.to_string(), "AAAA".to_string()));
        invalid(mixed);
        invalid(vec![
            (BASE.to_string(), "A".to_string()),
            (BASE.to_string(), "B".to_string()),
        ]);
        for bad_name in ["-00", "-01", "-99", "-123456789012345678901234567890"] {
            let mut parsed = owned(&chunks);
            parsed.push((format!("{BASE}{bad_name}"), "A".to_string()));
            invalid(parsed);
        }
    }

    #[test]
    fn a_wrong_count_is_invalid() {
        let chunks = split(BASE, &value(3 * MAX_CHUNK_VALUE)).unwrap();
        let body = chunks[0].1.split_once('.').unwrap().1.to_string();
        for count in ["", "1", "3", "5", "04", "11", "x", "-4"] {
            let mut parsed = owned(&chunks);
            parsed[0].1 = format!("{count}.{body}");
            assert!(
                matches!(join(&parsed, BASE), Joined::Invalid(_)),
                "count {count:?}"
            );
        }
        let mut no_count = owned(&chunks);
        no_count[0].1 = body;
        assert!(matches!(join(&no_count, BASE), Joined::Invalid(_)));
    }

    #[test]
    fn session_cookie_names_are_recognised_exactly() {
        for name in [BASE, "__Host-oidc-session-0", "__Host-oidc-session-12"] {
            assert!(is_session_cookie(name.as_bytes(), BASE), "{name}");
        }
        for name in [
            "__Host-oidc-session-",
            "__Host-oidc-session-a",
            "__Host-oidc-sessions",
            "__Host-oidc-login-x",
            "oidc-session",
        ] {
            assert!(!is_session_cookie(name.as_bytes(), BASE), "{name}");
        }
    }

    #[test]
    fn writing_a_smaller_session_expires_the_chunks_it_no_longer_uses() {
        let present: Vec<String> = (0..4).map(|i| format!("{BASE}-{i}")).collect();
        let chunks = split(BASE, &value(100)).unwrap();
        let headers = write_headers(&chunks, &present, 3600, &attrs());
        let values: Vec<&str> = headers.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values.len(), 5);
        assert!(values[0].starts_with(&format!("{BASE}=")) && values[0].contains("Max-Age=3600"));
        for (i, v) in values[1..].iter().enumerate() {
            assert!(v.starts_with(&format!("{BASE}-{i}=;")), "{v}");
            assert!(v.contains("Max-Age=0"), "{v}");
        }

        // Growing again expires the single cookie and keeps overwritten chunk names.
        let chunks = split(BASE, &value(2 * MAX_CHUNK_VALUE)).unwrap();
        let present = vec![BASE.to_string(), format!("{BASE}-0")];
        let headers = write_headers(&chunks, &present, 60, &attrs());
        let expired: Vec<&str> = headers
            .iter()
            .filter(|(_, v)| v.contains("Max-Age=0"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(expired.len(), 1);
        assert!(expired[0].starts_with(&format!("{BASE}=;")));
    }

    #[test]
    fn the_names_to_expire_are_bounded() {
        let parsed: Vec<(String, String)> = (0..500)
            .map(|i| (format!("{BASE}-{i}"), "x".to_string()))
            .collect();
        let names = present_names(&parsed, BASE);
        assert_eq!(names.len(), MAX_EXPIRED);
        assert_eq!(expire_headers(&names, &attrs()).len(), MAX_EXPIRED);
    }
}
