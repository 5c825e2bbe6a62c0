//! What the flow decided, for operators: each event names a counter and a log line.
//!
//! The flow records an [`Event`] where it decides; the host counts it under
//! [`Event::metric`] and logs [`Event::name`] with the reason and a detail.
//! Names and reasons are fixed strings chosen here, never text from a request
//! or a token, so the set of metric names is bounded.

use std::cell::RefCell;

use crate::oidc::access_token::AccessTokenError;
use crate::oidc::id_token::IdTokenError;
use crate::oidc::jwt::JwtError;
use crate::oidc::logout_token::LogoutTokenError;
use crate::oidc::token::TokenError;

/// Prefix of every metric name; Envoy adds its own `wasmcustom.` in front.
pub const METRIC_PREFIX: &str = "oidc_filter.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A browser was sent to the provider to log in.
    LoginStarted,
    /// A callback ended in a new session.
    LoginSucceeded,
    LoginFailed(LoginFailure),
    /// A session's tokens were refreshed at the provider.
    SessionRefreshed,
    RefreshFailed(RefreshFailure),
    /// A session ended through the logout path.
    Logout,
    /// A cross-site logout request got the confirmation page instead.
    LogoutConfirmationShown,
    /// The provider did not revoke the logged-out session's token (the session ended anyway).
    RevocationFailed,
    /// A valid, first-seen logout token ended the sessions it names.
    BackchannelLogout,
    BackchannelLogoutRejected(BackchannelRejection),
    BearerAccepted,
    BearerRejected(BearerRejection),
    /// An authorization rule refused the request (403).
    AccessDenied,
}

/// Why a callback did not log the user in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    DuplicateParameter,
    /// No `state` parameter.
    StateMissing,
    /// No login cookie for this state: expired, used, or another browser's login.
    LoginCookieMissing,
    /// The login cookie does not open, or its state differs.
    StateMismatch,
    /// The login took longer than `login_timeout_seconds`.
    StateExpired,
    /// The single-use ledger has seen this state: a replayed callback.
    StateReplayed,
    /// The provider answered with `error=…`.
    ProviderError,
    IssuerMismatch,
    IssuerMissing,
    CodeMissing,
    ProviderUnavailable,
    TokenEndpoint(TokenEndpointFailure),
    NoIdToken,
    IdToken(IdTokenError),
}

/// Why a refresh did not give the session new tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshFailure {
    ProviderUnavailable,
    /// The provider refused the refresh token (`invalid_grant`): the session ended.
    InvalidGrant,
    TokenEndpoint(TokenEndpointFailure),
    IdToken(IdTokenError),
    /// The refreshed ID token names another user: the session ended.
    SubjectChanged,
}

/// How a call to the token endpoint failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEndpointFailure {
    /// Not sent, reset, or no answer.
    Unreachable,
    /// HTTP 504: the gateway's callout timed out (or the provider's gateway did).
    Timeout,
    /// A 4xx answer (wrong client credentials, an invalid code, …).
    Refused,
    /// A 5xx answer other than 504.
    ServerError,
    /// A 200 answer that is not a usable token response.
    InvalidResponse,
}

impl TokenEndpointFailure {
    pub fn of(error: &TokenError) -> TokenEndpointFailure {
        match error {
            TokenError::Status { status: 504, .. } => TokenEndpointFailure::Timeout,
            TokenError::Status { status, .. } if *status >= 500 => {
                TokenEndpointFailure::ServerError
            }
            TokenError::Status { .. } => TokenEndpointFailure::Refused,
            _ => TokenEndpointFailure::InvalidResponse,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            TokenEndpointFailure::Unreachable => "token_endpoint_unreachable",
            TokenEndpointFailure::Timeout => "token_endpoint_timeout",
            TokenEndpointFailure::Refused => "token_endpoint_refused",
            TokenEndpointFailure::ServerError => "token_endpoint_server_error",
            TokenEndpointFailure::InvalidResponse => "token_response_invalid",
        }
    }
}

