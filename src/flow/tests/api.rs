//! API clients and authorization: bearer tokens, 401s instead of redirects,
//! public paths and claim rules, driven through the whole flow.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::*;

type Headers<'a> = &'a [(&'a str, &'a str)];

const API: &str = "https://api.example/";

fn api_config(extra: &str) -> String {
    format!(
        r#", "bearer": {{ "audiences": ["{API}"] }}, "api_path_prefixes": ["/api/"],
            "public_paths": ["/health", "/static/"]{extra}"#
    )
}

fn access_claims(changes: serde_json::Value) -> serde_json::Value {
    let mut claims = serde_json::json!({
        "iss": ISSUER, "aud": API, "sub": "svc", "client_id": "m2m",
        "iat": NOW - 10, "exp": NOW + 300, "scope": "api:read"
    });
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn call(rp: &mut Rp, method: &str, target: &str, headers: &[(&str, &str)]) -> Step {
    let mut flow = RequestFlow::new();
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    rp.request(&mut flow, method, target, &headers)
}

fn bearer(rp: &mut Rp, target: &str, token: &str) -> Step {
    let auth = format!("Bearer {token}");
    call(
        rp,
        "GET",
        target,
        &[
            ("authorization", &auth),
            ("x-auth-request-user", "spoofed"),
            ("accept", "application/json"),
        ],
    )
}

fn forward(step: Step) -> Forward {
    match step {
        Step::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn set_header<'a>(forward: &'a Forward, name: &str) -> Option<&'a str> {
    forward
        .set_headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn assert_invalid_token(step: Step, what: &str) {
    let r = response(step);
    assert_eq!(r.status, 401, "{what}");
    let challenge = header(&r, "www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(
            "Bearer realm=\"oidc-filter\", error=\"invalid_token\", error_description=\""
        ),
        "{what}: {challenge}"
    );
    assert_eq!(
        header(&r, "content-type"),
        Some("application/json"),
        "{what}"
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "invalid_token", "{what}");
}

#[test]
fn a_valid_jwt_passes_with_identity_and_the_token_itself() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let token = idp.id_token(access_claims(
        serde_json::json!({"email": "svc@example.test"}),
    ));
    let f = forward(bearer(&mut rp, "/api/items?x=1", &token));
    assert!(f.remove_headers.iter().any(|h| h == "authorization"));
    assert!(f.remove_headers.iter().any(|h| h == "x-auth-request-user"));
    assert_eq!(
        set_header(&f, "authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(set_header(&f, "x-auth-request-user"), Some("svc"));
    assert_eq!(
        set_header(&f, "x-auth-request-email"),
        Some("svc@example.test")
    );
    assert!(rp.store.is_empty(), "a bearer request creates no session");

    // The scheme is case-insensitive, and a navigation with a token is judged by the token.
    let auth = format!("bEaReR   {token}");
    let f = forward(call(
        &mut rp,
        "GET",
        "/",
        &[("authorization", &auth), ("accept", "text/html")],
    ));
    assert_eq!(set_header(&f, "x-auth-request-user"), Some("svc"));
}

#[test]
fn refused_tokens_get_401_invalid_token_never_a_redirect() {
    let idp = Idp::new(1, "k1");
    let impostor = Idp::new(2, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(access_claims(serde_json::json!({})).to_string());
    let cases = [
        (
            "expired",
            idp.id_token(access_claims(serde_json::json!({"exp": NOW - 61}))),
        ),
        (
            "not yet valid",
            idp.id_token(access_claims(serde_json::json!({"nbf": NOW + 61}))),
        ),
        (
            "wrong audience",
            idp.id_token(access_claims(serde_json::json!({"aud": "rp"}))),
        ),
        (
            "no audience",
            idp.id_token(access_claims(serde_json::json!({"aud": null}))),
        ),
        (
            "wrong issuer",
            idp.id_token(access_claims(
                serde_json::json!({"iss": "https://evil.example"}),
            )),
        ),
        (
            "bad signature",
            impostor.id_token(access_claims(serde_json::json!({}))),
        ),
        ("alg none", format!("{none_header}.{payload}.")),
        (
            "alg none with a signature",
            format!("{none_header}.{payload}.c2ln"),
        ),
        (
            "an ID token",
            idp.id_token(access_claims(serde_json::json!({"nonce": "n"}))),
        ),
        ("garbage", "a.b.c".to_string()),
        (
            "opaque without introspection",
            "2YotnFZFEjr1zCsicMWpAA".to_string(),
        ),
    ];
    for (what, token) in cases {
        assert_invalid_token(bearer(&mut rp, "/", &token), what);
        // Navigations get the same answer: a token was presented and refused.
        let auth = format!("Bearer {token}");
        let r = response(call(&mut rp, "GET", "/", &[("authorization", &auth)]));
        assert_eq!(r.status, 401, "{what}");
    }
    let expired = response(bearer(
        &mut rp,
        "/",
        &idp.id_token(access_claims(serde_json::json!({"exp": NOW - 61}))),
    ));
    assert!(header(&expired, "www-authenticate")
        .unwrap()
        .contains("expired"));
    for (what, value) in [
        ("no token", "Bearer"),
        ("bad characters", "Bearer a\"b"),
        ("inner space", "Bearer a b"),
        ("inner equals", "Bearer a=b"),
    ] {
        assert_invalid_token(call(&mut rp, "GET", "/", &[("authorization", value)]), what);
    }
    let r = response(call(
        &mut rp,
        "GET",
        "/",
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ));
    assert_eq!(r.status, 400);
}

#[test]
fn descriptions_never_echo_the_token() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let token = idp.id_token(access_claims(
        serde_json::json!({"iss": "https://evil\"x.example"}),
    ));
    let r = response(bearer(&mut rp, "/", &token));
    let challenge = header(&r, "www-authenticate").unwrap();
    assert!(!challenge.contains("evil") && !String::from_utf8_lossy(&r.body).contains("evil"));
}

#[test]
fn an_unknown_kid_refetches_keys_once_for_bearer_tokens() {
    let old = Idp::new(1, "old");
    let rotated = Idp::new(3, "new");
    let mut rp = Rp::with_config(&old, &api_config(""));
    let token = rotated.id_token(access_claims(serde_json::json!({})));
    let mut flow = RequestFlow::new();
    let auth = format!("Bearer {token}");
    let step = rp.request(
        &mut flow,
        "GET",
        "/api/x",
        &[("authorization", auth.as_bytes())],
    );
    assert!(
        matches!(&step, Step::RefetchJwks { kid } if kid == "new"),
        "{step:?}"
    );
    rp.provider = Some(provider(&rotated));
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_jwks_refreshed(&mut ctx);
    assert_eq!(
        set_header(&forward(step), "x-auth-request-user"),
        Some("svc")
    );

    // Keys that still do not know the kid after the refetch: refused, no second refetch.
    let mut rp = Rp::with_config(&old, &api_config(""));
    let mut flow = RequestFlow::new();
    let step = rp.request(
        &mut flow,
        "GET",
        "/api/x",
        &[("authorization", auth.as_bytes())],
    );
    assert!(matches!(step, Step::RefetchJwks { .. }));
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_jwks_refreshed(&mut ctx);
    assert_invalid_token(step, "kid still unknown");

    // Keys fetched on schedule moments ago are fetched again for an unknown kid…
    let mut rp = Rp::with_config(&old, &api_config(""));
    rp.provider.as_mut().unwrap().jwks_fetched_at = NOW - 1;
    let mut flow = RequestFlow::new();
    let step = rp.request(
        &mut flow,
        "GET",
        "/api/x",
        &[("authorization", auth.as_bytes())],
    );
    assert!(matches!(step, Step::RefetchJwks { .. }), "{step:?}");

    // …but not right after another unknown kid caused a refetch…
    let mut rp = Rp::with_config(&old, &api_config(""));
    rp.provider.as_mut().unwrap().kid_refetches.last_at = Some(NOW - 1);
    assert_invalid_token(bearer(&mut rp, "/", &token), "recent kid refetch");

    // …nor for a kid a refetch did not bring.
    let mut rp = Rp::with_config(&old, &api_config(""));
    let kid_refetches = &mut rp.provider.as_mut().unwrap().kid_refetches;
    kid_refetches.unknown.push(("new".to_string(), NOW + 60));
    assert_invalid_token(bearer(&mut rp, "/", &token), "known unknown kid");
}

#[test]
fn without_provider_metadata_bearer_requests_get_503() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    rp.provider = None;
    let r = response(bearer(
        &mut rp,
        "/",
        &idp.id_token(access_claims(serde_json::json!({}))),
    ));
    assert_eq!(r.status, 503);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
}

#[test]
fn require_mode_accepts_only_bearer_tokens() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let (_, session) = complete_login(&mut rp, &idp, "/");
    rp.config = Config::parse(
        config_json(r#", "bearer": {"mode": "require", "audiences": ["https://api.example/"]}"#)
            .as_bytes(),
        |_| None,
    )
    .unwrap();
    let r = response(rp.get("/", &session));
    assert_eq!(r.status, 401, "a session does not count in require mode");
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer realm=\"oidc-filter\"")
    );
    let r = response(call(
        &mut rp,
        "GET",
        "/",
        &[("authorization", "Basic dTpw")],
    ));
    assert_eq!(r.status, 401);
    let token = idp.id_token(access_claims(serde_json::json!({})));
    assert!(matches!(bearer(&mut rp, "/", &token), Step::Forward(_)));
}

