//! The request flow: what to do with a request, a callback, a token response.
//!
//! A [`RequestFlow`] lives as long as one request. The host calls a `handle_*`
//! method with each event and performs the [`Step`] it gets back; steps that
//! need an answer (a session lookup, a callout, the single-use ledger) are
//! answered by the matching `handle_*` call. The flow never blocks and never
//! assumes an answer comes synchronously, so a store that needs a callout fits.

mod access;
mod backchannel;
mod bearer;
mod callback;
mod cookie_store;
pub mod event;
mod identity;
mod login;
mod logout;
mod refresh;
#[cfg(test)]
mod tests;
mod upstream_identity;

use std::cell::OnceCell;

use rand_core::CryptoRngCore;

use crate::config::{Config, SessionStoreKind};
use crate::crypto::seal::SealingKeys;
pub use crate::http::callout::CalloutOutcome;
use crate::http::cookies;
use crate::http::pages::{self, LocalResponse};
use crate::http::paths::{self, PathError};
use crate::oidc::access_token_cache::AccessTokenCache;
use crate::oidc::token::TokenResponse;
use crate::provider::Provider;
use crate::session::buckets::IndexEntry;
use crate::session::cookie_cache::CookieSessionCache;
use crate::session::deny_list::DenyListRead;
use crate::session::refresh_outcome::{RefreshOutcome, RefreshRound};
use crate::session::writes::StoreWrite;
use crate::session::{Session, SessionId, SessionKey};

/// Everything a handler may consult besides the event itself.
pub struct Context<'a, R: CryptoRngCore> {
    pub config: &'a Config,
    /// `None` until discovery and keys have been fetched.
    pub provider: Option<&'a Provider>,
    pub keys: &'a SealingKeys,
    pub now: u64,
    pub rng: &'a mut R,
    /// What this call decided, for the host's counters and logs.
    pub events: &'a event::Events,
    /// What this VM remembers between requests.
    pub caches: &'a mut Caches,
}

/// What one VM remembers between requests, so that the costly work of a
/// request (a signature, a decryption) is not redone on the next; the host
/// keeps one per VM and lends it to every event. Each cache re-checks on every
/// hit what may have changed since (expiry, keys, revocation).
#[derive(Debug, Default)]
pub struct Caches {
    pub access_tokens: AccessTokenCache,
    pub cookie_sessions: CookieSessionCache,
}

/// The request as the host read it: header values as bytes, since clients
/// control them and need not send UTF-8. What the flow reads from it more than
/// once (the normalized path, the cookies) is parsed on first use and kept:
/// the head does not change once it reached the flow.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    /// The `:path` pseudo-header: path and query.
    pub target: Vec<u8>,
    /// The `:authority` pseudo-header, when sent and UTF-8.
    pub authority: Option<String>,
    /// Every header but pseudo-headers, names lower-case, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    path: OnceCell<Result<String, PathError>>,
    cookies: OnceCell<Vec<(String, String)>>,
}

impl RequestHead {
    pub fn new(
        method: String,
        target: Vec<u8>,
        authority: Option<String>,
        headers: Vec<(String, Vec<u8>)>,
    ) -> RequestHead {
        RequestHead {
            method,
            target,
            authority,
            headers,
            ..RequestHead::default()
        }
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The path of the target, before the query.
    pub fn raw_path(&self) -> &[u8] {
        paths::split_path_query(&self.target).0
    }

    /// The path as rules and public paths compare it (see [`paths::normalize_path`]).
    pub fn normalized_path(&self) -> &Result<String, PathError> {
        self.path
            .get_or_init(|| paths::normalize_path(self.raw_path()))
    }

    /// Every cookie of every `Cookie` header, in order.
    pub fn cookies(&self) -> &[(String, String)] {
        self.cookies
            .get_or_init(|| cookies::parse_cookies(self.cookie_headers()))
    }

    fn cookie_headers(&self) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .map(|(_, v)| v.as_slice())
    }
}

