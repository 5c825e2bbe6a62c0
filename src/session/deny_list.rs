//! Revoked cookie sessions: a bounded, expiring list kept under one shared-data key.
//!
//! A cookie session lives in the browser, so a back-channel logout cannot delete
//! it. The replica that receives the logout records the logout token's `sid`
//! (or, without one, its `sub`) here, as the same digests the shared-data
//! store indexes sessions by ([`IndexEntry`]); each request on that replica
//! checks the list before using a cookie session. Other replicas do not see
//! it: multi-replica revocation needs the shared-data store or short lifetimes.

use serde::{Deserialize, Serialize};

use super::buckets::IndexEntry;
use super::first_write::ensure_exists;
use super::shared_store::{SharedData, WriteError};
use super::Session;

/// The shared-data key holding the encoded list.
pub const DENY_LIST_KEY: &str = "cookie-sessions/deny-list";
/// A counter beside the list, raised after every change of it: a VM that
/// checked a session against the list at one generation need not read the
/// list again (it can be large) while the generation stays the same.
pub const GENERATION_KEY: &str = "cookie-sessions/deny-list-generation";
/// Ceiling on entries: every request of the cookie store copies the list out of
/// shared data, so it must stay small (256 entries are about 20 KB). When full,
/// the oldest logout is forgotten, but never let go: every session created
/// before it is refused from then on (the watermark), so a full list fails
/// closed (those users log in again) instead of bringing a revoked cookie back.
pub const MAX_ENTRIES: usize = 256;
const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// An [`IndexEntry`] digest (of a `sid` or a `sub`).
    entry: String,
    /// When the logout was received: sessions created later are not affected.
    at: u64,
    /// When the entry may be forgotten: no session it matches outlives it.
    until: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyList {
    #[serde(rename = "v1")]
    entries: Vec<Entry>,
    /// Every session created at or before this is refused, until
    /// `watermark_until`: the newest logout a full list had to forget.
    #[serde(default, skip_serializing_if = "is_zero")]
    watermark: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    watermark_until: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How an encoded list with a watermark begins to differ: the field's name.
const WATERMARK_FIELD: &str = "\"watermark\"";

impl DenyList {
    /// `None` for bytes this code did not write.
    pub fn decode(bytes: &[u8]) -> Option<DenyList> {
        let list: DenyList = serde_json::from_slice(bytes).ok()?;
        (list.entries.len() <= MAX_ENTRIES).then_some(list)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Strings and numbers only: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Denies the sessions filed under `entry` and created by `now`, until
    /// `until` (pass `now` + the absolute session timeout). Expired entries are
    /// dropped on the way. `false` when `until` has already passed.
    pub fn insert(&mut self, entry: &IndexEntry, until: u64, now: u64) -> bool {
        self.entries.retain(|e| e.until > now);
        if until <= now {
            return false;
        }
        if let Some(same) = self.entries.iter_mut().find(|e| e.entry == entry.as_str()) {
            same.at = same.at.max(now);
            same.until = same.until.max(until);
            return true;
        }
        if self.watermark_until <= now {
            self.watermark = 0;
            self.watermark_until = 0;
        }
        while self.entries.len() >= MAX_ENTRIES {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.at)
                .map(|(i, _)| i)
            else {
                break;
            };
            let forgotten = self.entries.swap_remove(oldest);
            self.watermark = self.watermark.max(forgotten.at);
            self.watermark_until = self.watermark_until.max(forgotten.until);
        }
        self.entries.push(Entry {
            entry: entry.as_str().to_string(),
            at: now,
            until,
        });
        true
    }

    pub fn is_denied(&self, issuer: &str, session: &Session, now: u64) -> bool {
        if now < self.watermark_until && session.created_at <= self.watermark {
            return true;
        }
        let filed_under = IndexEntry::for_deny_list(issuer, session);
        self.entries.iter().any(|e| {
            e.until > now
                && session.created_at <= e.at
                && filed_under.iter().any(|f| f.as_str() == e.entry)
        })
    }

    /// [`DenyList::is_denied`] straight from the encoded list, for every request
    /// of the cookie store. Decoding a full list costs about 100 µs, so it is
    /// decoded only when one of the session's digests occurs in it at all.
    /// `None`: the list is unreadable.
    pub fn check_encoded(
        encoded: &[u8],
        issuer: &str,
        session: &Session,
        now: u64,
    ) -> Option<bool> {
        let Ok(text) = std::str::from_utf8(encoded) else {
            // serde_json skips unknown members without checking their UTF-8, so
            // the list may still decode: let the decoder decide.
            return Some(DenyList::decode(encoded)?.is_denied(issuer, session, now));
        };
        // Digests are base64url: they appear verbatim in the JSON.
        let mentioned = IndexEntry::for_deny_list(issuer, session)
            .iter()
            .any(|e| text.contains(e.as_str()));
        if !mentioned && !text.contains(WATERMARK_FIELD) {
            return Some(false);
        }
        Some(DenyList::decode(encoded)?.is_denied(issuer, session, now))
    }
}

/// Adds `entries` to the list in shared data; `false` if it could not be written.
pub fn record(data: &impl SharedData, entries: &[IndexEntry], until: u64, now: u64) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = data.get(DENY_LIST_KEY);
        let Some(cas) = cas else {
            // Compare-and-swap on an absent key always succeeds: create it first.
            if !ensure_exists(data, DENY_LIST_KEY) {
                return false;
            }
            continue;
        };
        let mut list = bytes
            .as_deref()
            .and_then(DenyList::decode)
            .unwrap_or_default();
        for entry in entries {
            list.insert(entry, until, now);
        }
        match data.set(DENY_LIST_KEY, &list.encode(), Some(cas)) {
            Ok(()) => return raise_generation(data),
            Err(WriteError::CasMismatch) => continue,
            Err(WriteError::Failed(reason)) => {
                log::error!("cookie-session deny-list write failed: {reason}");
                return false;
            }
        }
    }
    log::error!("cookie-session deny-list stayed contended; logout not recorded");
    false
}

