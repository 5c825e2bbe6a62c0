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
//! is still absent, so its unconditional write can never land on data. The
//! one exception is a lock taken over as stale (its holder stopped for
//! thousands of reads between taking and releasing it, which only a trapped
//! VM or extreme preemption does): then two creators may overlap.

use super::shared_store::{SharedData, WriteError};

/// The lock that serializes key creation. The host creates it when the
/// configuration is loaded (on Envoy in the canary VM, before any worker runs).
pub const CREATION_LOCK_KEY: &str = "keys/creation-lock";

const HELD: &[u8] = b"held";

/// Reads of a held lock before a creator gives up. A holder keeps the lock for
/// a handful of host calls, never across events.
const LOCK_SPINS: usize = 4096;
/// Reads during which a held lock may keep the same version before it is taken
/// over: its holder stopped (a trapped VM) between taking and releasing it.
const STALE_AFTER: usize = 2048;

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
    let mut held_since: Option<(u32, usize)> = None;
    for spin in 0..LOCK_SPINS {
        let (value, cas) = data.get(CREATION_LOCK_KEY);
        let Some(cas) = cas else {
            create_lock(data);
            continue;
        };
        let free = value.as_deref() != Some(HELD);
        let stale = match held_since {
            Some((version, since)) if version == cas => spin - since >= STALE_AFTER,
            _ => {
                held_since = Some((cas, spin));
                false
            }
        };
        if !(free || stale) {
            continue;
        }
        if stale {
            log::warn!("shared data: taking over a key creation lock its holder left");
        }
        if data.set(CREATION_LOCK_KEY, HELD, Some(cas)).is_ok() {
            return data.get(CREATION_LOCK_KEY).1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::shared_store::InMemory;

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

    #[test]
    fn a_lock_left_held_is_taken_over() {
        let data = InMemory::default();
        data.set(CREATION_LOCK_KEY, HELD, None).unwrap();
        assert!(ensure_exists(&data, "k"));
        assert!(data.get("k").1.is_some());
    }
}
