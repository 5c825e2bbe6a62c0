//! Requests with `Authorization: Bearer`: JWT access tokens verified against
//! the provider's keys (each worker remembers what it verified, see
//! [`crate::oidc::access_token_cache`]), opaque ones through introspection
//! (RFC 7662) with a small cache in the store, then the authorization rules.

use std::rc::Rc;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::access::{self, Via};
use super::event::{BearerRejection, Event};
use super::{identity, upstream_identity, Callout, CalloutOutcome, Context, Expect, Next};
use super::{RequestHead, Step};
use crate::cache;
use crate::config::ClaimSource;
use crate::crypto;
use crate::oidc::access_token::{
    looks_like_jwt, verify_access_token, AccessTokenError, AccessTokenExpectations,
};
use crate::oidc::introspection::{
    judge_introspection, parse_introspection_response, IntrospectionExpectations,
};
use crate::oidc::jwt::JwtError;
use crate::oidc::token::{self, ClientCredentials};

/// A request authenticating with a bearer token.
pub(super) struct BearerRequest {
    pub request: RequestHead,
    pub token: String,
}

impl std::fmt::Debug for BearerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerRequest")
            .field("method", &self.request.method)
            .field("token", &"<redacted>")
            .finish()
    }
}

pub(super) fn authenticate<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    bearer: BearerRequest,
    may_refetch_keys: bool,
) -> Next {
    let config = ctx.config;
    let Some(provider) = ctx.provider else {
        rejected(
            ctx,
            BearerRejection::ProviderUnavailable,
            "provider metadata not loaded",
        );
        return Next::Done(access::provider_unavailable_json());
    };
    if !jwt_shaped(&bearer.token) {
        return introspect(ctx, bearer);
    }
    let expect = AccessTokenExpectations {
        issuer: &config.issuer,
        client_id: &config.client_id,
        audiences: &config.access.bearer.audiences,
        allowed_algorithms: &config.allowed_algorithms,
        now: ctx.now,
        clock_skew: config.clock_skew,
    };
    let digest = cache::digest(bearer.token.as_bytes());
    if let Some(token) = ctx
        .caches
        .access_tokens
        .get(&digest, &provider.jwks, ctx.now)
    {
        return Next::Done(admit(ctx, &bearer, token.sub.as_deref(), &token.claims));
    }
    match verify_access_token(&bearer.token, &provider.jwks, &expect) {
        Ok(token) => {
            let token = Rc::new(token);
            ctx.caches
                .access_tokens
                .insert(digest, &provider.jwks, token.clone(), ctx.now);
            Next::Done(admit(ctx, &bearer, token.sub.as_deref(), &token.claims))
        }
        Err(AccessTokenError::Jwt(JwtError::UnknownKid(kid)))
            if may_refetch_keys && provider.may_refetch_jwks_for(&kid, ctx.now) =>
        {
            log::info!(
                "access token signed with unknown key {kid:?}: refetching the provider's keys"
            );
            Next::Wait(
                Box::new(Expect::BearerJwks(bearer)),
                Step::RefetchJwks { kid },
            )
        }
        Err(err) => {
            rejected(ctx, BearerRejection::Token(err.clone()), err.to_string());
            Next::Done(access::invalid_token(describe(&err)))
        }
    }
}

/// Three dot-separated parts: a JWS to verify, never an opaque token to
/// introspect. An unsecured JWT (`alg: none`) has an empty third part and
/// must meet the verifier, which refuses it, not the introspection endpoint.
fn jwt_shaped(token: &str) -> bool {
    if looks_like_jwt(token) {
        return true;
    }
    let parts: Vec<&str> = token.split('.').collect();
    matches!(parts.as_slice(), [header, payload, ""] if !header.is_empty() && !payload.is_empty())
}