/// Why a back-channel logout request ended nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackchannelRejection {
    NotPost,
    NotForm,
    BodyTooLarge,
    /// Not exactly one `logout_token` parameter.
    TokenMissing,
    ProviderUnavailable,
    Token(LogoutTokenError),
    /// Neither `sid` nor `sub`.
    NoSession,
    /// The `jti` was seen before.
    Replayed,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerRejection {
    /// An `Authorization: Bearer` header that cannot hold a token.
    MalformedHeader,
    RepeatedHeader,
    /// `bearer.mode: require` and no token.
    Missing,
    Token(AccessTokenError),
    /// An opaque token, and `bearer.introspection` is off.
    OpaqueNotAccepted,
    /// An opaque token, and the provider announces no introspection endpoint.
    IntrospectionUnavailable,
    /// The introspection call failed (503, retried by the client).
    IntrospectionFailed,
    ProviderUnavailable,
}

impl Event {
    /// The counter's family: `login_failed`, `bearer_accepted`, …
    pub fn name(&self) -> &'static str {
        match self {
            Event::LoginStarted => "login_started",
            Event::LoginSucceeded => "login_succeeded",
            Event::LoginFailed(_) => "login_failed",
            Event::SessionRefreshed => "session_refreshed",
            Event::RefreshFailed(_) => "refresh_failed",
            Event::Logout => "logout",
            Event::LogoutConfirmationShown => "logout_confirmation_shown",
            Event::RevocationFailed => "revocation_failed",
            Event::BackchannelLogout => "backchannel_logout",
            Event::BackchannelLogoutRejected(_) => "backchannel_logout_rejected",
            Event::BearerAccepted => "bearer_accepted",
            Event::BearerRejected(_) => "bearer_rejected",
            Event::AccessDenied => "access_denied",
        }
    }

    /// Why, for the families that have reasons.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Event::LoginFailed(failure) => failure.name(),
            Event::RefreshFailed(failure) => failure.name(),
            Event::BackchannelLogoutRejected(rejection) => rejection.name(),
            Event::BearerRejected(rejection) => rejection.name(),
            _ => return None,
        })
    }

    /// The metric counting this event: `oidc_filter.<name>`, or with a reason
    /// `oidc_filter.<name>.reason.<reason>` (a tag regex in Envoy's
    /// `stats_config` turns that into a `reason` label). Families with reasons
    /// have no separate total, so a sum over the label counts each event once.
    pub fn metric(&self) -> Metric {
        Metric {
            name: self.name(),
            reason: self.reason(),
        }
    }

    /// Whether an operator should look: failures log at warn, the rest at info.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Event::LoginFailed(_)
                | Event::RefreshFailed(_)
                | Event::RevocationFailed
                | Event::BackchannelLogoutRejected(_)
                | Event::BearerRejected(
                    BearerRejection::IntrospectionFailed
                        | BearerRejection::IntrospectionUnavailable
                        | BearerRejection::ProviderUnavailable,
                )
        )
    }

    /// Accepted bearer tokens are API traffic: a line each would flood the
    /// log at info, so they log at debug.
    pub fn is_routine(&self) -> bool {
        matches!(self, Event::BearerAccepted)
    }
}

