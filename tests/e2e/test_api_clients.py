"""API clients and authorization through a real Envoy, the test IdP and the echo upstream:
bearer tokens (JWT access tokens for the resource https://api.example/ from the client
credentials grant and the code flow, opaque tokens through introspection), 401 instead of
redirects for requests that cannot follow a login, claim rules (403), public paths and
spoofed identity headers. Tricky paths are sent with `curl --path-as-is`, so Envoy and the
filter see them exactly as written."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest

from harness import CLIENT_ID, Response, _parse_headers, idp_login, login, query_params, wait_until
from test_harness import auth_url, jwt_claims, token_request

API = "https://api.example/"

API_CONFIG = {
    "bearer": {
        "mode": "accept",
        # The JWT access tokens' audience, and the filter's own client id for the opaque
        # tokens introspection vouches for (they carry no aud, only client_id).
        "audiences": [API, CLIENT_ID],
        "introspection": {"enabled": True, "cache_seconds": 30, "max_entries": 64},
    },
    "api_path_prefixes": ["/api/"],
    "public_paths": ["/health", "/static/"],
    "authorization": {
        "default": "allow",
        "rules": [
            {"path_prefix": "/admin/", "require": {"claims": {"groups": ["admins"]}}},
            {"path_prefix": "/reports/", "methods": ["POST"], "require": {"scopes": ["api:write"]}},
            {"path_prefix": "/reports/", "require": {"scopes": ["api:read"]}},
        ],
    },
    "upstream": {
        "claim_headers": {"x-auth-request-groups": "groups"},
        "claims_separator": "|",
        "claims_header": "x-auth-request-claims",
    },
}

IDENTITY_HEADERS = ("x-auth-request-user", "x-auth-request-email", "x-auth-request-groups",
                    "x-auth-request-claims")


# ---- helpers ---------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def client_credentials_token(browser, idp, scope="api:read") -> str:
    basic = base64.b64encode(b"m2m:m2m-secret").decode()
    r = browser().post(f"{idp.issuer}/token",
                       {"grant_type": "client_credentials", "scope": scope, "resource": API},
                       use_jar=False, accept_html=False, headers={"Authorization": f"Basic {basic}"})
    assert r.status == 200, r
    token = r.json()["access_token"]
    head, claims = jwt_claims(token)
    assert head["typ"] == "at+jwt" and claims["aud"] == API and claims["sub"] == "m2m"
    return token


def code_flow_tokens(browser, idp, redirect_uri, user="alice", resource: str | None = API) -> dict:
    """Logs `user` in at the IdP directly (not through a gateway) and exchanges the code."""
    b = browser()
    extra = {"resource": resource} if resource else {}
    scope = "openid email groups api:read" if resource else "openid email groups"
    url, _, verifier = auth_url(idp, redirect_uri, scope=scope, **extra)
    q = query_params(idp_login(b, url, user).location)
    form = dict(grant_type="authorization_code", code=q["code"], redirect_uri=redirect_uri,
                code_verifier=verifier, **extra)
    r = token_request(b, idp, **form)
    assert r.status == 200, r
    return r.json()


def api_get(browser, gw, path, token=None, headers=None, method="GET") -> Response:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.setdefault("Accept", "application/json")
    return browser().request(method, gw.url(path), headers=hdrs, use_jar=False)


def raw_request(gw, path: str, headers=(), jar=None, method="GET") -> Response:
    """One request with the path exactly as written (`--path-as-is`: curl keeps `..`, `//`
    and percent-escapes)."""
    argv = ["curl", "-s", "-S", "--path-as-is", "--max-time", "10", "-X", method, "-D", "-",
            "-o", "/dev/stderr"]
    if jar is not None:
        argv += ["-b", str(jar)]
    for k, v in headers:
        argv += ["-H", f"{k}: {v}"]
    argv.append(gw.url(path))
    proc = subprocess.run(argv, capture_output=True, timeout=15)
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.decode("iso-8859-1")
    status = int(head.split(" ", 2)[1])
    return Response(status, _parse_headers(proc.stdout), proc.stderr, gw.url(path))


def echoed(r: Response) -> dict:
    """The request as the echo upstream saw it."""
    assert r.status == 200, r
    seen = r.json()
    assert "headers" in seen and "path" in seen, f"not the echo upstream: {r!r}"
    return seen


def assert_invalid_token(r: Response, description: str | None = None):
    assert r.status == 401, r
    challenge = r.header("www-authenticate") or ""
    assert challenge.startswith('Bearer realm="oidc-filter", error="invalid_token"'), r
    assert r.json()["error"] == "invalid_token"
    assert r.location is None
    if description:
        assert description in challenge, challenge


def resign_payload(token: str, **changes) -> str:
    """The token with changed claims and its original signature: no longer valid."""
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"


def unsigned(token: str, alg: str, key: bytes = b"") -> str:
    """The token's claims under a new header: `none` or an HMAC algorithm with `key`."""
    _, payload, _ = token.split(".")
    header = b64url(json.dumps({"alg": alg, "typ": "at+jwt", "kid": "test-rs256"}).encode())
    signing_input = f"{header}.{payload}".encode()
    if alg == "none":
        return f"{header}.{payload}."
    return f"{header}.{payload}.{b64url(hmac.new(key, signing_input, hashlib.sha256).digest())}"


