"""Kong's proxy-wasm engine (nginx + ngx_wasm_module + Wasmtime) as a gateway for the end-to-end
tests: the same .wasm, IdP and echo upstream as the Envoy tests, configured from
examples/kong/nginx.conf.

The engine is built by scripts/build-kong-engine (scripts/test runs it); `engine_binary()` finds it
through that script's cache, or OIDC_KONG_NGINX names a binary directly.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path

from harness import CLIENT_SECRET, REPO, WASM, ManagedProcess, deep_merge, http_get, wait_until

EXAMPLE = REPO / "examples" / "kong" / "nginx.conf"
BUILD_SCRIPT = REPO / "scripts" / "build-kong-engine"
FILTER_CONFIG = re.compile(r"(proxy_wasm oidc ')([^']*)(';)")


def engine_binary() -> tuple[str | None, str]:
    """The nginx binary with ngx_wasm_module, or None and why not."""
    explicit = os.environ.get("OIDC_KONG_NGINX")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"OIDC_KONG_NGINX={explicit} is not an executable"
    try:
        found = subprocess.run([str(BUILD_SCRIPT), "--path"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"scripts/build-kong-engine --path failed: {err}"
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip(), ""
    detail = found.stderr.strip()
    return None, ("Kong's proxy-wasm engine is not built: run scripts/build-kong-engine "
                  "(about 6 minutes; scripts/test does it)" + (f" [{detail}]" if detail else ""))


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"examples/kong/nginx.conf no longer has exactly one {old!r}"
    return text.replace(old, new)


def example_filter_config(text: str | None = None) -> dict:
    """The filter's JSON configuration in examples/kong/nginx.conf."""
    match = FILTER_CONFIG.search(text if text is not None else EXAMPLE.read_text())
    assert match, "examples/kong/nginx.conf has no proxy_wasm oidc '...' line"
    return json.loads(match.group(2))


def build_nginx_config(listen_port: int, idp_port: int, upstream_port: int, config_overrides: dict | None = None,
                       workers: int = 2, extra_servers: str = "") -> str:
    """examples/kong/nginx.conf with the test's ports, the absolute wasm path, the worker count
    and filter settings patched in. The issuer, redirect_uri and provider address follow the ports
    unless `config_overrides` set them. `extra_servers` is nginx text added to the http block."""
    text = EXAMPLE.read_text()
    fc = example_filter_config(text)
    fc["issuer"] = f"http://127.0.0.1:{idp_port}"
    fc["provider_cluster"] = f"127.0.0.1:{idp_port}"
    fc["redirect_uri"] = f"http://127.0.0.1:{listen_port}/oauth2/callback"
    fc = deep_merge(fc, config_overrides or {})
    encoded = json.dumps(fc)
    assert "'" not in encoded, "the filter config must not contain a single quote (nginx string)"
    text = FILTER_CONFIG.sub(lambda m: m.group(1) + encoded + m.group(3), text, count=1)
    text = _replace_once(text, "worker_processes 2;", f"worker_processes {workers};")
    text = _replace_once(text, "module oidc target/wasm32-wasip1/release/oidc_filter.wasm;", f"module oidc {WASM};")
    text = _replace_once(text, "server 127.0.0.1:9602;", f"server 127.0.0.1:{upstream_port};")
    text = _replace_once(text, "listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen_port};")
    if extra_servers:
        text = text.rstrip()
        assert text.endswith("}"), "examples/kong/nginx.conf must end with the http block"
        text = text[:-1] + extra_servers + "\n}\n"
    return text


def location_block(filter_config: dict, upstream_port: int) -> str:
    """The example's location body for another filter instance (same allow-list)."""
    example = EXAMPLE.read_text()
    start = example.index("location / {")
    end = example.index("proxy_pass http://app;", start)
    body = example[start + len("location / {"):end]
    body = FILTER_CONFIG.sub(lambda m: m.group(1) + json.dumps(filter_config) + m.group(3), body, count=1)
    return body + f"proxy_pass http://127.0.0.1:{upstream_port};\n"


class Nginx:
    """nginx with ngx_wasm_module running a patched copy of examples/kong/nginx.conf. Quacks like
    harness.Gateway for the browser helpers (url, port, idp, wait_metadata, log)."""

    def __init__(self, workdir: Path, binary: str, config_text: str, port: int, env: dict | None = None):
        self.binary = binary
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"nginx-{port}-", dir=workdir))
        self.config_path = self.workdir / "nginx.conf"
        self.config_path.write_text(config_text)
        self.log_path = self.workdir / "nginx.log"
        self.env = {"OIDC_CLIENT_SECRET": CLIENT_SECRET}
        self.env.update(env or {})
        self.process: ManagedProcess | None = None
        self.idp = None

    def url(self, path: str = "/") -> str:
        return self.base + path

    def start(self) -> "Nginx":
        argv = [self.binary, "-p", str(self.workdir), "-e", "stderr", "-c", str(self.config_path)]
        self.process = ManagedProcess("nginx", argv, self.log_path, env=self.env)
        return self

    def wait_ready(self, timeout: float = 30.0) -> "Nginx":
        def ready():
            if not self.process.alive():
                raise RuntimeError(f"nginx exited with {self.process.proc.returncode}:\n{self.log_summary()}")
            return http_get(self.url("/__nginx_ready"), timeout=1) is not None

        wait_until(ready, timeout, what=f"nginx on port {self.port}")
        return self

    def wait_metadata(self, timeout: float = 20.0) -> "Nginx":
        """Polls GET / until the filter stops answering 503 (provider metadata loaded)."""

        def loaded():
            if not self.process.alive():
                raise RuntimeError(f"nginx exited:\n{self.log_summary()}")
            r = http_get(self.url("/"), timeout=2, headers={"Accept": "text/html"})
            return r is not None and r[0] != 503

        wait_until(loaded, timeout, interval=0.1, what="the filter's provider metadata (GET / != 503)")
        return self

    def crashed_workers(self) -> list[str]:
        """nginx's notices of workers that died (a trap or a crash in the engine)."""
        return [ln for ln in self.log().splitlines() if "exited on signal" in ln]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_summary(self, tail: int = 20) -> str:
        lines = self.log().splitlines()
        bad = [ln for ln in lines if any(k in ln for k in ("[error]", "[crit]", "[alert]", "[emerg]", "[warn]"))]
        return "\n".join(["... errors:"] + bad[-30:] + ["... last lines:"] + lines[-tail:])

    def stop(self):
        if self.process:
            self.process.stop()


def raw_http(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Sends bytes as they are (header spellings curl would not keep) and returns the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)