#[test]
fn ignore_mode_does_not_look_at_authorization() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, r#", "bearer": {"mode": "ignore"}"#);
    let token = idp.id_token(access_claims(serde_json::json!({"aud": "rp"})));
    let auth = format!("Bearer {token}");
    let r = response(call(&mut rp, "GET", "/", &[("authorization", &auth)]));
    assert_eq!(r.status, 302, "a navigation still logs in");
    let (_, session) = complete_login(&mut rp, &idp, "/");
    let f = forward(call(
        &mut rp,
        "GET",
        "/",
        &[("authorization", &auth), ("cookie", &session)],
    ));
    assert!(f.remove_headers.iter().any(|h| h == "authorization"));
    assert_eq!(set_header(&f, "authorization"), Some("Bearer at-123"));
}

#[test]
fn requests_that_cannot_follow_a_login_get_401() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let cases: &[(&str, &str, Headers)] = &[
        ("GET", "/", &[("x-requested-with", "XMLHttpRequest")]),
        ("GET", "/", &[("accept", "application/json")]),
        (
            "GET",
            "/",
            &[("sec-fetch-mode", "cors"), ("accept", "text/html")],
        ),
        ("POST", "/form", &[("accept", "text/html")]),
        ("GET", "/api/items", &[("accept", "text/html")]),
    ];
    for (method, target, headers) in cases {
        let r = response(call(&mut rp, method, target, headers));
        assert_eq!(r.status, 401, "{method} {target} {headers:?}");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"oidc-filter\"")
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(
            set_cookies(&r).is_empty(),
            "no login cookie for a request that cannot log in"
        );
    }
    let r = response(call(
        &mut rp,
        "GET",
        "/page",
        &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
    ));
    assert_eq!(r.status, 302);

    // An expired session on an XHR: 401, and the dead session is still removed.
    let (_, session) = complete_login(&mut rp, &idp, "/");
    assert_eq!(rp.store.len(), 1);
    rp.now += rp.config.session.idle_timeout + 1;
    let r = response(call(
        &mut rp,
        "GET",
        "/",
        &[("cookie", &session), ("x-requested-with", "XMLHttpRequest")],
    ));
    assert_eq!(r.status, 401);
    assert!(rp.store.is_empty());
}

