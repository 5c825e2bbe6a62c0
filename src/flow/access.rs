//! What happens before and after authentication: path checks, public paths,
//! whether a bearer token decides, 401s for clients that cannot follow a
//! login, and the authorization rules.

use rand_core::CryptoRngCore;
use serde_json::{Map, Value};

use super::event::{BearerRejection, Event, Events};
use super::{identity, respond, Context, RequestHead, Step};
use crate::authz::request_kind;
use crate::authz::rules::Target;
use crate::authz::BearerMode;
use crate::config::Config;
use crate::http::pages::{self, LocalResponse};
use crate::http::paths::PathError;

const REALM: &str = "Bearer realm=\"oidc-filter\"";

pub(super) enum Gate {
    /// Answered or forwarded without authentication.
    Done(Step),
    /// A bearer token decides; sessions are not consulted.
    Bearer(String),
    /// Look for a session.
    Session,
}

pub(super) fn gate<R: CryptoRngCore>(ctx: &Context<'_, R>, request: &RequestHead) -> Gate {
    let config = ctx.config;
    match request.normalized_path() {
        Ok(path) if config.access.is_public(path) => {
            return Gate::Done(Step::Forward(identity::strip_request(config, request)));
        }
        Ok(_) => {}
        // A path servers could read differently is never public. It is refused
        // only where a rule would have to judge it; otherwise the decision does
        // not depend on the path (apps using %2F in paths keep working).
        Err(err) if config.access.authorization.depends_on_path() => {
            log::info!("request path refused: {err:?}");
            return Gate::Done(bad_path(request, *err));
        }
        Err(_) => {}
    }
    let mode = config.access.bearer.mode;
    if mode == BearerMode::Ignore {
        return Gate::Session;
    }
    match bearer_token(request) {
        Credential::Bearer(token) => Gate::Bearer(token),
        Credential::Unusable(description) => {
            ctx.events.record(
                Event::BearerRejected(BearerRejection::MalformedHeader),
                description,
            );
            Gate::Done(invalid_token(description))
        }
        Credential::Repeated => {
            ctx.events.record(
                Event::BearerRejected(BearerRejection::RepeatedHeader),
                "more than one Authorization header",
            );
            Gate::Done(respond(
                pages::json_error(
                    400,
                    "invalid_request",
                    "The request carries more than one Authorization header.",
                )
                .with_header(
                    "www-authenticate",
                    format!("{REALM}, error=\"invalid_request\""),
                ),
            ))
        }
        Credential::None if mode == BearerMode::Require => {
            ctx.events.record(
                Event::BearerRejected(BearerRejection::Missing),
                "no bearer token",
            );
            Gate::Done(unauthorized())
        }
        Credential::None => Gate::Session,
    }
}

enum Credential {
    None,
    Bearer(String),
    /// A bearer credential that cannot be a token; the description is ours.
    Unusable(&'static str),
    Repeated,
}

/// RFC 6750 §2.1: `Bearer` (any case), then a b64token.
fn bearer_token(request: &RequestHead) -> Credential {
    let mut values = request
        .headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .map(|(_, v)| v.as_slice());
    let Some(value) = values.next() else {
        return Credential::None;
    };
    if values.next().is_some() {
        return Credential::Repeated;
    }
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(at) => value.split_at(at),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        // Another scheme (Basic, …) is not ours to judge; it never reaches the upstream.
        return Credential::None;
    }
    let token = rest.trim_ascii_start();
    // 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = token.get(..body_len).unwrap_or_default();
    let b64token = !body.is_empty()
        && body.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if token.is_empty() {
        return Credential::Unusable("The Authorization header has no token.");
    }
    if !b64token {
        return Credential::Unusable("The access token has characters a token cannot have.");
    }
    match std::str::from_utf8(token) {
        Ok(token) => Credential::Bearer(token.to_string()),
        Err(_) => Credential::Unusable("The access token has characters a token cannot have."),
    }
}

