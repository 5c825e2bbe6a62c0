//! The flow driven natively, event by event, with a fixed clock, a seeded RNG
//! and an in-memory provider signing with a P-256 key.

use std::collections::HashMap;

use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt, Claims, Header};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use url::Url;

use super::*;
use crate::crypto::seal::SealingKeys;
use crate::flow::event::Events;
use crate::oidc::discovery::ProviderMetadata;
use crate::oidc::jwks::Jwks;
use crate::session::buckets::IndexEntry;
use crate::session::deny_list::{DenyList, DenyListRead, DENY_LIST_KEY, GENERATION_KEY};
use crate::session::refresh_outcome;
use crate::session::shared_store::InMemory;
use crate::session::Session;

mod api;
mod events;
mod requests;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example";

fn config_json(extra: &str) -> String {
    format!(
        r#"{{
            "issuer": "{ISSUER}",
            "client_id": "rp",
            "client_secret": "s3cret",
            "redirect_uri": "https://app.example/oauth2/callback",
            "logout_path": "/oauth2/logout",
            "provider_cluster": "idp",
            "scopes": ["email"]
            {extra}
        }}"#
    )
}

type Store = HashMap<String, Vec<u8>>;
type TokenMaker<'a> = Box<dyn Fn(&str) -> String + 'a>;

struct Idp {
    signing: p256::ecdsa::SigningKey,
    kid: String,
}

impl Idp {
    fn new(seed: u64, kid: &str) -> Idp {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        Idp {
            signing: p256::ecdsa::SigningKey::random(&mut rng),
            kid: kid.to_string(),
        }
    }

    fn jwks_json(&self) -> String {
        let public = p256::PublicKey::from(self.signing.verifying_key());
        let mut jwk: serde_json::Value = serde_json::from_str(&public.to_jwk_string()).unwrap();
        jwk["kid"] = self.kid.clone().into();
        jwk["alg"] = "ES256".into();
        jwk["use"] = "sig".into();
        serde_json::json!({ "keys": [jwk] }).to_string()
    }

    fn id_token(&self, claims: serde_json::Value) -> String {
        let header = Header::empty().with_key_id(self.kid.clone());
        let claims = Claims::new(claims);
        Es256.token(&header, &claims, &self.signing).unwrap()
    }
}

fn provider(idp: &Idp) -> Provider {
    let metadata = ProviderMetadata {
        issuer: ISSUER.to_string(),
        authorization_endpoint: Url::parse("https://idp.example/auth").unwrap(),
        token_endpoint: Url::parse("https://idp.example/token").unwrap(),
        jwks_uri: Url::parse("https://idp.example/jwks").unwrap(),
        end_session_endpoint: Some(Url::parse("https://idp.example/session/end").unwrap()),
        introspection_endpoint: None,
        revocation_endpoint: None,
        userinfo_endpoint: None,
        id_token_signing_alg_values_supported: vec!["ES256".to_string()],
        authorization_response_iss_parameter_supported: true,
    };
    Provider {
        metadata,
        jwks: Jwks::parse(idp.jwks_json().as_bytes()).unwrap(),
        jwks_fetched_at: NOW - 3600,
        kid_refetches: Default::default(),
    }
}

/// A relying party under test with its store in a map.
struct Rp {
    config: Config,
    provider: Option<Provider>,
    keys: SealingKeys,
    rng: ChaCha20Rng,
    now: u64,
    store: HashMap<String, Vec<u8>>,
    ledger: HashMap<String, Vec<u8>>,
    /// The body the next `ReadBody` step reads.
    body: Option<Vec<u8>>,
    /// Published refresh outcomes (shared data beside the session store).
    outcomes: std::rc::Rc<InMemory>,
    /// What the flow recorded for the host's counters and logs, in order.
    events: Events,
    /// The VM's caches, kept across requests as the host keeps them.
    caches: Caches,
}

impl Rp {
    fn new(idp: &Idp) -> Rp {
        Rp::with_config(idp, "")
    }

    fn with_config(idp: &Idp, extra: &str) -> Rp {
        Rp {
            config: Config::parse(config_json(extra).as_bytes(), |_| None).unwrap(),
            provider: Some(provider(idp)),
            keys: SealingKeys::from_raw(vec![[7; 32]]).unwrap(),
            rng: ChaCha20Rng::seed_from_u64(42),
            now: NOW,
            store: HashMap::new(),
            ledger: HashMap::new(),
            body: None,
            outcomes: Default::default(),
            events: Events::default(),
            caches: Caches::default(),
        }
    }

    fn ctx(&mut self) -> (Context<'_, ChaCha20Rng>, &mut Store, &mut Store) {
        (
            Context {
                config: &self.config,
                provider: self.provider.as_ref(),
                keys: &self.keys,
                now: self.now,
                rng: &mut self.rng,
                events: &self.events,
                caches: &mut self.caches,
            },
            &mut self.store,
            &mut self.ledger,
        )
    }

