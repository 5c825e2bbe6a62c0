//! Cookie sessions driven through the flow: the session lives only in a
//! simulated browser jar, never in the store.

use std::collections::BTreeMap;

use super::*;
use crate::session::deny_list::{DenyList, DENY_LIST_KEY};

const BASE: &str = "__Host-oidc-session";
const COOKIE_STORE: &str = r#", "session": {"store": "cookie", "idle_timeout_seconds": 600, "absolute_timeout_seconds": 3600},
    "cookie": {"keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"]}"#;

/// A browser's cookies for the app, updated from `Set-Cookie` headers.
#[derive(Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take<'a>(&mut self, headers: impl IntoIterator<Item = &'a (String, String)>) {
        for (name, value) in headers {
            if name != "set-cookie" {
                continue;
            }
            let pair = value.split(';').next().unwrap();
            let (cookie, v) = pair.split_once('=').unwrap();
            if value.contains("Max-Age=0") {
                self.0.remove(cookie);
            } else {
                self.0.insert(cookie.to_string(), v.to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn session_names(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter(|n| n.starts_with(BASE))
            .map(String::as_str)
            .collect()
    }
}

fn cookie_rp(idp: &Idp) -> Rp {
    Rp::with_config(idp, COOKIE_STORE)
}

/// Logs in with these ID token claims (merged over the valid ones); returns the
/// callback's response, whose cookies are in `jar`.
fn login_with(rp: &mut Rp, idp: &Idp, jar: &mut Jar, extra: serde_json::Value) -> LocalResponse {
    login_carrying(rp, idp, jar, extra, &[])
}

/// The same, with `carried` cookies in the jar at the callback.
fn login_carrying(
    rp: &mut Rp,
    idp: &Idp,
    jar: &mut Jar,
    extra: serde_json::Value,
    carried: &[String],
) -> LocalResponse {
    let redirect = response(rp.get("/page", &jar.header()));
    assert_eq!(redirect.status, 302);
    jar.take(&redirect.headers);
    jar.0
        .extend(carried.iter().map(|n| (n.clone(), "stale".to_string())));
    let state = query(header(&redirect, "location").unwrap())["state"].clone();
    let nonce = query(header(&redirect, "location").unwrap())["nonce"].clone();
    let mut flow = RequestFlow::new();
    let target = format!("/oauth2/callback?code=c&state={state}&iss=https%3A%2F%2Fidp.example");
    let step = rp.request(
        &mut flow,
        "GET",
        &target,
        &[("cookie", jar.header().as_bytes())],
    );
    assert!(matches!(step, Step::Callout(_)), "{step:?}");
    let mut claims = valid_claims(&nonce);
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let done = response(rp.callout_response(&mut flow, 200, &token_body(&idp.id_token(claims))));
    assert_eq!(done.status, 302, "{done:?}");
    jar.take(&done.headers);
    done
}

/// One request through the cookie store: handle_request, the deny-list, and
/// whatever else the flow asks for.
fn visit(rp: &mut Rp, jar: &Jar, target: &str) -> Step {
    let mut flow = RequestFlow::new();
    let head = RequestHead {
        method: "GET".to_string(),
        target: target.as_bytes().to_vec(),
        headers: vec![("cookie".to_string(), jar.header().into_bytes())],
        ..RequestHead::default()
    };
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_request(&mut ctx, head);
    if jar.session_names().is_empty() {
        assert!(matches!(step, Step::Respond(_)), "{step:?}");
    } else {
        assert!(
            matches!(&step, Step::LoadDenyList { key, .. } if key == DENY_LIST_KEY)
                || matches!(step, Step::Respond(_)),
            "the cookie store never reads a stored session: {step:?}"
        );
    }
    let step = rp.run(&mut flow, step);
    assert!(
        matches!(step, Step::Forward(_) | Step::Respond(_)),
        "{step:?}"
    );
    step
}

fn forwarded(step: Step) -> Forward {
    match step {
        Step::Forward(forward) => forward,
        other => panic!("expected forward, got {other:?}"),
    }
}

fn expired_names(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, v)| n == "set-cookie" && v.contains("Max-Age=0"))
        .map(|(_, v)| v.split('=').next().unwrap().to_string())
        .collect()
}

