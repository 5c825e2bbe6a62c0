//! Sessions in a shared key-value store with compare-and-swap (Envoy's shared
//! data), laid out in buckets with an index (see [`super::buckets`]).
//!
//! Every read-modify-write goes through compare-and-swap and retries on a
//! conflict, because all workers write the same keys. A key is created (see
//! [`super::first_write`]) before its first write, because a version is
//! ignored for keys that do not exist.

use super::buckets::{IndexBucket, IndexEntry, Layout, SessionBucket};
use super::first_write::ensure_exists;
use super::once::{self, Mark};
use super::record_cache::{RecordCache, Version};
use super::writes::StoreWrite;
use super::{Session, SessionKey};

/// The host's shared key-value store.
pub trait SharedData {
    /// The value and its version; the empty value removal leaves is absent.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes unless `cas` is given and the key changed since that version.
    /// Like Envoy, an absent key accepts any `cas`.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError>;
    /// The host's clock, in milliseconds since the UNIX epoch, as other
    /// workers see it (the key creation lock records when it was taken).
    fn now_ms(&self) -> u64;
}

impl<T: SharedData> SharedData for &T {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        (**self).get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        (**self).set(key, value, cas)
    }

    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    CasMismatch,
    Failed(String),
}

const SWEEP_STATE_KEY: &str = "sweep/state";

/// How long a worker keeps the sweep between two of its ticks before another
/// may take over (and restart the pass).
const SWEEP_LEASE_SECONDS: u64 = 10;

/// Progress of the sweep. One worker owns a pass from start to end (renewing
/// its lease each tick), because the ceiling's exact cut-off needs every live
/// session's creation time, which the owner collects in its own memory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SweepState {
    owner: u64,
    lease_until: u64,
    cursor: u32,
    next_pass_at: u64,
    /// Sessions created before this are evicted (ceiling); 0 for none.
    evict_before: u64,
}

impl SweepState {
    fn new(now: u64) -> SweepState {
        SweepState {
            owner: 0,
            lease_until: 0,
            cursor: 0,
            next_pass_at: now,
            evict_before: 0,
        }
    }

    fn decode(bytes: &[u8]) -> Option<SweepState> {
        serde_json::from_slice(bytes).ok()
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The ceiling's cut-off: with `created` the creation times of all live
/// sessions, the time before which the oldest must go to leave at most `max`.
fn eviction_cutoff(mut created: Vec<u64>, max: usize) -> Option<u64> {
    let excess = created.len().checked_sub(max).filter(|e| *e > 0)?;
    let (_, nth, _) = created.select_nth_unstable(excess - 1);
    Some(nth.saturating_add(1))
}

/// What a store operation did, for the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub created: usize,
    pub expired: usize,
    pub evicted: usize,
    /// Live sessions after a sweep.
    pub live: usize,
    /// Links in the `sid`/`sub` index after a sweep: two per session with a
    /// `sid`, one without, so a link that outlived its session (or one never
    /// written) shows against `live`.
    pub index_links: usize,
    /// A sweep pass ended with this slice: `live` and `index_links` are its counts.
    pub pass_ended: bool,
}

/// What one worker's sweep pass has seen so far.
#[derive(Debug, Default)]
pub struct SweepTally {
    /// Creation times of the live sessions (the ceiling's cut-off needs them).
    created: Vec<u64>,
    index_links: usize,
}

/// Conflicts on one key are rare and short; give up rather than spin.
const CAS_ATTEMPTS: usize = 16;

/// Reads `key`, lets `change` edit the decoded value, writes it back with
/// compare-and-swap, and retries on conflict. `change` returns `None` to write
/// nothing; its result is returned.
fn update<T, V>(
    data: &impl SharedData,
    key: &str,
    decode: impl Fn(Option<&[u8]>) -> V,
    encode: impl Fn(&V) -> Vec<u8>,
    mut change: impl FnMut(&mut V) -> Option<T>,
) -> Option<T> {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = data.get(key);
        let Some(cas) = cas else {
            if !ensure_exists(data, key) {
                return None;
            }
            continue;
        };
        let mut value = decode(bytes.as_deref());
        let result = change(&mut value)?;
        match data.set(key, &encode(&value), Some(cas)) {
            Ok(()) => return Some(result),
            Err(WriteError::CasMismatch) => continue,
            Err(WriteError::Failed(reason)) => {
                log::error!("shared data write of {key} failed: {reason}");
                return None;
            }
        }
    }
    log::error!("shared data key {key} stayed contended; update dropped");
    None
}

