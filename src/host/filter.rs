//! The HTTP context: runs one request's [`RequestFlow`] and performs its steps.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::etcd_store;
use super::metrics::Fetch;
use super::provider_fetch;
use super::root::Shared;
use crate::config::SessionStoreKind;
use crate::flow::event::{Events, Recorded};
use crate::flow::{self, CalloutOutcome, RequestFlow, RequestHead, Step};
use crate::http::{cache_control, framing, pages};
use crate::provider::Provider;
use crate::session::deny_list::DenyListRead;
use crate::session::refresh_outcome::{self, RefreshOutcome, RefreshRound};
use crate::session::writes::StoreWrite;
use crate::session::{deny_list, refresh_lease, shared_store};

/// What a callout in flight is for.
pub(super) enum Waiting {
    Nothing,
    Flow(u32),
    Jwks(u32, String),
    Etcd(u32),
}

pub struct Filter {
    pub(super) shared: Rc<Shared>,
    /// The host's id of this request's context, and this filter as the
    /// waiter list holds it (see [`super::waiters`]).
    context_id: u32,
    me: Weak<RefCell<Filter>>,
    /// Driven from the root context's tick, which cannot receive a callout's
    /// answer for this request.
    waking: bool,
    flow: RequestFlow,
    pub(super) waiting: Waiting,
    /// The etcd store's state for this request (see [`super::etcd_store`]).
    pub(super) etcd: etcd_store::PerRequest,
    /// Paused and not yet resumed: the request continues through
    /// `resume_http_request`, and its body is held until then (also after a
    /// local reply).
    paused: bool,
    /// Headers the flow wants on the upstream's response.
    response_headers: Vec<(String, String)>,
    /// The request has no body (its headers ended the stream).
    headers_only: bool,
    /// Waiting for the whole request body, up to this size.
    reading_body: Option<usize>,
    /// Envoy's `x-request-id`, for the log lines of this request's events.
    request_id: Option<Vec<u8>>,
}

impl Filter {
    /// The filter of a new request, owned through the handle the SDK gets.
    pub fn handle(shared: Rc<Shared>, context_id: u32) -> FilterHandle {
        FilterHandle(Rc::new_cyclic(|me| {
            RefCell::new(Filter::new(shared, context_id, me.clone()))
        }))
    }

    fn new(shared: Rc<Shared>, context_id: u32, me: Weak<RefCell<Filter>>) -> Filter {
        Filter {
            shared,
            context_id,
            me,
            waking: false,
            flow: RequestFlow::new(),
            waiting: Waiting::Nothing,
            etcd: Default::default(),
            paused: false,
            response_headers: Vec::new(),
            headers_only: false,
            reading_body: None,
            request_id: None,
        }
    }

    fn read_request(&self) -> RequestHead {
        let mut head = RequestHead::default();
        for (mut name, value) in self.get_http_request_headers_bytes() {
            // ngx_wasm_module passes HTTP/1.1 names as the client spelled them.
            name.make_ascii_lowercase();
            match name.as_str() {
                ":method" => head.method = String::from_utf8_lossy(&value).into_owned(),
                ":path" => head.target = value,
                ":authority" => head.authority = String::from_utf8(value).ok(),
                _ if name.starts_with(':') => {}
                _ => head.headers.push((name, value)),
            }
        }
        head
    }

