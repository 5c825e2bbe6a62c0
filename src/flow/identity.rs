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
        ctx.events,
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
    let remove_headers = headers_to_remove(config.identity_headers(), request);
    let has_ours = request
        .cookies()
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

/// The identity headers themselves and every request header that an upstream
/// could read as one: many (CGI, WSGI, Rack, PHP) fold `_` into `-` and ignore
/// case, so `X_Auth_Request_User` would pass for `x-auth-request-user`. Names
/// are the request's own, so the host removes exactly those.
pub(super) fn headers_to_remove<'a>(
    identity: impl Iterator<Item = &'a str>,
    request: &RequestHead,
) -> Vec<String> {
    let mut names: Vec<String> = identity.map(str::to_ascii_lowercase).collect();
    let configured = names.len();
    for (name, _) in &request.headers {
        if names[..configured].iter().any(|id| same_header(name, id)) && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Equal ignoring ASCII case, with `_` read as `-`.
fn same_header(a: &str, b: &str) -> bool {
    let fold = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().map(fold).eq(b.bytes().map(fold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(names: &[&str]) -> RequestHead {
        RequestHead {
            method: "GET".to_string(),
            target: b"/".to_vec(),
            authority: None,
            headers: names
                .iter()
                .map(|n| (n.to_string(), b"x".to_vec()))
                .collect(),
            ..RequestHead::default()
        }
    }

    #[test]
    fn every_spelling_of_an_identity_header_is_removed() {
        let identity = [
            "x-auth-request-user",
            "authorization",
            "x-auth-request-claims",
        ];
        let req = request(&[
            "x_auth_request_user",
            "x-auth_request-user",
            "X_AUTH_REQUEST_USER",
            "x-auth-request-user",
            "x-auth-request-user",
            "x_auth_request_claims",
            "authorization",
            "x-auth-request-username",
            "x-auth-request",
            "accept",
            "x_forwarded_for",
        ]);
        let removed = headers_to_remove(identity.iter().copied(), &req);
        assert_eq!(
            removed,
            [
                "x-auth-request-user",
                "authorization",
                "x-auth-request-claims",
                "x_auth_request_user",
                "x-auth_request-user",
                "X_AUTH_REQUEST_USER",
                "x_auth_request_claims",
            ]
        );
    }

    #[test]
    fn header_names_compare_as_upstreams_read_them() {
        assert!(same_header("x_a-b", "X-A_B"));
        assert!(!same_header("x-ab", "x-a-b"));
        assert!(!same_header("x-a", "x-a "));
        assert!(!same_header("x.a", "x-a"));
    }
}
