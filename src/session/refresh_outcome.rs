//! How a session's refresh ended, kept for a short time for the requests that
//! waited on it.
//!
//! The request that refreshes (the leader) publishes its outcome here; the
//! requests that found the refresh under way (followers) read it and go on
//! with the new tokens, or answer as the leader did. A round is one refresh of
//! one access token of one session, so a follower never mistakes the outcome
//! of an earlier refresh for the one it waits on. For cookie sessions this is
//! the only place a follower can get the new session from: it has no stored
//! copy, and the old refresh token in its cookie is spent once the provider
//! rotated it.
//!
//! Shared-data keys never go away, so rounds live in a fixed set of slots, a
//! bounded number per slot; an outcome that does not fit is not published and
//! its followers answer as when the wait runs out.

use serde::{Deserialize, Serialize};

use super::shared_store::{SharedData, WriteError};
use super::{Session, SessionKey};
use crate::crypto;

const SLOTS: u32 = 64;
/// Outcomes kept at once per slot.
const MAX_PER_SLOT: usize = 8;
const CAS_ATTEMPTS: usize = 8;

/// One refresh of one session's access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRound(String);

impl RefreshRound {
    /// The refresh that replaces `access_token` of the session stored under `key`.
    /// Hashed: the slot holds no usable token of the old round.
    pub fn of(key: &SessionKey, access_token: &str) -> RefreshRound {
        let id = format!("{}|{access_token}", key.as_str());
        RefreshRound(crypto::sha256_b64url(id.as_bytes()))
    }

    fn slot(&self) -> String {
        let hash = self
            .0
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        format!("sessions/refresh-outcome/{}", hash % SLOTS)
    }
}

/// How the leader's refresh ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// New tokens: the session as the leader stored it.
    Refreshed { session: Box<Session> },
    /// The provider could not refresh it now (the session is kept): why, as
    /// the leader's error page says it.
    Failed { why: String },
    /// The provider ended the grant, and so the session.
    Ended,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Slot {
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    round: String,
    until: u64,
    outcome: RefreshOutcome,
}

/// Keeps `outcome` of `round` until `until`. `false` when it could not be kept
/// (the slot is full or the write failed): the followers then wait it out.
pub fn publish(
    data: &impl SharedData,
    round: &RefreshRound,
    outcome: &RefreshOutcome,
    now: u64,
    until: u64,
) -> bool {
    let slot = round.slot();
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = data.get(&slot);
        if bytes.is_none() && cas.is_none() {
            // Compare-and-swap on an absent key always succeeds: create it first.
            let _ = data.set(&slot, b"{\"entries\":[]}", None);
            continue;
        }
        let mut state = decode(bytes.as_deref());
        state
            .entries
            .retain(|e| e.until > now && e.round != round.0);
        if state.entries.len() >= MAX_PER_SLOT {
            log::warn!("refresh outcome not shared: too many refreshes at once");
            return false;
        }
        state.entries.push(Entry {
            round: round.0.clone(),
            until,
            outcome: outcome.clone(),
        });
        let Ok(encoded) = serde_json::to_vec(&state) else {
            return false;
        };
        match data.set(&slot, &encoded, cas) {
            Ok(()) => return true,
            Err(WriteError::CasMismatch) => continue,
            Err(WriteError::Failed(reason)) => {
                log::error!("refresh outcome write failed: {reason}");
                return false;
            }
        }
    }
    false
}

/// Forgets the outcome of `round`: a new attempt at it has just been claimed
/// (the last one failed), and its followers must wait for that one.
pub fn withdraw(data: &impl SharedData, round: &RefreshRound, now: u64) {
    let slot = round.slot();
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = data.get(&slot);
        let mut state = decode(bytes.as_deref());
        let before = state.entries.len();
        state
            .entries
            .retain(|e| e.until > now && e.round != round.0);
        if state.entries.len() == before {
            return;
        }
        let Ok(encoded) = serde_json::to_vec(&state) else {
            return;
        };
        match data.set(&slot, &encoded, cas) {
            Ok(()) => return,
            Err(WriteError::CasMismatch) => continue,
            Err(WriteError::Failed(reason)) => {
                log::error!("refresh outcome write failed: {reason}");
                return;
            }
        }
    }
}

