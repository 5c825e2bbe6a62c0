//! Refreshing a session's tokens (RFC 6749 §6, OIDC Core §12) with one refresh
//! at a time per session across all workers.
//!
//! The request that finds the access token (nearly) expired claims the refresh
//! in the store (the leader); requests that lose the claim (followers) go on
//! with the still-valid token or, when it already expired, wait for the
//! leader's outcome (see [`crate::session::refresh_outcome`]) and go on with
//! the new tokens, or answer as the leader did. A follower waits at most as
//! long as the leader's claim lasts.
//!
//! The provider may rotate the refresh token with every answer and refuse the
//! old one from then on, so a refresh token it issued is never dropped, and the
//! answer only updates a session that still exists (a logout meanwhile wins).

use rand_core::CryptoRngCore;

use super::event::{Event, RefreshFailure, TokenEndpointFailure};
use super::identity::{end_session, forward_with_session};
use super::{
    respond, Callout, CalloutOutcome, Context, Expect, Next, RequestHead, Respond, Step, StoreWrite,
};
use crate::config::{Config, SessionStoreKind};
use crate::http::pages;
use crate::oidc::id_token::{verify_id_token, IdTokenError, IdTokenExpectations, NonceCheck};
use crate::oidc::jwt::JwtError;
use crate::oidc::token::{self, ClientCredentials, TokenError, TokenResponse};
use crate::session::refresh_outcome::{RefreshOutcome, RefreshRound};
use crate::session::{Session, SessionKey};

/// A request waiting on its session's refresh.
#[derive(Debug)]
pub(super) struct Refresh {
    request: RequestHead,
    session: Session,
    key: SessionKey,
}

pub(super) fn start<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: RequestHead,
    session: Session,
    key: SessionKey,
) -> Next {
    if session.refresh_in_progress(ctx.now) {
        return someone_else_refreshes(
            ctx,
            Refresh {
                request,
                session,
                key,
            },
        );
    }
    if ctx.config.session.store == SessionStoreKind::Cookie {
        // A cookie may still hold tokens a refresh already replaced (the
        // browser sent it before the new one arrived): the outcome, if kept,
        // has the session, and the cookie's refresh token may be spent.
        let step = Step::AwaitRefresh {
            round: RefreshRound::of(&key, &session.access_token),
            until: ctx.now,
        };
        let refresh = Refresh {
            request,
            session,
            key,
        };
        return Next::Wait(Box::new(Expect::RefreshedAlready(refresh)), step);
    }
    claim(ctx, request, session, key)
}

/// Unless the refresh already happened (or ended the session), a cookie
/// session's refresh is claimed as usual.
pub(super) fn unless_refreshed<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    refresh: Refresh,
    outcome: Option<RefreshOutcome>,
) -> Next {
    match outcome {
        // A failed refresh is retried by the next request.
        None | Some(RefreshOutcome::Failed { .. }) => {
            claim(ctx, refresh.request, refresh.session, refresh.key)
        }
        Some(outcome) => Next::Done(after_wait(ctx, refresh, Some(outcome))),
    }
}

fn claim<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: RequestHead,
    session: Session,
    key: SessionKey,
) -> Next {
    let until = ctx.now + claim_seconds(ctx.config);
    let step = Step::ClaimRefresh {
        key: key.clone(),
        until,
        access_token: session.access_token.clone(),
    };
    Next::Wait(
        Box::new(Expect::RefreshClaim(Refresh {
            request,
            session,
            key,
        })),
        step,
    )
}

pub(super) fn claimed<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    refresh: Refresh,
    claimed: bool,
) -> Next {
    if !claimed {
        return someone_else_refreshes(ctx, refresh);
    }
    let (Some(provider), Some(refresh_token)) =
        (ctx.provider, refresh.session.refresh_token.as_deref())
    else {
        if ctx.provider.is_none() {
            failed(
                ctx,
                RefreshFailure::ProviderUnavailable,
                "provider metadata not loaded",
            );
        }
        return Next::Done(forward_or_fail(
            ctx,
            &refresh,
            None,
            "provider metadata is not loaded",
        ));
    };
    let config = ctx.config;
    let client = ClientCredentials {
        client_id: &config.client_id,
        client_secret: config.client_secret.expose(),
        method: config.client_auth,
    };
    let form = token::refresh_request(&client, refresh_token);
    let mut callout = Callout::new(config, "POST", &provider.metadata.token_endpoint);
    callout.headers = form.headers;
    callout.body = form.body;
    log::debug!("refreshing the session's tokens");
    Next::Wait(
        Box::new(Expect::RefreshResponse(refresh)),
        Step::Callout(callout),
    )
}

