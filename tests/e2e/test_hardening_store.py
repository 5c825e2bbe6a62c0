"""Hardening of the session store (issue 9, items 14-17): first writes to shared data under
concurrency, revocation at capacity, logout revoking cookie sessions and refresh tokens, and
a flood of forged callbacks."""

from __future__ import annotations

import base64
import http.client
import secrets
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from harness import callback_url, logged_in, wait_until


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
    gw = gateway(_concurrency=4, session={"max_sessions": 32})
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
    gw = gateway(_concurrency=4)
    b = browser("replay")
    url = callback_url(b, gw, "/")
    cookies = login_cookies(b)
    before = idp.token_requests("authorization_code")

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: raw_get(gw, target_of(url), cookies), range(24)))
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
