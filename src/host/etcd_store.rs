//! The etcd session store's glue: runs the core's etcd operations
//! ([`crate::session::etcd::ops`]) as callouts while the request waits, with
//! failover between clusters, authentication, and the per-worker cache.
//!
//! Store writes of a `Forward` or `Respond` step are performed here, one after
//! the other, before the step itself: the next request, on any replica, must
//! find what this one wrote.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};

use proxy_wasm::types::Action;

use super::filter::{Filter, Waiting};
use super::provider_fetch;
use crate::flow::{self, CalloutOutcome, Step};
use crate::session::etcd::api::{self, EtcdRequest};
use crate::session::etcd::config::EtcdConfig;
use crate::session::etcd::ops::{self, Keys, Op, Outcome, Progress, Record};
use crate::session::etcd::transport::{self, Endpoints, Verdict};
use crate::session::etcd::unavailable;
use crate::session::shared_store::Changes;
use crate::session::writes::StoreWrite;
use crate::session::SessionKey;

/// Sessions a worker's cache holds at most.
const CACHE_LIMIT: usize = 10_000;

/// Per VM (worker): configuration, the auth token, the cache.
pub struct EtcdShared {
    pub config: EtcdConfig,
    keys: Keys,
    idle_timeout: u64,
    token: RefCell<Option<String>>,
    cache: RefCell<BTreeMap<SessionKey, (Record, u64)>>,
    rotation: Cell<usize>,
}

impl EtcdShared {
    pub fn new(config: &crate::config::Config) -> Option<EtcdShared> {
        let etcd = config.session.etcd.clone()?;
        Some(EtcdShared {
            keys: Keys {
                prefix: etcd.key_prefix.clone(),
                issuer: config.issuer.clone(),
            },
            config: etcd,
            idle_timeout: config.session.idle_timeout,
            token: RefCell::new(None),
            cache: RefCell::new(BTreeMap::new()),
            rotation: Cell::new(rand_core::RngCore::next_u32(&mut rand_core::OsRng) as usize),
        })
    }

    fn cached(&self, key: &SessionKey, now: u64) -> Option<Record> {
        let ttl = self.config.cache_ttl;
        let cache = self.cache.borrow();
        let (record, read_at) = cache.get(key)?;
        (ttl > 0 && now < read_at.saturating_add(ttl)).then(|| record.clone())
    }

    fn remember(&self, key: &SessionKey, record: &Record, now: u64) {
        let ttl = self.config.cache_ttl;
        if ttl == 0 {
            return;
        }
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (_, read_at)| now < read_at.saturating_add(ttl));
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key.clone(), (record.clone(), now));
    }

    fn forget(&self, key: &SessionKey) {
        self.cache.borrow_mut().remove(key);
    }
}

/// What the request waits for.
enum Job {
    Load(SessionKey),
    Claim,
    RecordOnce,
    EndSessions,
    /// Recording a single-use value, or what it was for, failed: forget the
    /// value, then answer 503 (a page or JSON) whatever happens.
    Unrecord {
        page: bool,
    },
    /// Store writes, then `then` (a `Forward` or `Respond` without writes).
    Writes {
        pending: VecDeque<StoreWrite>,
        critical: bool,
        /// The write in flight creates a session (for the metrics).
        creates: bool,
        then: Box<Step>,
    },
}

/// One operation in flight, across endpoints and authentication.
struct Call {
    op: Op,
    request: EtcdRequest,
    endpoints: Endpoints,
    /// The request in flight is the authentication, `request` waits.
    authenticating: bool,
    reauthenticated: bool,
}

/// Per request.
#[derive(Default)]
pub struct PerRequest {
    loaded: Option<(SessionKey, Record)>,
    /// The lease under which this request recorded, or may have recorded, a
    /// single-use value in etcd.
    recorded: Option<i64>,
    wants_page: bool,
    job: Option<Job>,
    call: Option<Call>,
}