#[test]
fn a_login_puts_the_sealed_session_in_a_cookie_and_the_next_request_needs_no_store() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    let done = login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    assert!(rp.store.is_empty(), "nothing is kept server-side");
    let session_cookie = set_cookies(&done)
        .into_iter()
        .find(|c| c.starts_with(&format!("{BASE}=")))
        .unwrap();
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=3600",
    ] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }
    assert_eq!(jar.session_names(), [BASE]);
    assert!(jar.0[BASE].len() > 200, "the session itself, not an id");
    assert!(!jar.0[BASE].contains("at-123"), "sealed, not readable");

    let forward = forwarded(visit(&mut rp, &jar, "/page"));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-123".to_string())));
    assert!(forward
        .set_headers
        .contains(&("x-auth-request-user".to_string(), "alice".to_string())));
    assert!(forward.response_headers.is_empty(), "no re-issue needed");
    assert_eq!(forward.cookie, Some(None), "our cookies stay here");
}

#[test]
fn a_large_session_is_chunked_and_a_smaller_one_expires_the_stale_chunks() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    let big = "b".repeat(9000);
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({ "big": big }));
    let names = jar.session_names();
    assert!(names.len() >= 3, "{names:?}");
    assert!(!names.contains(&BASE));
    assert!(jar.0.values().all(|v| v.len() <= 3800));
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-123".to_string())));

    // A new login with a small ID token, from the browser still holding the chunks.
    let before: Vec<String> = jar.session_names().iter().map(|s| s.to_string()).collect();
    rp.now += 10;
    jar.0
        .insert("__Host-oidc-session-0".into(), "garbage".into());
    let redirect = response(visit(&mut rp, &jar, "/"));
    assert_eq!(redirect.status, 302);
    assert_eq!(
        expired_names(&redirect.headers),
        before,
        "unusable chunks are expired"
    );
    jar.take(&redirect.headers);
    assert!(jar.session_names().is_empty());
    let done = login_carrying(&mut rp, &idp, &mut jar, serde_json::json!({}), &before);
    let expired: Vec<String> = expired_names(&done.headers)
        .into_iter()
        .filter(|n| n.starts_with(BASE))
        .collect();
    assert_eq!(expired, before, "the new single cookie expires the chunks");
    assert_eq!(jar.session_names(), [BASE]);
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));
}

#[test]
fn tampered_missing_or_foreign_chunks_start_a_new_login_and_expire_the_cookies() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut alice = Jar::default();
    let big = "b".repeat(9000);
    login_with(&mut rp, &idp, &mut alice, serde_json::json!({ "big": big }));
    let mut bob = Jar::default();
    login_with(
        &mut rp,
        &idp,
        &mut bob,
        serde_json::json!({ "big": big, "sub": "bob" }),
    );
    assert_eq!(alice.session_names(), bob.session_names());
    let names: Vec<String> = alice
        .session_names()
        .iter()
        .map(|s| s.to_string())
        .collect();

    let mut cases: Vec<(String, Jar)> = Vec::new();
    for name in &names {
        let mut flipped = alice.clone();
        let value = flipped.0.get_mut(name).unwrap();
        let c = value.pop().unwrap();
        value.push(if c == 'A' { 'Q' } else { 'A' });
        cases.push((format!("flipped {name}"), flipped));
        let mut missing = alice.clone();
        missing.0.remove(name);
        cases.push((format!("missing {name}"), missing));
        let mut foreign = alice.clone();
        foreign.0.insert(name.clone(), bob.0[name].clone());
        cases.push((format!("{name} from bob's session"), foreign));
    }
    let mut extra = alice.clone();
    extra
        .0
        .insert(format!("{BASE}-{}", names.len()), "AAAA".into());
    cases.push(("an extra chunk".into(), extra));
    let mut swapped = alice.clone();
    let (a, b) = (alice.0[&names[1]].clone(), alice.0[&names[2]].clone());
    swapped.0.insert(names[1].clone(), b);
    swapped.0.insert(names[2].clone(), a);
    cases.push(("swapped chunks".into(), swapped));

    for (case, jar) in cases {
        let page = response(visit(&mut rp, &jar, "/"));
        assert_eq!(page.status, 302, "{case}");
        assert!(
            header(&page, "location")
                .unwrap()
                .starts_with("https://idp.example/auth"),
            "{case}"
        );
        let mut expired = expired_names(&page.headers);
        expired.sort();
        let mut sent: Vec<String> = jar.session_names().iter().map(|s| s.to_string()).collect();
        sent.sort();
        assert_eq!(
            expired, sent,
            "{case}: every session cookie sent is expired"
        );
    }
    assert!(matches!(visit(&mut rp, &alice, "/"), Step::Forward(_)));
}