    /// Runs a request until it forwards, answers, calls out, or waits for a
    /// refresh that is not over; session and ledger steps are answered from
    /// the in-memory store.
    fn run(&mut self, flow: &mut RequestFlow, first: Step) -> Step {
        let mut step = first;
        loop {
            let outcomes = self.outcomes.clone();
            let (mut ctx, store, ledger) = self.ctx();
            step = match step {
                Step::PublishRefresh {
                    round,
                    outcome,
                    until,
                    then,
                } => {
                    assert!(refresh_outcome::publish(
                        &*outcomes, &round, &outcome, ctx.now, until
                    ));
                    *then
                }
                Step::AwaitRefresh { round, until } => {
                    match refresh_outcome::read(&*outcomes, &round, ctx.now) {
                        Some(outcome) => flow.handle_refresh_outcome(&mut ctx, Some(outcome)),
                        None if ctx.now >= until => flow.handle_refresh_outcome(&mut ctx, None),
                        // Parked: the test wakes it with `wake`.
                        None => return Step::AwaitRefresh { round, until },
                    }
                }
                Step::LoadSession { key } => {
                    let value = store.get(key.as_str()).and_then(|v| Session::decode(v));
                    flow.handle_session(&mut ctx, value)
                }
                Step::LoadCache { key } => {
                    let value = store.get(&key).cloned();
                    flow.handle_cached(&mut ctx, value.as_deref())
                }
                Step::StoreCache { key, value, then } => {
                    store.insert(key, value);
                    *then
                }
                Step::LoadDenyList { key, unless_at } => {
                    // As the host does: the generation first, the list only if it changed.
                    let generation = deny_generation(store);
                    if unless_at == Some(generation) {
                        flow.handle_deny_list(&mut ctx, DenyListRead::Unchanged(generation))
                    } else {
                        let list = store.get(&key).cloned();
                        let read = DenyListRead::Read {
                            generation,
                            list: list.as_deref(),
                        };
                        flow.handle_deny_list(&mut ctx, read)
                    }
                }
                Step::ClaimRefresh {
                    key,
                    until,
                    access_token,
                } if cookie_store(&ctx) => {
                    // As the host does for cookie sessions: a lease outside the session.
                    let lease = format!("lease/{}", key.as_str());
                    let free = store
                        .get(&lease)
                        .and_then(|v| String::from_utf8(v.clone()).ok()?.parse::<u64>().ok())
                        .is_none_or(|held| held <= ctx.now);
                    if free {
                        store.insert(lease, until.to_string().into_bytes());
                        let round = refresh_outcome::RefreshRound::of(&key, &access_token);
                        refresh_outcome::withdraw(&*outcomes, &round, ctx.now);
                    }
                    flow.handle_refresh_claimed(&mut ctx, free)
                }
                Step::EndSessions { entries } if cookie_store(&ctx) => {
                    let mut list = store
                        .get(DENY_LIST_KEY)
                        .and_then(|v| DenyList::decode(v))
                        .unwrap_or_default();
                    for entry in &entries {
                        list.insert(entry, ctx.now + 3600, ctx.now);
                    }
                    store.insert(DENY_LIST_KEY.to_string(), list.encode());
                    raise_deny_generation(store);
                    flow.handle_sessions_ended(&mut ctx, entries.len())
                }
                Step::DenyCookieSession { entries, until } => {
                    let mut list = store
                        .get(DENY_LIST_KEY)
                        .and_then(|v| DenyList::decode(v))
                        .unwrap_or_default();
                    for entry in &entries {
                        list.insert(entry, until, ctx.now);
                    }
                    store.insert(DENY_LIST_KEY.to_string(), list.encode());
                    raise_deny_generation(store);
                    flow.handle_sessions_ended(&mut ctx, entries.len())
                }
                Step::ClaimRefresh {
                    key,
                    until,
                    access_token,
                } => {
                    let now = ctx.now;
                    let claimed = match store.get(key.as_str()).and_then(|v| Session::decode(v)) {
                        Some(mut session)
                            if !session.refresh_in_progress(now)
                                && session.access_token == access_token =>
                        {
                            session.refreshing_until = Some(until);
                            store.insert(key.as_str().to_string(), session.encode());
                            let round = refresh_outcome::RefreshRound::of(&key, &access_token);
                            refresh_outcome::withdraw(&*outcomes, &round, now);
                            true
                        }
                        _ => false,
                    };
                    flow.handle_refresh_claimed(&mut ctx, claimed)
                }
                Step::EndSessions { entries } => {
                    let issuer = ctx.config.issuer.clone();
                    let doomed: Vec<String> = store
                        .iter()
                        .filter(|(_, v)| {
                            Session::decode(v).is_some_and(|s| {
                                IndexEntry::for_session(&issuer, &s)
                                    .iter()
                                    .any(|e| entries.contains(e))
                            })
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in &doomed {
                        store.remove(key);
                    }
                    flow.handle_sessions_ended(&mut ctx, doomed.len())
                }
                Step::ReadBody { .. } => {
                    let body = self.body.take();
                    let (mut ctx, _, _) = self.ctx();
                    flow.handle_body(&mut ctx, body.as_deref())
                }
                Step::RecordOnce { key, value, until } => {
                    let first = match crate::session::once::mark(
                        ledger.get(&key).map(Vec::as_slice),
                        &value,
                        until,
                        ctx.now,
                    ) {
                        crate::session::once::Mark::Record(v) => {
                            ledger.insert(key, v);
                            true
                        }
                        crate::session::once::Mark::AlreadyUsed => false,
                    };
                    flow.handle_once_recorded(&mut ctx, first)
                }
                Step::Forward(mut forward) => {
                    apply(store, std::mem::take(&mut forward.writes));
                    return Step::Forward(forward);
                }
                Step::Respond(mut respond) => {
                    apply(store, std::mem::take(&mut respond.writes));
                    return Step::Respond(respond);
                }
                other => return other,
            };
        }
    }

    fn request(
        &mut self,
        flow: &mut RequestFlow,
        method: &str,
        target: &str,
        headers: &[(&str, &[u8])],
    ) -> Step {
        let head = RequestHead {
            method: method.to_string(),
            target: target.as_bytes().to_vec(),
            authority: Some("app.example".to_string()),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            ..RequestHead::default()
        };
        let (mut ctx, _, _) = self.ctx();
        let step = flow.handle_request(&mut ctx, head);
        self.run(flow, step)
    }

    fn get(&mut self, target: &str, cookie: &str) -> Step {
        let mut flow = RequestFlow::new();
        self.request(&mut flow, "GET", target, &[("cookie", cookie.as_bytes())])
    }

    /// What the host does for a parked request on a tick: the outcome if it is
    /// published, `None` once the wait ran out, else it stays parked.
    fn wake(&mut self, flow: &mut RequestFlow, parked: &Step) -> Step {
        let Step::AwaitRefresh { round, until } = parked else {
            panic!("expected a request waiting on a refresh, got {parked:?}")
        };
        let outcome = refresh_outcome::read(&*self.outcomes, round, self.now);
        if outcome.is_none() && self.now < *until {
            return Step::AwaitRefresh {
                round: round.clone(),
                until: *until,
            };
        }
        let (mut ctx, _, _) = self.ctx();
        let step = flow.handle_refresh_outcome(&mut ctx, outcome);
        self.run(flow, step)
    }

    fn callout_response(&mut self, flow: &mut RequestFlow, status: u16, body: &str) -> Step {
        let (mut ctx, _, _) = self.ctx();
        let step = flow.handle_callout_response(
            &mut ctx,
            CalloutOutcome::Response {
                status,
                body: body.as_bytes().to_vec(),
            },
        );
        self.run(flow, step)
    }
}

/// The deny-list generation kept beside the list, as [`crate::session::deny_list`] keeps it.
fn deny_generation(store: &Store) -> u64 {
    store
        .get(GENERATION_KEY)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

fn raise_deny_generation(store: &mut Store) {
    let next = deny_generation(store) + 1;
    store.insert(GENERATION_KEY.to_string(), next.to_string().into_bytes());
}

fn cookie_store(ctx: &Context<'_, ChaCha20Rng>) -> bool {
    ctx.config.session.store == crate::config::SessionStoreKind::Cookie
}

fn apply(store: &mut HashMap<String, Vec<u8>>, writes: Vec<StoreWrite>) {
    for write in writes {
        match write {
            StoreWrite::Put { key, session } => {
                store.insert(key.as_str().to_string(), session.encode());
            }
            StoreWrite::Update { key, session } => {
                if store.contains_key(key.as_str()) {
                    store.insert(key.as_str().to_string(), session.encode());
                }
            }
            StoreWrite::Touch { key, at } => {
                if let Some(mut session) = store.get(key.as_str()).and_then(|v| Session::decode(v))
                {
                    session.last_seen = at;
                    store.insert(key.as_str().to_string(), session.encode());
                }
            }
            StoreWrite::ReleaseRefresh { key } => {
                // Cookie sessions: the lease beside the store, as the host keeps it.
                store.remove(&format!("lease/{}", key.as_str()));
                if let Some(mut session) = store.get(key.as_str()).and_then(|v| Session::decode(v))
                {
                    session.refreshing_until = None;
                    store.insert(key.as_str().to_string(), session.encode());
                }
            }
            StoreWrite::Delete { key } => {
                store.remove(key.as_str());
            }
        }
    }
}

fn response(step: Step) -> LocalResponse {
    match step {
        Step::Respond(r) => r.response,
        other => panic!("expected a local response, got {other:?}"),
    }
}

fn header<'a>(response: &'a LocalResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn set_cookies(response: &LocalResponse) -> Vec<&str> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect()
}

fn query(location: &str) -> HashMap<String, String> {
    Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// The `name=value` of a Set-Cookie whose name starts with `prefix`.
fn cookie_pair(response: &LocalResponse, prefix: &str) -> String {
    set_cookies(response)
        .into_iter()
        .find(|c| c.starts_with(prefix) && !c.contains("Max-Age=0"))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie {prefix} in {:?}", response.headers))
        .to_string()
}

struct StartedLogin {
    state: String,
    nonce: String,
    challenge: String,
    login_cookie: String,
}

fn start(rp: &mut Rp, target: &str) -> StartedLogin {
    let redirect = response(rp.get(target, ""));
    assert_eq!(redirect.status, 302);
    let params = query(header(&redirect, "location").unwrap());
    StartedLogin {
        state: params["state"].clone(),
        nonce: params["nonce"].clone(),
        challenge: params["code_challenge"].clone(),
        login_cookie: cookie_pair(&redirect, "__Host-oidc-login-"),
    }
}

fn valid_claims(nonce: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": "rp", "sub": "alice", "sid": "sid-1",
        "iat": NOW, "exp": NOW + 600, "nonce": nonce, "email": "alice@example.test"
    })
}

fn token_body(id_token: &str) -> String {
    serde_json::json!({
        "access_token": "at-123", "token_type": "Bearer", "expires_in": 3600,
        "id_token": id_token, "refresh_token": "rt-1"
    })
    .to_string()
}

/// Drives a callback to the token callout and returns the flow waiting for its answer.
fn callback(rp: &mut Rp, login: &StartedLogin, code: &str) -> (RequestFlow, Step) {
    let mut flow = RequestFlow::new();
    let target = format!(
        "/oauth2/callback?code={code}&state={}&iss=https%3A%2F%2Fidp.example",
        login.state
    );
    let step = rp.request(
        &mut flow,
        "GET",
        &target,
        &[("cookie", login.login_cookie.as_bytes())],
    );
    (flow, step)
}

fn complete_login(rp: &mut Rp, idp: &Idp, target: &str) -> (LocalResponse, String) {
    let login = start(rp, target);
    let (mut flow, step) = callback(rp, &login, "code-1");
    assert!(matches!(step, Step::Callout(_)), "{step:?}");
    let done = response(rp.callout_response(
        &mut flow,
        200,
        &token_body(&idp.id_token(valid_claims(&login.nonce))),
    ));
    let session = cookie_pair(&done, "__Host-oidc-session");
    (done, session)
}

#[test]
fn a_browser_without_session_is_sent_to_the_provider_with_pkce_state_and_nonce() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let redirect = response(rp.get("/page?x=1", "other=1"));
    assert_eq!(redirect.status, 302);
    let location = header(&redirect, "location").unwrap();
    assert!(location.starts_with("https://idp.example/auth?"));
    let params = query(location);
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], "rp");
    assert_eq!(
        params["redirect_uri"],
        "https://app.example/oauth2/callback"
    );
    assert_eq!(params["scope"], "openid email");
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["code_challenge"].len(), 43);
    assert!(
        params["state"].len() >= 22,
        "state carries at least 128 bits"
    );
    assert!(params["nonce"].len() >= 22);
    assert_ne!(params["state"], params["nonce"]);
    let cookie = set_cookies(&redirect)
        .into_iter()
        .find(|c| c.starts_with("__Host-oidc-login-"))
        .unwrap();
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
}