#[test]
fn public_paths_pass_without_login_and_resist_tricks() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    for target in [
        "/health",
        "/health?x=/admin",
        "/static/app.js",
        "//static/x",
        "/static/a/../b",
    ] {
        let f = forward(call(
            &mut rp,
            "GET",
            target,
            &[
                ("x-auth-request-user", "spoofed"),
                ("authorization", "Bearer forged"),
            ],
        ));
        assert!(
            f.remove_headers.iter().any(|h| h == "x-auth-request-user"),
            "{target}"
        );
        assert!(
            f.remove_headers.iter().any(|h| h == "authorization"),
            "{target}"
        );
        assert!(f.set_headers.is_empty(), "{target}");
    }
    for target in [
        "/admin?x=/health",
        "/static/../admin",
        "/static/%2e%2e/admin",
        "/healthz",
    ] {
        assert_eq!(response(rp.get(target, "")).status, 302, "{target}");
    }
    // Never public. Without rules nothing depends on the path, so it is left to
    // the upstream like any other authenticated request; with API prefixes it
    // cannot be told whether it is an API request, so it gets 401, not a redirect.
    let tricky = [
        "/static%2F..%2Fadmin",
        "/static/..%2fadmin",
        "/static/%252e%252e/admin",
        "/../admin",
    ];
    for target in tricky {
        assert_eq!(response(rp.get(target, "")).status, 401, "{target}");
    }
    let mut plain = Rp::with_config(&idp, r#", "public_paths": ["/static/"]"#);
    let session = login_with(&mut plain, &idp, serde_json::json!({}));
    for target in tricky {
        assert_eq!(response(plain.get(target, "")).status, 302, "{target}");
        assert!(
            matches!(plain.get(target, &session), Step::Forward(_)),
            "{target}"
        );
    }
    // With rules such paths cannot be judged, so they are refused before anything else.
    let mut ruled = Rp::with_config(&idp, &api_config(ADMIN_RULES));
    for target in tricky {
        let r = response(ruled.get(target, ""));
        assert_eq!(r.status, 400, "{target}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("Bad request"),
            "{target}"
        );
        let json = [("accept", "application/json")];
        let r = response(call(&mut ruled, "GET", target, &json));
        assert_eq!(r.status, 400, "{target}");
        assert_eq!(header(&r, "content-type"), Some("application/json"));
    }
    let mut flow = RequestFlow::new();
    let head = RequestHead {
        method: "GET".into(),
        target: b"/static/\xff".to_vec(),
        ..Default::default()
    };
    let (mut ctx, _, _) = ruled.ctx();
    assert_eq!(response(flow.handle_request(&mut ctx, head)).status, 400);
}

