"""Hardening of the session store (issue 9, items 14-17): first writes to shared data under
concurrency, revocation at capacity, logout revoking cookie sessions and refresh tokens, and
a flood of forged callbacks."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from harness import CLIENT_ID, REPO, callback_url, logged_in, wait_until


def raw_get(gw, target: str, cookies: dict[str, str], timeout: float = 20.0):
    """One GET over its own connection (threads share nothing); returns (status, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    try:
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request("GET", target, headers={"Accept": "text/html", "Cookie": cookie})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheaders()
    finally:
        conn.close()


def set_cookie_value(headers, name: str) -> str | None:
    for k, v in headers:
        if k.lower() == "set-cookie" and v.startswith(name + "="):
            value = v.split(";", 1)[0].split("=", 1)[1]
            return value or None
    return None


def target_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


def login_cookies(b) -> dict[str, str]:
    return {c.name: c.value for c in b.cookies() if "-login-" in c.name}


def collect_callbacks(b, gw, n: int) -> tuple[list[str], dict[str, str]]:
    """n callback URLs (logged in at the IdP, not yet visited) and their login cookies. The
    cookies leave the jar as they come: the IdP shares the host and would get them all."""
    urls, cookies = [], {}
    for i in range(n):
        urls.append(callback_url(b, gw, f"/p{i}"))
        for name, value in login_cookies(b).items():
            cookies[name] = value
            b.remove_cookie(name)
    return urls, cookies


SESSION_COOKIE = "__Host-oidc-session"


# ------------------------------------------------------------------------------------------
# item 14: first writes right after a start


def test_parallel_first_logins_after_a_start_all_keep_their_session(gateway, browser):
    """Right after Envoy starts, shared data is empty: every bucket, index and ledger key is
    written for the first time by logins racing on four workers. None may be lost."""
    gw = gateway(_concurrency=8, session={"max_sessions": 64})
    b = browser("parallel")
    urls, cookies = collect_callbacks(b, gw, 40)
    assert len(cookies) == 40

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda u: raw_get(gw, target_of(u), cookies), urls))
    assert [status for status, _ in answers] == [302] * 40, answers
    sessions = [set_cookie_value(headers, SESSION_COOKIE) for _, headers in answers]
    assert all(sessions), answers

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda s: raw_get(gw, "/", {SESSION_COOKIE: s})[0], sessions))
    assert statuses == [200] * 40, f"sessions lost: {statuses.count(302)} of 40"


def test_a_state_replayed_in_parallel_after_a_start_is_accepted_once(gateway, browser, idp):
    gw = gateway(_concurrency=8)
    b = browser("replay")
    url = callback_url(b, gw, "/")
    cookies = login_cookies(b)
    before = idp.token_requests("authorization_code")

    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda _: raw_get(gw, target_of(url), cookies), range(48)))
    statuses = [status for status, _ in answers]
    assert statuses.count(302) == 1, statuses
    assert idp.token_requests("authorization_code") == before + 1, "the state passed the ledger twice"


# ------------------------------------------------------------------------------------------
# item 16: logout revokes


def cookie_keys_config(key: str, **session) -> dict:
    return {"session": {"store": "cookie", **session}, "cookie": {"keys": [key]}}


def session_cookies(b) -> dict[str, str]:
    return {c.name: c.value for c in b.cookies() if c.name.startswith(SESSION_COOKIE)}


def copy_of(make, cookies: dict[str, str]):
    other = make("copy")
    for name, value in cookies.items():
        other.set_cookie(name, value, secure=True)
    return other


def test_logout_of_a_cookie_session_denies_its_copy_and_revokes_its_refresh_token(
        gateway, browser, idp_factory):
    ttl = 6
    provider = idp_factory(env={"TTL_ACCESS_TOKEN": str(ttl)})
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    here = gateway(_idp=provider, **cookie_keys_config(key, refresh_margin_seconds=3))
    elsewhere = gateway(_idp=provider, **cookie_keys_config(key, refresh_margin_seconds=3))
    alice = browser("alice")
    logged_in(alice, here, "/")
    kept = session_cookies(alice)
    assert kept
    revocations = provider.stats()["revocations"]

    out = alice.get(here.url("/oauth2/logout"))
    assert out.status == 302 and out.location.startswith(f"{provider.issuer}/session/end?"), out
    assert provider.stats()["revocations"] == revocations + 1, "the refresh token was not revoked"

    r = copy_of(browser, kept).get(here.url("/"))
    assert r.status == 302 and r.location.startswith(f"{provider.issuer}/auth?"), \
        f"a copy of the logged-out cookie still works on the gateway that logged it out: {r!r}"

    # Another replica does not know of the logout: the copy works there until its access
    # token needs a refresh, which the provider now refuses.
    copy = copy_of(browser, kept)
    refused_before = provider.stats()["token_errors"].get("refresh_token", 0)

    def ended():
        r = copy.get(elsewhere.url("/"))
        return r if r.status == 302 else None

    r = wait_until(ended, ttl + 6, interval=0.5, what="the revoked refresh token to end the copy elsewhere")
    assert r.location.startswith(f"{provider.issuer}/auth?"), r
    assert provider.stats()["token_errors"].get("refresh_token", 0) > refused_before


def test_logout_of_a_shared_data_session_revokes_its_refresh_token(gateway, browser, idp_factory):
    provider = idp_factory()
    gw = gateway(_idp=provider)
    alice = browser("alice")
    logged_in(alice, gw, "/")
    kept = session_cookies(alice)
    revocations = provider.stats()["revocations"]

    out = alice.get(gw.url("/oauth2/logout"))
    assert out.status == 302 and out.location.startswith(f"{provider.issuer}/session/end?"), out
    assert provider.stats()["revocations"] == revocations + 1, "the refresh token was not revoked"
    r = copy_of(browser, kept).get(gw.url("/"))
    assert r.status == 302 and r.location.startswith(f"{provider.issuer}/auth?"), r


