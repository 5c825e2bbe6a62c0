//! How sessions are laid out in shared data: a fixed ring of bucket keys.
//!
//! Shared data never forgets a key (removal only empties the value), so one key
//! per session would grow without bound. Sessions are instead hashed into a
//! fixed number of buckets sized from the session ceiling; each bucket holds a
//! few sessions and is updated with compare-and-swap. The same layout holds the
//! index from `sid` and `sub` to sessions that back-channel logout needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Session, SessionKey};

/// Fixed by the session ceiling at configuration time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    buckets: u32,
    /// Most sessions one bucket keeps before evicting its oldest.
    pub per_bucket: usize,
}

/// Sessions per bucket at the ceiling, on average. Buckets may hold up to
/// three times as many before evicting, so uneven hashing rarely evicts early.
const MEAN_PER_BUCKET: u32 = 4;

impl Layout {
    pub fn new(max_sessions: u32) -> Layout {
        let buckets = (max_sessions / MEAN_PER_BUCKET).max(1).next_power_of_two();
        Layout {
            buckets,
            per_bucket: 3 * MEAN_PER_BUCKET as usize,
        }
    }

    pub fn bucket_count(&self) -> u32 {
        self.buckets
    }

    pub fn session_bucket(&self, key: &SessionKey) -> String {
        format!("sessions/{}", self.bucket_of(key.as_str()))
    }

    pub fn session_bucket_at(&self, index: u32) -> String {
        format!("sessions/{index}")
    }

    pub fn index_bucket(&self, entry: &IndexEntry) -> String {
        format!("index/{}", self.bucket_of(&entry.0))
    }

    pub fn index_bucket_at(&self, index: u32) -> String {
        format!("index/{index}")
    }

    fn bucket_of(&self, hashed: &str) -> u32 {
        use base64::Engine;
        // Keys are base64url SHA-256 digests: their first bytes are uniform.
        let prefix = hashed.get(..8).unwrap_or(hashed);
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(prefix)
            .unwrap_or_default();
        let n = bytes
            .iter()
            .take(4)
            .fold(0u32, |n, b| (n << 8) | u32::from(*b));
        n % self.buckets
    }
}

/// The sessions of one bucket, by session key.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SessionBucket {
    #[serde(default)]
    sessions: BTreeMap<String, Session>,
}

/// What changed in a bucket, for the counters and the index.
#[derive(Debug, Default, PartialEq)]
pub struct Removed {
    pub expired: Vec<(SessionKey, Session)>,
    pub evicted: Vec<(SessionKey, Session)>,
}

impl SessionBucket {
    pub fn decode(bytes: Option<&[u8]>) -> SessionBucket {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn get(&self, key: &SessionKey) -> Option<&Session> {
        self.sessions.get(key.as_str())
    }

    pub fn get_mut(&mut self, key: &SessionKey) -> Option<&mut Session> {
        self.sessions.get_mut(key.as_str())
    }

    pub fn remove(&mut self, key: &SessionKey) -> Option<Session> {
        self.sessions.remove(key.as_str())
    }

    /// Stores a session; a full bucket evicts its oldest sessions first.
    pub fn put(
        &mut self,
        key: &SessionKey,
        session: Session,
        layout: &Layout,
    ) -> Vec<(SessionKey, Session)> {
        self.sessions.insert(key.as_str().to_string(), session);
        let mut evicted = Vec::new();
        while self.sessions.len() > layout.per_bucket {
            let oldest = self
                .sessions
                .iter()
                .filter(|(k, _)| k.as_str() != key.as_str())
                .min_by_key(|(_, s)| s.created_at)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(session) = self.sessions.remove(&oldest) {
                evicted.push((SessionKey::from_hash(oldest), session));
            }
        }
        evicted
    }

    /// Drops sessions past their idle or absolute timeout, and those created
    /// before `evict_before` (the ceiling's cut-off).
    pub fn sweep(&mut self, now: u64, idle_timeout: u64, evict_before: u64) -> Removed {
        let mut removed = Removed::default();
        let keys: Vec<String> = self.sessions.keys().cloned().collect();
        for key in keys {
            let Some(session) = self.sessions.get(&key) else {
                continue;
            };
            let expired = session.expiry(now, idle_timeout).is_some();
            let evicted = session.created_at < evict_before;
            if expired || evicted {
                if let Some(session) = self.sessions.remove(&key) {
                    let entry = (SessionKey::from_hash(key), session);
                    if expired {
                        removed.expired.push(entry);
                    } else {
                        removed.evicted.push(entry);
                    }
                }
            }
        }
        removed
    }

    pub fn created_at(&self) -> impl Iterator<Item = u64> + '_ {
        self.sessions.values().map(|s| s.created_at)
    }
}