pub(super) fn handle_response<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    refresh: Refresh,
    outcome: CalloutOutcome,
) -> Next {
    let tokens = match outcome {
        CalloutOutcome::Failed(reason) => {
            failed(
                ctx,
                RefreshFailure::TokenEndpoint(TokenEndpointFailure::Unreachable),
                reason,
            );
            return Next::Done(forward_or_fail(
                ctx,
                &refresh,
                None,
                "the identity provider could not be reached",
            ));
        }
        CalloutOutcome::Response { status, body } => {
            match token::parse_token_response(status, &body) {
                Ok(tokens) => tokens,
                Err(TokenError::Status {
                    error: Some(error), ..
                }) if error == "invalid_grant" => {
                    // The provider ended the grant (revoked, expired, logged out): so does the session.
                    failed(
                        ctx,
                        RefreshFailure::InvalidGrant,
                        "the provider refused the refresh token: session ended",
                    );
                    return Next::Done(grant_ended(ctx, refresh));
                }
                Err(err) => {
                    failed(
                        ctx,
                        RefreshFailure::TokenEndpoint(TokenEndpointFailure::of(&err)),
                        err.to_string(),
                    );
                    return Next::Done(forward_or_fail(
                        ctx,
                        &refresh,
                        None,
                        "the identity provider refused to refresh it",
                    ));
                }
            }
        }
    };
    apply_tokens(ctx, refresh, tokens, true)
}

/// Checks the refreshed ID token, if any, and stores the new tokens.
pub(super) fn apply_tokens<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    refresh: Refresh,
    tokens: TokenResponse,
    may_refetch_keys: bool,
) -> Next {
    let config = ctx.config;
    let now = ctx.now;
    let mut session = refresh.session.clone();
    if let (Some(raw), Some(provider)) = (tokens.id_token.as_deref(), ctx.provider) {
        let expect = IdTokenExpectations {
            issuer: &config.issuer,
            client_id: &config.client_id,
            nonce: NonceCheck::NotRequired,
            allowed_algorithms: &config.allowed_algorithms,
            now,
            clock_skew: config.clock_skew,
            max_age: config.login_timeout,
        };
        match verify_id_token(raw, &provider.jwks, &expect) {
            // OIDC Core §12.2: the same issuer (checked above) and the same subject.
            Ok(verified) if verified.sub == session.sub => {
                // A refresh response may omit an unchanged scope (RFC 6749 §5.1).
                let previous_scope = session.claims.get("scope").and_then(|s| s.as_str());
                let scope = tokens
                    .scope
                    .as_deref()
                    .or(previous_scope)
                    .map(str::to_string);
                session.claims =
                    super::callback::session_claims(config, &verified.claims, scope.as_deref());
                if session.id_token.is_some() {
                    session.id_token = Some(raw.to_string());
                }
            }
            Ok(_) => {
                failed(
                    ctx,
                    RefreshFailure::SubjectChanged,
                    "the refreshed ID token names another subject: session ended",
                );
                return Next::Done(grant_ended(ctx, refresh));
            }
            Err(IdTokenError::Jwt(JwtError::UnknownKid(kid)))
                if may_refetch_keys && provider.may_refetch_jwks_for(&kid, now) =>
            {
                log::info!(
                    "refreshed ID token signed with unknown key {kid:?}: refetching the provider's keys"
                );
                return Next::Wait(
                    Box::new(Expect::RefreshJwks(refresh, tokens)),
                    Step::RefetchJwks { kid },
                );
            }
            Err(err) => {
                // The provider has spent the old refresh token: keep the new one
                // so the next try works. The new access token is not used: what
                // came with an invalid ID token is not trusted to go upstream.
                failed(
                    ctx,
                    RefreshFailure::IdToken(err.clone()),
                    format!("{err}; keeping only the new refresh token"),
                );
                return Next::Done(forward_or_fail(
                    ctx,
                    &refresh,
                    tokens.refresh_token,
                    "its new ID token was invalid",
                ));
            }
        }
    }
    session.access_token = tokens.access_token;
    session.access_token_expires_at = tokens.expires_in.map(|s| now.saturating_add(s));
    session.access_token_lifetime = tokens.expires_in;
    if tokens.refresh_token.is_some() {
        session.refresh_token = tokens.refresh_token;
    }
    session.refreshing_until = None;
    session.last_seen = now;
    ctx.events.record(Event::SessionRefreshed, "");

    let step = forward_refreshed(ctx, &refresh.request, &refresh.key, &session);
    let outcome = RefreshOutcome::Refreshed {
        session: Box::new(session),
    };
    Next::Done(publish(ctx, &refresh, outcome, step))
}

fn failed<R: CryptoRngCore>(
    ctx: &Context<'_, R>,
    failure: RefreshFailure,
    detail: impl Into<String>,
) {
    ctx.events.record(Event::RefreshFailed(failure), detail);
}

/// Forwards with the refreshed session and stores it (it replaces a touch,
/// which for cookies would re-seal the old session).
fn forward_refreshed<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    key: &SessionKey,
    session: &Session,
) -> Step {
    let mut step = forward_with_session(ctx, request, session, key);
    if let Step::Forward(forward) = &mut step {
        forward
            .writes
            .retain(|w| !matches!(w, StoreWrite::Touch { .. }));
        forward.writes.push(StoreWrite::Update {
            key: key.clone(),
            session: Box::new(session.clone()),
        });
    }
    step
}

