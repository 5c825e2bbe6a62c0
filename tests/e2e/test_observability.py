"""Observability against real Envoy: the filter's counters by reason in /stats and
/stats/prometheus (the reason as a label, through envoy.yaml's stats_tags), adding up over
two workers, and its key=value decision log lines with Envoy's x-request-id.

Every test drives the rogue provider (tests/idp/rogue.mjs), which signs what it is told, so
each failure family can be produced on purpose. Counters are compared as deltas from a
snapshot taken once the gateway is up, and every counter that is not expected to move must
stay where it was: "the exact counters move".
"""

from __future__ import annotations

import re
import time
import uuid

from harness import CLIENT_ID, Browser, absolute, http_get, logged_in, query_params, wait_until

PREFIX = "wasmcustom.oidc_filter."
BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
API_AUDIENCE = "api://observability"

CONFIG = {
    "backchannel_logout_path": BACKCHANNEL_PATH,
    # The rogue provider's access tokens are opaque; its introspection answers carry
    # client_id and no aud, so the client id is one of the accepted audiences.
    "bearer": {"audiences": [API_AUDIENCE, CLIENT_ID],
               "introspection": {"enabled": True, "cache_seconds": 0}},
    "authorization": {"rules": [{"path_prefix": "/admin/", "allow": False}]},
    "session": {"refresh_margin_seconds": 2},
}


def counters(gw) -> dict[str, int]:
    return {name[len(PREFIX):]: value for name, value in gw.stats(PREFIX).items()
            if name.startswith(PREFIX)
            and name not in (PREFIX + "sessions_live", PREFIX + "index_links_live")}


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after.get(name, 0) - before.get(name, 0)
            for name in set(before) | set(after) if after.get(name, 0) != before.get(name, 0)}


def prometheus(gw) -> str:
    r = http_get(f"{gw.admin}/stats/prometheus")
    assert r is not None and r[0] == 200, r
    return r[2].decode()


def prometheus_value(text: str, metric: str, reason: str | None = None) -> int | None:
    # Envoy 1.40 writes an empty label set as `{}`.
    labels = re.escape("{}") + "?" if reason is None else re.escape(f'{{reason="{reason}"}}')
    m = re.search(rf"^{re.escape(metric)}{labels} (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def wait_counts(gw, before: dict, expected: dict, timeout: float = 10.0) -> dict:
    """Waits until the deltas equal `expected` (stats flush from workers asynchronously)."""
    got: dict = {}

    def settled():
        nonlocal got
        got = deltas(before, counters(gw))
        return got == expected

    try:
        wait_until(settled, timeout, interval=0.2, what="the expected counters")
    except Exception:
        pass
    return got


def browser_login_failing(b, gw) -> object:
    """Starts a login, lets the rogue provider redirect back, and returns the callback's answer."""
    first = b.get(gw.url("/"))
    assert first.status == 302, first
    back = b.get(absolute(gw.url("/"), first.location))
    assert back.status == 302, back
    return b.get(absolute(back.url, back.location))


def logout_token(rogue, **claims) -> str:
    now = int(time.time())
    base = {"iss": rogue.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4()),
            "events": {LOGOUT_EVENT: {}}}
    base.update(claims)
    return rogue.sign({k: v for k, v in base.items() if v is not None}, header={"typ": "logout+jwt"})


def access_jwt(rogue, **claims) -> str:
    now = int(time.time())
    base = {"iss": rogue.issuer, "aud": API_AUDIENCE, "sub": "api-client", "iat": now - 5, "exp": now + 300,
            "scope": "read", "client_id": "machine"}
    base.update(claims)
    return rogue.sign(base, header={"typ": "at+jwt"})


def bearer(b, gw, token, path="/api/data"):
    return b.get(gw.url(path), accept_html=False, use_jar=False,
                 headers={"Authorization": f"Bearer {token}"})


def post_logout_token(b, gw, token):
    return b.post(gw.url(BACKCHANNEL_PATH), {"logout_token": token}, use_jar=False, accept_html=False,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})


def worker_connections(gw) -> list[int]:
    stats = gw.stats(f"listener.127.0.0.1_{gw.port}.worker_")
    return [v for k, v in stats.items() if k.endswith(".downstream_cx_total")]


