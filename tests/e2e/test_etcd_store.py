"""The etcd session store (session.store "etcd") with a real 3-member etcd cluster on
loopback and two Envoy processes in front of the same upstream: sessions are shared by the
fleet, a back-channel logout at one replica ends the session at all, a refresh happens once
across replicas, and the filter fails closed when etcd cannot answer.
"""

from __future__ import annotations

import threading
import time

import pytest

from etcd_harness import EtcdCluster, b64, etcd_gateway
from harness import logged_in, wait_until

SESSION_COOKIE = "__Host-oidc-session"
BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
PREFIX = "oidc-test/"


@pytest.fixture(scope="module")
def etcd(workdir):
    cluster = EtcdCluster(workdir, members=3)
    try:
        cluster.start()
    except Exception:
        print(cluster.log())
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def session_cookie(b) -> str:
    return f"{SESSION_COOKIE}={b.cookie(SESSION_COOKIE).value}"


def user_at(b, gw, cookie: str, path: str = "/", **kw):
    return b.get(gw.url(path), use_jar=False, headers={"Cookie": cookie, **kw.pop("headers", {})}, **kw)


def upstream_user(r) -> str:
    assert r.status == 200, r
    return r.json()["headers"]["x-auth-request-user"]


def is_login_redirect(r, idp) -> bool:
    return r.status == 302 and (r.location or "").startswith(f"{idp.issuer}/auth?")


def test_a_login_through_one_gateway_is_valid_at_the_other(etcd, gateway, browser):
    a = etcd_gateway(gateway, etcd)
    b_gw = etcd_gateway(gateway, etcd)
    b = browser()
    logged_in(b, a, "/", "alice")
    cookie = session_cookie(b)
    assert upstream_user(user_at(b, a, cookie)) == "alice"
    assert upstream_user(user_at(b, b_gw, cookie)) == "alice"
    created = "wasmcustom.oidc_filter.sessions_created"
    assert a.stats(created).get(created) == 1
    # The session lives in etcd under the prefix, with its sub index link.
    keys = etcd.keys(PREFIX)
    assert any(k.startswith(PREFIX + "s/") for k in keys), keys
    assert any(k.startswith(PREFIX + "x/") for k in keys), keys
    # An unknown cookie is not a session anywhere.
    forged = f"{SESSION_COOKIE}={'A' * 43}"
    assert is_login_redirect(user_at(b, b_gw, forged), gateway.idp)


def access_token(r) -> str:
    assert r.status == 200, r
    return r.json()["headers"]["authorization"].removeprefix("Bearer ")


def test_a_backchannel_logout_at_one_gateway_ends_the_session_at_the_other(etcd, idp_factory, gateway,
                                                                           port_pool, browser):
    from test_refresh_and_backchannel import end_idp_session

    b_port = port_pool.take()
    provider = idp_factory(backchannel_logout_uri=f"http://127.0.0.1:{b_port}{BACKCHANNEL_PATH}")
    a = etcd_gateway(gateway, etcd, _idp=provider, backchannel_logout_path=BACKCHANNEL_PATH)
    b_gw = etcd_gateway(gateway, etcd, _idp=provider, _port=b_port, backchannel_logout_path=BACKCHANNEL_PATH)
    alice, bob = browser("alice"), browser("bob")
    logged_in(alice, a, "/", "alice")
    logged_in(bob, a, "/", "bob")
    alice_cookie, bob_cookie = session_cookie(alice), session_cookie(bob)
    assert upstream_user(user_at(alice, a, alice_cookie)) == "alice"

    end_idp_session(alice, provider)  # the IdP tells gateway B, and only B
    assert provider.stats()["backchannel"] == {"success": 1, "error": 0}, provider.stats()

    assert is_login_redirect(user_at(alice, a, alice_cookie), provider)
    assert is_login_redirect(user_at(alice, b_gw, alice_cookie), provider)
    assert upstream_user(user_at(bob, a, bob_cookie)) == "bob"
    assert upstream_user(user_at(bob, b_gw, bob_cookie)) == "bob"


