//! The random sealing key one proxy process makes for itself when no keys are
//! configured, shared by its workers through shared data.
//!
//! Workers start together, and their first requests all find the key absent.
//! Only one key may ever be stored: a worker that sealed a login cookie with a
//! key another worker then replaced would see that login fail at its callback.

use super::first_write::ensure_exists;
use super::shared_store::{SharedData, WriteError};

/// Where the process's key lives in shared data.
pub const PROCESS_KEY: &str = "keys/login";

/// The process's key: the one stored, or `fresh` stored now if there is none.
/// `None` if shared data could not give one.
///
/// The key is created empty first (see [`super::first_write`]), and the new
/// key goes in by compare-and-swap against that empty version: of workers
/// racing here exactly one write lands, and the others read the winner's key.
pub fn shared_key(
    data: &impl SharedData,
    fresh: impl FnOnce() -> Option<[u8; 32]>,
) -> Option<Vec<u8>> {
    if let (Some(key), _) = data.get(PROCESS_KEY) {
        return Some(key);
    }
    if !ensure_exists(data, PROCESS_KEY) {
        return None;
    }
    let (stored, Some(empty)) = data.get(PROCESS_KEY) else {
        return None;
    };
    if stored.is_some() {
        return stored;
    }
    let key = fresh()?;
    match data.set(PROCESS_KEY, &key, Some(empty)) {
        Ok(()) | Err(WriteError::CasMismatch) => {}
        Err(WriteError::Failed(reason)) => {
            log::error!("the sealing key could not be shared: {reason}");
            return None;
        }
    }
    data.get(PROCESS_KEY).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::shared_store::InMemory;

    /// Shared data where another worker makes its key right after this worker's
    /// `at`-th read of the key that finds no value, as the first requests of two
    /// workers interleave.
    struct Racing<'a> {
        data: &'a InMemory,
        at: std::cell::Cell<usize>,
        other_worker: std::cell::RefCell<Option<Box<dyn FnOnce() + 'a>>>,
    }

    impl SharedData for Racing<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            let read = self.data.get(key);
            if key == PROCESS_KEY && read.0.is_none() {
                self.at.set(self.at.get().saturating_sub(1));
                if self.at.get() == 0 {
                    if let Some(other) = self.other_worker.borrow_mut().take() {
                        other();
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

    #[test]
    fn the_first_key_stored_stays_and_every_worker_gets_it() {
        let data = InMemory::default();
        let first = shared_key(&data, || Some([1; 32])).unwrap();
        assert_eq!(first, [1; 32]);
        assert_eq!(shared_key(&data, || Some([2; 32])).unwrap(), first);
        assert_eq!(
            shared_key(&data, || None).unwrap(),
            first,
            "no randomness needed once stored"
        );
        assert!(shared_key(&InMemory::default(), || None).is_none());
    }

    #[test]
    fn two_workers_making_the_key_at_once_end_with_the_same_one() {
        // This worker reads the key (1) first, (2) in `ensure_exists` before the
        // creation lock, (3) under the lock, (4) before its compare-and-swap. At
        // (3) the other worker would wait for the lock (see `first_write`).
        for at in [1, 2, 4] {
            let data = InMemory::default();
            let others = std::cell::RefCell::new(None);
            let racing = Racing {
                data: &data,
                at: std::cell::Cell::new(at),
                other_worker: std::cell::RefCell::new(Some(Box::new(|| {
                    *others.borrow_mut() = shared_key(&data, || Some([2; 32]));
                }))),
            };
            let mine = shared_key(&racing, || Some([1; 32])).unwrap();
            drop(racing);
            assert_eq!(
                Some(&mine),
                others.into_inner().as_ref(),
                "at read {at}: the two workers seal with different keys"
            );
            assert_eq!(
                data.get(PROCESS_KEY).0.unwrap(),
                mine,
                "at read {at}: the key this worker sealed with was replaced"
            );
        }
    }
}
