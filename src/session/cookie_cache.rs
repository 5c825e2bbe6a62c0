//! Cookie sessions opened earlier by this VM, by a digest of the whole sealed
//! value: opening one (base64, AES-GCM, JSON) costs more than the rest of a
//! request. Opening is a pure function of the value and the keys (entries
//! opened with other keys are dropped), so a hit is what opening would give;
//! what can change meanwhile is checked again on every hit by the flow: expiry
//! and idle time from the session itself, and revocation through the
//! deny-list's generation (see [`super::deny_list::GENERATION_KEY`]), which
//! each entry remembers the list was checked at.

use std::rc::Rc;

use super::cookie_codec::Opened;
use crate::cache::{BoundedMap, Digest};
use crate::crypto::seal::SealingKeys;

/// Sessions remembered at most (each a few kilobytes).
pub const MAX_ENTRIES: usize = 512;

#[derive(Debug)]
struct Entry {
    opened: Rc<Opened>,
    /// The deny-list generation at which the session was found not revoked.
    checked_at: u64,
}

#[derive(Debug)]
pub struct CookieSessionCache {
    /// The fingerprint of the keys every entry was opened with.
    keys: Option<Digest>,
    sessions: BoundedMap<Entry>,
}

impl Default for CookieSessionCache {
    fn default() -> CookieSessionCache {
        CookieSessionCache::with_capacity(MAX_ENTRIES)
    }
}

impl CookieSessionCache {
    pub fn with_capacity(capacity: usize) -> CookieSessionCache {
        CookieSessionCache {
            keys: None,
            sessions: BoundedMap::new(capacity),
        }
    }

    /// The session this cookie value opened to with these keys, and the
    /// deny-list generation it was last found not revoked at.
    pub fn get(&mut self, cookie: &Digest, keys: &SealingKeys) -> Option<(Rc<Opened>, u64)> {
        self.follow_keys(keys);
        self.sessions
            .get(cookie)
            .map(|entry| (entry.opened.clone(), entry.checked_at))
    }

    /// Remembers a session opened with `keys` and found not revoked at
    /// deny-list generation `checked_at`.
    pub fn insert(
        &mut self,
        cookie: Digest,
        keys: &SealingKeys,
        opened: Rc<Opened>,
        checked_at: u64,
    ) {
        self.follow_keys(keys);
        self.sessions.insert(cookie, Entry { opened, checked_at });
    }

    /// Forgets every session when the keys are not those they were opened with.
    fn follow_keys(&mut self, keys: &SealingKeys) {
        if self.keys.as_ref() != Some(keys.fingerprint()) {
            self.sessions.clear();
            self.keys = Some(*keys.fingerprint());
        }
    }

    pub fn forget(&mut self, cookie: &Digest) {
        self.sessions.remove(cookie);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