/// Every metric an event can name, defined by the host at start so that
/// each shows (at 0) before it first happens.
pub fn known_metrics() -> Vec<Metric> {
    let jwt = || {
        vec![
            JwtError::Malformed(String::new()),
            JwtError::AlgorithmNotAllowed(String::new()),
            JwtError::UnknownKid(String::new()),
            JwtError::NoMatchingKey,
            JwtError::BadSignature,
            JwtError::WrongType(None),
        ]
    };
    let id_token: Vec<IdTokenError> = jwt()
        .into_iter()
        .map(IdTokenError::Jwt)
        .chain([
            IdTokenError::MissingClaim(""),
            IdTokenError::InvalidClaim(""),
            IdTokenError::WrongIssuer(String::new()),
            IdTokenError::WrongAudience,
            IdTokenError::WrongAuthorizedParty,
            IdTokenError::Expired,
            IdTokenError::IssuedInFuture,
            IdTokenError::IssuedTooLongAgo,
            IdTokenError::NonceMismatch,
        ])
        .collect();
    let token_endpoint = [
        TokenEndpointFailure::Unreachable,
        TokenEndpointFailure::Timeout,
        TokenEndpointFailure::Refused,
        TokenEndpointFailure::ServerError,
        TokenEndpointFailure::InvalidResponse,
    ];
    let mut events = vec![
        Event::LoginStarted,
        Event::LoginSucceeded,
        Event::SessionRefreshed,
        Event::Logout,
        Event::LogoutConfirmationShown,
        Event::RevocationFailed,
        Event::BackchannelLogout,
        Event::BearerAccepted,
        Event::AccessDenied,
    ];
    events.extend(
        [
            LoginFailure::DuplicateParameter,
            LoginFailure::StateMissing,
            LoginFailure::LoginCookieMissing,
            LoginFailure::StateMismatch,
            LoginFailure::StateExpired,
            LoginFailure::StateReplayed,
            LoginFailure::ProviderError,
            LoginFailure::IssuerMismatch,
            LoginFailure::IssuerMissing,
            LoginFailure::CodeMissing,
            LoginFailure::ProviderUnavailable,
            LoginFailure::NoIdToken,
        ]
        .into_iter()
        .chain(
            token_endpoint
                .iter()
                .cloned()
                .map(LoginFailure::TokenEndpoint),
        )
        .chain(id_token.iter().cloned().map(LoginFailure::IdToken))
        .map(Event::LoginFailed),
    );
    events.extend(
        [
            RefreshFailure::ProviderUnavailable,
            RefreshFailure::InvalidGrant,
            RefreshFailure::SubjectChanged,
        ]
        .into_iter()
        .chain(
            token_endpoint
                .iter()
                .cloned()
                .map(RefreshFailure::TokenEndpoint),
        )
        .chain(id_token.iter().cloned().map(RefreshFailure::IdToken))
        .map(Event::RefreshFailed),
    );
    events.extend(
        [
            BackchannelRejection::NotPost,
            BackchannelRejection::NotForm,
            BackchannelRejection::BodyTooLarge,
            BackchannelRejection::TokenMissing,
            BackchannelRejection::ProviderUnavailable,
            BackchannelRejection::NoSession,
            BackchannelRejection::Replayed,
        ]
        .into_iter()
        .chain(
            jwt()
                .into_iter()
                .map(LogoutTokenError::Jwt)
                .chain([
                    LogoutTokenError::MissingClaim(""),
                    LogoutTokenError::InvalidClaim(""),
                    LogoutTokenError::WrongIssuer(String::new()),
                    LogoutTokenError::WrongAudience,
                    LogoutTokenError::WrongAuthorizedParty,
                    LogoutTokenError::Expired,
                    LogoutTokenError::IssuedInFuture,
                    LogoutTokenError::IssuedTooLongAgo,
                    LogoutTokenError::NotALogoutEvent,
                    LogoutTokenError::NoncePresent,
                    LogoutTokenError::NoSubjectOrSession,
                ])
                .map(BackchannelRejection::Token),
        )
        .map(Event::BackchannelLogoutRejected),
    );
    events.extend(
        [
            BearerRejection::MalformedHeader,
            BearerRejection::RepeatedHeader,
            BearerRejection::Missing,
            BearerRejection::OpaqueNotAccepted,
            BearerRejection::IntrospectionUnavailable,
            BearerRejection::IntrospectionFailed,
            BearerRejection::ProviderUnavailable,
        ]
        .into_iter()
        .chain(
            jwt()
                .into_iter()
                .map(AccessTokenError::Jwt)
                .chain([
                    AccessTokenError::MissingClaim(""),
                    AccessTokenError::InvalidClaim(""),
                    AccessTokenError::WrongIssuer(String::new()),
                    AccessTokenError::WrongAudience,
                    AccessTokenError::Expired,
                    AccessTokenError::NotYetValid,
                    AccessTokenError::Inactive,
                ])
                .map(BearerRejection::Token),
        )
        .map(Event::BearerRejected),
    );
    let mut metrics: Vec<Metric> = Vec::new();
    for event in events {
        let metric = event.metric();
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }
    metrics
}

