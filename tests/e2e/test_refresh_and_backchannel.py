"""The session lifecycle against the real Envoy and oidc-provider: refresh (single flight
across workers, rotation, revocation), idle and absolute timeouts, the sweep and the ceiling,
back-channel logout and the metrics.

Times: the filter counts whole seconds from a session's creation. Every wait here is computed
from the moment a login (or a refresh) finished, which bounds that creation from above, and is
no longer than the behaviour needs; nothing sleeps a fixed time and then hopes.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import time
import uuid

import pytest

from harness import CLIENT_ID, CLIENT_SECRET, REPO, absolute, idp_login, logged_in, wait_until

SESSION_COOKIE = "__Host-oidc-session"
BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
SIGN_JWT = REPO / "tests" / "idp" / "sign-jwt.mjs"

# Access tokens live 12 s at the IdP; with a 6 s margin (at most half the token's life) the
# filter refreshes from 6 s on, while the old token stays valid for 6 s more.
SHORT_AT = {"TTL_ACCESS_TOKEN": "12"}
REFRESH_SOON = {"refresh_margin_seconds": 6}
DUE_AFTER = 6


# ----------------------------------------------------------------------------------------
# helpers


def access_token(r) -> str:
    """The bearer token the echo upstream received."""
    assert r.status == 200, r
    auth = r.json()["headers"].get("authorization", "")
    assert auth.startswith("Bearer "), r
    return auth[len("Bearer "):]


def upstream_user(r) -> str:
    assert r.status == 200, r
    return r.json()["headers"]["x-auth-request-user"]


def login_at(b, gw, user="alice") -> float:
    """Logs in; returns the time the session existed by (monotonic clock). The filter counts
    whole seconds from the session's creation, which happened before this time: a request
    sent N seconds after it is at least N of the filter's seconds later."""
    logged_in(b, gw, "/", user)
    return time.monotonic()


def sleep_until(t: float):
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def is_login_redirect(r, idp) -> bool:
    return r.status == 302 and (r.location or "").startswith(f"{idp.issuer}/auth?")


def metric(gw, name: str) -> int:
    full = f"wasmcustom.oidc_filter.{name}"
    return gw.stats(full).get(full, 0)


def wait_metric(gw, name: str, at_least: int, timeout: float = 8.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        value = metric(gw, name)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def sign_jwts(specs: list[dict]) -> list[str]:
    """Signs with tests/idp/sign-jwt.mjs (jose): key "idp" (the IdP's own key) or "other"."""
    proc = subprocess.run(["node", str(SIGN_JWT)], input=json.dumps(specs).encode(), capture_output=True,
                          timeout=20, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(header: dict, claims: dict) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def post_logout_token(b, gw, body: str):
    return b.post(gw.url(BACKCHANNEL_PATH), body, use_jar=False, accept_html=False,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})


def assert_refused(r, what: str):
    assert r.status == 400, f"{what}: {r!r}"
    assert r.json()["error"] == "invalid_request", f"{what}: {r!r}"
    assert r.header("cache-control") == "no-store", f"{what}: {r!r}"


def end_idp_session(b, idp):
    """RP-initiated logout at the IdP itself (its /session/end and confirm form), in the
    browser that holds the IdP session; the gateway is not involved."""
    page = b.get(f"{idp.issuer}/session/end?client_id={CLIENT_ID}")
    assert page.status == 200, page
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text).group(1)
    done = b.post(f"{idp.issuer}/session/end/confirm", {"xsrf": xsrf, "logout": "yes"})
    assert done.status == 303, done
    return done


# ----------------------------------------------------------------------------------------
# refresh


@pytest.mark.parametrize("rotate", [False, True], ids=["same-refresh-token", "rotating-refresh-token"])
def test_session_outlives_its_access_tokens_through_refresh(rotate, idp_factory, gateway, browser):
    provider = idp_factory(env={**SHORT_AT, **({"ROTATE_REFRESH_TOKEN": "1"} if rotate else {})})
    gw = gateway(_idp=provider, session=REFRESH_SOON)
    b = browser()
    t0 = login_at(b, gw)
    first = access_token(b.get(gw.url("/")))
    assert provider.token_requests("refresh_token") == 0

    # Twice, so that with rotation the second refresh proves the new refresh token was kept.
    tokens = [first]
    for n in (1, 2):
        sleep_until(t0 + DUE_AFTER)
        r = b.get(gw.url("/"))
        token = access_token(r)
        assert token not in tokens, f"refresh {n}: the upstream got an old access token"
        assert upstream_user(r) == "alice"
        tokens.append(token)
        t0 = time.monotonic()  # the refresh happened during that request
        stats = provider.stats()
        assert stats["token_requests"].get("refresh_token") == n, stats
        assert not stats["token_errors"], stats
        # Until the next refresh is due, the new token is used as is.
        assert access_token(b.get(gw.url("/"))) == token
        assert provider.token_requests("refresh_token") == n


