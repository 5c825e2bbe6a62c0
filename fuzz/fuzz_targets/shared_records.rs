//! The records the filter keeps in shared data, read back as anything another
//! (older, buggy or hostile) writer may have left there: session and index
//! buckets, the single-use ledger, the deny-list, refresh lease slots, the
//! provider record and its fetch status, and the session store's operations
//! over a store full of such bytes.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use oidc_filter::provider::schedule::FetchStatus;
use oidc_filter::provider::SharedProvider;
use oidc_filter::session::buckets::{IndexBucket, IndexEntry, Layout, SessionBucket};
use oidc_filter::session::deny_list::{self, DenyList};
use oidc_filter::session::shared_store::{self, SessionStore, SharedData, WriteError};
use oidc_filter::session::writes::StoreWrite;
use oidc_filter::session::{once, refresh_lease, Session, SessionId};
use oidc_filter_fuzz::{rng, ISSUER, NOW};

/// Shared data in which every key not written yet holds the fuzzed bytes.
struct Poisoned<'a> {
    garbage: &'a [u8],
    written: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    version: RefCell<u32>,
}

impl SharedData for Poisoned<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.written.borrow().get(key) {
            Some((value, cas)) => ((!value.is_empty()).then(|| value.clone()), Some(*cas)),
            None => (
                (!self.garbage.is_empty()).then(|| self.garbage.to_vec()),
                Some(0),
            ),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), WriteError> {
        let current = self.written.borrow().get(key).map_or(0, |(_, v)| *v);
        if cas.is_some_and(|cas| cas != current) {
            return Err(WriteError::CasMismatch);
        }
        let mut version = self.version.borrow_mut();
        *version += 1;
        self.written
            .borrow_mut()
            .insert(key.to_string(), (value.to_vec(), *version));
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        NOW * 1_000
    }
}

fn session(sub: &str, sid: Option<&str>) -> Session {
    Session {
        sub: sub.to_string(),
        sid: sid.map(str::to_string),
        created_at: NOW - 100,
        expires_at: NOW + 3600,
        last_seen: NOW - 10,
        access_token: "at".to_string(),
        access_token_expires_at: Some(NOW + 30),
        access_token_lifetime: Some(300),
        refresh_token: Some("rt".to_string()),
        id_token: None,
        claims: Default::default(),
        refreshing_until: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let key = SessionId::from_cookie("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .expect("plausible id")
        .store_key();
    let alice = session("alice", Some("s1"));
    match selector % 9 {
        0 => {
            let mut bucket = SessionBucket::decode(Some(bytes));
            let _ = bucket.get(&key);
            let _ = bucket.created_at().count();
            let _ = bucket.sweep(NOW, 1800, NOW - 50);
            let _ = bucket.put(&key, alice, &Layout::new(100));
            let again = SessionBucket::decode(Some(&bucket.encode()));
            assert_eq!(again.len(), bucket.len());
        }
        1 => {
            let mut index = IndexBucket::decode(Some(bytes));
            let entry = IndexEntry::sid(ISSUER, "s1");
            let _ = index.add(&entry, &key, NOW + 100, 64);
            let _ = index.sweep(NOW);
            let _ = index.take(&entry);
            let _ = IndexBucket::decode(Some(&index.encode()));
        }
        2 => {
            // Whatever the shard held, a value just recorded counts as used.
            let state = "a-state-never-seen-before-in-the-ledger";
            if let once::Mark::Record(recorded) = once::mark(Some(bytes), state, NOW + 600, NOW) {
                assert_eq!(
                    once::mark(Some(&recorded), state, NOW + 600, NOW),
                    once::Mark::AlreadyUsed
                );
            }
        }
        3 => {
            let decoded = DenyList::decode(bytes);
            for s in [&alice, &session("bob", None)] {
                let checked = DenyList::check_encoded(bytes, ISSUER, s, NOW);
                if let Some(list) = &decoded {
                    assert_eq!(checked, Some(list.is_denied(ISSUER, s, NOW)));
                }
            }
            let mut list = decoded.unwrap_or_default();
            assert!(list.insert(&IndexEntry::sub(ISSUER, "bob"), NOW + 60, NOW));
            assert!(list.len() <= deny_list::MAX_ENTRIES);
        }
        4 => {
            let data = Poisoned {
                garbage: bytes,
                written: Default::default(),
                version: RefCell::new(0),
            };
            if refresh_lease::claim(&data, &key, NOW, NOW + 10) {
                assert!(
                    !refresh_lease::claim(&data, &key, NOW, NOW + 10),
                    "claimed twice"
                );
            }
            let _ = deny_list::record(&data, &[IndexEntry::sid(ISSUER, "s1")], NOW + 60, NOW);
            let _ = shared_store::record_once(&data, "once/login/1", "state", NOW + 600, NOW);
        }
        5 => {
            if let Some(mut shared) = SharedProvider::decode(bytes) {
                if let Some(provider) = shared.to_provider() {
                    let _ = provider.may_refetch_jwks_for("new-kid", NOW);
                    let refetches = &mut shared.kid_refetches;
                    if refetches.claim("new-kid", NOW) {
                        refetches.refetched("new-kid", &provider.jwks, NOW);
                        assert!(!refetches.may_refetch("new-kid", NOW + 1));
                    }
                }
                let _ = SharedProvider::decode(&shared.encode()).expect("round trip");
            }
        }
        6 => {
            if let Some(status) = FetchStatus::decode(bytes) {
                let _ = status.claim(NOW, 10);
                let _ = status.failed(NOW);
            }
        }
        7 => {
            if let Some(s) = Session::decode(bytes) {
                let _ = s.expiry(NOW, 1800);
                let _ = s.refresh_due(NOW, 60);
                let _ = s.needs_touch(NOW, 1800);
                let _ = IndexEntry::for_session(ISSUER, &s);
                assert!(Session::decode(&s.encode()) == Some(s));
            }
        }
        _ => {
            let store = SessionStore {
                data: Poisoned {
                    garbage: bytes,
                    written: Default::default(),
                    version: RefCell::new(0),
                },
                layout: Layout::new(64),
                issuer: ISSUER.to_string(),
                idle_timeout: 1800,
                absolute_timeout: 28_800,
                max_sessions: 64,
                max_sessions_per_subject: 64,
                sweeper_id: 7,
                sweep_seen: Default::default(),
                records: Default::default(),
            };
            let _ = store.load(&key);
            let _ = store.sweep_tick(NOW, 60);
            let other = SessionId::generate(&mut rng(3)).store_key();
            let _ = store.apply(vec![
                StoreWrite::Touch {
                    key: key.clone(),
                    at: NOW,
                },
                StoreWrite::Put {
                    key: key.clone(),
                    session: Box::new(alice.clone()),
                },
                StoreWrite::ReleaseRefresh { key: other.clone() },
                StoreWrite::Delete { key: other },
            ]);
            assert!(store.load(&key).is_some_and(|s| s.sub == "alice"));
            let _ = store.claim_refresh(&key, NOW, NOW + 10, "at");
            let _ =
                store.end_sessions(&[IndexEntry::sid(ISSUER, "s1"), IndexEntry::sub(ISSUER, "x")]);
            let _ = store.sweep_tick(NOW + 1, 60);
            let _ = store.sweep_tick(NOW + 2, 1);
        }
    }
});
