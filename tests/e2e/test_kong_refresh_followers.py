"""Refresh followers on Kong's proxy-wasm engine (nginx + ngx_wasm_module + Wasmtime).

On Envoy, requests that arrive while their session refreshes (with an expired access token)
wait for the leader's refresh: parked, then woken from the root context's tick with
`set_effective_context` (test_refresh_followers.py). ngx_wasm_module 0.6.0 implements
`set_effective_context` as a no-op, so calls from a tick never reach a request, and setting
a request header there traps, which restarted the VM and left every parked request hanging
until its client gave up. On this engine the filter therefore does not park them: a request
that finds its session's refresh under way, with an expired token, is answered at once with
the "one moment" page (503, `Retry-After: 1`, reloading itself after a second), and its retry
goes on with the refreshed session. A request whose token is still valid goes on with it, as
on Envoy.

What stays the same: one refresh per session (a second one would end it at the rogue
provider, which rotates refresh tokens and revokes the whole grant when a rotated-away one
comes back), no request hangs, no VM dies. The burst is 20 concurrent requests of one session
whose access token has expired (margin 0), over an nginx with 2 workers (reuseport). Every
figure of a burst is printed (`pytest -s`).
"""

from __future__ import annotations

import time

import pytest

from harness import logged_in
from test_kong_engine import NGINX, WHY_NOT, WORKER_HEADER, NginxFactory
from test_refresh_followers import BURST, COOKIE_BASE, STORES, bearer, burst, merged, report

pytestmark = pytest.mark.skipif(NGINX is None, reason=WHY_NOT or "engine not built")

WORKERS = 2


@pytest.fixture
def nginx(workdir, rogue, echo, port_pool, wasm):
    factory = NginxFactory(workdir, rogue, echo, port_pool)
    yield factory
    factory.stop_all()  # also asserts that no worker died


def expired_session(rogue, nginx, browser, store: str, **config):
    """An nginx (2 workers) and a logged-in browser whose access token has expired; the
    provider's next tokens live an hour, so the refreshed one stays valid for the test."""
    rogue.control(access_token_ttl=2)
    gw = nginx(_idp=rogue, _workers=WORKERS, _tag_worker=True,
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


def workers_of(outcomes) -> set[str]:
    return {r.json()["headers"].get(WORKER_HEADER) for _, (r, _) in outcomes if r.status == 200}


def assert_asked_to_retry(r):
    assert r.status == 503, r
    assert r.header("retry-after") == "1", r
    assert "being renewed" in r.text and 'http-equiv="refresh"' in r.text, r.text


def assert_no_trap(gw):
    """A trap restarts the VM (not the worker): its requests hang, its state is lost."""
    traps = [ln for ln in gw.log().splitlines() if "error while executing" in ln or "host trap" in ln]
    assert not traps, gw.log_summary()


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("refresh_delay_ms", [0, 2000], ids=["prompt-refresh", "refresh-takes-2s"])
def test_a_burst_on_an_expired_token_refreshes_once_and_the_others_retry_on_kongs_engine(
        store, refresh_delay_ms, rogue, nginx, browser):
    gw, owner, old = expired_session(rogue, nginx, browser, store, callout_timeout_ms=5000)
    rogue.control(refresh_delay_ms=refresh_delay_ms)

    outcomes = burst(gw, owner, browser)
    slowest = report(f"Kong's engine, {store}, refresh delay {refresh_delay_ms} ms", rogue, outcomes)
    print(f"served by {len(workers_of(outcomes))} of {WORKERS} workers")

    served = [(tab, r) for tab, (r, _) in outcomes if r.status == 200]
    asked_to_retry = [(tab, r) for tab, (r, _) in outcomes if r.status != 200]
    assert served, "nobody was served: the leader's request did not go on"
    for _, r in asked_to_retry:
        assert_asked_to_retry(r)
    if refresh_delay_ms:
        # The others arrived while the refresh was under way.
        assert asked_to_retry, "no request arrived during a 2 s refresh?"
    tokens = {bearer(r) for _, r in served}
    assert len(tokens) == 1 and old not in tokens, f"not every served request had the one new token: {tokens}"
    new = tokens.pop()
    stats = rogue.stats()
    assert stats["token_requests"].get("refresh_token") == 1, stats
    assert not stats["token_errors"] and stats["revocations"] == 0, stats
    # Nobody waits for the refresh: only the leader's request takes as long as it.
    assert slowest < refresh_delay_ms / 1000 + 4, f"the slowest request took {slowest:.1f}s"
    assert_no_trap(gw)

    # What the page's reload does: each retry goes on with the refreshed session.
    for tab, _ in asked_to_retry:
        assert bearer(tab.get(gw.url("/retry"))) == new
    if store == "cookie":
        for tab, r in served:
            assert r.set_cookie(COOKIE_BASE) is not None, f"a response did not re-issue the cookie: {r!r}"
        for tab, _ in outcomes[:: BURST // 4]:
            assert bearer(tab.get(gw.url("/after"))) == new
    else:
        assert bearer(owner.get(gw.url("/after"))) == new
    assert rogue.token_requests("refresh_token") == 1, "the session was refreshed again"
    assert_no_trap(gw)


@pytest.mark.parametrize("failure", ["server-error", "invalid-grant"])
def test_a_failed_refresh_on_kongs_engine_answers_the_leader_and_the_others_retry(
        failure, rogue, nginx, browser):
    gw, owner, _ = expired_session(rogue, nginx, browser, "shared-data", callout_timeout_ms=5000)
    if failure == "server-error":
        rogue.control(refresh_status=500, refresh_delay_ms=1000)
    else:
        rogue.control(refresh_status=400, token_error="invalid_grant", refresh_delay_ms=1000)

    outcomes = burst(gw, owner, browser)
    slowest = report(f"Kong's engine, refresh fails ({failure})", rogue, outcomes)

    assert rogue.token_requests("refresh_token") == 1, rogue.stats()
    leaders = [(tab, r) for tab, (r, _) in outcomes if r.status != 503]
    assert len(leaders) == 1, [r for _, r in leaders]
    _, r = leaders[0]
    if failure == "server-error":
        # The session could not be renewed now: the error page, the session kept.
        assert r.status == 502 and "could not be renewed" in r.text, r
    else:
        # The provider ended the grant: a new login.
        assert r.status == 302 and r.location.startswith(f"{rogue.issuer}/auth?"), r
    for _, (r, _) in outcomes:
        if r.status == 503:
            assert_asked_to_retry(r)
    assert slowest < 4, f"the slowest request took {slowest:.1f}s"
    assert_no_trap(gw)

    retry = next(tab for tab, (r, _) in outcomes if r.status == 503)
    if failure == "server-error":
        # The session survived; once the provider refreshes again, so does the session.
        rogue.control(refresh_status=None, refresh_delay_ms=0)
        assert bearer(retry.get(gw.url("/again"))) is not None
        assert rogue.token_requests("refresh_token") == 2
    else:
        r = retry.get(gw.url("/again"))
        assert r.status == 302 and r.location.startswith(f"{rogue.issuer}/auth?"), r
        assert rogue.token_requests("refresh_token") == 1
