//! Request targets: splitting, normalising for rules, and deciding what may be a redirect target.

use percent_encoding::percent_decode;
use std::borrow::Cow;

/// Encodings nested deeper than this are refused rather than decoded further.
const MAX_DECODE_ROUNDS: usize = 3;

/// Splits a `:path` pseudo-header into path and query (without the `?`).
pub fn split_path_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(q) => {
            let (path, rest) = target.split_at(q);
            (path, rest.get(1..))
        }
        None => (target, None),
    }
}

/// The request target to return to after login, if it is a same-origin path.
/// Refuses anything a browser could read as another origin: absolute URLs,
/// `//host`, `/\host`, their percent-encoded and control-character variants,
/// and non-UTF-8.
///
/// The accepted value is the original target, unchanged. Requiring a leading
/// `/` also refuses every scheme (`https:`, `javascript:`). The path is checked
/// again after each round of percent-decoding, because some servers and
/// frameworks decode before redirecting; the query is checked only as sent,
/// since it never decides where a browser goes and decoding it would refuse
/// ordinary values such as `?q=a%20b` or `?next=%2F%2Fx`.
pub fn same_origin_return_target(target: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(target).ok()?;
    if !is_local_location(text) {
        return None;
    }
    let (path, _query) = split_path_query(target);
    let mut current: Vec<u8> = path.to_vec();
    for _ in 0..MAX_DECODE_ROUNDS {
        let decoded = match Cow::from(percent_decode(&current)) {
            Cow::Borrowed(_) => return Some(text.to_owned()),
            Cow::Owned(decoded) => decoded,
        };
        if !is_local_location(std::str::from_utf8(&decoded).ok()?) {
            return None;
        }
        current = decoded;
    }
    // Still decodable after the last round: only an attempt to hide something nests this deep.
    match Cow::from(percent_decode(&current)) {
        Cow::Borrowed(_) => Some(text.to_owned()),
        Cow::Owned(_) => None,
    }
}

/// One leading `/` not followed by another separator, and nothing a browser
/// strips, folds into `/` or splits a header on.
fn is_local_location(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !s
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

/// Why [`normalize_path`] refused a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Empty, or does not start with `/`.
    NotAbsolute,
    /// `%2F` or `%5C`: servers disagree on whether an encoded separator splits segments.
    EncodedSeparator,
    /// `%25`: a second decoding, by the upstream, would yield a different path.
    EncodedPercent,
    /// A `%` not followed by two hex digits.
    BadEncoding,
    /// A control character, raw or percent-encoded (`%00`, `%0A`, ...).
    ControlChar,
    /// A raw backslash, which some servers read as `/`.
    Backslash,
    /// Not UTF-8 after decoding (including overlong forms such as `%C0%AE`).
    NotUtf8,
    /// A `..` segment that would climb above the root.
    Traversal,
    /// A dot segment with a `;` parameter (`..;`), which some servers treat as `..`.
    DotSegmentParameter,
}

