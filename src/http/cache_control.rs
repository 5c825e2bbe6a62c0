//! `Cache-Control` for upstream responses that carry a session cookie: a shared
//! cache must never store one and hand it to another user.

/// Whether the filter adds a `Set-Cookie` to the upstream's response.
pub fn sets_cookie(added: &[(String, String)]) -> bool {
    added
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
}

/// The upstream's `Cache-Control` values merged with `private`: `public` and
/// any other `private` form go, everything else (`no-store`, `max-age`, …)
/// stays, so the result is never weaker than what the upstream sent.
/// Directives that are not visible ASCII are dropped rather than echoed.
pub fn make_private(upstream: &[Vec<u8>]) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for value in upstream {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for directive in directives(value) {
            let name = directive.split('=').next().unwrap_or_default().trim_end();
            let printable = directive
                .bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
            if printable
                && !name.eq_ignore_ascii_case("public")
                && !name.eq_ignore_ascii_case("private")
            {
                kept.push(directive);
            }
        }
    }
    kept.push("private");
    kept.join(", ")
}

/// Comma-separated directives, trimmed, with commas inside quoted strings
/// (`no-cache="set-cookie, x"`) left alone.
fn directives(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(values: &[&str]) -> String {
        let values: Vec<Vec<u8>> = values.iter().map(|v| v.as_bytes().to_vec()).collect();
        make_private(&values)
    }

    #[test]
    fn shared_caches_are_told_to_keep_out() {
        assert_eq!(merged(&[]), "private");
        assert_eq!(merged(&[""]), "private");
        assert_eq!(merged(&["public, max-age=600"]), "max-age=600, private");
        assert_eq!(merged(&["PUBLIC", "s-maxage=60"]), "s-maxage=60, private");
        assert_eq!(
            merged(&["private=\"x-a\", max-age=5"]),
            "max-age=5, private"
        );
        assert_eq!(merged(&["private"]), "private");
    }

    #[test]
    fn stronger_directives_stay() {
        assert_eq!(merged(&["no-store"]), "no-store, private");
        assert_eq!(
            merged(&["public, no-store", "no-cache"]),
            "no-store, no-cache, private"
        );
        assert_eq!(
            merged(&["no-cache=\"set-cookie, x-b\" , must-revalidate"]),
            "no-cache=\"set-cookie, x-b\", must-revalidate, private"
        );
        assert_eq!(
            merged(&["no-cache=\"a\\\", public\", max-age=1"]),
            "no-cache=\"a\\\", public\", max-age=1, private"
        );
    }

    #[test]
    fn odd_bytes_are_not_echoed() {
        let values = vec![
            b"max-age=1, \xff\xfe".to_vec(),
            b"x=\x01, no-store".to_vec(),
        ];
        assert_eq!(make_private(&values), "no-store, private");
        assert_eq!(merged(&[",,, ,"]), "private");
        assert_eq!(
            merged(&["\"unterminated, public"]),
            "\"unterminated, public, private"
        );
    }

    #[test]
    fn only_a_set_cookie_calls_for_it() {
        let header = |n: &str| vec![(n.to_string(), "v".to_string())];
        assert!(sets_cookie(&header("set-cookie")));
        assert!(!sets_cookie(&header("x-other")));
        assert!(!sets_cookie(&[]));
    }
}
