//! The host's shared data, laid out as the core decides: session buckets and
//! their index, the single-use ledgers, the per-process sealing key.
//!
//! Every read-modify-write goes through compare-and-swap and retries on a
//! conflict, because all workers write the same keys.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use super::metrics::Metrics;
use crate::crypto::seal::SealingKeys;
use crate::flow::StoreWrite;
use crate::session::buckets::{eviction_cutoff, IndexBucket, IndexEntry, Layout, SessionBucket};
use crate::session::once::{self, Mark};
use crate::session::{Session, SessionKey};

/// Conflicts on one key are rare and short; give up rather than spin.
const CAS_ATTEMPTS: usize = 16;

/// A value, treating the empty value that removal leaves behind as absent.
pub fn get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), cas)) if !value.is_empty() => (Some(value), cas),
        Ok((_, cas)) => (None, cas),
        Err(status) => {
            log::warn!("shared data read of {key} failed: {status:?}");
            (None, None)
        }
    }
}

pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

/// Reads `key`, lets `change` edit the decoded value, writes it back with
/// compare-and-swap, and retries on conflict. `change` returns `None` to write
/// nothing; its result is returned.
fn update<T, V>(
    key: &str,
    decode: impl Fn(Option<&[u8]>) -> V,
    encode: impl Fn(&V) -> Vec<u8>,
    mut change: impl FnMut(&mut V) -> Option<T>,
) -> Option<T> {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = get(key);
        let mut value = decode(bytes.as_deref());
        let result = change(&mut value)?;
        match set(key, &encode(&value), cas) {
            Ok(()) => return Some(result),
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log::error!("shared data write of {key} failed: {status:?}");
                return None;
            }
        }
    }
    log::error!("shared data key {key} stayed contended; update dropped");
    None
}

/// The shared-data session store.
pub struct SessionStore {
    pub layout: Layout,
    pub issuer: String,
    pub idle_timeout: u64,
    pub max_sessions: u32,
}

impl SessionStore {
    pub fn load(&self, key: &SessionKey) -> Option<Vec<u8>> {
        let (bytes, _) = get(&self.layout.session_bucket(key));
        SessionBucket::decode(bytes.as_deref())
            .get(key)
            .map(Session::encode)
    }

    pub fn apply(&self, writes: Vec<StoreWrite>, metrics: &Metrics) {
        for write in writes {
            match write {
                StoreWrite::Put { key, session } => self.put(key, *session, metrics),
                StoreWrite::Touch { key, at } => {
                    self.update_bucket(&key, |bucket| {
                        let session = bucket.get_mut(&key)?;
                        session.last_seen = session.last_seen.max(at);
                        Some(())
                    });
                }
                StoreWrite::Delete { key } => {
                    if let Some(session) = self.update_bucket(&key, |bucket| bucket.remove(&key)) {
                        self.unindex(&key, &session);
                    }
                }
            }
        }
    }

    fn put(&self, key: SessionKey, session: Session, metrics: &Metrics) {
        let layout = self.layout;
        let new = self.update_bucket(&key, |bucket| {
            let new = bucket.get(&key).is_none();
            let evicted = bucket.put(&key, session.clone(), &layout);
            Some((new, evicted))
        });
        let Some((new, evicted)) = new else { return };
        if new {
            metrics.sessions_created();
            for entry in IndexEntry::for_session(&self.issuer, &session) {
                self.update_index(&entry, |index| {
                    index.add(&entry, &key);
                    Some(())
                });
            }
        }
        if !evicted.is_empty() {
            log::info!(
                "session ceiling: evicted {} oldest session(s) from a full bucket",
                evicted.len()
            );
            metrics.sessions_evicted(evicted.len());
        }
        for (evicted_key, evicted_session) in evicted {
            self.unindex(&evicted_key, &evicted_session);
        }
    }