@pytest.fixture
def api_gw(gateway):
    return gateway(**API_CONFIG)


# ---- bearer tokens ---------------------------------------------------------------------


def test_api_client_credentials_token_passes_with_identity(api_gw, idp, browser):
    token = client_credentials_token(browser, idp)
    r = api_get(browser, api_gw, "/api/items?page=1", token,
                headers={"X-Auth-Request-User": "mallory", "X-Auth-Request-Claims": "e30"})
    seen = echoed(r)
    assert seen["path"] == "/api/items?page=1"
    h = seen["headers"]
    assert h["x-auth-request-user"] == "m2m", "spoofed identity must be replaced, not appended"
    assert h["authorization"] == f"Bearer {token}", "the upstream gets exactly the checked token"
    claims = json.loads(base64.urlsafe_b64decode(h["x-auth-request-claims"] + "=="))
    assert claims["sub"] == "m2m" and claims["scope"] == "api:read" and claims["aud"] == API
    # A token needs no cookie, and a bearer request creates no session.
    assert not r.header_all("set-cookie")


def test_api_code_flow_jwt_access_token_passes(api_gw, idp, browser, gateway_ports):
    tokens = code_flow_tokens(browser, idp, f"http://127.0.0.1:{gateway_ports[-1]}/oauth2/callback")
    head, claims = jwt_claims(tokens["access_token"])
    assert head["typ"] == "at+jwt" and claims["sub"] == "alice" and claims["aud"] == API
    seen = echoed(api_get(browser, api_gw, "/reports/q", tokens["access_token"]))
    assert seen["headers"]["x-auth-request-user"] == "alice"
    # The ID token is signed by the same keys and names this client as audience, but it is
    # not an access token.
    assert_invalid_token(api_get(browser, api_gw, "/", tokens["id_token"]))


def test_api_scopes_and_groups_rules_for_tokens(api_gw, idp, browser):
    token = client_credentials_token(browser, idp, scope="api:read")
    assert echoed(api_get(browser, api_gw, "/reports/1", token))
    r = api_get(browser, api_gw, "/reports/1", token, method="POST")
    assert r.status == 403, r
    assert r.header("www-authenticate") == 'Bearer realm="oidc-filter", error="insufficient_scope"'
    assert r.json()["error"] == "insufficient_scope"
    # m2m has no groups claim: the admin area is closed to it.
    assert api_get(browser, api_gw, "/admin/x", token).status == 403
    writer = client_credentials_token(browser, idp, scope="api:read api:write")
    assert echoed(api_get(browser, api_gw, "/reports/1", writer, method="POST"))


def test_api_forged_tokens_get_401(api_gw, idp, browser):
    token = client_credentials_token(browser, idp)
    cases = {
        "bad signature": (resign_payload(token, sub="admin"), "signature is invalid"),
        "alg none": (unsigned(token, "none"), None),
        "alg none with a signature": (unsigned(token, "none")[:-1] + ".c2ln", None),
        "HS256 with a guessed key": (unsigned(token, "HS256", b"secret"), "algorithm"),
        "garbage": ("a.b.c", None),
        "opaque nonsense": ("not-a-real-token", None),
    }
    for what, (forged, description) in cases.items():
        r = api_get(browser, api_gw, "/api/x", forged)
        assert_invalid_token(r, description)
        assert forged not in (r.header("www-authenticate") or ""), what
        # A navigation with a refused token is not sent to log in either.
        r = browser().get(api_gw.url("/"), headers={"Authorization": f"Bearer {forged}"})
        assert r.status == 401, (what, r)


