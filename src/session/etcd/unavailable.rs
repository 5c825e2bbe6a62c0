//! The answer when the session store cannot be reached: fail closed, and say so
//! in a form the client can use.

use crate::authz::request_kind;
use crate::config::Config;
use crate::http::pages::{self, LocalResponse};
use crate::http::paths;

/// Whether a request gets the HTML page (a browser navigation) or JSON.
pub fn wants_page(
    config: &Config,
    method: &str,
    target: &[u8],
    headers: &[(String, Vec<u8>)],
) -> bool {
    let (raw_path, _) = paths::split_path_query(target);
    let prefixes = &config.access.api_path_prefixes;
    let path = match paths::normalize_path(raw_path) {
        Ok(path) => path,
        Err(_) if !prefixes.is_empty() => return false,
        Err(_) => "/".to_string(),
    };
    request_kind::is_navigation(method, headers, &path, prefixes)
}

/// 503 with `Retry-After`: nothing passes while sessions cannot be checked.
pub fn response(page: bool) -> LocalResponse {
    let response = if page {
        pages::error_page(
            503,
            "Sign-in temporarily unavailable",
            "Your session cannot be checked right now. Please try again in a few seconds.",
        )
    } else {
        pages::json_error(
            503,
            "temporarily_unavailable",
            "the session store cannot be reached; retry later",
        )
    };
    response.with_header("retry-after", "2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_a_page_and_scripts_json() {
        let page = response(true);
        assert_eq!(page.status, 503);
        assert!(String::from_utf8_lossy(&page.body).contains("temporarily unavailable"));
        let api = response(false);
        assert_eq!(api.status, 503);
        let body: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(api.headers.iter().any(|(n, _)| n == "retry-after"));
    }
}
