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
use crate::oidc::discovery::ProviderMetadata;
use crate::oidc::jwks::Jwks;
use crate::session::Session;

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
            },
            &mut self.store,
            &mut self.ledger,
        )
    }

    /// Runs a request until it forwards, answers, or calls out; session and ledger
    /// steps are answered from the in-memory store.
    fn run(&mut self, flow: &mut RequestFlow, first: Step) -> Step {
        let mut step = first;
        loop {
            let (mut ctx, store, ledger) = self.ctx();
            step = match step {
                Step::LoadSession { key } => {
                    let value = store.get(&key).cloned();
                    flow.handle_session(&mut ctx, value.as_deref())
                }
                Step::LoadDenyList { key } => {
                    let value = store.get(&key).cloned();
                    flow.handle_deny_list(&mut ctx, value.as_deref())
                }
                Step::RecordLogin {
                    key,
                    issued_at,
                    state,
                } => {
                    let first = match crate::session::once::mark(
                        ledger.get(&key).map(Vec::as_slice),
                        issued_at,
                        &state,
                    ) {
                        crate::session::once::Mark::Record(v) => {
                            ledger.insert(key, v);
                            true
                        }
                        crate::session::once::Mark::AlreadyUsed => false,
                    };
                    flow.handle_login_recorded(&mut ctx, first)
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
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        };
        let (mut ctx, _, _) = self.ctx();
        let step = flow.handle_request(&mut ctx, head);
        self.run(flow, step)
    }

    fn get(&mut self, target: &str, cookie: &str) -> Step {
        let mut flow = RequestFlow::new();
        self.request(&mut flow, "GET", target, &[("cookie", cookie.as_bytes())])
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

fn apply(store: &mut HashMap<String, Vec<u8>>, writes: Vec<StoreWrite>) {
    for write in writes {
        match write {
            StoreWrite::Put { key, session } => {
                store.insert(key, session.encode());
            }
            StoreWrite::Delete { key } => {
                store.remove(&key);
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
        "access_token": "at-123", "token_type": "Bearer", "expires_in": 300,
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
    assert_eq!(stored.access_token_expires_at, Some(NOW + 300));
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
            ("authorization", b"Bearer forged"),
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
    assert!(matches!(step, Step::RefetchJwks), "{step:?}");

    rp.provider = Some(provider(&rotated));
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_jwks_refreshed(&mut ctx);
    let done = response(rp.run(&mut flow, step));
    assert_eq!(done.status, 302);
    assert_eq!(rp.store.len(), 1);
}

#[test]
fn keys_are_not_refetched_again_and_again() {
    let old = Idp::new(1, "old");
    let rotated = Idp::new(3, "new");
    let mut rp = Rp::new(&old);
    rp.provider.as_mut().unwrap().jwks_fetched_at = NOW - 1;
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

/// The same flow with `session.store: cookie`.
mod cookie_sessions;
