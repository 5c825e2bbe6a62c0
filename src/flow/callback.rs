//! The authorization response at the redirect URI: checks, code exchange, ID
//! token validation and the new session.

use rand_core::CryptoRngCore;

use super::event::{Event, LoginFailure, TokenEndpointFailure};
use super::{
    expire_cookie, provider_unavailable, respond, session_id, Callout, CalloutOutcome, Context,
    Expect, Next, RequestHead, Respond, Step, StoreWrite,
};
use crate::crypto;
use crate::http::cookies::{self, SameSite};
use crate::http::pages::{self, LocalResponse};
use crate::http::paths;
use crate::oidc::id_token::{verify_id_token, IdTokenError, IdTokenExpectations, NonceCheck};
use crate::oidc::jwt::JwtError;
use crate::oidc::token::{self, ClientCredentials, TokenResponse};
use crate::session::login::LoginState;
use crate::session::{once, Session, SessionId, SessionKey};

/// A callback whose login cookie checked out, on its way to a session.
#[derive(Debug)]
pub(super) struct Callback {
    login: LoginState,
    cookie_name: String,
    code: String,
    /// The session this browser had before, replaced by the new one.
    previous_session_key: Option<SessionKey>,
}

pub(super) fn handle_callback<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
) -> Next {
    if ctx.provider.is_none() {
        failed(
            ctx,
            LoginFailure::ProviderUnavailable,
            "provider metadata not loaded",
        );
        return Next::Done(provider_unavailable());
    }
    let config = ctx.config;
    let (_, query) = paths::split_path_query(&request.target);
    let params = match CallbackParams::parse(query.unwrap_or_default()) {
        Ok(params) => params,
        Err(name) => {
            failed(
                ctx,
                LoginFailure::DuplicateParameter,
                format!("{name:?} repeated"),
            );
            return refuse(format!(
                "The login response repeats the parameter {name:?}."
            ));
        }
    };
    let Some(state) = params.state else {
        failed(ctx, LoginFailure::StateMissing, "no state parameter");
        return refuse("The login response has no state parameter.".to_string());
    };

    let cookie_name = LoginState::cookie_name(&config.cookies.login_prefix, &state);
    let parsed = request.cookies();
    let Some(sealed) = cookies::cookie_value(parsed, &cookie_name) else {
        failed(
            ctx,
            LoginFailure::LoginCookieMissing,
            "no login cookie for this state (expired, replayed or from another browser)",
        );
        return refuse(
            "This login does not belong to this browser, has already been used, or has expired. Please start again."
                .to_string(),
        );
    };
    let expire = expire_cookie(config, &cookie_name);
    let login = match LoginState::open(ctx.keys, &cookie_name, sealed) {
        Some(login) if crypto::constant_time_eq(login.state.as_bytes(), state.as_bytes()) => login,
        _ => {
            failed(
                ctx,
                LoginFailure::StateMismatch,
                "the login cookie does not open or does not match the state",
            );
            return refuse_and_expire(
                "The login state does not match. Please start again.",
                expire,
            );
        }
    };
    if ctx.now >= login.issued_at.saturating_add(config.login_timeout) {
        failed(ctx, LoginFailure::StateExpired, "the login took too long");
        return refuse_and_expire(
            "This login took too long and has expired. Please start again.",
            expire,
        );
    }

    if let Some(error) = params.error {
        let detail = match params.error_description {
            Some(description) => format!("The identity provider answered {error}: {description}"),
            None => format!("The identity provider answered {error}."),
        };
        failed(
            ctx,
            LoginFailure::ProviderError,
            format!("the provider answered error={error:?}"),
        );
        let mut response = pages::error_page(401, "Login failed", &truncate(&detail, 300));
        response.headers.push(expire);
        return Next::Done(respond(response));
    }

    // RFC 9207: a response that names another issuer came from a mixed-up provider.
    let iss_required = ctx
        .provider
        .is_some_and(|p| p.metadata.authorization_response_iss_parameter_supported);
    match params.iss.as_deref() {
        Some(iss) if iss != config.issuer => {
            failed(
                ctx,
                LoginFailure::IssuerMismatch,
                format!("iss parameter {iss:?} is not the configured issuer"),
            );
            return refuse_and_expire(
                "The login response comes from an unexpected issuer.",
                expire,
            );
        }
        None if iss_required => {
            failed(ctx, LoginFailure::IssuerMissing, "no iss parameter");
            return refuse_and_expire(
                "The login response lacks the iss parameter the provider promises.",
                expire,
            );
        }
        _ => {}
    }
    let Some(code) = params.code.filter(|c| !c.is_empty()) else {
        failed(ctx, LoginFailure::CodeMissing, "no code parameter");
        return refuse_and_expire("The login response has no authorization code.", expire);
    };

    let step = Step::RecordOnce {
        key: once::ledger_key("login", &login.state),
        value: login.state.clone(),
        until: login.issued_at.saturating_add(config.login_timeout),
    };
    let callback = Callback {
        login,
        cookie_name,
        code,
        previous_session_key: session_id(config, request).map(|id| id.store_key()),
    };
    Next::Wait(Box::new(Expect::LoginRecorded(callback)), step)
}