/// Authenticated: the rules decide, then the request goes upstream with the
/// identity headers and exactly the token that was checked.
fn admit<R: CryptoRngCore>(
    ctx: &Context<'_, R>,
    bearer: &BearerRequest,
    sub: Option<&str>,
    claims: &Map<String, Value>,
) -> Step {
    let config = ctx.config;
    ctx.events.record(Event::BearerAccepted, "");
    let denied = access::authorize(
        config,
        &bearer.request,
        sub,
        claims,
        Via::Bearer,
        ctx.events,
    );
    if let Some(denied) = denied {
        return denied;
    }
    let mut forward = identity::strip_request(config, &bearer.request);
    if !forward.remove_headers.iter().any(|h| h == "authorization") {
        forward.remove_headers.push("authorization".to_string());
    }
    forward.set_headers.push((
        "authorization".to_string(),
        format!("Bearer {}", bearer.token),
    ));
    forward
        .set_headers
        .extend(upstream_identity::identity_headers(
            config,
            ClaimSource::Bearer,
            sub,
            claims,
        ));
    Step::Forward(forward)
}

fn rejected<R: CryptoRngCore>(
    ctx: &Context<'_, R>,
    rejection: BearerRejection,
    detail: impl Into<String>,
) {
    ctx.events.record(Event::BearerRejected(rejection), detail);
}

/// Fixed texts for `error_description`: nothing from the token itself.
fn describe(err: &AccessTokenError) -> &'static str {
    match err {
        AccessTokenError::Expired => "The access token has expired.",
        AccessTokenError::NotYetValid => "The access token is not valid yet.",
        AccessTokenError::WrongAudience => "The access token is not meant for this service.",
        AccessTokenError::WrongIssuer(_) => "The access token comes from another issuer.",
        AccessTokenError::Inactive => "The access token is not active.",
        AccessTokenError::Jwt(JwtError::BadSignature) => "The access token signature is invalid.",
        AccessTokenError::Jwt(JwtError::AlgorithmNotAllowed(_)) => {
            "The access token is signed with an algorithm that is not allowed."
        }
        AccessTokenError::Jwt(JwtError::UnknownKid(_) | JwtError::NoMatchingKey) => {
            "The access token is signed with an unknown key."
        }
        _ => "The access token is invalid.",
    }
}

// ---- opaque tokens: introspection behind a cache -------------------------------------

/// One cache slot's value. The slot is chosen by the token's hash, so the
/// cache never holds more than `max_entries` keys; a collision just evicts.
#[derive(Serialize, Deserialize)]
struct CacheEntry {
    /// SHA-256 of the token: the store never holds tokens.
    token_hash: String,
    valid_until: u64,
    /// Whether the token passed [`judge_introspection`].
    admitted: bool,
    #[serde(default)]
    claims: Map<String, Value>,
}

fn cache_slot(token: &str, max_entries: u64) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    format!(
        "introspection/{}",
        u64::from_be_bytes(first) % max_entries.max(1)
    )
}

fn introspect<R: CryptoRngCore>(ctx: &mut Context<'_, R>, bearer: BearerRequest) -> Next {
    let introspection = &ctx.config.access.bearer.introspection;
    if !introspection.enabled {
        rejected(
            ctx,
            BearerRejection::OpaqueNotAccepted,
            "not a JWT, and bearer.introspection is off",
        );
        return Next::Done(access::invalid_token(
            "The access token is not a JWT, and opaque tokens are not accepted.",
        ));
    }
    if introspection.cache_seconds == 0 {
        return call_introspection(ctx, bearer);
    }
    let key = cache_slot(&bearer.token, introspection.max_entries);
    Next::Wait(
        Box::new(Expect::IntrospectionCache(bearer)),
        Step::LoadCache { key },
    )
}