/// Logs in with extra ID token claims and returns the session cookie.
fn login_with(rp: &mut Rp, idp: &Idp, claims: serde_json::Value) -> String {
    let login = start(rp, "/");
    let (mut flow, _) = callback(rp, &login, "code-1");
    let mut id_claims = valid_claims(&login.nonce);
    for (k, v) in claims.as_object().unwrap() {
        id_claims[k] = v.clone();
    }
    let body = serde_json::json!({
        "access_token": "at-1", "token_type": "Bearer", "expires_in": 300,
        "id_token": idp.id_token(id_claims), "scope": "openid email api:read"
    })
    .to_string();
    let done = response(rp.callout_response(&mut flow, 200, &body));
    assert_eq!(done.status, 302);
    cookie_pair(&done, "__Host-oidc-session")
}

const ADMIN_RULES: &str = r#", "authorization": {"default": "allow", "rules": [
    {"path_prefix": "/admin/", "require": {"claims": {"groups": ["admins"]}}},
    {"path_prefix": "/reports/", "methods": ["POST"], "require": {"scopes": ["api:write"]}},
    {"path_prefix": "/reports/", "require": {"scopes": ["api:read"], "claims": {"realm_access.roles": "reader"}}},
    {"path_prefix": "/closed/", "allow": false}
]}"#;