/// What the host must do next.
#[must_use]
#[derive(Debug)]
pub enum Step {
    /// Let the request continue upstream, after these edits.
    Forward(Forward),
    /// Answer locally.
    Respond(Respond),
    /// Read the session stored under `key`, then call [`RequestFlow::handle_session`].
    LoadSession { key: SessionKey },
    /// Cookie sessions only: read the deny-list's generation
    /// ([`crate::session::deny_list::generation`]); unless it is `unless_at`,
    /// read the deny-list of revoked sessions stored under `key` too (see
    /// [`crate::session::deny_list`]). Then call [`RequestFlow::handle_deny_list`].
    LoadDenyList { key: String, unless_at: Option<u64> },
    /// Record `value` as used in the single-use ledger under `key` (see
    /// [`crate::session::once`]), then call [`RequestFlow::handle_once_recorded`].
    RecordOnce {
        key: String,
        value: String,
        /// The value is refused anyway after this: its entry may go then.
        until: u64,
    },
    /// Mark the session as being refreshed until `until`, unless another worker
    /// already is or already has (its access token is no longer `access_token`),
    /// then call [`RequestFlow::handle_refresh_claimed`]. A claim taken
    /// withdraws the published outcome of an earlier, failed attempt at the
    /// same round (see [`crate::session::refresh_outcome::withdraw`]), so that
    /// the requests waiting on this attempt wait for it.
    ClaimRefresh {
        key: SessionKey,
        until: u64,
        access_token: String,
    },
    /// Another request is refreshing this session: hold this one until the
    /// outcome of `round` is published (see [`crate::session::refresh_outcome`])
    /// or the clock reaches `until`, then call
    /// [`RequestFlow::handle_refresh_outcome`] (with `None` when the wait ran
    /// out, or the host cannot hold the request). The steps that follow are
    /// only a forward or an answer: no callout, no body.
    AwaitRefresh { round: RefreshRound, until: u64 },
    /// Publish how this request's refresh of `round` ended, kept until `until`
    /// for the requests waiting on it, then perform `then`.
    PublishRefresh {
        round: RefreshRound,
        outcome: RefreshOutcome,
        until: u64,
        then: Box<Step>,
    },
    /// Read the request body (at most `max_bytes`), then call [`RequestFlow::handle_body`].
    ReadBody { max_bytes: usize },
    /// Delete every session filed under these index entries, then call
    /// [`RequestFlow::handle_sessions_ended`].
    EndSessions { entries: Vec<IndexEntry> },
    /// Cookie sessions only: add these entries to this replica's deny-list
    /// until `until` (a logout: the browser may keep a copy of the cookie),
    /// then call [`RequestFlow::handle_sessions_ended`] with how many were denied.
    DenyCookieSession {
        entries: Vec<IndexEntry>,
        until: u64,
    },
    /// Send this request, then call [`RequestFlow::handle_callout_response`].
    Callout(Callout),
    /// Read the cache entry stored under `key` (introspection results), then
    /// call [`RequestFlow::handle_cached`].
    LoadCache { key: String },
    /// Store `value` under `key` in the cache (its expiry is inside the value,
    /// checked on read), then perform `then`. Not a session write: the cache
    /// lives beside the session store, not in it.
    StoreCache {
        key: String,
        value: Vec<u8>,
        then: Box<Step>,
    },
    /// A token names the unknown key `kid`: fetch the provider's JWKS again
    /// (unless [`crate::provider::KidRefetches`] says another worker just did or
    /// the `kid` is known to be unknown), share it, then call
    /// [`RequestFlow::handle_jwks_refreshed`].
    RefetchJwks { kid: String },
}

#[derive(Debug, Default)]
pub struct Forward {
    /// Removed before anything is set: client copies of identity headers.
    pub remove_headers: Vec<String>,
    pub set_headers: Vec<(String, String)>,
    /// `Some(None)`: remove the `Cookie` header; `Some(Some(v))`: replace it.
    pub cookie: Option<Option<Vec<u8>>>,
    /// Added to the upstream's response, e.g. `set-cookie` for an updated session.
    pub response_headers: Vec<(String, String)>,
    pub writes: Vec<StoreWrite>,
}

#[derive(Debug)]
pub struct Respond {
    pub response: LocalResponse,
    pub writes: Vec<StoreWrite>,
}

