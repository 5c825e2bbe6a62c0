//! The etcd store's operations as sans-IO state machines: each says which
//! request to send next and judges the answer, until it has an outcome.
//!
//! Layout under the prefix `P`:
//! - `P s/<session key>`: the session (JSON), under a lease that ends with it;
//! - `P x/<index entry>/<session key>`: empty, same lease, so a back-channel
//!   logout by `sid` or `sub` finds the sessions with one range read;
//! - `P r/<session key>`: the refresh lock, under a short lease of its own.

use super::api::{self, Compare, EtcdRequest, TxnOp, TxnResult};
use crate::session::buckets::IndexEntry;
use crate::session::{Session, SessionKey};

/// Where things live in etcd.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
    pub issuer: String,
}

impl Keys {
    pub fn session(&self, key: &SessionKey) -> String {
        format!("{}s/{}", self.prefix, key.as_str())
    }

    pub fn lock(&self, key: &SessionKey) -> String {
        format!("{}r/{}", self.prefix, key.as_str())
    }

    pub fn index_prefix(&self, entry: &IndexEntry) -> String {
        format!("{}x/{}/", self.prefix, entry.as_str())
    }

    fn index_keys(&self, key: &SessionKey, session: &Session) -> Vec<String> {
        IndexEntry::for_session(&self.issuer, session)
            .iter()
            .map(|entry| format!("{}{}", self.index_prefix(entry), key.as_str()))
            .collect()
    }
}

/// A session as read from etcd, with what later writes need.
#[derive(Debug, Clone)]
pub struct Record {
    pub session: Session,
    pub lease: i64,
    pub mod_revision: i64,
}

#[derive(Debug)]
pub enum Outcome {
    Loaded(Option<Box<Record>>),
    Written,
    Claimed(bool),
    Ended(usize),
}

#[derive(Debug)]
pub enum Progress {
    Send(EtcdRequest),
    Done(Outcome),
}

/// Sessions deleted per transaction, well under etcd's default limit of 128
/// operations per transaction (`--max-txn-ops`).
const DELETE_BATCH: usize = 40;
/// Rounds of list-then-delete one back-channel logout may take.
const MAX_END_ROUNDS: usize = 40;

#[derive(Debug)]
pub enum Op {
    Load {
        key: SessionKey,
    },
    /// A new session: a lease for its lifetime, then the record and its index.
    Create {
        key: SessionKey,
        session: Box<Session>,
        lease: Option<i64>,
    },
    /// New tokens for a session that still exists (refresh); frees the lock.
    Update {
        key: SessionKey,
        session: Box<Session>,
        lease: i64,
        written: bool,
    },
    /// Renew the lease, then record `last_seen` unless the record changed.
    Touch {
        key: SessionKey,
        at: u64,
        record: Box<Record>,
        renewed: bool,
    },
    Release {
        key: SessionKey,
    },
    Delete {
        key: SessionKey,
        session: Option<Box<Session>>,
    },
    /// Take the refresh lock: a lease, then a create-if-absent transaction.
    Claim {
        key: SessionKey,
        ttl: u64,
        access_token: String,
        lease: Option<i64>,
    },
    EndSessions {
        entries: Vec<IndexEntry>,
        /// Sessions in the delete transaction in flight; `None` while listing.
        deleting: Option<usize>,
        ended: usize,
        rounds: usize,
    },
}

/// The session lease's TTL: the idle timeout, never past the absolute end.
pub fn session_ttl(session: &Session, now: u64, idle_timeout: u64) -> u64 {
    idle_timeout
        .min(session.expires_at.saturating_sub(now))
        .max(1)
}

impl Op {
    /// The first request. `now`/`idle_timeout` size new leases.
    pub fn start(&self, keys: &Keys, now: u64, idle_timeout: u64) -> EtcdRequest {
        match self {
            Op::Load { key } => api::range(&keys.session(key)),
            Op::Create { session, .. } => api::lease_grant(session_ttl(session, now, idle_timeout)),
            Op::Update { key, session, .. } => update_txn(keys, key, session),
            Op::Touch { record, .. } => api::lease_keepalive(record.lease),
            Op::Release { key } => api::txn(&[], &[TxnOp::Delete(&keys.lock(key))]),
            Op::Delete { key, session } => delete_txn(keys, key, session.as_deref()),
            Op::Claim { ttl, .. } => api::lease_grant(*ttl),
            Op::EndSessions { entries, .. } => list_txn(keys, entries),
        }
    }