pub enum Intercept {
    /// Waiting for etcd.
    Wait(Action),
    /// Perform this step instead.
    Again(Step),
    /// Not an etcd matter: perform the step as usual.
    Pass(Step),
}

impl Filter {
    /// Called with the request before the flow sees it.
    pub(super) fn etcd_note_request(&mut self, request: &flow::RequestHead) {
        if self.shared.etcd.is_some() {
            self.etcd.wants_page = unavailable::wants_page(
                &self.shared.config,
                &request.method,
                &request.target,
                &request.headers,
            );
        }
    }

    pub(super) fn etcd_intercept(&mut self, step: Step) -> Intercept {
        let Some(etcd) = self.shared.etcd.as_ref() else {
            return Intercept::Pass(step);
        };
        let now = super::now(self);
        let op = match step {
            Step::LoadSession { key } => {
                if let Some(record) = etcd.cached(&key, now) {
                    let session = record.session.clone();
                    self.etcd.loaded = Some((key, record));
                    return Intercept::Again(
                        self.with_context(|flow, ctx| flow.handle_session(ctx, Some(session))),
                    );
                }
                self.etcd.job = Some(Job::Load(key.clone()));
                Op::Load { key }
            }
            Step::ClaimRefresh {
                key,
                until,
                access_token,
            } => {
                self.etcd.job = Some(Job::Claim);
                Op::Claim {
                    key,
                    ttl: until.saturating_sub(now).max(1),
                    access_token,
                    lease: None,
                }
            }
            // With sessions shared by the fleet, so is the single-use ledger: a
            // login state or logout token used at one replica is used at all.
            Step::RecordOnce { key, value, until } => {
                self.etcd.job = Some(Job::RecordOnce);
                Op::RecordOnce {
                    key: etcd.keys.once(&key, &value),
                    ttl: until.saturating_sub(now).max(1),
                    lease: None,
                }
            }
            Step::EndSessions { entries } => {
                self.etcd.job = Some(Job::EndSessions);
                Op::EndSessions {
                    entries,
                    deleting: None,
                    ended: 0,
                    rounds: 0,
                }
            }
            Step::Forward(mut forward) if !forward.writes.is_empty() => {
                let pending = std::mem::take(&mut forward.writes).into();
                return self.etcd_next_write(pending, Box::new(Step::Forward(forward)));
            }
            Step::Respond(mut respond) if !respond.writes.is_empty() => {
                let pending = std::mem::take(&mut respond.writes).into();
                return self.etcd_next_write(pending, Box::new(Step::Respond(respond)));
            }
            other => return Intercept::Pass(other),
        };
        self.etcd_start(op)
    }

    /// Starts the next write that needs etcd, or performs `then`.
    fn etcd_next_write(&mut self, mut pending: VecDeque<StoreWrite>, then: Box<Step>) -> Intercept {
        let Some(interval) = self
            .shared
            .etcd
            .as_ref()
            .map(|e| e.config.lease_touch_interval)
        else {
            return Intercept::Again(*then);
        };
        while let Some(write) = pending.pop_front() {
            let Some(planned) = ops::plan_write(write, self.etcd.loaded.as_ref(), interval) else {
                continue;
            };
            self.etcd.job = Some(Job::Writes {
                pending,
                critical: planned.critical,
                creates: matches!(planned.op, Op::Create { .. }),
                then,
            });
            return self.etcd_start(planned.op);
        }
        Intercept::Again(*then)
    }

    fn etcd_start(&mut self, op: Op) -> Intercept {
        let shared = self.shared.clone();
        let Some(etcd) = shared.etcd.as_ref() else {
            return self.etcd_failed("no etcd store");
        };
        let now = super::now(self);
        if let Some(key) = op.writes_key() {
            etcd.forget(key);
        }
        let request = op.start(&etcd.keys, now, etcd.idle_timeout);
        let start = etcd.rotation.get().wrapping_add(1);
        etcd.rotation.set(start);
        let call = Call {
            op,
            request,
            endpoints: Endpoints::new(etcd.config.clusters.len(), start),
            authenticating: false,
            reauthenticated: false,
        };
        self.etcd_send(call)
    }

