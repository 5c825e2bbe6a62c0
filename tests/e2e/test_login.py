"""The login flow through the gateway: redirect to the IdP, callback, session, identity
passed to the upstream."""

import base64
import json
import re

import pytest

from harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    absolute,
    cookie_names,
    idp_login,
    logged_in,
    start_login,
)

B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
LOGIN_COOKIE = re.compile(r"^__Host-oidc-login-[A-Za-z0-9_-]{8}$")
SESSION_COOKIE = "__Host-oidc-session"


def introspect(browser, idp, token):
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    r = browser.post(f"{idp.issuer}/token/introspection", {"token": token}, use_jar=False, accept_html=False,
                     headers={"Authorization": f"Basic {basic}"})
    assert r.status == 200, r
    return r.json()


def test_no_session_redirects_to_idp(gw, browser):
    b = browser()
    r, q = start_login(b, gw, "/")
    assert q["response_type"] == "code"
    assert q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == gw.url("/oauth2/callback")
    assert "openid" in q["scope"].split()
    assert {"email", "profile", "groups"} <= set(q["scope"].split())
    assert B64URL.match(q["state"]) and len(q["state"]) >= 22, q["state"]
    assert B64URL.match(q["nonce"]) and len(q["nonce"]) >= 22, q["nonce"]
    assert B64URL.match(q["code_challenge"]) and len(q["code_challenge"]) == 43, q["code_challenge"]
    assert q["code_challenge_method"] == "S256"

    logins = [c for c in r.set_cookies() if c.name.startswith("__Host-oidc-login-")]
    assert len(logins) == 1, r.header_all("set-cookie")
    c = logins[0]
    assert LOGIN_COOKIE.match(c.name), c.raw
    assert c.value, c.raw
    assert c.attrs.get("path") == "/", c.raw
    assert c.max_age is not None and c.max_age > 0, c.raw
    assert c.has("secure") and c.has("httponly"), c.raw
    assert c.attrs.get("samesite", "").lower() == "lax", c.raw
    assert not c.has("domain"), "__Host- cookies must not have a Domain"
    # The redirect is not cacheable and creates no session.
    assert "no-store" in (r.header("cache-control") or ""), r
    assert SESSION_COOKIE not in [x.name for x in r.set_cookies()]


def test_each_login_gets_fresh_state_nonce_and_verifier(gw, browser):
    b = browser()
    _, q1 = start_login(b, gw, "/")
    _, q2 = start_login(b, gw, "/")
    assert q1["state"] != q2["state"]
    assert q1["nonce"] != q2["nonce"]
    assert q1["code_challenge"] != q2["code_challenge"]


def test_full_login_returns_to_original_url_and_passes_identity(gw, idp, browser):
    b = browser()
    first, _ = start_login(b, gw, "/some/page?x=1")
    login_cookie = next(c for c in first.set_cookies() if c.name.startswith("__Host-oidc-login-"))
    back = idp_login(b, first.location, "alice")
    cb = b.get(absolute(back.url, back.location))

    assert cb.status == 302, cb
    assert cb.location in ("/some/page?x=1", gw.url("/some/page?x=1")), cb.location
    session = cb.set_cookie(SESSION_COOKIE)
    assert session is not None, cb.header_all("set-cookie")
    assert session.value
    assert session.attrs.get("path") == "/", session.raw
    assert session.has("secure") and session.has("httponly"), session.raw
    assert session.attrs.get("samesite", "").lower() == "lax", session.raw
    assert not session.has("domain"), session.raw
    cleared = cb.set_cookie(login_cookie.name)
    assert cleared is not None and cleared.expired, f"login cookie not cleared: {cb.header_all('set-cookie')}"

    b.set_cookie("other", "kept")
    r = b.get(gw.url("/some/page?x=1"))
    assert r.status == 200, r
    seen = r.json()
    assert seen["path"] == "/some/page?x=1"
    h = seen["headers"]
    assert h["x-auth-request-user"] == "alice"
    assert h["x-auth-request-email"] == "alice@example.test"
    assert h["authorization"].startswith("Bearer ")
    token = h["authorization"][len("Bearer "):]
    info = introspect(b, idp, token)
    assert info["active"] is True and info["sub"] == "alice" and info["client_id"] == CLIENT_ID

    names = cookie_names(h.get("cookie"))
    assert "other" in names, h.get("cookie")
    leaked = [n for n in names if n.startswith("__Host-oidc") or n.startswith("oidc")]
    assert not leaked, f"filter cookies reached the upstream: {leaked}"


def test_session_is_reused_without_the_idp(gw, idp, browser):
    b = browser()
    logged_in(b, gw, "/")
    before = idp.stats()
    for path in ("/", "/other", "/third?y=2"):
        r = b.get(gw.url(path))
        assert r.status == 200, r
        assert r.json()["headers"]["x-auth-request-user"] == "alice"
    after = idp.stats()
    assert after["token_requests"] == before["token_requests"], "a session request called the token endpoint"
    assert after["requests"].get("GET /auth", 0) == before["requests"].get("GET /auth", 0)


def test_two_users_get_their_own_identity(gw, browser):
    alice, bob = browser("alice"), browser("bob")
    logged_in(alice, gw, "/")
    logged_in(bob, gw, "/", user="bob")
    a = alice.get(gw.url("/")).json()["headers"]
    bo = bob.get(gw.url("/")).json()["headers"]
    assert (a["x-auth-request-user"], bo["x-auth-request-user"]) == ("alice", "bob")
    assert bo["x-auth-request-email"] == "bob@example.test"
    assert a["authorization"] != bo["authorization"]