#[test]
fn key_rotation_reseals_with_the_new_key_and_dropping_the_old_key_ends_the_session() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    let old_jar = jar.clone();
    let (old, new) = ([7; 32], [8; 32]);

    rp.keys = SealingKeys::from_raw(vec![new, old]).unwrap();
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    assert!(
        !forward.response_headers.is_empty(),
        "re-sealed with the new key"
    );
    jar.take(&forward.response_headers);
    assert_ne!(jar.0[BASE], old_jar.0[BASE]);
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    assert!(forward.response_headers.is_empty(), "sealed once is enough");

    rp.keys = SealingKeys::from_raw(vec![new]).unwrap();
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));
    let page = response(visit(&mut rp, &old_jar, "/"));
    assert_eq!(page.status, 302, "the old key is gone: log in again");
    assert_eq!(expired_names(&page.headers), [BASE]);
}

#[test]
fn the_idle_touch_reissues_the_cookie_and_timeouts_end_the_session() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    let original = jar.clone();
    rp.now += 500;
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    let reissued = forward
        .response_headers
        .iter()
        .find(|(n, v)| n == "set-cookie" && v.starts_with(&format!("{BASE}=")))
        .unwrap();
    assert!(
        reissued.1.contains("Max-Age=3100"),
        "ends with the absolute timeout: {}",
        reissued.1
    );
    jar.take(&forward.response_headers);
    rp.now += 500;
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));
    let page = response(visit(&mut rp, &original, "/"));
    assert_eq!(page.status, 302, "the cookie before the touch is idle");
    assert_eq!(expired_names(&page.headers), [BASE]);

    rp.now = NOW + 3600;
    let page = response(visit(&mut rp, &jar, "/"));
    assert_eq!(page.status, 302, "absolute timeout");
}

/// Writes the deny-list as [`crate::session::deny_list::record`] does: the
/// list, then a new generation.
fn write_deny_list(rp: &mut Rp, encoded: Vec<u8>) {
    rp.store.insert(DENY_LIST_KEY.to_string(), encoded);
    raise_deny_generation(&mut rp.store);
}

#[test]
fn a_session_on_the_deny_list_starts_a_new_login() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    let mut list = DenyList::default();
    let iss = "https://idp.example";
    assert!(list.insert(&IndexEntry::sid(iss, "other-sid"), NOW + 3600, NOW));
    write_deny_list(&mut rp, list.encode());
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));

    assert!(list.insert(&IndexEntry::sid(iss, "sid-1"), NOW + 3600, NOW));
    write_deny_list(&mut rp, list.encode());
    let page = response(visit(&mut rp, &jar, "/"));
    assert_eq!(page.status, 302);
    assert_eq!(expired_names(&page.headers), [BASE]);

    write_deny_list(&mut rp, b"not a list".to_vec());
    assert!(
        matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)),
        "an unreadable list is ignored, not fatal"
    );
}

