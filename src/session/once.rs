//! The ledger that makes each login cookie (and each logout token) usable
//! once, even if an attacker replays a captured callback together with its
//! cookie.
//!
//! Anyone can mint fresh login cookies with `GET /` and send each once to the
//! callback, so every forged callback is a first use the ledger must record,
//! and a flood of them must neither grow memory nor slow each callback down.
//! The ledger is therefore a fixed table: [`SHARDS`] small shared-data keys,
//! chosen by the value's digest, each holding at most [`PER_SHARD`] entries
//! (a digest prefix and the time the value stops being usable anyway). A
//! callback reads and rewrites one small key: O(1) whatever the flood. A full
//! shard forgets the entry that expires first, so a genuine login always
//! records and completes; under a flood, an entry may be forgotten before
//! its login expires, and a replay of that callback then reaches the token
//! endpoint, where the provider refuses its already redeemed code.

use serde::{Deserialize, Serialize};

use crate::crypto;

/// Keys per ledger: the table is `SHARDS * PER_SHARD` entries.
pub const SHARDS: u32 = 1024;
/// Entries per key: about 32 bytes each, so a key stays near 1 KB.
pub const PER_SHARD: usize = 32;
/// Digest characters kept per entry (base64url: 96 bits).
const DIGEST_CHARS: usize = 16;

/// One shard: (digest prefix, usable until).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shard(Vec<(String, u64)>);

fn digest(value: &str) -> String {
    let mut digest = crypto::sha256_b64url(value.as_bytes());
    digest.truncate(DIGEST_CHARS);
    digest
}

/// Where `value` is recorded; `ledger` separates the uses (logins, logout tokens).
pub fn ledger_key(ledger: &str, value: &str) -> String {
    use base64::Engine;
    // The digest is base64url: decoding its first characters gives uniform bits.
    let digest = crypto::sha256_b64url(value.as_bytes());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(digest.get(..8).unwrap_or_default())
        .unwrap_or_default();
    let shard = bytes
        .iter()
        .take(4)
        .fold(0u32, |n, b| (n << 8) | u32::from(*b));
    format!("once/{ledger}/{}", shard % SHARDS)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Mark {
    /// First use: store this value (compare-and-swap against what was read).
    Record(Vec<u8>),
    AlreadyUsed,
}

/// Records `value`, usable until `until`, in the shard read from the store.
pub fn mark(existing: Option<&[u8]>, value: &str, until: u64, now: u64) -> Mark {
    let entry = digest(value);
    let mut shard: Shard = existing
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or_default();
    shard.0.retain(|(_, until)| *until > now);
    if shard.0.iter().any(|(used, _)| *used == entry) {
        return Mark::AlreadyUsed;
    }
    while shard.0.len() >= PER_SHARD {
        let Some(soonest) = shard
            .0
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, until))| *until)
            .map(|(i, _)| i)
        else {
            break;
        };
        shard.0.swap_remove(soonest);
    }
    shard.0.push((entry, until));
    Mark::Record(serde_json::to_vec(&shard).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(existing: Option<&[u8]>, state: &str, until: u64, now: u64) -> Vec<u8> {
        match mark(existing, state, until, now) {
            Mark::Record(v) => v,
            Mark::AlreadyUsed => panic!("{state} reported as used"),
        }
    }

    #[test]
    fn second_use_is_refused_until_the_value_expires() {
        let v = record(None, "abc", 1600, 1000);
        assert_eq!(mark(Some(&v), "abc", 1600, 1010), Mark::AlreadyUsed);
        let v2 = record(Some(&v), "other", 1600, 1000);
        assert_eq!(mark(Some(&v2), "abc", 1600, 1599), Mark::AlreadyUsed);
        assert_eq!(mark(Some(&v2), "other", 1600, 1000), Mark::AlreadyUsed);
        assert!(
            matches!(mark(Some(&v2), "abc", 2200, 1600), Mark::Record(_)),
            "an expired entry is dropped (its login is refused as expired anyway)"
        );
    }

    #[test]
    fn a_full_shard_keeps_recording_and_stays_small() {
        let mut shard: Option<Vec<u8>> = None;
        for n in 0..10 * PER_SHARD as u64 {
            shard = Some(record(shard.as_deref(), &format!("s{n}"), 2000 + n, 1000));
        }
        let shard = shard.unwrap();
        assert!(shard.len() <= PER_SHARD * 40, "{} bytes", shard.len());
        let newest = format!("s{}", 10 * PER_SHARD as u64 - 1);
        assert_eq!(mark(Some(&shard), &newest, 9999, 1000), Mark::AlreadyUsed);
        assert!(
            matches!(mark(Some(&shard), "s0", 9999, 1000), Mark::Record(_)),
            "the entry expiring first was forgotten"
        );
    }

    #[test]
    fn values_spread_over_every_shard_of_a_fixed_set() {
        let keys: std::collections::HashSet<String> = (0..50_000)
            .map(|n| ledger_key("login", &format!("state-{n}")))
            .collect();
        assert_eq!(keys.len(), SHARDS as usize);
        assert_ne!(ledger_key("login", "x"), ledger_key("logout", "x"));
    }

    #[test]
    fn garbage_in_the_store_is_replaced() {
        assert!(matches!(mark(Some(b"\xff{"), "x", 5, 1), Mark::Record(_)));
    }
}