def test_parallel_logins_in_one_browser_both_complete(gw, browser):
    b = browser()
    first, _ = start_login(b, gw, "/tab-one")
    second, _ = start_login(b, gw, "/tab-two")
    names = {c.name for c in first.set_cookies() + second.set_cookies() if c.name.startswith("__Host-oidc-login-")}
    assert len(names) == 2, "each login needs its own login cookie"
    assert len([c for c in b.cookies() if c.name.startswith("__Host-oidc-login-")]) == 2

    # The second tab finishes first, then the first (the IdP session now exists).
    back2 = idp_login(b, second.location)
    back1 = idp_login(b, first.location)
    cb2 = b.get(absolute(back2.url, back2.location))
    assert cb2.status == 302 and cb2.location in ("/tab-two", gw.url("/tab-two")), cb2
    cb1 = b.get(absolute(back1.url, back1.location))
    assert cb1.status == 302 and cb1.location in ("/tab-one", gw.url("/tab-one")), cb1
    r = b.get(gw.url("/tab-one"))
    assert r.status == 200 and r.json()["headers"]["x-auth-request-user"] == "alice", r


def test_request_without_session_never_reaches_upstream(gw, browser):
    """Without a session a request never reaches the upstream, whatever it accepts."""
    r = browser().get(gw.url("/api/data"), headers={"Accept": "application/json"})
    assert r.status in (302, 401), r
    assert b'"x-auth-request-user"' not in r.body


def test_login_cookie_lifetime_is_bounded(gw, browser):
    r, _ = start_login(browser(), gw, "/")
    c = r.set_cookie("__Host-oidc-login-")
    assert 30 <= c.max_age <= 3600, c.raw  # login_timeout_seconds: default 600, at most 3600


def test_concurrent_requests_share_one_session(gw, browser):
    """Requests over many connections (both workers) and in parallel all see the session."""
    from concurrent.futures import ThreadPoolExecutor

    b = browser()
    logged_in(b, gw, "/")
    jar = b.jar.read_text()

    def one(i):
        other = browser(f"tab{i}")
        other.jar.write_text(jar)
        return other.get(gw.url(f"/parallel/{i}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(16)))
    assert [r.status for r in results] == [200] * 16, [r for r in results if r.status != 200][:1]
    assert {r.json()["headers"]["x-auth-request-user"] for r in results} == {"alice"}
    assert len({r.json()["headers"]["authorization"] for r in results}) == 1


def test_upstream_authorization_id_token(gateway, browser):
    gw = gateway(upstream={"authorization": "id_token"})
    b = browser()
    logged_in(b, gw, "/")
    h = b.get(gw.url("/")).json()["headers"]
    token = h["authorization"][len("Bearer "):]
    head, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in token.split(".")[:2])
    assert head["kid"] == "test-rs256"
    assert payload["sub"] == "alice" and payload["aud"] == CLIENT_ID and payload["iss"] == gw.idp.issuer
    assert h["x-auth-request-user"] == "alice"


def test_upstream_authorization_none_sends_no_token(gateway, browser):
    gw = gateway(upstream={"authorization": "none"})
    b = browser()
    logged_in(b, gw, "/")
    h = b.get(gw.url("/")).json()["headers"]
    assert "authorization" not in h, h
    assert h["x-auth-request-user"] == "alice"


def test_session_cookie_is_a_fresh_opaque_id(gw, browser):
    """store=shared_data: the cookie carries an identifier, not tokens; every login makes a new
    one, and a session id planted before the login (fixation) is not adopted."""
    b = browser()
    b.set_cookie(SESSION_COOKIE, "planted-by-attacker-0123456789abcdef", secure=True)
    logged_in(b, gw, "/")
    first = b.cookie(SESSION_COOKIE).value
    assert first != "planted-by-attacker-0123456789abcdef"
    assert len(first) < 200 and "eyJ" not in first, first
    b.remove_cookie(SESSION_COOKIE)
    logged_in(b, gw, "/")
    assert b.cookie(SESSION_COOKIE).value not in (first, "")


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_session_cookie_found_among_several_cookie_headers(http2, gw, browser):
    b = browser()
    logged_in(b, gw, "/")
    session = b.cookie(SESSION_COOKIE).value
    r = b.get(gw.url("/multi"), use_jar=False, http2=http2,
              headers=[("Cookie", "a=1; b=2"), ("Cookie", f"{SESSION_COOKIE}={session}"), ("Cookie", "c=3")])
    assert r.status == 200, r
    h = r.json()["headers"]
    assert h["x-auth-request-user"] == "alice"
    names = cookie_names(h.get("cookie"))
    assert {"a", "b", "c"} <= set(names), h.get("cookie")
    assert SESSION_COOKIE not in names


def test_post_bodies_reach_the_upstream_intact(gw, browser):
    b = browser()
    logged_in(b, gw, "/")
    small = b.post(gw.url("/form"), "a=1&b=2", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert small.status == 200, small
    seen = small.json()
    assert (seen["method"], seen["body"]) == ("POST", "a=1&b=2")
    assert seen["headers"]["x-auth-request-user"] == "alice"
    big_body = "x" * 200_000
    big = b.post(gw.url("/upload"), big_body, headers={"Content-Type": "text/plain"})
    assert big.status == 200, big
    assert big.json()["body"] == big_body


def test_post_without_session_does_not_reach_the_upstream(gw, browser):
    r = browser().post(gw.url("/form"), "secret=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status in (302, 401), r
    assert b"secret=1" not in r.body