/// The list as the host read it for a request.
#[derive(Debug, Clone, Copy)]
pub enum DenyListRead<'a> {
    /// The generation is still the one the request named: the list was not read.
    Unchanged(u64),
    /// The generation (read first), then the list (`None`: there is none).
    Read {
        generation: u64,
        list: Option<&'a [u8]>,
    },
}

/// The current generation of the list; 0 before the first change.
pub fn generation(data: &impl SharedData) -> u64 {
    parse_generation(data.get(GENERATION_KEY).0.as_deref())
}

fn parse_generation(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// Raises the generation after the list changed. A write that loses the
/// race to another one is as good: that one read the generation after this
/// list change too, and wrote a higher one.
fn raise_generation(data: &impl SharedData) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = data.get(GENERATION_KEY);
        let Some(cas) = cas else {
            if !ensure_exists(data, GENERATION_KEY) {
                break;
            }
            continue;
        };
        let next = parse_generation(bytes.as_deref())
            .wrapping_add(1)
            .to_string();
        match data.set(GENERATION_KEY, next.as_bytes(), Some(cas)) {
            Ok(()) | Err(WriteError::CasMismatch) => return true,
            Err(WriteError::Failed(reason)) => {
                log::error!("cookie-session deny-list generation write failed: {reason}");
                return false;
            }
        }
    }
    log::error!("cookie-session deny-list generation could not be raised");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::shared_store::InMemory;

    const NOW: u64 = 1_800_000_000;
    const ISS: &str = "https://idp.example";

    fn session(sub: &str, sid: Option<&str>, created_at: u64) -> Session {
        Session {
            sub: sub.to_string(),
            sid: sid.map(str::to_string),
            created_at,
            expires_at: created_at + 3600,
            last_seen: created_at,
            access_token: "at".to_string(),
            access_token_expires_at: None,
            access_token_lifetime: None,
            refresh_token: None,
            id_token: None,
            claims: serde_json::Map::new(),
            refreshing_until: None,
        }
    }

    fn sid(s: &str) -> IndexEntry {
        IndexEntry::sid(ISS, s)
    }

    fn sub(s: &str) -> IndexEntry {
        IndexEntry::sub(ISS, s)
    }

    #[test]
    fn a_logged_out_cookie_session_is_denied_alone() {
        let mut list = DenyList::default();
        let out = session("alice", Some("sid-1"), NOW - 10);
        let entry = IndexEntry::cookie_session(ISS, &out);
        assert!(list.insert(&entry, out.expires_at, NOW));
        assert!(list.is_denied(ISS, &out, NOW));
        let encoded = list.encode();
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &out, NOW),
            Some(true)
        );
        let later = session("alice", Some("sid-1"), NOW + 1);
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &later, NOW + 1),
            Some(false)
        );
        let other = session("alice", Some("sid-2"), NOW - 10);
        assert!(!list.is_denied(ISS, &other, NOW));
    }

    #[test]
    fn a_full_list_refuses_every_session_older_than_the_logout_it_forgets() {
        let mut list = DenyList::default();
        let first = session("alice", Some("sid-a"), NOW - 100);
        assert!(list.insert(&sid("sid-a"), NOW + 3600, NOW));
        for n in 0..MAX_ENTRIES as u64 {
            assert!(list.insert(&sid(&format!("other-{n}")), NOW + 3600, NOW + 1 + n));
        }
        assert_eq!(list.len(), MAX_ENTRIES);
        let later = NOW + MAX_ENTRIES as u64 + 1;
        let encoded = list.encode();
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &first, later),
            Some(true),
            "the forgotten logout still denies its session"
        );
        let bystander = session("bob", Some("sid-b"), NOW - 50);
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &bystander, later),
            Some(true),
            "fails closed: older sessions log in again"
        );
        let newer = session("carol", Some("sid-c"), NOW + 1);
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &newer, later),
            Some(false)
        );
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &first, NOW + 3600),
            Some(false),
            "the watermark lapses when every session it covers has expired"
        );
    }

    #[test]
    fn a_sid_denies_that_session_only() {
        let mut list = DenyList::default();
        assert!(list.insert(&sid("sid-1"), NOW + 600, NOW));
        assert!(list.is_denied(ISS, &session("alice", Some("sid-1"), NOW - 10), NOW));
        assert!(!list.is_denied(ISS, &session("alice", Some("sid-2"), NOW - 10), NOW));
        assert!(!list.is_denied(ISS, &session("alice", None, NOW - 10), NOW));
        assert!(
            !list.is_denied(
                "https://other.example",
                &session("alice", Some("sid-1"), NOW - 10),
                NOW
            ),
            "another issuer's sid"
        );
    }

    #[test]
    fn a_sub_denies_the_users_older_sessions_but_not_a_new_login() {
        let mut list = DenyList::default();
        assert!(list.insert(&sub("alice"), NOW + 600, NOW));
        assert!(list.is_denied(ISS, &session("alice", Some("a"), NOW - 100), NOW + 5));
        assert!(list.is_denied(ISS, &session("alice", None, NOW), NOW + 5));
        assert!(!list.is_denied(ISS, &session("alice", None, NOW + 1), NOW + 5));
        assert!(!list.is_denied(ISS, &session("bob", None, NOW - 100), NOW + 5));
    }

    #[test]
    fn entries_expire() {
        let mut list = DenyList::default();
        list.insert(&sid("sid-1"), NOW + 600, NOW);
        let s = session("alice", Some("sid-1"), NOW - 10);
        assert!(list.is_denied(ISS, &s, NOW + 599));
        assert!(!list.is_denied(ISS, &s, NOW + 600));
        list.insert(&sid("sid-2"), NOW + 1200, NOW + 600);
        assert_eq!(list.len(), 1, "the expired entry was dropped on insert");
        assert!(!list.insert(&sid("sid-3"), NOW, NOW), "already expired");
    }

    #[test]
    fn a_repeated_logout_extends_its_entry() {
        let mut list = DenyList::default();
        list.insert(&sid("sid-1"), NOW + 600, NOW);
        list.insert(&sid("sid-1"), NOW + 900, NOW + 10);
        assert_eq!(list.len(), 1);
        assert!(list.is_denied(ISS, &session("alice", Some("sid-1"), NOW), NOW + 800));
    }

    #[test]
    fn the_list_is_bounded_and_what_it_forgets_stays_denied() {
        let mut list = DenyList::default();
        for i in 0..MAX_ENTRIES as u64 {
            assert!(list.insert(&sid(&format!("sid-{i}")), NOW + 1000 + i, NOW));
        }
        assert!(list.insert(&sid("newest"), NOW + 5000, NOW));
        assert_eq!(list.len(), MAX_ENTRIES);
        let s = |sid: &str| session("alice", Some(sid), NOW - 1);
        assert!(
            list.is_denied(ISS, &s("sid-0"), NOW),
            "the forgotten logout's session is refused below the watermark"
        );
        assert!(list.is_denied(ISS, &s("sid-1"), NOW));
        assert!(list.is_denied(ISS, &s("newest"), NOW));
    }

    #[test]
    fn checking_the_encoded_list_agrees_with_the_decoded_one() {
        let mut list = DenyList::default();
        list.insert(&sid("sid-1"), NOW + 600, NOW);
        list.insert(&sub("bob"), NOW + 600, NOW);
        let encoded = list.encode();
        let sessions = [
            session("alice", Some("sid-1"), NOW - 1),
            session("alice", Some("sid-2"), NOW - 1),
            session("bob", None, NOW - 1),
            session("bob", None, NOW + 1),
            session("carol", None, NOW - 1),
        ];
        for s in &sessions {
            for now in [NOW, NOW + 600] {
                assert_eq!(
                    DenyList::check_encoded(&encoded, ISS, s, now),
                    Some(list.is_denied(ISS, s, now)),
                    "{s:?} at {now}"
                );
            }
        }
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &sessions[0], NOW),
            Some(true)
        );
        assert_eq!(
            DenyList::check_encoded(b"\xff", ISS, &sessions[0], NOW),
            None
        );
        let mentioned_but_broken = format!("{{\"{}\"}}", sid("sid-1").as_str());
        assert_eq!(
            DenyList::check_encoded(mentioned_but_broken.as_bytes(), ISS, &sessions[0], NOW),
            None
        );
        assert_eq!(
            DenyList::check_encoded(b"[]", ISS, &sessions[0], NOW),
            Some(false)
        );
    }

    /// Found with the shared_records fuzz target: serde_json skips an unknown
    /// member without checking its UTF-8, so a list that decodes (and denies)
    /// was declared unreadable, and the revoked session let through.
    #[test]
    fn a_stray_non_utf8_byte_does_not_hide_a_denial() {
        let mut list = DenyList::default();
        list.insert(&sid("sid-1"), NOW + 600, NOW);
        let mut encoded = list.encode();
        encoded.pop();
        encoded.extend_from_slice(b",\"x\":\"\xf3\"}");
        assert_eq!(DenyList::decode(&encoded), Some(list));
        let revoked = session("alice", Some("sid-1"), NOW - 1);
        assert_eq!(
            DenyList::check_encoded(&encoded, ISS, &revoked, NOW),
            Some(true)
        );
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_refused() {
        let mut list = DenyList::default();
        list.insert(&sid("sid-1"), NOW + 600, NOW);
        list.insert(&sub("bob"), NOW + 600, NOW);
        assert_eq!(DenyList::decode(&list.encode()), Some(list));
        assert_eq!(DenyList::decode(br#"{"v1":[]}"#), Some(DenyList::default()));
        for garbage in [&b""[..], b"null", b"{}", b"[1,2]", b"\xff"] {
            assert_eq!(DenyList::decode(garbage), None);
        }
        let oversized = serde_json::json!({
            "v1": (0..=MAX_ENTRIES).map(|i| serde_json::json!({"entry": i.to_string(), "at": 1, "until": 2}))
                .collect::<Vec<_>>()
        });
        assert_eq!(DenyList::decode(oversized.to_string().as_bytes()), None);
    }

    #[test]
    fn recording_in_shared_data_adds_to_what_is_there() {
        let data = InMemory::default();
        assert!(record(&data, &[sid("sid-1")], NOW + 600, NOW));
        assert!(record(
            &data,
            &[sub("bob"), sid("sid-2")],
            NOW + 600,
            NOW + 1
        ));
        let (bytes, _) = data.get(DENY_LIST_KEY);
        let list = DenyList::decode(&bytes.unwrap()).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.is_denied(ISS, &session("alice", Some("sid-1"), NOW), NOW + 2));
        assert!(list.is_denied(ISS, &session("bob", None, NOW), NOW + 2));

        let broken = InMemory::default();
        broken.set(DENY_LIST_KEY, b"garbage", None).unwrap();
        assert!(record(&broken, &[sid("sid-1")], NOW + 600, NOW));
        let (bytes, _) = broken.get(DENY_LIST_KEY);
        assert_eq!(DenyList::decode(&bytes.unwrap()).unwrap().len(), 1);
    }

    #[test]
    fn every_recorded_change_raises_the_generation() {
        let data = InMemory::default();
        assert_eq!(generation(&data), 0);
        assert!(record(&data, &[sid("sid-1")], NOW + 600, NOW));
        assert_eq!(generation(&data), 1);
        assert!(record(&data, &[sid("sid-1")], NOW + 600, NOW + 1));
        assert_eq!(generation(&data), 2);
        // An unreadable counter starts over from 0, still a change for a reader of it.
        data.set(GENERATION_KEY, b"garbage", None).unwrap();
        assert_eq!(generation(&data), 0);
        assert!(record(&data, &[sub("bob")], NOW + 600, NOW + 2));
        assert_eq!(generation(&data), 1);
    }
}