    /// Marks the session as being refreshed, unless another worker already is.
    pub fn claim_refresh(&self, key: &SessionKey, now: u64, until: u64) -> bool {
        self.update_bucket(key, |bucket| {
            let session = bucket.get_mut(key)?;
            if session.refresh_in_progress(now) {
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

    /// One pass over every bucket: expired sessions go; if more than the
    /// ceiling remain, a second pass evicts the oldest. Returns the live count.
    pub fn sweep(&self, now: u64, metrics: &Metrics) -> usize {
        let (live, created) = self.sweep_pass(now, 0, metrics);
        let Some(cutoff) = eviction_cutoff(created, self.max_sessions as usize) else {
            return live;
        };
        let (live, _) = self.sweep_pass(now, cutoff, metrics);
        live
    }

    fn sweep_pass(&self, now: u64, evict_before: u64, metrics: &Metrics) -> (usize, Vec<u64>) {
        let mut created = Vec::new();
        let (mut expired, mut evicted) = (0, 0);
        for index in 0..self.layout.bucket_count() {
            let key = self.layout.session_bucket_at(index);
            let (bytes, _) = get(&key);
            let Some(bytes) = bytes else { continue };
            let mut preview = SessionBucket::decode(Some(&bytes));
            let nothing_to_remove = {
                let removed = preview.sweep(now, self.idle_timeout, evict_before);
                removed.expired.is_empty() && removed.evicted.is_empty()
            };
            if nothing_to_remove {
                created.extend(preview.created_at());
                continue;
            }
            let swept = update(
                &key,
                SessionBucket::decode,
                SessionBucket::encode,
                |bucket| {
                    let removed = bucket.sweep(now, self.idle_timeout, evict_before);
                    Some((removed, bucket.created_at().collect::<Vec<_>>()))
                },
            );
            let Some((removed, remaining)) = swept else {
                continue;
            };
            created.extend(remaining);
            expired += removed.expired.len();
            evicted += removed.evicted.len();
            for (key, session) in removed.expired.iter().chain(removed.evicted.iter()) {
                self.unindex(key, session);
            }
        }
        if expired > 0 || evicted > 0 {
            log::info!("session sweep: {expired} expired, {evicted} evicted over the ceiling");
        }
        metrics.sessions_expired(expired);
        metrics.sessions_evicted(evicted);
        (created.len(), created)
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
            &self.layout.index_bucket(entry),
            IndexBucket::decode,
            IndexBucket::encode,
            change,
        )
    }
}

/// Records `value` in a single-use ledger. `true` on first use.
pub fn record_once(key: &str, issued_at: u64, value: &str) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = get(key);
        match once::mark(bytes.as_deref(), issued_at, value) {
            Mark::AlreadyUsed => return false,
            Mark::Record(updated) => match set(key, &updated, cas) {
                Ok(()) => return true,
                Err(Status::CasMismatch) => continue,
                Err(status) => {
                    log::error!("single-use ledger write failed: {status:?}");
                    return false;
                }
            },
        }
    }
    log::error!("single-use ledger stayed contended; refused");
    false
}

const PROCESS_KEY: &str = "keys/login";

/// The configured keys, or a random key made once per Envoy process and shared
/// by its workers through shared data.
pub fn process_sealing_key() -> Option<SealingKeys> {
    if let (Some(raw), _) = get(PROCESS_KEY) {
        return key_from(&raw);
    }
    let mut key = [0u8; 32];
    if let Err(err) = getrandom_fill(&mut key) {
        log::error!("no randomness for the sealing key: {err}");
        return None;
    }
    // Two workers may race here; both re-read, so they agree on the last write.
    if let Err(status) = set(PROCESS_KEY, &key, None) {
        log::error!("sealing key could not be shared: {status:?}");
    }
    get(PROCESS_KEY).0.and_then(|raw| key_from(&raw))
}

fn key_from(raw: &[u8]) -> Option<SealingKeys> {
    let key: [u8; 32] = raw.try_into().ok()?;
    SealingKeys::from_raw(vec![key]).ok()
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), rand_core::Error> {
    use rand_core::RngCore;
    rand_core::OsRng.try_fill_bytes(buf)
}
