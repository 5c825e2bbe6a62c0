"""Request hardening against the real Envoy, the real test IdP and the misbehaving provider
(issue 9, items 1-6, 11 and 12): identity headers in other spellings, case in authorization
rules, tokens that are not visible ASCII, long return URLs, SameSite=Strict sessions, session
cookies on cacheable responses, and the back-channel logout's content type and token types."""

from __future__ import annotations

import copy
import html
import re
import time
import urllib.parse
import uuid

import pytest

import harness
from harness import CLIENT_ID, ENVOY_YAML, REPO, SetCookie, absolute, callback_url, idp_login, logged_in

SESSION_COOKIE = "__Host-oidc-session"
LOGIN_PREFIX = "__Host-oidc-login-"
BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def normalized(name: str) -> str:
    """A header name as CGI/WSGI/Rack/PHP upstreams read it."""
    return name.lower().replace("_", "-")


def hcm(cfg: dict) -> dict:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


# ----------------------------------------------------------------------------------------
# 1. identity headers spelled with underscores


@pytest.fixture
def envoy_forwards_underscores(monkeypatch):
    """Gateways started in this test run without the shipped `headers_with_underscores_action`,
    so what reaches the upstream shows the filter's own removal, not Envoy's."""
    original = harness.load_envoy_config

    def without_the_envoy_option():
        cfg = original()
        options = hcm(cfg).get("common_http_protocol_options", {})
        options.pop("headers_with_underscores_action", None)
        return cfg

    monkeypatch.setattr(harness, "load_envoy_config", without_the_envoy_option)


IDENTITY = {"x-auth-request-user", "x-auth-request-email", "x-auth-request-roles", "x-auth-request-claims",
            "authorization"}
SPOOFED = {
    "X_Auth_Request_User": "admin",
    "x-auth_request-email": "admin@example.test",
    "X_AUTH_REQUEST_ROLES": "admins",
    "X_Auth_Request_Claims": "eyJzdWIiOiJhZG1pbiJ9",
    "X_Harmless_Header": "kept",
}


def spoofed_identity(received: dict) -> dict:
    """Headers the upstream would read as identity headers, beyond the filter's own."""
    return {k: v for k, v in received.items() if normalized(k) in IDENTITY and k not in IDENTITY}


def test_identity_headers_in_any_spelling_never_reach_the_upstream(envoy_forwards_underscores, gateway,
                                                                   browser):
    gw = gateway(public_paths=["/health"],
                 upstream={"claim_headers": {"x-auth-request-roles": "roles"},
                           "claims_header": "x-auth-request-claims"})
    assert "headers_with_underscores_action" not in str(harness.load_envoy_config())

    # A public path: nobody is logged in, so no identity header may arrive at all.
    b = browser()
    r = b.get(gw.url("/health"), headers=SPOOFED, use_jar=False)
    assert r.status == 200, r
    received = r.json()["headers"]
    # Envoy forwards underscored names here: the filter alone removed the spoofed ones.
    assert received.get("x_harmless_header") == "kept", received
    assert not [k for k in received if normalized(k) in IDENTITY], received

    # A session of bob, whose token has no roles: the client's copy must not stand in.
    logged_in(b, gw, "/", user="bob")
    r = b.get(gw.url("/page"), headers=SPOOFED)
    assert r.status == 200, r
    received = r.json()["headers"]
    assert spoofed_identity(received) == {}, received
    assert received["x-auth-request-user"] == "bob"
    assert "x-auth-request-roles" not in received
    assert received["authorization"].startswith("Bearer ")


