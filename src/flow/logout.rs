//! RP-initiated logout: end the session here, then at the provider.
//!
//! Cross-site requests cannot log a user out: a GET is honoured only when the
//! browser says it is not cross-site (`Sec-Fetch-Site`), and other methods need
//! the same; otherwise the user gets a page with a button that POSTs here.

use rand_core::CryptoRngCore;

use super::event::{Event, Events};
use super::{
    expire_cookie, respond, Callout, CalloutOutcome, Context, Expect, Next, RequestHead, Respond,
    Step, StoreWrite,
};
use crate::config::SessionStoreKind;
use crate::crypto;
use crate::http::pages;
use crate::oidc::token::{self, ClientCredentials, TokenKind};
use crate::session::buckets::IndexEntry;
use crate::session::{Session, SessionKey};

/// A logout on its way to the answer, which carries the session's deletion
/// (shared data) or cookie expiry; a cookie session is already denied on this
/// replica, and its token revocation may be in flight.
#[derive(Debug)]
pub(super) struct Pending {
    respond: Respond,
    revoke: Option<Callout>,
}

/// Ends `session` here, then at the provider: a cookie session is denied on
/// this replica (the browser may hold a copy of the cookie), its refresh token
/// (or access token) is revoked when the provider has a revocation endpoint,
/// and the browser goes to the provider's end-session endpoint.
pub(super) fn logged_out<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    session: Option<Session>,
    key: Option<SessionKey>,
) -> Next {
    let config = ctx.config;
    if !same_site_request(request) {
        return Next::Done(confirm_page(ctx));
    }
    let pending = Pending {
        respond: answer(ctx, session.as_ref(), key),
        revoke: session.as_ref().and_then(|s| revocation_callout(ctx, s)),
    };
    match session {
        Some(session) if config.session.store == SessionStoreKind::Cookie => Next::Wait(
            Box::new(Expect::LogoutDenied(Box::new(pending))),
            Step::DenyCookieSession {
                entries: vec![IndexEntry::cookie_session(&config.issuer, &session)],
                until: session.expires_at,
            },
        ),
        _ => revoke_then_answer(pending),
    }
}

/// A logout request without a usable session: expire the cookie and go on to
/// the provider.
pub(super) fn without_session<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    key: Option<SessionKey>,
) -> Step {
    if !same_site_request(request) {
        return confirm_page(ctx);
    }
    Step::Respond(answer(ctx, None, key))
}

pub(super) fn revoke_then_answer(mut pending: Pending) -> Next {
    match pending.revoke.take() {
        Some(callout) => Next::Wait(
            Box::new(Expect::LogoutRevoked(Box::new(pending))),
            Step::Callout(callout),
        ),
        None => Next::Done(Step::Respond(pending.respond)),
    }
}

/// The revocation's answer changes nothing for the browser: the session is
/// already ended here. A failure is logged for the operator.
pub(super) fn revoked(events: &Events, pending: Pending, outcome: CalloutOutcome) -> Step {
    match outcome {
        CalloutOutcome::Response { status: 200, .. } => {
            log::debug!("logout: token revoked at the provider")
        }
        CalloutOutcome::Response { status, .. } => events.record(
            Event::RevocationFailed,
            format!("the provider refused to revoke the token (HTTP {status})"),
        ),
        CalloutOutcome::Failed(reason) => events.record(Event::RevocationFailed, reason),
    }
    Step::Respond(pending.respond)
}

/// RFC 7009: the refresh token, or without one the access token.
fn revocation_callout<R: CryptoRngCore>(
    ctx: &Context<'_, R>,
    session: &Session,
) -> Option<Callout> {
    let config = ctx.config;
    let endpoint = ctx.provider?.metadata.revocation_endpoint.as_ref()?;
    let (token, kind) = match &session.refresh_token {
        Some(refresh_token) => (refresh_token.as_str(), TokenKind::RefreshToken),
        None => (session.access_token.as_str(), TokenKind::AccessToken),
    };
    let client = ClientCredentials {
        client_id: &config.client_id,
        client_secret: config.client_secret.expose(),
        method: config.client_auth,
    };
    let form = token::revocation_request(&client, token, kind);
    let mut callout = Callout::new(config, "POST", endpoint);
    callout.headers = form.headers;
    callout.body = form.body;
    Some(callout)
}

/// The redirect to the provider's end-session endpoint (or a page), with the
/// session cookie expired and the session deleted from the store.
fn answer<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    session: Option<&Session>,
    key: Option<SessionKey>,
) -> Respond {
    let config = ctx.config;
    let mut writes = Vec::new();
    if let Some(key) = key {
        writes.push(StoreWrite::Delete { key });
    }
    let expire = expire_cookie(config, &config.cookies.session_name);
    let end_session = ctx
        .provider
        .and_then(|p| p.metadata.end_session_endpoint.clone());
    let mut response = match end_session {
        Some(mut location) => {
            let post_logout = absolute_post_logout_uri(config);
            let state = crypto::random_token(ctx.rng, 16);
            {
                let mut query = location.query_pairs_mut();
                if let Some(id_token) = session.and_then(|s| s.id_token.as_deref()) {
                    query.append_pair("id_token_hint", id_token);
                }
                query
                    .append_pair("client_id", &config.client_id)
                    .append_pair("post_logout_redirect_uri", &post_logout)
                    .append_pair("state", &state);
            }
            pages::redirect(location.as_str())
        }
        None => pages::error_page(200, "Logged out", "You have been logged out."),
    };
    response.headers.push(expire);
    ctx.events.record(Event::Logout, "");
    Respond { response, writes }
}

fn confirm_page<R: CryptoRngCore>(ctx: &Context<'_, R>) -> Step {
    ctx.events.record(
        Event::LogoutConfirmationShown,
        "cross-site logout request: asked to confirm",
    );
    let logout_path = ctx.config.logout_path.as_deref().unwrap_or("/");
    respond(pages::confirm_logout_page(logout_path))
}

/// `Sec-Fetch-Site` is sent by every current browser; clients that send none
/// (scripts, old browsers) are not the cross-site threat this guards against.
fn same_site_request(request: &RequestHead) -> bool {
    match request.header("sec-fetch-site") {
        None => true,
        Some(site) => site == b"same-origin" || site == b"none",
    }
}

/// A configured path is resolved against the redirect URI's origin, which is
/// the origin registered at the provider.
fn absolute_post_logout_uri(config: &crate::config::Config) -> String {
    if config.post_logout_redirect_uri.starts_with('/') {
        match config.redirect_uri.join(&config.post_logout_redirect_uri) {
            Ok(url) => url.to_string(),
            Err(_) => config.post_logout_redirect_uri.clone(),
        }
    } else {
        config.post_logout_redirect_uri.clone()
    }
}
