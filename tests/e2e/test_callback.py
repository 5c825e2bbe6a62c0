"""The callback endpoint refuses everything but the one valid answer to its own login."""

import time
import urllib.parse

import pytest

from harness import absolute, callback_url, idp_login, query_params, start_login

SESSION_COOKIE = "__Host-oidc-session"


def assert_no_session(browser, response):
    c = response.set_cookie(SESSION_COOKIE)
    assert c is None or c.expired or not c.value, f"a session cookie was set: {c.raw}"
    assert browser.cookie(SESSION_COOKIE) is None, "the browser holds a session cookie"


def with_param(url: str, **changes) -> str:
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    q.update(changes)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))


def flip(s: str) -> str:
    return ("B" if s[0] == "A" else "A") + s[1:]


def is_html(r) -> bool:
    return "text/html" in (r.header("content-type") or "")


def test_tampered_state_is_rejected(gw, idp, browser):
    b = browser()
    url = callback_url(b, gw, "/")
    before = idp.token_requests("authorization_code")
    r = b.get(with_param(url, state=flip(query_params(url)["state"])))
    assert r.status == 400, r
    assert is_html(r), r
    assert_no_session(b, r)
    assert idp.token_requests("authorization_code") == before, "the code was redeemed for a forged state"


def test_callback_without_login_cookie_is_rejected(gw, idp, browser):
    url = callback_url(browser("victim"), gw, "/")
    attacker = browser("attacker")
    before = idp.token_requests("authorization_code")
    r = attacker.get(url)
    assert r.status == 400, r
    assert_no_session(attacker, r)
    assert idp.token_requests("authorization_code") == before


def test_callback_without_code_or_state_is_rejected(gw, browser):
    b = browser()
    start_login(b, gw, "/")
    for query in ("", "?code=abc", "?state=abc", "?code=&state="):
        r = b.get(gw.url("/oauth2/callback" + query))
        assert r.status == 400, (query, r)
        assert_no_session(b, r)


def test_replayed_callback_is_rejected_and_code_not_redeemed_again(gw, idp, browser):
    b = browser()
    url = callback_url(b, gw, "/")
    before = idp.token_requests("authorization_code")
    ok = b.get(url)
    assert ok.status == 302, ok
    assert idp.token_requests("authorization_code") == before + 1

    replay = b.get(url)
    assert replay.status == 400, replay
    assert replay.set_cookie(SESSION_COOKIE) is None or replay.set_cookie(SESSION_COOKIE).expired
    # A replay from another browser (the code leaked through a log or a referrer) fails too.
    other = browser("other")
    r = other.get(url)
    assert r.status == 400, r
    assert_no_session(other, r)
    assert idp.token_requests("authorization_code") == before + 1, "the code was sent to the IdP again"


def test_idp_error_shows_an_error_page_without_session(gw, browser):
    """The user cancels at the IdP (devInteractions' abort): the IdP redirects back with
    error=access_denied and the valid state."""
    b = browser()
    first, q = start_login(b, gw, "/")
    r = b.get(first.location)
    assert r.status == 303 and r.location.startswith("/interaction/"), r
    aborted = b.get(absolute(r.url, r.location) + "/abort")
    assert aborted.status == 303, aborted
    resumed = b.get(absolute(aborted.url, aborted.location))  # /auth/UID, then back to the gateway
    assert resumed.status == 303, resumed
    cb_url = absolute(resumed.url, resumed.location)
    assert cb_url.startswith(gw.url("/oauth2/callback?")), cb_url
    assert query_params(cb_url)["error"] == "access_denied"
    assert query_params(cb_url)["state"] == q["state"]

    cb = b.get(cb_url)
    assert 400 <= cb.status < 600, cb
    assert is_html(cb), cb
    assert "access_denied" in cb.text
    assert_no_session(b, cb)


def test_idp_error_markup_is_escaped(gw, browser):
    """error_description is attacker-controlled: it must not be echoed as markup."""
    b = browser()
    _, q = start_login(b, gw, "/")
    url = gw.url("/oauth2/callback?" + urllib.parse.urlencode({
        "error": "access_denied", "error_description": "<script>alert(1)</script>", "state": q["state"]}))
    cb = b.get(url)
    assert 400 <= cb.status < 600, cb
    assert "<script>alert(1)</script>" not in cb.text
    assert_no_session(b, cb)


@pytest.mark.parametrize("failure", ["killed", "hung"])
def test_idp_down_at_token_exchange_gives_502_quickly(failure, gateway, idp_factory, browser):
    provider = idp_factory()
    gw = gateway(_idp=provider, callout_timeout_ms=2000)
    b = browser()
    url = callback_url(b, gw, "/")
    if failure == "killed":
        provider.kill()
    else:
        provider.pause()
    try:
        t0 = time.monotonic()
        r = b.get(url, max_time=10)
        elapsed = time.monotonic() - t0
    finally:
        if failure == "hung":
            provider.resume()
    assert r.status == 502, r
    assert is_html(r), r
    assert elapsed < 6, f"the callback took {elapsed:.1f}s with a 2 s callout timeout"
    assert_no_session(b, r)


@pytest.mark.parametrize("iss", ["http://evil.example", None], ids=["foreign-iss", "missing-iss"])
def test_callback_iss_must_be_the_issuer(iss, gw, idp, browser):
    """RFC 9207 (the IdP advertises authorization_response_iss_parameter_supported): a response
    naming another issuer, or none, is a mix-up and the code is not redeemed."""
    b = browser()
    url = callback_url(b, gw, "/")
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    assert q["iss"] == idp.issuer
    if iss is None:
        del q["iss"]
    else:
        q["iss"] = iss
    before = idp.token_requests("authorization_code")
    r = b.get(urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q))))
    assert r.status == 400, r
    assert_no_session(b, r)
    assert idp.token_requests("authorization_code") == before
