//! The OpenID Provider as the filter knows it: metadata and keys, fetched in the
//! background, shared by every worker, refreshed on schedule or on an unknown `kid`.

pub mod schedule;

use serde::{Deserialize, Serialize};

use crate::oidc::discovery::ProviderMetadata;
use crate::oidc::jwks::Jwks;

/// Refetches that an unknown `kid` causes happen at most this often, so tokens
/// with made-up key ids cannot make the filter hammer the provider. Scheduled
/// fetches do not count: a key rotated in right after one is fetched at once.
pub const KID_REFETCH_INTERVAL: u64 = 10;

/// A `kid` still unknown after a refetch causes no other refetch for this long.
pub const UNKNOWN_KID_MEMORY: u64 = 300;

/// At most this many unknown `kid`s are remembered; the soonest to be
/// forgotten goes first. The refetch interval, not this list, bounds the
/// fetches: it only spares the provider repeats of the same made-up `kid`.
const MAX_UNKNOWN_KIDS: usize = 32;

/// Metadata and parsed keys, ready for the flow.
#[derive(Debug, Clone)]
pub struct Provider {
    pub metadata: ProviderMetadata,
    pub jwks: Jwks,
    pub jwks_fetched_at: u64,
    pub kid_refetches: KidRefetches,
}

impl Provider {
    /// Whether a token signed with the unknown `kid` may have the keys refetched.
    pub fn may_refetch_jwks_for(&self, kid: &str, now: u64) -> bool {
        self.kid_refetches.may_refetch(kid, now)
    }
}

/// The bookkeeping that rate-limits refetches caused by unknown `kid`s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KidRefetches {
    /// When an unknown `kid` last caused a refetch.
    #[serde(default)]
    pub last_at: Option<u64>,
    /// `kid`s a refetch did not bring, and until when they are remembered.
    #[serde(default)]
    pub unknown: Vec<(String, u64)>,
}

impl KidRefetches {
    pub fn may_refetch(&self, kid: &str, now: u64) -> bool {
        let interval_passed = self
            .last_at
            .is_none_or(|at| now >= at.saturating_add(KID_REFETCH_INTERVAL));
        let known_unknown = self
            .unknown
            .iter()
            .any(|(unknown, until)| unknown == kid && now < *until);
        interval_passed && !known_unknown
    }

    /// Takes the refetch for `kid` if it may happen; the caller shares the
    /// result with compare-and-swap so that one worker fetches.
    pub fn claim(&mut self, kid: &str, now: u64) -> bool {
        if !self.may_refetch(kid, now) {
            return false;
        }
        self.last_at = Some(now);
        true
    }

    /// The refetch for `kid` is done: remembers it if the new keys lack it.
    pub fn refetched(&mut self, kid: &str, jwks: &Jwks, now: u64) {
        self.unknown.retain(|(k, until)| now < *until && k != kid);
        if jwks.has_kid(kid) {
            return;
        }
        if self.unknown.len() >= MAX_UNKNOWN_KIDS {
            self.unknown.sort_by_key(|(_, until)| *until);
            self.unknown.remove(0);
        }
        self.unknown
            .push((kid.to_string(), now.saturating_add(UNKNOWN_KID_MEMORY)));
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
    #[serde(default)]
    pub kid_refetches: KidRefetches,
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
            kid_refetches: self.kid_refetches.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks_with(kid: &str) -> Jwks {
        use crate::oidc::jwks::tests::{es_jwk, jwks_of};
        jwks_of(vec![es_jwk(serde_json::json!({ "kid": kid }))])
    }

    #[test]
    fn the_first_unknown_kid_refetches_at_once_whatever_fetched_last() {
        let mut state = KidRefetches::default();
        assert!(state.claim("k2", 1000));
        assert_eq!(state.last_at, Some(1000));
    }

    #[test]
    fn unknown_kid_refetches_are_rate_limited() {
        let mut state = KidRefetches::default();
        assert!(state.claim("a", 1000));
        assert!(!state.claim("b", 1000 + KID_REFETCH_INTERVAL - 1));
        assert!(state.claim("b", 1000 + KID_REFETCH_INTERVAL));
    }

    #[test]
    fn a_kid_still_unknown_after_a_refetch_is_remembered_for_a_while() {
        let mut state = KidRefetches::default();
        assert!(state.claim("made-up", 1000));
        state.refetched("made-up", &jwks_with("k1"), 1001);
        let later = 1001 + KID_REFETCH_INTERVAL;
        assert!(!state.may_refetch("made-up", later));
        assert!(state.may_refetch("other", later));
        assert!(state.may_refetch("made-up", 1001 + UNKNOWN_KID_MEMORY));
    }

    #[test]
    fn a_kid_the_refetch_brought_is_not_remembered() {
        let mut state = KidRefetches::default();
        assert!(state.claim("k2", 1000));
        state.refetched("k2", &jwks_with("k2"), 1001);
        assert!(state.unknown.is_empty());
    }

    #[test]
    fn the_memory_of_unknown_kids_is_bounded() {
        let mut state = KidRefetches::default();
        let keys = jwks_with("k1");
        for i in 0..(MAX_UNKNOWN_KIDS as u64 * 3) {
            state.refetched(&format!("kid-{i}"), &keys, 1000 + i);
        }
        assert_eq!(state.unknown.len(), MAX_UNKNOWN_KIDS);
        let newest = format!("kid-{}", MAX_UNKNOWN_KIDS * 3 - 1);
        assert!(state.unknown.iter().any(|(k, _)| *k == newest));
    }

    #[test]
    fn documents_without_the_bookkeeping_still_decode() {
        let state: KidRefetches = serde_json::from_str("{}").unwrap();
        assert_eq!(state, KidRefetches::default());
    }
}