def test_concurrent_requests_on_two_workers_cause_one_refresh(idp_factory, gateway, browser):
    provider = idp_factory(env=SHORT_AT)
    gw = gateway(_idp=provider, session=REFRESH_SOON)  # the harness runs Envoy with --concurrency 2
    b = browser()
    t0 = login_at(b, gw)
    first = access_token(b.get(gw.url("/")))
    cookie = f"{SESSION_COOKIE}={b.cookie(SESSION_COOKIE).value}"

    sleep_until(t0 + DUE_AFTER)
    results: list = [None] * 20
    start = threading.Barrier(len(results))

    def one(i):
        client = browser(f"burst{i}")
        start.wait()
        results[i] = client.get(gw.url(f"/burst/{i}"), use_jar=False, headers={"Cookie": cookie})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None for r in results), "a request of the burst did not finish"

    # The margin leaves the old token valid, so nobody waits: every request reaches the
    # upstream, with the old token or the new one, and the IdP saw exactly one refresh.
    tokens = {access_token(r) for r in results}
    assert provider.token_requests("refresh_token") == 1, provider.stats()
    after = access_token(b.get(gw.url("/")))
    assert after != first
    assert tokens <= {first, after}, tokens
    assert provider.token_requests("refresh_token") == 1, provider.stats()


def test_a_request_body_waits_for_the_refresh_and_a_failed_refresh_is_retried(idp_factory, gateway, browser):
    """While the refresh callout is out, the request (here a POST whose body arrives during
    it) is held: nothing reaches the upstream before the filter has set the identity. The
    IdP hangs, the callout times out, the still-valid token is used, and a later request
    refreshes."""
    provider = idp_factory(env=SHORT_AT)
    gw = gateway(_idp=provider, session=REFRESH_SOON, callout_timeout_ms=1500)
    b = browser()
    t0 = login_at(b, gw)
    first = access_token(b.get(gw.url("/")))

    sleep_until(t0 + DUE_AFTER)
    provider.pause()
    try:
        r = b.post(gw.url("/upload"), "x" * 5000, headers={"Content-Type": "text/plain",
                                                          "X-Auth-Request-User": "mallory"})
    finally:
        provider.resume()
    assert r.status == 200, r
    echoed = r.json()
    assert echoed["body"] == "x" * 5000
    assert upstream_user(r) == "alice", "the request went upstream before the filter set the identity"
    assert access_token(r) == first

    # The failed refresh keeps its claim until it lapses (callout timeout + 2 s); meanwhile the
    # old token is used, then a request refreshes.
    def refreshed():
        token = access_token(b.get(gw.url("/")))
        return token != first
    wait_until(refreshed, 8, interval=0.5, what="a successful refresh after the failed one")
    # The IdP counts the timed-out refresh too, once it runs again.
    wait_until(lambda: provider.token_requests("refresh_token") == 2, 5, what="two refresh requests at the IdP")
    assert not provider.stats()["token_errors"]


def test_revoked_grant_ends_the_session_at_the_next_refresh(idp_factory, gateway, browser):
    provider = idp_factory(env=SHORT_AT)
    gw = gateway(_idp=provider, session=REFRESH_SOON)
    b = browser()
    t0 = login_at(b, gw)
    token = access_token(b.get(gw.url("/")))

    # Revoking the access token revokes its whole grant at oidc-provider, refresh token included.
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    r = b.post(f"{provider.issuer}/token/revocation", {"token": token}, use_jar=False, accept_html=False,
               headers={"Authorization": f"Basic {basic}"})
    assert r.status == 200 and provider.stats()["revocations"] == 1, r

    sleep_until(t0 + DUE_AFTER)
    r = b.get(gw.url("/after-revocation"))
    assert is_login_redirect(r, provider), r
    stats = provider.stats()
    assert stats["token_requests"].get("refresh_token") == 1, stats
    assert stats["token_errors"].get("refresh_token") == 1, stats
    # The session is gone for good: the next request is a new login too, not a retry.
    assert is_login_redirect(b.get(gw.url("/")), provider)
    assert provider.token_requests("refresh_token") == 1

    # And a new login works (the IdP session is still there: straight back).
    back = idp_login(b, r.location)
    assert b.get(absolute(back.url, back.location)).status == 302
    assert access_token(b.get(gw.url("/"))) != token


