//! Request targets: splitting, and deciding what may be a redirect target.

/// Splits a `:path` pseudo-header into path and query (without the `?`).
pub fn split_path_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    let _ = target;
    todo!()
}

/// The request target to return to after login, if it is a same-origin path.
/// Refuses anything a browser could read as another origin: absolute URLs,
/// `//host`, `/\host`, their percent-encoded and control-character variants,
/// and non-UTF-8.
pub fn same_origin_return_target(target: &[u8]) -> Option<String> {
    let _ = target;
    todo!()
}