# ------------------------------------------------------------------------------------------
# item 17: a flood of forged callbacks


def test_genuine_logins_complete_during_a_flood_of_forged_callbacks(gateway, browser, idp_factory):
    """Anyone can mint login cookies with GET / and send each, with its state and a made-up
    code, to the callback: every one is a first use. The ledger stays a fixed set of small
    keys (bounded in the unit tests and bench/callback_flood); here genuine logins complete
    meanwhile, and a forged callback sent twice is refused the second time."""
    provider = idp_factory()
    gw = gateway(_idp=provider, _concurrency=4)
    stop = threading.Event()
    answers: list[int] = []
    replays: list[int] = []

    def flood():
        while not stop.is_set():
            status, headers = raw_get(gw, "/", {})
            assert status == 302, status
            state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
                dict((k.lower(), v) for k, v in headers)["location"]).query))["state"]
            cookie = next(v.split(";", 1)[0] for k, v in headers
                          if k.lower() == "set-cookie" and "-login-" in v)
            name, _, value = cookie.partition("=")
            target = f"/oauth2/callback?code=forged&state={state}&iss={urllib.parse.quote(provider.issuer)}"
            answers.append(raw_get(gw, target, {name: value})[0])
            if len(answers) % 50 == 0:
                replays.append(raw_get(gw, target, {name: value})[0])

    threads = [threading.Thread(target=flood) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        users = []
        for i in range(4):
            b = browser(f"genuine{i}")
            logged_in(b, gw, "/")
            users.append(b)
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(answers) > 300, f"the flood was too thin to mean anything: {len(answers)}"
    assert set(answers) == {502}, f"forged callbacks are refused by the provider: {set(answers)}"
    assert replays and set(replays) == {400}, f"a forged callback replayed is refused at once: {replays}"
    for b in users:
        r = b.get(gw.url("/"))
        assert r.status == 200, r


# ------------------------------------------------------------------------------------------
# item 15: revocation at capacity

BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
SIGN_JWT = REPO / "tests" / "idp" / "sign-jwt.mjs"


def logout_tokens(idp, subs: list[str]) -> list[str]:
    """Logout tokens signed with the IdP's own key, one per `sub` (no `sid`: all of its sessions)."""
    now = int(time.time())
    specs = [{"key": "idp", "header": {"typ": "logout+jwt"},
              "claims": {"iss": idp.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
                         "jti": secrets.token_hex(12), "sub": sub, "events": {LOGOUT_EVENT: {}}}}
             for sub in subs]
    proc = subprocess.run(["node", str(SIGN_JWT)], input=json.dumps(specs).encode(),
                          capture_output=True, timeout=60, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def post_logout_token(gw, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", BACKCHANNEL_PATH, body=f"logout_token={token}",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_more_sessions_of_one_user_than_the_index_holds_all_end_at_a_back_channel_logout(
        gateway, browser):
    """Past the per-subject cap (64 by default) the oldest session is evicted, not merely
    unlinked from the index: no session stays out of a back-channel logout's reach."""
    gw = gateway(backchannel_logout_path=BACKCHANNEL_PATH)
    b = browser("many")
    sessions = []
    for i in range(66):
        r = b.get(callback_url(b, gw, "/"))
        assert r.status == 302, r
        sessions.append(set_cookie_value(r.headers, SESSION_COOKIE))
        b.remove_cookie(SESSION_COOKIE)
        for name in login_cookies(b):
            b.remove_cookie(name)
    assert all(sessions)
    working = [raw_get(gw, "/", {SESSION_COOKIE: s})[0] for s in sessions]
    assert working[-64:] == [200] * 64, "the newest sessions up to the cap are kept"

    [token] = logout_tokens(gw.idp, ["alice"])
    assert post_logout_token(gw, token) == 200
    after = [raw_get(gw, "/", {SESSION_COOKIE: s})[0] for s in sessions]
    assert after == [302] * 66, f"sessions a back-channel logout could not end: {after.count(200)}"


def test_a_full_deny_list_refuses_older_cookie_sessions_instead_of_forgetting_a_logout(
        gateway, browser):
    """The cookie store's deny-list holds 256 logouts; the 257th must not bring the first
    logged-out cookie back: older sessions are refused below a watermark instead."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    gw = gateway(backchannel_logout_path=BACKCHANNEL_PATH, **cookie_keys_config(key))
    alice = browser("alice")
    logged_in(alice, gw, "/")
    kept = session_cookies(alice)
    assert alice.get(gw.url("/")).status == 200

    tokens = logout_tokens(gw.idp, ["alice"] + [f"user{i}" for i in range(256)])
    assert post_logout_token(gw, tokens[0]) == 200
    r = copy_of(browser, kept).get(gw.url("/"))
    assert r.status == 302, "the logged-out cookie is refused"
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda t: post_logout_token(gw, t), tokens[1:]))
    assert statuses == [200] * 256

    r = copy_of(browser, kept).get(gw.url("/"))
    assert r.status == 302 and r.location.startswith(f"{gw.idp.issuer}/auth?"), \
        f"a logged-out cookie came back when the deny-list filled up: {r!r}"
    time.sleep(1.1)  # sessions are timed in whole seconds
    bob = browser("bob")
    logged_in(bob, gw, "/", user="bob")
    assert bob.get(gw.url("/")).status == 200, "sessions created after the watermark work"