#[test]
fn rules_decide_for_sessions() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(ADMIN_RULES));
    let alice = login_with(
        &mut rp,
        &idp,
        serde_json::json!({"groups": ["admins", "users"], "realm_access": {"roles": ["reader"]}}),
    );
    let bob = login_with(&mut rp, &idp, serde_json::json!({"groups": ["users"]}));

    assert!(matches!(rp.get("/admin/users", &alice), Step::Forward(_)));
    for target in [
        "/admin/users",
        "/admin",
        "//admin/x",
        "/x/../admin/",
        "/closed/x",
    ] {
        let r = response(rp.get(target, &bob));
        assert_eq!(r.status, 403, "{target}");
        assert!(String::from_utf8_lossy(&r.body).contains("Access denied"));
        assert!(
            !String::from_utf8_lossy(&r.body).contains("admins"),
            "names no requirement values"
        );
    }
    let xhr = [("cookie", bob.as_str()), ("accept", "application/json")];
    let r = response(call(&mut rp, "GET", "/admin/x", &xhr));
    assert_eq!(r.status, 403);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert!(matches!(rp.get("/administrator", &bob), Step::Forward(_)));

    // Sessions keep the granted scope and the nested claims rules read.
    assert!(matches!(rp.get("/reports/q", &alice), Step::Forward(_)));
    assert_eq!(response(rp.get("/reports/q", &bob)).status, 403);
    let post = [("cookie", alice.as_str()), ("accept", "application/json")];
    assert_eq!(
        response(call(&mut rp, "POST", "/reports/q", &post)).status,
        403
    );
}

#[test]
fn rules_decide_for_bearer_tokens() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(ADMIN_RULES));
    let reader = idp.id_token(access_claims(serde_json::json!({
        "scp": ["api:read"], "scope": null, "realm_access": {"roles": ["reader", "x"]}
    })));
    assert!(matches!(
        bearer(&mut rp, "/reports/1", &reader),
        Step::Forward(_)
    ));
    let r = response(bearer(&mut rp, "/admin/1", &reader));
    assert_eq!(r.status, 403);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer realm=\"oidc-filter\", error=\"insufficient_scope\"")
    );
    let r = response(bearer(&mut rp, "/closed/1", &reader));
    assert_eq!(r.status, 403);
    assert_eq!(header(&r, "www-authenticate"), None);
}

#[test]
fn default_deny_refuses_paths_no_rule_opens() {
    let idp = Idp::new(1, "k1");
    let rules = r#", "authorization": {"default": "deny", "rules": [{"path_prefix": "/app/"}]}"#;
    let mut rp = Rp::with_config(&idp, &api_config(rules));
    let session = login_with(&mut rp, &idp, serde_json::json!({}));
    assert!(matches!(rp.get("/app/x", &session), Step::Forward(_)));
    assert_eq!(response(rp.get("/other", &session)).status, 403);
    // Public paths need no rule.
    assert!(matches!(rp.get("/health", ""), Step::Forward(_)));
}

const INTROSPECTION: &str = r#", "bearer": {"audiences": ["rp"], "introspection": {"enabled": true, "cache_seconds": 30, "max_entries": 4}}"#;

fn with_introspection(idp: &Idp) -> Rp {
    let mut rp = Rp::with_config(idp, INTROSPECTION);
    rp.provider
        .as_mut()
        .unwrap()
        .metadata
        .introspection_endpoint =
        Some(Url::parse("https://idp.example/token/introspection").unwrap());
    rp
}

fn introspection_answer(rp: &mut Rp, flow: &mut RequestFlow, body: serde_json::Value) -> Step {
    rp.callout_response(flow, 200, &body.to_string())
}