def test_every_family_moves_its_exact_counters_over_two_workers(rogue, gateway, workdir):
    gw = gateway(_idp=rogue, _concurrency=2, **CONFIG)
    start = counters(gw)
    # Defined at start, before anything happened: each shows at 0.
    for name in ("login_failed.reason.id_token_nonce_mismatch", "bearer_rejected.reason.expired",
                 "refresh_failed.reason.invalid_grant", "backchannel_logout_rejected.reason.replayed",
                 "access_denied", "logout"):
        assert name in start, sorted(start)
    before = start

    # A login, then requests on the session.
    alice = Browser(workdir, "obs-alice")
    logged_in(alice, gw, "/")
    assert alice.get(gw.url("/")).status == 200
    assert wait_counts(gw, before, {"login_started": 1, "login_succeeded": 1, "sessions_created": 1}) == \
        {"login_started": 1, "login_succeeded": 1, "sessions_created": 1}
    before = counters(gw)

    # Callbacks refused: no login cookie for the state, a login cookie that does not open.
    eve = Browser(workdir, "obs-eve")
    r = eve.get(gw.url("/oauth2/callback?state=forged&code=x"))
    assert r.status == 400, r
    first = eve.get(gw.url("/"))
    state = query_params(first.location)["state"]
    cookie = first.set_cookie("__Host-oidc-login-")
    r = eve.get(gw.url(f"/oauth2/callback?state={state}&code=x&iss={rogue.issuer}"), use_jar=False,
                headers={"Cookie": f"{cookie.name}=not-a-sealed-login"})
    assert r.status == 400, r
    # ID token checks failing: a wrong nonce, then a signature by a key other than the kid's.
    rogue.control(id_token_claims={"nonce": "not-the-one-we-sent"})
    assert browser_login_failing(Browser(workdir, "obs-nonce"), gw).status == 502
    rogue.control(id_token_claims={}, signing_kid="k2", id_token_header={"kid": "k1"})
    assert browser_login_failing(Browser(workdir, "obs-sig"), gw).status == 502
    rogue.control(signing_kid="k1", id_token_header={})
    expected = {"login_started": 3, "login_failed.reason.login_cookie_missing": 1,
                "login_failed.reason.state_mismatch": 1, "login_failed.reason.id_token_nonce_mismatch": 1,
                "login_failed.reason.id_token_bad_signature": 1}
    assert wait_counts(gw, before, expected) == expected
    before = counters(gw)

    # A refresh, then a refresh the provider refuses (invalid_grant ends that session).
    rogue.control(access_token_ttl=5)
    bob = Browser(workdir, "obs-bob")
    logged_in(bob, gw, "/")
    carol = Browser(workdir, "obs-carol")
    logged_in(carol, gw, "/")
    time.sleep(3.5)
    assert bob.get(gw.url("/")).status == 200
    rogue.control(refresh_status=400, token_error="invalid_grant")
    r = carol.get(gw.url("/"))
    assert r.status in (302, 401), r
    rogue.control(refresh_status=None, token_error=None, access_token_ttl=3600)
    expected = {"login_started": 2 + (1 if r.status == 302 else 0), "login_succeeded": 2, "sessions_created": 2,
                "session_refreshed": 1, "refresh_failed.reason.invalid_grant": 1}
    assert wait_counts(gw, before, expected) == expected
    before = counters(gw)

    # Authorization denied, a logout, back-channel logouts (accepted, replayed, with a nonce).
    assert alice.get(gw.url("/admin/panel")).status == 403
    assert alice.get(gw.url("/oauth2/logout")).status == 302
    dave = Browser(workdir, "obs-dave")
    rogue.control(sub="dave")
    logged_in(dave, gw, "/")
    rogue.control(sub="alice")
    api = Browser(workdir, "obs-api")
    token = logout_token(rogue, sub="dave")
    assert post_logout_token(api, gw, token).status == 200
    assert post_logout_token(api, gw, token).status == 400
    assert post_logout_token(api, gw, logout_token(rogue, sub="dave", nonce="n")).status == 400
    expected = {"access_denied": 1, "logout": 1, "login_started": 1, "login_succeeded": 1, "sessions_created": 1,
                "backchannel_logout": 1, "backchannel_logout_sessions_ended": 1,
                "backchannel_logout_rejected.reason.replayed": 1,
                "backchannel_logout_rejected.reason.nonce_present": 1}
    assert wait_counts(gw, before, expected) == expected
    before = counters(gw)

    # Bearer tokens over many connections (curl opens one per request), so both workers count.
    good = access_jwt(rogue)
    for _ in range(12):
        assert bearer(api, gw, good).status == 200
    assert bearer(api, gw, access_jwt(rogue, iat=int(time.time()) - 900, exp=int(time.time()) - 600)).status == 401
    assert bearer(api, gw, access_jwt(rogue, aud="https://another.api/")).status == 401
    assert bearer(api, gw, "opaque-and-unknown").status == 401  # introspection: not active
    assert bearer(api, gw, good, path="/admin/x").status == 403
    expected = {"bearer_accepted": 13, "bearer_rejected.reason.expired": 1,
                "bearer_rejected.reason.wrong_audience": 1, "bearer_rejected.reason.inactive": 1,
                "access_denied": 1}
    assert wait_counts(gw, before, expected) == expected
    per_worker = worker_connections(gw)
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker), \
        f"both workers must have served connections: {per_worker}"

    # The same counters in Prometheus, the reason as a label (stats_tags in envoy.yaml).
    text = prometheus(gw)
    final = counters(gw)
    for name, value in final.items():
        family, _, reason = name.partition(".reason.")
        got = prometheus_value(text, "oidc_filter_" + family, reason or None)
        assert got == value, f"{name}: /stats {value}, /stats/prometheus {got}"
    assert prometheus_value(text, "oidc_filter_login_failed", "id_token_nonce_mismatch") == 1
    assert prometheus_value(text, "oidc_filter_bearer_accepted") == 13
    assert "# TYPE oidc_filter_login_failed counter" in text
    unextracted = [line for line in text.splitlines() if "oidc_filter" in line and "_reason_" in line]
    assert not unextracted, f"a reason left in a metric name: {unextracted[:3]}"