/// How long a claim holds: long enough for the token callout and a keys
/// refetch to time out and the answer to be stored (a lapsed claim would let
/// another worker spend the refresh token this one already sent). Followers
/// wait no longer.
fn claim_seconds(config: &Config) -> u64 {
    2 * config.callout_timeout_ms.div_ceil(1000) + 2
}

/// The leader's answer, after its outcome is published for the followers.
/// Kept twice as long as a claim: followers parked until the claim's end still
/// find it, and so do cookie requests sent with the old cookie meanwhile.
fn publish<R: CryptoRngCore>(
    ctx: &Context<'_, R>,
    refresh: &Refresh,
    outcome: RefreshOutcome,
    then: Step,
) -> Step {
    Step::PublishRefresh {
        round: RefreshRound::of(&refresh.key, &refresh.session.access_token),
        outcome,
        until: ctx.now + 2 * claim_seconds(ctx.config),
        then: Box::new(then),
    }
}

/// The provider ended the grant (or named another subject): so ends the session.
fn grant_ended<R: CryptoRngCore>(ctx: &mut Context<'_, R>, refresh: Refresh) -> Step {
    let step = end_session(ctx, &refresh.request, refresh.key.clone());
    publish(ctx, &refresh, RefreshOutcome::Ended, step)
}

/// Another request is refreshing this session: go on with the still-valid
/// token, or wait for the refresh.
fn someone_else_refreshes<R: CryptoRngCore>(ctx: &mut Context<'_, R>, refresh: Refresh) -> Next {
    if refresh.session.access_token_valid(ctx.now) {
        return Next::Done(forward_with_session(
            ctx,
            &refresh.request,
            &refresh.session,
            &refresh.key,
        ));
    }
    let step = Step::AwaitRefresh {
        round: RefreshRound::of(&refresh.key, &refresh.session.access_token),
        until: ctx.now + claim_seconds(ctx.config),
    };
    Next::Wait(Box::new(Expect::AwaitRefresh(refresh)), step)
}

/// A follower's answer once the leader's outcome is known (`None`: the wait
/// ran out). Never a callout: the host may wake the follower from a context
/// that cannot receive one. Followers write nothing of the claim: it is the
/// leader's, or already a newer leader's.
pub(super) fn after_wait<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    refresh: Refresh,
    outcome: Option<RefreshOutcome>,
) -> Step {
    match outcome {
        Some(RefreshOutcome::Refreshed { session }) => {
            if ctx.config.session.store == SessionStoreKind::Cookie {
                // The browser may keep this response's cookie rather than the
                // leader's: it must hold the new tokens too.
                forward_refreshed(ctx, &refresh.request, &refresh.key, &session)
            } else {
                // The leader stored it; writing it again could undo a later change.
                forward_with_session(ctx, &refresh.request, &session, &refresh.key)
            }
        }
        Some(RefreshOutcome::Failed { why }) => failure_answer(ctx, &refresh, &why),
        Some(RefreshOutcome::Ended) => end_session(ctx, &refresh.request, refresh.key),
        None => respond(pages::retry_soon_page(
            "Your session is being renewed. This page reloads in a moment.",
        )),
    }
}

/// A refresh that failed for a reason that may pass: the still-valid token is
/// used and a later request retries; an expired one ends in the error page
/// (the session is kept, so reloading retries). A refresh token the provider
/// issued all the same replaces the one it spent.
fn forward_or_fail<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    refresh: &Refresh,
    new_refresh_token: Option<String>,
    why: &str,
) -> Step {
    let mut step = failure_answer(ctx, refresh, why);
    let mut writes = Vec::new();
    if let Some(refresh_token) = new_refresh_token {
        let mut session = refresh.session.clone();
        session.refresh_token = Some(refresh_token);
        session.refreshing_until = None;
        writes.push(StoreWrite::Update {
            key: refresh.key.clone(),
            session: Box::new(session),
        });
    }
    // Also for cookie sessions, whose claim lives outside the session.
    writes.push(StoreWrite::ReleaseRefresh {
        key: refresh.key.clone(),
    });
    match &mut step {
        Step::Forward(forward) => forward.writes.extend(writes),
        Step::Respond(respond) => respond.writes.extend(writes),
        _ => {}
    }
    let outcome = RefreshOutcome::Failed {
        why: why.to_string(),
    };
    publish(ctx, refresh, outcome, step)
}

/// The still-valid token, or the error page that says `why`.
fn failure_answer<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    refresh: &Refresh,
    why: &str,
) -> Step {
    if refresh.session.access_token_valid(ctx.now) {
        return forward_with_session(ctx, &refresh.request, &refresh.session, &refresh.key);
    }
    let detail = format!(
        "Your session could not be renewed because {why}. Please reload the page to try again."
    );
    Step::Respond(Respond {
        response: pages::error_page(502, "Session could not be renewed", &detail),
        writes: Vec::new(),
    })
}