# ----------------------------------------------------------------------------------------
# timeouts, sweep, ceiling


def test_idle_and_absolute_timeouts_and_the_sweep(gateway, idp, browser):
    idle_gw = gateway(session={"idle_timeout_seconds": 10, "absolute_timeout_seconds": 3600,
                               "sweep_interval_seconds": 1})
    absolute_gw = gateway(session={"idle_timeout_seconds": 12, "absolute_timeout_seconds": 12})
    active, idle, forgotten, capped = browser("active"), browser("idle"), browser("forgotten"), browser("capped")
    # A session created during [started, t0] has seen N seconds at t0 + N, and has not yet
    # seen N seconds (in the filter's whole seconds) before started + N - 1.
    started = time.monotonic()
    login_at(capped, absolute_gw)
    login_at(active, idle_gw)
    login_at(idle, idle_gw)
    t0 = login_at(forgotten, idle_gw)
    assert t0 - started < 2.5, "logins too slow for this test's timeline"
    assert metric(idle_gw, "sessions_created") == 3

    # Activity every 4 s keeps a session alive past the 10 s idle timeout ...
    for step in (4, 8):
        sleep_until(t0 + step)
        assert active.get(idle_gw.url("/")).status == 200
        assert capped.get(absolute_gw.url("/")).status == 200
    # ... but not past the absolute lifetime (12 s).
    sleep_until(t0 + 12)
    r = capped.get(absolute_gw.url("/"))
    assert is_login_redirect(r, idp), r
    assert active.get(idle_gw.url("/")).status == 200
    # 12 s without a request: past the idle timeout.
    r = idle.get(idle_gw.url("/"))
    assert is_login_redirect(r, idp), r
    sleep_until(t0 + 14)
    assert active.get(idle_gw.url("/")).status == 200

    # The sweep (every second here) removed the session nobody came back for; one stays live.
    assert wait_metric(idle_gw, "sessions_expired", 1) >= 1
    deadline = time.monotonic() + 5
    while metric(idle_gw, "sessions_live") != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(idle_gw, "sessions_live") == 1
    assert is_login_redirect(forgotten.get(idle_gw.url("/")), idp)
    assert active.get(idle_gw.url("/")).status == 200


def test_the_ceiling_evicts_the_oldest_sessions(gateway, idp, browser):
    gw = gateway(session={"max_sessions": 2, "sweep_interval_seconds": 1})
    oldest, b2, b3 = browser("oldest"), browser("second"), browser("third")
    login_at(oldest, gw, "alice")
    # The ceiling orders sessions by their creation second.
    sleep_until(time.monotonic() + 1.1)
    login_at(b2, gw, "bob")
    login_at(b3, gw, "carol")

    assert wait_metric(gw, "sessions_evicted", 1) == 1
    assert is_login_redirect(oldest.get(gw.url("/")), idp)
    assert upstream_user(b2.get(gw.url("/"))) == "bob"
    assert upstream_user(b3.get(gw.url("/"))) == "carol"


# ----------------------------------------------------------------------------------------
# back-channel logout


def test_idp_initiated_backchannel_logout_ends_that_session_only(idp_factory, gateway, port_pool, browser):
    port = port_pool.take()
    provider = idp_factory(backchannel_logout_uri=f"http://127.0.0.1:{port}{BACKCHANNEL_PATH}")
    gw = gateway(_idp=provider, _port=port, backchannel_logout_path=BACKCHANNEL_PATH)
    a, b = browser("alice"), browser("bob")
    login_at(a, gw, "alice")
    login_at(b, gw, "bob")
    assert upstream_user(a.get(gw.url("/"))) == "alice"
    gateway_cookie = a.cookie(SESSION_COOKIE).value

    end_idp_session(a, provider)
    stats = provider.stats()
    assert stats["backchannel"] == {"success": 1, "error": 0}, stats
    assert metric(gw, "backchannel_logout_sessions_ended") == 1

    # Alice still holds the gateway's cookie, but its session is gone: a new login.
    assert a.cookie(SESSION_COOKIE).value == gateway_cookie
    r = a.get(gw.url("/after"))
    assert is_login_redirect(r, provider), r
    assert upstream_user(b.get(gw.url("/"))) == "bob"

    # She can log in again (the IdP asks for her credentials: its session ended too).
    back = idp_login(a, r.location, "alice")
    assert a.get(absolute(back.url, back.location)).status == 302
    assert upstream_user(a.get(gw.url("/"))) == "alice"


