"""Hostile input: forged cookies and headers, open redirects, bytes that are not UTF-8."""

import urllib.parse

import pytest

from harness import (
    absolute,
    idp_login,
    is_same_origin_redirect,
    logged_in,
    start_login,
)

SESSION_COOKIE = "__Host-oidc-session"
SPOOFED = [
    ("X-Auth-Request-User", "mallory"),
    ("X-Auth-Request-Email", "mallory@evil.example"),
    ("Authorization", "Bearer forged"),
]


def assert_redirects_to_idp(gw, r):
    assert r.status == 302, r
    assert r.location.startswith(f"{gw.idp.issuer}/auth?"), r.location


def test_tampered_session_cookie_means_no_session(gw, browser):
    b = browser()
    logged_in(b, gw, "/")
    value = b.cookie(SESSION_COOKIE).value
    assert b.get(gw.url("/")).status == 200
    for forged in (value[:-1] + ("A" if value[-1] != "A" else "B"), value[:-4], value + "x", ""):
        b.set_cookie(SESSION_COOKIE, forged, secure=True)
        assert_redirects_to_idp(gw, b.get(gw.url("/")))


def test_unknown_session_cookie_means_no_session(gw, browser):
    b = browser()
    logged_in(b, gw, "/")
    value = b.cookie(SESSION_COOKIE).value
    stranger = browser("stranger")
    # Same shape as a real cookie, other content.
    stranger.set_cookie(SESSION_COOKIE, "".join("A" if ch != "A" else "B" for ch in value), secure=True)
    assert_redirects_to_idp(gw, stranger.get(gw.url("/")))
    stranger.set_cookie(SESSION_COOKIE, "not-a-session", secure=True)
    assert_redirects_to_idp(gw, stranger.get(gw.url("/")))


def test_spoofed_identity_headers_without_session_do_not_reach_upstream(gw, browser):
    r = browser().get(gw.url("/"), headers=SPOOFED)
    assert_redirects_to_idp(gw, r)
    assert b"mallory" not in r.body and b"forged" not in r.body


def test_spoofed_identity_headers_with_session_are_replaced(gw, browser):
    b = browser()
    logged_in(b, gw, "/")
    genuine = b.get(gw.url("/")).json()["headers"]
    r = b.get(gw.url("/"), headers=SPOOFED + [("x-auth-request-user", "mallory2")])
    assert r.status == 200, r
    h = r.json()["headers"]
    assert h["x-auth-request-user"] == "alice"
    assert h["x-auth-request-email"] == "alice@example.test"
    assert h["authorization"] == genuine["authorization"]
    assert "forged" not in h["authorization"]


@pytest.mark.parametrize("start", ["//evil.example/x", "/\\evil.example", "/%2F%2Fevil.example",
                                   "/\\/evil.example/", "/%5Cevil.example"])
def test_login_never_redirects_off_origin(start, gw, browser):
    b = browser()
    first = b.get(gw.url(start), path_as_is=True)
    assert_redirects_to_idp(gw, first)
    back = idp_login(b, first.location)
    cb = b.get(absolute(back.url, back.location))
    assert cb.status == 302, cb
    assert is_same_origin_redirect(gw, cb.location), f"{start!r} led to Location {cb.location!r}"
    # Not even after one round of percent-decoding (as some upstreams do) may it leave.
    loc = cb.location[len(gw.url("")):] if cb.location.startswith(gw.url("/")) else cb.location
    decoded = urllib.parse.unquote(loc).replace("\\", "/")
    assert decoded.startswith("/") and not decoded.startswith("//"), f"{start!r} led to Location {cb.location!r}"


def test_non_utf8_cookie_header_does_not_break_the_filter(gateway, browser):
    gw = gateway()
    b = browser()
    logged_in(b, gw, "/")
    for _ in range(6):  # new connections, spread over both workers
        r = browser("raw").get(gw.url("/"), headers=[(b"Cookie", b"a=\xff\xfe; __Host-oidc-session=\xc3\x28")],
                               use_jar=False)
        assert r.status == 302, r
        mixed = b.get(gw.url("/"), headers=[(b"Cookie", b"junk=\xff\xfe")])
        assert mixed.status in (200, 302), mixed
    for _ in range(6):
        ok = b.get(gw.url("/after"))
        assert ok.status == 200, ok
        assert ok.json()["headers"]["x-auth-request-user"] == "alice"


def test_header_values_with_tabs_and_long_cookies_get_normal_answers(gw, browser):
    b = browser()
    logged_in(b, gw, "/")
    r = b.get(gw.url("/"), headers=[("Cookie", "tab=a\tb"), ("X-Auth-Request-User", "\tmallory")])
    assert r.status == 200, r
    assert r.json()["headers"]["x-auth-request-user"] == "alice"
    big = "; ".join(f"c{i}={'v' * 100}" for i in range(100))  # ~10 KB of other cookies
    r = b.get(gw.url("/"), headers=[("Cookie", big)])
    assert r.status == 200, r
    assert r.json()["headers"]["x-auth-request-user"] == "alice"
    r = browser("anon").get(gw.url("/"), headers=[("Cookie", big)], use_jar=False)
    assert_redirects_to_idp(gw, r)


def test_login_cookie_from_another_login_is_not_accepted(gw, browser):
    """Login CSRF: an attacker's callback URL (their own code and state) fails in the victim's
    browser, which holds a login cookie of its own."""
    attacker, victim = browser("attacker"), browser("victim")
    first, _ = start_login(attacker, gw, "/")
    back = idp_login(attacker, first.location, "mallory")
    attacker_callback = absolute(back.url, back.location)
    start_login(victim, gw, "/")
    r = victim.get(attacker_callback)
    assert r.status == 400, r
    assert victim.cookie(SESSION_COOKIE) is None