/// A counter's identity: a family and, optionally, a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Metric {
    pub name: &'static str,
    pub reason: Option<&'static str>,
}

impl Metric {
    /// The full metric name as the host defines it.
    pub fn full_name(&self) -> String {
        match self.reason {
            Some(reason) => format!("{METRIC_PREFIX}{}.reason.{reason}", self.name),
            None => format!("{METRIC_PREFIX}{}", self.name),
        }
    }
}

impl LoginFailure {
    pub fn name(&self) -> &'static str {
        match self {
            LoginFailure::DuplicateParameter => "duplicate_parameter",
            LoginFailure::StateMissing => "state_missing",
            LoginFailure::LoginCookieMissing => "login_cookie_missing",
            LoginFailure::StateMismatch => "state_mismatch",
            LoginFailure::StateExpired => "state_expired",
            LoginFailure::StateReplayed => "state_replayed",
            LoginFailure::ProviderError => "provider_error",
            LoginFailure::IssuerMismatch => "issuer_mismatch",
            LoginFailure::IssuerMissing => "issuer_missing",
            LoginFailure::CodeMissing => "code_missing",
            LoginFailure::ProviderUnavailable => "provider_unavailable",
            LoginFailure::TokenEndpoint(failure) => failure.name(),
            LoginFailure::NoIdToken => "id_token_missing",
            LoginFailure::IdToken(err) => id_token_reason(err),
        }
    }
}

impl RefreshFailure {
    pub fn name(&self) -> &'static str {
        match self {
            RefreshFailure::ProviderUnavailable => "provider_unavailable",
            RefreshFailure::InvalidGrant => "invalid_grant",
            RefreshFailure::TokenEndpoint(failure) => failure.name(),
            RefreshFailure::IdToken(err) => id_token_reason(err),
            RefreshFailure::SubjectChanged => "subject_changed",
        }
    }
}

impl BackchannelRejection {
    pub fn name(&self) -> &'static str {
        match self {
            BackchannelRejection::NotPost => "not_post",
            BackchannelRejection::NotForm => "not_form",
            BackchannelRejection::BodyTooLarge => "body_too_large",
            BackchannelRejection::TokenMissing => "logout_token_missing",
            BackchannelRejection::ProviderUnavailable => "provider_unavailable",
            BackchannelRejection::Token(err) => logout_token_reason(err),
            BackchannelRejection::NoSession => "no_session_named",
            BackchannelRejection::Replayed => "replayed",
        }
    }
}

impl BearerRejection {
    pub fn name(&self) -> &'static str {
        match self {
            BearerRejection::MalformedHeader => "malformed_header",
            BearerRejection::RepeatedHeader => "repeated_header",
            BearerRejection::Missing => "missing",
            BearerRejection::Token(err) => access_token_reason(err),
            BearerRejection::OpaqueNotAccepted => "opaque_not_accepted",
            BearerRejection::IntrospectionUnavailable => "introspection_unavailable",
            BearerRejection::IntrospectionFailed => "introspection_failed",
            BearerRejection::ProviderUnavailable => "provider_unavailable",
        }
    }
}

/// A failed JWT check, the same words for every kind of token.
fn jwt_reason(err: &JwtError) -> &'static str {
    match err {
        JwtError::Malformed(_) => "malformed",
        JwtError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
        JwtError::UnknownKid(_) => "unknown_key",
        JwtError::NoMatchingKey => "no_matching_key",
        JwtError::BadSignature => "bad_signature",
        JwtError::WrongType(_) => "wrong_type",
    }
}