/// An HTTP request to the provider, routed through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    /// `http` or `https`, from the URL: hosts that pick TLS per call read it.
    pub scheme: String,
    pub method: &'static str,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl Callout {
    pub fn new(config: &Config, method: &'static str, url: &url::Url) -> Callout {
        let authority = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => String::new(),
        };
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        Callout {
            cluster: config.clusters.for_authority(&authority).to_string(),
            scheme: url.scheme().to_string(),
            method,
            authority,
            path,
            headers: vec![("accept".to_string(), "application/json".to_string())],
            body: Vec::new(),
            timeout_ms: config.callout_timeout_ms,
        }
    }
}

#[derive(Debug, Default)]
enum Expect {
    #[default]
    Request,
    Session(RequestHead, SessionKey),
    LogoutSession(RequestHead, SessionKey),
    DenyList(Box<cookie_store::Pending>),
    RefreshClaim(refresh::Refresh),
    RefreshResponse(refresh::Refresh),
    AwaitRefresh(refresh::Refresh),
    RefreshedAlready(refresh::Refresh),
    RefreshJwks(refresh::Refresh, TokenResponse),
    LogoutTokenBody,
    LogoutTokenJwks(String),
    LogoutTokenRecorded(backchannel::LogoutTarget),
    SessionsEnded,
    LogoutDenied(Box<logout::Pending>),
    LogoutRevoked(Box<logout::Pending>),
    LoginRecorded(callback::Callback),
    TokenResponse(callback::Callback),
    Jwks(callback::Callback, TokenResponse),
    BearerJwks(bearer::BearerRequest),
    IntrospectionCache(bearer::BearerRequest),
    Introspection(bearer::BearerRequest),
    Finished,
}

/// One request's way through the filter.
#[derive(Debug, Default)]
pub struct RequestFlow {
    expect: Expect,
    /// Cookie store: what the request brought, for the cookies it leaves with.
    cookie_jar: cookie_store::Jar,
}

impl RequestFlow {
    pub fn new() -> RequestFlow {
        RequestFlow::default()
    }

