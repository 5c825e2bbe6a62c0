"""Hardening of the session store (issue 9, items 14-17): first writes to shared data under
concurrency, revocation at capacity, logout revoking cookie sessions and refresh tokens, and
a flood of forged callbacks."""

from __future__ import annotations

import http.client
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from harness import callback_url, logged_in


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