/// ID token reasons carry an `id_token_` prefix: a callback fails for other
/// reasons too (its state can also be `expired`).
fn id_token_reason(err: &IdTokenError) -> &'static str {
    match err {
        IdTokenError::Jwt(jwt) => match jwt {
            JwtError::Malformed(_) => "id_token_malformed",
            JwtError::AlgorithmNotAllowed(_) => "id_token_algorithm_not_allowed",
            JwtError::UnknownKid(_) => "id_token_unknown_key",
            JwtError::NoMatchingKey => "id_token_no_matching_key",
            JwtError::BadSignature => "id_token_bad_signature",
            JwtError::WrongType(_) => "id_token_wrong_type",
        },
        IdTokenError::MissingClaim(_) => "id_token_missing_claim",
        IdTokenError::InvalidClaim(_) => "id_token_invalid_claim",
        IdTokenError::WrongIssuer(_) => "id_token_wrong_issuer",
        IdTokenError::WrongAudience => "id_token_wrong_audience",
        IdTokenError::WrongAuthorizedParty => "id_token_wrong_authorized_party",
        IdTokenError::Expired => "id_token_expired",
        IdTokenError::IssuedInFuture => "id_token_issued_in_future",
        IdTokenError::IssuedTooLongAgo => "id_token_issued_too_long_ago",
        IdTokenError::NonceMismatch => "id_token_nonce_mismatch",
    }
}

fn logout_token_reason(err: &LogoutTokenError) -> &'static str {
    match err {
        LogoutTokenError::Jwt(jwt) => jwt_reason(jwt),
        LogoutTokenError::MissingClaim(_) => "missing_claim",
        LogoutTokenError::InvalidClaim(_) => "invalid_claim",
        LogoutTokenError::WrongIssuer(_) => "wrong_issuer",
        LogoutTokenError::WrongAudience => "wrong_audience",
        LogoutTokenError::WrongAuthorizedParty => "wrong_authorized_party",
        LogoutTokenError::Expired => "expired",
        LogoutTokenError::IssuedInFuture => "issued_in_future",
        LogoutTokenError::IssuedTooLongAgo => "issued_too_long_ago",
        LogoutTokenError::NotALogoutEvent => "not_a_logout_event",
        LogoutTokenError::NoncePresent => "nonce_present",
        LogoutTokenError::NoSubjectOrSession => "no_session_named",
    }
}

fn access_token_reason(err: &AccessTokenError) -> &'static str {
    match err {
        AccessTokenError::Jwt(jwt) => jwt_reason(jwt),
        AccessTokenError::MissingClaim(_) => "missing_claim",
        AccessTokenError::InvalidClaim(_) => "invalid_claim",
        AccessTokenError::WrongIssuer(_) => "wrong_issuer",
        AccessTokenError::WrongAudience => "wrong_audience",
        AccessTokenError::Expired => "expired",
        AccessTokenError::NotYetValid => "not_yet_valid",
        AccessTokenError::Inactive => "inactive",
    }
}

/// An event with the human detail for its log line. The detail is the flow's
/// own wording and error texts; it never holds a token, code or cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub event: Event,
    pub detail: String,
}

/// Longest detail a log line carries: details can quote what a client sent.
const MAX_DETAIL_CHARS: usize = 200;

impl Recorded {
    /// The event's log line: `key=value` pairs, the detail quoted and escaped
    /// so that no client-sent text can forge another line or field.
    pub fn log_line(&self, request_id: Option<&[u8]>) -> String {
        let mut line = format!("oidc-filter: event={}", self.event.name());
        if let Some(reason) = self.event.reason() {
            line.push_str(" reason=");
            line.push_str(reason);
        }
        line.push_str(&request_id_field(request_id));
        if !self.detail.is_empty() {
            let detail: String = self.detail.chars().take(MAX_DETAIL_CHARS).collect();
            line.push_str(&format!(" detail={detail:?}"));
        }
        line
    }
}