#[test]
fn a_full_login_creates_a_session_and_returns_to_the_original_url() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let login = start(&mut rp, "/page?x=1");
    let (mut flow, step) = callback(&mut rp, &login, "the-code");

    let Step::Callout(callout) = step else {
        panic!("expected the token callout, got {step:?}")
    };
    assert_eq!(callout.cluster, "idp");
    assert_eq!(callout.authority, "idp.example");
    assert_eq!(callout.path, "/token");
    assert_eq!(callout.method, "POST");
    let form: HashMap<String, String> = url::form_urlencoded::parse(&callout.body)
        .into_owned()
        .collect();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "the-code");
    assert_eq!(form["redirect_uri"], "https://app.example/oauth2/callback");
    assert_eq!(
        crate::oidc::pkce::s256_challenge(&form["code_verifier"]),
        login.challenge
    );
    assert!(callout
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.starts_with("Basic ")));

    let token = idp.id_token(valid_claims(&login.nonce));
    let done = response(rp.callout_response(&mut flow, 200, &token_body(&token)));
    assert_eq!(done.status, 302);
    assert_eq!(header(&done, "location"), Some("/page?x=1"));
    let cookies = set_cookies(&done);
    let login_name = login.login_cookie.split('=').next().unwrap();
    assert!(cookies
        .iter()
        .any(|c| c.starts_with(&format!("{login_name}=;")) && c.contains("Max-Age=0")));
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("__Host-oidc-session="))
        .unwrap();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(
            session_cookie.contains(attribute),
            "{session_cookie} lacks {attribute}"
        );
    }
    assert_eq!(rp.store.len(), 1);
    let stored = Session::decode(rp.store.values().next().unwrap()).unwrap();
    assert_eq!(stored.sub, "alice");
    assert_eq!(stored.sid.as_deref(), Some("sid-1"));
    assert_eq!(stored.access_token_expires_at, Some(NOW + 3600));
    assert_eq!(
        stored.claims.get("email").and_then(|v| v.as_str()),
        Some("alice@example.test")
    );
    assert!(
        !stored.claims.contains_key("nonce"),
        "only configured claims are kept"
    );

    let session = cookie_pair(&done, "__Host-oidc-session");
    let cookie = format!("theirs=1; {session}; {}", login.login_cookie);
    let mut flow = RequestFlow::new();
    let step = rp.request(
        &mut flow,
        "GET",
        "/page?x=1",
        &[
            ("cookie", cookie.as_bytes()),
            ("x-auth-request-user", b"mallory"),
            // Not Bearer: a bearer token would be judged instead of the session.
            ("authorization", b"Basic bWFsbG9yeTp4"),
        ],
    );
    let Step::Forward(forward) = step else {
        panic!("expected forward, got {step:?}")
    };
    assert!(forward
        .remove_headers
        .contains(&"authorization".to_string()));
    assert!(forward
        .remove_headers
        .contains(&"x-auth-request-user".to_string()));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-123".to_string())));
    assert!(forward
        .set_headers
        .contains(&("x-auth-request-user".to_string(), "alice".to_string())));
    assert!(forward.set_headers.contains(&(
        "x-auth-request-email".to_string(),
        "alice@example.test".to_string()
    )));
    assert_eq!(forward.cookie, Some(Some(b"theirs=1".to_vec())));
}