/// The shared-data session store.
pub struct SessionStore<D: SharedData> {
    pub data: D,
    pub layout: Layout,
    pub issuer: String,
    pub idle_timeout: u64,
    pub absolute_timeout: u64,
    pub max_sessions: u32,
    /// Sessions one `sub` (or one `sid`) may have; a new one past it ends the
    /// oldest, so that every session stays reachable for revocation.
    pub max_sessions_per_subject: usize,
    /// Tells this worker's sweep apart from the others' (random per VM).
    pub sweeper_id: u64,
    /// What this worker's pass has seen so far.
    pub sweep_seen: std::cell::RefCell<SweepTally>,
    /// Sessions this worker decoded, by the version of their bucket.
    pub records: RecordCache,
}

impl<D: SharedData> SessionStore<D> {
    /// The session stored under `key`, decoded only if its bucket changed
    /// since this worker last decoded it.
    pub fn load(&self, key: &SessionKey) -> Option<Session> {
        let (bytes, cas) = self.data.get(&self.layout.session_bucket(key));
        // Absent or emptied: no session, whatever was remembered.
        let Some(bytes) = bytes else {
            self.records.remember(key, None, None);
            return None;
        };
        let version = cas.map(|cas| Version {
            cas,
            len: bytes.len(),
        });
        if let Some(session) = version.and_then(|version| self.records.get(key, version)) {
            return Some(session);
        }
        let session = SessionBucket::decode(Some(&bytes)).remove(key);
        self.records.remember(key, version, session.as_ref());
        session
    }

    pub fn apply(&self, writes: Vec<StoreWrite>) -> Changes {
        let mut changes = Changes::default();
        for write in writes {
            match write {
                StoreWrite::Put { key, session } => self.put(key, *session, &mut changes),
                StoreWrite::Update { key, session } => {
                    self.update_bucket(&key, |bucket| {
                        *bucket.get_mut(&key)? = (*session).clone();
                        Some(())
                    });
                }
                StoreWrite::Touch { key, at } => {
                    self.update_bucket(&key, |bucket| {
                        let session = bucket.get_mut(&key)?;
                        session.last_seen = session.last_seen.max(at);
                        Some(())
                    });
                }
                StoreWrite::ReleaseRefresh { key } => {
                    self.update_bucket(&key, |bucket| {
                        bucket.get_mut(&key)?.refreshing_until.take().map(|_| ())
                    });
                }
                StoreWrite::Delete { key } => {
                    if let Some(session) = self.update_bucket(&key, |bucket| bucket.remove(&key)) {
                        self.unindex(&key, &session);
                    }
                }
            }
        }
        changes
    }

    fn put(&self, key: SessionKey, session: Session, changes: &mut Changes) {
        let layout = self.layout;
        let new = self.update_bucket(&key, |bucket| {
            let new = bucket.get(&key).is_none();
            let evicted = bucket.put(&key, session.clone(), &layout);
            Some((new, evicted))
        });
        let Some((new, evicted)) = new else { return };
        if new {
            changes.created += 1;
            for entry in IndexEntry::for_session(&self.issuer, &session) {
                let over_cap = self
                    .update_index(&entry, |index| {
                        Some(index.add(
                            &entry,
                            &key,
                            session.expires_at,
                            self.max_sessions_per_subject,
                        ))
                    })
                    .unwrap_or_default();
                for oldest in over_cap {
                    if let Some(ended) =
                        self.update_bucket(&oldest, |bucket| bucket.remove(&oldest))
                    {
                        self.unindex(&oldest, &ended);
                        changes.evicted += 1;
                        log::info!("per-subject session cap: ended the user's oldest session");
                    }
                }
            }
        }
        if !evicted.is_empty() {
            log::info!(
                "session ceiling: evicted {} oldest session(s) from a full bucket",
                evicted.len()
            );
            changes.evicted += evicted.len();
        }
        for (evicted_key, evicted_session) in evicted {
            self.unindex(&evicted_key, &evicted_session);
        }
    }

    /// Marks the session as being refreshed, unless another worker already is.
    pub fn claim_refresh(
        &self,
        key: &SessionKey,
        now: u64,
        until: u64,
        access_token: &str,
    ) -> bool {
        self.update_bucket(key, |bucket| {
            let session = bucket.get_mut(key)?;
            // Refreshed since this request read it: its refresh token may be spent.
            if session.refresh_in_progress(now) || session.access_token != access_token {
                return None;
            }
            session.refreshing_until = Some(until);
            Some(())
        })
        .is_some()
    }

    /// Ends every session the entries name; returns how many there were.
    pub fn end_sessions(&self, entries: &[IndexEntry]) -> usize {
        let mut ended = 0;
        for entry in entries {
            let keys = self
                .update_index(entry, |index| Some(index.take(entry)))
                .unwrap_or_default();
            for key in keys {
                if let Some(session) = self.update_bucket(&key, |bucket| bucket.remove(&key)) {
                    self.unindex(&key, &session);
                    ended += 1;
                }
            }
        }
        ended
    }

