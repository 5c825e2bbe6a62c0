//! The ledger that makes each login cookie usable once, even if an attacker
//! replays a captured callback together with its cookie.
//!
//! Shared data never forgets a key, so the ledger lives in a fixed ring of slots,
//! one per minute of login lifetime: a slot is reset when its key comes round
//! again, by which time every login recorded in it has expired anyway.

use serde::{Deserialize, Serialize};

use crate::crypto;

const SLOT_SECONDS: u64 = 60;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Slot {
    slot: u64,
    used: Vec<String>,
}

/// Where a value issued at `issued_at` and usable for `lifetime` seconds is
/// recorded; `ledger` separates the uses (logins, logout tokens).
pub fn ledger_key(ledger: &str, issued_at: u64, lifetime: u64) -> String {
    let ring = lifetime / SLOT_SECONDS + 2;
    format!("once/{ledger}/{}", (issued_at / SLOT_SECONDS) % ring)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Mark {
    /// First use: store this value (compare-and-swap against what was read).
    Record(Vec<u8>),
    AlreadyUsed,
}

/// Records `state` in the ledger value read from the store.
pub fn mark(existing: Option<&[u8]>, issued_at: u64, state: &str) -> Mark {
    let slot_number = issued_at / SLOT_SECONDS;
    let digest = crypto::sha256_b64url(state.as_bytes());
    let entry = digest[..16].to_string();
    let mut slot = existing
        .and_then(|bytes| serde_json::from_slice::<Slot>(bytes).ok())
        .filter(|slot| slot.slot == slot_number)
        .unwrap_or(Slot {
            slot: slot_number,
            used: Vec::new(),
        });
    if slot.used.contains(&entry) {
        return Mark::AlreadyUsed;
    }
    slot.used.push(entry);
    Mark::Record(serde_json::to_vec(&slot).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(existing: Option<&[u8]>, at: u64, state: &str) -> Vec<u8> {
        match mark(existing, at, state) {
            Mark::Record(v) => v,
            Mark::AlreadyUsed => panic!("{state} reported as used"),
        }
    }

    #[test]
    fn second_use_is_refused() {
        let v = record(None, 1000, "abc");
        assert_eq!(mark(Some(&v), 1000, "abc"), Mark::AlreadyUsed);
        assert_eq!(mark(Some(&v), 1010, "abc"), Mark::AlreadyUsed);
        let v2 = record(Some(&v), 1000, "other");
        assert_eq!(mark(Some(&v2), 1000, "abc"), Mark::AlreadyUsed);
        assert_eq!(mark(Some(&v2), 1000, "other"), Mark::AlreadyUsed);
    }

    #[test]
    fn a_recycled_slot_starts_empty() {
        let timeout = 600;
        let ring = timeout / SLOT_SECONDS + 2;
        let old = 1_000_000;
        let later = old + ring * SLOT_SECONDS;
        assert_eq!(
            ledger_key("login", old, timeout),
            ledger_key("login", later, timeout)
        );
        let v = record(None, old, "abc");
        assert!(matches!(mark(Some(&v), later, "abc"), Mark::Record(_)));
    }

    #[test]
    fn a_slot_is_not_reused_while_its_logins_can_complete() {
        let timeout = 600;
        let issued = 1_000_030;
        let first = ledger_key("login", issued, timeout);
        for t in (issued + 1)..=(issued + timeout) {
            if ledger_key("login", t, timeout) == first {
                assert_eq!(t / SLOT_SECONDS, issued / SLOT_SECONDS);
            }
        }
    }

    #[test]
    fn garbage_in_the_store_is_replaced() {
        assert!(matches!(mark(Some(b"\xff{"), 5, "x"), Mark::Record(_)));
    }
}
