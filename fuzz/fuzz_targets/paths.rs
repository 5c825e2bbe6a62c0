//! Request targets: path/query split, path normalization for rules, and the
//! same-origin check on return targets, with the properties they promise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_filter::authz::public_paths::{is_normalized_pattern, under_prefix, PublicPath};
use oidc_filter::http::paths::{normalize_path, same_origin_return_target, split_path_query};

fuzz_target!(|data: &[u8]| {
    let (path, query) = split_path_query(data);
    assert!(!path.contains(&b'?'));
    assert_eq!(path.len() + query.map_or(0, |q| q.len() + 1), data.len());

    if let Ok(normalized) = normalize_path(path) {
        assert!(normalized.starts_with('/'), "{normalized:?}");
        assert!(!normalized.contains("//"), "{normalized:?}");
        for segment in normalized.split('/') {
            assert!(segment != "." && segment != "..", "{normalized:?}");
        }
        assert!(!normalized.contains('\\'));
        // Normalizing again changes nothing (rules see one spelling).
        assert_eq!(
            normalize_path(normalized.as_bytes()).as_deref(),
            Ok(normalized.as_str())
        );
        let _ = under_prefix(&normalized, "/admin/");
        if is_normalized_pattern(&normalized) {
            let public = PublicPath::parse(&normalized).expect("a normalized pattern parses");
            assert!(public.matches(&normalized));
        }
    }

    if let Some(target) = same_origin_return_target(data) {
        assert_eq!(target.as_bytes(), data);
        let mut chars = target.chars();
        assert_eq!(chars.next(), Some('/'));
        assert!(!matches!(chars.next(), Some('/' | '\\')), "{target:?}");
        assert!(!target
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\'));
    }
});