    /// Sweeps the next slice of buckets, so that one pass over the whole store
    /// takes `interval` seconds of ticks and no tick stalls its worker for long.
    /// Expired sessions go; at the end of a pass, if more than the ceiling were
    /// live, the next pass (started at once) evicts the oldest.
    pub fn sweep_tick(&self, now: u64, interval: u64) -> Option<Changes> {
        let buckets = self.layout.bucket_count();
        let slice = buckets.div_ceil(interval.max(1) as u32).max(1);
        let (bytes, cas) = self.data.get(SWEEP_STATE_KEY);
        let Some(mut state) = bytes.as_deref().and_then(SweepState::decode) else {
            // The first tick creates the state; the next starts the first pass.
            let cas = match cas {
                Some(cas) => Some(cas),
                None if ensure_exists(&self.data, SWEEP_STATE_KEY) => {
                    self.data.get(SWEEP_STATE_KEY).1
                }
                None => None,
            };
            if let Some(cas) = cas {
                let _ = self
                    .data
                    .set(SWEEP_STATE_KEY, &SweepState::new(now).encode(), Some(cas));
            }
            return None;
        };
        let mine = state.owner == self.sweeper_id;
        if !mine && now < state.lease_until {
            return None;
        }
        if state.cursor == 0 && now < state.next_pass_at {
            return None;
        }
        if !mine || state.cursor == 0 {
            // A new pass, or one taken over from a worker that stopped: this
            // worker has not seen its earlier buckets, so it starts over.
            state.cursor = 0;
            *self.sweep_seen.borrow_mut() = SweepTally::default();
        }
        state.owner = self.sweeper_id;
        state.lease_until = now + SWEEP_LEASE_SECONDS;
        if self
            .data
            .set(SWEEP_STATE_KEY, &state.encode(), cas)
            .is_err()
        {
            return None;
        }

        let mut changes = Changes::default();
        let end = state.cursor.saturating_add(slice).min(buckets);
        for index in state.cursor..end {
            self.sweep_bucket(index, now, state.evict_before, &mut changes);
        }
        state.cursor = end;
        if state.cursor >= buckets {
            let seen = std::mem::take(&mut *self.sweep_seen.borrow_mut());
            changes.live = seen.created.len();
            changes.index_links = seen.index_links;
            changes.pass_ended = true;
            state.evict_before =
                eviction_cutoff(seen.created, self.max_sessions as usize).unwrap_or(0);
            state.cursor = 0;
            state.lease_until = 0;
            state.next_pass_at = if state.evict_before > 0 {
                now
            } else {
                now + interval
            };
        }
        if let (_, Some(cas)) = self.data.get(SWEEP_STATE_KEY) {
            let _ = self.data.set(SWEEP_STATE_KEY, &state.encode(), Some(cas));
        }
        if changes.expired > 0 || changes.evicted > 0 {
            log::info!(
                "session sweep: {} expired, {} evicted over the ceiling",
                changes.expired,
                changes.evicted
            );
        }
        Some(changes)
    }

    /// A whole pass at once, and the evicting pass the ceiling may call for
    /// (tests, benchmarks).
    pub fn sweep_all(&self, now: u64) -> Changes {
        ensure_exists(&self.data, SWEEP_STATE_KEY);
        if let (_, Some(cas)) = self.data.get(SWEEP_STATE_KEY) {
            let _ = self
                .data
                .set(SWEEP_STATE_KEY, &SweepState::new(now).encode(), Some(cas));
        }
        let mut total = Changes::default();
        for _ in 0..2 {
            let Some(changes) = self.sweep_tick(now, 1) else {
                break;
            };
            total.expired += changes.expired;
            total.evicted += changes.evicted;
            total.live = changes.live;
            total.index_links = changes.index_links;
            total.pass_ended |= changes.pass_ended;
        }
        total
    }