    /// Sends the call's request (after authenticating when needed) to the next
    /// endpoint; when none is left, the operation failed.
    fn etcd_send(&mut self, mut call: Call) -> Intercept {
        let shared = self.shared.clone();
        let Some(etcd) = shared.etcd.as_ref() else {
            return self.etcd_failed("no etcd store");
        };
        let token = etcd.token.borrow().clone();
        let request = match (&etcd.config.credentials, &token) {
            (Some(credentials), None) => {
                call.authenticating = true;
                api::authenticate(&credentials.username, credentials.password.expose())
            }
            _ => {
                call.authenticating = false;
                call.request.clone()
            }
        };
        while let Some(index) = call.endpoints.next_index() {
            let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
            if let (Some(token), false) = (&token, call.authenticating) {
                headers.push(("authorization".to_string(), token.clone()));
            }
            let callout = flow::Callout {
                cluster: etcd.config.clusters[index].clone(),
                // TLS to etcd comes from the Envoy cluster's transport socket.
                scheme: "http".to_string(),
                method: "POST",
                authority: etcd.config.authority.clone(),
                path: request.path.to_string(),
                headers,
                body: request.body.clone(),
                timeout_ms: etcd.config.timeout_ms,
            };
            if let Ok(token) = provider_fetch::dispatch(self, self.shared.engine, &callout) {
                self.waiting = Waiting::Etcd(token);
                self.etcd.call = Some(call);
                return Intercept::Wait(self.pause());
            }
        }
        self.etcd_failed("no etcd endpoint answered")
    }

    /// A callout to etcd ended. `None`: still waiting.
    pub(super) fn etcd_on_response(&mut self, outcome: CalloutOutcome) -> Option<Step> {
        let shared = self.shared.clone();
        let etcd = shared.etcd.as_ref()?;
        let mut call = self.etcd.call.take()?;
        let body = match transport::judge(outcome) {
            Verdict::Answer(body) => body,
            Verdict::TryNext(reason) => {
                log::warn!("etcd call failed ({reason}); trying the next endpoint");
                return self.etcd_resend(call);
            }
            Verdict::Reauthenticate
                if !call.reauthenticated && etcd.config.credentials.is_some() =>
            {
                *etcd.token.borrow_mut() = None;
                call.reauthenticated = true;
                call.endpoints = Endpoints::new(etcd.config.clusters.len(), 0);
                return self.etcd_resend(call);
            }
            Verdict::Reauthenticate => {
                let failed = self.etcd_failed("etcd refused our credentials");
                return waiting_or(failed);
            }
            Verdict::Refused(reason) => return waiting_or(self.etcd_failed(&reason)),
        };
        if call.authenticating {
            match api::parse::<api::AuthenticateResponse>(&body) {
                Ok(auth) => *etcd.token.borrow_mut() = Some(auth.token),
                Err(reason) => return waiting_or(self.etcd_failed(&reason)),
            }
            call.endpoints = Endpoints::new(etcd.config.clusters.len(), 0);
            return self.etcd_resend(call);
        }
        let progress = call.op.advance(&etcd.keys, &body);
        if let Op::RecordOnce {
            lease: Some(lease), ..
        } = call.op
        {
            // From here on the value may be recorded, whatever answer comes.
            self.etcd.recorded = Some(lease);
        }
        match progress {
            Ok(Progress::Send(request)) => {
                call.request = request;
                call.endpoints = Endpoints::new(etcd.config.clusters.len(), etcd.rotation.get());
                self.etcd_resend(call)
            }
            Ok(Progress::Done(outcome)) => waiting_or(self.etcd_done(outcome)),
            Err(reason) => waiting_or(self.etcd_failed(&reason)),
        }
    }

    fn etcd_resend(&mut self, call: Call) -> Option<Step> {
        let sent = self.etcd_send(call);
        waiting_or(sent)
    }

