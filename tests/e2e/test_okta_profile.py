"""The documented Okta configuration (deploy/providers/okta.json, shown in docs/providers.md)
against the test IdP's Okta profile (IDP_PROFILE=okta): an issuer with a path
(/oauth2/default), ID tokens whose `sub` is the user id, JWT access tokens with
`aud: api://default`, `sub` = the login, `uid`, `cid`, `scp` and `groups`, refresh tokens for
`offline_access`, rotated on every use.

Only what a local test must change is changed: the issuer's host, the redirect URI, the
cluster name of this repository's envoy.yaml, the client id and http. Everything else is the
documented file as it is."""

from __future__ import annotations

import json
import re
import time

import pytest

from harness import CLIENT_ID, REPO, absolute, logged_in, query_params
from test_harness import jwt_claims

OKTA_JSON = REPO / "deploy" / "providers" / "okta.json"
# Access tokens live 30 s; the documented refresh margin (the default, 60 s) makes every
# request after the login refresh, so rotation is exercised on each one.
OKTA_IDP_ENV = {"IDP_PROFILE": "okta", "TTL_ACCESS_TOKEN": "8"}


def okta_config(idp) -> dict:
    cfg = json.loads(OKTA_JSON.read_text())
    cfg.update(
        issuer=idp.issuer,
        client_id=CLIENT_ID,
        provider_cluster="idp",
        insecure_allow_http=True,
    )
    cfg.pop("redirect_uri")  # the harness sets the gateway's own
    return cfg


@pytest.fixture
def okta(idp_factory):
    return idp_factory(env=OKTA_IDP_ENV)


@pytest.fixture
def okta_gw(gateway, okta):
    return gateway(_idp=okta, **okta_config(okta))


def identity(r) -> dict:
    assert r.status == 200, r
    h = r.json()["headers"]
    return {k: h.get(k) for k in ("x-auth-request-user", "x-auth-request-email", "x-auth-request-groups")}


def upstream_token(r) -> str:
    assert r.status == 200, r
    auth = r.json()["headers"]["authorization"]
    assert auth.startswith("Bearer ")
    return auth[len("Bearer "):]


def api_call(browser, gw, path, token):
    return browser("api").get(gw.url(path), use_jar=False, accept_html=False,
                              headers={"Authorization": f"Bearer {token}"})


def test_the_okta_profile_looks_like_okta(okta, browser):
    meta = browser().get(f"{okta.issuer}/.well-known/openid-configuration", accept_html=False).json()
    assert okta.issuer.endswith("/oauth2/default") and meta["issuer"] == okta.issuer
    assert meta["end_session_endpoint"] == f"{okta.issuer}/session/end"
    assert meta["jwks_uri"] == f"{okta.issuer}/jwks"


def test_login_api_call_groups_refresh_and_logout(okta_gw, okta, browser):
    b = browser()
    # The documented scopes reach the provider; offline_access brings a refresh token.
    first = b.get(okta_gw.url("/admin/"))
    assert first.status == 302 and first.location.startswith(f"{okta.issuer}/auth?"), first
    assert set(query_params(first.location)["scope"].split()) == {
        "openid", "email", "profile", "groups", "offline_access"}
    logged_in(b, okta_gw, "/admin/")

    # Session path: the ID token's sub is the Okta user id.
    r = b.get(okta_gw.url("/admin/"))
    session_identity = identity(r)
    assert session_identity == {
        "x-auth-request-user": "00u" + b"alice".hex(),
        "x-auth-request-email": "alice@example.test",
        "x-auth-request-groups": "admins,users",
    }

    # The access token the upstream received is Okta-shaped.
    token = upstream_token(r)
    head, claims = jwt_claims(token)
    assert claims["aud"] == "api://default" and claims["iss"] == okta.issuer
    assert claims["sub"] == "alice@example.test" and claims["uid"] == "00u" + b"alice".hex()
    assert claims["cid"] == CLIENT_ID and "groups" in claims["scp"]
    assert "client_id" not in claims and "scope" not in claims

    # Bearer path, same user, same header values; the group rule admits alice.
    api = api_call(browser, okta_gw, "/admin/report", token)
    assert identity(api) == session_identity
    assert upstream_token(api) == token

    # Refresh with rotation: each of these requests refreshes (8 s tokens; the 60 s margin is
    # clamped to half the token's life); a reused refresh token would revoke the grant.
    before = okta.token_requests("refresh_token")
    seen = {token}
    for _ in range(3):
        time.sleep(4.5)
        r = b.get(okta_gw.url("/admin/"))
        assert identity(r) == session_identity
        seen.add(upstream_token(r))
    assert okta.token_requests("refresh_token") >= before + 2, okta.stats()
    assert okta.stats()["token_errors"].get("refresh_token", 0) == 0, okta.stats()
    assert len(seen) >= 3, "the upstream kept getting the same access token"

    # Logout at Okta's end_session endpoint (under the issuer's path) and back.
    out = b.get(okta_gw.url("/oauth2/logout"))
    assert out.status in (302, 303) and out.location.startswith(f"{okta.issuer}/session/end?"), out
    q = query_params(out.location)
    assert q["post_logout_redirect_uri"] == okta_gw.url("/")
    assert jwt_claims(q["id_token_hint"])[1]["sub"] == "00u" + b"alice".hex()
    page = b.get(out.location)
    assert page.status == 200, page
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text).group(1)
    done = b.post(f"{okta.issuer}/session/end/confirm", {"xsrf": xsrf, "logout": "yes"})
    assert done.status == 303 and done.location.startswith(okta_gw.url("/")), done
    again = b.get(okta_gw.url("/admin/"))
    assert again.status == 302 and again.location.startswith(f"{okta.issuer}/auth?"), again


def test_the_group_rule_refuses_others_on_both_paths(okta_gw, browser):
    b = browser()
    logged_in(b, okta_gw, "/", user="bob")
    r = b.get(okta_gw.url("/"))
    assert identity(r)["x-auth-request-user"] == "00u" + b"bob".hex()
    assert b.get(okta_gw.url("/admin/")).status == 403
    token = upstream_token(r)
    api = api_call(browser, okta_gw, "/admin/x", token)
    assert api.status == 403 and api.json()["error"] == "insufficient_scope", api
    assert identity(api_call(browser, okta_gw, "/api/x", token)) == identity(r)


def test_id_tokens_are_not_api_tokens(okta_gw, browser):
    """With the documented audience (api://default) the ID token, whose aud is the client id,
    is refused as a bearer token."""
    b = browser()
    logged_in(b, okta_gw, "/")
    out = b.get(okta_gw.url("/oauth2/logout"))
    id_token = query_params(out.location)["id_token_hint"]
    r = api_call(browser, okta_gw, "/api/x", id_token)
    assert r.status == 401 and "invalid_token" in (r.header("www-authenticate") or ""), r