    fn sweep_bucket(&self, index: u32, now: u64, evict_before: u64, changes: &mut Changes) {
        let index_key = self.layout.index_bucket_at(index);
        if let (Some(bytes), _) = self.data.get(&index_key) {
            let mut preview = IndexBucket::decode(Some(&bytes));
            let swept = preview.sweep(now);
            self.sweep_seen.borrow_mut().index_links += preview.links();
            if swept {
                update(
                    &self.data,
                    &index_key,
                    IndexBucket::decode,
                    IndexBucket::encode,
                    |index| index.sweep(now).then_some(()),
                );
            }
        }

        let key = self.layout.session_bucket_at(index);
        let (bytes, _) = self.data.get(&key);
        let Some(bytes) = bytes else { return };
        let mut preview = SessionBucket::decode(Some(&bytes));
        let removed = preview.sweep(now, self.idle_timeout, evict_before);
        if removed.expired.is_empty() && removed.evicted.is_empty() {
            self.sweep_seen
                .borrow_mut()
                .created
                .extend(preview.created_at());
            return;
        }
        let swept = update(
            &self.data,
            &key,
            SessionBucket::decode,
            SessionBucket::encode,
            |bucket| {
                let removed = bucket.sweep(now, self.idle_timeout, evict_before);
                Some((removed, bucket.created_at().collect::<Vec<_>>()))
            },
        );
        let Some((removed, remaining)) = swept else {
            return;
        };
        self.sweep_seen.borrow_mut().created.extend(remaining);
        changes.expired += removed.expired.len();
        changes.evicted += removed.evicted.len();
        // Expired sessions' index links expire with them; evicted ones go now.
        for (key, session) in &removed.evicted {
            self.unindex(key, session);
        }
    }

    fn unindex(&self, key: &SessionKey, session: &Session) {
        for entry in IndexEntry::for_session(&self.issuer, session) {
            self.update_index(&entry, |index| {
                index.remove(&entry, key);
                Some(())
            });
        }
    }

    fn update_bucket<T>(
        &self,
        key: &SessionKey,
        change: impl FnMut(&mut SessionBucket) -> Option<T>,
    ) -> Option<T> {
        update(
            &self.data,
            &self.layout.session_bucket(key),
            SessionBucket::decode,
            SessionBucket::encode,
            change,
        )
    }

    fn update_index<T>(
        &self,
        entry: &IndexEntry,
        change: impl FnMut(&mut IndexBucket) -> Option<T>,
    ) -> Option<T> {
        update(
            &self.data,
            &self.layout.index_bucket(entry),
            IndexBucket::decode,
            IndexBucket::encode,
            change,
        )
    }
}

/// Records `value`, usable until `until`, in a single-use ledger. `true` on first use.
pub fn record_once(data: &impl SharedData, key: &str, value: &str, until: u64, now: u64) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = data.get(key);
        let Some(cas) = cas else {
            if !ensure_exists(data, key) {
                return false;
            }
            continue;
        };
        match once::mark(bytes.as_deref(), value, until, now) {
            Mark::AlreadyUsed => return false,
            Mark::Record(updated) => match data.set(key, &updated, Some(cas)) {
                Ok(()) => return true,
                Err(WriteError::CasMismatch) => continue,
                Err(WriteError::Failed(reason)) => {
                    log::error!("single-use ledger write failed: {reason}");
                    return false;
                }
            },
        }
    }
    log::error!("single-use ledger stayed contended; refused");
    false
}

/// Shared data in memory with Envoy's semantics, for tests and benchmarks.
#[derive(Default)]
pub struct InMemory {
    entries: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
    version: std::cell::Cell<u32>,
    /// The clock [`SharedData::now_ms`] reads; tests move it.
    pub clock_ms: std::cell::Cell<u64>,
}

impl InMemory {
    /// Total bytes of keys and values, as Envoy holds them.
    pub fn bytes(&self) -> usize {
        self.entries
            .borrow()
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .sum()
    }

    pub fn keys(&self) -> usize {
        self.entries.borrow().len()
    }
}

