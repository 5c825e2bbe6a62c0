"""Requests that arrive while their session refreshes wait for the refresh and go on with the
new token; when it fails they get the leader's answer. Against the rogue provider, which
rotates refresh tokens and revokes the whole grant when a rotated-away one comes back: a second
refresh of one session would end it.

The burst is 20 concurrent requests of one session whose access token has expired (margin 0),
over an Envoy with 4 workers, so followers wait on other workers than the leader's as well.
Every figure of a burst (refresh calls, statuses, latencies) is printed (`pytest -s`).
"""

from __future__ import annotations

import threading
import time

import pytest

from harness import CurlError, logged_in

BURST = 20
COOKIE_BASE = "__Host-oidc-session"
COOKIE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, base64

STORES = {
    "shared-data": {},
    "cookie": {"session": {"store": "cookie"}, "cookie": {"keys": [COOKIE_KEY]}},
}


def merged(*configs: dict) -> dict:
    out: dict = {}
    for config in configs:
        for key, value in config.items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def bearer(r) -> str | None:
    if r.status != 200:
        return None
    return r.json()["headers"].get("authorization")


def expired_session(rogue, gateway, browser, store: str, **config):
    """A gateway (4 workers) and a logged-in browser whose access token has expired; the
    provider's next tokens live an hour, so the refreshed one stays valid for the test."""
    rogue.control(access_token_ttl=2)
    gw = gateway(_idp=rogue, _concurrency=4,
                 **merged(STORES[store], {"session": {"refresh_margin_seconds": 0}}, config))
    b = browser("owner")
    logged_in(b, gw, "/")
    logged_in_at = time.monotonic()
    old = bearer(b.get(gw.url("/")))
    assert old, "the fresh session forwards"
    rogue.control(access_token_ttl=3600)
    # The filter counts whole seconds: 2 s after the login's second the token has expired.
    time.sleep(max(0.0, logged_in_at + 3.2 - time.monotonic()))
    assert rogue.token_requests("refresh_token") == 0
    return gw, b, old