def test_decision_log_lines_carry_the_reason_and_request_id(rogue, gateway, workdir):
    gw = gateway(_idp=rogue, **CONFIG)
    b = Browser(workdir, "obs-log")
    request_id = str(uuid.uuid4())
    r = b.get(gw.url("/oauth2/callback?state=forged&code=x"), headers={"x-request-id": request_id})
    assert r.status == 400
    logged_in(b, gw, "/")
    assert b.get(gw.url("/admin/x")).status == 403

    def logged(pattern):
        return re.search(pattern, gw.log(), re.M)

    wait_until(lambda: logged(r"event=access_denied"), 10, what="the access_denied log line")
    line = logged(rf"\[warning\]\[wasm\].*oidc-filter: event=login_failed reason=login_cookie_missing "
                  rf"request_id={request_id} detail=\"[^\"]+\"$")
    assert line, gw.log()[-3000:]
    assert logged(r"\[info\]\[wasm\].*oidc-filter: event=login_succeeded request_id=[0-9a-f-]{36} ")
    assert logged(r"\[info\]\[wasm\].*oidc-filter: event=access_denied request_id=[0-9a-f-]{36} ")


def test_the_filter_logs_nothing_below_its_level_whatever_envoys_level(rogue, gateway, workdir):
    gw = gateway(_idp=rogue, _envoy_args=["--component-log-level", "wasm:trace"], log_level="warn")
    b = Browser(workdir, "obs-level")
    logged_in(b, gw, "/")
    assert b.get(gw.url("/oauth2/callback?state=forged&code=x")).status == 400
    wait_until(lambda: "event=login_failed" in gw.log(), 10, what="the warning line")
    log = gw.log()
    assert "[trace][wasm]" in log, "Envoy's wasm logger runs at trace"
    assert "event=login_succeeded" not in log and "event=login_started" not in log, \
        "info lines of the filter were written below its log_level"
    assert "identity provider metadata and keys loaded" not in log