    pub fn handle_request<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        request: RequestHead,
    ) -> Step {
        let path = request.raw_path();
        let cookie_store = ctx.config.session.store == SessionStoreKind::Cookie;
        if cookie_store {
            self.cookie_jar = cookie_store::Jar::from_request(ctx.config, &request);
        }
        if path == ctx.config.callback_path.as_bytes() {
            let next = callback::handle_callback(ctx, &request);
            return self.finish_or(ctx, next);
        }
        if ctx
            .config
            .backchannel_logout_path
            .as_deref()
            .map(str::as_bytes)
            == Some(path)
        {
            let next = backchannel::handle_request(ctx, &request);
            return self.finish_or(ctx, next);
        }
        let is_logout = ctx.config.logout_path.as_deref().map(str::as_bytes) == Some(path);
        if !is_logout {
            match access::gate(ctx, &request) {
                access::Gate::Done(step) => return self.finish(ctx, step),
                access::Gate::Bearer(token) => {
                    let bearer = bearer::BearerRequest { request, token };
                    let next = bearer::authenticate(ctx, bearer, true);
                    return self.finish_or(ctx, next);
                }
                access::Gate::Session => {}
            }
        }
        if cookie_store {
            return match cookie_store::open_request(ctx, request, is_logout, &mut self.cookie_jar) {
                cookie_store::Loaded::Done(step) => self.finish(ctx, step),
                cookie_store::Loaded::CheckDenyList(pending, step) => {
                    self.expect = Expect::DenyList(pending);
                    step
                }
            };
        }
        match session_id(ctx.config, &request) {
            Some(id) => {
                let key = id.store_key();
                let step = Step::LoadSession { key: key.clone() };
                self.expect = if is_logout {
                    Expect::LogoutSession(request, key)
                } else {
                    Expect::Session(request, key)
                };
                step
            }
            None if is_logout => {
                let next = logout::logged_out(ctx, &request, None, None);
                self.finish_or(ctx, next)
            }
            None => {
                let step = login::start_login(ctx, &request);
                self.finish(ctx, step)
            }
        }
    }

    pub fn handle_session<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        session: Option<Session>,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::Session(request, key) => match session {
                Some(session) => {
                    let next = identity::continue_session(ctx, request, session, key);
                    self.finish_or(ctx, next)
                }
                None => {
                    let step = login::start_login(ctx, &request);
                    self.finish(ctx, step)
                }
            },
            Expect::LogoutSession(request, key) => {
                let next = logout::logged_out(ctx, &request, session, Some(key));
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "a session"),
        }
    }

    pub fn handle_deny_list<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        stored: DenyListRead<'_>,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::DenyList(pending) => {
                let next = cookie_store::with_deny_list(ctx, *pending, stored);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "the deny-list"),
        }
    }

    pub fn handle_once_recorded<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        first_use: bool,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::LoginRecorded(cb) => {
                let next = callback::exchange_code(ctx, cb, first_use);
                self.finish_or(ctx, next)
            }
            Expect::LogoutTokenRecorded(target) => {
                let next = backchannel::end_sessions(ctx.events, target, first_use);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "the single-use ledger"),
        }
    }

    pub fn handle_refresh_claimed<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        claimed: bool,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::RefreshClaim(refresh) => {
                let next = refresh::claimed(ctx, refresh, claimed);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "a refresh claim"),
        }
    }

    /// `outcome` is `None` when the wait ran out or the request could not be held.
    pub fn handle_refresh_outcome<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        outcome: Option<RefreshOutcome>,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::AwaitRefresh(refresh) => {
                let step = refresh::after_wait(ctx, refresh, outcome);
                self.finish(ctx, step)
            }
            Expect::RefreshedAlready(refresh) => {
                let next = refresh::unless_refreshed(ctx, refresh, outcome);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "a refresh outcome"),
        }
    }

    /// `body` is `None` when it was larger than asked for.
    pub fn handle_body<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        body: Option<&[u8]>,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::LogoutTokenBody => {
                let next = backchannel::handle_body(ctx, body, true);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "a request body"),
        }
    }

    pub fn handle_sessions_ended<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        count: usize,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::SessionsEnded => {
                let step = backchannel::done(ctx.events, count);
                self.finish(ctx, step)
            }
            Expect::LogoutDenied(pending) => {
                if count == 0 {
                    log::error!("logout: the session could not be denied on this replica");
                }
                let next = logout::revoke_then_answer(*pending);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "ended sessions"),
        }
    }

    pub fn handle_callout_response<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        outcome: CalloutOutcome,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::TokenResponse(cb) => {
                let next = callback::handle_token_response(ctx, cb, outcome);
                self.finish_or(ctx, next)
            }
            Expect::Introspection(bearer) => {
                let next = bearer::handle_introspection(ctx, bearer, outcome);
                self.finish_or(ctx, next)
            }
            Expect::RefreshResponse(refresh) => {
                let next = refresh::handle_response(ctx, refresh, outcome);
                self.finish_or(ctx, next)
            }
            Expect::LogoutRevoked(pending) => {
                let step = logout::revoked(ctx.events, *pending, outcome);
                self.finish(ctx, step)
            }
            other => self.unexpected(ctx, other, "a callout response"),
        }
    }

    pub fn handle_cached<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        stored: Option<&[u8]>,
    ) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::IntrospectionCache(bearer) => {
                let next = bearer::handle_cached(ctx, bearer, stored);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "a cache entry"),
        }
    }

    /// `ctx.provider` now holds the refetched keys (or the old ones if the fetch failed).
    pub fn handle_jwks_refreshed<R: CryptoRngCore>(&mut self, ctx: &mut Context<'_, R>) -> Step {
        match std::mem::take(&mut self.expect) {
            Expect::Jwks(cb, tokens) => {
                let next = callback::finish_login(ctx, cb, tokens, false);
                self.finish_or(ctx, next)
            }
            Expect::BearerJwks(bearer) => {
                let next = bearer::authenticate(ctx, bearer, false);
                self.finish_or(ctx, next)
            }
            Expect::LogoutTokenJwks(token) => {
                let next = backchannel::verify(ctx, &token, false);
                self.finish_or(ctx, next)
            }
            Expect::RefreshJwks(refresh, tokens) => {
                let next = refresh::apply_tokens(ctx, refresh, tokens, false);
                self.finish_or(ctx, next)
            }
            other => self.unexpected(ctx, other, "refetched keys"),
        }
    }

    /// Every request ends here, so this is the one place where the cookie
    /// store turns the flow's store writes into cookies.
    fn finish<R: CryptoRngCore>(&mut self, ctx: &mut Context<'_, R>, step: Step) -> Step {
        self.expect = Expect::Finished;
        if ctx.config.session.store == SessionStoreKind::Cookie {
            cookie_store::writes_to_cookies(ctx, &self.cookie_jar, step)
        } else {
            step
        }
    }

    /// Handlers that wait for something return the state to wait in.
    fn finish_or<R: CryptoRngCore>(&mut self, ctx: &mut Context<'_, R>, next: Next) -> Step {
        match next {
            Next::Done(step) => self.finish(ctx, step),
            Next::Wait(expect, step) => {
                self.expect = *expect;
                step
            }
        }
    }

    fn unexpected<R: CryptoRngCore>(
        &mut self,
        ctx: &mut Context<'_, R>,
        state: Expect,
        event: &str,
    ) -> Step {
        // A host bug, not bad input: answer rather than let the request hang.
        log::error!("flow received {event} while in state {}", state.name());
        let step = Step::Respond(Respond {
            response: pages::error_page(
                500,
                "Internal error",
                "The login filter lost track of this request. Please try again.",
            ),
            writes: Vec::new(),
        });
        self.finish(ctx, step)
    }
}

