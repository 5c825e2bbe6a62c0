"""Per-request cost of the filter, measured side by side in one run.

Two Envoy 1.40 processes with the same config answer every request with a
direct response (no upstream, so the upstream's speed does not hide the
filter's cost): one without the filter, one with it and a logged-in session
(and, if given, more configurations of the filter). wrk loads each in turn and
the script prints requests per second and latency, and their ratios to the
plain Envoy. Nothing here is a pass/fail test.

bench/cost.py is the fuller comparison (a real upstream, the trivial wasm filter, Envoy's own
filters, many sessions). Run after scripts/setup, with wrk installed (apt-get install wrk):
    .venv/bin/python bench/overhead.py [--seconds 10] [--connections 16]
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import direct_response, need_wrk, wrk  # noqa: E402
from harness import Browser, Gateway, Idp, build_envoy_config, free_port, login  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    need_wrk()

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
            ("Envoy without the filter", plain.url("/"), {}),
            ("with the filter, logged-in session", filtered.url("/"), {"Cookie": cookie}),
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
