"""No secret in any log: a representative suite (login, a failed callback, refresh, logout
with revocation, back-channel logout, bearer JWTs, introspected opaque tokens, an
authorization denial) runs with the filter at `log_level: debug` and Envoy's wasm component at
trace, with a file access log in Envoy's default format; then the whole Envoy log and the
access log are searched for every secret the test saw or configured.

`find_secrets` is checked on its own first (a planted secret must be found, in every spelling
the logs could use), so the suite test cannot pass because the search is blind.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.parse
import uuid

import pytest

from harness import CLIENT_ID, CLIENT_SECRET, Browser, absolute, query_params, wait_until

BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
API_AUDIENCE = "api://secrets"
SESSION_COOKIE = "__Host-oidc-session"
LOGIN_COOKIE_PREFIX = "__Host-oidc-login-"
MIN_SECRET_LENGTH = 8


def spellings(secret: str) -> set[str]:
    """The forms a secret could take in a log line: as is, URL-encoded (query strings, form
    bodies), JSON- or Rust-Debug-escaped, and base64 (key material, basic auth)."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
             secret.replace("/", "\\/"), secret.replace('"', '\\"')}
    raw = secret.encode()
    forms |= {base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return forms


def find_secrets(text: str, secrets: dict[str, str]) -> list[str]:
    """The names of the secrets that occur in `text`, in any of their spellings."""
    for name, value in secrets.items():
        assert len(value) >= MIN_SECRET_LENGTH, f"{name} is too short to search for reliably: {value!r}"
    return sorted(name for name, value in secrets.items() if any(form in text for form in spellings(value)))


def test_the_secret_search_finds_a_planted_secret():
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    code = "Zm9v/YmFy+YmF6=="
    secrets = {"token": token, "code": code, "absent": "never-logged-value"}
    assert find_secrets(f"[info][wasm] access token {token} here", secrets) == ["token"]
    assert find_secrets(f'GET /cb?code={urllib.parse.quote(code, safe="")} 400', secrets) == ["code"]
    assert find_secrets(f"code={urllib.parse.quote_plus(code)}", secrets) == ["code"]
    basic = base64.b64encode(f"{code}".encode()).decode()
    assert find_secrets(f"authorization: Basic {basic}", secrets) == ["code"]
    assert find_secrets("nothing to see", secrets) == []
    with pytest.raises(AssertionError):
        find_secrets("x", {"short": "abc"})


def logout_token(rogue, **claims) -> str:
    now = int(time.time())
    base = {"iss": rogue.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4()),
            "events": {LOGOUT_EVENT: {}}}
    base.update(claims)
    return rogue.sign(base, header={"typ": "logout+jwt"})


def access_jwt(rogue, **claims) -> str:
    now = int(time.time())
    base = {"iss": rogue.issuer, "aud": API_AUDIENCE, "sub": "api-client", "iat": now - 5, "exp": now + 300,
            "scope": "read", "client_id": "machine"}
    base.update(claims)
    return rogue.sign(base, header={"typ": "at+jwt"})


class Suite:
    """Runs requests and remembers every secret it sees."""

    def __init__(self, gw, rogue, workdir):
        self.gw, self.rogue, self.workdir = gw, rogue, workdir
        self.secrets: dict[str, str] = {}

    def keep(self, name: str, value: str | None):
        if value:
            self.secrets[f"{name}#{len(self.secrets)}"] = value

    def keep_cookies(self, b: Browser):
        for c in b.cookies():
            if c.name.startswith("__Host-oidc"):
                self.keep(f"cookie {c.name}", c.value)

    def upstream_token(self, r) -> str:
        assert r.status == 200, r
        token = r.json()["headers"]["authorization"].removeprefix("Bearer ")
        self.keep("access token", token)
        return token

    def login(self, name: str) -> Browser:
        b = Browser(self.workdir, name)
        first = b.get(self.gw.url("/"))
        assert first.status == 302, first
        auth = query_params(first.location)
        self.keep("state", auth["state"])
        self.keep("nonce", auth["nonce"])
        self.keep("login cookie", first.set_cookie(LOGIN_COOKIE_PREFIX).value)
        back = b.get(absolute(self.gw.url("/"), first.location))
        self.keep("code", query_params(back.location)["code"])
        done = b.get(absolute(back.url, back.location))
        assert done.status == 302, done
        self.keep("session cookie", done.set_cookie(SESSION_COOKIE).value)
        self.keep_cookies(b)
        return b