    fn etcd_done(&mut self, outcome: Outcome) -> Intercept {
        let now = super::now(self);
        match (self.etcd.job.take(), outcome) {
            (Some(Job::Load(key)), Outcome::Loaded(record)) => {
                let session = record.as_ref().map(|r| r.session.clone());
                if let (Some(record), Some(etcd)) = (&record, self.shared.etcd.as_ref()) {
                    etcd.remember(&key, record, now);
                }
                self.etcd.loaded = record.map(|r| (key, *r));
                Intercept::Again(self.with_context(|flow, ctx| flow.handle_session(ctx, session)))
            }
            (Some(Job::Claim), Outcome::Claimed(claimed)) => Intercept::Again(
                self.with_context(|flow, ctx| flow.handle_refresh_claimed(ctx, claimed)),
            ),
            (Some(Job::RecordOnce), Outcome::Recorded(first_use)) => {
                if !first_use {
                    self.etcd.recorded = None; // the key is another request's
                }
                Intercept::Again(
                    self.with_context(|flow, ctx| flow.handle_once_recorded(ctx, first_use)),
                )
            }
            (Some(Job::Unrecord { page }), Outcome::Revoked) => {
                Intercept::Again(unavailable_step(page))
            }
            (Some(Job::EndSessions), Outcome::Ended(count)) => {
                self.shared.metrics.backchannel_ended(count);
                Intercept::Again(
                    self.with_context(|flow, ctx| flow.handle_sessions_ended(ctx, count)),
                )
            }
            (
                Some(Job::Writes {
                    pending,
                    then,
                    creates,
                    ..
                }),
                Outcome::Written,
            ) => {
                if creates {
                    self.shared.metrics.record(&Changes {
                        created: 1,
                        ..Changes::default()
                    });
                }
                self.etcd_next_write(pending, then)
            }
            _ => self.etcd_failed("an etcd answer came for another question"),
        }
    }

    /// The operation failed on every endpoint: fail closed, except for writes
    /// that only save work (a touch, a lock release), which the request
    /// survives.
    fn etcd_failed(&mut self, reason: &str) -> Intercept {
        self.shared.metrics.store_unavailable();
        log::error!(
            "oidc-filter: event=store_unavailable store=etcd{} detail={reason:?}",
            self.request_id_field()
        );
        let answer = |page| Intercept::Again(unavailable_step(page));
        match self.etcd.job.take() {
            Some(Job::Claim) => Intercept::Again(
                self.with_context(|flow, ctx| flow.handle_refresh_claimed(ctx, false)),
            ),
            Some(Job::Writes {
                pending,
                critical: false,
                then,
                ..
            }) => self.etcd_next_write(pending, then),
            Some(Job::RecordOnce) => {
                let page = self.etcd.wants_page;
                self.etcd_unrecord_then_answer(page)
            }
            Some(Job::EndSessions) => self.etcd_unrecord_then_answer(false),
            Some(Job::Unrecord { page }) => answer(page),
            _ => answer(self.etcd.wants_page),
        }
    }

    /// Revokes the lease of the single-use value this request recorded, if
    /// any, then answers 503.
    fn etcd_unrecord_then_answer(&mut self, page: bool) -> Intercept {
        match self.etcd.recorded.take() {
            Some(lease) => {
                self.etcd.job = Some(Job::Unrecord { page });
                self.etcd_start(Op::Unrecord { lease })
            }
            None => Intercept::Again(unavailable_step(page)),
        }
    }
}

/// The 503 that says the store cannot answer now (a page, or JSON).
fn unavailable_step(page: bool) -> Step {
    Step::Respond(flow::Respond {
        response: unavailable::response(page),
        writes: Vec::new(),
    })
}

/// `None` while a callout is in flight, else the step to perform.
fn waiting_or(next: Intercept) -> Option<Step> {
    match next {
        Intercept::Wait(_) => None,
        Intercept::Again(step) | Intercept::Pass(step) => Some(step),
    }
}