#[test]
fn the_callback_refuses_tampered_state_missing_cookie_and_replay() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let login = start(&mut rp, "/");

    let mut tampered = login.state.clone();
    tampered.replace_range(0..1, if tampered.starts_with('A') { "B" } else { "A" });
    let target = format!("/oauth2/callback?code=c&state={tampered}");
    assert_eq!(response(rp.get(&target, &login.login_cookie)).status, 400);

    let target = format!(
        "/oauth2/callback?code=c&state={}&iss=https%3A%2F%2Fidp.example",
        login.state
    );
    assert_eq!(response(rp.get(&target, "")).status, 400, "no login cookie");

    let (_, first) = callback(&mut rp, &login, "c");
    assert!(matches!(first, Step::Callout(_)));
    let (_, replay) = callback(&mut rp, &login, "c");
    let replay = response(replay);
    assert_eq!(replay.status, 400, "a login cookie works once");
    assert!(String::from_utf8_lossy(&replay.body).contains("already"));
}

#[test]
fn the_callback_checks_the_iss_parameter_and_reports_provider_errors() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let login = start(&mut rp, "/");
    let wrong = format!(
        "/oauth2/callback?code=c&state={}&iss=https%3A%2F%2Fevil.example",
        login.state
    );
    assert_eq!(response(rp.get(&wrong, &login.login_cookie)).status, 400);
    let missing = format!("/oauth2/callback?code=c&state={}", login.state);
    assert_eq!(response(rp.get(&missing, &login.login_cookie)).status, 400);
    let duplicated = format!("/oauth2/callback?code=c&code=d&state={}", login.state);
    assert_eq!(
        response(rp.get(&duplicated, &login.login_cookie)).status,
        400
    );

    let denied = format!(
        "/oauth2/callback?error=access_denied&error_description=User+said+%3Cno%3E&state={}",
        login.state
    );
    let page = response(rp.get(&denied, &login.login_cookie));
    assert_eq!(page.status, 401);
    let body = String::from_utf8_lossy(&page.body);
    assert!(body.contains("access_denied"));
    assert!(
        body.contains("&lt;no&gt;"),
        "provider text is escaped: {body}"
    );
    assert!(rp.store.is_empty());
}

#[test]
fn an_expired_login_cookie_is_refused() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let login = start(&mut rp, "/");
    rp.now += 601;
    let (_, step) = callback(&mut rp, &login, "c");
    assert_eq!(response(step).status, 400);
}

#[test]
fn token_endpoint_failures_end_in_a_bad_gateway_page() {
    let idp = Idp::new(1, "k1");
    for (status, body) in [
        (
            400,
            r#"{"error":"invalid_grant","error_description":"code expired"}"#,
        ),
        (200, "<html>not json</html>"),
        (
            200,
            r#"{"access_token":"a","token_type":"mac","id_token":"x"}"#,
        ),
        (200, r#"{"access_token":"a","token_type":"Bearer"}"#),
    ] {
        let mut rp = Rp::new(&idp);
        let login = start(&mut rp, "/");
        let (mut flow, _) = callback(&mut rp, &login, "c");
        let page = response(rp.callout_response(&mut flow, status, body));
        assert_eq!(page.status, 502, "{status} {body}");
        assert!(rp.store.is_empty());
    }

    let mut rp = Rp::new(&idp);
    let login = start(&mut rp, "/");
    let (mut flow, _) = callback(&mut rp, &login, "c");
    let (mut ctx, _, _) = rp.ctx();
    let page =
        response(flow.handle_callout_response(&mut ctx, CalloutOutcome::Failed("reset".into())));
    assert_eq!(page.status, 502);
}

#[test]
fn id_tokens_that_fail_validation_create_no_session() {
    let idp = Idp::new(1, "k1");
    let other = Idp::new(2, "k1");
    let cases: Vec<(&str, TokenMaker)> = vec![
        (
            "wrong nonce",
            Box::new(|_| idp.id_token(valid_claims("not-the-nonce"))),
        ),
        (
            "wrong issuer",
            Box::new(|n| {
                let mut c = valid_claims(n);
                c["iss"] = "https://evil.example".into();
                idp.id_token(c)
            }),
        ),
        (
            "wrong audience",
            Box::new(|n| {
                let mut c = valid_claims(n);
                c["aud"] = "someone-else".into();
                idp.id_token(c)
            }),
        ),
        (
            "expired",
            Box::new(|n| {
                let mut c = valid_claims(n);
                c["exp"] = (NOW - 3600).into();
                idp.id_token(c)
            }),
        ),
        (
            "forged signature",
            Box::new(|n| other.id_token(valid_claims(n))),
        ),
        (
            "alg none",
            Box::new(|n| {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                format!(
                    "{}.{}.",
                    b64.encode(r#"{"alg":"none","kid":"k1"}"#),
                    b64.encode(valid_claims(n).to_string())
                )
            }),
        ),
    ];
    for (name, make) in cases {
        let mut rp = Rp::new(&idp);
        let login = start(&mut rp, "/");
        let (mut flow, _) = callback(&mut rp, &login, "c");
        let page = response(rp.callout_response(&mut flow, 200, &token_body(&make(&login.nonce))));
        assert_eq!(page.status, 502, "{name}");
        assert!(rp.store.is_empty(), "{name}");
    }
}

#[test]
fn an_unknown_kid_refetches_keys_once_then_validates() {
    let old = Idp::new(1, "old");
    let rotated = Idp::new(3, "new");
    let mut rp = Rp::new(&old);
    let login = start(&mut rp, "/");
    let (mut flow, _) = callback(&mut rp, &login, "c");
    let step = rp.callout_response(
        &mut flow,
        200,
        &token_body(&rotated.id_token(valid_claims(&login.nonce))),
    );
    assert!(
        matches!(&step, Step::RefetchJwks { kid } if kid == "new"),
        "{step:?}"
    );

    rp.provider = Some(provider(&rotated));
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_jwks_refreshed(&mut ctx);
    let done = response(rp.run(&mut flow, step));
    assert_eq!(done.status, 302);
    assert_eq!(rp.store.len(), 1);
}

#[test]
fn keys_fetched_on_schedule_just_now_are_refetched_for_a_new_kid() {
    let old = Idp::new(1, "old");
    let rotated = Idp::new(3, "new");
    let mut rp = Rp::new(&old);
    rp.provider.as_mut().unwrap().jwks_fetched_at = NOW;
    let login = start(&mut rp, "/");
    let (mut flow, _) = callback(&mut rp, &login, "c");
    let step = rp.callout_response(
        &mut flow,
        200,
        &token_body(&rotated.id_token(valid_claims(&login.nonce))),
    );
    assert!(matches!(step, Step::RefetchJwks { .. }), "{step:?}");
}

#[test]
fn keys_are_not_refetched_again_and_again() {
    let old = Idp::new(1, "old");
    let rotated = Idp::new(3, "new");
    let mut rp = Rp::new(&old);
    rp.provider.as_mut().unwrap().kid_refetches.last_at = Some(NOW - 1);
    let login = start(&mut rp, "/");
    let (mut flow, _) = callback(&mut rp, &login, "c");
    let step = rp.callout_response(
        &mut flow,
        200,
        &token_body(&rotated.id_token(valid_claims(&login.nonce))),
    );
    assert_eq!(response(step).status, 502);
}

#[test]
fn a_known_session_is_reused_and_an_unknown_or_tampered_one_starts_a_login() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, session) = complete_login(&mut rp, &idp, "/");
    assert!(matches!(rp.get("/", &session), Step::Forward(_)));

    let mut tampered = session.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(response(rp.get("/", &tampered)).status, 302);
    assert_eq!(
        response(rp.get("/", "__Host-oidc-session=garbage")).status,
        302
    );
    assert_eq!(
        response(rp.get("/", "__Host-oidc-session=\u{0}\u{1}")).status,
        302
    );
}

