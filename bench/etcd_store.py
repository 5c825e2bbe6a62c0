"""Requests per second with the etcd session store, side by side in one run with the
shared-data store and Envoy without the filter.

Envoy processes answer with a direct response (no upstream): a plain one, one with the
filter on shared data, and two on the etcd store (a real etcd cluster on loopback, see
tests/e2e/etcd_harness.py): per-worker cache off (every request reads etcd) and on. Each
filter gateway is loaded by wrk with a logged-in session. Nothing here is pass/fail.

Run after scripts/setup, with wrk installed (apt-get install wrk):
    .venv/bin/python bench/etcd_store.py [--seconds 10] [--connections 16] [--members 3]
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from etcd_harness import EtcdCluster, etcd_envoy_config  # noqa: E402
from harness import Browser, Gateway, Idp, build_envoy_config, free_port, login  # noqa: E402
from overhead import direct_response, wrk  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--cache-ttl", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="oidc-bench-etcd-"))
    ports = [free_port() for _ in range(4)]
    idp = Idp(workdir, redirect_uris=[f"http://127.0.0.1:{p}/oauth2/callback" for p in ports[1:]]).start()
    etcd = EtcdCluster(workdir, members=args.members).start()
    gateways = []
    try:
        env = {"OIDC_CLIENT_SECRET": "demo-client-secret"}
        configs = [
            ("Envoy without the filter", build_envoy_config(ports[0], idp.port, 1, with_filter=False)),
            ("filter, shared-data store", build_envoy_config(ports[1], idp.port, 1)),
            ("filter, etcd store, cache off", etcd_envoy_config(ports[2], idp.port, 1, etcd)),
            (f"filter, etcd store, cache {args.cache_ttl} s",
             etcd_envoy_config(ports[3], idp.port, 1, etcd, {"cache_ttl_seconds": args.cache_ttl})),
        ]
        runs = []
        for (name, cfg), port in zip(configs, ports):
            gw = Gateway(workdir, direct_response(cfg), port, env=env)
            gateways.append(gw)
            gw.start().wait_ready()
            cookie = None
            if port != ports[0]:
                gw.wait_metadata()
                browser = Browser(workdir, f"b{port}")
                callback = login(browser, gw.url("/"))
                assert callback.status == 302, callback
                session = browser.cookie("__Host-oidc-session")
                cookie = f"{session.name}={session.value}; app=1"
            runs.append((name, gw.url("/"), cookie))

        results = []
        for name, url, jar in runs:
            wrk(url, 2, args.connections, jar)  # warm-up
            results.append((name, wrk(url, args.seconds, args.connections, jar)))
        base = results[0][1]
        print(f"etcd members: {args.members}; wrk: {args.connections} connections, {args.seconds} s each")
        print(f"{'':40} {'req/s':>10} {'ratio':>7} {'p50 µs':>9} {'p99 µs':>9} {'non-2xx':>8}")
        for name, r in results:
            print(f"{name:40} {r['rps']:10.0f} {r['rps'] / base['rps']:7.2f} {r['p50']:9.0f} {r['p99']:9.0f} {r['errors']:8d}")
    finally:
        for gw in gateways:
            gw.stop()
        etcd.stop()
        idp.stop()


if __name__ == "__main__":
    main()