def test_invalid_logout_tokens_are_refused_and_end_nothing(gateway, idp, browser):
    gw = gateway(backchannel_logout_path=BACKCHANNEL_PATH)
    user = "carol"
    b = browser()
    login_at(b, gw, user)
    assert upstream_user(b.get(gw.url("/"))) == user

    now = int(time.time())

    def claims(**changes):
        base = {"iss": idp.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4()),
                "sub": user, "events": {LOGOUT_EVENT: {}}}
        for k, v in changes.items():
            if v is None:
                base.pop(k, None)
            else:
                base[k] = v
        return base

    typ = {"typ": "logout+jwt"}
    # Every token names the logged-in user: accepted, it would end her session.
    cases = {
        "a key the IdP does not have (its kid)": {"key": "other", "header": {**typ, "kid": "test-rs256"},
                                                  "claims": claims()},
        "a key the IdP does not have (unknown kid)": {"key": "other", "header": {**typ, "kid": "not-at-the-idp"},
                                                      "claims": claims()},
        "another issuer": {"key": "idp", "header": typ, "claims": claims(iss="https://evil.example")},
        "another audience": {"key": "idp", "header": typ, "claims": claims(aud="another-client")},
        "no events": {"key": "idp", "header": typ, "claims": claims(events=None)},
        "events without the logout event": {"key": "idp", "header": typ,
                                            "claims": claims(events={"http://example/other": {}})},
        "a nonce": {"key": "idp", "header": typ, "claims": claims(nonce="n")},
        "neither sub nor sid": {"key": "idp", "header": typ, "claims": claims(sub=None)},
        "no jti": {"key": "idp", "header": typ, "claims": claims(jti=None)},
        "iat an hour ago": {"key": "idp", "header": typ, "claims": claims(iat=now - 3600, exp=now - 3480)},
        "expired": {"key": "idp", "header": typ, "claims": claims(iat=now - 200, exp=now - 120)},
        "iat in the future": {"key": "idp", "header": typ, "claims": claims(iat=now + 600, exp=now + 720)},
        "typ at+jwt (an access token's)": {"key": "idp", "header": {"typ": "at+jwt"}, "claims": claims()},
    }
    signed = dict(zip(cases, sign_jwts(list(cases.values()))))
    signed["alg none"] = unsigned_jwt({"alg": "none", "typ": "logout+jwt"}, claims())
    signed["garbage"] = "not-a-jwt"
    signed["a valid signature under a swapped payload"] = ".".join(
        [signed["another audience"].split(".")[0], b64url(json.dumps(claims()).encode()),
         signed["another audience"].split(".")[2]])

    for what, token in signed.items():
        assert_refused(post_logout_token(b, gw, f"logout_token={token}"), what)
    assert_refused(post_logout_token(b, gw, "token=x"), "no logout_token parameter")
    good = sign_jwts([{"key": "idp", "header": typ, "claims": claims(sub="nobody")}])[0]
    assert_refused(post_logout_token(b, gw, f"logout_token={good}&logout_token={good}"), "two logout_tokens")

    r = b.get(gw.url(BACKCHANNEL_PATH), use_jar=False)
    assert r.status == 405, r
    assert r.header("allow") == "POST"

    # Nothing ended, and the VMs are alive.
    assert upstream_user(b.get(gw.url("/"))) == user
    assert metric(gw, "backchannel_logout_sessions_ended") == 0

    # A valid token is accepted once (naming nobody logged in here) ...
    r = post_logout_token(b, gw, f"logout_token={good}")
    assert r.status == 200 and r.header("cache-control") == "no-store", r
    assert_refused(post_logout_token(b, gw, f"logout_token={good}"), "a replayed token")
    assert upstream_user(b.get(gw.url("/"))) == user

    # ... and one naming the user ends her session: the refused ones above would have.
    ends = sign_jwts([{"key": "idp", "header": typ, "claims": claims()}])[0]
    r = post_logout_token(b, gw, f"logout_token={ends}")
    assert r.status == 200, r
    assert metric(gw, "backchannel_logout_sessions_ended") == 1
    assert is_login_redirect(b.get(gw.url("/")), idp)


# ----------------------------------------------------------------------------------------
# metrics


def test_logins_are_counted_in_envoy_stats(gw, browser):
    before = metric(gw, "sessions_created")
    login_at(browser(), gw)
    login_at(browser(), gw, "bob")
    assert metric(gw, "sessions_created") == before + 2