#[test]
fn idle_and_absolute_timeouts_end_the_session() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(
        &idp,
        r#", "session": {"idle_timeout_seconds": 600, "absolute_timeout_seconds": 3600}"#,
    );
    let (_, session) = complete_login(&mut rp, &idp, "/");
    rp.now += 500;
    assert!(matches!(rp.get("/", &session), Step::Forward(_)));
    rp.now += 500;
    assert!(
        matches!(rp.get("/", &session), Step::Forward(_)),
        "the previous request refreshed last_seen"
    );
    rp.now += 601;
    assert_eq!(response(rp.get("/", &session)).status, 302, "idle");
    assert!(rp.store.is_empty(), "an ended session is deleted");

    rp.now = NOW;
    let (_, session) = complete_login(&mut rp, &idp, "/");
    for _ in 0..7 {
        rp.now += 500;
        assert!(matches!(rp.get("/", &session), Step::Forward(_)));
    }
    rp.now += 500;
    assert_eq!(response(rp.get("/", &session)).status, 302, "absolute");
}

#[test]
fn return_targets_never_leave_the_origin() {
    let idp = Idp::new(1, "k1");
    for target in [
        "//evil.example/x",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
    ] {
        let mut rp = Rp::new(&idp);
        let (done, _) = complete_login(&mut rp, &idp, target);
        assert_eq!(header(&done, "location"), Some("/"), "{target}");
    }
}

#[test]
fn without_provider_metadata_nothing_passes() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    rp.provider = None;
    let page = response(rp.get("/", ""));
    assert_eq!(page.status, 503);
    assert_eq!(header(&page, "retry-after"), Some("2"));
}

#[test]
fn logout_deletes_the_session_and_visits_the_end_session_endpoint() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, session) = complete_login(&mut rp, &idp, "/");
    let mut flow = RequestFlow::new();
    let cross = rp.request(
        &mut flow,
        "GET",
        "/oauth2/logout",
        &[
            ("cookie", session.as_bytes()),
            ("sec-fetch-site", b"cross-site"),
        ],
    );
    assert_eq!(
        response(cross).status,
        200,
        "a cross-site logout only gets a confirmation page"
    );
    assert_eq!(rp.store.len(), 1);

    let page = response(rp.get("/oauth2/logout", &session));
    assert_eq!(page.status, 302);
    let params = query(header(&page, "location").unwrap());
    assert_eq!(params["client_id"], "rp");
    assert_eq!(params["post_logout_redirect_uri"], "https://app.example/");
    assert!(params.contains_key("id_token_hint"));
    assert!(set_cookies(&page)
        .iter()
        .any(|c| c.starts_with("__Host-oidc-session=;") && c.contains("Max-Age=0")));
    assert!(rp.store.is_empty());
    assert_eq!(response(rp.get("/", &session)).status, 302);
}

fn with_revocation(rp: &mut Rp) {
    if let Some(provider) = rp.provider.as_mut() {
        provider.metadata.revocation_endpoint =
            Some(Url::parse("https://idp.example/revoke").unwrap());
    }
}

/// The logout's revocation callout: its form, then the answer after it.
fn logout_revoking(rp: &mut Rp, cookie: &str, revoked: &str) -> LocalResponse {
    let mut flow = RequestFlow::new();
    let step = rp.request(
        &mut flow,
        "GET",
        "/oauth2/logout",
        &[("cookie", cookie.as_bytes())],
    );
    let Step::Callout(callout) = step else {
        panic!("expected the revocation callout, got {step:?}")
    };
    assert_eq!(callout.path, "/revoke");
    assert_eq!(callout.method, "POST");
    assert_eq!(
        String::from_utf8(callout.body).unwrap(),
        format!("token={revoked}&token_type_hint=refresh_token")
    );
    assert!(callout
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.starts_with("Basic ")));
    response(rp.callout_response(&mut flow, 503, ""))
}

#[test]
fn logout_revokes_the_refresh_token_when_the_provider_has_a_revocation_endpoint() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    with_revocation(&mut rp);
    let (_, session) = complete_login(&mut rp, &idp, "/");
    let page = logout_revoking(&mut rp, &session, "rt-1");
    assert_eq!(
        page.status, 302,
        "a failed revocation does not keep the user in"
    );
    assert!(header(&page, "location")
        .unwrap()
        .starts_with("https://idp.example/session/end?"));
    assert!(rp.store.is_empty());
    assert_eq!(response(rp.get("/", &session)).status, 302);
}

#[test]
fn parallel_logins_each_complete() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let first = start(&mut rp, "/a");
    let second = start(&mut rp, "/b");
    assert_ne!(
        first.login_cookie.split('=').next(),
        second.login_cookie.split('=').next()
    );
    for (login, target) in [(&second, "/b"), (&first, "/a")] {
        let both = format!("{}; {}", first.login_cookie, second.login_cookie);
        let mut flow = RequestFlow::new();
        let url = format!(
            "/oauth2/callback?code=c&state={}&iss=https%3A%2F%2Fidp.example",
            login.state
        );
        let step = rp.request(&mut flow, "GET", &url, &[("cookie", both.as_bytes())]);
        assert!(matches!(step, Step::Callout(_)));
        let done = response(rp.callout_response(
            &mut flow,
            200,
            &token_body(&idp.id_token(valid_claims(&login.nonce))),
        ));
        assert_eq!(header(&done, "location"), Some(target));
    }
}

