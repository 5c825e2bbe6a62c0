//! The OpenID Provider as the filter knows it: metadata and keys, fetched in the
//! background, shared by every worker, refreshed on schedule or on an unknown `kid`.

pub mod schedule;

use serde::{Deserialize, Serialize};

use crate::oidc::discovery::ProviderMetadata;
use crate::oidc::jwks::Jwks;

/// A JWKS refetch on an unknown `kid` happens at most this often, so tokens with
/// made-up key ids cannot make the filter hammer the provider.
pub const JWKS_REFETCH_INTERVAL: u64 = 30;

/// Metadata and parsed keys, ready for the flow.
#[derive(Debug, Clone)]
pub struct Provider {
    pub metadata: ProviderMetadata,
    pub jwks: Jwks,
    pub jwks_fetched_at: u64,
}

impl Provider {
    pub fn may_refetch_jwks(&self, now: u64) -> bool {
        now >= self.jwks_fetched_at.saturating_add(JWKS_REFETCH_INTERVAL)
    }
}

/// What workers share: the documents as fetched, so each worker parses keys once
/// per change rather than once per request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedProvider {
    pub metadata: ProviderMetadata,
    pub jwks: String,
    pub metadata_fetched_at: u64,
    pub jwks_fetched_at: u64,
}

impl SharedProvider {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<SharedProvider> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn to_provider(&self) -> Option<Provider> {
        Some(Provider {
            metadata: self.metadata.clone(),
            jwks: Jwks::parse(self.jwks.as_bytes()).ok()?,
            jwks_fetched_at: self.jwks_fetched_at,
        })
    }
}
