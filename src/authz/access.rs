//! The access policy as configured: how bearer tokens are handled, public
//! paths, API prefixes and the authorization rules (the configuration parses
//! them).

use super::public_paths::PublicPath;
use super::rules::Authorization;

/// What the filter does with `Authorization: Bearer …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerMode {
    /// A bearer token is validated instead of looking for a session.
    Accept,
    /// Every request needs a valid bearer token; sessions are not used.
    Require,
    /// `Authorization` is not inspected (and still never reaches the upstream as sent).
    Ignore,
}

#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    pub enabled: bool,
    /// How long an answer is reused, at most (never past the token's `exp`).
    pub cache_seconds: u64,
    /// Cache slots; a bound on memory, not an exact count.
    pub max_entries: u64,
}

#[derive(Debug, Clone)]
pub struct BearerConfig {
    pub mode: BearerMode,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    pub introspection: IntrospectionConfig,
}

#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub bearer: BearerConfig,
    /// Normalized prefixes whose unauthenticated requests get 401, never a redirect.
    pub api_path_prefixes: Vec<String>,
    pub public_paths: Vec<PublicPath>,
    pub authorization: Authorization,
}

impl AccessConfig {
    pub fn is_public(&self, normalized_path: &str) -> bool {
        self.public_paths.iter().any(|p| p.matches(normalized_path))
    }

    /// The top-level claims rules read, which sessions must therefore keep.
    pub fn retained_claims(&self) -> impl Iterator<Item = &str> {
        self.authorization.rules.iter().flat_map(|rule| {
            let scopes: &[&str] = if rule.require.scopes.is_empty() {
                &[]
            } else {
                &["scope", "scp"]
            };
            let aud: &[&str] = if rule.require.audience.is_some() {
                &["aud"]
            } else {
                &[]
            };
            rule.require
                .claims
                .iter()
                .map(|(path, _)| path.root())
                .chain(scopes.iter().copied())
                .chain(aud.iter().copied())
        })
    }
}