fn short_lived_token_body(id_token: &str, refresh_token: &str, expires_in: u64) -> String {
    serde_json::json!({
        "access_token": format!("at-{refresh_token}"), "token_type": "Bearer", "expires_in": expires_in,
        "id_token": id_token, "refresh_token": refresh_token
    })
    .to_string()
}

/// Logs in with an access token that lives `expires_in` seconds.
fn login_with_expiry(rp: &mut Rp, idp: &Idp, expires_in: u64) -> String {
    let login = start(rp, "/");
    let (mut flow, _) = callback(rp, &login, "c");
    let body = short_lived_token_body(
        &idp.id_token(valid_claims(&login.nonce)),
        "rt-1",
        expires_in,
    );
    let done = response(rp.callout_response(&mut flow, 200, &body));
    cookie_pair(&done, "__Host-oidc-session")
}

fn stored_session(rp: &Rp) -> Session {
    assert_eq!(rp.store.len(), 1);
    Session::decode(rp.store.values().next().unwrap()).unwrap()
}

fn refreshed_claims(sub: &str, now: u64) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": "rp", "sub": sub, "sid": "sid-1",
        "iat": now, "exp": now + 600, "email": "alice@example.test"
    })
}

fn authorization(step: &Step) -> Option<&str> {
    match step {
        Step::Forward(forward) => forward
            .set_headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

#[test]
fn a_session_outlives_its_access_token_through_refresh() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let session = login_with_expiry(&mut rp, &idp, 300);
    rp.now += 200;
    assert_eq!(
        authorization(&rp.get("/", &session)),
        Some("Bearer at-rt-1"),
        "not yet due"
    );

    rp.now += 60;
    let mut flow = RequestFlow::new();
    let step = rp.request(&mut flow, "GET", "/", &[("cookie", session.as_bytes())]);
    let Step::Callout(callout) = step else {
        panic!("expected a refresh callout, got {step:?}")
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&callout.body)
        .into_owned()
        .collect();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "rt-1");
    assert!(
        stored_session(&rp).refresh_in_progress(rp.now),
        "the refresh is claimed"
    );

    // Meanwhile another request goes on with the still-valid token, without a second refresh.
    let concurrent = rp.get("/", &session);
    assert_eq!(authorization(&concurrent), Some("Bearer at-rt-1"));

    let body = short_lived_token_body(
        &idp.id_token(refreshed_claims("alice", rp.now)),
        "rt-2",
        300,
    );
    let step = rp.callout_response(&mut flow, 200, &body);
    assert_eq!(authorization(&step), Some("Bearer at-rt-2"));
    let stored = stored_session(&rp);
    assert_eq!(stored.refresh_token.as_deref(), Some("rt-2"));
    assert_eq!(stored.access_token_expires_at, Some(rp.now + 300));
    assert!(!stored.refresh_in_progress(rp.now));
    assert_eq!(
        authorization(&rp.get("/", &session)),
        Some("Bearer at-rt-2")
    );
}

#[test]
fn a_refused_refresh_ends_the_session() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let session = login_with_expiry(&mut rp, &idp, 300);
    rp.now += 400;
    let mut flow = RequestFlow::new();
    let step = rp.request(&mut flow, "GET", "/", &[("cookie", session.as_bytes())]);
    assert!(matches!(step, Step::Callout(_)));
    let step = rp.callout_response(
        &mut flow,
        400,
        r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
    );
    let page = response(step);
    assert_eq!(page.status, 302, "a browser logs in again");
    assert!(rp.store.is_empty(), "the dead session is deleted");
}

#[test]
fn a_failed_refresh_keeps_a_valid_token_and_the_session() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let session = login_with_expiry(&mut rp, &idp, 300);
    rp.now += 250;
    let mut flow = RequestFlow::new();
    let _ = rp.request(&mut flow, "GET", "/", &[("cookie", session.as_bytes())]);
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_callout_response(&mut ctx, CalloutOutcome::Failed("timeout".into()));
    let step = rp.run(&mut flow, step);
    assert_eq!(
        authorization(&step),
        Some("Bearer at-rt-1"),
        "still valid: used as is"
    );

    // Once the token expired and the claim lapsed, a failing refresh shows the error page.
    rp.now += 100;
    let mut flow = RequestFlow::new();
    let step = rp.request(&mut flow, "GET", "/", &[("cookie", session.as_bytes())]);
    assert!(
        matches!(step, Step::Callout(_)),
        "retried on a later request: {step:?}"
    );
    let page = response(rp.callout_response(&mut flow, 503, "unavailable"));
    assert_eq!(page.status, 502);
    assert_eq!(rp.store.len(), 1, "the session survives for a retry");
}

/// A session whose access token has expired, a leader refreshing it (its
/// callout out) and a follower waiting for it.
fn leader_and_follower(rp: &mut Rp, idp: &Idp) -> (String, RequestFlow, RequestFlow, Step) {
    let session = login_with_expiry(rp, idp, 300);
    rp.now += 301;
    let mut leader = RequestFlow::new();
    let first = rp.request(&mut leader, "GET", "/", &[("cookie", session.as_bytes())]);
    assert!(matches!(first, Step::Callout(_)), "{first:?}");
    let mut follower = RequestFlow::new();
    let parked = rp.request(&mut follower, "GET", "/", &[("cookie", session.as_bytes())]);
    assert!(
        matches!(parked, Step::AwaitRefresh { until, .. } if until == rp.now + 12),
        "the follower waits as long as the claim holds (twice the callout timeout of 5 s, + 2 s): {parked:?}"
    );
    (session, leader, follower, parked)
}

#[test]
fn an_expired_token_waits_for_the_leaders_refresh_and_goes_on_with_the_new_token() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, mut leader, mut follower, parked) = leader_and_follower(&mut rp, &idp);
    rp.now += 1;
    assert!(
        matches!(rp.wake(&mut follower, &parked), Step::AwaitRefresh { .. }),
        "still under way: still waiting"
    );

    let body = short_lived_token_body(
        &idp.id_token(refreshed_claims("alice", rp.now)),
        "rt-2",
        300,
    );
    let step = rp.callout_response(&mut leader, 200, &body);
    assert_eq!(authorization(&step), Some("Bearer at-rt-2"));
    let stored = stored_session(&rp);

    let step = rp.wake(&mut follower, &parked);
    assert_eq!(authorization(&step), Some("Bearer at-rt-2"));
    let Step::Forward(forward) = &step else {
        unreachable!()
    };
    assert!(
        forward.response_headers.is_empty(),
        "no cookie: the shared-data session keeps its id"
    );
    assert!(
        stored_session(&rp) == stored,
        "the follower does not write the session again"
    );
}

