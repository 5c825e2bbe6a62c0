//! Session records decoded earlier by this VM, so that a request decodes its
//! session's shared-data entry once per change of it, not once per request.
//! An entry is served only while the entry it came from is at the same
//! version: every write (a refresh, a touch, a logout, a back-channel logout,
//! the sweep) changes the version, and an emptied entry reads as absent
//! whatever is remembered here.

use std::cell::RefCell;

use super::{Session, SessionKey};
use crate::cache::{self, BoundedMap};

/// Sessions remembered at most (each a few kilobytes).
pub const MAX_ENTRIES: usize = 512;

/// What a shared-data entry was when it was read: its compare-and-swap
/// version, and its length as a second guard should a host ever reuse a
/// version for other contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub cas: u32,
    pub len: usize,
}

#[derive(Debug)]
struct Entry {
    version: Version,
    session: Session,
}

#[derive(Debug)]
pub struct RecordCache {
    records: RefCell<BoundedMap<Entry>>,
}

impl Default for RecordCache {
    fn default() -> RecordCache {
        RecordCache::with_capacity(MAX_ENTRIES)
    }
}

impl RecordCache {
    pub fn with_capacity(capacity: usize) -> RecordCache {
        RecordCache {
            records: RefCell::new(BoundedMap::new(capacity)),
        }
    }

    /// The session as decoded from the entry at `version`, if remembered.
    pub fn get(&self, key: &SessionKey, version: Version) -> Option<Session> {
        let records = self.records.try_borrow().ok()?;
        let entry = records.get(&cache::digest(key.as_str().as_bytes()))?;
        (entry.version == version).then(|| entry.session.clone())
    }

    /// Remembers what the entry at `version` holds for `key` (`None`: nothing).
    pub fn remember(&self, key: &SessionKey, version: Option<Version>, session: Option<&Session>) {
        let Ok(mut records) = self.records.try_borrow_mut() else {
            return;
        };
        let digest = cache::digest(key.as_str().as_bytes());
        match (version, session) {
            (Some(version), Some(session)) => records.insert(
                digest,
                Entry {
                    version,
                    session: session.clone(),
                },
            ),
            _ => records.remove(&digest),
        }
    }

    pub fn len(&self) -> usize {
        self.records.try_borrow().map_or(0, |records| records.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