/// Whether this request can follow a login redirect.
pub(super) fn is_navigation(config: &Config, request: &RequestHead) -> bool {
    let prefixes = &config.access.api_path_prefixes;
    let path = match request.normalized_path() {
        Ok(path) => path.as_str(),
        // Whether it lies under an API prefix cannot be told: never redirect then.
        Err(_) if !prefixes.is_empty() => return false,
        Err(_) => "/",
    };
    request_kind::is_navigation(&request.method, &request.headers, path, prefixes)
}

/// 401 for a request without credentials that cannot follow a login.
pub(super) fn unauthorized() -> Step {
    respond(
        pages::json_error(401, "unauthorized", "Authentication is required.")
            .with_header("www-authenticate", REALM),
    )
}

/// 401 for a refused token (RFC 6750 §3.1). `description` is ours, never the
/// token's content, and has no quotes or backslashes.
pub(super) fn invalid_token(description: &str) -> Step {
    respond(
        pages::json_error(401, "invalid_token", description).with_header(
            "www-authenticate",
            format!("{REALM}, error=\"invalid_token\", error_description=\"{description}\""),
        ),
    )
}

/// JSON for APIs, a page for browsers: the provider cannot be asked yet.
pub(super) fn provider_unavailable_json() -> Step {
    respond(
        pages::json_error(
            503,
            "temporarily_unavailable",
            "The identity provider's configuration has not been loaded yet.",
        )
        .with_header("retry-after", "2"),
    )
}

fn bad_path(request: &RequestHead, err: PathError) -> Step {
    let detail = match err {
        PathError::EncodedSeparator => "The path contains an encoded slash or backslash.",
        PathError::EncodedPercent => "The path contains an encoded percent sign.",
        PathError::Traversal => "The path climbs above the root with '..'.",
        PathError::NotUtf8 => "The path is not valid UTF-8.",
        PathError::ControlChar => "The path contains control characters.",
        PathError::Backslash => "The path contains a backslash.",
        PathError::BadEncoding => "The path contains an invalid percent-encoding.",
        PathError::DotSegmentParameter => "The path contains a dot segment with parameters.",
        PathError::NotAbsolute => "The request target is not an absolute path.",
    };
    let browser = request_kind::is_navigation(&request.method, &request.headers, "/", &[]);
    respond(if browser {
        pages::error_page(400, "Bad request", detail)
    } else {
        pages::json_error(400, "invalid_request", detail)
    })
}

/// How the caller authenticated, which decides the shape of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Session,
    Bearer,
}

/// The authorization rules, after authentication: `None` lets the request
/// through, `Some` is the 403 to send. The refusal names no claim values.
pub(super) fn authorize(
    config: &Config,
    request: &RequestHead,
    sub: Option<&str>,
    claims: &Map<String, Value>,
    via: Via,
    events: &Events,
) -> Option<Step> {
    let path = match request.normalized_path() {
        Ok(path) => path,
        // `gate` refused these where rules must judge them; otherwise nothing here depends on the path.
        Err(err) if config.access.authorization.depends_on_path() => {
            return Some(bad_path(request, *err))
        }
        Err(_) => return None,
    };
    let target = Target {
        authority: request.authority.as_deref(),
        method: &request.method,
        path,
    };
    let denial = match sub {
        Some(sub) if !claims.contains_key("sub") => {
            let mut with_sub = claims.clone();
            with_sub.insert("sub".to_string(), Value::String(sub.to_string()));
            config.access.authorization.decide(&target, &with_sub)
        }
        _ => config.access.authorization.decide(&target, claims),
    }
    .err()?;
    events.record(Event::AccessDenied, denial.to_string());
    let response: LocalResponse = match via {
        Via::Bearer if denial.is_insufficient() => pages::json_error(
            403,
            "insufficient_scope",
            "The access token does not grant access to this resource.",
        )
        .with_header(
            "www-authenticate",
            format!("{REALM}, error=\"insufficient_scope\""),
        ),
        Via::Bearer => forbidden_json(),
        Via::Session if is_navigation(config, request) => pages::error_page(
            403,
            "Access denied",
            "Your account is not allowed to see this page.",
        ),
        Via::Session => forbidden_json(),
    };
    Some(respond(response))
}

fn forbidden_json() -> LocalResponse {
    pages::json_error(403, "forbidden", "Access to this resource is not allowed.")
}