/// An index entry: the hashed `sid` or `sub` a back-channel logout names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry(String);

impl IndexEntry {
    pub fn sid(issuer: &str, sid: &str) -> IndexEntry {
        IndexEntry(crate::crypto::sha256_b64url(
            format!("sid|{issuer}|{sid}").as_bytes(),
        ))
    }

    pub fn sub(issuer: &str, sub: &str) -> IndexEntry {
        IndexEntry(crate::crypto::sha256_b64url(
            format!("sub|{issuer}|{sub}").as_bytes(),
        ))
    }

    /// One cookie session exactly (its creation time, `sub` and `sid` tell it
    /// apart), for the deny-list at logout. Never filed in the index.
    pub fn cookie_session(issuer: &str, session: &Session) -> IndexEntry {
        IndexEntry(crate::crypto::sha256_b64url(
            format!(
                "session|{issuer}|{}|{}|{}",
                session.created_at,
                session.sub,
                session.sid.as_deref().unwrap_or_default()
            )
            .as_bytes(),
        ))
    }

    /// What the cookie store's deny-list checks a session against: its index
    /// entries and its own [`IndexEntry::cookie_session`].
    pub fn for_deny_list(issuer: &str, session: &Session) -> Vec<IndexEntry> {
        let mut entries = IndexEntry::for_session(issuer, session);
        entries.push(IndexEntry::cookie_session(issuer, session));
        entries
    }

    /// The digest itself, e.g. to keep it in the cookie store's deny-list.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The entries a session is filed under.
    pub fn for_session(issuer: &str, session: &Session) -> Vec<IndexEntry> {
        let mut entries = vec![IndexEntry::sub(issuer, &session.sub)];
        if let Some(sid) = &session.sid {
            entries.push(IndexEntry::sid(issuer, sid));
        }
        entries
    }
}

/// One index bucket: entry → (session key, session expiry). The expiry lets a
/// sweep drop links of ended sessions without looking the sessions up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IndexBucket {
    #[serde(default)]
    entries: BTreeMap<String, Vec<(String, u64)>>,
}

