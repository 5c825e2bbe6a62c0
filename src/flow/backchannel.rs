//! OpenID Connect Back-Channel Logout 1.0: the provider POSTs a signed logout
//! token, and every session it names ends.

use rand_core::CryptoRngCore;

use super::event::{BackchannelRejection, Event, Events};
use super::{respond, Context, Expect, Next, RequestHead, Step};
use crate::http::pages::{self, LocalResponse};
use crate::oidc::jwt::JwtError;
use crate::oidc::logout_token::{verify_logout_token, LogoutTokenError, LogoutTokenExpectations};
use crate::session::buckets::IndexEntry;
use crate::session::once;

/// Logout tokens are small; anything bigger is not one.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How old a logout token may be. oidc-provider gives them two minutes.
const MAX_TOKEN_AGE: u64 = 300;

/// The sessions a verified logout token names.
#[derive(Debug)]
pub(super) struct LogoutTarget {
    entries: Vec<IndexEntry>,
}

pub(super) fn handle_request<R: CryptoRngCore>(
    ctx: &Context<'_, R>,
    request: &RequestHead,
) -> Next {
    if request.method != "POST" {
        rejected(ctx.events, BackchannelRejection::NotPost, "not a POST");
        return Next::Done(respond(
            bad_request(405, "the back-channel logout endpoint only accepts POST")
                .with_header("allow", "POST"),
        ));
    }
    // §2.5: the token comes as a form. Reading any other body as one would let
    // a cross-site `text/plain` POST (no preflight) look like a logout.
    if !is_form_urlencoded(request) {
        rejected(ctx.events, BackchannelRejection::NotForm, "not a form POST");
        return Next::Done(respond(bad_request(
            400,
            "the back-channel logout endpoint only accepts application/x-www-form-urlencoded",
        )));
    }
    Next::Wait(
        Box::new(Expect::LogoutTokenBody),
        Step::ReadBody {
            max_bytes: MAX_BODY_BYTES,
        },
    )
}

pub(super) fn handle_body<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    body: Option<&[u8]>,
    _: bool,
) -> Next {
    let Some(body) = body else {
        rejected(
            ctx.events,
            BackchannelRejection::BodyTooLarge,
            "body too large",
        );
        return Next::Done(respond(bad_request(413, "the request body is too large")));
    };
    let mut tokens = url::form_urlencoded::parse(body)
        .filter(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned());
    let (Some(token), None) = (tokens.next(), tokens.next()) else {
        rejected(
            ctx.events,
            BackchannelRejection::TokenMissing,
            "not exactly one logout_token",
        );
        return Next::Done(respond(bad_request(
            400,
            "exactly one logout_token parameter is required",
        )));
    };
    verify(ctx, &token, true)
}