#[test]
fn a_failed_refresh_gives_the_waiting_requests_the_leaders_answer() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, mut leader, mut follower, parked) = leader_and_follower(&mut rp, &idp);
    let leaders = response(rp.callout_response(&mut leader, 503, "unavailable"));
    assert_eq!(leaders.status, 502);
    let followers = response(rp.wake(&mut follower, &parked));
    assert_eq!(followers.status, leaders.status);
    assert_eq!(followers.body, leaders.body);
    let kept = stored_session(&rp);
    assert!(!kept.refresh_in_progress(rp.now), "free for a retry");
}

#[test]
fn a_retry_of_a_failed_refresh_is_waited_for_by_those_still_waiting() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (session, mut leader, mut follower, parked) = leader_and_follower(&mut rp, &idp);
    assert_eq!(
        response(rp.callout_response(&mut leader, 503, "unavailable")).status,
        502
    );
    // Before the follower learnt of the failure, a new request retries ...
    let mut retry = RequestFlow::new();
    let step = rp.request(&mut retry, "GET", "/", &[("cookie", session.as_bytes())]);
    assert!(matches!(step, Step::Callout(_)), "{step:?}");
    // ... and the follower waits for that attempt instead.
    assert!(matches!(
        rp.wake(&mut follower, &parked),
        Step::AwaitRefresh { .. }
    ));
    let body = short_lived_token_body(
        &idp.id_token(refreshed_claims("alice", rp.now)),
        "rt-2",
        300,
    );
    assert_eq!(
        authorization(&rp.callout_response(&mut retry, 200, &body)),
        Some("Bearer at-rt-2")
    );
    assert_eq!(
        authorization(&rp.wake(&mut follower, &parked)),
        Some("Bearer at-rt-2")
    );
}

#[test]
fn a_refused_refresh_sends_the_waiting_requests_to_log_in() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, mut leader, mut follower, parked) = leader_and_follower(&mut rp, &idp);
    let leaders = response(rp.callout_response(&mut leader, 400, r#"{"error":"invalid_grant"}"#));
    assert_eq!(leaders.status, 302);
    let followers = response(rp.wake(&mut follower, &parked));
    assert_eq!(followers.status, 302, "a browser logs in again");
    assert!(header(&followers, "location")
        .unwrap()
        .starts_with("https://idp.example/auth?"));
    assert_ne!(
        header(&followers, "location"),
        header(&leaders, "location"),
        "a login of its own"
    );
    assert!(rp.store.is_empty());
}

#[test]
fn a_wait_that_runs_out_asks_to_retry() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, _leader, mut follower, parked) = leader_and_follower(&mut rp, &idp);
    // The leader never answers (its client went away, its callout was cancelled).
    rp.now += 12;
    let page = response(rp.wake(&mut follower, &parked));
    assert_eq!(page.status, 503);
    assert_eq!(header(&page, "retry-after"), Some("1"));
}

#[test]
fn a_refreshed_id_token_for_another_subject_ends_the_session() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let session = login_with_expiry(&mut rp, &idp, 300);
    rp.now += 290;
    let mut flow = RequestFlow::new();
    let _ = rp.request(&mut flow, "GET", "/", &[("cookie", session.as_bytes())]);
    let body = short_lived_token_body(
        &idp.id_token(refreshed_claims("mallory", rp.now)),
        "rt-2",
        300,
    );
    assert_eq!(
        response(rp.callout_response(&mut flow, 200, &body)).status,
        302
    );
    assert!(rp.store.is_empty());
}

/// Logs in with a token living `expires_in`, lets it near its end and sends
/// the request that starts the refresh: its flow waits for the token answer.
fn start_refresh(rp: &mut Rp, idp: &Idp, expires_in: u64) -> (String, RequestFlow) {
    let session = login_with_expiry(rp, idp, expires_in);
    rp.now += expires_in - 10;
    let mut flow = RequestFlow::new();
    let step = rp.request(&mut flow, "GET", "/", &[("cookie", session.as_bytes())]);
    assert!(matches!(step, Step::Callout(_)), "{step:?}");
    (session, flow)
}

#[test]
fn a_refreshed_id_token_signed_with_a_new_key_refetches_the_keys() {
    let old = Idp::new(1, "k1");
    let rotated = Idp::new(3, "k2");
    let mut rp = Rp::new(&old);
    let (session, mut flow) = start_refresh(&mut rp, &old, 300);
    let body = short_lived_token_body(
        &rotated.id_token(refreshed_claims("alice", rp.now)),
        "rt-2",
        300,
    );
    let step = rp.callout_response(&mut flow, 200, &body);
    assert!(
        matches!(&step, Step::RefetchJwks { kid } if kid == "k2"),
        "{step:?}"
    );
    rp.provider = Some(provider(&rotated));
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_jwks_refreshed(&mut ctx);
    let step = rp.run(&mut flow, step);
    assert_eq!(authorization(&step), Some("Bearer at-rt-2"));
    assert_eq!(stored_session(&rp).refresh_token.as_deref(), Some("rt-2"));
    assert_eq!(
        authorization(&rp.get("/", &session)),
        Some("Bearer at-rt-2")
    );
}

#[test]
fn an_invalid_refreshed_id_token_keeps_the_new_refresh_token() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, mut flow) = start_refresh(&mut rp, &idp, 300);
    let mut claims = refreshed_claims("alice", rp.now);
    claims["aud"] = "someone-else".into();
    let body = short_lived_token_body(&idp.id_token(claims), "rt-2", 300);
    let step = rp.callout_response(&mut flow, 200, &body);
    assert_eq!(
        authorization(&step),
        Some("Bearer at-rt-1"),
        "the new access token is not used; the old one is still valid"
    );
    let stored = stored_session(&rp);
    assert_eq!(
        stored.refresh_token.as_deref(),
        Some("rt-2"),
        "the provider spent rt-1: rt-2 is kept"
    );
    assert_eq!(stored.access_token, "at-rt-1");
    assert!(
        !stored.refresh_in_progress(rp.now),
        "the next request retries"
    );

    // The same once the old access token expired: an error page, rt-2 kept.
    rp.store.clear();
    let (_, mut flow) = start_refresh(&mut rp, &idp, 300);
    rp.now += 20;
    let mut claims = refreshed_claims("alice", rp.now);
    claims["aud"] = "someone-else".into();
    let body = short_lived_token_body(&idp.id_token(claims), "rt-3", 300);
    assert_eq!(
        response(rp.callout_response(&mut flow, 200, &body)).status,
        502
    );
    assert_eq!(stored_session(&rp).refresh_token.as_deref(), Some("rt-3"));
}

