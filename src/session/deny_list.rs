//! Revoked cookie sessions: a bounded, expiring list kept under one shared-data key.
//!
//! A cookie session lives in the browser, so a back-channel logout cannot delete
//! it. The replica that receives the logout records the `sid` (or, without one,
//! the `sub`) here; each request on that replica checks the list before using a
//! cookie session. Other replicas do not see it: multi-replica revocation needs
//! the shared-data store or short session lifetimes.

use serde::{Deserialize, Serialize};

use super::Session;

/// The shared-data key holding the encoded list.
pub const DENY_LIST_KEY: &str = "cookie-sessions/deny-list";
/// Ceiling on entries: every request of the cookie store copies the list out of
/// shared data, so it must stay small. When full, the entry that expires first
/// goes.
pub const MAX_ENTRIES: usize = 256;
/// Longer `sid`/`sub` values are not recorded (they would bloat every read).
const MAX_VALUE_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// When the logout was received: sessions created later are not affected.
    at: u64,
    /// When the entry may be forgotten: no session it matches outlives it.
    until: u64,
}

impl Entry {
    /// OIDC Back-Channel Logout §2.5: with a `sid`, that provider session (of
    /// that `sub`, if given) ends; with only a `sub`, all of the user's sessions.
    fn matches(&self, session: &Session) -> bool {
        let sub_matches = self.sub.as_deref().is_none_or(|sub| sub == session.sub);
        match &self.sid {
            Some(sid) => sub_matches && session.sid.as_deref() == Some(sid.as_str()),
            None => sub_matches && session.created_at <= self.at,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyList {
    #[serde(rename = "v1")]
    entries: Vec<Entry>,
}

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

    /// Denies matching sessions until `until` (pass `now` + the absolute session
    /// timeout). Expired entries are dropped on the way. `false` when nothing
    /// was recorded: neither `sid` nor `sub`, a value too long, or `until` passed.
    pub fn insert(&mut self, sid: Option<&str>, sub: Option<&str>, until: u64, now: u64) -> bool {
        self.entries.retain(|e| e.until > now);
        let too_long = |v: Option<&str>| v.is_some_and(|v| v.len() > MAX_VALUE_LEN);
        if (sid.is_none() && sub.is_none()) || too_long(sid) || too_long(sub) || until <= now {
            return false;
        }
        let entry = Entry {
            sid: sid.map(str::to_string),
            sub: sub.map(str::to_string),
            at: now,
            until,
        };
        if let Some(same) = self
            .entries
            .iter_mut()
            .find(|e| e.sid == entry.sid && e.sub == entry.sub)
        {
            same.at = same.at.max(now);
            same.until = same.until.max(until);
            return true;
        }
        if self.entries.len() >= MAX_ENTRIES {
            if let Some(soonest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.until)
                .map(|(i, _)| i)
            {
                self.entries.swap_remove(soonest);
            }
        }
        self.entries.push(entry);
        true
    }

    /// [`DenyList::is_denied`] straight from the encoded list, for every request
    /// of the cookie store. Decoding a full list costs about 100 µs, so it is
    /// decoded only when the session's `sid` or `sub` occurs in it at all (as
    /// the same JSON string the encoder writes). `None`: the list is unreadable.
    pub fn check_encoded(encoded: &[u8], session: &Session, now: u64) -> Option<bool> {
        let text = std::str::from_utf8(encoded).ok()?;
        let mentioned = |value: &str| {
            serde_json::to_string(value).is_ok_and(|needle| text.contains(needle.as_str()))
        };
        if !mentioned(&session.sub) && !session.sid.as_deref().is_some_and(mentioned) {
            return Some(false);
        }
        Some(DenyList::decode(encoded)?.is_denied(session, now))
    }

    pub fn is_denied(&self, session: &Session, now: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.until > now && e.matches(session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn session(sub: &str, sid: Option<&str>, created_at: u64) -> Session {
        Session {
            sub: sub.to_string(),
            sid: sid.map(str::to_string),
            created_at,
            expires_at: created_at + 3600,
            last_seen: created_at,
            access_token: "at".to_string(),
            access_token_expires_at: None,
            refresh_token: None,
            id_token: None,
            claims: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_sid_denies_that_session_only() {
        let mut list = DenyList::default();
        assert!(list.insert(Some("sid-1"), Some("alice"), NOW + 600, NOW));
        assert!(list.is_denied(&session("alice", Some("sid-1"), NOW - 10), NOW));
        assert!(!list.is_denied(&session("alice", Some("sid-2"), NOW - 10), NOW));
        assert!(!list.is_denied(&session("alice", None, NOW - 10), NOW));
        assert!(
            !list.is_denied(&session("bob", Some("sid-1"), NOW - 10), NOW),
            "a sid with another sub is another provider's session"
        );
    }

    #[test]
    fn a_sub_alone_denies_the_users_older_sessions_but_not_a_new_login() {
        let mut list = DenyList::default();
        assert!(list.insert(None, Some("alice"), NOW + 600, NOW));
        assert!(list.is_denied(&session("alice", Some("a"), NOW - 100), NOW + 5));
        assert!(list.is_denied(&session("alice", None, NOW), NOW + 5));
        assert!(!list.is_denied(&session("alice", None, NOW + 1), NOW + 5));
        assert!(!list.is_denied(&session("bob", None, NOW - 100), NOW + 5));
    }

    #[test]
    fn entries_expire() {
        let mut list = DenyList::default();
        list.insert(Some("sid-1"), None, NOW + 600, NOW);
        let s = session("alice", Some("sid-1"), NOW - 10);
        assert!(list.is_denied(&s, NOW + 599));
        assert!(!list.is_denied(&s, NOW + 600));
        list.insert(Some("sid-2"), None, NOW + 1200, NOW + 600);
        assert_eq!(list.len(), 1, "the expired entry was dropped on insert");
    }

    #[test]
    fn nothing_to_match_or_already_expired_is_not_recorded() {
        let mut list = DenyList::default();
        assert!(!list.insert(None, None, NOW + 600, NOW));
        assert!(!list.insert(Some("s"), None, NOW, NOW));
        assert!(!list.insert(Some(&"x".repeat(MAX_VALUE_LEN + 1)), None, NOW + 1, NOW));
        assert!(list.is_empty());
    }

    #[test]
    fn a_repeated_logout_extends_its_entry() {
        let mut list = DenyList::default();
        list.insert(Some("sid-1"), Some("alice"), NOW + 600, NOW);
        list.insert(Some("sid-1"), Some("alice"), NOW + 900, NOW + 10);
        assert_eq!(list.len(), 1);
        assert!(list.is_denied(&session("alice", Some("sid-1"), NOW), NOW + 800));
    }

    #[test]
    fn the_list_is_bounded_and_drops_what_expires_first() {
        let mut list = DenyList::default();
        for i in 0..MAX_ENTRIES as u64 {
            assert!(list.insert(Some(&format!("sid-{i}")), None, NOW + 1000 + i, NOW));
        }
        assert!(list.insert(Some("newest"), None, NOW + 5000, NOW));
        assert_eq!(list.len(), MAX_ENTRIES);
        let s = |sid: &str| session("alice", Some(sid), NOW - 1);
        assert!(
            !list.is_denied(&s("sid-0"), NOW),
            "the soonest to expire went"
        );
        assert!(list.is_denied(&s("sid-1"), NOW));
        assert!(list.is_denied(&s("newest"), NOW));
    }

    #[test]
    fn checking_the_encoded_list_agrees_with_the_decoded_one() {
        let mut list = DenyList::default();
        list.insert(Some("sid-\"1\""), Some("alice"), NOW + 600, NOW);
        list.insert(None, Some("b\\ob"), NOW + 600, NOW);
        let encoded = list.encode();
        let sessions = [
            session("alice", Some("sid-\"1\""), NOW - 1),
            session("alice", Some("sid-2"), NOW - 1),
            session("b\\ob", None, NOW - 1),
            session("b\\ob", None, NOW + 1),
            session("carol", Some("sid-\"1\""), NOW - 1),
            session("sid", None, NOW - 1),
        ];
        for s in &sessions {
            for now in [NOW, NOW + 600] {
                assert_eq!(
                    DenyList::check_encoded(&encoded, s, now),
                    Some(list.is_denied(s, now)),
                    "{s:?} at {now}"
                );
            }
        }
        assert!(DenyList::check_encoded(&encoded, &sessions[0], NOW) == Some(true));
        assert_eq!(DenyList::check_encoded(b"\xff", &sessions[0], NOW), None);
        assert_eq!(
            DenyList::check_encoded(br#"{"alice"}"#, &sessions[0], NOW),
            None,
            "mentioned but unreadable"
        );
        assert_eq!(
            DenyList::check_encoded(b"[]", &sessions[0], NOW),
            Some(false)
        );
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_refused() {
        let mut list = DenyList::default();
        list.insert(Some("sid-1"), Some("alice"), NOW + 600, NOW);
        list.insert(None, Some("bob"), NOW + 600, NOW);
        let bytes = list.encode();
        assert_eq!(DenyList::decode(&bytes), Some(list));
        assert_eq!(DenyList::decode(br#"{"v1":[]}"#), Some(DenyList::default()));
        for garbage in [&b""[..], b"null", b"{}", b"[1,2]", b"\xff"] {
            assert_eq!(DenyList::decode(garbage), None);
        }
        let oversized = serde_json::json!({
            "v1": (0..=MAX_ENTRIES).map(|i| serde_json::json!({"sid": i.to_string(), "at": 1, "until": 2}))
                .collect::<Vec<_>>()
        });
        assert_eq!(DenyList::decode(oversized.to_string().as_bytes()), None);
    }
}