def test_the_shipped_configs_drop_underscored_header_names():
    cfg = harness.load_envoy_config()
    assert hcm(cfg)["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
    readme = (REPO / "README.md").read_text()
    assert "headers_with_underscores_action: DROP_HEADER" in readme
    assert ENVOY_YAML.read_text().count("headers_with_underscores_action") == 1


# ----------------------------------------------------------------------------------------
# 2. authorization rules and the case of the path


def test_authorization_rules_ignore_the_case_of_the_path(gateway, browser):
    gw = gateway(public_paths=["/health"],
                 authorization={"rules": [{"path_prefix": "/admin/", "require": {"claims": {"groups": ["admins"]}}},
                                          {"path_prefix": "/internal", "allow": False}]})
    bob = browser("bob")
    logged_in(bob, gw, "/", user="bob")  # groups: users
    for path in ["/admin/users", "/Admin/users", "/ADMIN", "/aDmIn/x?y=1", "/%41dmin/users", "/INTERNAL/x",
                 "/Internal"]:
        r = bob.get(gw.url(path))
        assert r.status == 403, f"{path}: {r!r}"
    assert bob.get(gw.url("/Administrator")).status == 200

    alice = browser("alice")
    logged_in(alice, gw, "/", user="alice")  # groups: admins, users
    r = alice.get(gw.url("/Admin/users"))
    assert r.status == 200 and r.json()["path"] == "/Admin/users", r
    assert alice.get(gw.url("/Internal")).status == 403

    # Public paths stay exact: another spelling is not public.
    anonymous = browser("anonymous")
    assert anonymous.get(gw.url("/health")).status == 200
    r = anonymous.get(gw.url("/Health"))
    assert r.status == 302 and r.location.startswith(gw.idp.issuer), r


# ----------------------------------------------------------------------------------------
# 3. tokens that are not visible ASCII


@pytest.mark.parametrize("field,value", [
    ("access_token", "at\u0001x"),
    ("access_token", "caf\u00e9"),
    ("access_token", "two words"),
    ("refresh_token", "rt\r\nx-injected: 1"),
])
def test_tokens_that_are_not_visible_ascii_are_refused_at_the_callback(rogue, gateway, browser, field, value):
    gw = gateway(_idp=rogue)
    rogue.control(token_response={field: value})
    b = browser()
    r = b.get(callback_url(b, gw, "/page"))
    assert r.status == 502, r
    assert f'"{field}" has characters other than visible ASCII' in html.unescape(r.text), r.text
    assert r.set_cookie(SESSION_COOKIE) is None, r
    assert rogue.token_requests() == 1
    # Nothing was kept: the next request logs in again.
    r = b.get(gw.url("/page"))
    assert r.status == 302 and r.location.startswith(rogue.issuer), r


def test_tokens_that_are_not_visible_ascii_are_refused_at_refresh(rogue, gateway, browser):
    # Access tokens live 10 s; with a 6 s margin the filter refreshes from 4 s on (5 s if it
    # clamps the margin to half the lifetime), while the old token is still good.
    rogue.control(access_token_ttl=10, refresh_response={"access_token": "at\u0001bad"})
    gw = gateway(_idp=rogue, session={"refresh_margin_seconds": 6})
    b = browser()
    logged_in(b, gw, "/")
    since = time.monotonic()
    first = b.get(gw.url("/page"))
    assert first.status == 200, first
    token = first.json()["headers"]["authorization"]
    time.sleep(max(0.0, since + 6.0 - time.monotonic()))

    r = b.get(gw.url("/page"))
    assert rogue.token_requests("refresh_token") >= 1, "the filter did not try to refresh"
    assert r.status == 200, r
    # The refused token never went upstream: the old one, still valid, did.
    assert r.json()["headers"]["authorization"] == token
    assert "bad" not in r.text


# ----------------------------------------------------------------------------------------
# 4. long return URLs


def test_a_login_started_at_a_very_long_url_completes(gw, browser):
    path = "/long/" + "p" * 200
    target = f"{path}?q=" + "x" * 6000
    b = browser()
    start = b.get(gw.url(target))
    assert start.status == 302, start
    login_cookie = start.set_cookie(LOGIN_PREFIX)
    # Browsers keep a cookie only while its name and value fit in 4096 bytes.
    assert len(login_cookie.name) + len(login_cookie.value) < 3000, len(login_cookie.raw)
    assert len(login_cookie.raw) < 3000
    back = idp_login(b, absolute(start.url, start.location))
    done = b.get(absolute(back.url, back.location))
    assert done.status == 302, done
    assert done.location == path, done.location[:300]
    r = b.get(gw.url(done.location))
    assert r.status == 200 and r.json()["path"] == path, r


# ----------------------------------------------------------------------------------------
# 5. SameSite=Strict sessions


def samesite(cookie: SetCookie) -> str:
    return cookie.attrs.get("samesite", "lax").lower()


def cookie_header(cookies: dict[str, SetCookie], cross_site: bool) -> str:
    """The Cookie header a browser sends: no Strict cookie on a cross-site navigation."""
    return "; ".join(f"{c.name}={c.value}" for c in cookies.values()
                     if not c.expired and not (cross_site and samesite(c) == "strict"))


def meta_refresh_target(page: str) -> str | None:
    m = re.search(r'<meta http-equiv="refresh" content="0;url=([^"]*)">', page)
    return html.unescape(m.group(1)) if m else None


def test_same_site_strict_sessions_still_log_in(gateway, browser):
    """Plays a browser's SameSite rules (curl has none): the provider redirects back to the
    callback cross-site, and the redirects that follow stay in that cross-site chain."""
    gw = gateway(cookie={"same_site": "Strict"})
    app, at_idp = browser("app"), browser("idp")
    jar: dict[str, SetCookie] = {}

    start = app.get(gw.url("/page?x=1"), use_jar=False)
    assert start.status == 302, start
    jar.update({c.name: c for c in start.set_cookies()})
    login_cookie = start.set_cookie(LOGIN_PREFIX)
    assert samesite(login_cookie) == "lax", login_cookie.raw

    back = idp_login(at_idp, absolute(start.url, start.location))
    url = absolute(back.url, back.location)
    cross_site = True  # arriving from the provider
    for _ in range(4):
        r = app.get(url, use_jar=False, headers={"Cookie": cookie_header(jar, cross_site)})
        jar.update({c.name: c for c in r.set_cookies()})
        if r.status in (301, 302, 303, 307, 308):
            url = absolute(url, r.location)  # a redirect continues the navigation, cross-site still
            assert not r.location.startswith(gw.idp.issuer), "the login started over"
        elif r.status == 200 and meta_refresh_target(r.text):
            url = absolute(url, meta_refresh_target(r.text))  # our own page navigates: same-site
            cross_site = False
        else:
            break
    assert r.status == 200 and "headers" in r.json(), r
    assert r.json()["path"] == "/page?x=1"
    assert r.json()["headers"]["x-auth-request-user"] == "alice"
    assert samesite(jar[SESSION_COOKIE]) == "strict"


# ----------------------------------------------------------------------------------------
# 6. session cookies on cacheable responses


def test_session_cookies_on_upstream_responses_are_never_cacheable_by_shared_caches(gateway, browser):
    # Cookie sessions are re-issued on activity every idle_timeout/16 = 1 s.
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    gw = gateway(session={"store": "cookie", "idle_timeout_seconds": 16}, cookie={"keys": [key]})
    b = browser()
    logged_in(b, gw, "/")
    cases = {
        "public, max-age=600": lambda cc: "private" in cc and "public" not in cc and "max-age=600" in cc,
        "": lambda cc: cc == "private",
        None: lambda cc: "no-store" in cc and "private" in cc,  # the echo's default: no-store
        's-maxage=60, no-cache="set-cookie, x", Public': lambda cc: (
            "private" in cc and "public" not in cc.lower() and 'no-cache="set-cookie, x"' in cc),
    }
    for sent, ok in cases.items():
        time.sleep(1.5)
        query = "" if sent is None else "?" + urllib.parse.urlencode({"cache_control": sent})
        r = b.get(gw.url("/page" + query))
        assert r.status == 200, r
        assert r.set_cookie(SESSION_COOKIE) is not None, f"no session cookie was re-issued: {r!r}"
        cache_control = ", ".join(r.header_all("cache-control"))
        assert ok(cache_control), f"upstream sent {sent!r}, the client got {cache_control!r}"
    # Without a Set-Cookie the upstream's header is left alone.
    r = b.get(gw.url("/page?" + urllib.parse.urlencode({"cache_control": "public, max-age=600"})))
    if r.set_cookie(SESSION_COOKIE) is None:
        assert r.header_all("cache-control") == ["public, max-age=600"], r


# ----------------------------------------------------------------------------------------
# 11, 12. back-channel logout: content type and token types


def logout_token(rogue, header: dict | None = None, sub: str = "alice") -> str:
    now = int(time.time())
    claims = {"iss": rogue.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4()),
              "sub": sub, "events": {LOGOUT_EVENT: {}}}
    return rogue.sign(claims, header=header if header is not None else {"typ": "logout+jwt"})