impl IndexBucket {
    pub fn decode(bytes: Option<&[u8]>) -> IndexBucket {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Files the session under `entry`. Past `cap` sessions under one entry,
    /// the oldest links are taken out and returned: the caller must end those
    /// sessions, since a session the index cannot name could not be revoked.
    pub fn add(
        &mut self,
        entry: &IndexEntry,
        key: &SessionKey,
        expires_at: u64,
        cap: usize,
    ) -> Vec<SessionKey> {
        let keys = self.entries.entry(entry.0.clone()).or_default();
        if !keys.iter().any(|(k, _)| k == key.as_str()) {
            keys.push((key.as_str().to_string(), expires_at));
        }
        let excess = keys.len().saturating_sub(cap.max(1));
        keys.drain(..excess)
            .map(|(key, _)| SessionKey::from_hash(key))
            .collect()
    }

    pub fn remove(&mut self, entry: &IndexEntry, key: &SessionKey) {
        if let Some(keys) = self.entries.get_mut(&entry.0) {
            keys.retain(|(k, _)| k != key.as_str());
            if keys.is_empty() {
                self.entries.remove(&entry.0);
            }
        }
    }

    /// Removes the entry and returns the sessions it named.
    pub fn take(&mut self, entry: &IndexEntry) -> Vec<SessionKey> {
        self.entries
            .remove(&entry.0)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, _)| SessionKey::from_hash(key))
            .collect()
    }

    /// How many session links the bucket holds, over all its entries.
    pub fn links(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    /// Drops links to sessions past their absolute expiry; `true` if any went.
    pub fn sweep(&mut self, now: u64) -> bool {
        let before = self.links();
        for keys in self.entries.values_mut() {
            keys.retain(|(_, expires_at)| *expires_at > now);
        }
        self.entries.retain(|_, keys| !keys.is_empty());
        self.links() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sub: &str, created_at: u64) -> Session {
        Session {
            sub: sub.to_string(),
            sid: Some(format!("sid-{sub}")),
            created_at,
            expires_at: created_at + 1000,
            last_seen: created_at,
            access_token: "at".to_string(),
            access_token_expires_at: None,
            access_token_lifetime: None,
            refresh_token: None,
            id_token: None,
            claims: Default::default(),
            refreshing_until: None,
        }
    }

    fn key(n: u32) -> SessionKey {
        SessionKey::from_hash(crate::crypto::sha256_b64url(&n.to_le_bytes()))
    }

    #[test]
    fn buckets_spread_keys_evenly() {
        let layout = Layout::new(100_000);
        assert_eq!(layout.bucket_count(), 32_768);
        let mut counts = std::collections::HashMap::new();
        for n in 0..100_000 {
            *counts.entry(layout.session_bucket(&key(n))).or_insert(0u32) += 1;
        }
        let fullest = counts.values().max().copied().unwrap();
        assert!(
            fullest <= layout.per_bucket as u32 * 2,
            "fullest bucket has {fullest}"
        );
        assert!(counts.len() > 30_000, "only {} buckets used", counts.len());
    }

    #[test]
    fn a_full_bucket_evicts_its_oldest_session() {
        let layout = Layout::new(4);
        let mut bucket = SessionBucket::default();
        for n in 0..layout.per_bucket as u32 {
            assert!(bucket
                .put(&key(n), session("u", 100 + u64::from(n)), &layout)
                .is_empty());
        }
        let evicted = bucket.put(&key(99), session("new", 50), &layout);
        assert_eq!(evicted.len(), 1);
        assert_eq!(
            evicted[0].1.created_at, 100,
            "the oldest other session goes, never the new one"
        );
        assert!(bucket.get(&key(99)).is_some());
        assert_eq!(bucket.len(), layout.per_bucket);
    }

    #[test]
    fn sweep_removes_expired_and_evicts_before_the_cutoff() {
        let mut bucket = SessionBucket::default();
        let layout = Layout::new(100);
        let _ = bucket.put(&key(1), session("idle", 0), &layout);
        let _ = bucket.put(&key(2), session("old", 900), &layout);
        let _ = bucket.put(&key(3), session("young", 950), &layout);
        let mut touched = session("active", 10);
        touched.last_seen = 990;
        let _ = bucket.put(&key(4), touched, &layout);
        let removed = bucket.sweep(1000, 200, 920);
        let subs = |v: &Vec<(SessionKey, Session)>| {
            v.iter().map(|(_, s)| s.sub.clone()).collect::<Vec<_>>()
        };
        assert_eq!(subs(&removed.expired), ["idle"]);
        assert!(subs(&removed.evicted).contains(&"old".to_string()));
        assert!(
            subs(&removed.evicted).contains(&"active".to_string()),
            "created before the cut-off"
        );
        assert_eq!(bucket.len(), 1);
        assert!(bucket.get(&key(3)).is_some());
    }

    #[test]
    fn the_index_finds_sessions_by_sid_and_sub() {
        let mut index = IndexBucket::default();
        let s = session("alice", 1);
        for entry in IndexEntry::for_session("https://idp", &s) {
            assert!(index.add(&entry, &key(1), 100, 64).is_empty());
        }
        assert!(index
            .add(&IndexEntry::sub("https://idp", "alice"), &key(2), 200, 64)
            .is_empty());
        assert_eq!(
            index.take(&IndexEntry::sid("https://idp", "sid-alice")),
            vec![key(1)]
        );
        assert_eq!(
            index.take(&IndexEntry::sub("https://idp", "alice")),
            vec![key(1), key(2)]
        );
        assert!(index
            .take(&IndexEntry::sub("https://idp", "alice"))
            .is_empty());
        assert!(index
            .take(&IndexEntry::sub("https://other", "alice"))
            .is_empty());
    }

    #[test]
    fn the_index_sweep_drops_links_of_expired_sessions() {
        let mut index = IndexBucket::default();
        let alice = IndexEntry::sub("https://idp", "alice");
        assert!(index.add(&alice, &key(1), 100, 64).is_empty());
        assert!(index.add(&alice, &key(2), 200, 64).is_empty());
        assert!(!index.sweep(99));
        assert!(index.sweep(150));
        assert_eq!(index.take(&alice), vec![key(2)]);
        assert!(!index.sweep(150));
    }

    #[test]
    fn garbage_buckets_read_as_empty() {
        assert!(SessionBucket::decode(Some(b"\xff")).is_empty());
        assert!(IndexBucket::decode(Some(b"[1,2]")).entries.is_empty());
    }
}