    /// Runs `event` against the flow with a fresh context.
    pub(super) fn with_context(
        &mut self,
        event: impl FnOnce(&mut RequestFlow, &mut flow::Context<'_, rand_core::OsRng>) -> Step,
    ) -> Step {
        let now = super::now(self);
        let shared = self.shared.clone();
        let provider: Option<Rc<Provider>> = shared.provider.borrow_mut().current(now);
        let process_keys;
        let keys = match &shared.config.sealing_keys {
            Some(keys) => keys,
            None => match shared.process_keys.current() {
                Some(keys) => {
                    process_keys = keys;
                    &*process_keys
                }
                None => return internal_error(),
            },
        };
        let mut rng = rand_core::OsRng;
        let events = Events::default();
        // Events never nest, so the caches are free; should one ever be
        // borrowed, this event goes without rather than panic.
        let mut uncached = flow::Caches::default();
        let mut borrowed = shared.caches.try_borrow_mut();
        let caches = match &mut borrowed {
            Ok(caches) => &mut **caches,
            Err(_) => &mut uncached,
        };
        let mut ctx = flow::Context {
            config: &shared.config,
            provider: provider.as_deref(),
            keys,
            now,
            rng: &mut rng,
            events: &events,
            caches,
        };
        let step = event(&mut self.flow, &mut ctx);
        self.report(events.take());
        step
    }

    /// ` request_id=…` for this request's log lines.
    pub(super) fn request_id_field(&self) -> String {
        crate::flow::event::request_id_field(self.request_id.as_deref())
    }

    /// Counts the flow's events and logs a line for each.
    fn report(&self, recorded: Vec<Recorded>) {
        for recorded in recorded {
            let event = &recorded.event;
            self.shared.metrics.count(event.metric());
            let level = if event.is_warning() {
                log::Level::Warn
            } else if event.is_routine() {
                log::Level::Debug
            } else {
                log::Level::Info
            };
            if log::log_enabled!(level) {
                log::log!(level, "{}", recorded.log_line(self.request_id.as_deref()));
            }
        }
    }

    /// The refresh this request waited on ended (`None`: the wait ran out).
    /// Called from the root context's tick with this request's context made
    /// effective.
    pub fn wake(&mut self, outcome: Option<RefreshOutcome>) {
        self.waking = true;
        let step = self.with_context(|flow, ctx| flow.handle_refresh_outcome(ctx, outcome));
        self.drive(step);
        self.waking = false;
    }

    /// Performs steps until the flow forwards, answers, or waits for a callout.
    fn drive(&mut self, mut step: Step) -> Action {
        loop {
            if self.waking && needs_own_event(&step) {
                // The flow never asks this after a wait; should it, answer
                // rather than leave the request hanging.
                log::error!("a woken request cannot wait for another event: answering 503");
                step = Step::Respond(flow::Respond {
                    response: pages::retry_soon_page(
                        "Your session is being renewed. This page reloads in a moment.",
                    ),
                    writes: Vec::new(),
                });
            }
            step = match self.etcd_intercept(step) {
                etcd_store::Intercept::Wait(action) => return action,
                etcd_store::Intercept::Again(next) => {
                    step = next;
                    continue;
                }
                etcd_store::Intercept::Pass(step) => step,
            };
            step = match step {
                Step::AwaitRefresh { round, until } => {
                    let now = super::now(self);
                    let outcome = refresh_outcome::read(&self.shared.store.data, &round, now);
                    // Where the tick cannot wake it, the request is not parked: it
                    // gets the answer of a wait that ran out (retry in a second).
                    let parked = outcome.is_none()
                        && now < until
                        && self.shared.engine.wakes_requests_from_tick()
                        && self
                            .shared
                            .waiters
                            .park(self.context_id, self.me.clone(), round, until);
                    if parked {
                        return self.pause();
                    }
                    self.with_context(|flow, ctx| flow.handle_refresh_outcome(ctx, outcome))
                }
                Step::PublishRefresh {
                    round,
                    outcome,
                    until,
                    then,
                } => {
                    let now = super::now(self);
                    refresh_outcome::publish(&self.shared.store.data, &round, &outcome, now, until);
                    *then
                }
                Step::LoadSession { key } => {
                    let value = self.shared.store.load(&key);
                    self.with_context(|flow, ctx| flow.handle_session(ctx, value))
                }
                Step::LoadCache { key } => {
                    let (value, _) = self.shared.store.data.read(&key);
                    self.with_context(|flow, ctx| flow.handle_cached(ctx, value.as_deref()))
                }
                Step::StoreCache { key, value, then } => {
                    if let Err(status) = self.shared.store.data.write(&key, &value, None) {
                        log::warn!("cache write failed: {status:?}");
                    }
                    *then
                }
                Step::LoadDenyList { key, unless_at } => {
                    // The generation first: a list read after it is at least that new.
                    let data = &self.shared.store.data;
                    let generation = deny_list::generation(data);
                    if unless_at == Some(generation) {
                        let read = DenyListRead::Unchanged(generation);
                        self.with_context(|flow, ctx| flow.handle_deny_list(ctx, read))
                    } else {
                        let (value, _) = data.read(&key);
                        let read = DenyListRead::Read {
                            generation,
                            list: value.as_deref(),
                        };
                        self.with_context(|flow, ctx| flow.handle_deny_list(ctx, read))
                    }
                }
                Step::RecordOnce { key, value, until } => {
                    let now = super::now(self);
                    let first_use = shared_store::record_once(
                        &self.shared.store.data,
                        &key,
                        &value,
                        until,
                        now,
                    );
                    self.with_context(|flow, ctx| flow.handle_once_recorded(ctx, first_use))
                }
                Step::ClaimRefresh {
                    key,
                    until,
                    access_token,
                } => {
                    let now = super::now(self);
                    let claimed = if self.cookie_sessions() {
                        refresh_lease::claim(&self.shared.store.data, &key, now, until)
                    } else {
                        self.shared
                            .store
                            .claim_refresh(&key, now, until, &access_token)
                    };
                    if claimed {
                        let round = RefreshRound::of(&key, &access_token);
                        refresh_outcome::withdraw(&self.shared.store.data, &round, now);
                    }
                    self.with_context(|flow, ctx| flow.handle_refresh_claimed(ctx, claimed))
                }
                Step::EndSessions { entries } => {
                    let ended = if self.cookie_sessions() {
                        // Cookies cannot be deleted from here: deny them on this replica.
                        let now = super::now(self);
                        let until = now + self.shared.config.session.absolute_timeout;
                        if deny_list::record(&self.shared.store.data, &entries, until, now) {
                            entries.len()
                        } else {
                            0
                        }
                    } else {
                        self.shared.store.end_sessions(&entries)
                    };
                    self.shared.metrics.backchannel_ended(ended);
                    self.with_context(|flow, ctx| flow.handle_sessions_ended(ctx, ended))
                }
                Step::DenyCookieSession { entries, until } => {
                    let now = super::now(self);
                    let denied = if deny_list::record(&self.shared.store.data, &entries, until, now)
                    {
                        entries.len()
                    } else {
                        0
                    };
                    self.with_context(|flow, ctx| flow.handle_sessions_ended(ctx, denied))
                }
                Step::ReadBody { max_bytes } => {
                    if self.headers_only {
                        self.with_context(|flow, ctx| flow.handle_body(ctx, Some(&[])))
                    } else if self.shared.engine.body_follows_headers() {
                        // The body comes only once the headers continue; the
                        // flow decides (and answers) from the body callback.
                        self.reading_body = Some(max_bytes);
                        if self.paused {
                            self.paused = false;
                            self.resume_http_request();
                        }
                        return Action::Continue;
                    } else {
                        self.reading_body = Some(max_bytes);
                        return self.pause();
                    }
                }
                Step::Callout(callout) => {
                    match provider_fetch::dispatch(self, self.shared.engine, &callout) {
                        Ok(token) => {
                            self.waiting = Waiting::Flow(token);
                            return self.pause();
                        }
                        Err(status) => {
                            let outcome =
                                CalloutOutcome::Failed(format!("callout not sent: {status:?}"));
                            self.with_context(|flow, ctx| {
                                flow.handle_callout_response(ctx, outcome)
                            })
                        }
                    }
                }
                Step::RefetchJwks { kid } => {
                    let now = super::now(self);
                    let provider = self.shared.provider.borrow_mut().current(now);
                    let data = &self.shared.store.data;
                    let sent = match provider {
                        Some(provider) if provider_fetch::claim_jwks_refetch(data, &kid, now) => {
                            let callout = provider_fetch::jwks_callout(
                                &self.shared.config,
                                &provider.metadata,
                            );
                            provider_fetch::dispatch(self, self.shared.engine, &callout).ok()
                        }
                        _ => None,
                    };
                    match sent {
                        Some(token) => {
                            self.waiting = Waiting::Jwks(token, kid);
                            return self.pause();
                        }
                        None => self.with_context(|flow, ctx| flow.handle_jwks_refreshed(ctx)),
                    }
                }
                Step::Forward(forward) => {
                    self.apply(forward.writes);
                    for name in &forward.remove_headers {
                        self.remove_request_header(name);
                    }
                    for (name, value) in &forward.set_headers {
                        self.set_request_header(name, value.as_bytes());
                    }
                    match &forward.cookie {
                        Some(Some(cookie)) => self.set_request_header("cookie", cookie),
                        Some(None) => self.remove_request_header("cookie"),
                        None => {}
                    }
                    self.response_headers = forward.response_headers;
                    if self.paused {
                        self.paused = false;
                        self.resume_http_request();
                    }
                    return Action::Continue;
                }
                Step::Respond(respond) => {
                    self.apply(respond.writes);
                    let response = respond.response;
                    let headers: Vec<(&str, &str)> = response
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    self.send_http_response(
                        u32::from(response.status),
                        headers,
                        Some(&response.body),
                    );
                    return Action::Pause;
                }
            };
        }
    }

    /// Store writes a request finishes with. Cookie sessions were written
    /// into cookies already; what is left is a refresh claim to release.
    fn apply(&self, writes: Vec<StoreWrite>) {
        if self.cookie_sessions() {
            for write in writes {
                if let StoreWrite::ReleaseRefresh { key } = write {
                    refresh_lease::release(&self.shared.store.data, &key);
                }
            }
            return;
        }
        let changes = self.shared.store.apply(writes);
        self.shared.metrics.record(&changes);
    }

    /// Where removal leaves the header on its way upstream, its value is
    /// emptied in place instead (the gateway's configuration must drop it).
    fn remove_request_header(&self, name: &str) {
        if self.shared.engine.removal_forwards_header() {
            self.set_http_request_header(name, Some(""));
        } else {
            self.set_http_request_header(name, None);
        }
    }

    /// Replaces every copy of a request header by one with `value`. On
    /// ngx_wasm_module a set on a header the client sent twice clears every
    /// copy, the updated one included; a second set then adds the value.
    fn set_request_header(&self, name: &str, value: &[u8]) {
        self.set_http_request_header_bytes(name, Some(value));
        if self.shared.engine.set_clears_duplicates() {
            self.set_http_request_header_bytes(name, Some(value));
        }
    }

    fn cookie_sessions(&self) -> bool {
        self.shared.config.session.store == SessionStoreKind::Cookie
    }

    pub(super) fn pause(&mut self) -> Action {
        self.paused = true;
        Action::Pause
    }
}

/// Steps answered by a later host event for this very context (a callout's
/// answer, body chunks, a tick's wake-up).
fn needs_own_event(step: &Step) -> bool {
    matches!(
        step,
        Step::Callout(_)
            | Step::RefetchJwks { .. }
            | Step::ReadBody { .. }
            | Step::AwaitRefresh { .. }
    )
}

fn internal_error() -> Step {
    Step::Respond(flow::Respond {
        response: pages::error_page(
            500,
            "Internal error",
            "The login filter could not prepare its keys.",
        ),
        writes: Vec::new(),
    })
}

impl Context for Filter {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let outcome =
            provider_fetch::read_response(self, self.shared.engine, num_headers, body_size);
        let step = match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
            Waiting::Flow(expected) if expected == token => {
                self.with_context(|flow, ctx| flow.handle_callout_response(ctx, outcome))
            }
            Waiting::Etcd(expected) if expected == token => match self.etcd_on_response(outcome) {
                Some(step) => step,
                None => return,
            },
            Waiting::Jwks(expected, kid) if expected == token => {
                let now = super::now(self);
                let data = &self.shared.store.data;
                let stored = provider_fetch::expect_ok(outcome, "JWKS refetch")
                    .and_then(|body| provider_fetch::store_refetched_jwks(data, &kid, now, &body));
                match stored {
                    Ok(()) => {
                        self.shared.metrics.fetched(Fetch::Jwks);
                        self.shared.provider.borrow_mut().reload(now)
                    }
                    Err(reason) => {
                        self.shared.metrics.fetch_failed(Fetch::Jwks);
                        log::warn!("keys could not be refetched: {reason}");
                    }
                }
                self.with_context(|flow, ctx| flow.handle_jwks_refreshed(ctx))
            }
            other => {
                self.waiting = other;
                return;
            }
        };
        self.drive(step);
    }
}

