"""Session lifecycle against a real IdP: token refresh (one at a time, even under a burst),
the IdP ending the grant, and back-channel logout."""

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import logged_in, wait_until

BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
TTL = 6  # access token lifetime at the short-lived IdP (seconds)


def bearer(response) -> str:
    assert response.status == 200, response
    return response.json()["headers"]["authorization"]


def idp_logout(browser, idp):
    """RP-independent logout at the IdP (what a user does on the IdP's own logout page)."""
    page = browser.get(f"{idp.issuer}/session/end")
    assert page.status == 200, page
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text).group(1)
    done = browser.post(f"{idp.issuer}/session/end/confirm", {"xsrf": xsrf, "logout": "yes"})
    assert done.status == 303, done
    return done


@pytest.fixture
def short_lived(idp_factory, gateway):
    """An IdP issuing 6-second access tokens, rotating refresh tokens (a double refresh would
    kill the grant), and a gateway that refreshes when less than 3 s are left. Times are whole
    seconds on both sides, so the tests keep a second of slack each way."""
    provider = idp_factory(env={"TTL_ACCESS_TOKEN": str(TTL), "ROTATE_REFRESH_TOKEN": "1"})
    gw = gateway(_idp=provider, session={"refresh_margin_seconds": 3})
    return provider, gw


def test_access_token_is_refreshed_before_it_expires(short_lived, browser):
    provider, gw = short_lived
    b = browser()
    logged_in(b, gw, "/")
    issued = time.monotonic()
    first = bearer(b.get(gw.url("/")))
    before = provider.token_requests("refresh_token")

    def refreshed():
        token = bearer(b.get(gw.url("/")))
        return token if token != first else None

    second = wait_until(refreshed, TTL + 2, interval=0.25, what="the access token to be refreshed")
    assert time.monotonic() - issued < TTL, "the token was refreshed only after it expired"
    assert provider.token_requests("refresh_token") == before + 1
    assert provider.stats()["token_errors"].get("refresh_token", 0) == 0

    # The new token is used as is until it too nears expiry.
    again = bearer(b.get(gw.url("/")))
    assert again == second
    assert provider.token_requests("refresh_token") == before + 1


def test_a_burst_of_requests_refreshes_once(short_lived, browser):
    provider, gw = short_lived
    b = browser()
    logged_in(b, gw, "/")
    jar = b.jar.read_text()
    old = bearer(b.get(gw.url("/")))
    before = provider.token_requests("refresh_token")
    time.sleep(TTL - 3 + 1.3)  # inside the refresh margin, the old token still valid for ~1.7 s

    def one(i):
        tab = browser(f"tab{i}")
        tab.jar.write_text(jar)
        return tab.get(gw.url(f"/burst/{i}"))

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(one, range(20)))
    # The old token was still valid: the requests that did not refresh went on with it.
    assert [r.status for r in results] == [200] * 20, [r for r in results if r.status != 200][:1]
    tokens = {r.json()["headers"]["authorization"] for r in results}
    assert len(tokens - {old}) == 1, "the burst did not end with exactly one new token"
    assert provider.token_requests("refresh_token") == before + 1, "more than one refresh for one session"
    # With rotating refresh tokens a second refresh would have revoked the grant; the session
    # lives on, through the next refresh too.
    time.sleep(TTL - 3 + 1.3)
    assert b.get(gw.url("/after")).status == 200
    assert provider.token_requests("refresh_token") == before + 2
    assert provider.stats()["token_errors"].get("refresh_token", 0) == 0


def test_grant_ended_at_the_idp_ends_the_session_at_refresh(short_lived, browser):
    provider, gw = short_lived
    b = browser()
    logged_in(b, gw, "/")
    assert b.get(gw.url("/")).status == 200
    idp_logout(b, provider)  # revokes the grant (no offline_access) and so the refresh token

    def ended():
        r = b.get(gw.url("/"))
        return r if r.status == 302 else None

    r = wait_until(ended, TTL + 2, interval=0.3, what="the session to end after the refresh was refused")
    assert r.location.startswith(f"{provider.issuer}/auth?"), r
    assert provider.stats()["token_errors"].get("refresh_token", 0) >= 1


