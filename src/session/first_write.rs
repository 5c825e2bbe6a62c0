//! Creating shared-data keys, so that every write that carries data is a
//! compare-and-swap against a version that exists.
//!
//! Envoy ignores the compare-and-swap version of a key that does not exist
//! yet, so two workers that both read "absent" and then write both succeed,
//! and the second write silently replaces the first (a session, an index
//! link, a used `state` lost). Kong's engine reads a write without a version
//! as "only if absent" instead. Neither offers a portable conditional create,
//! so keys are created empty, one at a time under a creation lock that itself
//! lives in an existing key: a creator re-checks under the lock that the key
//! is still absent, so its unconditional write can never land on data.
//!
//! The lock records when it was taken (the host's clock), and is taken over
//! only when it is older than [`STALE_AFTER_MS`], far beyond any real holding
//! time: its holder stopped (a trapped VM). A holder that is merely preempted,
//! however many reads other workers spin meanwhile, keeps it; they give up
//! after [`LOCK_SPINS`] reads instead. Before its unconditional write a holder
//! checks that the lock is still its own, so only a holder that stops for
//! longer than [`STALE_AFTER_MS`] between that check and the write (one host
//! call) can still overlap with the creator that took over.

use super::shared_store::{SharedData, WriteError};

/// The lock that serializes key creation. The host creates it when the
/// configuration is loaded (on Envoy in the canary VM, before any worker runs).
pub const CREATION_LOCK_KEY: &str = "keys/creation-lock";

/// A held lock's value is this prefix and the time it was taken, in
/// milliseconds since the UNIX epoch; the free lock is empty.
const HELD_PREFIX: &str = "held@";

/// Reads of a held lock before a creator gives up (and reports failure rather
/// than wait): a holder keeps the lock for a handful of host calls, never
/// across events.
const LOCK_SPINS: usize = 4096;
/// Age after which a held lock is taken over: its holder stopped between
/// taking and releasing it. Far above any holding time, preempted or not.
const STALE_AFTER_MS: u64 = 2_000;

/// Creates the lock if it is absent. Call once when the configuration is loaded.
pub fn create_lock(data: &impl SharedData) {
    if let (None, None) = data.get(CREATION_LOCK_KEY) {
        if let Err(err) = data.set(CREATION_LOCK_KEY, b"", None) {
            log::error!("shared data: the key creation lock could not be made: {err:?}");
        }
    }
}

/// Makes sure `key` exists (created with the empty value, which reads as
/// absent data). `false` if it could not be created.
pub fn ensure_exists(data: &impl SharedData, key: &str) -> bool {
    if data.get(key).1.is_some() {
        return true;
    }
    let Some(lock) = acquire(data) else {
        log::error!("shared data: the key creation lock stayed held; {key} not created");
        return false;
    };
    let created = match data.get(key) {
        (_, Some(_)) => true,
        // Taken over while this worker stopped: the key is the new holder's to
        // create, and writing here could land on data written since.
        _ if data.get(CREATION_LOCK_KEY).1 != Some(lock) => {
            log::warn!(
                "shared data: the key creation lock was taken over; {key} left to its holder"
            );
            return data.get(key).1.is_some();
        }
        (_, None) => match data.set(key, b"", None) {
            Ok(()) => true,
            // Kong: another creator was first, which is as good.
            Err(WriteError::CasMismatch) => true,
            Err(WriteError::Failed(reason)) => {
                log::error!("shared data: creating {key} failed: {reason}");
                false
            }
        },
    };
    // A mismatch means the lock was taken over as stale: it is not ours to free.
    let _ = data.set(CREATION_LOCK_KEY, b"", Some(lock));
    created
}

/// Takes the creation lock; returns the version that holds it.
fn acquire(data: &impl SharedData) -> Option<u32> {
    for _ in 0..LOCK_SPINS {
        let (value, cas) = data.get(CREATION_LOCK_KEY);
        let Some(cas) = cas else {
            create_lock(data);
            continue;
        };
        let now = data.now_ms();
        let stale = match value.as_deref().map(taken_at) {
            None => false,
            Some(Some(at)) if at.abs_diff(now) <= STALE_AFTER_MS => continue,
            // Older than any holding time, dated implausibly far ahead (the
            // clock stepped back), or not a value this filter writes.
            Some(_) => true,
        };
        if stale {
            log::warn!("shared data: taking over a key creation lock its holder left");
        }
        let held = format!("{HELD_PREFIX}{now}");
        if data
            .set(CREATION_LOCK_KEY, held.as_bytes(), Some(cas))
            .is_ok()
        {
            return data.get(CREATION_LOCK_KEY).1;
        }
    }
    None
}