pub(super) fn exchange_code<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    cb: Callback,
    first_use: bool,
) -> Next {
    let config = ctx.config;
    if !first_use {
        failed(
            ctx,
            LoginFailure::StateReplayed,
            "this login's state was used before",
        );
        let expire = expire_cookie(config, &cb.cookie_name);
        return refuse_and_expire(
            "This login has already been completed. Please start again.",
            expire,
        );
    }
    let Some(provider) = ctx.provider else {
        failed(
            ctx,
            LoginFailure::ProviderUnavailable,
            "provider metadata not loaded",
        );
        return Next::Done(provider_unavailable());
    };
    let client = ClientCredentials {
        client_id: &config.client_id,
        client_secret: config.client_secret.expose(),
        method: config.client_auth,
    };
    let form = token::authorization_code_request(
        &client,
        &cb.code,
        config.redirect_uri.as_str(),
        &cb.login.code_verifier,
    );
    let mut callout = Callout::new(config, "POST", &provider.metadata.token_endpoint);
    callout.headers = form.headers;
    callout.body = form.body;
    Next::Wait(Box::new(Expect::TokenResponse(cb)), Step::Callout(callout))
}

pub(super) fn handle_token_response<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    cb: Callback,
    outcome: CalloutOutcome,
) -> Next {
    let tokens = match outcome {
        CalloutOutcome::Failed(reason) => {
            failed(
                ctx,
                LoginFailure::TokenEndpoint(TokenEndpointFailure::Unreachable),
                reason,
            );
            return bad_gateway(
                ctx,
                &cb,
                "The identity provider could not be reached to complete the login.",
            );
        }
        CalloutOutcome::Response { status, body } => {
            match token::parse_token_response(status, &body) {
                Ok(tokens) => tokens,
                Err(err) => {
                    failed(
                        ctx,
                        LoginFailure::TokenEndpoint(TokenEndpointFailure::of(&err)),
                        err.to_string(),
                    );
                    return bad_gateway(
                        ctx,
                        &cb,
                        &format!("The identity provider refused to complete the login: {err}"),
                    );
                }
            }
        }
    };
    finish_login(ctx, cb, tokens, true)
}

