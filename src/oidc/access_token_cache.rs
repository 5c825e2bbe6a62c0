//! Verified JWT access tokens remembered per VM, so an API client's token has
//! its signature checked once, not on every request (an RSA verification costs
//! far more than the rest of a request). A token is served from here only
//! before its `exp` and only while the provider's key set is the one it was
//! verified with: any change of the keys (a rotation, a key withdrawn) empties
//! the cache, and each token is verified again against the new set.

use std::rc::Rc;

use super::access_token::VerifiedAccessToken;
use super::jwks::Jwks;
use crate::cache::{BoundedMap, Digest};

/// Tokens remembered at most; a flood of distinct tokens evicts the oldest.
pub const MAX_ENTRIES: usize = 1024;

#[derive(Debug)]
pub struct AccessTokenCache {
    /// The key set every entry was verified with.
    keys: Option<Digest>,
    tokens: BoundedMap<Rc<VerifiedAccessToken>>,
}

impl Default for AccessTokenCache {
    fn default() -> AccessTokenCache {
        AccessTokenCache::with_capacity(MAX_ENTRIES)
    }
}

impl AccessTokenCache {
    pub fn with_capacity(capacity: usize) -> AccessTokenCache {
        AccessTokenCache {
            keys: None,
            tokens: BoundedMap::new(capacity),
        }
    }

    /// The token (by its digest) as verified earlier with these keys, if it
    /// has not expired. The verifier's clock skew is not granted here: a hit
    /// is strictly before `exp`.
    pub fn get(
        &mut self,
        token: &Digest,
        jwks: &Jwks,
        now: u64,
    ) -> Option<Rc<VerifiedAccessToken>> {
        self.follow_keys(jwks);
        let verified = self.tokens.get(token)?;
        if now < verified.exp {
            return Some(verified.clone());
        }
        self.tokens.remove(token);
        None
    }

    /// Remembers a token that `jwks` just verified.
    pub fn insert(
        &mut self,
        token: Digest,
        jwks: &Jwks,
        verified: Rc<VerifiedAccessToken>,
        now: u64,
    ) {
        self.follow_keys(jwks);
        if now < verified.exp {
            self.tokens.insert(token, verified);
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Forgets every token when the key set is not the one they were verified with.
    fn follow_keys(&mut self, jwks: &Jwks) {
        if self.keys.as_ref() != Some(jwks.digest()) {
            self.tokens.clear();
            self.keys = Some(*jwks.digest());
        }
    }
}