#[test]
fn logout_expires_every_chunk_and_sends_the_id_token_hint() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    let big = "b".repeat(9000);
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({ "big": big }));
    let mut names: Vec<String> = jar.session_names().iter().map(|s| s.to_string()).collect();
    assert!(names.len() >= 3);
    let page = response(visit(&mut rp, &jar, "/oauth2/logout"));
    assert_eq!(page.status, 302);
    assert!(query(header(&page, "location").unwrap()).contains_key("id_token_hint"));
    let mut expired = expired_names(&page.headers);
    expired.sort();
    names.sort();
    assert_eq!(expired, names);
    jar.take(&page.headers);
    assert!(jar.session_names().is_empty());
}

#[test]
fn logout_denies_a_copy_of_the_cookie_here_and_revokes_its_refresh_token() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    with_revocation(&mut rp);
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    let copy = jar.clone();

    let page = logout_revoking(&mut rp, &jar.header(), "rt-1");
    assert_eq!(page.status, 302);
    assert_eq!(expired_names(&page.headers), [BASE]);
    jar.take(&page.headers);

    let refused = response(visit(&mut rp, &copy, "/"));
    assert_eq!(refused.status, 302, "the copied cookie starts a new login");
    assert_eq!(expired_names(&refused.headers), [BASE]);

    rp.now += 1;
    let mut again = Jar::default();
    login_with(&mut rp, &idp, &mut again, serde_json::json!({}));
    assert!(
        matches!(visit(&mut rp, &again, "/"), Step::Forward(_)),
        "only that session is denied: the same user's next login works"
    );
}

#[test]
fn a_refresh_reissues_the_cookie_with_the_new_tokens() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(
        &idp,
        r#", "session": {"store": "cookie", "idle_timeout_seconds": 3600, "absolute_timeout_seconds": 28800},
        "cookie": {"keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"]}"#,
    );
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    let before = jar.clone();
    rp.now += 3550; // the access token lives an hour; the margin is 60 s

    let mut flow = RequestFlow::new();
    let step = rp.request(
        &mut flow,
        "GET",
        "/",
        &[("cookie", jar.header().as_bytes())],
    );
    let Step::Callout(callout) = step else {
        panic!("expected a refresh callout, got {step:?}")
    };
    assert!(String::from_utf8_lossy(&callout.body).contains("refresh_token=rt-1"));
    let concurrent = forwarded(visit(&mut rp, &jar, "/"));
    assert!(
        concurrent
            .set_headers
            .contains(&("authorization".to_string(), "Bearer at-123".to_string())),
        "a request during the refresh goes on with the valid token, without a second refresh"
    );

    let body = serde_json::json!({
        "access_token": "at-456", "token_type": "Bearer", "expires_in": 300,
        "id_token": idp.id_token(refreshed_claims("alice", rp.now)), "refresh_token": "rt-2"
    })
    .to_string();
    let forward = forwarded(rp.callout_response(&mut flow, 200, &body));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));
    assert!(
        rp.store.keys().all(|k| k.starts_with("lease/")),
        "no session stored"
    );
    jar.take(&forward.response_headers);
    assert_ne!(
        jar.0[BASE], before.0[BASE],
        "the new tokens are in the cookie"
    );

    rp.now += 5;
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));
}

#[test]
fn a_back_channel_logout_denies_the_cookie_session_on_this_replica() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(
        &idp,
        &format!(r#"{COOKIE_STORE}, "backchannel_logout_path": "/bcl""#),
    );
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));

    let answer = post_logout_token(&mut rp, &logout_token(&idp, |_| {}));
    assert_eq!(answer.status, 200);
    let page = response(visit(&mut rp, &jar, "/"));
    assert_eq!(page.status, 302, "the revoked cookie starts a new login");
    assert_eq!(expired_names(&page.headers), [BASE]);

    rp.now += 1;
    let mut fresh = Jar::default();
    login_with(&mut rp, &idp, &mut fresh, serde_json::json!({}));
    assert!(
        matches!(visit(&mut rp, &fresh, "/"), Step::Forward(_)),
        "a login after the logout is not affected"
    );
}