def test_api_forged_bearer_beats_a_session(api_gw, browser):
    b = browser()
    assert login(b, api_gw.url("/"), "alice").status == 302
    assert echoed(b.get(api_gw.url("/")))["headers"]["x-auth-request-user"] == "alice"
    # A bearer token is judged on its own, even beside a valid session cookie.
    r = b.get(api_gw.url("/"), headers={"Authorization": "Bearer forged"})
    assert_invalid_token(r, "not active")


def test_api_wrong_audience_gets_401(gateway, idp, browser):
    gw = gateway(bearer={"audiences": ["https://other.example/"]})
    token = client_credentials_token(browser, idp)
    assert_invalid_token(api_get(browser, gw, "/", token), "not meant for this service")


def test_api_expired_and_wrong_issuer_tokens_get_401(gateway, idp_factory, browser, gateway_ports):
    # A second IdP with 1-second access tokens (for the code flow's resource tokens). It
    # signs with the same test keys as the main IdP, so its tokens verify against the main
    # IdP's JWKS: only `iss` tells them apart.
    short = idp_factory(env={"TTL_ACCESS_TOKEN": "1"})
    other_issuer = client_credentials_token(browser, short)
    main_gw = gateway(bearer={"audiences": [API]})
    assert_invalid_token(api_get(browser, main_gw, "/", other_issuer), "another issuer")

    short_gw = gateway(_idp=short, clock_skew_seconds=0, bearer={"audiences": [API]})
    assert echoed(api_get(browser, short_gw, "/", other_issuer)), "its own IdP's token passes"
    redirect_uri = f"http://127.0.0.1:{gateway_ports[-1]}/oauth2/callback"
    expiring = code_flow_tokens(browser, short, redirect_uri)["access_token"]
    claims = jwt_claims(expiring)[1]
    assert claims["exp"] - claims["iat"] == 1
    time.sleep(max(0.0, claims["exp"] + 1.2 - time.time()))
    assert_invalid_token(api_get(browser, short_gw, "/", expiring), "expired")


def test_api_require_and_ignore_modes(gateway, idp, browser):
    token = client_credentials_token(browser, idp)
    # GET / answers 401 before the provider is loaded, so readiness is a token getting through.
    req = gateway(_wait_metadata=False, bearer={"mode": "require", "audiences": [API]})
    r = browser().get(req.url("/"))
    assert r.status == 401 and r.header("www-authenticate") == 'Bearer realm="oidc-filter"', r
    wait_until(lambda: api_get(browser, req, "/", token).status != 503, 15, what="provider metadata")
    assert echoed(api_get(browser, req, "/", token))["headers"]["x-auth-request-user"] == "m2m"

    ign = gateway(bearer={"mode": "ignore", "audiences": [API]})
    r = browser().get(ign.url("/"), headers={"Authorization": f"Bearer {token}"})
    assert r.status == 302, "ignore: the token is not looked at, a browser logs in"


def test_api_opaque_tokens_are_introspected_and_cached(api_gw, idp, browser, gateway_ports):
    tokens = code_flow_tokens(browser, idp, f"http://127.0.0.1:{gateway_ports[-1]}/oauth2/callback",
                              user="bob", resource=None)
    opaque = tokens["access_token"]
    assert opaque.count(".") == 0, "without a resource the IdP issues an opaque token"
    def introspections():
        return idp.stats()["requests"].get("POST /token/introspection", 0)

    before = introspections()
    seen = echoed(api_get(browser, api_gw, "/api/me", opaque))
    assert seen["headers"]["x-auth-request-user"] == "bob"
    assert introspections() == before + 1
    for _ in range(3):
        assert echoed(api_get(browser, api_gw, "/api/me", opaque))["headers"]["x-auth-request-user"] == "bob"
    assert introspections() == before + 1, "answers are cached"

    # A refresh token is active at introspection too, but it is no access token.
    assert_invalid_token(api_get(browser, api_gw, "/api/me", tokens["refresh_token"]))
    assert_invalid_token(api_get(browser, api_gw, "/api/me", "A" * 43), "not active")


# ---- who gets a redirect ---------------------------------------------------------------


