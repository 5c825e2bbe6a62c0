//! Request hardening through the whole flow: spoofed identity headers, long
//! return targets, `SameSite=Strict` sessions.

use super::*;

fn forwarded(step: Step) -> Forward {
    match step {
        Step::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

#[test]
fn every_spelling_of_an_identity_header_is_removed_on_every_path() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(
        &idp,
        r#", "public_paths": ["/health"], "upstream": {"claim_headers": {"x-auth-request-user": "sub", "x-auth-request-groups": "groups"}, "claims_header": "x-auth-request-claims"}"#,
    );
    let spoofed: &[(&str, &[u8])] = &[
        ("x_auth_request_user", b"admin"),
        ("x-auth_request-groups", b"admins"),
        ("x_auth_request_claims", b"e30"),
        ("x-auth-request-user", b"admin"),
        ("x-auth-request-userid", b"kept"),
    ];
    let must_go = [
        "x_auth_request_user",
        "x-auth_request-groups",
        "x_auth_request_claims",
        "x-auth-request-user",
        "x-auth-request-groups",
        "x-auth-request-claims",
        "authorization",
    ];
    // A public path: nobody is logged in, and nothing spoofed gets through.
    let mut flow = RequestFlow::new();
    let public = forwarded(rp.request(&mut flow, "GET", "/health", spoofed));
    for name in must_go {
        assert!(public.remove_headers.iter().any(|h| h == name), "{name}");
    }
    assert!(!public
        .remove_headers
        .iter()
        .any(|h| h == "x-auth-request-userid"));

    // A session whose claims have no groups: the client's copy must not stand in.
    let (_, session) = complete_login(&mut rp, &idp, "/");
    let mut headers = spoofed.to_vec();
    headers.push(("cookie", session.as_bytes()));
    let mut flow = RequestFlow::new();
    let with_session = forwarded(rp.request(&mut flow, "GET", "/page", &headers));
    for name in must_go {
        assert!(
            with_session.remove_headers.iter().any(|h| h == name),
            "{name}"
        );
    }
    assert!(with_session
        .set_headers
        .iter()
        .all(|(name, _)| name != "x-auth-request-groups"));
}

#[test]
fn a_login_started_at_a_long_url_still_fits_its_cookie() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let path = format!("/{}", "p".repeat(500));
    let target = format!("{path}?q={}", "x".repeat(6000));
    let redirect = response(rp.get(&target, ""));
    let login_cookie = set_cookies(&redirect)
        .into_iter()
        .find(|c| c.starts_with("__Host-oidc-login-"))
        .unwrap();
    assert!(login_cookie.len() < 3000, "{} bytes", login_cookie.len());

    let (done, _) = complete_login(&mut rp, &idp, &target);
    assert_eq!(done.status, 302);
    assert_eq!(header(&done, "location"), Some(path.as_str()));
}

#[test]
fn strict_session_cookies_keep_login_cookies_lax_and_leave_the_callback_same_site() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::with_config(&idp, r#", "cookie": {"same_site": "Strict"}"#);
    let redirect = response(rp.get("/page?x=1", ""));
    let login_cookie = set_cookies(&redirect)
        .into_iter()
        .find(|c| c.starts_with("__Host-oidc-login-"))
        .unwrap();
    assert!(login_cookie.ends_with("; SameSite=Lax"), "{login_cookie}");

    let (done, session) = complete_login(&mut rp, &idp, "/page?x=1");
    // No redirect: a browser would carry on the provider's cross-site navigation
    // without the Strict session cookie.
    assert_eq!(done.status, 200);
    assert_eq!(header(&done, "location"), None);
    let body = String::from_utf8(done.body.clone()).unwrap();
    assert!(body.contains(r#"<meta http-equiv="refresh" content="0;url=/page?x=1">"#));
    let cookies = set_cookies(&done);
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("__Host-oidc-session=") && c.ends_with("; SameSite=Strict")));
    assert!(cookies
        .iter()
        .filter(|c| c.starts_with("__Host-oidc-login-"))
        .all(|c| c.ends_with("; SameSite=Lax")));
    assert!(matches!(rp.get("/page?x=1", &session), Step::Forward(_)));
}

#[test]
fn lax_session_cookies_still_get_a_redirect() {
    let idp = Idp::new(1, "k1");
    let mut rp = Rp::new(&idp);
    let (done, _) = complete_login(&mut rp, &idp, "/page");
    assert_eq!(done.status, 302);
    assert!(set_cookies(&done)
        .iter()
        .all(|c| c.ends_with("; SameSite=Lax")));
}
