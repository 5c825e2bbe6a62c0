//! Requests parked until their session's refresh ends (see
//! [`crate::session::refresh_outcome`]), woken by the root context's tick.
//!
//! Why the tick: it is the one timer every proxy-wasm host gives, so this works
//! the same on Envoy and on Kong's engine (which has no `on_queue_ready`, and
//! traps on a second `set_tick_period`, so the period is set once, short). A
//! shared queue would wake one VM only: each queue name has a single receiver
//! per process, and followers wait on every worker. The poll costs one
//! shared-data read per awaited refresh per tick, and only while requests wait.
//!
//! Why a request whose client went away is harmless: the list holds only a
//! weak reference to the request's filter. When the client goes away the host
//! deletes the request's context (`proxy_on_delete`) and the SDK drops the
//! filter with it, so the reference no longer upgrades and the entry is
//! dropped without a host call. A context id is used only after the upgrade
//! succeeded, while the host still holds that context; should the host have
//! let it go anyway, `set_effective_context` refuses the unknown id and the
//! entry is dropped too. The list is bounded per VM and every entry has a
//! deadline; a request that finds it full is answered at once, as before
//! there was waiting (503 with `Retry-After`).

use std::cell::RefCell;
use std::rc::Weak;

use proxy_wasm::hostcalls;

use super::filter::Filter;
use super::store::HostSharedData;
use crate::session::refresh_outcome::{self, RefreshOutcome, RefreshRound};

/// Requests parked at once on one VM (one worker). Each holds a paused stream
/// and its filter, a few KB; beyond this, requests are asked to retry.
const MAX_WAITERS: usize = 1024;

struct Waiter {
    context_id: u32,
    filter: Weak<RefCell<Filter>>,
    round: RefreshRound,
    until: u64,
}

#[derive(Default)]
pub struct Waiters {
    entries: RefCell<Vec<Waiter>>,
}

impl Waiters {
    /// Parks the request of `context_id` until `round` ends or `until`.
    /// `false` when the list is full.
    pub fn park(
        &self,
        context_id: u32,
        filter: Weak<RefCell<Filter>>,
        round: RefreshRound,
        until: u64,
    ) -> bool {
        let mut entries = self.entries.borrow_mut();
        entries.retain(|w| w.filter.strong_count() > 0);
        if entries.len() >= MAX_WAITERS {
            log::warn!("too many requests waiting on refreshes: asking this one to retry");
            return false;
        }
        entries.push(Waiter {
            context_id,
            filter,
            round,
            until,
        });
        true
    }

    /// Wakes every parked request whose refresh ended or whose wait ran out,
    /// then gives the effective context back to the root (`root_context_id`),
    /// whose tick this is.
    pub fn wake_ready(&self, data: &HostSharedData, root_context_id: u32, now: u64) {
        let ready = self.take_ready(data, now);
        if ready.is_empty() {
            return;
        }
        for (context_id, filter, outcome) in ready {
            let Some(filter) = filter.upgrade() else {
                continue; // the client went away
            };
            if hostcalls::set_effective_context(context_id).is_err() {
                continue; // the host no longer knows the request
            }
            // Nothing else holds the filter now: the host defers what a wake
            // triggers (resuming the stream, a local reply) until this tick returns.
            let woken = match filter.try_borrow_mut() {
                Ok(mut filter) => {
                    filter.wake(outcome);
                    true
                }
                Err(_) => false,
            };
            if !woken {
                log::error!("a waiting request was busy when its refresh ended");
            }
        }
        if let Err(status) = hostcalls::set_effective_context(root_context_id) {
            log::error!("the root context could not be made effective again: {status:?}");
        }
    }

    /// Removes the entries that are due, with the outcome each gets (`None`:
    /// the wait ran out). Reads each awaited round once.
    fn take_ready(
        &self,
        data: &HostSharedData,
        now: u64,
    ) -> Vec<(u32, Weak<RefCell<Filter>>, Option<RefreshOutcome>)> {
        let mut entries = self.entries.borrow_mut();
        if entries.is_empty() {
            return Vec::new();
        }
        let mut known: Vec<(RefreshRound, Option<RefreshOutcome>)> = Vec::new();
        let mut ready = Vec::new();
        let mut waiting = Vec::with_capacity(entries.len());
        for waiter in entries.drain(..) {
            if waiter.filter.strong_count() == 0 {
                continue;
            }
            let outcome = match known.iter().find(|(round, _)| *round == waiter.round) {
                Some((_, outcome)) => outcome.clone(),
                None => {
                    let outcome = refresh_outcome::read(data, &waiter.round, now);
                    known.push((waiter.round.clone(), outcome.clone()));
                    outcome
                }
            };
            if outcome.is_some() || now >= waiter.until {
                ready.push((waiter.context_id, waiter.filter, outcome));
            } else {
                waiting.push(waiter);
            }
        }
        *entries = waiting;
        ready
    }
}
