//! The whole request flow, driven event by event as the host drives it: any
//! request head (method, target, authority, headers, cookies), then any answers
//! to the steps it asks for (stored sessions, deny-lists, ledger and claim
//! results, bodies, cache entries, callout responses).
//!
//! Placeholders let the fuzzer reach past the cryptography: in the request,
//! `@STATE@` becomes the state of a valid login cookie that `@LOGIN@` inserts,
//! `@SID@` a session id, `@SESSION@` valid sealed session cookies and
//! `@BEARER@` a signed access token; in bodies, `@ID_TOKEN@`, `@ACCESS_JWT@`
//! and `@LOGOUT_TOKEN@` signed tokens (fuzzed extra claims laid over valid ones).
#![no_main]

use std::cell::OnceCell;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidc_filter::flow::{Caches, CalloutOutcome, Context, RequestFlow, RequestHead, Step};
use oidc_filter::session::deny_list::DenyListRead;
use oidc_filter::session::login::LoginState;
use oidc_filter::session::shared_store::{SharedData, WriteError};
use oidc_filter::session::{cookie_codec, refresh_outcome, Session};
use oidc_filter_fuzz::{
    configs, header, merge_claims, provider, rng, sealing_keys, sign, CLIENT_ID, ISSUER, NOW,
};
use serde_json::json;

/// More steps than any request takes; beyond it the flow is going round in circles.
const MAX_STEPS: usize = 32;
const NONCE: &str = "n-0S6_WzA2Mj";
const STATE: &str = "st-fuzzed-login-state";
const SESSION_ID: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The input, as text:
///
/// ```text
/// #<config> <provider loaded 0|1> <clock offset> <login age> <extra claims JSON>
/// <method> <target> [<authority>]
/// <header name>: <value>
/// …
///
/// <one answer per line, for the steps in order: `session [<json>]`, `none`,
///  `bytes <raw>`, `yes`, `no`, `count <n>`, `response <status> <body>`, `failed <reason>`>
/// ```
///
/// The first line is optional; a missing or unreadable answer gets the
/// answer that lets the request go furthest.
struct Input<'a> {
    config: usize,
    provider_loaded: bool,
    clock: i64,
    login_age: u64,
    extra_claims: &'a [u8],
    method: String,
    target: &'a [u8],
    authority: Option<String>,
    headers: Vec<(String, &'a [u8])>,
    answers: Vec<&'a [u8]>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn split_once(bytes: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == sep) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &bytes[..0]),
    }
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Input<'a> {
        let mut lines = data.split(|&b| b == b'\n').peekable();
        let mut input = Input {
            config: 0,
            provider_loaded: true,
            clock: 0,
            login_age: 5,
            extra_claims: b"",
            method: "GET".to_string(),
            target: b"/",
            authority: Some("app.example".to_string()),
            headers: Vec::new(),
            answers: Vec::new(),
        };
        if let Some(options) = lines.next_if(|l| l.starts_with(b"#")) {
            let mut rest = &options[1..];
            let mut number = || {
                let (word, tail) = split_once(rest, b' ');
                rest = tail;
                text(word).trim().parse::<i64>().ok()
            };
            input.config = number().map_or(0, |n| n.unsigned_abs() as usize);
            input.provider_loaded = number() != Some(0);
            input.clock = number().unwrap_or(0);
            input.login_age = number().map_or(5, i64::unsigned_abs);
            input.extra_claims = rest;
        }
        if let Some(request_line) = lines.next() {
            let (method, rest) = split_once(request_line, b' ');
            let (target, authority) = split_once(rest, b' ');
            input.method = text(method);
            input.target = target;
            input.authority = (!authority.is_empty()).then(|| text(authority));
        }
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            let (name, value) = split_once(line, b':');
            let value = value.strip_prefix(b" ").unwrap_or(value);
            input.headers.push((text(name).to_ascii_lowercase(), value));
        }
        input.answers = lines.collect();
        input
    }
}