    /// Judges the answer (HTTP 200) to the last request.
    pub fn advance(&mut self, keys: &Keys, body: &[u8]) -> Result<Progress, String> {
        let done = |o| Ok(Progress::Done(o));
        match self {
            Op::Load { .. } => {
                let range: api::CheckedRange = api::parse(body)?;
                let record =
                    range.range.kvs.into_iter().next().and_then(|kv| {
                        match Session::decode(&kv.value) {
                            Some(session) => Some(Record {
                                session,
                                lease: kv.lease,
                                mod_revision: kv.mod_revision,
                            }),
                            None => {
                                log::warn!("a session record in etcd does not decode; ignored");
                                None
                            }
                        }
                    });
                done(Outcome::Loaded(record.map(Box::new)))
            }
            Op::Create {
                key,
                session,
                lease,
            } => match lease {
                None => {
                    let grant: api::LeaseGrantResponse = api::parse(body)?;
                    *lease = Some(grant.id);
                    let value = session.encode();
                    let session_key = keys.session(key);
                    let index = keys.index_keys(key, session);
                    let mut ops = vec![TxnOp::Put {
                        key: &session_key,
                        value: &value,
                        lease: Some(grant.id),
                    }];
                    ops.extend(index.iter().map(|k| TxnOp::Put {
                        key: k,
                        value: b"",
                        lease: Some(grant.id),
                    }));
                    Ok(Progress::Send(api::txn(&[], &ops)))
                }
                Some(_) => {
                    let txn: api::TxnResponse = api::parse(body)?;
                    if !txn.succeeded {
                        return Err("etcd refused the new session".to_string());
                    }
                    done(Outcome::Written)
                }
            },
            Op::Update { lease, written, .. } => {
                if *written {
                    let _: api::KeepAliveResponse = api::parse(body)?;
                    return done(Outcome::Written);
                }
                let txn: api::TxnResponse = api::parse(body)?;
                *written = true;
                if !txn.succeeded || *lease == 0 {
                    // Ended meanwhile (a logout elsewhere): the new tokens go with it.
                    return done(Outcome::Written);
                }
                Ok(Progress::Send(api::lease_keepalive(*lease)))
            }
            Op::Touch {
                key,
                at,
                record,
                renewed,
            } => {
                if *renewed {
                    let _: api::TxnResponse = api::parse(body)?;
                    return done(Outcome::Written);
                }
                let alive: api::KeepAliveResponse = api::parse(body)?;
                *renewed = true;
                if alive.result.ttl <= 0 {
                    return done(Outcome::Written); // the session ended meanwhile
                }
                let mut session = record.session.clone();
                session.last_seen = session.last_seen.max(*at);
                let value = session.encode();
                let session_key = keys.session(key);
                Ok(Progress::Send(api::txn(
                    &[Compare::ModRevision(&session_key, record.mod_revision)],
                    &[TxnOp::Put {
                        key: &session_key,
                        value: &value,
                        lease: None,
                    }],
                )))
            }
            Op::Release { .. } | Op::Delete { .. } => {
                let _: api::TxnResponse = api::parse(body)?;
                done(Outcome::Written)
            }
            Op::Claim {
                key,
                access_token,
                lease,
                ..
            } => match lease {
                None => {
                    let grant: api::LeaseGrantResponse = api::parse(body)?;
                    *lease = Some(grant.id);
                    let lock = keys.lock(key);
                    let session_key = keys.session(key);
                    Ok(Progress::Send(api::txn(
                        &[Compare::Absent(&lock), Compare::Present(&session_key)],
                        &[
                            TxnOp::Put {
                                key: &lock,
                                value: b"",
                                lease: Some(grant.id),
                            },
                            TxnOp::Get(&session_key),
                        ],
                    )))
                }
                Some(_) => {
                    let txn: api::TxnResponse = api::parse(body)?;
                    // Claimed only if the tokens are still those this request
                    // saw: otherwise another replica refreshed already.
                    let current = txn.responses.iter().find_map(|r| match r {
                        TxnResult::Range(range) => range.kvs.first(),
                        _ => None,
                    });
                    let same = current
                        .and_then(|kv| Session::decode(&kv.value))
                        .is_some_and(|s| s.access_token == *access_token);
                    done(Outcome::Claimed(txn.succeeded && same))
                }
            },
            Op::EndSessions {
                entries,
                deleting,
                ended,
                rounds,
            } => {
                let txn: api::TxnResponse = api::parse(body)?;
                if let Some(sessions) = deleting.take() {
                    *ended += txn
                        .responses
                        .iter()
                        .take(sessions)
                        .filter_map(|r| match r {
                            TxnResult::Delete(d) => usize::try_from(d.deleted).ok(),
                            _ => None,
                        })
                        .sum::<usize>();
                    *rounds += 1;
                    if *rounds >= MAX_END_ROUNDS {
                        log::warn!("back-channel logout: stopped after {rounds} rounds");
                        return done(Outcome::Ended(*ended));
                    }
                    return Ok(Progress::Send(list_txn(keys, entries)));
                }
                let mut sessions: Vec<String> = Vec::new();
                for (entry, result) in entries.iter().zip(&txn.responses) {
                    let TxnResult::Range(range) = result else {
                        return Err("etcd answered the index listing oddly".to_string());
                    };
                    let prefix = keys.index_prefix(entry);
                    for kv in &range.kvs {
                        let Some(key) = kv.key.strip_prefix(prefix.as_bytes()) else {
                            continue;
                        };
                        let Ok(key) = std::str::from_utf8(key) else {
                            continue;
                        };
                        let session = keys.session(&SessionKey::from_hash(key.to_string()));
                        if !sessions.contains(&session) {
                            sessions.push(session);
                        }
                    }
                }
                if sessions.is_empty() {
                    return done(Outcome::Ended(*ended));
                }
                sessions.truncate(DELETE_BATCH);
                *deleting = Some(sessions.len());
                // Sessions first (their answers are counted), then the index
                // links just listed; a link of a session left for the next
                // round is listed again, as the session key is what counts.
                let mut ops: Vec<TxnOp<'_>> = sessions.iter().map(|k| TxnOp::Delete(k)).collect();
                let links: Vec<String> = sessions
                    .iter()
                    .filter_map(|s| s.strip_prefix(&format!("{}s/", keys.prefix)))
                    .flat_map(|k| {
                        entries
                            .iter()
                            .map(move |e| format!("{}{}", keys.index_prefix(e), k))
                    })
                    .collect();
                ops.extend(links.iter().map(|k| TxnOp::Delete(k)));
                Ok(Progress::Send(api::txn(&[], &ops)))
            }
        }
    }
}