def test_concurrent_requests_at_two_gateways_refresh_a_rotating_token_once(etcd, idp_factory, gateway, browser):
    # Access tokens live 16 s; the margin (at most half the lifetime: 8 s) makes both
    # gateways want to refresh from 8 s on, while the old token is still valid.
    provider = idp_factory(env={"TTL_ACCESS_TOKEN": "16", "ROTATE_REFRESH_TOKEN": "1"})
    a = etcd_gateway(gateway, etcd, _idp=provider, session={"refresh_margin_seconds": 12})
    b_gw = etcd_gateway(gateway, etcd, _idp=provider, session={"refresh_margin_seconds": 12})
    b = browser()
    logged_in(b, a, "/", "alice")
    t0 = time.monotonic()
    cookie = session_cookie(b)
    first = access_token(user_at(b, a, cookie))
    time.sleep(max(0.0, t0 + 9 - time.monotonic()))

    results: list = [None] * 16
    start = threading.Barrier(len(results))

    def one(i):
        gw = (a, b_gw)[i % 2]
        client = browser(f"burst{i}")
        start.wait()
        results[i] = user_at(client, gw, cookie, f"/burst/{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None for r in results), "a request of the burst did not finish"
    # The old token is still valid: nobody waits, everyone reaches the upstream.
    tokens = {access_token(r) for r in results}
    assert provider.token_requests("refresh_token") == 1, provider.stats()
    after_a = access_token(user_at(b, a, cookie))
    after_b = access_token(user_at(b, b_gw, cookie))
    assert after_a == after_b != first
    assert tokens <= {first, after_a}, tokens
    assert provider.token_requests("refresh_token") == 1, provider.stats()


def leader(etcd) -> int:
    for i, p in enumerate(etcd.processes):
        if p is None or not p.alive():
            continue
        status, answer = etcd.call(i, "/v3/maintenance/status", {})
        if status == 200 and answer.get("leader") == answer.get("header", {}).get("member_id"):
            return i
    raise AssertionError("no etcd leader")


def test_one_member_down_changes_nothing_a_majority_down_fails_closed_and_service_resumes(
        workdir, gateway, browser):
    etcd = EtcdCluster(workdir, members=3).start()
    try:
        # The timeout covers an election (election timeout 2 s, up to twice that with its
        # random spread, more on a loaded machine), so losing the leader is only a pause.
        a = etcd_gateway(gateway, etcd, etcd={"timeout_ms": 8000})
        b_gw = etcd_gateway(gateway, etcd, etcd={"timeout_ms": 8000})
        b = browser()
        logged_in(b, a, "/", "alice")
        cookie = session_cookie(b)
        assert upstream_user(user_at(b, b_gw, cookie)) == "alice"

        first = leader(etcd)
        etcd.kill(first)
        for n, gw in enumerate((a, b_gw) * 4):
            r = user_at(b, gw, cookie)
            assert r.status == 200, f"request {n} after the leader died: {r!r}"
            assert upstream_user(r) == "alice"
        fresh = browser("fresh")
        logged_in(fresh, b_gw, "/", "bob")
        assert upstream_user(user_at(fresh, a, session_cookie(fresh))) == "bob"

        second = leader(etcd)
        etcd.kill(second)
        for gw in (a, b_gw):
            page = user_at(b, gw, cookie, headers={"Accept": "text/html"})
            assert page.status == 503, page
            assert "temporarily unavailable" in page.text
            api = user_at(b, gw, cookie, "/api/x", headers={"Accept": "application/json"})
            assert api.status == 503, api
            assert api.json()["error"] == "temporarily_unavailable"
            assert "x-auth-request-user" not in page.text and "x-auth-request-user" not in api.text
        # A login cannot complete either: its session could not be stored.
        late = browser("late")
        from harness import callback_url
        r = late.get(callback_url(late, a, "/", "carol"))
        assert r.status == 503, r
        assert late.cookie(SESSION_COOKIE) is None

        etcd.restart(first)
        etcd.restart(second)
        etcd.wait_healthy()
        for gw in (a, b_gw):
            wait_until(lambda: user_at(b, gw, cookie).status == 200, 20, what="service back")
            assert upstream_user(user_at(b, gw, cookie)) == "alice"
        assert upstream_user(user_at(fresh, a, session_cookie(fresh))) == "bob"
    finally:
        etcd.stop()


def test_authentication_to_etcd_and_again_when_the_token_expires(workdir, gateway, browser):
    # Tokens live 3 s: the filter must authenticate again once its token expired.
    etcd = EtcdCluster(workdir, members=1, extra_args=("--auth-token-ttl", "3")).start()
    try:
        etcd.enable_auth("gateway", "s3cret-pw")
        creds = {"username_env": "ETCD_USER", "password_env": "ETCD_PASSWORD"}
        gw = etcd_gateway(gateway, etcd, etcd=creds, _env={"ETCD_USER": "gateway", "ETCD_PASSWORD": "s3cret-pw"})
        wrong = etcd_gateway(gateway, etcd, etcd=creds, _env={"ETCD_USER": "gateway", "ETCD_PASSWORD": "wrong"})
        anonymous = etcd_gateway(gateway, etcd)
        b = browser()
        logged_in(b, gw, "/", "alice")
        cookie = session_cookie(b)
        assert upstream_user(user_at(b, gw, cookie)) == "alice"
        time.sleep(5)
        for _ in range(4):  # both workers, each with its own expired token
            assert upstream_user(user_at(b, gw, cookie)) == "alice"
        # Without valid credentials nothing passes.
        for other in (wrong, anonymous):
            r = user_at(b, other, cookie, headers={"Accept": "application/json"})
            assert r.status == 503, r
    finally:
        etcd.stop()


def test_the_worker_cache_keeps_a_revoked_session_at_most_its_ttl(etcd, gateway, browser):
    ttl = 3
    cached = etcd_gateway(gateway, etcd, _concurrency=1, etcd={"cache_ttl_seconds": ttl})
    uncached = etcd_gateway(gateway, etcd)
    b = browser()
    logged_in(b, cached, "/", "alice")
    cookie = session_cookie(b)
    assert upstream_user(user_at(b, cached, cookie)) == "alice"  # read from etcd, cached
    read_at = time.monotonic()
    # An operator revokes every session in etcd.
    assert etcd.delete_prefix(PREFIX + "s/") >= 1
    assert is_login_redirect(user_at(b, uncached, cookie), gateway.idp), "no cache: at once"
    if time.monotonic() < read_at + ttl - 1:
        assert upstream_user(user_at(b, cached, cookie)) == "alice", "served from the cache"
    time.sleep(max(0.0, read_at + ttl + 1.1 - time.monotonic()))
    assert is_login_redirect(user_at(b, cached, cookie), gateway.idp), "the cache entry lapsed"


def test_the_shipped_etcd_config_validates_and_matches_envoy_yaml(wasm, tmp_path):
    import os
    import subprocess

    import yaml

    from harness import ENVOY_YAML, REPO, filter_config, find_envoy

    shipped = REPO / "envoy-etcd.yaml"
    etcd_cfg = yaml.safe_load(shipped.read_text())
    base = filter_config(yaml.safe_load(ENVOY_YAML.read_text()))
    mine = filter_config(etcd_cfg)
    assert mine["session"]["store"] == "etcd"
    assert mine["session"]["etcd"]["cluster"] == ["etcd0", "etcd1", "etcd2"]
    assert {c["name"] for c in etcd_cfg["static_resources"]["clusters"]} >= {"etcd0", "etcd1", "etcd2"}
    for key in set(base) | set(mine):
        if key not in ("session", "redirect_uri"):
            assert mine.get(key) == base.get(key), key
    text = shipped.read_text()
    if os.environ.get("OIDC_FILTER_WASM"):
        text = text.replace("target/wasm32-wasip1/release/oidc_filter.wasm", str(wasm))
    config = tmp_path / "envoy-etcd.yaml"
    config.write_text(text)
    proc = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(config), "--use-dynamic-base-id"],
                          cwd=REPO, env=dict(os.environ, OIDC_CLIENT_SECRET="x"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_etcd_answering_garbage_or_too_slowly_fails_closed_and_loses_nothing(etcd, gateway, echo, browser):
    from types import SimpleNamespace

    good = etcd_gateway(gateway, etcd)
    # "etcd" that is really the echo server: HTTP 200 with JSON that is not etcd's answer.
    impostor = SimpleNamespace(names=["m0"], client_ports=[echo.port])
    garbage = etcd_gateway(gateway, impostor)
    b = browser()
    logged_in(b, good, "/", "alice")
    cookie = session_cookie(b)
    for gw in (garbage,):
        page = user_at(b, gw, cookie, headers={"Accept": "text/html"})
        assert page.status == 503 and "temporarily unavailable" in page.text, page
        api = user_at(b, gw, cookie, "/api", headers={"Accept": "application/json"})
        assert api.status == 503 and api.json()["error"] == "temporarily_unavailable", api

    # Every member hangs (SIGSTOP): each call times out (1 s), then 503.
    for p in etcd.processes:
        p.pause()
    try:
        started = time.monotonic()
        r = user_at(b, good, cookie, headers={"Accept": "application/json"})
        assert r.status == 503, r
        assert time.monotonic() - started < 15
    finally:
        for p in etcd.processes:
            p.resume()
    etcd.wait_healthy()
    wait_until(lambda: user_at(b, good, cookie).status == 200, 20, what="service back")
    assert upstream_user(user_at(b, good, cookie)) == "alice", "the session survived"


# ----------------------------------------------------------------------------------------
# single use across the fleet

# Every replica of a fleet seals login cookies with the same keys (a login may start at
# one replica and come back to another).
FLEET_KEYS = {"keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"]}


