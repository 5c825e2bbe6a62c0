//! Refreshing a session's tokens (RFC 6749 §6, OIDC Core §12) with one refresh
//! at a time per session across all workers.
//!
//! The request that finds the access token (nearly) expired claims the refresh
//! in the store; requests that lose the claim go on with the still-valid token
//! or, when it already expired, are asked to retry in a second.
//!
//! The provider may rotate the refresh token with every answer and refuse the
//! old one from then on, so a refresh token it issued is never dropped, and the
//! answer only updates a session that still exists (a logout meanwhile wins).

use rand_core::CryptoRngCore;

use super::identity::{end_session, forward_with_session};
use super::{
    respond, Callout, CalloutOutcome, Context, Expect, Next, RequestHead, Respond, Step, StoreWrite,
};
use crate::http::pages;
use crate::oidc::id_token::{verify_id_token, IdTokenError, IdTokenExpectations, NonceCheck};
use crate::oidc::jwt::JwtError;
use crate::oidc::token::{self, ClientCredentials, TokenError, TokenResponse};
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
        return Next::Done(someone_else_refreshes(ctx, &request, &session, &key));
    }
    // Long enough for the token callout and a keys refetch to time out and the
    // answer to be stored: a lapsed claim would let another worker spend the
    // refresh token this one already sent.
    let until = ctx.now + 2 * ctx.config.callout_timeout_ms.div_ceil(1000) + 2;
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
        return Next::Done(someone_else_refreshes(
            ctx,
            &refresh.request,
            &refresh.session,
            &refresh.key,
        ));
    }
    let (Some(provider), Some(refresh_token)) =
        (ctx.provider, refresh.session.refresh_token.as_deref())
    else {
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
            log::warn!("token refresh failed: {reason}");
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
                    log::info!("refresh token refused (invalid_grant): session ended");
                    return Next::Done(end_session(ctx, &refresh.request, refresh.key));
                }
                Err(err) => {
                    log::warn!("token refresh refused: {err}");
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
                log::warn!("refreshed ID token names another subject: session ended");
                return Next::Done(end_session(ctx, &refresh.request, refresh.key));
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
                log::warn!(
                    "refreshed ID token rejected: {err}; keeping only the new refresh token"
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
    log::info!("session tokens refreshed");

    let mut step = forward_with_session(ctx, &refresh.request, &session, &refresh.key);
    if let Step::Forward(forward) = &mut step {
        forward
            .writes
            .retain(|w| !matches!(w, StoreWrite::Touch { .. }));
        forward.writes.push(StoreWrite::Update {
            key: refresh.key,
            session: Box::new(session),
        });
    }
    Next::Done(step)
}

/// Another request is refreshing this session.
fn someone_else_refreshes<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    session: &Session,
    key: &SessionKey,
) -> Step {
    if session.access_token_valid(ctx.now) {
        return forward_with_session(ctx, request, session, key);
    }
    respond(pages::retry_soon_page(
        "Your session is being renewed. This page reloads in a moment.",
    ))
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
    let release = match new_refresh_token {
        Some(refresh_token) => {
            let mut session = refresh.session.clone();
            session.refresh_token = Some(refresh_token);
            session.refreshing_until = None;
            StoreWrite::Update {
                key: refresh.key.clone(),
                session: Box::new(session),
            }
        }
        None => StoreWrite::ReleaseRefresh {
            key: refresh.key.clone(),
        },
    };
    if refresh.session.access_token_valid(ctx.now) {
        let mut step = forward_with_session(ctx, &refresh.request, &refresh.session, &refresh.key);
        if let Step::Forward(forward) = &mut step {
            forward.writes.push(release);
        }
        return step;
    }
    let detail = format!(
        "Your session could not be renewed because {why}. Please reload the page to try again."
    );
    Step::Respond(Respond {
        response: pages::error_page(502, "Session could not be renewed", &detail),
        writes: vec![release],
    })
}
