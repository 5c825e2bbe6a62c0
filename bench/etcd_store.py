"""Requests per second with the etcd session store, side by side in one run with the
shared-data store, the trivial pass-through wasm filter and Envoy without the filter.

Envoy processes answer with a direct response (no upstream): a plain one, one with the
pass-through proxy-wasm filter (bench/passthrough, the floor of any wasm filter), one with
the filter on shared data, and two on the etcd store (a real etcd cluster on loopback, see
tests/e2e/etcd_harness.py): per-worker cache off (every request reads etcd) and on. Each
filter gateway is loaded by wrk with a logged-in session, in interleaved rounds (the order
rotated each round); ratios are medians of per-round ratios. Nothing here is pass/fail.

Run after scripts/setup, with wrk installed (apt-get install wrk):
    .venv/bin/python bench/etcd_store.py [--rounds 3] [--seconds 5] [--connections 16] [--members 3]
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    build_passthrough,
    direct_response,
    envoy_config,
    interleaved_rounds,
    listener,
    need_wrk,
    passthrough_filter,
    print_ratios,
    print_table,
)
from etcd_harness import EtcdCluster, etcd_envoy_config  # noqa: E402
from harness import Browser, Gateway, Idp, build_envoy_config, free_port, login  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--cache-ttl", type=int, default=5)
    args = parser.parse_args()
    need_wrk()
    passthrough = build_passthrough()

    workdir = Path(tempfile.mkdtemp(prefix="oidc-bench-etcd-"))
    ports = [free_port() for _ in range(5)]
    idp = Idp(workdir, redirect_uris=[f"http://127.0.0.1:{p}/oauth2/callback" for p in ports[2:]]).start()
    etcd = EtcdCluster(workdir, members=args.members).start()
    gateways = []
    try:
        env = {"OIDC_CLIENT_SECRET": "demo-client-secret"}
        configs = [
            ("Envoy without the filter", build_envoy_config(ports[0], idp.port, 1, with_filter=False), False),
            ("pass-through wasm filter", envoy_config([listener("passthrough", ports[1], [passthrough_filter(passthrough)],
                                                                cluster=None)], []), False),
            ("filter, shared-data store", build_envoy_config(ports[2], idp.port, 1), True),
            ("filter, etcd store, cache off", etcd_envoy_config(ports[3], idp.port, 1, etcd), True),
            (f"filter, etcd store, cache {args.cache_ttl} s",
             etcd_envoy_config(ports[4], idp.port, 1, etcd, {"cache_ttl_seconds": args.cache_ttl}), True),
        ]
        targets = []
        for (name, cfg, logs_in), port in zip(configs, ports):
            gw = Gateway(workdir, direct_response(cfg), port, env=env)
            gateways.append(gw)
            gw.start().wait_ready()
            headers = {}
            if logs_in:
                gw.wait_metadata()
                browser = Browser(workdir, f"b{port}")
                callback = login(browser, gw.url("/"))
                assert callback.status == 302, callback
                session = browser.cookie("__Host-oidc-session")
                headers = {"Cookie": f"{session.name}={session.value}; app=1"}
            targets.append((name, gw.url("/"), headers, None))

        results = interleaved_rounds(targets, args.rounds, args.seconds, args.connections)
        names = [name for name, *_ in targets]
        print(f"etcd members: {args.members}; Envoys with 2 workers answering themselves; wrk -t1 "
              f"-c{args.connections}, {args.rounds} rounds of {args.seconds} s each")
        print_table("", names, results)
        print_ratios("Ratios (median of per-round ratios, min–max):",
                     [("shared data/pass-thru", names[2], names[1]), ("etcd off/pass-thru", names[3], names[1]),
                      ("etcd cache/pass-thru", names[4], names[1]), ("pass-thru/plain", names[1], names[0])],
                     results)
    finally:
        for gw in gateways:
            gw.stop()
        etcd.stop()
        idp.stop()


if __name__ == "__main__":
    main()