/// When a held lock was taken; `None` for a value this filter does not write.
fn taken_at(held: &[u8]) -> Option<u64> {
    std::str::from_utf8(held)
        .ok()?
        .strip_prefix(HELD_PREFIX)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::shared_store::InMemory;
    use std::cell::{Cell, RefCell};

    #[test]
    fn a_key_is_created_empty_once_and_the_lock_is_released() {
        let data = InMemory::default();
        assert!(ensure_exists(&data, "k"));
        assert_eq!(data.get("k").0, None, "empty reads as no data");
        let (_, version) = data.get("k");
        assert!(version.is_some());
        data.set("k", b"value", version).unwrap();
        assert!(ensure_exists(&data, "k"));
        assert_eq!(
            data.get("k").0.as_deref(),
            Some(&b"value"[..]),
            "never recreated"
        );
        assert_eq!(data.get(CREATION_LOCK_KEY).0, None, "released");
    }

    /// Shared data where, under its creation lock, this worker is preempted
    /// right after it reads `key` as still absent, and another worker's whole
    /// operation runs then, `elapsed_ms` later by the clock.
    struct Preempted<'a> {
        data: &'a InMemory,
        key: &'static str,
        reads: Cell<usize>,
        elapsed_ms: u64,
        other_worker: RefCell<Option<OtherWorker<'a>>>,
    }

    type OtherWorker<'a> = Box<dyn FnOnce(&InMemory) + 'a>;

    impl SharedData for Preempted<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            let read = self.data.get(key);
            if key == self.key {
                self.reads.set(self.reads.get() + 1);
                // The first read is the check before the lock; the second, under it.
                if self.reads.get() == 2 {
                    if let Some(other) = self.other_worker.borrow_mut().take() {
                        let clock = &self.data.clock_ms;
                        clock.set(clock.get() + self.elapsed_ms);
                        other(self.data);
                    }
                }
            }
            read
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
            self.data.set(key, value, cas)
        }

        fn now_ms(&self) -> u64 {
            self.data.now_ms()
        }
    }

    fn preempted<'a>(
        data: &'a InMemory,
        key: &'static str,
        elapsed_ms: u64,
        other: impl FnOnce(&InMemory) + 'a,
    ) -> Preempted<'a> {
        Preempted {
            data,
            key,
            reads: Cell::new(0),
            elapsed_ms,
            other_worker: RefCell::new(Some(Box::new(other))),
        }
    }

    /// The other worker's first write: create the key, then store a session in it.
    fn write_session(data: &InMemory, created: &Cell<Option<bool>>) {
        let made = ensure_exists(data, "k");
        created.set(Some(made));
        if made {
            let (_, version) = data.get("k");
            data.set("k", b"session", version).unwrap();
        }
    }

    #[test]
    fn a_lock_whose_holder_is_merely_slow_is_not_taken_over() {
        let data = InMemory::default();
        data.clock_ms.set(1_700_000_000_000);
        let other_created = Cell::new(None);
        // Thousands of reads by the other worker, but only a few milliseconds.
        let worker = preempted(&data, "k", 5, |data| write_session(data, &other_created));
        assert!(ensure_exists(&worker, "k"));
        assert_eq!(
            other_created.get(),
            Some(false),
            "the other worker gives up rather than take the lock over"
        );
        assert!(data.get("k").1.is_some());
        assert_eq!(data.get(CREATION_LOCK_KEY).0, None, "released");
    }

    #[test]
    fn a_holder_whose_lock_was_taken_over_does_not_write_over_data() {
        let data = InMemory::default();
        data.clock_ms.set(1_700_000_000_000);
        let other_created = Cell::new(None);
        let worker = preempted(&data, "k", STALE_AFTER_MS + 1, |data| {
            write_session(data, &other_created)
        });
        assert!(ensure_exists(&worker, "k"));
        assert_eq!(other_created.get(), Some(true), "taken over when stale");
        assert_eq!(
            data.get("k").0.as_deref(),
            Some(&b"session"[..]),
            "the resumed holder left the session alone"
        );
        assert_eq!(
            data.get(CREATION_LOCK_KEY).0,
            None,
            "released by the new holder"
        );
    }

    #[test]
    fn a_fresh_lock_held_elsewhere_makes_a_creator_give_up() {
        let data = InMemory::default();
        data.clock_ms.set(1_700_000_000_000);
        let held = format!("{HELD_PREFIX}{}", 1_700_000_000_000u64 - STALE_AFTER_MS);
        data.set(CREATION_LOCK_KEY, held.as_bytes(), None).unwrap();
        assert!(!ensure_exists(&data, "k"));
        assert_eq!(data.get("k").1, None);
        assert_eq!(
            data.get(CREATION_LOCK_KEY).0.as_deref(),
            Some(held.as_bytes())
        );
    }

    #[test]
    fn a_lock_older_than_any_holding_time_is_taken_over() {
        let now = 1_700_000_000_000u64;
        for (taken, why) in [
            (format!("{HELD_PREFIX}{}", now - STALE_AFTER_MS - 1), "old"),
            (
                format!("{HELD_PREFIX}{}", now + STALE_AFTER_MS + 1),
                "clock stepped back",
            ),
            ("held".to_string(), "an earlier version's lock"),
            ("\u{0}garbage".to_string(), "not ours"),
        ] {
            let data = InMemory::default();
            data.clock_ms.set(now);
            data.set(CREATION_LOCK_KEY, taken.as_bytes(), None).unwrap();
            assert!(ensure_exists(&data, "k"), "{why}");
            assert!(data.get("k").1.is_some(), "{why}");
            assert_eq!(data.get(CREATION_LOCK_KEY).0, None, "{why}: released");
        }
    }
}