#[test]
fn a_token_living_no_longer_than_the_margin_is_refreshed_at_half_its_life() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, r#", "session": {"refresh_margin_seconds": 120}"#);
    let session = login_with_expiry(&mut rp, &idp, 60);
    for _ in 0..5 {
        rp.now += 5;
        assert_eq!(
            authorization(&rp.get("/", &session)),
            Some("Bearer at-rt-1"),
            "not refreshed on every request"
        );
    }
    rp.now += 6;
    let mut flow = RequestFlow::new();
    let step = rp.request(&mut flow, "GET", "/", &[("cookie", session.as_bytes())]);
    assert!(matches!(step, Step::Callout(_)), "due at half its life");
    let body = short_lived_token_body(&idp.id_token(refreshed_claims("alice", rp.now)), "rt-2", 60);
    let _ = rp.callout_response(&mut flow, 200, &body);
    assert_eq!(stored_session(&rp).access_token_lifetime, Some(60));
    rp.now += 29;
    assert_eq!(
        authorization(&rp.get("/", &session)),
        Some("Bearer at-rt-2"),
        "the refreshed token, too, lives half its life before the next refresh"
    );
}

#[test]
fn a_session_logged_out_during_its_refresh_stays_logged_out() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (session, mut flow) = start_refresh(&mut rp, &idp, 300);
    assert_eq!(response(rp.get("/oauth2/logout", &session)).status, 302);
    assert!(rp.store.is_empty());

    let body = short_lived_token_body(
        &idp.id_token(refreshed_claims("alice", rp.now)),
        "rt-2",
        300,
    );
    let _ = rp.callout_response(&mut flow, 200, &body);
    assert!(
        rp.store.is_empty(),
        "the refresh answer does not bring it back"
    );
    assert_eq!(response(rp.get("/", &session)).status, 302);
}

fn logout_token(idp: &Idp, change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut claims = serde_json::json!({
        "iss": ISSUER, "aud": "rp", "iat": NOW, "exp": NOW + 120, "jti": "jti-1",
        "sub": "alice", "sid": "sid-1",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} }
    });
    change(&mut claims);
    idp.id_token(claims)
}

fn post_logout_token(rp: &mut Rp, token: &str) -> LocalResponse {
    rp.body = Some(format!("logout_token={token}").into_bytes());
    let mut flow = RequestFlow::new();
    response(rp.request(&mut flow, "POST", "/bcl", FORM))
}

const FORM: &[(&str, &[u8])] = &[("content-type", b"application/x-www-form-urlencoded")];

#[test]
fn a_logout_token_signed_with_a_new_key_refetches_the_keys() {
    let old = Idp::new(1, "k1");
    let rotated = Idp::new(3, "k2");
    let mut rp = Rp::with_config(&old, r#", "backchannel_logout_path": "/bcl""#);
    let _ = complete_login(&mut rp, &old, "/");
    rp.body = Some(format!("logout_token={}", logout_token(&rotated, |_| {})).into_bytes());
    let mut flow = RequestFlow::new();
    let form: &[u8] = b"application/x-www-form-urlencoded";
    let step = rp.request(&mut flow, "POST", "/bcl", &[("content-type", form)]);
    assert!(
        matches!(&step, Step::RefetchJwks { kid } if kid == "k2"),
        "{step:?}"
    );
    rp.provider = Some(provider(&rotated));
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_jwks_refreshed(&mut ctx);
    assert_eq!(response(rp.run(&mut flow, step)).status, 200);
    assert!(rp.store.is_empty(), "the session ended");
}

#[test]
fn back_channel_logout_ends_the_named_session_once() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, r#", "backchannel_logout_path": "/bcl""#);
    let (_, session) = complete_login(&mut rp, &idp, "/");
    let answer = post_logout_token(&mut rp, &logout_token(&idp, |_| {}));
    assert_eq!(answer.status, 200);
    assert_eq!(header(&answer, "cache-control"), Some("no-store"));
    assert!(rp.store.is_empty());
    assert_eq!(
        response(rp.get("/", &session)).status,
        302,
        "the next request logs in again"
    );

    let (_, _) = complete_login(&mut rp, &idp, "/");
    let replay = post_logout_token(&mut rp, &logout_token(&idp, |_| {}));
    assert_eq!(replay.status, 400, "a jti works once");
    assert_eq!(rp.store.len(), 1);

    let by_sub = post_logout_token(
        &mut rp,
        &logout_token(&idp, |c| {
            c["jti"] = "jti-2".into();
            c.as_object_mut().unwrap().remove("sid");
        }),
    );
    assert_eq!(by_sub.status, 200);
    assert!(
        rp.store.is_empty(),
        "a sub alone ends all the user's sessions"
    );
}

#[test]
fn invalid_logout_tokens_are_refused_and_end_nothing() {
    let idp = Idp::new(1, "k1");
    let forger = Idp::new(9, "k1");
    let mut rp = Rp::with_config(&idp, r#", "backchannel_logout_path": "/bcl""#);
    let _ = complete_login(&mut rp, &idp, "/");
    let cases: Vec<(&str, String)> = vec![
        (
            "no events",
            logout_token(&idp, |c| {
                c.as_object_mut().unwrap().remove("events");
            }),
        ),
        ("nonce", logout_token(&idp, |c| c["nonce"] = "n".into())),
        (
            "wrong audience",
            logout_token(&idp, |c| c["aud"] = "other".into()),
        ),
        (
            "wrong issuer",
            logout_token(&idp, |c| c["iss"] = "https://evil.example".into()),
        ),
        (
            "no sid or sub",
            logout_token(&idp, |c| {
                let c = c.as_object_mut().unwrap();
                c.remove("sid");
                c.remove("sub");
            }),
        ),
        (
            "too old",
            logout_token(&idp, |c| c["iat"] = (NOW - 3600).into()),
        ),
        ("forged", logout_token(&forger, |_| {})),
        ("garbage", "not.a.token".to_string()),
    ];
    for (name, token) in cases {
        let answer = post_logout_token(&mut rp, &token);
        assert_eq!(answer.status, 400, "{name}");
        assert!(
            String::from_utf8_lossy(&answer.body).contains("invalid_request"),
            "{name}"
        );
        assert_eq!(rp.store.len(), 1, "{name} ended a session");
    }
    for content_type in [
        &b"text/plain"[..],
        b"application/json",
        b"multipart/form-data",
    ] {
        rp.body = Some(format!("logout_token={}", logout_token(&idp, |_| {})).into_bytes());
        let mut flow = RequestFlow::new();
        let answer =
            response(rp.request(&mut flow, "POST", "/bcl", &[("content-type", content_type)]));
        assert_eq!(answer.status, 400);
        assert!(String::from_utf8_lossy(&answer.body).contains("x-www-form-urlencoded"));
        assert_eq!(
            rp.store.len(),
            1,
            "a valid token in another format ended a session"
        );
    }
    rp.body = Some(b"logout_token=a&logout_token=b".to_vec());
    let mut flow = RequestFlow::new();
    assert_eq!(
        response(rp.request(&mut flow, "POST", "/bcl", FORM)).status,
        400
    );
    let mut flow = RequestFlow::new();
    assert_eq!(
        response(rp.request(&mut flow, "GET", "/bcl", &[])).status,
        405
    );
}

/// The same flow with `session.store: cookie`.
mod cookie_sessions;
