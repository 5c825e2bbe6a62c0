//! Cookie parsing from raw (possibly non-UTF-8) header bytes and `Set-Cookie` building.

/// One `;`-separated segment of a `Cookie` header, trimmed of surrounding whitespace.
struct RawPair<'a> {
    /// Empty when the segment has no `=` (browsers treat it as a nameless value).
    name: &'a [u8],
    value: &'a [u8],
    whole: &'a [u8],
}

fn raw_pairs(header: &[u8]) -> impl Iterator<Item = RawPair<'_>> {
    header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|whole| !whole.is_empty())
        .map(|whole| match whole.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let (name, rest) = whole.split_at(eq);
                RawPair {
                    name: name.trim_ascii(),
                    value: rest.get(1..).unwrap_or_default().trim_ascii(),
                    whole,
                }
            }
            None => RawPair {
                name: &[],
                value: whole,
                whole,
            },
        })
}

/// `name=value` pairs from every `Cookie` header, in order. Pairs whose name or
/// value is not UTF-8 are kept out of the parsed list (they are never ours) but
/// survive in [`strip_cookies`].
pub fn parse_cookies<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .flat_map(raw_pairs)
        .filter(|p| !p.name.is_empty())
        .filter_map(|p| {
            let name = std::str::from_utf8(p.name).ok()?;
            let value = std::str::from_utf8(p.value).ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The value of the first cookie called `name`. Browsers send the cookie with the
/// most specific path first, so the first one is the one set for this path.
pub fn cookie_value<'a>(cookies: &'a [(String, String)], name: &str) -> Option<&'a str> {
    cookies
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Every `(name, value)` whose name starts with `prefix`, in order (for per-flow
/// cookies such as `prefix-<flow id>`).
pub fn cookies_with_prefix<'a>(
    cookies: &'a [(String, String)],
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    cookies
        .iter()
        .filter(move |(n, _)| n.starts_with(prefix))
        .map(|(n, v)| (n.as_str(), v.as_str()))
}

/// The `Cookie` header to send upstream: every pair except those `is_ours` names,
/// joined with `"; "`, bytes preserved. `None` when nothing is left.
pub fn strip_cookies<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    is_ours: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for header in headers {
        for pair in raw_pairs(header) {
            if !pair.name.is_empty() && is_ours(pair.name) {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair.whole);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    /// The attribute value as written in `Set-Cookie`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Attributes shared by every cookie the filter sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttributes {
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    pub path: String,
    pub domain: Option<String>,
}

/// A `Set-Cookie` value. `max_age: Some(0)` expires the cookie; `None` makes a
/// session cookie.
///
/// `name` and `value` are written as given: callers pass cookie-safe text (our
/// names, base64url values). `SameSite=None` without `Secure` is written too;
/// refusing that combination is the configuration's job.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age: Option<u64>,
    attrs: &CookieAttributes,
) -> String {
    let mut out = format!("{name}={value}; Path={}", attrs.path);
    if let Some(domain) = &attrs.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    if let Some(max_age) = max_age {
        out.push_str(&format!("; Max-Age={max_age}"));
        if max_age == 0 {
            // Clients that predate Max-Age only honour Expires.
            out.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        }
    }
    if attrs.secure {
        out.push_str("; Secure");
    }
    if attrs.http_only {
        out.push_str("; HttpOnly");
    }
    out.push_str("; SameSite=");
    out.push_str(attrs.same_site.as_str());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_single_header() {
        let h: &[u8] = b"a=1; b=2;c=3";
        assert_eq!(
            parse_cookies([h]),
            pairs(&[("a", "1"), ("b", "2"), ("c", "3")])
        );
    }

    #[test]
    fn parses_multiple_headers_in_order() {
        let h1: &[u8] = b"a=1; b=2";
        let h2: &[u8] = b"c=3; a=4";
        assert_eq!(
            parse_cookies([h1, h2]),
            pairs(&[("a", "1"), ("b", "2"), ("c", "3"), ("a", "4")])
        );
    }

    #[test]
    fn splits_at_first_equals_and_keeps_value_bytes() {
        let h: &[u8] = b"tok=abc==; q=\"quoted\"; e=; sp = x y ";
        assert_eq!(
            parse_cookies([h]),
            pairs(&[
                ("tok", "abc=="),
                ("q", "\"quoted\""),
                ("e", ""),
                ("sp", "x y")
            ])
        );
    }

    #[test]
    fn drops_nameless_empty_and_non_utf8_pairs() {
        let h: &[u8] = b"=v; novalue; ;; a=1; bad\xff=x; b=\xfe\xfd; c=\xc3\xa9; \t";
        assert_eq!(parse_cookies([h]), pairs(&[("a", "1"), ("c", "é")]));
    }

    #[test]
    fn parses_nothing_from_nothing() {
        assert!(parse_cookies(Vec::<&[u8]>::new()).is_empty());
        let h: &[u8] = b"";
        assert!(parse_cookies([h]).is_empty());
    }

    #[test]
    fn cookie_value_returns_first_match() {
        let c = pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(cookie_value(&c, "a"), Some("1"));
        assert_eq!(cookie_value(&c, "b"), Some("2"));
        assert_eq!(cookie_value(&c, "A"), None);
        assert_eq!(cookie_value(&c, ""), None);
    }

    #[test]
    fn cookies_with_prefix_filters_in_order() {
        let c = pairs(&[
            ("oidc-s", "1"),
            ("other", "2"),
            ("oidc-f1", "3"),
            ("oidc", "4"),
        ]);
        let found: Vec<_> = cookies_with_prefix(&c, "oidc-").collect();
        assert_eq!(found, vec![("oidc-s", "1"), ("oidc-f1", "3")]);
    }

    #[test]
    fn strip_removes_ours_and_preserves_others_byte_exactly() {
        let h1: &[u8] = b"a=1;ours=secret;  weird\xff=\xfe\x01x ; nov";
        let h2: &[u8] = b"ours=again; q=\"x y\";=empty";
        let out = strip_cookies([h1, h2], |n| n == b"ours").unwrap();
        assert_eq!(
            out,
            b"a=1; weird\xff=\xfe\x01x; nov; q=\"x y\"; =empty".to_vec()
        );
    }

    #[test]
    fn strip_matches_trimmed_names() {
        let h: &[u8] = b"ours =x; keep=1";
        assert_eq!(strip_cookies([h], |n| n == b"ours").unwrap(), b"keep=1");
    }

    #[test]
    fn strip_returns_none_when_nothing_left() {
        let h: &[u8] = b"ours=1; ; ours-2=2";
        assert_eq!(strip_cookies([h], |n| n.starts_with(b"ours")), None);
        assert_eq!(strip_cookies(Vec::<&[u8]>::new(), |_| false), None);
    }

    #[test]
    fn strip_never_passes_a_nameless_pair_as_ours() {
        let h: &[u8] = b"=x; y";
        assert_eq!(strip_cookies([h], |n| n.is_empty()).unwrap(), b"=x; y");
    }

    fn attrs() -> CookieAttributes {
        CookieAttributes {
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
        }
    }

    #[test]
    fn set_cookie_full() {
        assert_eq!(
            set_cookie("s", "v", Some(3600), &attrs()),
            "s=v; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn set_cookie_session_with_domain() {
        let a = CookieAttributes {
            domain: Some("example.com".into()),
            same_site: SameSite::Strict,
            ..attrs()
        };
        assert_eq!(
            set_cookie("s", "v", None, &a),
            "s=v; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn set_cookie_expire_adds_expires() {
        assert_eq!(
            set_cookie("s", "", Some(0), &attrs()),
            "s=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn set_cookie_without_flags() {
        let a = CookieAttributes {
            secure: false,
            http_only: false,
            same_site: SameSite::None,
            path: "/app".into(),
            domain: None,
        };
        assert_eq!(
            set_cookie("s", "v", Some(5), &a),
            "s=v; Path=/app; Max-Age=5; SameSite=None"
        );
    }

    #[test]
    fn same_site_strings() {
        assert_eq!(SameSite::Strict.as_str(), "Strict");
        assert_eq!(SameSite::Lax.as_str(), "Lax");
        assert_eq!(SameSite::None.as_str(), "None");
    }
}