/// An answer line: its keyword and the rest.
fn answer(line: Option<&&[u8]>) -> (&'static str, Vec<u8>) {
    let Some(line) = line else {
        return ("", Vec::new());
    };
    let (word, rest) = split_once(line, b' ');
    let keyword = match word {
        b"session" => "session",
        b"none" => "none",
        b"bytes" => "bytes",
        b"yes" => "yes",
        b"no" => "no",
        b"count" => "count",
        b"response" => "response",
        b"failed" => "failed",
        _ => "",
    };
    (keyword, rest.to_vec())
}

/// A session a login would have stored; `stale`: its access token has expired.
fn default_session(now: u64, stale: bool) -> Session {
    let mut claims = serde_json::Map::new();
    claims.insert("email".into(), "alice@example.com".into());
    claims.insert("groups".into(), json!(["admin"]));
    Session {
        sub: "alice".to_string(),
        sid: Some("s1".to_string()),
        created_at: now.saturating_sub(100),
        expires_at: now.saturating_add(3600),
        last_seen: now.saturating_sub(10),
        access_token: "opaque-access-token".to_string(),
        access_token_expires_at: Some(if stale {
            now.saturating_sub(1)
        } else {
            now.saturating_add(300)
        }),
        access_token_lifetime: Some(300),
        refresh_token: Some("rt".to_string()),
        id_token: Some(stored_id_token().to_string()),
        claims,
        refreshing_until: None,
    }
}

fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from.as_bytes()) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Tokens signed on first use only: signing is most of the cost of a run.
struct Tokens<'a> {
    extra_claims: &'a [u8],
    signed: OnceCell<Signed>,
}

struct Signed {
    id_token: String,
    access_jwt: String,
    logout_token: String,
}

impl Signed {
    fn new(extra: &[u8]) -> Signed {
        let id = merge_claims(
            json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice", "sid": "s1", "nonce": NONCE,
                   "exp": NOW + 300, "iat": NOW, "email": "alice@example.com", "groups": ["admin"]}),
            extra,
        );
        let access = merge_claims(
            json!({"iss": ISSUER, "aud": "api", "sub": "alice", "exp": NOW + 300, "iat": NOW,
                   "scope": "openid admin", "client_id": CLIENT_ID}),
            extra,
        );
        let logout = merge_claims(
            json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice", "sid": "s1", "jti": "j1",
                   "iat": NOW, "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
            extra,
        );
        Signed {
            id_token: sign(&header(None), &id),
            access_jwt: sign(&header(Some("at+jwt")), &access),
            logout_token: sign(&header(Some("logout+jwt")), &logout),
        }
    }
}

impl Tokens<'_> {
    fn signed(&self) -> &Signed {
        self.signed.get_or_init(|| Signed::new(self.extra_claims))
    }

    fn fill(&self, bytes: &[u8]) -> Vec<u8> {
        if !contains(bytes, "@") {
            return bytes.to_vec();
        }
        let signed = self.signed();
        let bytes = replace(bytes, "@ID_TOKEN@", &signed.id_token);
        let bytes = replace(&bytes, "@ACCESS_JWT@", &signed.access_jwt);
        replace(&bytes, "@LOGOUT_TOKEN@", &signed.logout_token)
    }
}

fn contains(bytes: &[u8], pattern: &str) -> bool {
    bytes
        .windows(pattern.len())
        .any(|w| w == pattern.as_bytes())
}

/// The ID token of the default session (any signed token does: it is only sent
/// back to the provider at logout).
fn stored_id_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| Signed::new(b"").id_token)
}

/// Shared data holding the same bytes under every key.
struct Stored(Vec<u8>);

impl SharedData for Stored {
    fn get(&self, _key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        (Some(self.0.clone()), Some(1))
    }

    fn set(&self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<(), WriteError> {
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        NOW * 1_000
    }
}

/// No header the filter writes may split into two or smuggle a byte the
/// receiver reads differently, unless the client sent those bytes itself
/// (`client_controls`): expired cookies are named as the request named them.
fn check_header(name: &str, value: &str, client_controls: bool) {
    assert!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
        "header name {name:?}"
    );
    assert!(
        client_controls || !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
        "header {name}: {value:?}"
    );
}