/// ` request_id=…` for a log line, or nothing without an `x-request-id`.
pub fn request_id_field(request_id: Option<&[u8]>) -> String {
    match request_id {
        Some(id) => format!(" request_id={}", printable_request_id(id)),
        None => String::new(),
    }
}

/// Envoy's `x-request-id` is a UUID; a client may send anything else.
fn printable_request_id(id: &[u8]) -> String {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    match std::str::from_utf8(id) {
        Ok(id) if plain => id.to_string(),
        _ => "invalid".to_string(),
    }
}

/// The events of one call into the flow, taken by the host afterwards. Most
/// requests record none, and an empty `Vec` does not allocate.
#[derive(Debug, Default)]
pub struct Events(RefCell<Vec<Recorded>>);

impl Events {
    pub fn record(&self, event: Event, detail: impl Into<String>) {
        self.0.borrow_mut().push(Recorded {
            event,
            detail: detail.into(),
        });
    }

    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(event: Event) -> String {
        event.metric().full_name()
    }

    #[test]
    fn each_decision_has_its_exact_metric_name() {
        let cases = [
            (Event::LoginStarted, "oidc_filter.login_started"),
            (Event::LoginSucceeded, "oidc_filter.login_succeeded"),
            (
                Event::LoginFailed(LoginFailure::StateMismatch),
                "oidc_filter.login_failed.reason.state_mismatch",
            ),
            (
                Event::LoginFailed(LoginFailure::LoginCookieMissing),
                "oidc_filter.login_failed.reason.login_cookie_missing",
            ),
            (
                Event::LoginFailed(LoginFailure::IdToken(IdTokenError::Jwt(
                    JwtError::BadSignature,
                ))),
                "oidc_filter.login_failed.reason.id_token_bad_signature",
            ),
            (
                Event::LoginFailed(LoginFailure::IdToken(IdTokenError::NonceMismatch)),
                "oidc_filter.login_failed.reason.id_token_nonce_mismatch",
            ),
            (
                Event::LoginFailed(LoginFailure::IdToken(IdTokenError::WrongIssuer(
                    "https://evil.example/a.b".into(),
                ))),
                "oidc_filter.login_failed.reason.id_token_wrong_issuer",
            ),
            (
                Event::RefreshFailed(RefreshFailure::InvalidGrant),
                "oidc_filter.refresh_failed.reason.invalid_grant",
            ),
            (
                Event::RefreshFailed(RefreshFailure::TokenEndpoint(TokenEndpointFailure::of(
                    &TokenError::Status {
                        status: 504,
                        error: None,
                        description: None,
                    },
                ))),
                "oidc_filter.refresh_failed.reason.token_endpoint_timeout",
            ),
            (
                Event::BackchannelLogoutRejected(BackchannelRejection::Token(
                    LogoutTokenError::NoncePresent,
                )),
                "oidc_filter.backchannel_logout_rejected.reason.nonce_present",
            ),
            (
                Event::BackchannelLogoutRejected(BackchannelRejection::Replayed),
                "oidc_filter.backchannel_logout_rejected.reason.replayed",
            ),
            (
                Event::BearerRejected(BearerRejection::Token(AccessTokenError::WrongAudience)),
                "oidc_filter.bearer_rejected.reason.wrong_audience",
            ),
            (
                Event::BearerRejected(BearerRejection::Token(AccessTokenError::Jwt(
                    JwtError::UnknownKid("attacker.chosen".into()),
                ))),
                "oidc_filter.bearer_rejected.reason.unknown_key",
            ),
            (Event::BearerAccepted, "oidc_filter.bearer_accepted"),
            (Event::AccessDenied, "oidc_filter.access_denied"),
        ];
        for (event, expected) in cases {
            assert_eq!(name(event), expected);
        }
    }

