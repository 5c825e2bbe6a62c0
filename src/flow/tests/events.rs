//! The events the flow records where it decides: each refusal under its own reason.

use super::*;

impl Rp {
    /// The metric names of the events recorded since the last call, in order.
    fn metrics(&mut self) -> Vec<String> {
        self.events
            .take()
            .iter()
            .map(|r| r.event.metric().full_name())
            .collect()
    }
}

fn login_failed(reason: &str) -> Vec<String> {
    vec![format!("oidc_filter.login_failed.reason.{reason}")]
}

#[test]
fn a_login_records_its_start_and_success() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (_, session) = complete_login(&mut rp, &idp, "/");
    assert_eq!(
        rp.metrics(),
        ["oidc_filter.login_started", "oidc_filter.login_succeeded"]
    );
    assert!(matches!(rp.get("/", &session), Step::Forward(_)));
    assert!(
        rp.metrics().is_empty(),
        "a request on a session records nothing"
    );

    let page = response(rp.get("/oauth2/logout", &session));
    assert_eq!(page.status, 302);
    assert_eq!(rp.metrics(), ["oidc_filter.logout"]);
}

#[test]
fn each_refused_callback_names_its_reason() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let login = start(&mut rp, "/");
    rp.metrics();
    let with_state = |query: &str| format!("/oauth2/callback?{query}&state={}", login.state);
    let iss = "iss=https%3A%2F%2Fidp.example";

    let cases = [
        ("/oauth2/callback?code=c".to_string(), "", "state_missing"),
        (
            with_state(&format!("code=c&{iss}")),
            "",
            "login_cookie_missing",
        ),
        (
            with_state(&format!("code=c&code=d&{iss}")),
            login.login_cookie.as_str(),
            "duplicate_parameter",
        ),
        (
            with_state("code=c&iss=https%3A%2F%2Fevil.example"),
            login.login_cookie.as_str(),
            "issuer_mismatch",
        ),
        (
            with_state("code=c"),
            login.login_cookie.as_str(),
            "issuer_missing",
        ),
        (with_state(iss), login.login_cookie.as_str(), "code_missing"),
        (
            with_state(&format!("error=access_denied&{iss}")),
            login.login_cookie.as_str(),
            "provider_error",
        ),
    ];
    for (target, cookie, reason) in cases {
        let status = response(rp.get(&target, cookie)).status;
        assert!(status == 400 || status == 401, "{target}: {status}");
        assert_eq!(rp.metrics(), login_failed(reason), "{target}");
    }

    // The right cookie name with a value that does not open.
    let name = login.login_cookie.split('=').next().unwrap();
    let forged = format!("{name}=bm90LXNlYWxlZA");
    assert_eq!(
        response(rp.get(&with_state(&format!("code=c&{iss}")), &forged)).status,
        400
    );
    assert_eq!(rp.metrics(), login_failed("state_mismatch"));

    let (_, first) = callback(&mut rp, &login, "c");
    assert!(matches!(first, Step::Callout(_)));
    assert!(rp.metrics().is_empty(), "nothing decided yet");
    let (_, replay) = callback(&mut rp, &login, "c");
    assert_eq!(response(replay).status, 400);
    assert_eq!(rp.metrics(), login_failed("state_replayed"));

    let late = start(&mut rp, "/");
    rp.metrics();
    rp.now += 601;
    let (_, step) = callback(&mut rp, &late, "c");
    assert_eq!(response(step).status, 400);
    assert_eq!(rp.metrics(), login_failed("state_expired"));
}

#[test]
fn token_endpoint_and_id_token_failures_name_their_reason() {
    let idp = Idp::new(1, "k1");
    let other = Idp::new(2, "k1");
    let answers: Vec<(u16, String, &str)> = vec![
        (
            400,
            r#"{"error":"invalid_grant"}"#.to_string(),
            "token_endpoint_refused",
        ),
        (
            504,
            "upstream request timeout".to_string(),
            "token_endpoint_timeout",
        ),
        (
            503,
            "no healthy upstream".to_string(),
            "token_endpoint_server_error",
        ),
        (200, "<html>".to_string(), "token_response_invalid"),
        (
            200,
            r#"{"access_token":"a","token_type":"Bearer"}"#.to_string(),
            "id_token_missing",
        ),
    ];
    for (status, body, reason) in answers {
        let mut rp = Rp::new(&idp);
        let login = start(&mut rp, "/");
        let (mut flow, _) = callback(&mut rp, &login, "c");
        rp.metrics();
        assert_eq!(
            response(rp.callout_response(&mut flow, status, &body)).status,
            502
        );
        assert_eq!(rp.metrics(), login_failed(reason), "{status} {body}");
    }

    let mut rp = Rp::new(&idp);
    let login = start(&mut rp, "/");
    let (mut flow, _) = callback(&mut rp, &login, "c");
    rp.metrics();
    let (mut ctx, _, _) = rp.ctx();
    let step = flow.handle_callout_response(&mut ctx, CalloutOutcome::Failed("reset".into()));
    assert_eq!(response(step).status, 502);
    assert_eq!(rp.metrics(), login_failed("token_endpoint_unreachable"));

    let id_tokens: Vec<(String, &str)> = vec![
        (
            idp.id_token(valid_claims("not-the-nonce")),
            "id_token_nonce_mismatch",
        ),
        (
            other.id_token(valid_claims("ignored")),
            "id_token_bad_signature",
        ),
    ];
    for (id_token, reason) in id_tokens {
        let mut rp = Rp::new(&idp);
        let login = start(&mut rp, "/");
        let (mut flow, _) = callback(&mut rp, &login, "c");
        rp.metrics();
        let page = rp.callout_response(&mut flow, 200, &token_body(&id_token));
        assert_eq!(response(page).status, 502);
        assert_eq!(rp.metrics(), login_failed(reason));
    }
}

#[test]
fn only_the_callback_query_is_kept_out_of_the_access_log() {
    let idp = Idp::new(1, "k1");
    let rp = Rp::new(&idp);
    let cases: [(&[u8], Option<&[u8]>); 5] = [
        (
            b"/oauth2/callback?code=secret&state=s",
            Some(b"/oauth2/callback"),
        ),
        (b"/oauth2/callback?", Some(b"/oauth2/callback")),
        (b"/oauth2/callback", None),
        (b"/page?code=not-ours", None),
        (b"/oauth2/callbackx?code=c", None),
    ];
    for (target, expected) in cases {
        assert_eq!(
            target_for_access_log(&rp.config, target).as_deref(),
            expected,
            "{}",
            String::from_utf8_lossy(target)
        );
    }
}
