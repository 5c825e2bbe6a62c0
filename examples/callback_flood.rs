//! Drives 200,000 forged callbacks through the core within one minute of
//! clock time, as an attacker would: mint a login cookie with `GET /`, send
//! its state with a made-up code to the callback. One genuine login starts
//! every 1,000 forged ones and its callback comes back a few seconds later.
//! Prints the single-use ledger's size in shared data, the cost per
//! callback, and whether every genuine login reached the token exchange.
//!
//! Run: `bench/callback_flood` (or `cargo run --release --example callback_flood`).
//! Native and single-threaded on an in-memory shared data with Envoy's
//! compare-and-swap semantics; inside the wasm VM expect it slower.

use std::time::{Duration, Instant};

use oidc_filter::config::Config;
use oidc_filter::crypto::seal::SealingKeys;
use oidc_filter::flow::{Caches, Context, RequestFlow, RequestHead, Step};
use oidc_filter::oidc::discovery::ProviderMetadata;
use oidc_filter::oidc::jwks::Jwks;
use oidc_filter::provider::Provider;
use oidc_filter::session::shared_store::{record_once, InMemory};
use url::Url;

const FORGED: u32 = 200_000;
const GENUINE_EVERY: u32 = 1_000;
const START: u64 = 1_800_000_000;

fn config() -> Config {
    let raw = r#"{
        "issuer": "https://idp.example",
        "client_id": "rp",
        "client_secret": "s3cret",
        "redirect_uri": "https://app.example/oauth2/callback",
        "provider_cluster": "idp"
    }"#;
    match Config::parse(raw.as_bytes(), |_| None) {
        Ok(config) => config,
        Err(err) => panic!("bench configuration: {err}"),
    }
}

fn provider() -> Provider {
    let url = |u: &str| Url::parse(u).expect("bench URL");
    Provider {
        metadata: ProviderMetadata {
            issuer: "https://idp.example".into(),
            authorization_endpoint: url("https://idp.example/auth"),
            token_endpoint: url("https://idp.example/token"),
            jwks_uri: url("https://idp.example/jwks"),
            end_session_endpoint: None,
            introspection_endpoint: None,
            revocation_endpoint: None,
            userinfo_endpoint: None,
            id_token_signing_alg_values_supported: vec!["RS256".into()],
            authorization_response_iss_parameter_supported: true,
        },
        jwks: Jwks::parse(jwks().as_bytes()).expect("JWKS"),
        jwks_fetched_at: START,
        kid_refetches: Default::default(),
    }
}

/// The callback path never gets as far as verifying: any usable key will do.
fn jwks() -> String {
    let signing = p256::ecdsa::SigningKey::from_slice(&[1; 32]).expect("P-256 key");
    let public = p256::PublicKey::from(signing.verifying_key());
    let mut jwk: serde_json::Value = serde_json::from_str(&public.to_jwk_string()).expect("JWK");
    jwk["kid"] = "k1".into();
    serde_json::json!({ "keys": [jwk] }).to_string()
}

struct Bench {
    config: Config,
    provider: Provider,
    keys: SealingKeys,
    rng: rand_core::OsRng,
    data: InMemory,
    caches: Caches,
}

impl Bench {
    fn run(&mut self, now: u64, flow: &mut RequestFlow, head: RequestHead) -> Step {
        let events = oidc_filter::flow::event::Events::default();
        let mut ctx = Context {
            config: &self.config,
            provider: Some(&self.provider),
            keys: &self.keys,
            now,
            rng: &mut self.rng,
            events: &events,
            caches: &mut self.caches,
        };
        let mut step = flow.handle_request(&mut ctx, head);
        loop {
            step = match step {
                Step::RecordOnce { key, value, until } => {
                    let first = record_once(&self.data, &key, &value, until, now);
                    flow.handle_once_recorded(&mut ctx, first)
                }
                other => return other,
            }
        }
    }

    /// `GET /` without a session: the login cookie and the state.
    fn mint(&mut self, now: u64) -> (String, String) {
        let head = RequestHead::new(
            "GET".into(),
            b"/".to_vec(),
            Some("app.example".into()),
            vec![("accept".into(), b"text/html".to_vec())],
        );
        let Step::Respond(respond) = self.run(now, &mut RequestFlow::new(), head) else {
            panic!("expected the redirect to the provider")
        };
        let header = |name: &str| {
            respond
                .response
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .expect("header")
        };
        let location = Url::parse(&header("location")).expect("location");
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("state");
        let cookie = header("set-cookie")
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        (cookie, state)
    }

    /// The callback; `true` when it got as far as the token exchange.
    fn callback(&mut self, now: u64, cookie: &str, state: &str, code: &str) -> bool {
        let target =
            format!("/oauth2/callback?code={code}&state={state}&iss=https%3A%2F%2Fidp.example");
        let head = RequestHead::new(
            "GET".into(),
            target.into_bytes(),
            Some("app.example".into()),
            vec![("cookie".into(), cookie.as_bytes().to_vec())],
        );
        matches!(
            self.run(now, &mut RequestFlow::new(), head),
            Step::Callout(_)
        )
    }
}

fn main() {
    let mut bench = Bench {
        config: config(),
        provider: provider(),
        keys: SealingKeys::from_raw(vec![[7; 32]]).expect("key"),
        rng: rand_core::OsRng,
        data: InMemory::default(),
        caches: Caches::default(),
    };
    let mut pending: Vec<(u64, String, String)> = Vec::new();
    let (mut genuine, mut genuine_done, mut replays_refused) = (0, 0, 0);
    let mut callback_time = Duration::ZERO;
    let mut peak_bytes = 0;
    for n in 0..FORGED {
        // 200,000 callbacks spread over 60 seconds of clock time.
        let now = START + u64::from(n) * 60 / u64::from(FORGED);
        if n % GENUINE_EVERY == 0 {
            let (cookie, state) = bench.mint(now);
            pending.push((now + 5, cookie, state));
            genuine += 1;
        }
        let (cookie, state) = bench.mint(now);
        let started = Instant::now();
        let reached = bench.callback(now, &cookie, &state, "forged");
        callback_time += started.elapsed();
        assert!(
            reached,
            "a fresh forged callback reaches the token exchange"
        );
        if n % 1000 == 1 {
            assert!(
                !bench.callback(now, &cookie, &state, "forged"),
                "a replayed callback was accepted"
            );
            replays_refused += 1;
        }
        while pending.first().is_some_and(|(due, _, _)| *due <= now) {
            let (_, cookie, state) = pending.remove(0);
            if bench.callback(now, &cookie, &state, "genuine-code") {
                genuine_done += 1;
            }
        }
        if n % 10_000 == 0 {
            peak_bytes = peak_bytes.max(bench.data.bytes());
        }
    }
    for (_, cookie, state) in std::mem::take(&mut pending) {
        let now = START + 65;
        if bench.callback(now, &cookie, &state, "genuine-code") {
            genuine_done += 1;
        }
    }
    peak_bytes = peak_bytes.max(bench.data.bytes());
    println!("forged callbacks:            {FORGED} within 60 s of clock time");
    println!(
        "per forged callback:         {:.1} µs (open the login cookie, check, record, build the token request)",
        callback_time.as_secs_f64() * 1e6 / f64::from(FORGED)
    );
    println!(
        "ledger in shared data:       {} keys, {} bytes at the end, {} bytes at most",
        bench.data.keys(),
        bench.data.bytes(),
        peak_bytes
    );
    println!("replays refused:             {replays_refused}");
    println!("genuine logins completed:    {genuine_done} of {genuine} reached the token exchange");
}
