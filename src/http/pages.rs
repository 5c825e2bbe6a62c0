//! The filter's own responses: small HTML pages and JSON errors.

/// A local reply. `headers` excludes `:status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// Appends a header; repeated names (e.g. several `set-cookie`) all reach the client.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

fn headers(content_type: Option<&str>) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(3);
    if let Some(content_type) = content_type {
        headers.push(("content-type".to_owned(), content_type.to_owned()));
        // Our bodies echo request-derived detail; never let a browser reinterpret them.
        headers.push(("x-content-type-options".to_owned(), "nosniff".to_owned()));
    }
    headers.push(("cache-control".to_owned(), "no-store".to_owned()));
    headers
}

/// An HTML error page with `Cache-Control: no-store`. `title` and `detail` are escaped.
///
/// The page loads nothing: it is shown when the login flow is broken, possibly
/// when the IdP or upstream is unreachable.
pub fn error_page(status: u16, title: &str, detail: &str) -> LocalResponse {
    html_page(status, title, &format!("<p>{}</p>", escape_html(detail)))
}

/// An error page with a link to start over, e.g. back to the page the user wanted.
/// `href` must be a same-origin target the caller checked.
pub fn error_page_with_retry(status: u16, title: &str, detail: &str, href: &str) -> LocalResponse {
    html_page(
        status,
        title,
        &format!(
            "<p>{}</p>\n<p><a href=\"{}\">Try again</a></p>",
            escape_html(detail),
            escape_html(href)
        ),
    )
}

/// Asks the user to confirm a logout that arrived cross-site; the button POSTs
/// from our own origin, which the logout endpoint then accepts.
pub fn confirm_logout_page(action: &str) -> LocalResponse {
    html_page(
        200,
        "Log out?",
        &format!(
            "<form method=\"post\" action=\"{}\"><button type=\"submit\">Log out</button></form>",
            escape_html(action)
        ),
    )
}

/// 200 with a page that moves on to `href` at once (meta refresh, and a link):
/// the navigation then starts from our own origin, so `SameSite=Strict`
/// cookies go with it. `href` must be a same-origin target the caller checked.
pub fn continue_page(href: &str) -> LocalResponse {
    let href = escape_html(href);
    html_page(
        200,
        "Signed in",
        &format!(
            "<meta http-equiv=\"refresh\" content=\"0;url={href}\">\n<p><a href=\"{href}\">Continue</a></p>"
        ),
    )
}

/// 503 with `Retry-After: 1`; browsers reload by themselves after a second.
pub fn retry_soon_page(detail: &str) -> LocalResponse {
    let mut page = html_page(
        503,
        "One moment",
        &format!(
            "<meta http-equiv=\"refresh\" content=\"1\">\n<p>{}</p>",
            escape_html(detail)
        ),
    );
    page.headers
        .push(("retry-after".to_owned(), "1".to_owned()));
    page
}

fn html_page(status: u16, title: &str, inner_html: &str) -> LocalResponse {
    let title = escape_html(title);
    let body = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}</style>\n\
         </head>\n\
         <body>\n\
         <h1>{title}</h1>\n\
         {inner_html}\n\
         </body>\n\
         </html>\n"
    );
    LocalResponse {
        status,
        headers: headers(Some("text/html; charset=utf-8")),
        body: body.into_bytes(),
    }
}

/// A 302 with `Cache-Control: no-store`.
///
/// `location` is written as given: pass an IdP URL built by us or a target that
/// [`super::paths::same_origin_return_target`] accepted.
pub fn redirect(location: &str) -> LocalResponse {
    let mut headers = headers(None);
    headers.insert(0, ("location".to_owned(), location.to_owned()));
    LocalResponse {
        status: 302,
        headers,
        body: Vec::new(),
    }
}

/// An RFC 6749 §5.2-style JSON error (`{"error":…,"error_description":…}`) for
/// API clients, which cannot follow a login redirect.
pub fn json_error(status: u16, error: &str, description: &str) -> LocalResponse {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: &'a str,
        error_description: &'a str,
    }
    // Serialising two strings cannot fail; an empty body is still a valid reply.
    let body = serde_json::to_vec(&Body {
        error,
        error_description: description,
    })
    .unwrap_or_default();
    LocalResponse {
        status,
        headers: headers(Some("application/json")),
        body,
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a LocalResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn error_page_headers_and_escaping() {
        let r = error_page(
            400,
            "Bad <request>",
            "state \"x\" & 'y' <script>alert(1)</script>",
        );
        assert_eq!(r.status, 400);
        assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("<title>Bad &lt;request&gt;</title>"));
        assert!(body.contains("<h1>Bad &lt;request&gt;</h1>"));
        assert!(body.contains(
            "<p>state &quot;x&quot; &amp; &#39;y&#39; &lt;script&gt;alert(1)&lt;/script&gt;</p>"
        ));
        assert!(!body.contains("<script"));
    }

    #[test]
    fn continue_page_moves_on_to_the_escaped_target() {
        let r = continue_page("/a?x=\"><script>&y=1");
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        assert_eq!(header(&r, "location"), None);
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains(
            "<meta http-equiv=\"refresh\" content=\"0;url=/a?x=&quot;&gt;&lt;script&gt;&amp;y=1\">"
        ));
        assert!(body.contains("<a href=\"/a?x=&quot;&gt;&lt;script&gt;&amp;y=1\">Continue</a>"));
        assert!(!body.contains("<script>"));
    }

    #[test]
    fn error_page_loads_nothing_external() {
        let body = String::from_utf8(error_page(502, "t", "d").body).unwrap();
        for needle in ["src=", "href=", "http://", "https://", "@import", "url("] {
            assert!(!body.contains(needle), "{needle}");
        }
        assert!(body.starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn escape_html_leaves_other_text() {
        assert_eq!(escape_html("café ok / = ;"), "café ok / = ;");
        assert_eq!(escape_html("&amp;"), "&amp;amp;");
    }

    #[test]
    fn redirect_is_302_without_body() {
        let r = redirect("https://idp.example/authorize?a=1&b=2");
        assert_eq!(r.status, 302);
        assert_eq!(
            r.headers,
            vec![
                (
                    "location".to_owned(),
                    "https://idp.example/authorize?a=1&b=2".to_owned()
                ),
                ("cache-control".to_owned(), "no-store".to_owned()),
            ]
        );
        assert!(r.body.is_empty());
    }

    #[test]
    fn json_error_body_and_headers() {
        let r = json_error(401, "unauthorized", "login \"required\"\n</script>");
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "error": "unauthorized",
                "error_description": "login \"required\"\n</script>",
            })
        );
    }

    #[test]
    fn with_header_appends_repeats() {
        let r = redirect("/")
            .with_header("set-cookie", "a=1")
            .with_header("set-cookie", String::from("b=2"));
        let cookies: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }
}