fn update_txn(keys: &Keys, key: &SessionKey, session: &Session) -> EtcdRequest {
    let session_key = keys.session(key);
    let value = session.encode();
    api::txn(
        &[Compare::Present(&session_key)],
        &[
            TxnOp::Put {
                key: &session_key,
                value: &value,
                lease: None,
            },
            TxnOp::Delete(&keys.lock(key)),
        ],
    )
}

fn delete_txn(keys: &Keys, key: &SessionKey, session: Option<&Session>) -> EtcdRequest {
    let session_key = keys.session(key);
    let lock = keys.lock(key);
    let index = session.map(|s| keys.index_keys(key, s)).unwrap_or_default();
    let mut ops = vec![TxnOp::Delete(&session_key), TxnOp::Delete(&lock)];
    ops.extend(index.iter().map(|k| TxnOp::Delete(k)));
    api::txn(&[], &ops)
}

fn list_txn(keys: &Keys, entries: &[IndexEntry]) -> EtcdRequest {
    let prefixes: Vec<String> = entries.iter().map(|e| keys.index_prefix(e)).collect();
    let ops: Vec<TxnOp<'_>> = prefixes.iter().map(|p| TxnOp::ListPrefix(p)).collect();
    api::txn(&[], &ops)
}

/// A write the flow asked for, as an etcd operation. `loaded` is the record
/// this request read (if it read the same key). `critical` writes must succeed
/// before the response goes out: otherwise the client would hold a cookie for
/// no session, or believe a logout happened that did not.
pub struct Planned {
    pub op: Op,
    pub critical: bool,
}

pub fn plan_write(
    write: crate::flow::StoreWrite,
    loaded: Option<&(SessionKey, Record)>,
    lease_touch_interval: u64,
) -> Option<Planned> {
    use crate::flow::StoreWrite;
    let record_of = |key: &SessionKey| loaded.filter(|(k, _)| k == key).map(|(_, r)| r);
    let (op, critical) = match write {
        StoreWrite::Put { key, session } => match record_of(&key) {
            Some(record) => (
                Op::Update {
                    lease: record.lease,
                    key,
                    session,
                    written: false,
                },
                true,
            ),
            None => (
                Op::Create {
                    key,
                    session,
                    lease: None,
                },
                true,
            ),
        },
        StoreWrite::Touch { key, at } => {
            let record = record_of(&key)?;
            if at.saturating_sub(record.session.last_seen) < lease_touch_interval
                || record.lease == 0
            {
                return None;
            }
            (
                Op::Touch {
                    record: Box::new(record.clone()),
                    key,
                    at,
                    renewed: false,
                },
                false,
            )
        }
        StoreWrite::ReleaseRefresh { key } => (Op::Release { key }, false),
        StoreWrite::Delete { key } => {
            let session = record_of(&key).map(|r| Box::new(r.session.clone()));
            (Op::Delete { key, session }, true)
        }
    };
    Some(Planned { op, critical })
}

impl Op {
    /// The session key the operation writes, to drop it from a cache.
    pub fn writes_key(&self) -> Option<&SessionKey> {
        match self {
            Op::Create { key, .. }
            | Op::Update { key, .. }
            | Op::Touch { key, .. }
            | Op::Delete { key, .. } => Some(key),
            Op::Load { .. } | Op::Release { .. } | Op::Claim { .. } | Op::EndSessions { .. } => {
                None
            }
        }
    }
}