def logout_token(idp, jti: str, **claims) -> str:
    from test_refresh_and_backchannel import LOGOUT_EVENT, sign_jwts
    from harness import CLIENT_ID

    now = int(time.time())
    body = {"iss": idp.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": jti,
            "events": {LOGOUT_EVENT: {}}, **claims}
    return sign_jwts([{"key": "idp", "header": {"typ": "logout+jwt"}, "claims": body}])[0]


def post_logout(b, gw, token: str):
    return b.post(gw.url(BACKCHANNEL_PATH), f"logout_token={token}", use_jar=False, accept_html=False,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_a_login_state_or_logout_token_used_at_one_gateway_is_refused_at_the_other(etcd, gateway, browser):
    import uuid

    from harness import callback_url

    a = etcd_gateway(gateway, etcd, cookie=FLEET_KEYS, backchannel_logout_path=BACKCHANNEL_PATH)
    b_gw = etcd_gateway(gateway, etcd, cookie=FLEET_KEYS, backchannel_logout_path=BACKCHANNEL_PATH,
                        redirect_uri=a.url("/oauth2/callback"))
    idp = gateway.idp

    # A callback (with its login cookie) completed at A, replayed at B: B must not send the
    # code to the provider again; the state was used, fleet-wide.
    b = browser()
    url = callback_url(b, a, "/", "alice")
    login_cookies = "; ".join(f"{c.name}={c.value}" for c in b.cookies() if c.name.startswith("__Host-oidc"))
    before = idp.token_requests("authorization_code")
    assert b.get(url).status == 302
    assert idp.token_requests("authorization_code") == before + 1
    replay = b.get(url.replace(a.url("/"), b_gw.url("/")), use_jar=False, headers={"Cookie": login_cookies})
    assert replay.status == 400, replay
    assert replay.set_cookie(SESSION_COOKIE) is None or replay.set_cookie(SESSION_COOKIE).expired
    assert idp.token_requests("authorization_code") == before + 1, "the code went to the provider again"

    # A logout token accepted at A and replayed at B is refused there (and ends nothing).
    token = logout_token(idp, str(uuid.uuid4()), sub="nobody-logged-in")
    assert post_logout(b, a, token).status == 200
    r = post_logout(b, b_gw, token)
    assert r.status == 400 and "replayed" in r.text, r
    # The keys are in etcd, under the prefix, with no value in clear.
    once = [k for k in etcd.keys(PREFIX + "once/")]
    assert any(k.startswith(PREFIX + "once/login/") for k in once), once
    assert any(k.startswith(PREFIX + "once/logout/") for k in once), once


def test_a_backchannel_logout_that_cannot_reach_etcd_is_refused_for_a_retry_that_then_ends_it(
        workdir, gateway, browser):
    import uuid

    etcd = EtcdCluster(workdir, members=3).start()
    try:
        a = etcd_gateway(gateway, etcd, backchannel_logout_path=BACKCHANNEL_PATH)
        b_gw = etcd_gateway(gateway, etcd, backchannel_logout_path=BACKCHANNEL_PATH)
        alice, bob = browser("alice"), browser("bob")
        logged_in(alice, a, "/", "alice")
        logged_in(bob, a, "/", "bob")
        alice_cookie, bob_cookie = session_cookie(alice), session_cookie(bob)
        assert upstream_user(user_at(alice, b_gw, alice_cookie)) == "alice"
        token = logout_token(gateway.idp, str(uuid.uuid4()), sub="alice")

        # The majority of etcd is down: the logout cannot be done, and B says so with an
        # error the provider may retry (never a 200 that drops the logout).
        down = [i for i in range(3) if i != leader(etcd)][:1] + [leader(etcd)]
        for i in down:
            etcd.kill(i)
        r = post_logout(alice, b_gw, token)
        assert r.status == 503, r
        assert r.json()["error"] == "temporarily_unavailable", r
        assert r.header("retry-after"), r

        for i in down:
            etcd.restart(i)
        etcd.wait_healthy()
        wait_until(lambda: user_at(bob, a, bob_cookie).status == 200, 20, what="service back")
        assert upstream_user(user_at(alice, a, alice_cookie)) == "alice", "nothing ended yet"

        # The provider retries the same token (at the same replica): now it ends her sessions
        # everywhere, and only hers; a third delivery is a replay.
        r = post_logout(alice, b_gw, token)
        assert r.status == 200, r
        assert is_login_redirect(user_at(alice, a, alice_cookie), gateway.idp)
        assert is_login_redirect(user_at(alice, b_gw, alice_cookie), gateway.idp)
        assert upstream_user(user_at(bob, b_gw, bob_cookie)) == "bob"
        assert post_logout(alice, a, token).status == 400
    finally:
        etcd.stop()


# ----------------------------------------------------------------------------------------
# lifetime through the lease


def record_of(etcd, key: str) -> tuple[str, int]:
    """(lease ID, mod revision) of a key, read from etcd itself."""
    status, answer = etcd.any_call("/v3/kv/range", {"key": b64(key)})
    assert status == 200 and answer.get("kvs"), (key, answer)
    kv = answer["kvs"][0]
    return kv["lease"], int(kv["mod_revision"])


def lease_ttl(etcd, lease: str) -> tuple[int, int]:
    """(seconds left, granted TTL) of a lease, as etcd tells."""
    _, answer = etcd.any_call("/v3/lease/timetolive", {"ID": lease})
    return int(answer.get("TTL", -1)), int(answer.get("grantedTTL", 0))


def test_an_idle_session_ends_by_its_lease_and_use_renews_it_at_most_once_per_interval(etcd, gateway, browser):
    prefix, idle, interval = "idle-test/", 10, 3
    opts = {"etcd": {"key_prefix": prefix, "lease_touch_interval_seconds": interval},
            "session": {"idle_timeout_seconds": idle}}
    a = etcd_gateway(gateway, etcd, **opts)
    b_gw = etcd_gateway(gateway, etcd, **opts)
    b = browser()
    logged_in(b, a, "/", "alice")
    cookie = session_cookie(b)
    [key] = etcd.keys(prefix + "s/")
    links = etcd.keys(prefix + "x/")
    assert links, "the sub/sid index"
    lease, created = record_of(etcd, key)
    assert lease_ttl(etcd, lease)[1] == idle

    # In use, at both replicas, for longer than the idle timeout: the same lease is
    # renewed (with `last_seen` written), never more often than the interval.
    started = time.monotonic()
    revisions, requests = {created}, 0
    last_renewal = started
    while time.monotonic() < started + idle + 3:
        sent = time.monotonic()
        assert upstream_user(user_at(b, (a, b_gw)[requests % 2], cookie)) == "alice"
        requests += 1
        renewed_lease, revision = record_of(etcd, key)
        assert renewed_lease == lease, "renewed, not replaced"
        if revision not in revisions:
            last_renewal = sent  # renewed during this request, so not before it was sent
        revisions.add(revision)
        time.sleep(0.4)
    last_use = time.monotonic()
    span = last_use - started
    touches = len(revisions) - 1
    # `last_seen` has a resolution of a second, so two touches are at least interval - 1 apart.
    assert 2 <= touches <= span / (interval - 1) + 1, (touches, requests, span)
    assert requests > 2 * touches, (touches, requests)
    left, granted = lease_ttl(etcd, lease)
    assert granted == idle and left >= idle - interval - 2, (left, granted)

    # Idle: etcd deletes the session and its index links by the lease, not before the
    # idle timeout after the last renewal; then no replica knows the cookie.
    time.sleep(max(0.0, last_renewal + idle - 1 - time.monotonic()))
    assert etcd.keys(prefix + "s/") == [key], "ended before the idle timeout"
    wait_until(lambda: etcd.keys(prefix + "s/") == [], idle + 15, interval=0.5, what="the lease to end")
    assert etcd.keys(prefix + "x/") == []
    assert lease_ttl(etcd, lease)[0] == -1, "the lease is gone"
    for gw in (a, b_gw):
        assert is_login_redirect(user_at(b, gw, cookie), gateway.idp)


# ----------------------------------------------------------------------------------------
# TLS to etcd


def test_sessions_are_shared_over_tls_to_etcd_and_an_untrusted_certificate_fails_closed(
        workdir, gateway, browser):
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from etcd_harness import EtcdTls

    etcd = EtcdCluster(workdir, members=3, tls=True).start()
    try:
        assert all(url.startswith("https://") for url in map(etcd.client_url, range(3)))
        a = etcd_gateway(gateway, etcd)
        b_gw = etcd_gateway(gateway, etcd)
        b = browser()
        logged_in(b, a, "/", "alice")
        cookie = session_cookie(b)
        assert upstream_user(user_at(b, a, cookie)) == "alice"
        assert upstream_user(user_at(b, b_gw, cookie)) == "alice"
        assert any(k.startswith(PREFIX + "s/") for k in etcd.keys(PREFIX)), "stored over TLS"

        # A gateway that trusts another CA refuses the members' certificate: 503, never a pass.
        other_ca = EtcdTls(Path(tempfile.mkdtemp(prefix="other-ca-", dir=workdir)))
        impostor = SimpleNamespace(names=etcd.names, client_ports=etcd.client_ports, tls=other_ca)
        untrusting = etcd_gateway(gateway, impostor)
        r = user_at(b, untrusting, cookie, headers={"Accept": "application/json"})
        assert r.status == 503 and r.json()["error"] == "temporarily_unavailable", r
    finally:
        etcd.stop()


def test_a_backchannel_logout_failing_after_its_token_was_recorded_can_still_be_retried(etcd, gateway, browser):
    """etcd fails after the logout token was recorded (a proxy in front of a member answers
    garbage, once to the index listing, once to the recording itself after passing it on):
    the filter forgets the token again (it revokes the token's own lease), so the
    provider's retry is not taken for a replay."""
    import http.server
    import threading
    import urllib.request
    import uuid
    from types import SimpleNamespace

    # What the proxy breaks: the index listing (sessions), or the answer to the
    # create-if-absent transaction (the only one with a read when it fails).
    faults = {"listing": b'"keys_only":true', "recording": b'"failure":[{"request_range"'}
    fault: list[bytes] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            broken = any(f in body for f in fault)
            if broken and fault == [faults["listing"]]:
                status, answer = 200, b'{"not":"etcd"}'
            else:
                req = urllib.request.Request(etcd.client_url(0) + self.path, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        status, answer = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, answer = e.code, e.read()
                if broken:  # applied by etcd, but the answer is lost
                    status, answer = 200, b'{"not":"etcd"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxied = SimpleNamespace(names=["m0"], client_ports=[server.server_address[1]])
        prefix = "unrecord-test/"
        gw = etcd_gateway(gateway, proxied, etcd={"key_prefix": prefix}, backchannel_logout_path=BACKCHANNEL_PATH)
        b = browser()
        logged_in(b, gw, "/", "alice")
        cookie = session_cookie(b)

        for what in ("listing", "recording"):
            token = logout_token(gateway.idp, str(uuid.uuid4()), sub="alice")
            fault[:] = [faults[what]]
            r = post_logout(b, gw, token)
            assert r.status == 503, (what, r)
            fault.clear()
            assert upstream_user(user_at(b, gw, cookie)) == "alice", f"{what}: nothing ended"
            assert etcd.keys(prefix + "once/logout/") == [], f"{what}: the token was forgotten"

        # The provider retries the last token: it ends her session.
        r = post_logout(b, gw, token)
        assert r.status == 200, r
        assert is_login_redirect(user_at(b, gw, cookie), gateway.idp)
    finally:
        server.shutdown()
        server.server_close()