#[test]
fn opaque_tokens_are_introspected_and_cached() {
    let idp = Idp::new(1, "k1");
    let mut rp = with_introspection(&idp);
    let token = "2YotnFZFEjr1zCsicMWpAA";
    let auth = format!("Bearer {token}");
    let headers: &[(&str, &[u8])] = &[
        ("authorization", auth.as_bytes()),
        ("accept", b"application/json"),
    ];

    let mut flow = RequestFlow::new();
    let step = rp.request(&mut flow, "GET", "/api/x", headers);
    let Step::Callout(callout) = step else {
        panic!("expected an introspection callout, got {step:?}");
    };
    assert_eq!(callout.method, "POST");
    assert_eq!(callout.path, "/token/introspection");
    let body = String::from_utf8(callout.body.clone()).unwrap();
    assert!(body.contains(&format!("token={token}")), "{body}");
    assert!(callout
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.starts_with("Basic ")));

    let active = serde_json::json!({"active": true, "token_type": "Bearer", "sub": "alice",
        "client_id": "rp", "iss": ISSUER, "exp": NOW + 600, "scope": "openid"});
    let f = forward(introspection_answer(&mut rp, &mut flow, active));
    assert_eq!(set_header(&f, "x-auth-request-user"), Some("alice"));
    assert_eq!(rp.store.len(), 1, "the answer is cached");
    assert!(
        rp.store
            .values()
            .all(|v| !String::from_utf8_lossy(v).contains(token)),
        "the cache never holds the token"
    );

    // Cached: no callout within cache_seconds.
    let f = forward(rp.request(&mut RequestFlow::new(), "GET", "/api/x", headers));
    assert_eq!(set_header(&f, "x-auth-request-user"), Some("alice"));
    // Expired from the cache: asked again.
    rp.now += 31;
    assert!(matches!(
        rp.request(&mut RequestFlow::new(), "GET", "/api/x", headers),
        Step::Callout(_)
    ));
}

#[test]
fn inactive_or_unusable_introspection_answers_are_refused() {
    let idp = Idp::new(1, "k1");
    let token = "opaque-token-1";
    let auth = format!("Bearer {token}");
    let headers: &[(&str, &[u8])] = &[("authorization", auth.as_bytes())];
    let cases = [
        serde_json::json!({"active": false}),
        serde_json::json!({"active": true, "token_type": "Bearer", "client_id": "other"}),
        serde_json::json!({"active": true, "client_id": "rp"}),
        serde_json::json!({"active": true, "token_type": "Bearer", "client_id": "rp", "exp": NOW - 100}),
    ];
    for answer in cases {
        let mut rp = with_introspection(&idp);
        let mut flow = RequestFlow::new();
        assert!(matches!(
            rp.request(&mut flow, "GET", "/", headers),
            Step::Callout(_)
        ));
        assert_invalid_token(
            introspection_answer(&mut rp, &mut flow, answer.clone()),
            "inactive",
        );
        // The refusal is cached too: the provider is not asked again for a while.
        assert_invalid_token(
            rp.request(&mut RequestFlow::new(), "GET", "/", headers),
            "cached",
        );
    }

    let mut rp = with_introspection(&idp);
    let mut flow = RequestFlow::new();
    assert!(matches!(
        rp.request(&mut flow, "GET", "/", headers),
        Step::Callout(_)
    ));
    let r = response(rp.callout_response(&mut flow, 500, "oops"));
    assert_eq!(r.status, 503);
    assert!(rp.store.is_empty(), "failures are not cached");

    let mut rp = with_introspection(&idp);
    rp.provider
        .as_mut()
        .unwrap()
        .metadata
        .introspection_endpoint = None;
    assert_invalid_token(
        rp.request(&mut RequestFlow::new(), "GET", "/", headers),
        "no endpoint",
    );
}