impl Expect {
    fn name(&self) -> &'static str {
        match self {
            Expect::Request => "Request",
            Expect::Session(..) => "Session",
            Expect::LogoutSession(..) => "LogoutSession",
            Expect::DenyList(_) => "DenyList",
            Expect::LoginRecorded(_) => "LoginRecorded",
            Expect::TokenResponse(_) => "TokenResponse",
            Expect::Jwks(..) => "Jwks",
            Expect::BearerJwks(_) => "BearerJwks",
            Expect::IntrospectionCache(_) => "IntrospectionCache",
            Expect::Introspection(_) => "Introspection",
            Expect::RefreshClaim(_) => "RefreshClaim",
            Expect::RefreshResponse(_) => "RefreshResponse",
            Expect::AwaitRefresh(_) => "AwaitRefresh",
            Expect::RefreshedAlready(_) => "RefreshedAlready",
            Expect::RefreshJwks(..) => "RefreshJwks",
            Expect::LogoutTokenBody => "LogoutTokenBody",
            Expect::LogoutTokenJwks(_) => "LogoutTokenJwks",
            Expect::LogoutTokenRecorded(_) => "LogoutTokenRecorded",
            Expect::SessionsEnded => "SessionsEnded",
            Expect::LogoutDenied(_) => "LogoutDenied",
            Expect::LogoutRevoked(_) => "LogoutRevoked",
            Expect::Finished => "Finished",
        }
    }
}

enum Next {
    Done(Step),
    Wait(Box<Expect>, Step),
}

fn respond(response: LocalResponse) -> Step {
    Step::Respond(Respond {
        response,
        writes: Vec::new(),
    })
}

/// The request target to leave in the proxy's access log, when it must differ
/// from what the client sent: the callback's query holds the authorization code
/// and the state, and the callback is always answered here, so the host can
/// drop the query from the request once the flow has read it.
pub fn target_for_access_log(config: &Config, target: &[u8]) -> Option<Vec<u8>> {
    match paths::split_path_query(target) {
        (path, Some(_)) if path == config.callback_path.as_bytes() => Some(path.to_vec()),
        _ => None,
    }
}

fn session_id(config: &Config, request: &RequestHead) -> Option<SessionId> {
    let value = cookies::cookie_value(request.cookies(), &config.cookies.session_name)?;
    SessionId::from_cookie(value)
}

/// The `Set-Cookie` that deletes one of our cookies.
fn expire_cookie(config: &Config, name: &str) -> (String, String) {
    let attributes = if name.starts_with(&config.cookies.login_prefix) {
        config.cookies.login_attributes()
    } else {
        config.cookies.attributes.clone()
    };
    (
        "set-cookie".to_string(),
        cookies::set_cookie(name, "", Some(0), &attributes),
    )
}

/// 503 while the provider's metadata is not loaded: never let a protected
/// request through unauthenticated.
fn provider_unavailable() -> Step {
    respond(
        pages::error_page(
            503,
            "Login temporarily unavailable",
            "The identity provider's configuration has not been loaded yet. Please retry in a few seconds.",
        )
        .with_header("retry-after", "2"),
    )
}
