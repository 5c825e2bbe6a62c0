"""scripts/check-provider against the test IdP (good: default and Okta profiles) and against a
broken provider served here (issuer mismatch, a missing endpoint, HS256 only, no usable key,
no end_session_endpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import REPO

SCRIPT = REPO / "scripts" / "check-provider"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_the_test_idp_passes(idp):
    r = run(idp.issuer, "--insecure-allow-http")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "issuer matches exactly" in r.stdout and "JWKS: 1 of 1 keys usable" in r.stdout


def test_the_okta_profile_passes_with_its_path_issuer(idp_factory, tmp_path):
    okta = idp_factory(env={"IDP_PROFILE": "okta"})
    config = json.loads((REPO / "deploy" / "providers" / "okta.json").read_text())
    config.update(issuer=okta.issuer, insecure_allow_http=True)
    path = tmp_path / "okta.json"
    path.write_text(json.dumps(config))
    r = run("--config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"end_session_endpoint {okta.issuer}/session/end" in r.stdout


def test_http_and_a_trailing_slash_are_reported(idp):
    r = run(idp.issuer)
    assert r.returncode == 1 and "uses http" in r.stdout, r.stdout
    r = run(idp.issuer + "/", "--insecure-allow-http")
    assert r.returncode == 1 and "issuer mismatch" in r.stdout and "trailing slash" in r.stdout, r.stdout


@pytest.fixture
def broken_provider():
    """Discovery that names another issuer, lacks token_endpoint, offers HS256 only and no
    end_session_endpoint; a JWKS with only a symmetric and a short RSA key."""
    state = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            base = state["base"]
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": "https://someone-else.example", "authorization_endpoint": f"{base}/auth",
                        "jwks_uri": f"{base}/jwks", "id_token_signing_alg_values_supported": ["HS256"]}
            elif self.path == "/jwks":
                body = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
                                 {"kty": "RSA", "kid": "short", "n": "AQAB" * 4, "e": "AQAB"}]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["base"]
    server.shutdown()
    server.server_close()


def test_a_broken_provider_is_reported(broken_provider):
    r = run(broken_provider, "--insecure-allow-http")
    out = r.stdout
    assert r.returncode == 1, out
    assert "FAIL  issuer mismatch" in out
    assert "FAIL  token_endpoint missing" in out
    assert "WARN  no end_session_endpoint" in out
    assert "FAIL  the provider signs ID tokens with HS256" in out
    assert "FAIL  JWKS: none of 2 keys is usable" in out


def test_an_unreachable_provider_is_reported():
    r = run("http://127.0.0.1:9/", "--insecure-allow-http", "--timeout", "2")
    assert r.returncode == 1 and "FAIL  discovery" in r.stdout, r.stdout
