"""Fixtures for the end-to-end tests: the test IdP, the echo upstream and Envoy gateways.

- `rogue`: a scriptable misbehaving provider (tests/idp/rogue.mjs) for one test.
- `idp`: one oidc-provider for the whole run, registered with the redirect URIs of a pool of
  gateway ports (`gateway_ports`), so every gateway the tests start can log in through it.
- `echo`: one echo upstream for the whole run.
- `gw`: one gateway with the default configuration for the whole run.
- `gateway(**config_overrides)`: factory; starts Envoy with a patched copy of envoy.yaml and
  waits until the filter has loaded the provider metadata. Options (keyword-only, prefixed to
  keep them apart from the filter's config keys): `_idp=` another Idp, `_port=` a listener
  port, `_wait_metadata=False`, `_raw_config=` the filter JSON verbatim, `_env=` extra env,
  `_concurrency=` Envoy's worker count (default 2), `_envoy_args=` extra Envoy arguments
  (e.g. ["--component-log-level", "wasm:trace"]), `_envoy_config=` a function that edits the
  Envoy config (a dict) before it is written.
- `browser()`: factory of curl-driven browsers, each with its own cookie jar.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import (
    REPO,
    WASM,
    Browser,
    Echo,
    Gateway,
    Idp,
    Rogue,
    build_envoy_config,
    free_port,
    logged_in,
)

POOL_SIZE = 12


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def gateway_ports() -> list[int]:
    """Listener ports for gateways; all are registered as redirect URIs at the shared IdP."""
    ports: set[int] = set()
    while len(ports) < POOL_SIZE:
        ports.add(free_port())
    return sorted(ports)


def redirect_uris(ports):
    return [f"http://127.0.0.1:{p}/oauth2/callback" for p in ports]


def post_logout_uris(ports):
    return [f"http://127.0.0.1:{p}/" for p in ports]


@pytest.fixture(scope="session")
def idp(workdir, gateway_ports):
    server = Idp(workdir, redirect_uris=redirect_uris(gateway_ports),
                 post_logout_redirect_uris=post_logout_uris(gateway_ports))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def idp_factory(workdir, gateway_ports):
    """Starts extra IdPs (their own port and settings); all are stopped after the test."""
    started: list[Idp] = []

    def make(start: bool = True, **kwargs) -> Idp:
        kwargs.setdefault("redirect_uris", redirect_uris(gateway_ports))
        kwargs.setdefault("post_logout_redirect_uris", post_logout_uris(gateway_ports))
        server = Idp(workdir, **kwargs)
        started.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def rogue(workdir):
    """A fresh misbehaving provider (tests/idp/rogue.mjs) for one test; use gateway(_idp=rogue)."""
    server = Rogue(workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def echo(workdir):
    server = Echo(workdir).start()
    yield server
    server.stop()


class _PortPool:
    def __init__(self, ports):
        self.free = list(ports)

    def take(self, port=None) -> int:
        if port is None:
            if not self.free:
                raise RuntimeError("no free gateway port left in the pool")
            return self.free.pop(0)
        if port in self.free:
            self.free.remove(port)
        return port

    def give(self, port):
        if port not in self.free:
            self.free.append(port)


@pytest.fixture(scope="session")
def port_pool(gateway_ports):
    return _PortPool(gateway_ports)


@pytest.fixture(scope="session")
def wasm() -> Path:
    """The module every gateway loads: the shipped build (scripts/build-wasm: cargo build, then
    wasm-opt), brought up to date first, so the tests never run a stale or unoptimized module.
    OIDC_FILTER_WASM names another build, used as it is."""
    if not os.environ.get("OIDC_FILTER_WASM"):
        built = subprocess.run([str(REPO / "scripts" / "build-wasm")], capture_output=True, text=True)
        if built.returncode != 0:
            pytest.fail(f"scripts/build-wasm failed:\n{built.stderr[-3000:]}", pytrace=False)
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: build it with scripts/build-wasm", pytrace=False)
    return WASM


class GatewayFactory:
    """Starts gateways; stop_all() stops them and returns their ports to the pool."""

    def __init__(self, workdir, idp, echo, port_pool):
        self.workdir, self.idp, self.echo, self.port_pool = workdir, idp, echo, port_pool
        self.started: list[Gateway] = []

    def __call__(self, _idp: Idp | None = None, _port: int | None = None, _wait_metadata: bool = True,
                 _wait_ready: bool = True, _raw_config: str | None = None, _env: dict | None = None,
                 _concurrency: int = 2, _envoy_args: list[str] | None = None, _envoy_config=None,
                 **config_overrides) -> Gateway:
        provider = _idp or self.idp
        port = self.port_pool.take(_port)
        cfg = build_envoy_config(port, provider.port, self.echo.port, config_overrides, raw_filter_config=_raw_config)
        if _envoy_config is not None:
            _envoy_config(cfg)
        gw = Gateway(self.workdir, cfg, port, env=_env, concurrency=_concurrency, extra_args=_envoy_args)
        gw.idp = provider
        self.started.append(gw)
        gw.start()
        if _wait_ready:
            gw.wait_ready()
            if _wait_metadata:
                gw.wait_metadata()
        return gw

    def stop_all(self, show_logs: bool = False):
        for gw in self.started:
            gw.stop()
            self.port_pool.give(gw.port)
            if show_logs:
                print(f"\n--- Envoy log ({gw.log_path}), last lines ---\n{gw.log()[-6000:]}")
        self.started.clear()


@pytest.fixture
def gateway(workdir, idp, echo, port_pool, wasm):
    """Factory: gateway(**filter_config_overrides) -> a started Gateway whose filter has loaded
    the provider metadata; stopped after the test."""
    factory = GatewayFactory(workdir, idp, echo, port_pool)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def gw(workdir, idp, echo, port_pool, wasm):
    """One gateway with the default configuration, shared by the tests that need nothing special
    (each test uses its own browser, so sessions do not mix)."""
    factory = GatewayFactory(workdir, idp, echo, port_pool)
    try:
        gateway = factory()
    except Exception:
        factory.stop_all(show_logs=True)
        raise
    yield gateway
    try:
        assert_still_serving(gateway, workdir)
    finally:
        factory.stop_all()


def assert_still_serving(gateway: Gateway, workdir: Path):
    """After all the hostile input the shared gateway got, its VMs still work: a new login
    and requests over new connections (both workers) succeed."""
    b = Browser(workdir, "liveness")
    logged_in(b, gateway, "/liveness")
    statuses = [b.get(gateway.url("/liveness")).status for _ in range(8)]
    assert statuses == [200] * 8, f"the shared gateway stopped serving logged-in requests: {statuses}"


@pytest.fixture
def browser(workdir):
    """Factory of browsers (curl + cookie jar)."""

    def make(name: str = "browser") -> Browser:
        return Browser(workdir, name)

    return make


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """On a failed test, attach the tail of the logs of the processes it used."""
    report = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        gateways = list(funcargs["gateway"].started) if "gateway" in funcargs else []
        if "gw" in funcargs:
            gateways.append(funcargs["gw"])
        for g in gateways:
            report.sections.append((f"envoy :{g.port} log ({g.log_path})", g.log_summary(tail=40)))
        for name in ("idp", "rogue"):
            if name in funcargs:
                report.sections.append((f"{name} log", funcargs[name].log()[-3000:]))
    return report


def pytest_sessionstart(session):
    for tool in ("node", "curl"):
        if shutil.which(tool) is None:
            raise pytest.UsageError(f"{tool} is required by the end-to-end tests")