def test_no_secret_reaches_envoy_log_or_access_log(rogue, gateway, workdir):
    sealing_key = base64.b64encode(os.urandom(32)).decode()
    access_log = workdir / f"access-{uuid.uuid4().hex}.log"

    def with_access_log(cfg):
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"] = [{
            "name": "envoy.access_loggers.file",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                             "path": str(access_log)},
        }]

    gw = gateway(_idp=rogue, _env={"OIDC_COOKIE_KEYS": sealing_key}, _envoy_config=with_access_log,
                 _envoy_args=["--component-log-level", "wasm:trace"],
                 log_level="debug", cookie={"keys_env": "OIDC_COOKIE_KEYS"},
                 backchannel_logout_path=BACKCHANNEL_PATH,
                 bearer={"audiences": [API_AUDIENCE, CLIENT_ID],
                         "introspection": {"enabled": True, "cache_seconds": 30}},
                 authorization={"rules": [{"path_prefix": "/admin/", "allow": False}]},
                 session={"refresh_margin_seconds": 2})
    suite = Suite(gw, rogue, workdir)
    suite.keep("client secret", CLIENT_SECRET)
    suite.keep("sealing key", sealing_key)
    suite.keep("sealing key bytes (hex)", base64.b64decode(sealing_key).hex())

    # A login, requests on it, a refresh (the rogue provider rotates refresh tokens).
    rogue.control(access_token_ttl=5)
    alice = suite.login("secrets-alice")
    first_token = suite.upstream_token(alice.get(gw.url("/")))
    time.sleep(3.5)
    refreshed = suite.upstream_token(alice.get(gw.url("/")))
    assert refreshed != first_token, "the session was refreshed"
    suite.keep_cookies(alice)
    rogue.control(access_token_ttl=3600)
    assert alice.get(gw.url("/admin/x")).status == 403

    # A failed callback (the ID token's nonce is wrong), with its code and state.
    rogue.control(id_token_claims={"nonce": "wrong-nonce-value"})
    failing = Browser(workdir, "secrets-failing")
    first = failing.get(gw.url("/"))
    suite.keep("state", query_params(first.location)["state"])
    back = failing.get(absolute(gw.url("/"), first.location))
    suite.keep("code", query_params(back.location)["code"])
    assert failing.get(absolute(back.url, back.location)).status == 502
    rogue.control(id_token_claims={})

    # The session's opaque access token through introspection (twice: the cache), a JWT
    # accepted, one refused.
    api = Browser(workdir, "secrets-api")
    for token in (refreshed, refreshed, access_jwt(rogue), access_jwt(rogue, aud="https://other.api/")):
        suite.keep("bearer token", token)
        api.get(gw.url("/api/x"), accept_html=False, use_jar=False, headers={"Authorization": f"Bearer {token}"})

    # Logout: the redirect carries the ID token as id_token_hint; the refresh token is revoked.
    out = alice.get(gw.url("/oauth2/logout"))
    assert out.status == 302, out
    suite.keep("id token", query_params(out.location).get("id_token_hint"))
    suite.keep("logout state", query_params(out.location).get("state"))

    # A back-channel logout of a second login, then its replay.
    bob = suite.login("secrets-bob")
    token = logout_token(rogue, sub="alice")
    suite.keep("logout token", token)
    for _ in range(2):
        api.post(gw.url(BACKCHANNEL_PATH), {"logout_token": token}, use_jar=False, accept_html=False,
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert bob.get(gw.url("/")).status == 302, "the back-channel logout ended bob's session"

    stats = rogue.stats()
    assert stats["revocations"] >= 1, stats
    for revoked in stats["revoked_tokens"]:
        suite.keep("refresh token", revoked)

    kinds = {name.split("#")[0] for name in suite.secrets}
    for kind in ("client secret", "sealing key", "state", "nonce", "code", "login cookie", "session cookie",
                 "access token", "bearer token", "id token", "refresh token", "logout token"):
        assert kind in kinds, f"the suite never saw a {kind}"

    # Envoy writes its access log about once a second: wait for the last requests.
    wait_until(lambda: access_log.exists() and access_log.read_text().count(f"POST {BACKCHANNEL_PATH}") == 2,
               15, what="the access log to reach the last requests")
    time.sleep(1)
    envoy_log = gw.log()
    assert "event=login_failed reason=id_token_nonce_mismatch" in envoy_log, "the filter logged at all"
    assert "[trace][wasm]" in envoy_log, "Envoy's wasm logger ran at trace"
    assert "[debug][wasm]" in envoy_log and "oidc-filter: event=bearer_accepted" in envoy_log, \
        "the filter logged at debug"
    assert access_log.exists() and "/oauth2/callback" in access_log.read_text(), "the access log was written"
    leaked = find_secrets(envoy_log + access_log.read_text(), suite.secrets)
    assert not leaked, f"secrets in the logs: {leaked}"