pub(super) fn finish_login<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    cb: Callback,
    tokens: TokenResponse,
    may_refetch_keys: bool,
) -> Next {
    let config = ctx.config;
    let Some(provider) = ctx.provider else {
        failed(
            ctx,
            LoginFailure::ProviderUnavailable,
            "provider metadata not loaded",
        );
        return Next::Done(provider_unavailable());
    };
    let Some(raw_id_token) = tokens.id_token.as_deref() else {
        failed(
            ctx,
            LoginFailure::NoIdToken,
            "the token response has no id_token",
        );
        return bad_gateway(ctx, &cb, "The identity provider returned no ID token.");
    };
    let expect = IdTokenExpectations {
        issuer: &config.issuer,
        client_id: &config.client_id,
        nonce: NonceCheck::Equals(&cb.login.nonce),
        allowed_algorithms: &config.allowed_algorithms,
        now: ctx.now,
        clock_skew: config.clock_skew,
        max_age: config.login_timeout,
    };
    let id_token = match verify_id_token(raw_id_token, &provider.jwks, &expect) {
        Ok(verified) => verified,
        Err(IdTokenError::Jwt(JwtError::UnknownKid(kid)))
            if may_refetch_keys && provider.may_refetch_jwks_for(&kid, ctx.now) =>
        {
            log::info!("ID token signed with unknown key {kid:?}: refetching the provider's keys");
            return Next::Wait(
                Box::new(Expect::Jwks(cb, tokens)),
                Step::RefetchJwks { kid },
            );
        }
        Err(err) => {
            failed(ctx, LoginFailure::IdToken(err.clone()), err.to_string());
            return bad_gateway(
                ctx,
                &cb,
                &format!("The identity provider's ID token was rejected: {err}"),
            );
        }
    };

    let now = ctx.now;
    let keep_id_token = config.upstream.authorization
        == crate::config::UpstreamAuthorization::IdToken
        || provider.metadata.end_session_endpoint.is_some();
    let claims = session_claims(config, &id_token.claims, tokens.scope.as_deref());
    let session = Session {
        sub: id_token.sub,
        sid: id_token.sid,
        created_at: now,
        expires_at: now.saturating_add(config.session.absolute_timeout),
        last_seen: now,
        access_token: tokens.access_token,
        access_token_expires_at: tokens.expires_in.map(|s| now.saturating_add(s)),
        access_token_lifetime: tokens.expires_in,
        refresh_token: tokens.refresh_token,
        id_token: tokens.id_token.filter(|_| keep_id_token),
        claims,
        refreshing_until: None,
    };
    let id = SessionId::generate(ctx.rng);
    let mut writes = Vec::new();
    if let Some(previous) = cb.previous_session_key {
        writes.push(StoreWrite::Delete { key: previous });
    }
    writes.push(StoreWrite::Put {
        key: id.store_key(),
        session: Box::new(session),
    });

    // A redirect would continue the provider's cross-site navigation, and
    // browsers send no `Strict` cookie along it: the new session would look
    // absent and the login start over, forever. A page of our own that moves on
    // makes the next request same-site.
    let mut response = if config.cookies.attributes.same_site == SameSite::Strict {
        pages::continue_page(&cb.login.return_to)
    } else {
        pages::redirect(&cb.login.return_to)
    };
    response
        .headers
        .push(expire_cookie(config, &cb.cookie_name));
    response.headers.push((
        "set-cookie".to_string(),
        cookies::set_cookie(
            &config.cookies.session_name,
            id.cookie_value(),
            Some(config.session.absolute_timeout),
            &config.cookies.attributes,
        ),
    ));
    ctx.events
        .record(Event::LoginSucceeded, "new session created");
    Next::Done(Step::Respond(Respond { response, writes }))
}

fn failed<R: CryptoRngCore>(
    ctx: &Context<'_, R>,
    failure: LoginFailure,
    detail: impl Into<String>,
) {
    ctx.events.record(Event::LoginFailed(failure), detail);
}

/// The ID token claims a session keeps (see [`crate::config::Config::retained_claims`]).
/// ID tokens carry no scope, so rules on scopes see what the token response granted.
pub(super) fn session_claims(
    config: &crate::config::Config,
    id_claims: &serde_json::Map<String, serde_json::Value>,
    granted_scope: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut claims: serde_json::Map<_, _> = config
        .retained_claims()
        .filter_map(|name| Some((name.to_string(), id_claims.get(name)?.clone())))
        .collect();
    if config.retained_claims().any(|name| name == "scope") && !claims.contains_key("scope") {
        if let Some(scope) = granted_scope {
            claims.insert("scope".to_string(), scope.into());
        }
    }
    claims
}

/// The parameters of an authorization response (RFC 6749 §4.1.2, RFC 9207).
#[derive(Default)]
struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

impl CallbackParams {
    /// Refuses a repeated parameter (RFC 6749 §3.1), naming it.
    fn parse(query: &[u8]) -> Result<CallbackParams, String> {
        let mut params = CallbackParams::default();
        for (name, value) in url::form_urlencoded::parse(query) {
            let slot = match name.as_ref() {
                "state" => &mut params.state,
                "code" => &mut params.code,
                "error" => &mut params.error,
                "error_description" => &mut params.error_description,
                "iss" => &mut params.iss,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(name.into_owned());
            }
        }
        Ok(params)
    }
}

fn refuse(detail: String) -> Next {
    Next::Done(respond(pages::error_page(400, "Login failed", &detail)))
}

fn refuse_and_expire(detail: &str, expire: (String, String)) -> Next {
    let mut response: LocalResponse = pages::error_page(400, "Login failed", detail);
    response.headers.push(expire);
    Next::Done(respond(response))
}

/// The provider misbehaved or was unreachable: 502, and the login may be retried.
fn bad_gateway<R: CryptoRngCore>(ctx: &Context<'_, R>, cb: &Callback, detail: &str) -> Next {
    let mut response = pages::error_page_with_retry(
        502,
        "Login could not be completed",
        &truncate(detail, 300),
        &cb.login.return_to,
    );
    response
        .headers
        .push(expire_cookie(ctx.config, &cb.cookie_name));
    Next::Done(respond(response))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