impl SharedData for InMemory {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.entries.borrow().get(key) {
            Some((value, cas)) if !value.is_empty() => (Some(value.clone()), Some(*cas)),
            Some((_, cas)) => (None, Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        let mut entries = self.entries.borrow_mut();
        if let (Some((_, current)), Some(cas)) = (entries.get(key), cas) {
            if *current != cas {
                return Err(WriteError::CasMismatch);
            }
        }
        let version = self.version.get().wrapping_add(1);
        self.version.set(version);
        entries.insert(key.to_string(), (value.to_vec(), version));
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.clock_ms.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://idp.example";

    fn store(max_sessions: u32) -> SessionStore<InMemory> {
        SessionStore {
            data: InMemory::default(),
            layout: Layout::new(max_sessions),
            issuer: ISSUER.to_string(),
            idle_timeout: 100,
            absolute_timeout: 1_000_000,
            max_sessions,
            max_sessions_per_subject: 64,
            sweeper_id: 1,
            sweep_seen: Default::default(),
            records: Default::default(),
        }
    }

    fn session(sub: &str, sid: &str, created_at: u64) -> Session {
        Session {
            sub: sub.to_string(),
            sid: Some(sid.to_string()),
            created_at,
            expires_at: created_at + 1000,
            last_seen: created_at,
            access_token: format!("at-{sub}"),
            access_token_expires_at: Some(created_at + 300),
            access_token_lifetime: None,
            refresh_token: Some("rt".to_string()),
            id_token: None,
            claims: Default::default(),
            refreshing_until: None,
        }
    }

    fn key(n: u32) -> SessionKey {
        SessionKey::from_hash(crate::crypto::sha256_b64url(&n.to_le_bytes()))
    }

    fn put(store: &SessionStore<InMemory>, n: u32, s: Session) -> Changes {
        store.apply(vec![StoreWrite::Put {
            key: key(n),
            session: Box::new(s),
        }])
    }

    fn load(store: &SessionStore<InMemory>, n: u32) -> Option<Session> {
        store.load(&key(n))
    }

    /// Whether the session under `n` is remembered decoded at its bucket's current version.
    fn remembered(store: &SessionStore<InMemory>, n: u32) -> bool {
        let (bytes, cas) = store.data.get(&store.layout.session_bucket(&key(n)));
        match (bytes, cas) {
            (Some(bytes), Some(cas)) => {
                let version = Version {
                    cas,
                    len: bytes.len(),
                };
                store.records.get(&key(n), version).is_some()
            }
            _ => false,
        }
    }

    #[test]
    fn a_session_is_decoded_once_per_change_and_never_served_stale() {
        let store = store(4); // one bucket: every write below changes it
        put(&store, 1, session("alice", "s1", 10));
        put(&store, 2, session("bob", "s2", 10));
        assert!(!remembered(&store, 1));
        assert_eq!(load(&store, 1).unwrap().access_token, "at-alice");
        assert!(remembered(&store, 1), "decoded once, then remembered");
        assert_eq!(load(&store, 1).unwrap().access_token, "at-alice");

        // Refreshed: the new tokens, never the remembered ones.
        let mut refreshed = session("alice", "s1", 10);
        refreshed.access_token = "at-2".to_string();
        store.apply(vec![StoreWrite::Update {
            key: key(1),
            session: Box::new(refreshed),
        }]);
        assert!(!remembered(&store, 1));
        assert_eq!(load(&store, 1).unwrap().access_token, "at-2");

        // Touched: the new activity time.
        store.apply(vec![StoreWrite::Touch {
            key: key(1),
            at: 50,
        }]);
        assert_eq!(load(&store, 1).unwrap().last_seen, 50);

        // Another session of the bucket changes: both still read right.
        assert_eq!(load(&store, 2).unwrap().sub, "bob");
        store.apply(vec![StoreWrite::Delete { key: key(2) }]);
        assert!(load(&store, 2).is_none());
        assert_eq!(load(&store, 1).unwrap().access_token, "at-2");

        // Back-channel logout: gone.
        assert!(remembered(&store, 1));
        assert_eq!(store.end_sessions(&[IndexEntry::sid(ISSUER, "s1")]), 1);
        assert!(load(&store, 1).is_none());
        assert!(store.records.is_empty());
    }

    #[test]
    fn an_emptied_bucket_reads_as_absent_whatever_was_remembered() {
        let store = store(4);
        put(&store, 1, session("alice", "s1", 10));
        assert!(load(&store, 1).is_some());
        let bucket = store.layout.session_bucket(&key(1));
        store.data.set(&bucket, b"", None).unwrap();
        assert!(load(&store, 1).is_none());
        assert!(store.records.is_empty());
    }

    #[test]
    fn the_decoded_sessions_stay_within_their_bound() {
        let mut store = store(100_000);
        store.records = RecordCache::with_capacity(8);
        for n in 0..200 {
            put(&store, n, session(&format!("u{n}"), &format!("s{n}"), 10));
            assert!(load(&store, n).is_some());
            assert!(store.records.len() <= 8);
        }
        assert_eq!(
            load(&store, 7).unwrap().sub,
            "u7",
            "an evicted session is decoded again"
        );
    }

    #[test]
    fn sessions_round_trip_and_delete() {
        let store = store(100);
        assert_eq!(put(&store, 1, session("alice", "s1", 10)).created, 1);
        assert_eq!(
            put(&store, 1, session("alice", "s1", 10)).created,
            0,
            "a replacement is not new"
        );
        assert_eq!(load(&store, 1).unwrap().sub, "alice");
        assert!(load(&store, 2).is_none());
        store.apply(vec![StoreWrite::Delete { key: key(1) }]);
        assert!(load(&store, 1).is_none());
        assert_eq!(
            store.end_sessions(&[IndexEntry::sub(ISSUER, "alice")]),
            0,
            "the index forgot it"
        );
    }

    #[test]
    fn an_update_after_a_refresh_never_brings_a_deleted_session_back() {
        let store = store(100);
        let update = |access_token: &str| {
            let mut refreshed = session("alice", "s1", 10);
            refreshed.access_token = access_token.to_string();
            store.apply(vec![StoreWrite::Update {
                key: key(1),
                session: Box::new(refreshed),
            }])
        };
        put(&store, 1, session("alice", "s1", 10));
        assert_eq!(update("at-2").created, 0);
        assert_eq!(load(&store, 1).unwrap().access_token, "at-2");

        store.apply(vec![StoreWrite::Delete { key: key(1) }]);
        update("at-3");
        assert!(load(&store, 1).is_none(), "logged out meanwhile: stays out");
        assert_eq!(
            store.end_sessions(&[IndexEntry::sub(ISSUER, "alice")]),
            0,
            "and is not indexed again"
        );
    }

    #[test]
    fn only_one_worker_claims_a_refresh_and_a_touch_never_undoes_it() {
        let store = store(100);
        put(&store, 1, session("alice", "s1", 10));
        assert!(store.claim_refresh(&key(1), 20, 30, "at-alice"));
        assert!(
            !store.claim_refresh(&key(1), 21, 31, "at-alice"),
            "claimed until 30"
        );
        assert!(
            store.claim_refresh(&key(1), 30, 40, "at-alice"),
            "an abandoned claim lapses"
        );
        assert!(
            !store.claim_refresh(&key(2), 20, 30, "at-alice"),
            "no session, nothing to claim"
        );
        store.apply(vec![StoreWrite::ReleaseRefresh { key: key(1) }]);
        assert!(
            store.claim_refresh(&key(1), 31, 41, "at-alice"),
            "a released claim is free"
        );
        assert!(
            !store.claim_refresh(&key(1), 50, 60, "at-older"),
            "refreshed since it was read"
        );

        let mut refreshed = load(&store, 1).unwrap();
        refreshed.access_token = "at-new".to_string();
        refreshed.refreshing_until = None;
        put(&store, 1, refreshed);
        // A worker that read the session before the refresh records activity.
        store.apply(vec![StoreWrite::Touch {
            key: key(1),
            at: 35,
        }]);
        let stored = load(&store, 1).unwrap();
        assert_eq!(stored.access_token, "at-new");
        assert_eq!(stored.last_seen, 35);
    }

    #[test]
    fn a_sweep_pass_counts_the_live_sessions_and_their_index_links() {
        let store = store(64);
        for n in 0..30 {
            put(&store, n, session(&format!("u{n}"), &format!("s{n}"), 10));
        }
        let mut without_sid = session("nosid", "-", 10);
        without_sid.sid = None;
        put(&store, 30, without_sid);
        for n in 0..5 {
            store.apply(vec![StoreWrite::Delete { key: key(n) }]);
        }
        assert_eq!(store.end_sessions(&[IndexEntry::sid(ISSUER, "s5")]), 1);
        assert_eq!(store.end_sessions(&[IndexEntry::sub(ISSUER, "u6")]), 1);

        let changes = store.sweep_all(20);
        assert!(changes.pass_ended);
        assert_eq!(changes.live, 24, "{changes:?}");
        assert_eq!(
            changes.index_links,
            2 * 23 + 1,
            "a sub and a sid link per session, a sub link alone without a sid: {changes:?}"
        );

        for n in 7..31 {
            store.apply(vec![StoreWrite::Delete { key: key(n) }]);
        }
        let changes = store.sweep_all(21);
        assert!(changes.pass_ended);
        assert_eq!((changes.live, changes.index_links), (0, 0), "{changes:?}");
    }

    #[test]
    fn back_channel_logout_ends_sessions_by_sid_or_sub() {
        let store = store(100);
        put(&store, 1, session("alice", "s1", 10));
        put(&store, 2, session("alice", "s2", 10));
        put(&store, 3, session("bob", "s3", 10));
        assert_eq!(store.end_sessions(&[IndexEntry::sid(ISSUER, "s1")]), 1);
        assert!(load(&store, 1).is_none() && load(&store, 2).is_some());
        assert_eq!(store.end_sessions(&[IndexEntry::sub(ISSUER, "alice")]), 1);
        assert!(load(&store, 2).is_none());
        assert!(load(&store, 3).is_some(), "bob is untouched");
        assert_eq!(
            store.end_sessions(&[IndexEntry::sid("https://other", "s3")]),
            0
        );
    }

    #[test]
    fn past_the_per_subject_cap_the_oldest_session_ends_and_every_other_stays_revocable() {
        let mut store = store(1000);
        store.max_sessions_per_subject = 3;
        let mut evicted = 0;
        for n in 0..5 {
            evicted += put(&store, n, session("alice", "same-sid", 10 + u64::from(n))).evicted;
        }
        assert_eq!(evicted, 2);
        assert!(
            load(&store, 0).is_none() && load(&store, 1).is_none(),
            "the oldest end"
        );
        assert!((2..5).all(|n| load(&store, n).is_some()));
        put(&store, 9, session("bob", "bob-sid", 10));
        assert_eq!(store.end_sessions(&[IndexEntry::sub(ISSUER, "alice")]), 3);
        assert!(
            (0..5).all(|n| load(&store, n).is_none()),
            "none left unrevocable"
        );
        assert!(load(&store, 9).is_some());
    }

    #[test]
    fn the_sweep_removes_expired_sessions_and_enforces_the_ceiling() {
        let mut store = store(1000);
        store.idle_timeout = 1_000_000;
        store.absolute_timeout = 2048;
        let mut bucket_evictions = 0;
        for n in 0..1500 {
            let mut s = session(&format!("u{n}"), &format!("s{n}"), 100 + u64::from(n));
            s.expires_at = if n < 200 { 1000 } else { 3000 };
            bucket_evictions += put(&store, n, s).evicted;
        }
        let before = store.data.keys();
        let present: Vec<u32> = (0..1500).filter(|n| load(&store, *n).is_some()).collect();
        let changes = store.sweep_all(2000);
        let present_before = 1500 - bucket_evictions;
        assert_eq!(present.len(), present_before);
        assert!(
            changes.expired <= 200 && changes.expired > 150,
            "{changes:?}"
        );
        assert_eq!(changes.live, 1000, "{changes:?}");
        assert_eq!(
            changes.expired + changes.evicted + changes.live,
            present_before,
            "{changes:?}"
        );
        let survivors: Vec<u32> = present
            .iter()
            .copied()
            .filter(|n| load(&store, *n).is_some())
            .collect();
        assert_eq!(survivors.len(), changes.live);
        let mut evicted_by_sweep = present
            .iter()
            .filter(|n| **n >= 200 && !survivors.contains(n));
        let oldest_survivor = survivors.iter().min().unwrap();
        assert!(evicted_by_sweep.clone().count() == changes.evicted);
        assert!(
            evicted_by_sweep.all(|n| n < oldest_survivor),
            "the ceiling evicts the oldest"
        );
        assert!(
            store.data.keys() <= before + 1,
            "no new keys but the sweep state"
        );
        assert_eq!(store.sweep_all(2001).evicted, 0);
    }

    #[test]
    fn a_pass_is_spread_over_the_interval_in_slices() {
        let store = store(64);
        for n in 0..40 {
            let mut s = session("u", &format!("s{n}"), 10);
            s.expires_at = 50;
            put(&store, n, s);
        }
        assert!(
            store.sweep_tick(100, 4).is_none(),
            "the first tick creates the state"
        );
        let mut expired = 0;
        let mut ticks = 0;
        while let Some(changes) = store.sweep_tick(100, 4) {
            expired += changes.expired;
            ticks += 1;
            assert!(ticks <= 4);
        }
        assert_eq!(ticks, 4, "16 buckets in slices of 4");
        assert_eq!(expired, 40);
        assert!((0..40).all(|n| load(&store, n).is_none()));
        assert!(
            store.sweep_tick(103, 4).is_none(),
            "the next pass waits for the interval"
        );
        assert!(store.sweep_tick(104, 4).is_some());
    }

    #[test]
    fn the_key_count_is_bounded_whatever_the_churn() {
        let store = store(64);
        for n in 0..5000 {
            put(&store, n, session("u", &format!("s{n}"), u64::from(n)));
            if n % 2 == 0 {
                store.apply(vec![StoreWrite::Delete { key: key(n) }]);
            }
        }
        let bucket_keys = store.layout.bucket_count() as usize;
        assert!(
            store.data.keys() <= 2 * bucket_keys + 1,
            "{} keys",
            store.data.keys()
        );
    }

    #[test]
    fn a_ledger_entry_is_accepted_once() {
        let data = InMemory::default();
        assert!(record_once(&data, "once/x/1", "state", 700, 100));
        assert!(!record_once(&data, "once/x/1", "state", 700, 100));
        assert!(record_once(&data, "once/x/1", "other", 700, 100));
    }

    /// Shared data where another worker's whole operation runs right after this
    /// worker first reads `key` as absent, as two workers' first writes interleave.
    type OtherWorker<'a> = Box<dyn FnOnce(&InMemory) + 'a>;

    struct Interleaved<'a> {
        data: &'a InMemory,
        key: &'static str,
        other_worker: std::cell::RefCell<Option<OtherWorker<'a>>>,
    }