/// `client_controls`: the client's own `Cookie` headers held CR, LF or NUL
/// (Envoy refuses those, but the flow passes the client's bytes on as they are).
fn check_final(step: &Step, client_controls: bool) {
    match step {
        Step::Forward(forward) => {
            for (name, value) in forward.set_headers.iter().chain(&forward.response_headers) {
                check_header(name, value, client_controls);
            }
            if let Some(Some(cookie)) = &forward.cookie {
                assert!(client_controls || !cookie.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            }
        }
        Step::Respond(respond) => {
            assert!((100..600).contains(&respond.response.status));
            // Local pages load nothing; whatever the request or provider said is escaped.
            let body = respond.response.body.to_ascii_lowercase();
            assert!(!contains(&body, "<script"), "script in a local page");
            for (name, value) in &respond.response.headers {
                check_header(name, value, client_controls);
            }
        }
        _ => unreachable!(),
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let all = configs();
    let config = &all[input.config % all.len()];
    let keys = sealing_keys();
    let mut rng = rng(5);
    let now = NOW.saturating_add_signed(input.clock);
    let tokens = Tokens {
        extra_claims: input.extra_claims,
        signed: OnceCell::new(),
    };

    let login = LoginState {
        state: STATE.to_string(),
        nonce: NONCE.to_string(),
        code_verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_string(),
        return_to: "/app/page?x=1".to_string(),
        issued_at: now.saturating_sub(input.login_age),
    };
    let login_name = LoginState::cookie_name(&config.cookies.login_prefix, STATE);
    let login_cookie = if contains(data, "@LOGIN@") {
        format!("{login_name}={}", login.seal(keys, &login_name, &mut rng))
    } else {
        String::new()
    };
    let mut session_cookie = |stale: bool, placeholder: &str| {
        if !contains(data, placeholder) {
            return String::new();
        }
        let session = default_session(now, stale);
        cookie_codec::write(&session, keys, &config.cookies.session_name, &mut rng)
            .map(|parts| {
                let pairs: Vec<String> = parts.iter().map(|(n, v)| format!("{n}={v}")).collect();
                pairs.join("; ")
            })
            .unwrap_or_default()
    };
    let fresh_cookie = session_cookie(false, "@SESSION@");
    let stale_cookie = session_cookie(true, "@STALE_SESSION@");
    let fill = |bytes: &[u8]| {
        if !contains(bytes, "@") {
            return bytes.to_vec();
        }
        let bytes = replace(bytes, "@STATE@", STATE);
        let bytes = replace(&bytes, "@LOGIN@", &login_cookie);
        let bytes = replace(&bytes, "@STALE_SESSION@", &stale_cookie);
        let bytes = replace(&bytes, "@SESSION@", &fresh_cookie);
        let bytes = replace(&bytes, "@SID@", SESSION_ID);
        if contains(&bytes, "@BEARER@") {
            replace(&bytes, "@BEARER@", &tokens.signed().access_jwt)
        } else {
            bytes
        }
    };

    let request = RequestHead::new(
        input.method.clone(),
        fill(input.target),
        input.authority.clone(),
        input
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), fill(value)))
            .collect(),
    );

    let client_controls = request
        .headers
        .iter()
        .any(|(n, v)| n == "cookie" && v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
    let events = oidc_filter::flow::event::Events::default();
    // A fresh VM per input: nothing carries over between inputs.
    let mut caches = Caches::default();
    let mut ctx = Context {
        config,
        provider: input.provider_loaded.then(provider),
        keys,
        now,
        rng: &mut rng,
        events: &events,
        caches: &mut caches,
    };
    let mut flow = RequestFlow::new();
    let mut answers = input.answers.iter();
    // FLOW_TRACE=1 prints each step, to see how far a seed gets.
    let trace = std::env::var_os("FLOW_TRACE").is_some();
    let mut step = flow.handle_request(&mut ctx, request);
    for _ in 0..MAX_STEPS {
        if trace {
            eprintln!("{step:?}");
        }
        // Not questions: the host stores or publishes and goes on.
        if matches!(step, Step::StoreCache { .. } | Step::PublishRefresh { .. }) {
            let (Step::StoreCache { then, .. } | Step::PublishRefresh { then, .. }) = step else {
                unreachable!()
            };
            step = *then;
            continue;
        }
        let (keyword, rest) = answer(answers.next());
        step = match step {
            Step::Forward(_) | Step::Respond(_) => {
                check_final(&step, client_controls);
                return;
            }
            Step::StoreCache { .. } | Step::PublishRefresh { .. } => unreachable!(),
            Step::AwaitRefresh { round, .. } => {
                // The outcome another request published, as shared data holds it.
                let outcome = match keyword {
                    "bytes" => refresh_outcome::read(&Stored(tokens.fill(&rest)), &round, now),
                    _ => None,
                };
                flow.handle_refresh_outcome(&mut ctx, outcome)
            }
            Step::DenyCookieSession { entries, .. } => {
                let count = match keyword {
                    "count" => text(&rest).trim().parse().unwrap_or(0),
                    _ => entries.len(),
                };
                flow.handle_sessions_ended(&mut ctx, count)
            }
            Step::LoadSession { .. } => {
                let session = match keyword {
                    "none" => None,
                    "session" if !rest.is_empty() => Session::decode(&tokens.fill(&rest)),
                    _ => Some(default_session(now, false)),
                };
                flow.handle_session(&mut ctx, session)
            }
            Step::LoadDenyList { .. } => {
                let stored = (keyword == "bytes").then_some(rest.as_slice());
                // "unchanged": a host answering a generation the flow did not name.
                let read = match keyword {
                    "unchanged" => DenyListRead::Unchanged(rest.len() as u64),
                    _ => DenyListRead::Read {
                        generation: rest.len() as u64,
                        list: stored,
                    },
                };
                flow.handle_deny_list(&mut ctx, read)
            }
            Step::RecordOnce { .. } => flow.handle_once_recorded(&mut ctx, keyword != "no"),
            Step::ClaimRefresh { .. } => flow.handle_refresh_claimed(&mut ctx, keyword != "no"),
            Step::ReadBody { max_bytes } => {
                let body = match keyword {
                    "none" => None,
                    "bytes" => Some(tokens.fill(&rest)),
                    _ => Some(tokens.fill(b"logout_token=@LOGOUT_TOKEN@")),
                };
                let body = body.filter(|b| b.len() <= max_bytes);
                flow.handle_body(&mut ctx, body.as_deref())
            }
            Step::EndSessions { .. } => {
                let count = match keyword {
                    "count" => text(&rest).trim().parse().unwrap_or(0),
                    _ => 1,
                };
                flow.handle_sessions_ended(&mut ctx, count)
            }
            Step::Callout(_) => {
                let outcome = match keyword {
                    "response" => {
                        let (status, body) = split_once(&rest, b' ');
                        CalloutOutcome::Response {
                            status: text(status).parse().unwrap_or(200),
                            body: tokens.fill(body),
                        }
                    }
                    "failed" => CalloutOutcome::Failed(text(&rest)),
                    _ => CalloutOutcome::Response {
                        status: 200,
                        body: tokens.fill(
                            br#"{"access_token":"@ACCESS_JWT@","token_type":"Bearer","expires_in":300,"refresh_token":"rt2","id_token":"@ID_TOKEN@","active":true,"iss":"https://idp.example","aud":"api","exp":1800000300}"#,
                        ),
                    },
                };
                flow.handle_callout_response(&mut ctx, outcome)
            }
            Step::LoadCache { .. } => {
                let stored = (keyword == "bytes").then_some(rest.as_slice());
                flow.handle_cached(&mut ctx, stored)
            }
            Step::RefetchJwks { .. } => flow.handle_jwks_refreshed(&mut ctx),
        };
    }
    panic!("the flow did not finish within {MAX_STEPS} steps");
});