#[test]
fn a_request_waiting_on_the_refresh_gets_the_new_session_in_its_cookie() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(
        &idp,
        r#", "session": {"store": "cookie", "idle_timeout_seconds": 7200, "absolute_timeout_seconds": 28800},
        "cookie": {"keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"]}"#,
    );
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    rp.now += 3601; // the access token (an hour) has expired; the session lives on
    let request = |rp: &mut Rp, flow: &mut RequestFlow| {
        rp.request(flow, "GET", "/", &[("cookie", jar.header().as_bytes())])
    };
    let mut leader = RequestFlow::new();
    assert!(matches!(request(&mut rp, &mut leader), Step::Callout(_)));
    let mut follower = RequestFlow::new();
    let parked = request(&mut rp, &mut follower);
    assert!(matches!(parked, Step::AwaitRefresh { .. }), "{parked:?}");

    let body = serde_json::json!({
        "access_token": "at-456", "token_type": "Bearer", "expires_in": 300,
        "id_token": idp.id_token(refreshed_claims("alice", rp.now)), "refresh_token": "rt-2"
    })
    .to_string();
    forwarded(rp.callout_response(&mut leader, 200, &body));

    // The follower goes on with the new tokens and carries them home in its
    // cookie: the browser may keep its response's cookie rather than the leader's.
    let forward = forwarded(rp.wake(&mut follower, &parked));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));
    let mut followers_jar = jar.clone();
    followers_jar.take(&forward.response_headers);
    assert_ne!(
        followers_jar.0[BASE], jar.0[BASE],
        "the cookie is re-issued"
    );
    rp.now += 5;
    let forward = forwarded(visit(&mut rp, &followers_jar, "/"));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));

    // A request still carrying the old cookie, while the claim holds, gets the
    // new session too instead of a second refresh with the spent refresh token.
    let mut late = RequestFlow::new();
    let step = request(&mut rp, &mut late);
    let forward = forwarded(step);
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));
    // And after the claim (12 s) lapsed, while the outcome is kept.
    rp.now += 12;
    let mut later = RequestFlow::new();
    let forward = forwarded(request(&mut rp, &mut later));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));
}

#[test]
fn a_failed_refresh_of_a_cookie_session_is_retried_by_the_next_request() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(
        &idp,
        r#", "session": {"store": "cookie", "idle_timeout_seconds": 7200, "absolute_timeout_seconds": 28800},
        "cookie": {"keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"]}"#,
    );
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    rp.now += 3601;
    let cookie = jar.header();
    let mut leader = RequestFlow::new();
    let step = rp.request(&mut leader, "GET", "/", &[("cookie", cookie.as_bytes())]);
    assert!(matches!(step, Step::Callout(_)), "{step:?}");
    let page = response(rp.callout_response(&mut leader, 503, "unavailable"));
    assert_eq!(page.status, 502);
    assert!(
        set_cookies(&page).is_empty(),
        "the cookie stays: the session is kept"
    );

    let mut retry = RequestFlow::new();
    let step = rp.request(&mut retry, "GET", "/", &[("cookie", cookie.as_bytes())]);
    assert!(
        matches!(step, Step::Callout(_)),
        "the claim was released: {step:?}"
    );
}

// ---- the per-VM cache of opened cookie sessions -------------------------------------

/// Whether this request found its cookie session in the VM's cache: the flow
/// then asks for the deny-list only if its generation changed.
fn served_from_cache(rp: &mut Rp, jar: &Jar) -> bool {
    let mut flow = RequestFlow::new();
    let head = RequestHead {
        method: "GET".to_string(),
        target: b"/".to_vec(),
        headers: vec![("cookie".to_string(), jar.header().into_bytes())],
        ..RequestHead::default()
    };
    let (mut ctx, _, _) = rp.ctx();
    matches!(
        flow.handle_request(&mut ctx, head),
        Step::LoadDenyList {
            unless_at: Some(_),
            ..
        }
    )
}