    impl SharedData for Interleaved<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            let read = self.data.get(key);
            if key == self.key && read.1.is_none() {
                if let Some(other) = self.other_worker.borrow_mut().take() {
                    other(self.data);
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

    fn interleaved<'a>(
        data: &'a InMemory,
        key: &'static str,
        other: impl FnOnce(&InMemory) + 'a,
    ) -> Interleaved<'a> {
        Interleaved {
            data,
            key,
            other_worker: std::cell::RefCell::new(Some(Box::new(other))),
        }
    }

    #[test]
    fn two_first_writes_to_an_absent_key_both_land() {
        let data = InMemory::default();
        let racing = interleaved(&data, "k", |data| {
            update(
                &data,
                "k",
                |b| b.map(<[u8]>::to_vec).unwrap_or_default(),
                Clone::clone,
                |v: &mut Vec<u8>| {
                    v.push(b'B');
                    Some(())
                },
            );
        });
        update(
            &racing,
            "k",
            |b| b.map(<[u8]>::to_vec).unwrap_or_default(),
            Clone::clone,
            |v: &mut Vec<u8>| {
                v.push(b'A');
                Some(())
            },
        );
        let mut stored = data.get("k").0.unwrap_or_default();
        stored.sort();
        assert_eq!(stored, b"AB", "one worker's first write was lost");
    }