/// The outcome of `round`, if it is known and still kept.
pub fn read(data: &impl SharedData, round: &RefreshRound, now: u64) -> Option<RefreshOutcome> {
    let (bytes, _) = data.get(&round.slot());
    decode(bytes.as_deref())
        .entries
        .into_iter()
        .find(|e| e.round == round.0 && e.until > now)
        .map(|e| e.outcome)
}

/// A slot that does not decode (written by another version) counts as empty.
fn decode(bytes: Option<&[u8]>) -> Slot {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::shared_store::InMemory;

    fn key(s: &str) -> SessionKey {
        SessionKey::from_hash(s.to_string())
    }

    fn session(access_token: &str) -> Session {
        Session {
            sub: "alice".to_string(),
            sid: None,
            created_at: 1,
            expires_at: 1000,
            last_seen: 1,
            access_token: access_token.to_string(),
            access_token_expires_at: Some(500),
            access_token_lifetime: Some(300),
            refresh_token: Some("rt-2".to_string()),
            id_token: None,
            claims: Default::default(),
            refreshing_until: None,
        }
    }

    #[test]
    fn followers_read_the_outcome_of_their_round_until_it_lapses() {
        let data = InMemory::default();
        let round = RefreshRound::of(&key("a"), "at-1");
        assert_eq!(read(&data, &round, 100), None, "nothing published yet");
        let refreshed = RefreshOutcome::Refreshed {
            session: Box::new(session("at-2")),
        };
        assert!(publish(&data, &round, &refreshed, 100, 110));
        assert_eq!(read(&data, &round, 105), Some(refreshed));
        assert_eq!(read(&data, &round, 110), None, "lapsed");
    }

    #[test]
    fn a_new_attempt_withdraws_the_outcome_of_the_failed_one() {
        let data = InMemory::default();
        let round = RefreshRound::of(&key("a"), "at-1");
        let other = RefreshRound::of(&key("b"), "at-1");
        let failed = RefreshOutcome::Failed {
            why: "the identity provider could not be reached".to_string(),
        };
        assert!(publish(&data, &round, &failed, 100, 110));
        assert!(publish(&data, &other, &RefreshOutcome::Ended, 100, 110));
        withdraw(&data, &round, 101);
        assert_eq!(read(&data, &round, 101), None);
        assert_eq!(read(&data, &other, 101), Some(RefreshOutcome::Ended));
        withdraw(&data, &round, 101); // nothing left to withdraw: no write
    }

    #[test]
    fn an_outcome_belongs_to_one_session_and_one_access_token() {
        let data = InMemory::default();
        assert!(publish(
            &data,
            &RefreshRound::of(&key("a"), "at-1"),
            &RefreshOutcome::Ended,
            100,
            110
        ));
        assert_eq!(read(&data, &RefreshRound::of(&key("b"), "at-1"), 101), None);
        assert_eq!(
            read(&data, &RefreshRound::of(&key("a"), "at-2"), 101),
            None,
            "the next refresh of the same session is another round"
        );
    }

    #[test]
    fn the_slots_are_bounded_and_a_full_slot_refuses() {
        let data = InMemory::default();
        let failed = RefreshOutcome::Failed {
            why: "the identity provider could not be reached".to_string(),
        };
        let published = (0..10_000)
            .filter(|i| {
                let round = RefreshRound::of(&key(&format!("s{i}")), "at");
                publish(&data, &round, &failed, 100, 110)
            })
            .count();
        assert!(published <= SLOTS as usize * MAX_PER_SLOT);
        assert!(published > SLOTS as usize * MAX_PER_SLOT / 2);
        assert!(data.keys() <= SLOTS as usize);
        let round = RefreshRound::of(&key("s0"), "at");
        assert!(
            publish(&data, &round, &failed, 110, 120),
            "lapsed entries make room"
        );
    }

    #[test]
    fn a_slot_that_does_not_decode_is_empty_and_rewritten() {
        let data = InMemory::default();
        let round = RefreshRound::of(&key("a"), "at-1");
        data.set(&round.slot(), b"\xff not json", None).unwrap();
        assert_eq!(read(&data, &round, 100), None);
        assert!(publish(&data, &round, &RefreshOutcome::Ended, 100, 110));
        assert_eq!(read(&data, &round, 101), Some(RefreshOutcome::Ended));
    }
}