def burst(gw, owner, browser, path: str = "/burst") -> list[tuple[object, float]]:
    """BURST concurrent requests, each from its own copy of `owner`'s cookie jar; returns
    (response, seconds) per request."""
    jar = owner.jar.read_text()
    tabs = []
    for i in range(BURST):
        tab = browser(f"tab{i}")
        tab.jar.write_text(jar)
        tabs.append(tab)
    results: list = [None] * BURST
    start = threading.Barrier(BURST)

    def one(i):
        start.wait()
        t0 = time.monotonic()
        r = tabs[i].get(gw.url(f"{path}/{i}"), max_time=30)
        results[i] = (r, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert all(r is not None for r in results), "a request of the burst did not finish"
    return list(zip(tabs, results))


def report(what: str, rogue, outcomes):
    statuses: dict[int, int] = {}
    for _, (r, _) in outcomes:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    latencies = sorted(seconds for _, (_, seconds) in outcomes)
    print(f"\n{what}: refresh calls {rogue.token_requests('refresh_token')}, statuses {statuses}, "
          f"latency min {latencies[0]:.2f}s median {latencies[len(latencies) // 2]:.2f}s "
          f"max {latencies[-1]:.2f}s")
    return latencies[-1]


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("refresh_delay_ms", [0, 2000], ids=["prompt-refresh", "refresh-takes-2s"])
def test_a_burst_on_an_expired_token_refreshes_once_and_every_request_gets_the_new_token(
        store, refresh_delay_ms, rogue, gateway, browser):
    gw, owner, old = expired_session(rogue, gateway, browser, store, callout_timeout_ms=5000)
    rogue.control(refresh_delay_ms=refresh_delay_ms)

    outcomes = burst(gw, owner, browser)
    slowest = report(f"{store}, refresh delay {refresh_delay_ms} ms", rogue, outcomes)

    statuses = [r.status for _, (r, _) in outcomes]
    assert statuses == [200] * BURST, [r for _, (r, _) in outcomes if r.status != 200][:1]
    tokens = {bearer(r) for _, (r, _) in outcomes}
    assert len(tokens) == 1 and old not in tokens, f"not every request had the one new token: {tokens}"
    stats = rogue.stats()
    assert stats["token_requests"].get("refresh_token") == 1, stats
    assert not stats["token_errors"] and stats["revocations"] == 0, stats
    # Bounded by the refresh itself plus the waiters' wake-up, not by the callout timeout.
    assert slowest < refresh_delay_ms / 1000 + 4, f"the slowest request took {slowest:.1f}s"

    new = tokens.pop()
    if store == "cookie":
        # Every response, not only the leader's, carries the refreshed session: whichever the
        # browser stores last, it holds the new tokens (the old refresh token is spent).
        for tab, (r, _) in outcomes:
            assert r.set_cookie(COOKIE_BASE) is not None, f"a response did not re-issue the cookie: {r!r}"
        for tab, _ in outcomes[:: BURST // 4]:
            assert bearer(tab.get(gw.url("/after"))) == new
    else:
        assert bearer(owner.get(gw.url("/after"))) == new
    assert rogue.token_requests("refresh_token") == 1, "the session was refreshed again"


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("failure", ["server-error", "invalid-grant"])
def test_a_failed_refresh_gives_every_waiting_request_the_leaders_answer_promptly(
        store, failure, rogue, gateway, browser):
    gw, owner, _ = expired_session(rogue, gateway, browser, store, callout_timeout_ms=5000)
    if failure == "server-error":
        rogue.control(refresh_status=500, refresh_delay_ms=1000)
    else:
        rogue.control(refresh_status=400, token_error="invalid_grant", refresh_delay_ms=1000)

    outcomes = burst(gw, owner, browser)
    slowest = report(f"{store}, refresh fails ({failure})", rogue, outcomes)

    assert rogue.token_requests("refresh_token") == 1, rogue.stats()
    for _, (r, _) in outcomes:
        if failure == "server-error":
            # The session could not be renewed now: the error page, the session kept.
            assert r.status == 502 and "could not be renewed" in r.text, r
        else:
            # The provider ended the grant: every request starts a new login.
            assert r.status == 302 and r.location.startswith(f"{rogue.issuer}/auth?"), r
    # Promptly: the leader's answer (1 s at the provider) reaches the waiters, nobody sits out
    # the callout timeout (5 s) or hangs.
    assert slowest < 4, f"the slowest request took {slowest:.1f}s"

    if failure == "server-error":
        # The session survived; once the provider refreshes again, so does the session.
        rogue.control(refresh_status=None, refresh_delay_ms=0)
        r = owner.get(gw.url("/again"))
        assert r.status == 200, r
        assert rogue.token_requests("refresh_token") == 2


def test_waiting_requests_whose_clients_went_away_are_harmless(rogue, gateway, browser):
    """Followers whose clients give up while the refresh is under way are dropped: the
    leader still finishes, later requests are served on every worker, nothing crashed."""
    gw, owner, old = expired_session(rogue, gateway, browser, "shared-data", callout_timeout_ms=5000)
    rogue.control(refresh_delay_ms=3000)
    jar = owner.jar.read_text()
    leader: list = []
    thread = threading.Thread(target=lambda: leader.append(owner.get(gw.url("/leader"), max_time=20)))
    thread.start()
    time.sleep(0.5)

    gave_up = 0
    impatient = []
    for i in range(10):
        tab = browser(f"impatient{i}")
        tab.jar.write_text(jar)
        impatient.append(tab)

    def give_up(tab):
        nonlocal gave_up
        try:
            tab.get(gw.url("/impatient"), max_time=1)
        except CurlError:
            gave_up += 1

    threads = [threading.Thread(target=give_up, args=(tab,)) for tab in impatient]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    thread.join(20)
    assert gave_up == 10, "the followers were answered before the refresh ended"
    assert leader and bearer(leader[0]) not in (None, old), leader
    new = bearer(leader[0])
    # Many new connections, so every worker serves one; a crashed VM would answer 503.
    assert [bearer(owner.get(gw.url(f"/after/{i}"))) for i in range(12)] == [new] * 12
    assert rogue.token_requests("refresh_token") == 1