    #[test]
    fn first_sessions_filed_under_one_subject_after_a_start_keep_their_index_links() {
        let layout = Layout::new(100);
        let entry = IndexEntry::sub(ISSUER, "alice");
        let index_key: &'static str = layout.index_bucket(&entry).leak();
        let data = InMemory::default();
        let racing = SessionStore {
            data: interleaved(&data, index_key, |data| {
                let worker = SessionStore {
                    data,
                    layout,
                    issuer: ISSUER.to_string(),
                    idle_timeout: 100,
                    absolute_timeout: 1_000_000,
                    max_sessions: 100,
                    max_sessions_per_subject: 64,
                    sweeper_id: 2,
                    sweep_seen: Default::default(),
                    records: Default::default(),
                };
                worker.apply(vec![StoreWrite::Put {
                    key: key(2),
                    session: Box::new(session("alice", "s2", 10)),
                }]);
            }),
            layout,
            issuer: ISSUER.to_string(),
            idle_timeout: 100,
            absolute_timeout: 1_000_000,
            max_sessions: 100,
            max_sessions_per_subject: 64,
            sweeper_id: 1,
            sweep_seen: Default::default(),
            records: Default::default(),
        };
        racing.apply(vec![StoreWrite::Put {
            key: key(1),
            session: Box::new(session("alice", "s1", 10)),
        }]);
        assert_eq!(
            racing.end_sessions(&[entry]),
            2,
            "a session lost its index link and cannot be ended"
        );
    }