def test_api_non_navigations_get_401_navigations_302(api_gw, browser):
    b = browser()
    cases = [
        ("GET", "/", {"X-Requested-With": "XMLHttpRequest"}),
        ("GET", "/", {"Accept": "application/json"}),
        ("GET", "/", {"Accept": "*/*"}),
        ("GET", "/", {"Accept": "text/html", "Sec-Fetch-Mode": "cors"}),
        ("POST", "/form", {"Accept": "text/html"}),
        ("GET", "/api/items", {"Accept": "text/html"}),
    ]
    for method, path, headers in cases:
        r = b.request(method, api_gw.url(path), headers=headers, data="" if method == "POST" else None)
        assert r.status == 401, (method, path, headers, r)
        assert r.header("www-authenticate") == 'Bearer realm="oidc-filter"'
        assert r.json() == {"error": "unauthorized", "error_description": "Authentication is required."}
        assert r.location is None and not r.header_all("set-cookie")
    r = b.get(api_gw.url("/page"), headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})
    assert r.status == 302 and r.location.startswith(api_gw.idp.issuer + "/auth?"), r


# ---- authorization rules for sessions ---------------------------------------------------


def test_api_group_rule_admits_alice_and_refuses_bob(api_gw, browser):
    alice, bob = browser("alice"), browser("bob")
    assert login(alice, api_gw.url("/"), "alice").status == 302
    assert login(bob, api_gw.url("/"), "bob").status == 302

    seen = echoed(alice.get(api_gw.url("/admin/panel")))
    assert seen["headers"]["x-auth-request-user"] == "alice"
    assert seen["headers"]["x-auth-request-groups"] == "admins|users"

    r = bob.get(api_gw.url("/admin/panel"))
    assert r.status == 403 and "Access denied" in r.text, r
    assert "admins" not in r.text, "the page names no requirement"
    r = bob.get(api_gw.url("/admin/panel"), headers={"Accept": "application/json"})
    assert r.status == 403 and r.json()["error"] == "forbidden"
    assert echoed(bob.get(api_gw.url("/elsewhere")))["headers"]["x-auth-request-user"] == "bob"

    # Spellings that reach /admin at the upstream are judged as /admin.
    for path in ["/admin", "//admin/panel", "/x/../admin/panel", "/admin/./panel", "/%61dmin/panel"]:
        r = raw_request(api_gw, path, [("Accept", "text/html")], jar=bob.jar)
        assert r.status == 403, (path, r)
    for path in ["/admin%2Fpanel", "/x/..%2Fadmin/panel", "/../admin/panel", "/admin/%252e"]:
        r = raw_request(api_gw, path, [("Accept", "text/html")], jar=bob.jar)
        assert r.status == 400 and "Bad request" in r.text, (path, r)


# ---- public paths ----------------------------------------------------------------------


def test_api_public_paths_pass_without_login_and_strip_identity(api_gw, browser, idp):
    token = client_credentials_token(browser, idp)
    spoofed = [("X-Auth-Request-User", "mallory"), ("X-Auth-Request-Email", "m@evil"),
               ("X-Auth-Request-Groups", "admins"), ("X-Auth-Request-Claims", "e30"),
               ("Authorization", f"Bearer {token}")]
    for path in ["/health", "/health?x=/admin/", "/static/app.js", "/static/a/../b.css", "//static/x"]:
        r = raw_request(api_gw, path, spoofed)
        seen = echoed(r)
        for name in IDENTITY_HEADERS + ("authorization",):
            assert name not in seen["headers"], (path, name, seen["headers"])
        assert not r.header_all("set-cookie")


def test_api_public_paths_cannot_be_abused(api_gw, browser):
    html = [("Accept", "text/html")]
    # Not public: a protected path with a public-looking spelling. Browsers log in first.
    for path in ["/admin/?/health", "/static/../admin/", "/static/%2e%2e/admin/", "/static/.%2E/admin/",
                 "/health/../admin/", "/healthz", "/static"]:
        r = raw_request(api_gw, path, html)
        assert r.status == 302 and "/auth?" in (r.location or ""), (path, r)
        r = raw_request(api_gw, path, [("Accept", "application/json")])
        assert r.status == 401, (path, r)
    # Spellings servers disagree on are refused outright.
    for path in ["/static%2F..%2Fadmin/", "/static/..%2fadmin/", "/static/..%5cadmin/",
                 "/static/%252e%252e/admin/", "/static/..;/admin/", "/static/../../admin/"]:
        r = raw_request(api_gw, path, [("Accept", "application/json")])
        assert r.status == 400 and r.json()["error"] == "invalid_request", (path, r)
    # Envoy answers raw control characters itself; non-UTF-8 reaches the filter.
    r = raw_request(api_gw, "/static/%ff", html)
    assert r.status == 400, r
    # The VM survived all of that.
    assert echoed(raw_request(api_gw, "/health", html))
