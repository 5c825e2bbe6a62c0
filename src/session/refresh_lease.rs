//! One refresh at a time per cookie session on this replica.
//!
//! The shared-data store marks a refresh in the stored session; a cookie
//! session has no stored copy, so the claim goes to one of a fixed set of
//! shared-data slots instead (shared-data keys never go away, so one key per
//! session would grow without bound). Other replicas cannot see the claim:
//! with the cookie store, single flight is per replica.

use serde::{Deserialize, Serialize};

use super::first_write::ensure_exists;
use super::shared_store::{SharedData, WriteError};
use super::SessionKey;

const SLOTS: u32 = 64;
/// Claims held at once per slot; beyond that a claim is refused (and the
/// request goes on with the still-valid token, or is asked to retry).
const MAX_PER_SLOT: usize = 32;
const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Slot {
    /// (session key, claimed until)
    claims: Vec<(String, u64)>,
}

fn slot_key(key: &SessionKey) -> String {
    let hash = key
        .as_str()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("cookie-sessions/refresh/{}", hash % SLOTS)
}

/// `true` when this request may refresh the session `key` until `until`.
pub fn claim(data: &impl SharedData, key: &SessionKey, now: u64, until: u64) -> bool {
    let slot = slot_key(key);
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = data.get(&slot);
        let Some(cas) = cas else {
            // Compare-and-swap on an absent key always succeeds: create it first.
            if !ensure_exists(data, &slot) {
                return false;
            }
            continue;
        };
        let mut state: Slot = bytes
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        state.claims.retain(|(_, until)| *until > now);
        if state.claims.iter().any(|(k, _)| k == key.as_str()) || state.claims.len() >= MAX_PER_SLOT
        {
            return false;
        }
        state.claims.push((key.as_str().to_string(), until));
        let encoded = serde_json::to_vec(&state).unwrap_or_default();
        match data.set(&slot, &encoded, Some(cas)) {
            Ok(()) => return true,
            Err(WriteError::CasMismatch) => continue,
            Err(WriteError::Failed(reason)) => {
                log::error!("refresh claim write failed: {reason}");
                return false;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::shared_store::InMemory;

    fn key(s: &str) -> SessionKey {
        SessionKey::from_hash(s.to_string())
    }

    #[test]
    fn one_claim_per_session_until_it_lapses() {
        let data = InMemory::default();
        assert!(claim(&data, &key("a"), 100, 107));
        assert!(!claim(&data, &key("a"), 101, 108), "someone else refreshes");
        assert!(claim(&data, &key("b"), 101, 108), "other sessions are free");
        assert!(claim(&data, &key("a"), 107, 114), "the claim lapsed");
    }

    #[test]
    fn the_slots_are_bounded() {
        let data = InMemory::default();
        let claimed = (0..10_000)
            .filter(|i| claim(&data, &key(&format!("session-{i}")), 100, 107))
            .count();
        assert!(claimed <= SLOTS as usize * MAX_PER_SLOT);
        assert!(claimed > SLOTS as usize * MAX_PER_SLOT / 2);
        assert!(
            data.keys() <= SLOTS as usize + 1,
            "the slots and the creation lock"
        );
        assert!(
            claim(&data, &key("session-0"), 107, 114),
            "all lapse together"
        );
    }
}
