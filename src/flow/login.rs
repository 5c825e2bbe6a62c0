//! Starting a login: the redirect to the authorization endpoint (code flow, PKCE S256).

use rand_core::CryptoRngCore;

use super::event::Event;
use super::{access, expire_cookie, provider_unavailable, Context, RequestHead, Respond, Step};
use crate::http::cookies;
use crate::http::pages;
use crate::http::paths;
use crate::oidc::pkce;
use crate::session::login::{self as login_state, LoginState};

/// Logins in flight per browser before older login cookies are dropped, so a
/// redirect loop cannot fill the browser's cookie jar.
const MAX_LOGINS_IN_FLIGHT: usize = 8;

pub(super) fn start_login<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
) -> Step {
    // Scripts and API clients cannot use a redirect to the provider.
    if !access::is_navigation(ctx.config, request) {
        return access::unauthorized();
    }
    let Some(provider) = ctx.provider else {
        return provider_unavailable();
    };
    let config = ctx.config;

    // Only a GET can be replayed after login; anything else returns to the root.
    let return_to = match request.method.as_str() {
        "GET" | "HEAD" => paths::same_origin_return_target(&request.target),
        _ => None,
    }
    .map_or_else(|| "/".to_string(), login_state::bounded_return_to);

    let login = LoginState::new(return_to, ctx.now, ctx.rng);
    let cookie_name = LoginState::cookie_name(&config.cookies.login_prefix, &login.state);
    let sealed = login.seal(ctx.keys, &cookie_name, ctx.rng);

    let mut location = provider.metadata.authorization_endpoint.clone();
    location
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", config.redirect_uri.as_str())
        .append_pair("scope", &config.scope)
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair(
            "code_challenge",
            &pkce::s256_challenge(&login.code_verifier),
        )
        .append_pair("code_challenge_method", "S256");

    let mut response = pages::redirect(location.as_str());
    let parsed = request.cookies();
    let in_flight: Vec<&str> = parsed
        .iter()
        .filter(|(name, _)| {
            LoginState::is_cookie_name(&config.cookies.login_prefix, name.as_bytes())
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if in_flight.len() >= MAX_LOGINS_IN_FLIGHT {
        for name in in_flight {
            response.headers.push(expire_cookie(config, name));
        }
    }
    response.headers.push((
        "set-cookie".to_string(),
        cookies::set_cookie(
            &cookie_name,
            &sealed,
            Some(config.login_timeout),
            &config.cookies.login_attributes(),
        ),
    ));
    ctx.events.record(
        Event::LoginStarted,
        "no session: redirecting to the provider",
    );
    Step::Respond(Respond {
        response,
        writes: Vec::new(),
    })
}