def post_logout(b, gw, token: str, content_type: str | None):
    headers = {"Content-Type": content_type} if content_type else {}
    return b.post(gw.url(BACKCHANNEL_PATH), f"logout_token={token}", use_jar=False, accept_html=False,
                  headers=headers)


def still_logged_in(b, gw) -> bool:
    r = b.get(gw.url("/"))
    return r.status == 200 and r.json()["headers"].get("x-auth-request-user") == "alice"


def test_back_channel_logout_accepts_only_a_form(rogue, gateway, browser):
    gw = gateway(_idp=rogue, backchannel_logout_path=BACKCHANNEL_PATH)
    b = browser()
    logged_in(b, gw, "/")
    assert still_logged_in(b, gw)
    for content_type in ["text/plain", "application/json", "multipart/form-data; boundary=x",
                         "application/x-www-form-urlencoded-x"]:
        r = post_logout(b, gw, logout_token(rogue), content_type)
        assert r.status == 400, f"{content_type}: {r!r}"
        assert r.json()["error"] == "invalid_request"
        assert "x-www-form-urlencoded" in r.json()["error_description"]
        assert still_logged_in(b, gw), f"a {content_type} body ended the session"
    # curl sends no Content-Type for --data-binary when told so: none is refused too.
    r = b.request("POST", gw.url(BACKCHANNEL_PATH), data=f"logout_token={logout_token(rogue)}", use_jar=False,
                  accept_html=False, headers={"Content-Type": ""})
    assert r.status == 400, r
    assert still_logged_in(b, gw)

    r = post_logout(b, gw, logout_token(rogue), "Application/X-WWW-Form-URLEncoded; charset=UTF-8")
    assert r.status == 200, r
    assert not still_logged_in(b, gw)


def test_logout_tokens_typed_jwt_or_untyped_are_accepted(rogue, gateway, browser):
    gw = gateway(_idp=rogue, backchannel_logout_path=BACKCHANNEL_PATH)
    b = browser()
    for typ in ["JWT", "jwt", "application/jwt", None, "logout+jwt", "application/logout+JWT"]:
        logged_in(b, gw, "/")
        assert still_logged_in(b, gw), typ
        header = {} if typ is None else {"typ": typ}
        r = post_logout(b, gw, logout_token(rogue, header), "application/x-www-form-urlencoded")
        assert r.status == 200, f"{typ}: {r!r}"
        assert not still_logged_in(b, gw), typ


def test_logout_tokens_of_another_explicit_type_are_refused(rogue, gateway, browser):
    gw = gateway(_idp=rogue, backchannel_logout_path=BACKCHANNEL_PATH)
    b = browser()
    logged_in(b, gw, "/")
    for typ in ["at+jwt", "application/at+jwt", "JOSE", "secevent+jwt"]:
        r = post_logout(b, gw, logout_token(rogue, {"typ": typ}), "application/x-www-form-urlencoded")
        assert r.status == 400, f"{typ}: {r!r}"
        assert still_logged_in(b, gw), typ
