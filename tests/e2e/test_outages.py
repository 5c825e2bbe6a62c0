"""Provider outages, against the rogue provider: nothing passes unauthenticated, every request
gets an answer within the callout timeout plus a margin, sessions survive what they can, and
service comes back without re-login when the provider does.

Covered elsewhere and not repeated here: the metadata 503 until the provider first answers
(test_provider_and_config.py::test_503_until_metadata_then_login_works), a killed or hung
provider at the token exchange (test_callback.py::test_idp_down_at_token_exchange_gives_502_quickly),
a hung provider at a refresh inside the margin
(test_refresh_and_backchannel.py::test_a_request_body_waits_for_the_refresh_and_a_failed_refresh_is_retried),
and a failed refresh under a burst of waiting requests (test_refresh_followers.py).
"""

from __future__ import annotations

import re
import threading
import time

from harness import absolute, idp_login, logged_in, start_login, wait_until

SESSION_COOKIE = "__Host-oidc-session"


def bearer(r) -> str:
    assert r.status == 200, r
    return r.json()["headers"]["authorization"]


def is_login_redirect(r, provider) -> bool:
    return r.status == 302 and (r.location or "").startswith(f"{provider.issuer}/auth?")


def metric(gw, name: str) -> int:
    full = f"wasmcustom.oidc_filter.{name}"
    return gw.stats(full).get(full, 0)


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def test_provider_down_at_start_lets_nothing_pass_then_service_starts(rogue, gateway, browser):
    rogue.stop()
    gw = gateway(_idp=rogue, _wait_metadata=False)
    b = browser()
    b.set_cookie(SESSION_COOKIE, "A" * 43, secure=True)  # a plausible but unknown session
    attempts = {
        "navigation": lambda: b.get(gw.url("/page")),
        "XHR": lambda: b.get(gw.url("/api/x"), headers={"X-Requested-With": "XMLHttpRequest",
                                                          "Accept": "application/json"}),
        "POST": lambda: b.post(gw.url("/form"), "a=1"),
        "bearer": lambda: b.get(gw.url("/api/x"), use_jar=False,
                                headers={"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}),
    }
    for what, attempt in attempts.items():
        r = attempt()
        # Nothing reaches the upstream (the echo app answers 200 with JSON). A login needs the
        # provider: 503 with Retry-After; a request that is not sent to log in (XHR, POST) is
        # refused as always.
        expected = 401 if what in ("XHR", "POST") else 503
        assert r.status == expected, f"{what}: {r!r}"
        if expected == 503:
            assert (r.header("retry-after") or "").isdigit(), f"{what}: {r!r}"

    rogue.start()
    wait_until(lambda: b.get(gw.url("/")).status != 503, 20, interval=0.3,
               what="service once the provider is back")
    b.remove_cookie(SESSION_COOKIE)
    logged_in(b, gw, "/page")
    assert b.get(gw.url("/page")).json()["headers"]["x-auth-request-user"] == "alice"


def test_provider_down_during_login_shows_502_and_the_login_can_be_retried(rogue, gateway, browser):
    gw = gateway(_idp=rogue, callout_timeout_ms=1500)
    b = browser()
    first, _ = start_login(b, gw, "/wanted")
    back = idp_login(b, first.location)
    rogue.control(token_status=503)  # the token endpoint is down
    r, seconds = timed(lambda: b.get(absolute(back.url, back.location)))
    assert r.status == 502 and "text/html" in (r.header("content-type") or ""), r
    assert seconds < 1.5 + 3, f"the callback took {seconds:.1f}s"
    assert b.cookie(SESSION_COOKIE) is None

    rogue.control(token_status=None)
    done = logged_in(b, gw, "/wanted")
    assert done.location.endswith("/wanted"), done
    assert b.get(gw.url("/wanted")).json()["headers"]["x-auth-request-user"] == "alice"


def test_provider_down_during_refresh(rogue, gateway, browser):
    """Inside the margin the still-valid token is used; past expiry a clear 502; when the
    provider returns, the session refreshes without a new login."""
    rogue.control(access_token_ttl=8)
    gw = gateway(_idp=rogue, session={"refresh_margin_seconds": 4}, callout_timeout_ms=1500)
    b = browser()
    logged_in(b, gw, "/")
    t0 = time.monotonic()
    old = bearer(b.get(gw.url("/")))
    rogue.control(refresh_status=503)

    # From 4 s on the refresh is due (the margin is at most half the lifetime); the token is
    # valid until 8 s.
    time.sleep(max(0.0, t0 + 5 - time.monotonic()))
    r, seconds = timed(lambda: b.get(gw.url("/inside-margin")))
    assert bearer(r) == old, "inside the margin the still-valid token is used"
    assert seconds < 1.5 + 3
    assert rogue.stats()["token_errors"].get("refresh_token") == 1, "the refresh was tried and failed"

    time.sleep(max(0.0, t0 + 9.2 - time.monotonic()))
    r, seconds = timed(lambda: b.get(gw.url("/past-expiry")))
    assert r.status == 502 and "could not be renewed" in r.text, r
    assert seconds < 1.5 + 3

    refreshes = rogue.token_requests("refresh_token")
    rogue.control(refresh_status=None, access_token_ttl=3600)
    r = b.get(gw.url("/recovered"))
    assert bearer(r) not in (None, old), r
    assert rogue.token_requests("refresh_token") == refreshes + 1
    assert rogue.token_requests("authorization_code") == 1, "no new login was needed"


def test_a_slow_token_endpoint_answers_every_waiting_request_within_the_timeout(rogue, gateway, browser):
    """The refresh takes longer than the callout timeout: the refreshing request and those
    waiting on it get the error page within the timeout plus a margin; none hangs."""
    rogue.control(access_token_ttl=2, rotate_refresh_tokens=False)
    gw = gateway(_idp=rogue, _concurrency=4, session={"refresh_margin_seconds": 0}, callout_timeout_ms=1500)
    b = browser()
    logged_in(b, gw, "/")
    t0 = time.monotonic()
    assert b.get(gw.url("/")).status == 200
    rogue.control(refresh_delay_ms=6000)
    time.sleep(max(0.0, t0 + 3.2 - time.monotonic()))

    jar = b.jar.read_text()
    results: list = [None] * 8
    go = threading.Barrier(len(results))

    def one(i):
        tab = browser(f"slow{i}")
        tab.jar.write_text(jar)
        go.wait()
        results[i] = timed(lambda: tab.get(gw.url(f"/slow/{i}"), max_time=20))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(results), "a request did not finish"
    statuses = sorted(r.status for r, _ in results)
    slowest = max(seconds for _, seconds in results)
    print(f"\nslow token endpoint: statuses {statuses}, slowest {slowest:.2f}s, "
          f"refresh calls {rogue.token_requests('refresh_token')}")
    assert statuses == [502] * len(results), results
    assert slowest < 1.5 + 3, f"the slowest request took {slowest:.1f}s"
    assert rogue.token_requests("refresh_token") == 1


def test_a_failing_jwks_endpoint_leaves_sessions_working_and_is_logged_and_counted(rogue, gateway, browser):
    """The scheduled metadata refresh (here every 60 s, the shortest allowed) meets a failing
    JWKS endpoint: the keys already loaded stay in use, so sessions and new logins work, and
    every failed attempt is logged with its retry delay and counted."""
    gw = gateway(_idp=rogue, metadata_refresh_seconds=60)
    started = time.monotonic()
    b = browser()
    logged_in(b, gw, "/")
    rogue.control(jwks_status=500)
    assert metric(gw, "metadata_fetch_failures") == 0

    wait_until(lambda: metric(gw, "metadata_fetch_failures") >= 2, 90, interval=1,
               what="two failed metadata refreshes")
    assert time.monotonic() - started >= 55

    def failure_lines():  # Envoy flushes its log file every few seconds
        return [ln for ln in gw.log().splitlines() if "JWKS answered HTTP 500" in ln]

    lines = wait_until(failure_lines, 20, interval=0.5, what="the failures in Envoy's log")
    assert all(re.search(r"retrying in \d+s", ln) for ln in lines), lines

    assert b.get(gw.url("/still")).json()["headers"]["x-auth-request-user"] == "alice"
    other = browser("new-login")
    logged_in(other, gw, "/")
    assert other.get(gw.url("/")).status == 200

    rogue.control(jwks_status=200)
    jwks_before = rogue.stats()["jwks_requests"]
    wait_until(lambda: rogue.stats()["jwks_requests"] > jwks_before, 40, interval=1,
               what="a retry after the JWKS endpoint recovered")
