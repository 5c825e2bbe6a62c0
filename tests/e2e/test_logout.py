"""Logout at logout_path: the gateway session ends, then RP-initiated logout at the IdP."""

import base64
import json
import re

from harness import CLIENT_ID, absolute, idp_login, logged_in, query_params

SESSION_COOKIE = "__Host-oidc-session"


def jwt_payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_logout_ends_the_session_here_and_at_the_idp(gw, idp, browser):
    b = browser()
    logged_in(b, gw, "/")
    old_session = b.cookie(SESSION_COOKIE).value
    assert b.get(gw.url("/")).status == 200

    r = b.get(gw.url("/oauth2/logout"))
    assert r.status in (302, 303), r
    assert r.location.startswith(f"{idp.issuer}/session/end?"), r.location
    q = query_params(r.location)
    assert q["client_id"] == CLIENT_ID
    assert q["post_logout_redirect_uri"] == gw.url("/")
    assert jwt_payload(q["id_token_hint"])["sub"] == "alice"
    cleared = r.set_cookie(SESSION_COOKIE)
    assert cleared is not None and cleared.expired, r.header_all("set-cookie")
    assert b.cookie(SESSION_COOKIE) is None

    # The old cookie value no longer opens a session (it was deleted on the server side too).
    b.set_cookie(SESSION_COOKIE, old_session, secure=True)
    again = b.get(gw.url("/"))
    assert again.status == 302 and again.location.startswith(f"{idp.issuer}/auth?"), again
    b.remove_cookie(SESSION_COOKIE)

    # RP-initiated logout at the IdP, back to post_logout_redirect_uri.
    page = b.get(r.location)
    assert page.status == 200, page
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text).group(1)
    done = b.post(f"{idp.issuer}/session/end/confirm", {"xsrf": xsrf, "logout": "yes"})
    assert done.status == 303, done
    assert done.location.startswith(gw.url("/")), done.location
    assert query_params(done.location)["state"] == q["state"]

    # The IdP session is gone too: a new login shows the IdP's login form again.
    start = b.get(gw.url("/"))
    assert start.status == 302, start
    at_idp = b.get(start.location)
    assert at_idp.status == 303 and at_idp.location.startswith("/interaction/"), at_idp
    form = b.get(absolute(at_idp.url, at_idp.location))
    assert 'name="login"' in form.text


def test_cross_site_logout_asks_for_confirmation(gw, idp, browser):
    """A cross-site GET (an <img> on another site) must not log the user out by itself."""
    b = browser()
    logged_in(b, gw, "/")
    r = b.get(gw.url("/oauth2/logout"), headers=[("Sec-Fetch-Site", "cross-site")])
    assert r.status == 200, r
    assert "<form" in r.text
    assert not (r.location or "").startswith(idp.issuer)
    c = r.set_cookie(SESSION_COOKIE)
    assert c is None or not c.expired, "the session cookie was cleared by a cross-site request"
    assert b.get(gw.url("/")).status == 200


def test_logout_then_login_again(gw, browser):
    b = browser()
    logged_in(b, gw, "/")
    r = b.get(gw.url("/oauth2/logout"))
    assert r.status in (302, 303), r
    # Without visiting the IdP's logout page the IdP session still exists: the next login
    # goes straight back to the gateway.
    first = b.get(gw.url("/again"))
    assert first.status == 302, first
    back = idp_login(b, first.location)
    cb = b.get(absolute(back.url, back.location))
    assert cb.status == 302 and cb.location in ("/again", gw.url("/again")), cb
    assert b.get(gw.url("/again")).json()["headers"]["x-auth-request-user"] == "alice"
