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
    write: crate::session::writes::StoreWrite,
    loaded: Option<&(SessionKey, Record)>,
    lease_touch_interval: u64,
) -> Option<Planned> {
    use crate::session::writes::StoreWrite;
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
        // Refreshed tokens: only for a session that still exists; the lease is
        // renewed when this request read it (0: not known, not renewed).
        StoreWrite::Update { key, session } => (
            Op::Update {
                lease: record_of(&key).map_or(0, |r| r.lease),
                key,
                session,
                written: false,
            },
            true,
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::writes::StoreWrite;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde_json::{json, Value};

    fn keys() -> Keys {
        Keys {
            prefix: "p/".to_string(),
            issuer: "https://idp.example".to_string(),
        }
    }

    fn key(s: &str) -> SessionKey {
        SessionKey::from_hash(s.to_string())
    }

    fn session(access_token: &str) -> Session {
        Session {
            sub: "alice".into(),
            sid: Some("sid-1".into()),
            created_at: 1000,
            expires_at: 1000 + 8 * 3600,
            last_seen: 1000,
            access_token: access_token.into(),
            access_token_expires_at: Some(1300),
            access_token_lifetime: None,
            refresh_token: Some("rt".into()),
            id_token: None,
            claims: Default::default(),
            refreshing_until: None,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn body(request: &EtcdRequest) -> Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    fn send(progress: Result<Progress, String>) -> EtcdRequest {
        match progress {
            Ok(Progress::Send(request)) => request,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn done(progress: Result<Progress, String>) -> Outcome {
        match progress {
            Ok(Progress::Done(outcome)) => outcome,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }

    fn record(access_token: &str) -> (SessionKey, Record) {
        (
            key("k"),
            Record {
                session: session(access_token),
                lease: 77,
                mod_revision: 5,
            },
        )
    }

    #[test]
    fn a_session_and_its_index_share_one_lease_of_the_idle_timeout() {
        let mut op = Op::Create {
            key: key("k"),
            session: Box::new(session("at")),
            lease: None,
        };
        let grant = op.start(&keys(), 1000, 3600);
        assert_eq!(grant.path, "/v3/lease/grant");
        assert_eq!(body(&grant)["TTL"], "3600");
        let txn = send(op.advance(&keys(), br#"{"ID":"42","TTL":"3600"}"#));
        let ops = body(&txn)["success"].as_array().unwrap().clone();
        assert_eq!(ops.len(), 3, "session, sub and sid links");
        assert!(ops.iter().all(|o| o["request_put"]["lease"] == "42"));
        assert_eq!(ops[0]["request_put"]["key"], b64(b"p/s/k"));
        assert!(matches!(
            done(op.advance(&keys(), br#"{"header":{},"succeeded":true}"#)),
            Outcome::Written
        ));
    }

    #[test]
    fn the_lease_never_outlives_the_absolute_end() {
        let mut s = session("at");
        s.expires_at = 1100;
        assert_eq!(session_ttl(&s, 1000, 3600), 100);
        assert_eq!(session_ttl(&s, 2000, 3600), 1);
    }

    #[test]
    fn loads_keep_lease_and_revision_and_refuse_garbage() {
        let value = b64(&session("at").encode());
        let answer = json!({"header": {}, "kvs": [{"key": b64(b"p/s/k"), "value": value,
            "mod_revision": "9", "lease": "77"}]});
        let mut op = Op::Load { key: key("k") };
        assert_eq!(op.start(&keys(), 0, 0).path, "/v3/kv/range");
        let Outcome::Loaded(Some(record)) =
            done(op.advance(&keys(), answer.to_string().as_bytes()))
        else {
            panic!("a record")
        };
        assert_eq!((record.lease, record.mod_revision), (77, 9));
        assert!(matches!(
            done(op.advance(&keys(), br#"{"header":{}}"#)),
            Outcome::Loaded(None)
        ));
        for garbage in [&b"<html>"[..], b"{}", b"[]", br#"{"header":{},"kvs":"x"}"#] {
            assert!(op.advance(&keys(), garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_refresh_claim_needs_the_lock_absent_and_the_same_tokens() {
        let claim = || Op::Claim {
            key: key("k"),
            ttl: 3,
            access_token: "old".into(),
            lease: None,
        };
        let mut op = claim();
        assert_eq!(body(&op.start(&keys(), 0, 0))["TTL"], "3");
        let txn = send(op.advance(&keys(), br#"{"ID":"5","TTL":"3"}"#));
        let txn = body(&txn);
        assert_eq!(txn["compare"][0]["key"], b64(b"p/r/k"));
        assert_eq!(txn["compare"][0]["create_revision"], "0");
        assert_eq!(txn["success"][0]["request_put"]["lease"], "5");
        let answer = |succeeded: bool, token: &str| {
            json!({"header": {}, "succeeded": succeeded, "responses": [
                {"response_put": {"header": {}}},
                {"response_range": {"header": {}, "kvs": [{"key": b64(b"p/s/k"),
                    "value": b64(&session(token).encode())}]}}]})
            .to_string()
        };
        let verdict = |succeeded, token| {
            let mut op = claim();
            let _ = op.start(&keys(), 0, 0);
            let _ = send(op.advance(&keys(), br#"{"ID":"5","TTL":"3"}"#));
            match done(op.advance(&keys(), answer(succeeded, token).as_bytes())) {
                Outcome::Claimed(claimed) => claimed,
                other => panic!("{other:?}"),
            }
        };
        assert!(verdict(true, "old"));
        assert!(!verdict(false, "old"), "another replica holds the lock");
        assert!(!verdict(true, "new"), "another replica refreshed already");
    }

    #[test]
    fn writes_become_etcd_operations() {
        let loaded = record("at");
        let put = |s| StoreWrite::Put {
            key: key("k"),
            session: Box::new(s),
        };
        let planned = plan_write(put(session("new")), Some(&loaded), 60).unwrap();
        assert!(planned.critical);
        assert!(matches!(planned.op, Op::Update { lease: 77, .. }));
        let planned = plan_write(put(session("new")), None, 60).unwrap();
        assert!(matches!(planned.op, Op::Create { .. }), "a login");
        let update = |s| StoreWrite::Update {
            key: key("k"),
            session: Box::new(s),
        };
        let planned = plan_write(update(session("new")), Some(&loaded), 60).unwrap();
        assert!(planned.critical);
        assert!(matches!(planned.op, Op::Update { lease: 77, .. }));
        let planned = plan_write(update(session("new")), None, 60).unwrap();
        assert!(
            matches!(planned.op, Op::Update { lease: 0, .. }),
            "never a create"
        );

        let touch = |at| StoreWrite::Touch { key: key("k"), at };
        assert!(
            plan_write(touch(1030), Some(&loaded), 60).is_none(),
            "too soon"
        );
        let planned = plan_write(touch(1060), Some(&loaded), 60).unwrap();
        assert!(!planned.critical);
        assert!(matches!(planned.op, Op::Touch { .. }));

        let planned = plan_write(StoreWrite::Delete { key: key("k") }, Some(&loaded), 60).unwrap();
        assert!(planned.critical);
        let request = planned.op.start(&keys(), 0, 0);
        assert_eq!(
            body(&request)["success"].as_array().unwrap().len(),
            4,
            "the session, its lock and both index links"
        );
    }

    #[test]
    fn an_update_keeps_the_lease_frees_the_lock_and_renews() {
        let mut op = Op::Update {
            key: key("k"),
            session: Box::new(session("new")),
            lease: 77,
            written: false,
        };
        let txn = body(&op.start(&keys(), 0, 0));
        assert_eq!(
            txn["compare"][0]["target"], "VERSION",
            "only an existing session"
        );
        assert_eq!(txn["success"][0]["request_put"]["ignore_lease"], true);
        assert_eq!(
            txn["success"][1]["request_delete_range"]["key"],
            b64(b"p/r/k")
        );
        let keepalive = send(op.advance(&keys(), br#"{"header":{},"succeeded":true}"#));
        assert_eq!(keepalive.path, "/v3/lease/keepalive");
        assert!(matches!(
            done(op.advance(&keys(), br#"{"result":{"ID":"77","TTL":"3600"}}"#)),
            Outcome::Written
        ));
    }

    #[test]
    fn a_touch_renews_the_lease_then_records_activity_unless_changed() {
        let (k, r) = record("at");
        let mut op = Op::Touch {
            key: k,
            at: 1100,
            record: Box::new(r),
            renewed: false,
        };
        assert_eq!(op.start(&keys(), 0, 0).path, "/v3/lease/keepalive");
        let txn = body(&send(
            op.advance(&keys(), br#"{"result":{"ID":"77","TTL":"3600"}}"#),
        ));
        assert_eq!(txn["compare"][0]["mod_revision"], "5");
        let written = txn["success"][0]["request_put"]["value"].as_str().unwrap();
        let written = Session::decode(&STANDARD.decode(written).unwrap()).unwrap();
        assert_eq!(written.last_seen, 1100);
        // A lease already gone: nothing to record.
        let (k, r) = record("at");
        let mut gone = Op::Touch {
            key: k,
            at: 1100,
            record: Box::new(r),
            renewed: false,
        };
        assert!(matches!(
            done(gone.advance(&keys(), br#"{"result":{"ID":"77"}}"#)),
            Outcome::Written
        ));
    }

    #[test]
    fn a_backchannel_logout_lists_the_index_then_deletes_in_one_transaction() {
        let entry = IndexEntry::sid("https://idp.example", "sid-1");
        let prefix = keys().index_prefix(&entry);
        let mut op = Op::EndSessions {
            entries: vec![entry],
            deleting: None,
            ended: 0,
            rounds: 0,
        };
        let list = body(&op.start(&keys(), 0, 0));
        assert_eq!(list["success"][0]["request_range"]["keys_only"], true);
        let listed = json!({"header": {}, "succeeded": true, "responses": [{"response_range": {
            "header": {}, "kvs": [{"key": b64(format!("{prefix}a").as_bytes())},
                                  {"key": b64(format!("{prefix}b").as_bytes())}]}}]});
        let delete = body(&send(op.advance(&keys(), listed.to_string().as_bytes())));
        let ops = delete["success"].as_array().unwrap();
        assert_eq!(ops[0]["request_delete_range"]["key"], b64(b"p/s/a"));
        assert_eq!(ops[1]["request_delete_range"]["key"], b64(b"p/s/b"));
        assert_eq!(ops.len(), 4, "and both index links");
        let deleted = json!({"header": {}, "succeeded": true, "responses": [
            {"response_delete_range": {"header": {}, "deleted": "1"}},
            {"response_delete_range": {"header": {}}},
            {"response_delete_range": {"header": {}, "deleted": "1"}},
            {"response_delete_range": {"header": {}, "deleted": "1"}}]});
        let _again = send(op.advance(&keys(), deleted.to_string().as_bytes()));
        let empty = json!({"header": {}, "succeeded": true, "responses": [
            {"response_range": {"header": {}}}]});
        assert!(matches!(
            done(op.advance(&keys(), empty.to_string().as_bytes())),
            Outcome::Ended(1)
        ));
    }
}
