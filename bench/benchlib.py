"""Shared pieces of the benchmarks in bench/: wrk runs and their parsing, medians over rounds,
the pass-through wasm filter (the floor of any wasm filter), a fast upstream, and Envoy
config snippets. Nothing here is pass/fail."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from harness import WASM, Gateway, free_port, load_envoy_config, wait_until, wasm_filter  # noqa: E402

PASSTHROUGH = BENCH / "passthrough"
PASSTHROUGH_WASM = PASSTHROUGH / "target" / "wasm32-wasip1" / "release" / "passthrough.wasm"
# Cycles wrk's requests through the Cookie values in the file $BENCH_COOKIES, one per line.
ROTATE_COOKIES_LUA = BENCH / "rotate_cookies.lua"


def need_wrk():
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")


def _micros(m) -> float:
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def parse_wrk(out: str) -> dict:
    """requests per second, p50/p99 in µs and the count of non-2xx/3xx answers from wrk's text."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)),
        "p50": _micros(re.search(r"50%\s+([\d.]+)(us|ms|s)", out)),
        "p99": _micros(re.search(r"99%\s+([\d.]+)(us|ms|s)", out)),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def wrk(url: str, seconds: float, connections: int, headers=None, cookies_file: Path | None = None) -> dict:
    """One wrk run (one thread). `headers`: a dict, or a function returning one (read at each
    run, e.g. a token renewed between rounds). `cookies_file` rotates the Cookie header through
    its lines."""
    if callable(headers):
        headers = headers()
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    env = dict(os.environ)
    if cookies_file is not None:
        argv += ["-s", str(ROTATE_COOKIES_LUA)]
        env["BENCH_COOKIES"] = str(cookies_file)
    argv.append(url)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
    return parse_wrk(proc.stdout + proc.stderr)


def median_spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def print_table(title: str, names: list[str], results: dict[str, list[dict]]):
    """Per name: medians over rounds of requests/s (with min–max), p50, p99, non-2xx."""
    print(title)
    print(f"  {'':46} {'req/s':>8} {'(min–max)':>15} {'p50 µs':>8} {'p99 µs':>8} {'non-2xx':>8}")
    for name in names:
        runs = results[name]
        rps, lo, hi = median_spread([r["rps"] for r in runs])
        p50 = statistics.median(r["p50"] for r in runs)
        p99 = statistics.median(r["p99"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        print(f"  {name:46} {rps:8.0f} {f'({lo:.0f}–{hi:.0f})':>15} {p50:8.0f} {p99:8.0f} {errors:8d}")


def print_ratios(title: str, pairs: list[tuple[str, str, str]], results: dict[str, list[dict]]):
    """Per (label, numerator, denominator): the median over rounds of the per-round ratio of
    requests/s, with its min–max, and the same for p99."""
    print(title)
    print(f"  {'':22} {'req/s ratio':>11} {'(min–max)':>13}   {'p99 ratio':>9}")
    for label, num, den in pairs:
        ratios = [a["rps"] / b["rps"] for a, b in zip(results[num], results[den])]
        p99s = [a["p99"] / b["p99"] for a, b in zip(results[num], results[den])]
        med, lo, hi = median_spread(ratios)
        print(f"  {label:22} {med:11.2f} {f'({lo:.2f}–{hi:.2f})':>13}   {statistics.median(p99s):9.2f}")


def interleaved_rounds(targets: list[tuple], rounds: int, seconds: float,
                       connections: int, before_round=None) -> dict[str, list[dict]]:
    """wrk over every (name, url, headers, cookies_file) in turn, `rounds` times, the order
    rotated each round, so drift of a loaded machine falls on every target alike."""
    for _, url, headers, cookies in targets:  # warm-up: connections, caches, JIT
        wrk(url, 1, connections, headers, cookies)
    results: dict[str, list[dict]] = {name: [] for name, *_ in targets}
    for r in range(rounds):
        if before_round:
            before_round(r)
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for name, url, headers, cookies in order:
            results[name].append(wrk(url, seconds, connections, headers, cookies))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return results


# ----------------------------------------------------------------------------------------
# builds


def build_passthrough() -> Path:
    """The pass-through proxy-wasm filter (bench/passthrough), built for wasm32-wasip1."""
    subprocess.run(["nice", "cargo", "build", "--release", "--target", "wasm32-wasip1", "--quiet"],
                   cwd=PASSTHROUGH, check=True)
    return PASSTHROUGH_WASM


def build_filter() -> Path:
    """The filter as shipped (scripts/build-wasm: cargo build, then wasm-opt)."""
    subprocess.run([str(REPO / "scripts" / "build-wasm")], cwd=REPO, check=True)
    return WASM


# ----------------------------------------------------------------------------------------
# Envoy config pieces


def direct_response(cfg: dict) -> dict:
    """Every route of the first listener answers 200 "ok" itself (no upstream)."""
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for host in hcm["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            route.pop("route", None)
            route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    return cfg


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def listener(name: str, port: int, http_filters: list[dict], cluster: str | None = "upstream") -> dict:
    """An HTTP listener on 127.0.0.1:port routing everything to `cluster` (or answering 200
    itself when cluster is None), with the same HTTP connection manager settings as envoy.yaml."""
    hcm = copy.deepcopy(load_envoy_config()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0])
    tc = hcm["typed_config"]
    tc["stat_prefix"] = name
    route = {"match": {"prefix": "/"}}
    if cluster:
        route["route"] = {"cluster": cluster}
    else:
        route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    tc["route_config"] = {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": [route]}]}
    tc["http_filters"] = http_filters + [ROUTER]
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [hcm]}]}


def cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def oidc_filter(vm_id: str, idp_port: int, listen_port: int, overrides: dict | None = None,
                wasm: Path = WASM) -> dict:
    """Our filter as envoy.yaml configures it, with its own VM (and so its own shared data)."""
    from harness import deep_merge, filter_config

    base = load_envoy_config()
    wf = copy.deepcopy(wasm_filter(base))
    conf = wf["typed_config"]["config"]
    conf["vm_config"]["vm_id"] = vm_id
    conf["vm_config"]["code"]["local"]["filename"] = str(wasm)
    fc = filter_config(base)
    fc["issuer"] = f"http://127.0.0.1:{idp_port}"
    fc["redirect_uri"] = f"http://127.0.0.1:{listen_port}/oauth2/callback"
    conf["configuration"]["value"] = json.dumps(deep_merge(fc, overrides or {}))
    return wf


def passthrough_filter(wasm: Path = PASSTHROUGH_WASM) -> dict:
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "passthrough", "root_id": "passthrough", "failure_policy": "FAIL_CLOSED",
                   "vm_config": {"vm_id": "passthrough", "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": str(wasm)}}}}}}


def envoy_config(listeners: list[dict], clusters: list[dict], secrets: list[dict] | None = None) -> dict:
    cfg = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
           "static_resources": {"listeners": listeners, "clusters": clusters}}
    if secrets:
        cfg["static_resources"]["secrets"] = secrets
    return cfg


def start_upstream(workdir: Path, concurrency: int = 1) -> Gateway:
    """A fast real upstream: an Envoy whose only listener answers 200 "ok" itself."""
    port = free_port()
    up = Gateway(workdir, envoy_config([listener("upstream", port, [], cluster=None)], []), port,
                 concurrency=concurrency)
    up.start().wait_ready()
    return up


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def envoy_pid(gw: Gateway) -> int:
    """Envoy's own pid (the harness starts it directly, so the child is Envoy)."""
    return gw.process.pid


def wait_filter_ready(url: str, timeout: float = 30.0):
    """Polls until the filter behind `url` stops answering 503 (provider metadata loaded)."""
    from harness import http_get

    def loaded():
        r = http_get(url, timeout=2, headers={"Accept": "text/html"})
        return r is not None and r[0] != 503

    wait_until(loaded, timeout, interval=0.1, what=f"the filter at {url}")