impl HttpContext for Filter {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(max_bytes) = self.reading_body else {
            // With allow_on_headers_stop_iteration, body chunks arrive while a
            // callout is pending; letting one continue would forward the request
            // before the flow decided, so they wait (buffered) until it has.
            return if self.paused {
                Action::Pause
            } else {
                Action::Continue
            };
        };
        if body_size > max_bytes {
            self.reading_body = None;
            let step = self.with_context(|flow, ctx| flow.handle_body(ctx, None));
            return self.drive(step);
        }
        if !end_of_stream {
            // Keep buffering until the whole body is here.
            return Action::Pause;
        }
        self.reading_body = None;
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let step = self.with_context(|flow, ctx| flow.handle_body(ctx, Some(&body)));
        self.drive(step)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let added = std::mem::take(&mut self.response_headers);
        if cache_control::sets_cookie(&added) {
            let upstream: Vec<Vec<u8>> = self
                .get_http_response_headers_bytes()
                .into_iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("cache-control"))
                .map(|(_, value)| value)
                .collect();
            let merged = cache_control::make_private(&upstream);
            self.set_http_response_header("cache-control", Some(&merged));
        }
        for (name, value) in added {
            self.add_http_response_header(&name, &value);
        }
        Action::Continue
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let request = self.read_request();
        self.request_id = request.header("x-request-id").map(<[u8]>::to_vec);
        if let Some(target) = flow::target_for_access_log(&self.shared.config, &request.target) {
            // Not the SDK's setter, which panics where a host refuses to set `:path`.
            let set =
                hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, ":path", Some(&target));
            if let Err(status) = set {
                log::debug!("the callback's query could not be dropped: {status:?}");
            }
        }
        self.headers_only = end_of_stream
            || (self.shared.engine.body_follows_headers()
                && !framing::declares_body(&request.headers));
        self.etcd_note_request(&request);
        let step = self.with_context(|flow, ctx| flow.handle_request(ctx, request));
        self.drive(step)
    }
}

/// What the SDK holds for a request: the filter, shared with the waiter list
/// (which keeps only a weak reference, so the filter goes when the SDK drops
/// this at the end of the request). Events go straight through; the host never
/// delivers one while another is running (it defers what a call triggers to
/// after the call), so the filter is never borrowed twice.
pub struct FilterHandle(Rc<RefCell<Filter>>);

impl Context for FilterHandle {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        self.0
            .borrow_mut()
            .on_http_call_response(token, num_headers, body_size, trailers);
    }
}

impl HttpContext for FilterHandle {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.0
            .borrow_mut()
            .on_http_request_headers(num_headers, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0
            .borrow_mut()
            .on_http_request_body(body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.0
            .borrow_mut()
            .on_http_response_headers(num_headers, end_of_stream)
    }
}