#[test]
fn the_cache_is_bounded_and_collisions_only_evict() {
    let idp = Idp::new(1, "k1");
    let mut rp = with_introspection(&idp);
    for i in 0..40 {
        let auth = format!("Bearer token-{i}");
        let mut flow = RequestFlow::new();
        let step = rp.request(&mut flow, "GET", "/", &[("authorization", auth.as_bytes())]);
        if matches!(step, Step::Callout(_)) {
            let answer = serde_json::json!({"active": true, "token_type": "Bearer", "sub": format!("u{i}"), "client_id": "rp"});
            let f = forward(introspection_answer(&mut rp, &mut flow, answer));
            assert_eq!(
                set_header(&f, "x-auth-request-user"),
                Some(format!("u{i}").as_str())
            );
        }
    }
    assert!(rp.store.len() <= 4, "{} entries", rp.store.len());
    // Whatever sits in a slot, a token only ever gets its own answer.
    for i in 0..40 {
        let auth = format!("Bearer token-{i}");
        let mut flow = RequestFlow::new();
        if let Step::Forward(f) =
            rp.request(&mut flow, "GET", "/", &[("authorization", auth.as_bytes())])
        {
            assert_eq!(
                set_header(&f, "x-auth-request-user"),
                Some(format!("u{i}").as_str())
            );
        }
    }
}

#[test]
fn an_id_token_without_nonce_is_no_access_token_for_the_client_id_audience() {
    let idp = Idp::new(1, "k1");
    // An operator who names the client id as the API audience: the audience of our ID tokens.
    let mut rp = Rp::with_config(&idp, r#", "bearer": {"audiences": ["rp"]}"#);
    let refreshed_id_token = idp.id_token(serde_json::json!({
        "iss": ISSUER, "aud": "rp", "azp": "rp", "sub": "alice", "auth_time": NOW - 600,
        "iat": NOW - 10, "exp": NOW + 300, "at_hash": "x"
    }));
    assert_invalid_token(
        bearer(&mut rp, "/", &refreshed_id_token),
        "ID token from a refresh",
    );
    let bare = idp.id_token(serde_json::json!({
        "iss": ISSUER, "aud": "rp", "sub": "alice", "sid": "s1",
        "iat": NOW - 10, "exp": NOW + 300, "email": "alice@example.test"
    }));
    assert_invalid_token(bearer(&mut rp, "/", &bare), "grants nothing");

    // An access token for the client id with a scope passes.
    let access = idp.id_token(serde_json::json!({
        "iss": ISSUER, "aud": "rp", "sub": "alice", "client_id": "rp",
        "iat": NOW - 10, "exp": NOW + 300, "scope": "openid api"
    }));
    assert_eq!(
        set_header(
            &forward(bearer(&mut rp, "/", &access)),
            "x-auth-request-user"
        ),
        Some("alice")
    );
}

// ---- the per-VM cache of verified JWT access tokens ---------------------------------

#[test]
fn a_verified_token_is_cached_and_the_rules_still_judge_each_request() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(ADMIN_RULES));
    let reader = idp.id_token(access_claims(serde_json::json!({
        "realm_access": {"roles": ["reader"]}
    })));
    assert!(rp.caches.access_tokens.is_empty());
    let f = forward(bearer(&mut rp, "/reports/1", &reader));
    assert_eq!(set_header(&f, "x-auth-request-user"), Some("svc"));
    assert_eq!(rp.caches.access_tokens.len(), 1);

    // Served from the cache: same identity, exactly this token upstream,
    // client copies of identity headers removed.
    let f = forward(bearer(&mut rp, "/reports/2", &reader));
    assert_eq!(set_header(&f, "x-auth-request-user"), Some("svc"));
    assert_eq!(
        set_header(&f, "authorization"),
        Some(format!("Bearer {reader}").as_str())
    );
    assert!(f.remove_headers.iter().any(|h| h == "x-auth-request-user"));
    assert_eq!(rp.caches.access_tokens.len(), 1);
    // The path decides per request, cached token or not.
    assert_eq!(response(bearer(&mut rp, "/admin/1", &reader)).status, 403);
    assert_eq!(response(bearer(&mut rp, "/closed/1", &reader)).status, 403);
    let r = response(call(
        &mut rp,
        "POST",
        "/reports/1",
        &[("authorization", &format!("Bearer {reader}"))],
    ));
    assert_eq!(r.status, 403);
}