pub(super) fn verify<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    token: &str,
    may_refetch_keys: bool,
) -> Next {
    let Some(provider) = ctx.provider else {
        rejected(
            ctx.events,
            BackchannelRejection::ProviderUnavailable,
            "provider metadata not loaded",
        );
        return Next::Done(respond(
            pages::json_error(
                503,
                "temporarily_unavailable",
                "provider metadata is not loaded yet",
            )
            .with_header("retry-after", "2"),
        ));
    };
    let config = ctx.config;
    let expect = LogoutTokenExpectations {
        issuer: &config.issuer,
        client_id: &config.client_id,
        allowed_algorithms: &config.allowed_algorithms,
        now: ctx.now,
        clock_skew: config.clock_skew,
        max_age: MAX_TOKEN_AGE,
    };
    let verified = match verify_logout_token(token, &provider.jwks, &expect) {
        Ok(verified) => verified,
        Err(LogoutTokenError::Jwt(JwtError::UnknownKid(kid)))
            if may_refetch_keys && provider.may_refetch_jwks_for(&kid, ctx.now) =>
        {
            log::info!(
                "logout token signed with unknown key {kid:?}: refetching the provider's keys"
            );
            return Next::Wait(
                Box::new(Expect::LogoutTokenJwks(token.to_string())),
                Step::RefetchJwks { kid },
            );
        }
        Err(err) => {
            rejected(
                ctx.events,
                BackchannelRejection::Token(err.clone()),
                err.to_string(),
            );
            return Next::Done(respond(bad_request(400, &err.to_string())));
        }
    };

    // §2.7: a `sid` names one session at the provider; a `sub` alone, all of the user's.
    let entry = match (&verified.sid, &verified.sub) {
        (Some(sid), _) => IndexEntry::sid(&config.issuer, sid),
        (None, Some(sub)) => IndexEntry::sub(&config.issuer, sub),
        (None, None) => {
            rejected(
                ctx.events,
                BackchannelRejection::NoSession,
                "the logout token names no session",
            );
            return Next::Done(respond(bad_request(400, "logout token names no session")));
        }
    };
    let step = Step::RecordOnce {
        key: once::ledger_key("logout", &verified.jti),
        until: verified
            .iat
            .saturating_add(MAX_TOKEN_AGE + 2 * config.clock_skew),
        value: verified.jti,
    };
    Next::Wait(
        Box::new(Expect::LogoutTokenRecorded(LogoutTarget {
            entries: vec![entry],
        })),
        step,
    )
}

pub(super) fn end_sessions(events: &Events, target: LogoutTarget, first_use: bool) -> Next {
    if !first_use {
        rejected(
            events,
            BackchannelRejection::Replayed,
            "logout token replayed (jti seen before)",
        );
        return Next::Done(respond(bad_request(
            400,
            "logout token already used (jti replayed)",
        )));
    }
    Next::Wait(
        Box::new(Expect::SessionsEnded),
        Step::EndSessions {
            entries: target.entries,
        },
    )
}

pub(super) fn done(events: &Events, count: usize) -> Step {
    events.record(Event::BackchannelLogout, format!("sessions_ended={count}"));
    respond(LocalResponse {
        status: 200,
        headers: vec![("cache-control".to_string(), "no-store".to_string())],
        body: Vec::new(),
    })
}

fn rejected(events: &Events, rejection: BackchannelRejection, detail: impl Into<String>) {
    events.record(Event::BackchannelLogoutRejected(rejection), detail);
}

/// Exactly one `Content-Type`, whose media type (parameters aside, in any case)
/// is `application/x-www-form-urlencoded`.
fn is_form_urlencoded(request: &RequestHead) -> bool {
    let mut values = request
        .headers
        .iter()
        .filter(|(name, _)| name == "content-type")
        .map(|(_, value)| value.as_slice());
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

fn bad_request(status: u16, description: &str) -> LocalResponse {
    pages::json_error(status, "invalid_request", description)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content_types(values: &[&[u8]]) -> RequestHead {
        RequestHead {
            method: "POST".to_string(),
            headers: values
                .iter()
                .map(|v| ("content-type".to_string(), v.to_vec()))
                .collect(),
            ..RequestHead::default()
        }
    }

    #[test]
    fn only_a_form_is_read() {
        for ok in [
            &b"application/x-www-form-urlencoded"[..],
            b"Application/X-WWW-Form-URLEncoded",
            b"application/x-www-form-urlencoded; charset=UTF-8",
            b" application/x-www-form-urlencoded ;charset=utf-8",
        ] {
            assert!(
                is_form_urlencoded(&with_content_types(&[ok])),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        let form: &[u8] = b"application/x-www-form-urlencoded";
        let bad: [&[&[u8]]; 8] = [
            &[],
            &[b"text/plain"],
            &[b"application/json"],
            &[b"multipart/form-data; boundary=x"],
            &[b"application/x-www-form-urlencoded-not"],
            &[b"application/x-www-form-urlencoded\xff"],
            &[b""],
            &[form, form],
        ];
        for bad in bad {
            assert!(!is_form_urlencoded(&with_content_types(bad)), "{bad:?}");
        }
    }
}
