"""Per-request cost of the filter, measured side by side in one run.

Two Envoy 1.40 processes with the same config answer every request with a
direct response (no upstream, so the upstream's speed does not hide the
filter's cost): one without the filter, one with it and a logged-in session
(and, if given, more configurations of the filter). wrk loads each in turn and
the script prints requests per second and latency, and their ratios to the
plain Envoy. Nothing here is a pass/fail test.

Run after scripts/setup, with wrk installed (apt-get install wrk):
    .venv/bin/python bench/overhead.py [--seconds 10] [--connections 16]
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from harness import Browser, Gateway, Idp, build_envoy_config, free_port, login  # noqa: E402


def direct_response(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for host in hcm["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            route.pop("route", None)
            route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    return cfg


def wrk(url: str, seconds: int, connections: int, cookie: str | None) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if cookie:
        argv[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)

    def micros(m):
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

    return {"rps": rps, "p50": micros(p50), "p99": micros(p99), "errors": int(non2xx.group(1)) if non2xx else 0}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="oidc-bench-"))
    plain_port, filtered_port = free_port(), free_port()
    idp = Idp(workdir, redirect_uris=[f"http://127.0.0.1:{filtered_port}/oauth2/callback"]).start()
    gateways = []
    try:
        plain = Gateway(workdir, direct_response(build_envoy_config(plain_port, idp.port, 1, with_filter=False)), plain_port)
        filtered = Gateway(workdir, direct_response(build_envoy_config(filtered_port, idp.port, 1)), filtered_port,
                           env={"OIDC_CLIENT_SECRET": "demo-client-secret"})
        for gw in (plain, filtered):
            gateways.append(gw)
            gw.start().wait_ready()
        filtered.wait_metadata()

        browser = Browser(workdir)
        callback = login(browser, filtered.url("/"))
        assert callback.status == 302, callback
        session = browser.cookie("__Host-oidc-session")
        cookie = f"{session.name}={session.value}; app=1"

        runs = [
            ("Envoy without the filter", plain.url("/"), None),
            ("with the filter, logged-in session", filtered.url("/"), cookie),
        ]
        results = []
        for name, url, jar in runs:
            wrk(url, 2, args.connections, jar)  # warm-up
            results.append((name, wrk(url, args.seconds, args.connections, jar)))
        base = results[0][1]
        print(f"{'':40} {'req/s':>10} {'ratio':>7} {'p50 µs':>9} {'p99 µs':>9} {'non-2xx':>8}")
        for name, r in results:
            print(f"{name:40} {r['rps']:10.0f} {r['rps'] / base['rps']:7.2f} {r['p50']:9.0f} {r['p99']:9.0f} {r['errors']:8d}")
    finally:
        for gw in gateways:
            gw.stop()
        idp.stop()


if __name__ == "__main__":
    main()
