//! The HTTP context: runs one request's [`RequestFlow`] and performs its steps.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::provider_fetch;
use super::root::Shared;
use super::store;
use crate::flow::{self, CalloutOutcome, RequestFlow, RequestHead, Step};
use crate::http::pages;
use crate::provider::Provider;

/// What a callout in flight is for.
enum Waiting {
    Nothing,
    Flow(u32),
    Jwks(u32),
}

pub struct Filter {
    shared: Rc<Shared>,
    flow: RequestFlow,
    waiting: Waiting,
    /// Once paused, the request continues through `resume_http_request`.
    paused: bool,
    /// Headers the flow wants on the upstream's response.
    response_headers: Vec<(String, String)>,
}

impl Filter {
    pub fn new(shared: Rc<Shared>) -> Filter {
        Filter {
            shared,
            flow: RequestFlow::new(),
            waiting: Waiting::Nothing,
            paused: false,
            response_headers: Vec::new(),
        }
    }

    fn read_request(&self) -> RequestHead {
        let mut head = RequestHead::default();
        for (name, value) in self.get_http_request_headers_bytes() {
            match name.as_str() {
                ":method" => head.method = String::from_utf8_lossy(&value).into_owned(),
                ":path" => head.target = value,
                _ if name.starts_with(':') => {}
                _ => head.headers.push((name, value)),
            }
        }
        head
    }

    /// Runs `event` against the flow with a fresh context.
    fn with_context(
        &mut self,
        event: impl FnOnce(&mut RequestFlow, &mut flow::Context<'_, rand_core::OsRng>) -> Step,
    ) -> Step {
        let now = super::now(self);
        let provider: Option<Rc<Provider>> = self.shared.provider.borrow_mut().current(now);
        let keys = match &self.shared.config.sealing_keys {
            Some(keys) => keys.clone(),
            None => match store::process_sealing_key() {
                Some(keys) => keys,
                None => return internal_error(),
            },
        };
        let mut rng = rand_core::OsRng;
        let mut ctx = flow::Context {
            config: &self.shared.config,
            provider: provider.as_deref(),
            keys: &keys,
            now,
            rng: &mut rng,
        };
        event(&mut self.flow, &mut ctx)
    }

    /// Performs steps until the flow forwards, answers, or waits for a callout.
    fn drive(&mut self, mut step: Step) -> Action {
        loop {
            step = match step {
                Step::LoadSession { key } => {
                    let (value, _) = store::get(&key);
                    self.with_context(|flow, ctx| flow.handle_session(ctx, value.as_deref()))
                }
                Step::LoadDenyList { key } => {
                    let (value, _) = store::get(&key);
                    self.with_context(|flow, ctx| flow.handle_deny_list(ctx, value.as_deref()))
                }
                Step::RecordLogin {
                    key,
                    issued_at,
                    state,
                } => {
                    let first_use = store::record_login(&key, issued_at, &state);
                    self.with_context(|flow, ctx| flow.handle_login_recorded(ctx, first_use))
                }
                Step::Callout(callout) => match provider_fetch::dispatch(self, &callout) {
                    Ok(token) => {
                        self.waiting = Waiting::Flow(token);
                        return self.pause();
                    }
                    Err(status) => {
                        let outcome =
                            CalloutOutcome::Failed(format!("callout not sent: {status:?}"));
                        self.with_context(|flow, ctx| flow.handle_callout_response(ctx, outcome))
                    }
                },
                Step::RefetchJwks => {
                    let now = super::now(self);
                    let provider = self.shared.provider.borrow_mut().current(now);
                    let sent = match provider {
                        Some(provider) if provider_fetch::claim_jwks_refetch(now) => {
                            let callout = provider_fetch::jwks_callout(
                                &self.shared.config,
                                &provider.metadata,
                            );
                            provider_fetch::dispatch(self, &callout).ok()
                        }
                        _ => None,
                    };
                    match sent {
                        Some(token) => {
                            self.waiting = Waiting::Jwks(token);
                            return self.pause();
                        }
                        None => self.with_context(|flow, ctx| flow.handle_jwks_refreshed(ctx)),
                    }
                }
                Step::Forward(forward) => {
                    store::apply(forward.writes);
                    for name in &forward.remove_headers {
                        self.set_http_request_header(name, None);
                    }
                    for (name, value) in &forward.set_headers {
                        self.set_http_request_header(name, Some(value));
                    }
                    match &forward.cookie {
                        Some(Some(cookie)) => {
                            self.set_http_request_header_bytes("cookie", Some(cookie))
                        }
                        Some(None) => self.set_http_request_header("cookie", None),
                        None => {}
                    }
                    self.response_headers = forward.response_headers;
                    if self.paused {
                        self.resume_http_request();
                    }
                    return Action::Continue;
                }
                Step::Respond(respond) => {
                    store::apply(respond.writes);
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

    fn pause(&mut self) -> Action {
        self.paused = true;
        Action::Pause
    }
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
        let outcome = provider_fetch::read_response(self, num_headers, body_size);
        let step = match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
            Waiting::Flow(expected) if expected == token => {
                self.with_context(|flow, ctx| flow.handle_callout_response(ctx, outcome))
            }
            Waiting::Jwks(expected) if expected == token => {
                let now = super::now(self);
                let stored = provider_fetch::expect_ok(outcome, "JWKS refetch")
                    .and_then(|body| provider_fetch::store_refetched_jwks(now, &body));
                match stored {
                    Ok(()) => self.shared.provider.borrow_mut().reload(now),
                    Err(reason) => log::warn!("keys could not be refetched: {reason}"),
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
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.add_http_response_header(&name, &value);
        }
        Action::Continue
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let request = self.read_request();
        let step = self.with_context(|flow, ctx| flow.handle_request(ctx, request));
        self.drive(step)
    }
}