#[test]
fn a_cached_token_is_never_served_past_its_exp() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let token = idp.id_token(access_claims(serde_json::json!({"exp": NOW + 300})));
    assert!(matches!(
        bearer(&mut rp, "/api/x", &token),
        Step::Forward(_)
    ));
    assert_eq!(rp.caches.access_tokens.len(), 1);
    // At exp the cache no longer answers (the verifier's skew may still admit it)…
    rp.now = NOW + 300;
    let digest = crate::cache::digest(token.as_bytes());
    let jwks = rp.provider.as_ref().unwrap().jwks.clone();
    assert!(rp
        .caches
        .access_tokens
        .get(&digest, &jwks, rp.now)
        .is_none());
    // …and past exp and the skew the token is refused, whatever was cached.
    assert!(matches!(
        bearer(&mut rp, "/api/x", &token),
        Step::Forward(_)
    ));
    rp.now = NOW + 300 + 61;
    assert_invalid_token(bearer(&mut rp, "/api/x", &token), "expired after caching");
    assert!(rp.caches.access_tokens.is_empty());
}

#[test]
fn changed_keys_empty_the_token_cache() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let token = idp.id_token(access_claims(serde_json::json!({})));
    assert!(matches!(
        bearer(&mut rp, "/api/x", &token),
        Step::Forward(_)
    ));
    assert_eq!(rp.caches.access_tokens.len(), 1);

    // The provider replaced the key behind "k1": the cached verification is
    // worth nothing, the token is checked against the new key and refused.
    let replaced = Idp::new(2, "k1");
    rp.provider = Some(provider(&replaced));
    assert_invalid_token(bearer(&mut rp, "/api/x", &token), "key replaced");
    assert!(rp.caches.access_tokens.is_empty());

    // The key was withdrawn (rotated to another kid): not served from the
    // cache either; the unknown kid asks for the keys again.
    let mut rp = Rp::with_config(&idp, &api_config(""));
    assert!(matches!(
        bearer(&mut rp, "/api/x", &token),
        Step::Forward(_)
    ));
    rp.provider = Some(provider(&Idp::new(3, "k2")));
    let step = bearer(&mut rp, "/api/x", &token);
    assert!(
        matches!(&step, Step::RefetchJwks { kid } if kid == "k1"),
        "{step:?}"
    );
    assert!(rp.caches.access_tokens.is_empty());
}

#[test]
fn a_flood_of_distinct_tokens_stays_within_the_cache_bound() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    rp.caches.access_tokens = crate::oidc::access_token_cache::AccessTokenCache::with_capacity(4);
    for i in 0..20 {
        let token = idp.id_token(access_claims(serde_json::json!({"jti": format!("t{i}")})));
        assert!(matches!(
            bearer(&mut rp, "/api/x", &token),
            Step::Forward(_)
        ));
        assert!(rp.caches.access_tokens.len() <= 4);
    }
    assert_eq!(rp.caches.access_tokens.len(), 4);
}

#[test]
fn a_token_differing_in_one_byte_is_no_cache_hit() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, &api_config(""));
    let token = idp.id_token(access_claims(serde_json::json!({})));
    assert!(matches!(
        bearer(&mut rp, "/api/x", &token),
        Step::Forward(_)
    ));
    let flip = |at: usize| {
        let mut bytes = token.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let payload_at = token.find('.').unwrap() + 5;
    for altered in [flip(token.len() - 2), flip(payload_at)] {
        assert_ne!(altered, token);
        assert_invalid_token(bearer(&mut rp, "/api/x", &altered), "altered token");
    }
    assert_eq!(rp.caches.access_tokens.len(), 1);
}
