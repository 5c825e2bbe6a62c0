//! Path patterns over normalized paths: public paths (exact or prefix) and
//! segment-aware prefixes for rules and API routes.

use crate::http::paths::normalize_path;

/// A configured public path: an entry ending in `/` is a prefix, any other is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicPath {
    Exact(String),
    Prefix(String),
}

impl PublicPath {
    /// `entry` must already be in normalized form, so what the operator wrote is
    /// exactly what is compared.
    pub fn parse(entry: &str) -> Option<PublicPath> {
        if !is_normalized_pattern(entry) {
            return None;
        }
        Some(if entry.ends_with('/') {
            PublicPath::Prefix(entry.to_string())
        } else {
            PublicPath::Exact(entry.to_string())
        })
    }

    /// `path` must come from [`normalize_path`]: a raw path could reach a
    /// protected resource through `..` or an encoding while looking public.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PublicPath::Exact(p) => path == p,
            PublicPath::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// Whether normalized `path` is `prefix` or lies below it, segment by segment:
/// `/admin` and `/admin/` both cover `/admin` and `/admin/x`, never `/administrator`.
/// Matching `/admin` for `/admin/` matters for rules: most servers answer both.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    let base = prefix.trim_end_matches('/');
    if base.is_empty() {
        return true;
    }
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// [`under_prefix`] with ASCII letters compared ignoring case (prefixes are
/// ASCII: see [`is_normalized_pattern`]).
pub fn under_prefix_ignoring_case(path: &str, prefix: &str) -> bool {
    let base = prefix.trim_end_matches('/').as_bytes();
    let path = path.as_bytes();
    match path.get(..base.len()) {
        Some(head) if head.eq_ignore_ascii_case(base) => {
            matches!(path.get(base.len()), None | Some(b'/'))
        }
        _ => false,
    }
}

/// A configured path is accepted only in the form [`normalize_path`] produces and
/// without characters that would be percent-encoded on the wire, so it can
/// never differ from the normalized request path it is compared with by spelling.
pub fn is_normalized_pattern(entry: &str) -> bool {
    entry.starts_with('/')
        && entry
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%' | b'\\'))
        && normalize_path(entry.as_bytes()).as_deref() == Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::paths::{split_path_query, PathError};

    /// What a request target resolves to: public or not, or refused outright.
    fn public(patterns: &[PublicPath], target: &[u8]) -> Result<bool, PathError> {
        let (path, _query) = split_path_query(target);
        let path = normalize_path(path)?;
        Ok(patterns.iter().any(|p| p.matches(&path)))
    }

    #[test]
    fn tricky_targets_never_look_public() {
        use PathError::*;
        let patterns: Vec<PublicPath> = ["/health", "/static/"]
            .iter()
            .map(|e| PublicPath::parse(e).unwrap())
            .collect();
        let cases: &[(&[u8], Result<bool, PathError>)] = &[
            (b"/health", Ok(true)),
            (b"/health?x=1", Ok(true)),
            (b"/static/app.js", Ok(true)),
            (b"/static/", Ok(true)),
            (b"//static/x", Ok(true)),
            (b"/static/./x", Ok(true)),
            (b"/static/a/../b", Ok(true)),
            // The query never counts.
            (b"/admin?x=/health", Ok(false)),
            (b"/admin?/static/", Ok(false)),
            (b"/health/", Ok(false)),
            (b"/health/x", Ok(false)),
            (b"/healthz", Ok(false)),
            (b"/static", Ok(false)),
            (b"/staticx/a", Ok(false)),
            (b"/Static/x", Ok(false)),
            (b"/static/../admin", Ok(false)),
            (b"/static/%2e%2e/admin", Ok(false)),
            (b"/static/%2E%2E/admin", Ok(false)),
            (b"/static/.%2e/admin", Ok(false)),
            (b"/static/x/../../admin", Ok(false)),
            (b"/%68ealth", Ok(true)),
            (b"/static%2F..%2Fadmin", Err(EncodedSeparator)),
            (b"/static/..%2fadmin", Err(EncodedSeparator)),
            (b"/static/..%5Cadmin", Err(EncodedSeparator)),
            (b"/static/%252e%252e/admin", Err(EncodedPercent)),
            (b"/static\\..\\admin", Err(Backslash)),
            (b"/static/..;/admin", Err(DotSegmentParameter)),
            (b"/static/\xff", Err(NotUtf8)),
            (b"/static/%C0%AE%C0%AE/admin", Err(NotUtf8)),
            (b"/health%00", Err(ControlChar)),
            (b"/static/../../admin", Err(Traversal)),
            (b"static/x", Err(NotAbsolute)),
            (b"*", Err(NotAbsolute)),
        ];
        for (target, expected) in cases {
            assert_eq!(
                public(&patterns, target),
                *expected,
                "{}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn patterns_must_be_normalized() {
        for ok in ["/", "/health", "/static/", "/a/b.css", "/a:b"] {
            assert!(PublicPath::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "health", "//x", "/a/../b", "/a/./b", "/a%2Fb", "/a?b", "/a#b", "/a b", "/a\\b",
            "/ä",
        ] {
            assert!(PublicPath::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn prefixes_respect_segments() {
        assert!(under_prefix("/admin", "/admin/"));
        assert!(under_prefix("/admin/", "/admin/"));
        assert!(under_prefix("/admin/x", "/admin"));
        assert!(!under_prefix("/administrator", "/admin/"));
        assert!(!under_prefix("/administrator", "/admin"));
        assert!(!under_prefix("/", "/admin/"));
        assert!(under_prefix("/anything", "/"));
        assert!(under_prefix_ignoring_case("/Admin", "/admin/"));
        assert!(under_prefix_ignoring_case("/ADMIN/x", "/admin"));
        assert!(under_prefix_ignoring_case("/admin/", "/Admin/"));
        assert!(!under_prefix_ignoring_case("/Administrator", "/admin/"));
        assert!(!under_prefix_ignoring_case("/", "/admin/"));
        assert!(!under_prefix_ignoring_case("/adm", "/admin/"));
        assert!(under_prefix_ignoring_case("/anything", "/"));
    }
}
