//! Whether a request is a browser navigation that can follow a login redirect.
//!
//! Everything else (XHR, fetch, API clients, form posts) gets a 401 it can react
//! to: a cross-site redirect to the provider is useless to a script, and
//! replaying a POST after login is impossible.

use super::public_paths::under_prefix;

/// `headers` as the client sent them (names lower-case); `path` normalized.
pub fn is_navigation(
    method: &str,
    headers: &[(String, Vec<u8>)],
    path: &str,
    api_path_prefixes: &[String],
) -> bool {
    if !matches!(method, "GET" | "HEAD") {
        return false;
    }
    if api_path_prefixes.iter().any(|p| under_prefix(path, p)) {
        return false;
    }
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };
    if values("x-requested-with").any(|v| trimmed(v).eq_ignore_ascii_case(b"xmlhttprequest")) {
        return false;
    }
    // Browsers send `navigate` for top-level and frame navigations only; `cors`,
    // `no-cors`, `same-origin` and `websocket` come from scripts and subresources.
    if values("sec-fetch-mode").any(|v| !trimmed(v).eq_ignore_ascii_case(b"navigate")) {
        return false;
    }
    let mut accepts = values("accept").peekable();
    if accepts.peek().is_some() && !accepts.any(accepts_html) {
        return false;
    }
    true
}

fn accepts_html(accept: &[u8]) -> bool {
    accept.split(|&b| b == b',').any(|range| {
        let media = range.split(|&b| b == b';').next().unwrap_or_default();
        let media = trimmed(media);
        media.eq_ignore_ascii_case(b"text/html")
            || media.eq_ignore_ascii_case(b"application/xhtml+xml")
    })
}

fn trimmed(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers<'a> = &'a [(&'a str, &'a str)];

    const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[test]
    fn classification_table() {
        let api = vec!["/api/".to_string()];
        let cases: &[(&str, &str, Headers, bool)] = &[
            ("GET", "/", &[], true),
            ("HEAD", "/", &[], true),
            ("GET", "/", &[("accept", BROWSER_ACCEPT)], true),
            ("GET", "/", &[("accept", "TEXT/HTML;q=0.5")], true),
            ("GET", "/", &[("accept", "application/xhtml+xml")], true),
            (
                "GET",
                "/",
                &[("sec-fetch-mode", "navigate"), ("accept", BROWSER_ACCEPT)],
                true,
            ),
            ("GET", "/", &[("x-requested-with", "com.example.app")], true),
            ("GET", "/apiary", &[], true),
            ("POST", "/", &[("accept", BROWSER_ACCEPT)], false),
            ("PUT", "/", &[], false),
            ("DELETE", "/", &[], false),
            ("OPTIONS", "/", &[], false),
            ("get", "/", &[], false),
            ("GET", "/", &[("accept", "application/json")], false),
            ("GET", "/", &[("accept", "*/*")], false),
            ("GET", "/", &[("accept", "text/plain, text/htmlx")], false),
            ("GET", "/", &[("accept", "")], false),
            ("GET", "/", &[("x-requested-with", "XMLHttpRequest")], false),
            (
                "GET",
                "/",
                &[("x-requested-with", " xmlhttprequest ")],
                false,
            ),
            (
                "GET",
                "/",
                &[("sec-fetch-mode", "cors"), ("accept", BROWSER_ACCEPT)],
                false,
            ),
            ("GET", "/", &[("sec-fetch-mode", "no-cors")], false),
            (
                "GET",
                "/",
                &[("sec-fetch-mode", "navigate"), ("sec-fetch-mode", "cors")],
                false,
            ),
            ("GET", "/api/items", &[("accept", BROWSER_ACCEPT)], false),
            ("GET", "/api", &[("accept", BROWSER_ACCEPT)], false),
            (
                "GET",
                "/",
                &[("accept", "application/json"), ("accept", "text/html")],
                true,
            ),
            ("GET", "/", &[("accept", "\u{ff}")], false),
        ];
        for (method, path, headers, expected) in cases {
            let headers: Vec<(String, Vec<u8>)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            assert_eq!(
                is_navigation(method, &headers, path, &api),
                *expected,
                "{method} {path} {headers:?}"
            );
        }
        let raw = vec![("accept".to_string(), b"\xff\xfe".to_vec())];
        assert!(!is_navigation("GET", &raw, "/", &api));
    }
}