@pytest.fixture
def with_backchannel(idp_factory, gateway, port_pool):
    port = port_pool.take()
    provider = idp_factory(backchannel_logout_uri=f"http://127.0.0.1:{port}{BACKCHANNEL_PATH}")
    gw = gateway(_idp=provider, _port=port, backchannel_logout_path=BACKCHANNEL_PATH)
    return provider, gw


def test_backchannel_logout_ends_only_that_users_session(with_backchannel, browser):
    provider, gw = with_backchannel
    alice, bob = browser("alice"), browser("bob")
    logged_in(alice, gw, "/")
    logged_in(bob, gw, "/", user="bob")
    assert alice.get(gw.url("/")).status == 200
    before = provider.stats()["backchannel"]

    idp_logout(alice, provider)  # the IdP POSTs a logout token to the gateway before answering

    after = provider.stats()["backchannel"]
    assert after["success"] == before["success"] + 1, (after, provider.log()[-2000:])
    assert after["error"] == before["error"]
    r = alice.get(gw.url("/"))
    assert r.status == 302 and r.location.startswith(f"{provider.issuer}/auth?"), r
    r = bob.get(gw.url("/"))
    assert r.status == 200 and r.json()["headers"]["x-auth-request-user"] == "bob", r


def test_backchannel_endpoint_rejects_bad_requests(with_backchannel, browser):
    _, gw = with_backchannel
    b = browser()
    assert b.get(gw.url(BACKCHANNEL_PATH)).status == 405
    for body in ({"logout_token": "garbage"}, {"logout_token": "a.b.c"}, {}):
        r = b.post(gw.url(BACKCHANNEL_PATH), body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 400, (body, r)
    # Not a login page: the endpoint never redirects to the IdP.
    r = b.post(gw.url(BACKCHANNEL_PATH), "logout_token=x")
    assert r.status == 400 and not r.location, r


def test_post_body_survives_a_refresh(short_lived, browser):
    """A request paused for the refresh callout keeps its body and delivers it afterwards."""
    provider, gw = short_lived
    b = browser()
    logged_in(b, gw, "/")
    old = bearer(b.get(gw.url("/")))
    before = provider.token_requests("refresh_token")
    time.sleep(TTL - 3 + 1.3)
    body = "payload=" + "y" * 50_000
    r = b.post(gw.url("/submit"), body, headers=[("Content-Type", "application/x-www-form-urlencoded"),
                                                 ("X-Auth-Request-User", "mallory")])
    assert r.status == 200, r
    seen = r.json()
    assert seen["body"] == body
    # The request went on only after the refresh, with the filter's headers, not the client's.
    assert seen["headers"].get("x-auth-request-user") == "alice", seen["headers"]
    assert seen["headers"].get("authorization", old) != old
    assert provider.token_requests("refresh_token") == before + 1


def test_idle_and_absolute_timeouts(gateway, browser):
    """An unused session ends after the idle timeout; a used one lives until the absolute
    timeout. Whole-second clocks: a second of slack on each side."""
    idle, absolute = 10, 20
    gw = gateway(session={"idle_timeout_seconds": idle, "absolute_timeout_seconds": absolute})
    active, quiet = browser("active"), browser("quiet")
    logged_in(quiet, gw, "/")
    logged_in(active, gw, "/")
    start = time.monotonic()

    def to_idp(r):
        return r.status == 302 and r.location.startswith(f"{gw.idp.issuer}/auth?")

    quiet_ended = None
    while time.monotonic() - start < absolute - 2:
        r = active.get(gw.url("/"))
        assert r.status == 200, f"active session ended after {time.monotonic() - start:.1f}s: {r!r}"
        if quiet_ended is None and time.monotonic() - start > idle + 1.5:
            q = quiet.get(gw.url("/"))
            assert to_idp(q), f"idle session still open after {time.monotonic() - start:.1f}s: {q!r}"
            quiet_ended = time.monotonic() - start
        time.sleep(2)
    assert quiet_ended is not None

    def ended():
        r = active.get(gw.url("/"))
        return r if to_idp(r) else None

    wait_until(ended, 5, interval=0.5, what="the absolute timeout to end the active session")
    assert time.monotonic() - start >= absolute - 1.5