/// The path as rules should see it: percent-decoded, duplicate slashes
/// collapsed, `.` and `..` resolved, trailing slash kept. `path` excludes the
/// query. Anything that different servers could read as different paths is
/// an error rather than a guess, so a rule cannot be bypassed by a spelling
/// the upstream resolves differently.
pub fn normalize_path(path: &[u8]) -> Result<String, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    check_escapes(path)?;
    let decoded: Cow<[u8]> = percent_decode(path).into();
    if decoded.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::ControlChar);
    }
    let decoded = std::str::from_utf8(&decoded).map_err(|_| PathError::NotUtf8)?;

    let mut segments: Vec<&str> = Vec::new();
    // RFC 3986 §5.2.4: a path ending in `/`, `.` or `..` names a directory.
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::Traversal)?;
            }
            _ if matches!(segment.split(';').next(), Some("." | "..")) => {
                return Err(PathError::DotSegmentParameter);
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Refuses the escapes whose meaning depends on who decodes them, before decoding.
fn check_escapes(path: &[u8]) -> Result<(), PathError> {
    let mut rest = path;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        let escape = rest.get(at + 1..at + 3).ok_or(PathError::BadEncoding)?;
        if !escape.iter().all(u8::is_ascii_hexdigit) {
            return Err(PathError::BadEncoding);
        }
        if escape.eq_ignore_ascii_case(b"2f") || escape.eq_ignore_ascii_case(b"5c") {
            return Err(PathError::EncodedSeparator);
        }
        if escape == b"25" {
            return Err(PathError::EncodedPercent);
        }
        rest = rest.get(at + 3..).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_query_cases() {
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);
        let cases: &[Case] = &[
            (b"/a/b", b"/a/b", None),
            (b"/a?x=1", b"/a", Some(b"x=1")),
            (b"/a?", b"/a", Some(b"")),
            (b"/a?x=1?y=2", b"/a", Some(b"x=1?y=2")),
            (b"?q", b"", Some(b"q")),
            (b"", b"", None),
            (b"/\xff?\xfe", b"/\xff", Some(b"\xfe")),
        ];
        for (input, path, query) in cases {
            assert_eq!(split_path_query(input), (*path, *query), "{input:?}");
        }
    }

    #[test]
    fn return_target_accepted() {
        for target in [
            "/",
            "/app",
            "/app/page?x=1&y=2",
            "/ok?next=//evil",
            "/ok?next=https://evil.example",
            "/search?q=a%20b",
            "/a%2Fb",
            "/caf%C3%A9",
            "/café",
            "/%2541",
            "/a:b",
            "/a/../b",
        ] {
            assert_eq!(
                same_origin_return_target(target.as_bytes()).as_deref(),
                Some(target),
                "{target}"
            );
        }
    }

    #[test]
    fn return_target_refused() {
        let refused: &[&[u8]] = &[
            b"",
            b"//evil.example",
            b"///evil.example",
            b"/\\evil",
            b"\\\\evil",
            b"/a\\b",
            b"https://evil.example",
            b"javascript:alert(1)",
            b"evil.example/path",
            b"%2F%2Fevil",
            b"/%2F%2Fevil",
            b"/%2f%2fevil",
            b"/%2Fevil.example",
            b"/%5Cevil",
            b"/%252F%252Fevil",
            b"/%25252F%25252Fevil",
            b"/%2525252Fevil",
            b"/path with space",
            b"/a%0d%0aSet-Cookie",
            b"/a\r\nSet-Cookie: x=1",
            b"/a\tb",
            b"/a%09b",
            b"/a%20b",
            b"/\x7f",
            b"/a\xc2\x85b",
            b"/a\xe3\x80\x80b",
            b"/ok?next=\\evil",
            b"/ok?x= y",
            b"/\xff",
            b"/%ff",
            b"/%C0%AE",
            b" /app",
        ];
        for target in refused {
            assert_eq!(
                same_origin_return_target(target),
                None,
                "{}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn normalize_table() {
        use PathError::*;
        let cases: &[(&[u8], Result<&str, PathError>)] = &[
            (b"/", Ok("/")),
            (b"/admin", Ok("/admin")),
            (b"/admin/", Ok("/admin/")),
            (b"/public/../admin", Ok("/admin")),
            (b"//admin", Ok("/admin")),
            (b"/a//b///c", Ok("/a/b/c")),
            (b"/public/%2e%2e/admin", Ok("/admin")),
            (b"/public/%2E./admin", Ok("/admin")),
            (b"/a/./b", Ok("/a/b")),
            (b"/a/b/.", Ok("/a/b/")),
            (b"/a/b/..", Ok("/a/")),
            (b"/a/..", Ok("/")),
            (b"/..a/...", Ok("/..a/...")),
            (b"/%61dmin", Ok("/admin")),
            (b"/caf%C3%A9", Ok("/café")),
            (b"/a%3Fb", Ok("/a?b")),
            (b"/a;x/b", Ok("/a;x/b")),
            (b"/%2Fadmin", Err(EncodedSeparator)),
            (b"/public/..%2Fadmin", Err(EncodedSeparator)),
            (b"/public/..%2fadmin", Err(EncodedSeparator)),
            (b"/public/..%5Cadmin", Err(EncodedSeparator)),
            (b"/public/%252e%252e/admin", Err(EncodedPercent)),
            (b"/a%", Err(BadEncoding)),
            (b"/a%2", Err(BadEncoding)),
            (b"/a%zz", Err(BadEncoding)),
            (b"/a%%32%65", Err(BadEncoding)),
            (b"/a%00", Err(ControlChar)),
            (b"/a%0A", Err(ControlChar)),
            (b"/a\tb", Err(ControlChar)),
            (b"/a%7f", Err(ControlChar)),
            (b"/a\\b", Err(Backslash)),
            (b"/public\\..\\admin", Err(Backslash)),
            (b"/\xff", Err(NotUtf8)),
            (b"/%ff", Err(NotUtf8)),
            (b"/%C0%AE%C0%AE/admin", Err(NotUtf8)),
            (b"/../x", Err(Traversal)),
            (b"/a/../../x", Err(Traversal)),
            (b"/%2e%2e/x", Err(Traversal)),
            (b"/public/..;/admin", Err(DotSegmentParameter)),
            (b"/public/.;x/admin", Err(DotSegmentParameter)),
            (b"", Err(NotAbsolute)),
            (b"admin", Err(NotAbsolute)),
            (b"%2Fadmin", Err(NotAbsolute)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                normalize_path(input).as_deref().map_err(|e| *e),
                *expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn normalize_is_idempotent_on_accepted_paths() {
        for input in ["/a/./b/../c/", "//x//y", "/public/%2e%2e/admin", "/"] {
            let once = normalize_path(input.as_bytes()).unwrap();
            assert_eq!(normalize_path(once.as_bytes()).unwrap(), once);
        }
    }
}