    #[test]
    fn a_state_used_by_two_workers_at_once_after_a_start_is_accepted_once() {
        let data = InMemory::default();
        let other_accepted = std::cell::Cell::new(false);
        let racing = interleaved(&data, "once/login/1", |data| {
            other_accepted.set(record_once(&data, "once/login/1", "state", 700, 100));
        });
        let accepted = record_once(&racing, "once/login/1", "state", 700, 100);
        assert!(other_accepted.get());
        assert!(!accepted, "the same state was accepted twice");
    }

    #[test]
    fn a_flood_of_first_uses_keeps_the_ledger_bounded_and_genuine_logins_record() {
        let data = InMemory::default();
        let now = 1_000;
        for n in 0..40_000u32 {
            let forged = format!("forged-{n}");
            let key = once::ledger_key("login", &forged);
            assert!(record_once(&data, &key, &forged, now + 600, now));
            if n % 1000 == 0 {
                let genuine = format!("genuine-{n}");
                let key = once::ledger_key("login", &genuine);
                assert!(record_once(&data, &key, &genuine, now + 600, now));
                assert!(
                    !record_once(&data, &key, &genuine, now + 600, now),
                    "a replay right after is refused"
                );
            }
        }
        assert!(
            data.keys() <= once::SHARDS as usize + 1,
            "{} keys",
            data.keys()
        );
        let bound = once::SHARDS as usize * (once::PER_SHARD * 40 + 20);
        assert!(data.bytes() <= bound, "{} bytes", data.bytes());
    }

    #[test]
    fn in_memory_compare_and_swap_behaves_like_envoy() {
        let data = InMemory::default();
        assert!(
            data.set("k", b"1", Some(99)).is_ok(),
            "an absent key ignores the version"
        );
        let (_, cas) = data.get("k");
        assert!(data.set("k", b"2", cas).is_ok());
        assert_eq!(data.set("k", b"3", cas), Err(WriteError::CasMismatch));
        assert_eq!(data.get("k").0.as_deref(), Some(&b"2"[..]));
    }
}