#[test]
fn an_opened_cookie_session_is_cached_and_checked_again_on_every_hit() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    assert!(!served_from_cache(&mut rp, &jar));
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));
    assert_eq!(rp.caches.cookie_sessions.len(), 1);
    assert!(served_from_cache(&mut rp, &jar));
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-123".to_string())));

    // A cookie differing in one character is opened (and refused), not served.
    let mut tampered = jar.clone();
    let value = tampered.0.get_mut(BASE).unwrap();
    let last = value.pop().unwrap();
    value.push(if last == 'A' { 'B' } else { 'A' });
    assert!(!served_from_cache(&mut rp, &tampered));
    assert_eq!(response(visit(&mut rp, &tampered, "/")).status, 302);

    // Revoked meanwhile (the list changed, its generation with it): refused.
    let mut list = DenyList::default();
    assert!(list.insert(&IndexEntry::sid(ISSUER, "sid-1"), NOW + 3600, NOW));
    write_deny_list(&mut rp, list.encode());
    assert_eq!(response(visit(&mut rp, &jar, "/")).status, 302);
    assert!(
        !served_from_cache(&mut rp, &jar),
        "a revoked session is dropped"
    );
}

#[test]
fn a_cached_cookie_session_still_times_out() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));
    rp.now += 600; // the idle timeout, no request in between
    assert!(served_from_cache(&mut rp, &jar));
    let page = response(visit(&mut rp, &jar, "/"));
    assert_eq!(page.status, 302, "idle");
    assert_eq!(expired_names(&page.headers), [BASE]);

    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    for _ in 0..12 {
        rp.now += 300;
        match visit(&mut rp, &jar, "/") {
            Step::Forward(forward) => jar.take(&forward.response_headers),
            Step::Respond(page) => {
                assert_eq!(page.response.status, 302);
                assert!(
                    rp.now >= NOW + 600 + 3600,
                    "ended before the absolute timeout"
                );
                return;
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("the session outlived its absolute timeout");
}

#[test]
fn a_logged_out_cookie_is_not_served_from_the_cache() {
    let idp = Idp::new(1, "k1");
    let mut rp = cookie_rp(&idp);
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    let copy = jar.clone();
    assert!(matches!(visit(&mut rp, &copy, "/"), Step::Forward(_)));
    assert!(served_from_cache(&mut rp, &copy));

    let page = response(visit(&mut rp, &jar, "/oauth2/logout"));
    assert_eq!(page.status, 302);
    let refused = response(visit(&mut rp, &copy, "/"));
    assert_eq!(refused.status, 302, "the copied cookie starts a new login");
    assert_eq!(expired_names(&refused.headers), [BASE]);
}

#[test]
fn a_refreshed_cookie_session_is_served_with_its_new_tokens() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(
        &idp,
        r#", "session": {"store": "cookie", "idle_timeout_seconds": 3600, "absolute_timeout_seconds": 28800},
        "cookie": {"keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"]}"#,
    );
    let mut jar = Jar::default();
    login_with(&mut rp, &idp, &mut jar, serde_json::json!({}));
    assert!(matches!(visit(&mut rp, &jar, "/"), Step::Forward(_)));
    assert!(served_from_cache(&mut rp, &jar));
    rp.now += 3550; // the access token lives an hour; the margin is 60 s
    let mut flow = RequestFlow::new();
    let step = rp.request(
        &mut flow,
        "GET",
        "/",
        &[("cookie", jar.header().as_bytes())],
    );
    assert!(matches!(step, Step::Callout(_)), "{step:?}");
    let body = serde_json::json!({
        "access_token": "at-456", "token_type": "Bearer", "expires_in": 300,
        "id_token": idp.id_token(refreshed_claims("alice", rp.now)), "refresh_token": "rt-2"
    })
    .to_string();
    let forward = forwarded(rp.callout_response(&mut flow, 200, &body));
    jar.take(&forward.response_headers);
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));
    assert!(served_from_cache(&mut rp, &jar));
    let forward = forwarded(visit(&mut rp, &jar, "/"));
    assert!(forward
        .set_headers
        .contains(&("authorization".to_string(), "Bearer at-456".to_string())));
}
