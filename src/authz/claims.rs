//! Paths into a token's or a session's claims, as rules and headers name them.

/// A dotted path into the claims, e.g. `realm_access.roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(pub Vec<String>);

impl ClaimPath {
    pub(crate) fn parse(path: &str) -> Option<ClaimPath> {
        let parts: Vec<String> = path.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return None;
        }
        Some(ClaimPath(parts))
    }

    pub fn lookup<'a>(
        &self,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a serde_json::Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for part in rest {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    /// The top-level claim this path starts from.
    pub fn root(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or("")
    }
}