    #[test]
    fn token_endpoint_answers_map_to_reasons() {
        let status = |status, error: Option<&str>| TokenError::Status {
            status,
            error: error.map(str::to_string),
            description: None,
        };
        let cases = [
            (status(504, None), TokenEndpointFailure::Timeout),
            (status(503, None), TokenEndpointFailure::ServerError),
            (status(500, None), TokenEndpointFailure::ServerError),
            (
                status(401, Some("invalid_client")),
                TokenEndpointFailure::Refused,
            ),
            (
                status(400, Some("invalid_grant")),
                TokenEndpointFailure::Refused,
            ),
            (TokenError::NotJson, TokenEndpointFailure::InvalidResponse),
            (
                TokenError::MissingField("access_token"),
                TokenEndpointFailure::InvalidResponse,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(TokenEndpointFailure::of(&error), expected, "{error:?}");
        }
    }

    #[test]
    fn known_metric_names_are_a_fixed_set_of_plain_names() {
        let known = known_metrics();
        let names: Vec<String> = known.iter().map(Metric::full_name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicates in {names:?}");
        for name in &names {
            assert!(name.starts_with(METRIC_PREFIX), "{name}");
            let parts: Vec<&str> = name.split('.').collect();
            assert!(
                parts.len() == 2 || (parts.len() == 4 && parts[2] == "reason"),
                "{name}"
            );
            assert!(
                parts.iter().all(
                    |p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                ),
                "{name}"
            );
        }
        // Data inside an error (an issuer, a kid) never reaches the name.
        let odd = Event::BearerRejected(BearerRejection::Token(AccessTokenError::WrongIssuer(
            "x.reason.y".into(),
        )));
        assert!(known.contains(&odd.metric()));
        // A reason is always in the list, whatever the variant's data.
        for event in [
            Event::LoginFailed(LoginFailure::IdToken(IdTokenError::MissingClaim("nonce"))),
            Event::RefreshFailed(RefreshFailure::IdToken(IdTokenError::Jwt(
                JwtError::WrongType(Some("at+jwt".into())),
            ))),
            Event::BackchannelLogoutRejected(BackchannelRejection::Token(
                LogoutTokenError::InvalidClaim("events"),
            )),
        ] {
            assert!(known.contains(&event.metric()), "{event:?}");
        }
    }

    #[test]
    fn log_lines_are_key_value_and_cannot_be_forged() {
        let recorded = Recorded {
            event: Event::LoginFailed(LoginFailure::ProviderError),
            detail: "the provider answered error=\"x\"\n[critical] forged".to_string(),
        };
        assert_eq!(
            recorded.log_line(Some(b"0f6c5e1a-77b2-4c1e-9e4b-2f0d7b9a1c3e")),
            "oidc-filter: event=login_failed reason=provider_error \
             request_id=0f6c5e1a-77b2-4c1e-9e4b-2f0d7b9a1c3e \
             detail=\"the provider answered error=\\\"x\\\"\\n[critical] forged\""
        );
        let plain = Recorded {
            event: Event::Logout,
            detail: String::new(),
        };
        assert_eq!(plain.log_line(None), "oidc-filter: event=logout");
        for forged in [&b"a b"[..], b"x\nevent=logout", b"", &[b'a'; 65], b"\xff"] {
            assert_eq!(
                plain.log_line(Some(forged)),
                "oidc-filter: event=logout request_id=invalid"
            );
        }
        let long = Recorded {
            event: Event::AccessDenied,
            detail: "é".repeat(500),
        };
        assert_eq!(long.log_line(None).matches('é').count(), MAX_DETAIL_CHARS);
    }

    #[test]
    fn events_are_taken_once_in_order() {
        let events = Events::default();
        events.record(Event::LoginStarted, "a");
        events.record(Event::AccessDenied, "b");
        let taken = events.take();
        assert_eq!(
            taken.iter().map(|r| r.event.name()).collect::<Vec<_>>(),
            ["login_started", "access_denied"]
        );
        assert!(events.take().is_empty());
    }
}
