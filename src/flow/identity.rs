//! A request with a live session: identity headers in, client copies and our
//! cookies out.

use rand_core::CryptoRngCore;

use super::access::{self, Via};
use super::{
    login, refresh, upstream_identity, Context, Forward, Next, RequestHead, Step, StoreWrite,
};
use crate::config::{ClaimSource, Config, UpstreamAuthorization};
use crate::http::cookies;
use crate::session::{Session, SessionKey};

pub(super) fn continue_session<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: RequestHead,
    session: Session,
    key: SessionKey,
) -> Next {
    let config = ctx.config;
    if let Some(expiry) = session.expiry(ctx.now, config.session.idle_timeout) {
        log::info!("session ended ({expiry:?} timeout): logging in again");
        return Next::Done(end_session(ctx, &request, key));
    }
    if let Some(denied) = access::authorize(
        config,
        &request,
        Some(&session.sub),
        &session.claims,
        Via::Session,
    ) {
        return Next::Done(denied);
    }
    if session.refresh_due(ctx.now, config.session.refresh_margin) {
        return refresh::start(ctx, request, session, key);
    }
    Next::Done(forward_with_session(ctx, &request, &session, &key))
}

/// The session is gone (ended, revoked): delete it and start a new login.
pub(super) fn end_session<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    key: SessionKey,
) -> Step {
    let mut step = login::start_login(ctx, request);
    if let Step::Respond(respond) = &mut step {
        respond.writes.push(StoreWrite::Delete { key });
    }
    step
}

/// Forwards upstream with the session's identity.
pub(super) fn forward_with_session<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    session: &Session,
    key: &SessionKey,
) -> Step {
    let config = ctx.config;
    let mut forward = strip_request(config, request);
    match config.upstream.authorization {
        UpstreamAuthorization::AccessToken => forward.set_headers.push((
            "authorization".to_string(),
            format!("Bearer {}", session.access_token),
        )),
        UpstreamAuthorization::IdToken => {
            if let Some(id_token) = &session.id_token {
                forward
                    .set_headers
                    .push(("authorization".to_string(), format!("Bearer {id_token}")));
            }
        }
        UpstreamAuthorization::None => {}
    }
    forward
        .set_headers
        .extend(upstream_identity::identity_headers(
            config,
            ClaimSource::Session,
            Some(&session.sub),
            &session.claims,
        ));
    if session.needs_touch(ctx.now, config.session.idle_timeout) {
        forward.writes.push(StoreWrite::Touch {
            key: key.clone(),
            at: ctx.now,
        });
    }
    Step::Forward(forward)
}

/// The edits every forwarded request gets, authenticated or not: identity headers
/// only the filter may set are removed, and the filter's cookies stay here.
pub(super) fn strip_request(config: &Config, request: &RequestHead) -> Forward {
    let remove_headers = config.identity_headers().map(str::to_string).collect();
    let has_ours = cookies::parse_cookies(request.cookie_headers())
        .iter()
        .any(|(name, _)| config.cookies.is_ours(name.as_bytes()));
    let cookie = has_ours.then(|| {
        cookies::strip_cookies(request.cookie_headers(), |name| {
            config.cookies.is_ours(name)
        })
    });
    Forward {
        remove_headers,
        set_headers: Vec::new(),
        cookie,
        response_headers: Vec::new(),
        writes: Vec::new(),
    }
}
