#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/: real-looking inputs
for every target (discovery documents, key sets, token responses, cookies,
signed tokens, request heads). Needs python3-cryptography. Run from anywhere;
existing seeds of the same name are overwritten, others are left alone.

Tokens are signed with the fixture's keys (fuzz/src/lib.rs): the Ed25519 key
from the seed [42; 32] and the test IdP's RSA key (tests/idp/keys), and cookies
are sealed with the fixture's AES key [7; 32], so the seeds open and verify."""

import base64
import hashlib
import json
import os
import pathlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
NOW = 1_800_000_000
ISSUER = "https://idp.example"
SESSION = "__Host-oidc-session"
LOGIN_PREFIX = "__Host-oidc-login-"
ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([42] * 32))
AES_KEY = bytes([7] * 32)
EC_KEY = ec.derive_private_key(123456789, ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64int(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def rsa_key():
    jwk = json.loads((ROOT / "tests/idp/keys/signing-jwks.json").read_text())["keys"][0]
    num = lambda k: int.from_bytes(base64.urlsafe_b64decode(jwk[k] + "=="), "big")
    public = rsa.RSAPublicNumbers(num("e"), num("n"))
    private = rsa.RSAPrivateNumbers(
        num("p"), num("q"), num("d"), num("dp"), num("dq"), num("qi"), public
    )
    return private.private_key(), jwk


RSA_KEY, RSA_JWK = rsa_key()


def jwt(header: dict, claims: dict) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if header.get("alg") == "RS256":
        sig = RSA_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = ED_KEY.sign(signing_input.encode())
    return f"{signing_input}.{b64(sig)}"


def seal(associated_data: bytes, plaintext: bytes, nonce: bytes) -> str:
    return b64(nonce + AESGCM(AES_KEY).encrypt(nonce, plaintext, associated_data))


def write(target: str, name: str, data) -> None:
    directory = FUZZ / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / name).write_bytes(data)


ID_CLAIMS = {
    "iss": ISSUER, "aud": "rp", "sub": "alice", "sid": "s1", "nonce": "n-0S6_WzA2Mj",
    "exp": NOW + 300, "iat": NOW, "email": "alice@example.com", "groups": ["admin"],
}
LOGOUT_CLAIMS = {
    "iss": ISSUER, "aud": "rp", "sub": "alice", "sid": "s1", "jti": "j1", "iat": NOW,
    "exp": NOW + 120, "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
}
ACCESS_CLAIMS = {
    "iss": ISSUER, "aud": "api", "sub": "alice", "exp": NOW + 300, "iat": NOW,
    "scope": "openid email", "client_id": "rp", "jti": "at1",
}
ED_HEADER = {"alg": "EdDSA", "kid": "fuzz-ed25519"}
RS_HEADER = {"alg": "RS256", "kid": "test-rs256"}
ID_TOKEN = jwt(ED_HEADER, ID_CLAIMS)
ACCESS_JWT = jwt({**ED_HEADER, "typ": "at+jwt"}, ACCESS_CLAIMS)
LOGOUT_TOKEN = jwt({**ED_HEADER, "typ": "logout+jwt"}, LOGOUT_CLAIMS)


def session(**over) -> dict:
    s = {
        "sub": "alice", "sid": "s1", "created_at": NOW - 100, "expires_at": NOW + 3600,
        "last_seen": NOW - 10, "access_token": "opaque-access-token",
        "access_token_expires_at": NOW + 300, "refresh_token": "rt", "id_token": ID_TOKEN,
        "claims": {"email": "alice@example.com"},
    }
    s.update(over)
    return s


def config_seeds():
    base = {
        "issuer": ISSUER, "client_id": "rp", "client_secret": "s3cret",
        "redirect_uri": "https://app.example/oauth2/callback", "provider_cluster": "idp",
    }
    write("config", "minimal.json", json.dumps(base, indent=2))
    full = {
        **base,
        "client_secret": None, "client_secret_env": "OIDC_CLIENT_SECRET",
        "token_endpoint_auth_method": "client_secret_post",
        "logout_path": "/oauth2/logout", "post_logout_redirect_uri": "https://app.example/bye",
        "backchannel_logout_path": "/oauth2/backchannel-logout",
        "scopes": ["email", "profile", "offline_access"],
        "provider_clusters_by_authority": {"idp.example": "idp", "idp.example:8443": "idp_alt"},
        "callout_timeout_ms": 5000, "clock_skew_seconds": 30, "login_timeout_seconds": 600,
        "metadata_refresh_seconds": 3600, "id_token_signing_algorithms": ["RS256", "ES256", "EdDSA"],
        "cookie": {"prefix": "app", "secure": True, "http_only": True, "same_site": "Strict",
                   "domain": "app.example", "keys_env": "OIDC_COOKIE_KEYS"},
        "session": {"store": "shared_data", "absolute_timeout_seconds": 28800,
                    "idle_timeout_seconds": 1800, "refresh_margin_seconds": 60,
                    "max_sessions": 50000, "sweep_interval_seconds": 60},
        "upstream": {"authorization": "access_token", "claim_headers": {"x-user": "sub", "x-email": "email", "x-org": "org.name"},
                     "claims_separator": ",", "claims_header": "x-auth-request-claims"},
        "bearer": {"mode": "accept", "audiences": ["api"],
                   "introspection": {"enabled": True, "cache_seconds": 30, "max_entries": 10000}},
        "api_path_prefixes": ["/api/"], "public_paths": ["/health", "/static/"],
        "authorization": {"default": "allow", "rules": [
            {"path_prefix": "/admin/", "hosts": ["app.example"], "methods": ["GET", "POST"],
             "require": {"claims": {"groups": "admin"}, "scopes": ["admin"], "audience": "api"}},
            {"path_prefix": "/open/", "allow": True}]},
    }
    del full["client_secret"]
    write("config", "full.json", json.dumps(full, indent=2))
    write("config", "cookie_store.json", json.dumps(
        {**base, "insecure_allow_http": True, "issuer": "http://127.0.0.1:9601",
         "redirect_uri": "http://127.0.0.1:10000/callback",
         "cookie": {"secure": False, "same_site": "Lax", "keys": ["c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"]},
         "session": {"store": "cookie"}}, indent=2))
    write("config", "bearer_require.json", json.dumps(
        {**base, "bearer": {"mode": "require", "audiences": ["https://api.example"]}}))
    write("config", "unknown_field.json", json.dumps({**base, "issuer_url": ISSUER}))


def cookie_seeds():
    write("cookies", "browser", "_ga=GA1.2.3; theme=dark; __Host-oidc-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    write("cookies", "chunks", f"{SESSION}-0=2.{'A' * 40}; other=1; {SESSION}-1={'B' * 40}")
    write("cookies", "several_headers", f"a=1; b=2\n{SESSION}=xyz\n{LOGIN_PREFIX}abcdefgh=sealed; c")
    write("cookies", "odd", ' ; =; ==x; "quoted"="v"; sp ace=1;;a=b=c; \x7f=1')
    sealed = seal(f"oidc-filter session v1|{SESSION}".encode(), json.dumps(session()).encode(), bytes(12))
    write("cookies", "sealed_session", f"x=1; {SESSION}={sealed}")
    mid = len(sealed) // 2
    write("cookies", "sealed_chunks", f"{SESSION}-0=2.{sealed[:mid]}; {SESSION}-1={sealed[mid:]}")


def sealed_seeds():
    s = seal(f"oidc-filter session v1|{SESSION}".encode(), json.dumps(session()).encode(), bytes(range(12)))
    write("sealed_cookie", "session", b"\x01" + s.encode())
    raw = seal(b"ad", b"hello", bytes(12))
    write("sealed_cookie", "raw", b"\x00" + raw.encode())
    login = {"state": "st", "nonce": "n", "code_verifier": "v" * 43, "return_to": "/app?x=1", "issued_at": NOW}
    name = "oidc_login_abcdefgh"
    write("sealed_cookie", "login", b"\x02" + seal(f"oidc-filter login v1|{name}".encode(), json.dumps(login).encode(), bytes(12)).encode())
    write("sealed_cookie", "round_trip", b"\x03" + b"any bytes at all \x00\xff")
    # Regression: a large numeric claim came back from the cookie one bit off.
    write("sealed_cookie", "session_big_number", b"\x04" + json.dumps(session()).encode()[:-2] + b', "n": 180000030777777777777777777777777777777777777777777770}}')
    write("sealed_cookie", "session_json", b"\x04" + json.dumps(session(claims={"big": "x" * 5000})).encode())


def path_seeds():
    for i, p in enumerate([
        "/", "/app/page?x=1&y=%2F", "/a/./b/../c//d/", "/%2e%2E/etc/passwd", "/admin;x/..;/secret",
        "//evil.example/", "/\\evil.example", "/%2F%2Fevil", "/%252F", "/caf%C3%A9?q=a%20b",
        "/%C0%AE%C0%AE/", "/a%00b", "/%09/x", "/health", "/static/../admin/",
    ]):
        write("paths", f"p{i:02}", p)


def discovery_seeds():
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "userinfo_endpoint": f"{ISSUER}/me",
        "end_session_endpoint": f"{ISSUER}/session/end",
        "introspection_endpoint": f"{ISSUER}/token/introspection",
        "revocation_endpoint": f"{ISSUER}/token/revocation",
        "registration_endpoint": None,
        "scopes_supported": ["openid", "offline_access", "email", "profile"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["form_post", "fragment", "query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "PS256", "RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": ["sub", "sid", "auth_time", "iss", "email", "email_verified"],
        "code_challenge_methods_supported": ["S256"],
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
    }
    write("discovery", "oidc_provider.json", json.dumps(doc, indent=2))
    keycloak = {k: v.replace(ISSUER, ISSUER + "/realms/main") if isinstance(v, str) else v for k, v in doc.items()}
    keycloak["issuer"] = ISSUER
    keycloak["mtls_endpoint_aliases"] = {"token_endpoint": "https://mtls.idp.example/token"}
    write("discovery", "keycloak_like.json", json.dumps(keycloak))
    write("discovery", "http_endpoints.json", json.dumps({**doc, "token_endpoint": "http://127.0.0.1:9601/token"}))
    write("discovery", "wrong_issuer.json", json.dumps({**doc, "issuer": "https://evil.example"}))


def jwks_seeds():
    ed_pub = ED_KEY.public_key().public_bytes_raw()
    ec_pub = EC_KEY.public_key().public_numbers()
    keys = [
        {"kty": "RSA", "kid": "test-rs256", "use": "sig", "alg": "RS256", "n": RSA_JWK["n"], "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig", "alg": "ES256",
         "x": b64(ec_pub.x.to_bytes(32, "big")), "y": b64(ec_pub.y.to_bytes(32, "big"))},
        {"kty": "OKP", "crv": "Ed25519", "kid": "fuzz-ed25519", "alg": "EdDSA", "x": b64(ed_pub)},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_JWK["n"], "e": "AQAB"},
    ]
    write("jwks", "mixed.json", json.dumps({"keys": keys}, indent=2))
    write("jwks", "no_kids.json", json.dumps({"keys": [{k: v for k, v in key.items() if k != "kid"} for key in keys[:3]]}))
    write("jwks", "duplicate_kids.json", json.dumps({"keys": [dict(k, kid="same") for k in keys]}))
    write("jwks", "key_ops.json", json.dumps({"keys": [dict(keys[2], key_ops=["verify"]), dict(keys[1], key_ops=["sign"]), {"kty": "oct", "k": "c2VjcmV0"}]}))


def token_seeds():
    ok = {"access_token": "opaque-access-token", "token_type": "Bearer", "expires_in": 3600,
          "refresh_token": "rt", "id_token": ID_TOKEN, "scope": "openid email"}
    write("token_response", "ok", b"\x00" + json.dumps(ok).encode())
    write("token_response", "no_refresh", b"\x00" + json.dumps({k: v for k, v in ok.items() if k != "refresh_token"}).encode())
    write("token_response", "mac", b"\x00" + json.dumps({**ok, "token_type": "mac"}).encode())
    write("token_response", "invalid_grant", b"\x01" + b'{"error":"invalid_grant","error_description":"grant request is invalid"}')
    write("token_response", "server_error", b"\x03" + b"<html>502 Bad Gateway</html>")
    active = {"active": True, "token_type": "Bearer", "iss": ISSUER, "aud": "api", "sub": "alice",
              "client_id": "rp", "exp": NOW + 300, "iat": NOW - 10, "scope": "openid admin"}
    write("introspection", "active", b"\x00" + json.dumps(active).encode())
    write("introspection", "client_only", b"\x00" + json.dumps({k: v for k, v in active.items() if k != "aud"}).encode())
    write("introspection", "refresh_token", b"\x00" + json.dumps({**active, "token_type": "refresh_token"}).encode())
    write("introspection", "inactive", b"\x00" + b'{"active":false}')
    write("introspection", "unsupported", b"\x01" + b'{"error":"unsupported_token_type"}')


def jwt_seeds():
    for name, token in {
        "id_ed25519": ID_TOKEN,
        "id_rs256": jwt(RS_HEADER, ID_CLAIMS),
        "access_at_jwt": ACCESS_JWT,
        "logout": LOGOUT_TOKEN,
        "logout_rs256": jwt({**RS_HEADER, "typ": "logout+jwt"}, LOGOUT_CLAIMS),
        "alg_none": b64(b'{"alg":"none"}') + "." + b64(json.dumps(ID_CLAIMS).encode()) + ".",
        "hs256": b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(ID_CLAIMS).encode()) + "." + b64(bytes(32)),
        "crit": jwt({**ED_HEADER, "crit": ["b64"], "b64": False}, ID_CLAIMS),
        "jwe": "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d",
    }.items():
        write("jwt_raw", name, token)
    write("jwt_signed", "id", b"\x00\n{}")
    write("jwt_signed", "id_more", b"\x00\n" + json.dumps({"aud": ["rp", "other"], "azp": "rp", "nbf": NOW - 5, "auth_time": NOW - 60}).encode())
    write("jwt_signed", "id_typed", b"\x00JWT\n" + json.dumps({"exp": NOW - 1000}).encode())
    write("jwt_signed", "logout", b"\x01logout+jwt\n{}")
    write("jwt_signed", "logout_nonce", b"\x01logout+jwt\n" + json.dumps({"nonce": "x", "sid": None}).encode())
    write("jwt_signed", "access", b"\x02at+jwt\n{}")
    write("jwt_signed", "access_app_type", b"\x02application/at+JWT\n" + json.dumps({"aud": ["x", "api"], "iat": NOW + 100}).encode())
    write("jwt_signed", "raw", b"\x03{\"alg\":\"EdDSA\",\"kid\":\"fuzz-ed25519\"}\n" + json.dumps(ID_CLAIMS).encode())


def shared_seeds():
    key = b64(hashlib.sha256(b"A" * 43).digest())
    write("shared_records", "session_bucket", b"\x00" + json.dumps({"sessions": {key: session(), "other": session(sub="bob", created_at=NOW - 9000)}}).encode())
    write("shared_records", "index_bucket", b"\x01" + json.dumps({"entries": {"digest": [[key, NOW + 100], ["k2", NOW - 1]]}}).encode())
    write("shared_records", "once", b"\x02" + json.dumps({"slot": NOW // 60, "used": ["abcdefghijklmnop"]}).encode())
    write("shared_records", "deny_list", b"\x03" + json.dumps({"v1": [{"entry": b64(hashlib.sha256(f"sid|{ISSUER}|s1".encode()).digest()), "at": NOW - 5, "until": NOW + 100}]}).encode())
    # Regression: a non-UTF-8 byte in an unknown member hid the denial from check_encoded.
    write("shared_records", "deny_list_non_utf8", b"\x03" + json.dumps({"v1": [{"entry": b64(hashlib.sha256(f"sid|{ISSUER}|s1".encode()).digest()), "at": NOW - 5, "until": NOW + 100}]}).encode()[:-1] + b', "x": "\xf3"}')
    write("shared_records", "lease", b"\x04" + json.dumps({"claims": [[key, NOW + 5], ["x", NOW - 5]]}).encode())
    jwks = json.loads((FUZZ / "corpus/jwks/mixed.json").read_text())
    shared = {"metadata": {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth",
              "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks",
              "id_token_signing_alg_values_supported": ["EdDSA"],
              "authorization_response_iss_parameter_supported": True},
              "jwks": json.dumps(jwks), "metadata_fetched_at": NOW, "jwks_fetched_at": NOW}
    write("shared_records", "provider", b"\x05" + json.dumps(shared).encode())
    write("shared_records", "fetch_status", b"\x06" + json.dumps({"failures": 3, "next_attempt_at": NOW + 4, "lease_until": 0}).encode())
    write("shared_records", "session", b"\x07" + json.dumps(session()).encode())
    write("shared_records", "session_big_number", b"\x07" + json.dumps(session(claims={"n": 1.8000003077777777e53})).encode())
    write("shared_records", "store_sweep_state", b"\x08" + json.dumps({"owner": 1, "lease_until": NOW - 1, "cursor": 3, "next_pass_at": NOW, "evict_before": NOW - 50}).encode())
    write("shared_records", "store_bucket", b"\x08" + json.dumps({"sessions": {key: session(), "k2": session(expires_at=NOW - 1)}}).encode())


def flow_seeds():
    browser = "accept: text/html\nsec-fetch-mode: navigate\nsec-fetch-dest: document\n"
    seeds = {
        "navigate_no_session": f"GET /app/page?x=1 app.example\n{browser}\n",
        "xhr_no_session": "GET /api/items app.example\naccept: application/json\nx-requested-with: XMLHttpRequest\n\n",
        "public": "GET /health app.example\n\n",
        "session_ok": f"GET /app app.example\ncookie: __Host-oidc-session=@SID@\n{browser}\nsession\n",
        "session_json": "GET /admin/x app.example\ncookie: __Host-oidc-session=@SID@\n\nsession "
                        + json.dumps(session(claims={"groups": ["user"]})) + "\n",
        "session_refresh": "GET /app app.example\ncookie: __Host-oidc-session=@SID@\n\nsession "
                           + json.dumps(session(access_token_expires_at=NOW - 1)) + "\nyes\nresponse 200 "
                           + json.dumps({"access_token": "at2", "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt2", "id_token": "@ID_TOKEN@"}) + "\n",
        "refresh_follower": "GET /app app.example\ncookie: __Host-oidc-session=@SID@\n\nsession "
                            + json.dumps(session(access_token_expires_at=NOW - 1)) + "\nno\nnone\n",
        "refresh_failed": "GET /app app.example\ncookie: __Host-oidc-session=@SID@\n\nsession "
                          + json.dumps(session(access_token_expires_at=NOW - 1)) + "\nyes\nresponse 400 {\"error\":\"invalid_grant\"}\n",
        "callback": f"GET /oauth2/callback?code=c1&state=@STATE@&iss=https%3A%2F%2Fidp.example app.example\ncookie: @LOGIN@\n{browser}\nyes\n",
        "callback_token_error": "GET /oauth2/callback?code=c1&state=@STATE@&iss=https%3A%2F%2Fidp.example app.example\ncookie: @LOGIN@; __Host-oidc-session=@SID@\n\nyes\nresponse 400 {\"error\":\"invalid_grant\"}\n",
        "callback_replayed": "GET /oauth2/callback?code=c1&state=@STATE@&iss=https%3A%2F%2Fidp.example app.example\ncookie: @LOGIN@\n\nno\n",
        "callback_error": "GET /oauth2/callback?error=access_denied&error_description=End-User+aborted&state=@STATE@&iss=https%3A%2F%2Fidp.example app.example\ncookie: @LOGIN@\n\n",
        "callback_dup": "GET /oauth2/callback?state=a&state=b app.example\n\n",
        "logout": "GET /oauth2/logout app.example\ncookie: __Host-oidc-session=@SID@\n\nsession\n",
        "backchannel": "POST /oauth2/backchannel-logout app.example\ncontent-type: application/x-www-form-urlencoded\n\nbytes logout_token=@LOGOUT_TOKEN@\nyes\ncount 2\n",
        "cookie_store": f"#1 1 0 5\nGET /app app.example\ncookie: @SESSION@\n{browser}\nbytes {{\"v1\":[]}}\n",
        "cookie_store_refresh": "#1 1 0 5\nGET /app app.example\ncookie: theme=dark; @STALE_SESSION@\n\nnone\nyes\n",
        "cookie_store_callback": "#1 1 0 5\nGET /oauth2/callback?code=c1&state=@STATE@&iss=https%3A%2F%2Fidp.example app.example\ncookie: @LOGIN@\n\nyes\n",
        "bearer_jwt": "#2 1 0 5\nGET /api/items app.example\nauthorization: Bearer @BEARER@\n\n",
        "bearer_unknown_kid": "#2 1 0 5 {\"aud\":\"rp\"}\nGET /api/items app.example\nauthorization: Bearer eyJhbGciOiJFZERTQSIsImtpZCI6Im5ldyJ9.e30.AAAA\n\n",
        "bearer_introspection": "#3 1 0 5\nGET /admin/items app.example\nauthorization: Bearer opaque-token-123\n\nnone\nresponse 200 "
                                + json.dumps({"active": True, "token_type": "Bearer", "iss": ISSUER, "aud": "api", "sub": "alice", "exp": NOW + 300, "scope": "admin", "groups": "admin"}) + "\n",
        "bearer_cached": "#3 1 0 5\nGET /api/items app.example\nauthorization: Bearer opaque-token-123\n\nbytes {\"until\":1800000100,\"claims\":{\"sub\":\"alice\"}}\n",
        "provider_down": "#0 0 0 5\nGET /app app.example\n\n",
        # Regression: a token endpoint's access token with CR/LF reached the upstream's headers.
        "refresh_crlf_token": "GET /app app.example\ncookie: __Host-oidc-session=@SID@\n\nsession "
                              + json.dumps(session(access_token_expires_at=NOW - 1)) + "\nyes\nresponse 200 "
                              + json.dumps({"access_token": "at2\r\nx-user: admin", "token_type": "Bearer", "expires_in": 300}) + "\n",
        "callback_error_html": "GET /oauth2/callback?error=x&error_description=%3Cscript%3Ealert(1)%3C/script%3E&state=@STATE@&iss=https%3A%2F%2Fidp.example app.example\ncookie: @LOGIN@\n\n",
        "odd_target": "GET //evil.example/%2e%2e/x?next=//evil app.example:8443\nx-user: forged\nauthorization: Basic YTpi\n\n",
    }
    for name, text in seeds.items():
        write("flow", name, text)


if __name__ == "__main__":
    config_seeds()
    cookie_seeds()
    sealed_seeds()
    path_seeds()
    discovery_seeds()
    jwks_seeds()
    token_seeds()
    jwt_seeds()
    shared_seeds()
    flow_seeds()
    print("seeds written to", FUZZ / "corpus")
