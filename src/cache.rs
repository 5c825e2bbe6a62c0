//! A small bounded map keyed by SHA-256 digests: what one VM remembers between
//! requests (verified tokens, opened sessions), so the work is not redone on
//! every request. Each VM (one per Envoy worker) has its own, so nothing here
//! is shared or needs locking; what may change elsewhere is re-checked by the
//! caller on every hit.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest as _, Sha256};

/// The key: a SHA-256 digest, so the map never holds a token or cookie itself,
/// and two values that differ in one byte never share an entry.
pub type Digest = [u8; 32];

pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// At most `capacity` entries; when full, the oldest insertion goes (a flood of
/// distinct keys evicts, it never grows memory).
#[derive(Debug)]
pub struct BoundedMap<V> {
    capacity: usize,
    entries: HashMap<Digest, V>,
    /// Insertion order, oldest first. May name keys removed since; their
    /// eviction is then a no-op, and its length bounds the entries.
    order: VecDeque<Digest>,
}

impl<V> BoundedMap<V> {
    pub fn new(capacity: usize) -> BoundedMap<V> {
        BoundedMap {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, key: &Digest) -> Option<&V> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: Digest, value: V) {
        if self.entries.insert(key, value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.entries.remove(&oldest);
                }
            }
        }
    }

    pub fn remove(&mut self, key: &Digest) {
        self.entries.remove(key);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let mut map = BoundedMap::new(8);
        for i in 0..10_000u32 {
            map.insert(digest(&i.to_be_bytes()), i);
            assert!(map.len() <= 8);
            assert!(map.order.len() <= 8);
        }
        // The newest survive.
        assert_eq!(map.get(&digest(&9_999u32.to_be_bytes())), Some(&9_999));
        assert_eq!(map.get(&digest(&0u32.to_be_bytes())), None);
    }

    #[test]
    fn removed_and_reinserted_keys_keep_the_bound() {
        let mut map = BoundedMap::new(4);
        for round in 0..100u32 {
            let key = digest(b"same");
            map.insert(key, round);
            map.remove(&key);
            map.insert(digest(&round.to_be_bytes()), round);
            assert!(map.len() <= 4 && map.order.len() <= 4);
        }
    }

    #[test]
    fn keys_differing_in_one_byte_are_different_entries() {
        let mut map = BoundedMap::new(4);
        map.insert(digest(b"token-a"), 1);
        assert_eq!(map.get(&digest(b"token-b")), None);
        assert_eq!(map.get(&digest(b"token-a")), Some(&1));
    }
}
