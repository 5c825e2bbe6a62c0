//! Sessions: the record kept per logged-in browser, the in-flight login, and
//! the single-use ledger of completed logins.

pub mod buckets;
pub mod chunks;
pub mod cookie_cache;
pub mod cookie_codec;
pub mod deny_list;
pub mod etcd;
pub mod first_write;
pub mod login;
pub mod namespace;
pub mod once;
pub mod process_key;
pub mod record_cache;
pub mod refresh_lease;
pub mod refresh_outcome;
pub mod shared_store;
pub mod writes;

use serde::{Deserialize, Serialize};

use crate::crypto;

/// What the filter remembers about a logged-in user. Only what the flow needs:
/// no full token responses, only the claims configured headers read.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub created_at: u64,
    /// Absolute end of the session.
    pub expires_at: u64,
    /// Last time a request used it, for the idle timeout (updated coarsely).
    pub last_seen: u64,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<u64>,
    /// The access token's lifetime as issued (`expires_in`), which bounds the
    /// refresh margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_lifetime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// A worker is refreshing the tokens until then; others keep off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshing_until: Option<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sub", &self.sub)
            .field("sid", &self.sid)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

/// Why a stored session can no longer be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Absolute,
    Idle,
}

impl Session {
    pub fn expiry(&self, now: u64, idle_timeout: u64) -> Option<Expiry> {
        if now >= self.expires_at {
            Some(Expiry::Absolute)
        } else if now >= self.last_seen.saturating_add(idle_timeout) {
            Some(Expiry::Idle)
        } else {
            None
        }
    }

    /// The access token expires within `margin` and can be refreshed. The
    /// margin is at most half the token's lifetime: a token that lives no
    /// longer than the configured margin would otherwise be refreshed on
    /// every request.
    pub fn refresh_due(&self, now: u64, margin: u64) -> bool {
        let margin = match self.access_token_lifetime {
            Some(lifetime) => margin.min(lifetime / 2),
            None => margin,
        };
        self.refresh_token.is_some()
            && self
                .access_token_expires_at
                .is_some_and(|exp| now.saturating_add(margin) >= exp)
    }

    pub fn access_token_valid(&self, now: u64) -> bool {
        self.access_token_expires_at.is_none_or(|exp| now < exp)
    }

    pub fn refresh_in_progress(&self, now: u64) -> bool {
        self.refreshing_until.is_some_and(|until| now < until)
    }

    /// Writing the store on every request would serialize all workers on its
    /// mutex; a resolution of a sixteenth of the idle timeout is plenty.
    pub fn needs_touch(&self, now: u64, idle_timeout: u64) -> bool {
        now.saturating_sub(self.last_seen) >= (idle_timeout / 16).max(1)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Session> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The random value in the session cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> SessionId {
        SessionId(crypto::random_token(rng, 32))
    }

    /// A cookie value that could be one of ours; anything else is not looked up.
    pub fn from_cookie(value: &str) -> Option<SessionId> {
        let plausible = value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plausible.then(|| SessionId(value.to_string()))
    }

    pub fn cookie_value(&self) -> &str {
        &self.0
    }

    pub fn store_key(&self) -> SessionKey {
        SessionKey(crypto::sha256_b64url(self.0.as_bytes()))
    }
}

/// Where a session is stored: the hash of its id, so a dump of the store does
/// not reveal usable cookies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionKey(String);

impl SessionKey {
    pub fn from_hash(hash: String) -> SessionKey {
        SessionKey(hash)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}
