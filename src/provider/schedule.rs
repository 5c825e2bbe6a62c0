//! When to fetch provider metadata, and which worker does it.
//!
//! Every VM ticks, but one fetch is enough: a VM claims a lease in the shared
//! status record with compare-and-swap before calling out, and records success
//! (next refresh) or failure (next retry, with exponential backoff) for all.

use serde::{Deserialize, Serialize};

/// Longest wait between retries while the provider is unreachable.
const MAX_BACKOFF: u64 = 30;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchStatus {
    pub failures: u32,
    pub next_attempt_at: u64,
    /// A worker is fetching until then; others keep off.
    pub lease_until: u64,
}

impl FetchStatus {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<FetchStatus> {
        serde_json::from_slice(bytes).ok()
    }

    /// The status to write (with compare-and-swap) to take the lease, if a fetch is due.
    pub fn claim(&self, now: u64, lease_seconds: u64) -> Option<FetchStatus> {
        let due = now >= self.next_attempt_at && now >= self.lease_until;
        due.then(|| FetchStatus {
            lease_until: now + lease_seconds,
            ..self.clone()
        })
    }

    pub fn succeeded(now: u64, refresh_interval: u64) -> FetchStatus {
        FetchStatus {
            failures: 0,
            next_attempt_at: now + refresh_interval,
            lease_until: 0,
        }
    }

    pub fn failed(&self, now: u64) -> FetchStatus {
        let failures = self.failures.saturating_add(1);
        FetchStatus {
            failures,
            next_attempt_at: now + backoff(failures),
            lease_until: 0,
        }
    }
}

/// 1, 2, 4, … seconds, capped.
pub fn backoff(failures: u32) -> u64 {
    1u64.checked_shl(failures.saturating_sub(1))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_lease_keeps_others_off_until_it_ends() {
        let fresh = FetchStatus::default();
        let claimed = fresh.claim(100, 10).expect("due at start");
        assert_eq!(claimed.lease_until, 110);
        assert_eq!(claimed.claim(105, 10), None);
        assert!(
            claimed.claim(110, 10).is_some(),
            "an abandoned lease expires"
        );
    }

    #[test]
    fn failures_back_off_exponentially_with_a_cap() {
        let mut status = FetchStatus::default();
        let mut waits = Vec::new();
        for _ in 0..8 {
            status = status.failed(1000);
            waits.push(status.next_attempt_at - 1000);
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(status.claim(1010, 5), None);
        assert!(status.claim(1030, 5).is_some());
    }

    #[test]
    fn success_schedules_the_refresh_and_resets_failures() {
        let status = FetchStatus::succeeded(500, 3600);
        assert_eq!(status.failures, 0);
        assert_eq!(status.claim(4099, 5), None);
        assert!(status.claim(4100, 5).is_some());
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        let status = FetchStatus {
            failures: u32::MAX,
            ..FetchStatus::default()
        };
        assert_eq!(status.failed(0).failures, u32::MAX);
    }
}
