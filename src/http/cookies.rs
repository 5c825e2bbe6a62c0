//! Cookie parsing from raw (possibly non-UTF-8) header bytes and `Set-Cookie` building.

/// `name=value` pairs from every `Cookie` header, in order. Pairs whose name or
/// value is not UTF-8 are kept out of the parsed list (they are never ours) but
/// survive in [`strip_cookies`].
pub fn parse_cookies<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    let _ = headers.into_iter();
    todo!()
}

/// The `Cookie` header to send upstream: every pair except those `is_ours` names,
/// joined with `"; "`, bytes preserved. `None` when nothing is left.
pub fn strip_cookies<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    is_ours: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let _ = (headers.into_iter(), is_ours(b""));
    todo!()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum SameSite {
    Strict,
    Lax,
    None,
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
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, attrs: &CookieAttributes) -> String {
    let _ = (name, value, max_age, attrs);
    todo!()
}