pub(super) fn handle_cached<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    bearer: BearerRequest,
    stored: Option<&[u8]>,
) -> Next {
    let hash = crypto::sha256_b64url(bearer.token.as_bytes());
    let hit = stored
        .and_then(|bytes| serde_json::from_slice::<CacheEntry>(bytes).ok())
        .filter(|entry| {
            crypto::constant_time_eq(entry.token_hash.as_bytes(), hash.as_bytes())
                && ctx.now < entry.valid_until
        });
    match hit {
        Some(entry) if entry.admitted => {
            let sub = entry.claims.get("sub").and_then(Value::as_str);
            Next::Done(admit(ctx, &bearer, sub, &entry.claims))
        }
        Some(_) => {
            rejected(
                ctx,
                BearerRejection::Token(AccessTokenError::Inactive),
                "access token is not active (cached introspection)",
            );
            Next::Done(access::invalid_token("The access token is not active."))
        }
        None => call_introspection(ctx, bearer),
    }
}

fn call_introspection<R: CryptoRngCore>(ctx: &mut Context<'_, R>, bearer: BearerRequest) -> Next {
    let config = ctx.config;
    let Some(provider) = ctx.provider else {
        rejected(
            ctx,
            BearerRejection::ProviderUnavailable,
            "provider metadata not loaded",
        );
        return Next::Done(access::provider_unavailable_json());
    };
    let Some(endpoint) = &provider.metadata.introspection_endpoint else {
        rejected(
            ctx,
            BearerRejection::IntrospectionUnavailable,
            "bearer.introspection is enabled but the provider announces no introspection_endpoint",
        );
        return Next::Done(access::invalid_token(
            "Opaque access tokens cannot be checked here.",
        ));
    };
    let client = ClientCredentials {
        client_id: &config.client_id,
        client_secret: config.client_secret.expose(),
        method: config.client_auth,
    };
    let form = token::introspection_request(&client, &bearer.token);
    let mut callout = Callout::new(config, "POST", endpoint);
    callout.headers = form.headers;
    callout.body = form.body;
    Next::Wait(
        Box::new(Expect::Introspection(bearer)),
        Step::Callout(callout),
    )
}

pub(super) fn handle_introspection<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    bearer: BearerRequest,
    outcome: CalloutOutcome,
) -> Next {
    let config = ctx.config;
    let members = match outcome {
        CalloutOutcome::Failed(reason) => Err(reason),
        CalloutOutcome::Response { status, body } => {
            parse_introspection_response(status, &body).map_err(|e| e.to_string())
        }
    };
    let members = match members {
        Ok(members) => members,
        Err(reason) => {
            // Not cached: the next request asks again.
            rejected(ctx, BearerRejection::IntrospectionFailed, reason);
            return Next::Done(super::respond(
                crate::http::pages::json_error(
                    503,
                    "temporarily_unavailable",
                    "The access token could not be checked. Please retry.",
                )
                .with_header("retry-after", "2"),
            ));
        }
    };
    let expect = IntrospectionExpectations {
        issuer: &config.issuer,
        audiences: &config.access.bearer.audiences,
        now: ctx.now,
        clock_skew: config.clock_skew,
    };
    let verdict = judge_introspection(&members, &expect);
    let admitted = verdict.is_ok();
    let cache = &config.access.bearer.introspection;
    let mut valid_until = ctx.now.saturating_add(cache.cache_seconds);
    if let (Ok(()), Some(exp)) = (&verdict, members.get("exp").and_then(Value::as_u64)) {
        valid_until = valid_until.min(exp);
    }
    let (step, claims) = match verdict {
        Ok(()) => {
            let mut claims = members;
            claims.remove("active");
            let sub = claims.get("sub").and_then(Value::as_str);
            (admit(ctx, &bearer, sub, &claims), claims)
        }
        Err(err) => {
            rejected(ctx, BearerRejection::Token(err.clone()), err.to_string());
            (access::invalid_token(describe(&err)), Map::new())
        }
    };
    let entry = CacheEntry {
        token_hash: crypto::sha256_b64url(bearer.token.as_bytes()),
        valid_until,
        admitted,
        claims,
    };
    if cache.cache_seconds == 0 {
        return Next::Done(step);
    }
    Next::Done(Step::StoreCache {
        key: cache_slot(&bearer.token, cache.max_entries),
        value: serde_json::to_vec(&entry).unwrap_or_default(),
        then: Box::new(step),
    })
}
