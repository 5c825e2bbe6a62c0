"""The misbehaving test provider (tests/idp/rogue.mjs) itself: with its defaults it is a correct
provider, so the filter logs in through it, refreshes with rotation, and its reuse detection and
controls do what the negative tests rely on."""

import base64
import time

from harness import CLIENT_ID, CLIENT_SECRET, logged_in

SESSION = "__Host-oidc_session"


def upstream(r):
    assert r.status == 200, r
    return r.json()["headers"]


def token_post(browser, rogue, **form):
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    return browser.post(f"{rogue.issuer}/token", form, use_jar=False, accept_html=False,
                        headers={"Authorization": f"Basic {basic}", "Accept": "application/json"})


def test_login_and_refresh_with_rotation_through_the_rogue_provider(rogue, gateway, browser):
    rogue.control(sub="mallory", access_token_ttl=5)
    gw = gateway(_idp=rogue, session={"refresh_margin_seconds": 1})
    b = browser()
    r = logged_in(b, gw, "/rogue?x=1")
    assert r.location.endswith("/rogue?x=1")
    first = upstream(b.get(gw.url("/rogue")))
    assert first["x-auth-request-user"] == "mallory"
    assert rogue.token_requests("authorization_code") == 1

    time.sleep(4.5)
    second = upstream(b.get(gw.url("/rogue")))
    assert second["authorization"] != first["authorization"], "the access token was refreshed"
    stats = rogue.stats()
    assert stats["token_requests"].get("refresh_token") == 1, stats
    assert not stats["token_errors"], stats


def test_a_reused_refresh_token_revokes_the_grant(rogue, browser):
    b = browser()
    # Drive the provider directly: a code for a known verifier, then two refreshes with one token.
    import hashlib
    import secrets
    import urllib.parse

    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:1/cb"
    auth = b.get(f"{rogue.issuer}/auth?" + urllib.parse.urlencode({
        "client_id": CLIENT_ID, "redirect_uri": redirect, "state": "s", "nonce": "n",
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": "openid"}))
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(auth.location).query)["code"][0]
    tokens = token_post(b, rogue, grant_type="authorization_code", code=code, redirect_uri=redirect,
                        code_verifier=verifier).json()
    rt = tokens["refresh_token"]
    refreshed = token_post(b, rogue, grant_type="refresh_token", refresh_token=rt)
    assert refreshed.status == 200 and refreshed.json()["refresh_token"] != rt
    reused = token_post(b, rogue, grant_type="refresh_token", refresh_token=rt)
    assert reused.status == 400 and reused.json()["error"] == "invalid_grant"
    newest = token_post(b, rogue, grant_type="refresh_token", refresh_token=refreshed.json()["refresh_token"])
    assert newest.status == 400, "the whole grant was revoked on reuse"

    rogue.control(refresh_status=503, token_error="temporarily_unavailable")
    assert token_post(b, rogue, grant_type="refresh_token", refresh_token="x").status == 503
    rogue.reset()
    assert rogue.stats()["token_requests"] == {}
