//! RP-initiated logout: end the session here, then at the provider.
//!
//! Cross-site requests cannot log a user out: a GET is honoured only when the
//! browser says it is not cross-site (`Sec-Fetch-Site`), and other methods need
//! the same; otherwise the user gets a page with a button that POSTs here.

use rand_core::CryptoRngCore;

use super::{expire_cookie, respond, Context, RequestHead, Respond, Step, StoreWrite};
use crate::crypto;
use crate::http::pages;
use crate::session::{Session, SessionKey};

pub(super) fn logged_out<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    session: Option<Session>,
    key: Option<SessionKey>,
) -> Step {
    let config = ctx.config;
    if !same_site_request(request) {
        log::info!("cross-site logout request refused");
        let logout_path = config.logout_path.as_deref().unwrap_or("/");
        return respond(pages::confirm_logout_page(logout_path));
    }

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
                if let Some(id_token) = session.as_ref().and_then(|s| s.id_token.as_deref()) {
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
    log::info!("session ended by logout");
    Step::Respond(Respond { response, writes })
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
