//! The filter's own responses: small HTML pages and JSON errors.

/// A local reply. `headers` excludes `:status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An HTML error page with `Cache-Control: no-store`. `title` and `detail` are escaped.
pub fn error_page(status: u16, title: &str, detail: &str) -> LocalResponse {
    let _ = (status, title, detail);
    todo!()
}

/// A 302 with `Cache-Control: no-store`.
pub fn redirect(location: &str) -> LocalResponse {
    let _ = location;
    todo!()
}
