"""The test environment itself: the IdP's configuration, the scripted login, the echo
upstream and Envoy's proxy path (without the filter). These do not need the filter."""

import base64
import hashlib
import json
import secrets
import urllib.parse

from harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    Gateway,
    build_envoy_config,
    idp_login,
    query_params,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_claims(token: str) -> tuple[dict, dict]:
    head, payload, _sig = token.split(".")
    dec = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return dec(head), dec(payload)


def auth_url(idp, redirect_uri, scope="openid email profile groups", **extra):
    verifier = b64url(secrets.token_bytes(32))
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": scope,
        "redirect_uri": redirect_uri,
        "state": b64url(secrets.token_bytes(16)),
        "nonce": b64url(secrets.token_bytes(16)),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return f"{idp.issuer}/auth?{urllib.parse.urlencode(params)}", params, verifier


def token_request(browser, idp, **form):
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    return browser.post(f"{idp.issuer}/token", form, use_jar=False, accept_html=False,
                        headers={"Authorization": f"Basic {basic}", "Accept": "application/json"})


def test_idp_discovery(idp, browser):
    r = browser().get(f"{idp.issuer}/.well-known/openid-configuration", accept_html=False)
    assert r.status == 200
    meta = r.json()
    assert meta["issuer"] == idp.issuer
    assert meta["token_endpoint"] == f"{idp.issuer}/token"
    assert meta["end_session_endpoint"] == f"{idp.issuer}/session/end"
    assert meta["backchannel_logout_supported"] is True
    assert {"email", "profile", "groups"} <= set(meta["scopes_supported"])
    jwks = browser().get(meta["jwks_uri"], accept_html=False).json()
    assert [k["kid"] for k in jwks["keys"]] == ["test-rs256"]
    assert "d" not in jwks["keys"][0], "the JWKS must not publish the private key"


def test_idp_requires_pkce(idp, gateway_ports, browser):
    b = browser()
    url, params, _ = auth_url(idp, f"http://127.0.0.1:{gateway_ports[0]}/oauth2/callback")
    url = url.replace("&code_challenge_method=S256", "").replace(f"&code_challenge={params['code_challenge']}", "")
    r = b.get(url)
    assert r.status in (302, 303)
    q = query_params(r.location)
    assert q["error"] == "invalid_request"
    assert "PKCE" in q["error_description"]


def test_scripted_login_and_tokens(idp, gateway_ports, browser):
    b = browser()
    redirect_uri = f"http://127.0.0.1:{gateway_ports[0]}/oauth2/callback"
    url, params, verifier = auth_url(idp, redirect_uri)
    before = idp.token_requests("authorization_code")
    back = idp_login(b, url, "alice")
    assert back.location.startswith(redirect_uri + "?")
    q = query_params(back.location)
    assert q["state"] == params["state"]
    assert q["iss"] == idp.issuer

    r = token_request(b, idp, grant_type="authorization_code", code=q["code"], redirect_uri=redirect_uri,
                      code_verifier=verifier)
    assert r.status == 200, r
    tokens = r.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["refresh_token"], "the IdP issues refresh tokens without offline_access"
    head, claims = jwt_claims(tokens["id_token"])
    assert head["kid"] == "test-rs256" and head["alg"] == "RS256"
    assert claims["sub"] == "alice"
    assert claims["nonce"] == params["nonce"]
    assert claims["email"] == "alice@example.test"
    assert claims["groups"] == ["admins", "users"]
    # sid is in the ID token only for clients with backchannel_logout_session_required.
    assert "sid" not in claims
    assert idp.token_requests("authorization_code") == before + 1

    refreshed = token_request(b, idp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refreshed.status == 200, refreshed
    assert jwt_claims(refreshed.json()["id_token"])[1]["sub"] == "alice"
    assert idp.stats()["token_requests"]["refresh_token"] >= 1

    # A second login on the same IdP session goes straight back to the client.
    url2, params2, _ = auth_url(idp, redirect_uri)
    r2 = b.get(url2)
    assert r2.status == 303 and r2.location.startswith(redirect_uri + "?")
    assert query_params(r2.location)["state"] == params2["state"]

    # The code works once (and reusing it revokes the grant).
    again = token_request(b, idp, grant_type="authorization_code", code=q["code"], redirect_uri=redirect_uri,
                          code_verifier=verifier)
    assert again.status == 400 and again.json()["error"] == "invalid_grant"


def test_other_user_claims(idp, gateway_ports, browser):
    redirect_uri = f"http://127.0.0.1:{gateway_ports[1]}/oauth2/callback"
    b = browser()
    url, _, verifier = auth_url(idp, redirect_uri)
    q = query_params(idp_login(b, url, "bob").location)
    tokens = token_request(b, idp, grant_type="authorization_code", code=q["code"], redirect_uri=redirect_uri,
                           code_verifier=verifier).json()
    claims = jwt_claims(tokens["id_token"])[1]
    assert claims["sub"] == "bob" and claims["groups"] == ["users"] and claims["email"] == "bob@example.test"


def test_client_credentials_jwt(idp, browser):
    basic = base64.b64encode(b"m2m:m2m-secret").decode()
    r = browser().post(f"{idp.issuer}/token", {"grant_type": "client_credentials", "scope": "api:read"},
                       use_jar=False, accept_html=False, headers={"Authorization": f"Basic {basic}"})
    assert r.status == 200, r
    head, claims = jwt_claims(r.json()["access_token"])
    assert head["typ"] == "at+jwt"
    assert claims["aud"] == "https://api.example/" and claims["sub"] == "m2m" and claims["scope"] == "api:read"


def test_echo_upstream(echo, browser):
    r = browser().get(f"http://127.0.0.1:{echo.port}/a/b?c=1", headers=[("X-Multi", "1"), ("x-multi", "2")],
                      accept_html=False)
    assert r.status == 200 and r.header("content-type") == "application/json"
    seen = r.json()
    assert seen["method"] == "GET" and seen["path"] == "/a/b?c=1"
    assert seen["headers"]["x-multi"] == ["1", "2"]


def test_envoy_proxies_to_echo_without_filter(workdir, idp, echo, port_pool, browser):
    """The shipped envoy.yaml minus the wasm filter routes everything to the upstream."""
    port = port_pool.take()
    gw = Gateway(workdir, build_envoy_config(port, idp.port, echo.port, with_filter=False), port)
    try:
        gw.start().wait_ready()
        b = browser()
        b.set_cookie("other", "1")
        r = b.get(gw.url("/some/page?x=1"), accept_html=False,
                  headers=[(b"Cookie", b"raw=\xff\xfe")])
        assert r.status == 200, r
        seen = r.json()
        assert seen["path"] == "/some/page?x=1"
        assert "other=1" in json.dumps(seen["headers"]["cookie"])
    finally:
        gw.stop()
        port_pool.give(port)
