"""What the filter costs per request, side by side with a trivial wasm filter and Envoy's
native alternatives, in ONE Envoy process (--concurrency 1), each listener in front of the
same fast real upstream (a second Envoy that answers 200 itself):

  (a) no filter                          (b) a pass-through proxy-wasm filter (bench/passthrough)
  (c) our filter, shared-data session    (d) our filter, cookie session
  (e) our filter (listener c), an API client's RS256 bearer JWT
  (f) Envoy's oauth2 filter, logged in   (g) Envoy's jwt_authn (JWT cache on), the same JWT
  (u) the upstream alone, to show whether it is the bottleneck

Cookies and tokens come from real logins against the test IdP (tests/idp, oidc-provider) and
its client credentials grant. wrk (one thread) loads every listener in turn, in interleaved
rounds with the order rotated, so drift of a loaded machine falls on all of them alike; the
ratios are medians of per-round ratios with their min–max.

Then, unless --skip-scale: a second Envoy with our filter in front of the test provider
tests/idp/rogue.mjs (it logs in at once): many live sessions in shared data (real logins,
many in parallel) against a handful, and for the cookie store many distinct cookies and a
near-full deny-list (real back-channel logouts) against a handful; the callback's time with
that instant token endpoint; resident memory per session. Unless --skip-memory: Envoy's
resident memory with and without the filter at 1 and 4 workers. And always: the .wasm size
before and after wasm-opt. Nothing here is pass/fail.

Run after scripts/setup, with wrk installed (apt-get install wrk):
    .venv/bin/python bench/cost.py [--rounds 8] [--seconds 5] [--connections 16] [--sessions 100000]
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    build_filter,
    build_passthrough,
    cluster,
    envoy_config,
    envoy_pid,
    interleaved_rounds,
    listener,
    need_wrk,
    oidc_filter,
    passthrough_filter,
    print_ratios,
    print_table,
    rss_kib,
    start_upstream,
    wait_filter_ready,
)
from harness import CLIENT_ID, CLIENT_SECRET, WASM, Browser, Gateway, Idp, Rogue, free_port, http_get, login  # noqa: E402

API = "https://api.example/"
SESSION_COOKIE = "__Host-oidc-session"
OAUTH2_COOKIES = ("BearerToken", "OauthHMAC", "OauthExpires", "IdToken", "RefreshToken")
BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def cookie_header(browser: Browser, names) -> str:
    """The Cookie header a browser would send to the gateway: the named cookies (or prefixes)."""
    picked = [c for c in browser.cookies() if any(c.name.startswith(n) for n in names)]
    if not picked:
        raise RuntimeError(f"no cookie among {names} in the jar: {[c.name for c in browser.cookies()]}")
    return "; ".join(f"{c.name}={c.value}" for c in picked)


def check_200(url: str, headers: dict, what: str):
    r = http_get(url, headers=headers, timeout=5)
    if r is None or r[0] != 200:
        raise RuntimeError(f"{what}: expected 200 before the load, got {r and r[0]}: {r and r[2][:300]!r}")


def client_credentials_jwt(idp: Idp) -> tuple[str, int]:
    """An RS256 JWT access token for API (the m2m client) and its exp."""
    conn = http.client.HTTPConnection("127.0.0.1", idp.port, timeout=10)
    body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "api:read", "resource": API})
    basic = base64.b64encode(b"m2m:m2m-secret").decode()
    conn.request("POST", "/token", body, {"Authorization": f"Basic {basic}",
                                          "Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    if resp.status != 200:
        raise RuntimeError(f"client credentials grant failed: {data}")
    token = data["access_token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return token, claims["exp"]


# ----------------------------------------------------------------------------------------
# scenario 1: the listeners side by side


def oauth2_filter(idp_port: int, port: int) -> dict:
    return {"name": "envoy.filters.http.oauth2", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2",
        "config": {
            "token_endpoint": {"cluster": "idp", "uri": f"http://127.0.0.1:{idp_port}/token", "timeout": "5s"},
            "authorization_endpoint": f"http://127.0.0.1:{idp_port}/auth",
            "redirect_uri": f"http://127.0.0.1:{port}/oauth2/callback",
            "redirect_path_matcher": {"path": {"exact": "/oauth2/callback"}},
            "signout_path": {"path": {"exact": "/oauth2/logout"}},
            "forward_bearer_token": True,
            "auth_scopes": ["openid", "email", "profile"],
            "auth_type": "BASIC_AUTH",
            "credentials": {"client_id": CLIENT_ID, "token_secret": {"name": "oauth2-client-secret"},
                            "hmac_secret": {"name": "oauth2-hmac"}},
        }}}


def jwt_authn_filter(idp: Idp) -> dict:
    jwks = http_get(f"{idp.issuer}/jwks")[2].decode()
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"idp": {
            "issuer": idp.issuer, "audiences": [API], "local_jwks": {"inline_string": jwks},
            "forward": True, "jwt_cache_config": {"jwt_cache_size": 1000}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]}}


def side_by_side(args, workdir: Path, upstream: Gateway, idp: Idp, ports: dict[str, int]):
    cookie_key = base64.b64encode(secrets.token_bytes(32)).decode()
    listeners = [
        listener("a_plain", ports["a"], []),
        listener("b_passthrough", ports["b"], [passthrough_filter()]),
        listener("c_shared", ports["c"], [oidc_filter("oidc-shared", idp.port, ports["c"],
                                                      {"bearer": {"audiences": [API]}})]),
        listener("d_cookie", ports["d"], [oidc_filter("oidc-cookie", idp.port, ports["d"],
                                                      {"session": {"store": "cookie"}, "cookie": {"keys": [cookie_key]}})]),
        listener("f_oauth2", ports["f"], [oauth2_filter(idp.port, ports["f"])]),
        listener("g_jwt_authn", ports["g"], [jwt_authn_filter(idp)]),
    ]
    secrets_cfg = [
        {"name": "oauth2-client-secret", "generic_secret": {"secret": {"inline_string": CLIENT_SECRET}}},
        {"name": "oauth2-hmac", "generic_secret": {"secret": {"inline_string": secrets.token_urlsafe(32)}}},
    ]
    cfg = envoy_config(listeners, [cluster("idp", idp.port), cluster("upstream", upstream.port)], secrets_cfg)
    gw = Gateway(workdir, cfg, ports["a"], concurrency=1)
    try:
        gw.start().wait_ready()
        side_by_side_load(args, workdir, upstream, idp, ports)
    finally:
        gw.stop()


def side_by_side_load(args, workdir: Path, upstream: Gateway, idp: Idp, ports: dict[str, int]):
    url = {k: f"http://127.0.0.1:{p}/" for k, p in ports.items()}
    for k in "cd":
        wait_filter_ready(url[k])

    headers = {}
    for k, names in (("c", [SESSION_COOKIE]), ("d", [SESSION_COOKIE]), ("f", OAUTH2_COOKIES)):
        browser = Browser(workdir, f"login-{k}")
        callback = login(browser, url[k])
        if callback.status != 302:
            raise RuntimeError(f"login through ({k}) failed: {callback!r}")
        headers[k] = {"Cookie": cookie_header(browser, names)}
    token = {"jwt": None, "exp": 0}

    def fresh_token(_round=None):
        if token["exp"] - time.time() < 120:  # a new token before this one could expire mid-round
            token["jwt"], token["exp"] = client_credentials_jwt(idp)
            headers["e"] = {"Authorization": f"Bearer {token['jwt']}"}
    fresh_token()
    # Bearer requests are API requests: JSON, not a page.
    bearer = lambda: {**headers["e"], "Accept": "application/json"}  # noqa: E731

    names = {
        "u": "(u) upstream alone (no gateway)",
        "a": "(a) no filter",
        "b": "(b) pass-through wasm filter",
        "c": "(c) ours, shared-data session",
        "d": "(d) ours, cookie session",
        "e": "(e) ours, bearer JWT (RS256)",
        "f": "(f) Envoy oauth2, logged in",
        "g": "(g) Envoy jwt_authn, same JWT",
    }
    for k in "cdf":
        check_200(url[k], headers[k], names[k])
    check_200(url["c"], bearer(), names["e"])
    check_200(url["g"], bearer(), names["g"])

    targets = [
        (names["u"], upstream.url("/"), {}, None),
        (names["a"], url["a"], {}, None),
        (names["b"], url["b"], {}, None),
        (names["c"], url["c"], headers["c"], None),
        (names["d"], url["d"], headers["d"], None),
        (names["e"], url["c"], bearer, None),
        (names["f"], url["f"], headers["f"], None),
        (names["g"], url["g"], bearer, None),
    ]
    results = interleaved_rounds(targets, args.rounds, args.seconds, args.connections, before_round=fresh_token)
    print()
    print_table(f"Side by side: one Envoy, --concurrency 1; wrk -t1 -c{args.connections}, "
                f"{args.rounds} rounds of {args.seconds} s per listener (medians over rounds)",
                [names[k] for k in "uabcdefg"], results)
    print()
    print_ratios("Ratios (median of per-round ratios, min–max):", [
        ("(c)/(b) shared data", names["c"], names["b"]),
        ("(d)/(b) cookie", names["d"], names["b"]),
        ("(e)/(b) bearer JWT", names["e"], names["b"]),
        ("(c)/(f) vs oauth2", names["c"], names["f"]),
        ("(e)/(g) vs jwt_authn", names["e"], names["g"]),
        ("(b)/(a) wasm floor", names["b"], names["a"]),
        ("(a)/(u) gateway/upstream", names["a"], names["u"]),
    ], results)


# ----------------------------------------------------------------------------------------
# scenario 2: many sessions


class Logins:
    """Real logins through a gateway against rogue.mjs over keep-alive connections, many in
    parallel: GET / (302 to the provider), GET the provider's /auth (302 back with a code),
    GET the callback (the filter redeems the code: a 302 with the session cookie)."""

    def __init__(self, gateway_port: int, rogue: Rogue):
        self.gateway_port = gateway_port
        self.rogue = rogue
        self.local = threading.local()
        self.callback_seconds: list[float] = []

    def _conns(self):
        if not hasattr(self.local, "gw"):
            self.local.gw = http.client.HTTPConnection("127.0.0.1", self.gateway_port, timeout=30)
            self.local.idp = http.client.HTTPConnection("127.0.0.1", self.rogue.port, timeout=30)
        return self.local.gw, self.local.idp

    @staticmethod
    def _get(conn, path, headers):
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp

    def one(self) -> str:
        """One login; returns the Cookie header value of its session."""
        gw, idp = self._conns()
        first = self._get(gw, "/", {"Accept": "text/html"})
        if first.status != 302:
            raise RuntimeError(f"expected a redirect to log in, got {first.status}")
        login_cookies = "; ".join(v.split(";", 1)[0] for k, v in first.getheaders() if k.lower() == "set-cookie")
        auth = urllib.parse.urlsplit(first.getheader("location"))
        back = self._get(idp, f"{auth.path}?{auth.query}", {})
        cb = urllib.parse.urlsplit(back.getheader("location"))
        start = time.perf_counter()
        done = self._get(gw, f"{cb.path}?{cb.query}", {"Cookie": login_cookies, "Accept": "text/html"})
        self.callback_seconds.append(time.perf_counter() - start)
        if done.status != 302:
            raise RuntimeError(f"callback failed: {done.status}")
        session = [v.split(";", 1)[0] for k, v in done.getheaders()
                   if k.lower() == "set-cookie" and v.startswith(SESSION_COOKIE) and "Max-Age=0" not in v]
        if not session:
            raise RuntimeError("the callback set no session cookie")
        return "; ".join(session)

    def many(self, count: int, per_subject: int, workers: int, progress: str = "", user: str = "user") -> list[str]:
        """`count` logins, `per_subject` per user (the store bounds sessions per user), users
        named `user`0, `user`1, ..."""
        cookies: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            done = 0
            t0 = time.monotonic()
            while done < count:
                batch = min(per_subject, count - done)
                self.rogue.control(sub=f"{user}{done // per_subject}")
                cookies += list(pool.map(lambda _: self.one(), range(batch)))
                done += batch
                if progress and done % 5000 < per_subject:
                    rate = done / (time.monotonic() - t0)
                    print(f"  {progress}: {done}/{count} logins ({rate:.0f}/s)", file=sys.stderr)
        return cookies


def token_endpoint_seconds(rogue: Rogue, redirect_uri: str, n: int) -> list[float]:
    """The provider's own time for a code redemption (measured directly, no gateway)."""
    conn = http.client.HTTPConnection("127.0.0.1", rogue.port, timeout=10)
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    out = []
    for _ in range(n):
        verifier = secrets.token_urlsafe(32)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        q = urllib.parse.urlencode({"client_id": CLIENT_ID, "response_type": "code", "scope": "openid",
                                    "redirect_uri": redirect_uri, "state": "s", "nonce": "n",
                                    "code_challenge": challenge, "code_challenge_method": "S256"})
        conn.request("GET", f"/auth?{q}")
        resp = conn.getresponse()
        resp.read()
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(resp.getheader("location")).query)["code"][0]
        body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": redirect_uri, "code_verifier": verifier})
        start = time.perf_counter()
        conn.request("POST", "/token", body, {"Authorization": f"Basic {basic}",
                                              "Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - start)
        if resp.status != 200:
            raise RuntimeError(f"token endpoint: {resp.status}")
    return out


def fill_deny_list(rogue: Rogue, port: int, count: int):
    """`count` real back-channel logouts (other users) at the cookie-store gateway."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(count):
        now = int(time.time())
        token = rogue.sign({"iss": rogue.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
                            "jti": secrets.token_urlsafe(12), "sub": f"gone{i}", "events": {LOGOUT_EVENT: {}}},
                           header={"typ": "logout+jwt"})
        conn.request("POST", BACKCHANNEL_PATH, urllib.parse.urlencode({"logout_token": token}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"back-channel logout {i} refused: {resp.status}")


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def at_scale(args, workdir: Path, upstream: Gateway):
    rogue = Rogue(workdir)
    ports = {k: free_port() for k in ("few", "many", "cfew", "cmany")}
    cookie_key = base64.b64encode(secrets.token_bytes(32)).decode()
    shared = {"session": {"max_sessions": int(args.sessions * 1.2) + 1000}}
    cookie = {"session": {"store": "cookie"}, "cookie": {"keys": [cookie_key]},
              "backchannel_logout_path": BACKCHANNEL_PATH}
    listeners = [
        listener("few", ports["few"], [oidc_filter("scale-few", rogue.port, ports["few"], shared)]),
        listener("many", ports["many"], [oidc_filter("scale-many", rogue.port, ports["many"], shared)]),
        listener("cfew", ports["cfew"], [oidc_filter("scale-cfew", rogue.port, ports["cfew"], cookie)]),
        listener("cmany", ports["cmany"], [oidc_filter("scale-cmany", rogue.port, ports["cmany"], cookie)]),
    ]
    gw = Gateway(workdir, envoy_config(listeners, [cluster("idp", rogue.port), cluster("upstream", upstream.port)]),
                 ports["few"], concurrency=1)
    try:
        rogue.start()
        gw.start().wait_ready()
        for p in ports.values():
            wait_filter_ready(f"http://127.0.0.1:{p}/")
        pid = envoy_pid(gw)
        few = Logins(ports["few"], rogue).many(4, 64, 1, user="few")
        # The callback's time, one login at a time, with the provider's own share measured apart.
        timing = Logins(ports["few"], rogue)
        timing.many(args.callbacks, 60, 1, user="timing")
        provider = token_endpoint_seconds(rogue, f"http://127.0.0.1:{ports['few']}/oauth2/callback", args.callbacks)

        time.sleep(1)
        rss_before = rss_kib(pid)
        t0 = time.monotonic()
        many = Logins(ports["many"], rogue).many(args.sessions, 60, args.login_workers, "shared data")
        took = time.monotonic() - t0
        time.sleep(2)
        rss_after = rss_kib(pid)

        cfew = Logins(ports["cfew"], rogue).many(4, 64, 1)
        cmany = Logins(ports["cmany"], rogue).many(args.cookie_sessions, 60, args.login_workers, "cookie")
        fill_deny_list(rogue, ports["cmany"], args.deny)

        sets = {"few": (ports["few"], few), "many4": (ports["many"], many[-4:]), "many": (ports["many"], many),
                "cfew": (ports["cfew"], cfew), "cmany": (ports["cmany"], cmany)}
        files = {}
        for name, (port, cookies) in sets.items():
            files[name] = workdir / f"cookies-{name}.txt"
            files[name].write_text("\n".join(cookies) + "\n")
            check_200(f"http://127.0.0.1:{port}/", {"Cookie": cookies[0]}, name)
        names = {
            "few": f"(c) shared data, {len(few)} sessions",
            "many4": f"(c) {len(many)} sessions, load on 4",
            "many": f"(c) {len(many)} sessions, load on all",
            "cfew": f"(d) cookie, {len(cfew)} sessions",
            "cmany": f"(d) {len(cmany)} cookies, {args.deny} denied",
        }
        targets = [(names[k], f"http://127.0.0.1:{sets[k][0]}/", {}, files[k]) for k in names]
        results = interleaved_rounds(targets, args.rounds, args.seconds, args.connections)
        print()
        print(f"Many sessions: one Envoy, --concurrency 1, wrk -t1 -c{args.connections}; each request carries the "
              f"next of the listener's session cookies (bench/rotate_cookies.lua)")
        print(f"  {len(many)} real logins in {took:.0f} s ({len(many) / took:.0f}/s, {args.login_workers} in parallel, "
              f"60 per user, each answered with a session cookie)")
        print(f"  resident memory of that Envoy: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after: "
              f"{(rss_after - rss_before) * 1024 / len(many):.0f} bytes per session")
        print_table("", list(names.values()), results)
        print_ratios("Ratios (median of per-round ratios, min–max):", [
            ("shared data, many/few", names["many4"], names["few"]),
            ("  load on all/few", names["many"], names["few"]),
            ("cookie, many/few", names["cmany"], names["cfew"]),
        ], results)
        print()
        cb = [s * 1e6 for s in timing.callback_seconds]
        pv = [s * 1e6 for s in provider]
        print(f"Callback (token response to 302), {len(cb)} logins one at a time, provider rogue.mjs on loopback:")
        print(f"  the callback request at the gateway: p50 {statistics.median(cb):.0f} µs, p90 {percentile(cb, 0.9):.0f} µs")
        print(f"  of which the provider's token endpoint (measured directly, incl. its RS256 signing): "
              f"p50 {statistics.median(pv):.0f} µs")
        print(f"  so the gateway's own share: about {statistics.median(cb) - statistics.median(pv):.0f} µs "
              f"(the code redemption callout, ID token verification, session write, 302)")
    finally:
        gw.stop()
        rogue.stop()


# ----------------------------------------------------------------------------------------
# memory


def memory(args, workdir: Path, upstream: Gateway, idp: Idp):
    print()
    print("Resident memory (VmRSS) of an Envoy with one listener, after start-up and 200 requests:")
    kinds = {"none": "no filter", "pass": "pass-through wasm filter", "ours": "our filter"}
    rows = {}
    for kind in kinds:
        for workers in (1, 4):
            port = free_port()
            filters = {"none": [], "pass": [passthrough_filter()], "ours": [oidc_filter("mem", idp.port, port)]}[kind]
            cfg = envoy_config([listener("mem", port, filters)], [cluster("idp", idp.port), cluster("upstream", upstream.port)])
            gw = Gateway(workdir, cfg, port, concurrency=workers)
            try:
                gw.start().wait_ready()
                if kind == "ours":
                    wait_filter_ready(gw.url("/"))
                for _ in range(200):  # new connections: they spread over the workers
                    http_get(gw.url("/"))
                time.sleep(1)
                rows[(kind, workers)] = rss_kib(envoy_pid(gw))
            finally:
                gw.stop()
    print(f"  {'':26} {'1 worker':>10} {'4 workers':>10} {'per extra worker':>17}")
    for kind, label in kinds.items():
        one, four = rows[(kind, 1)], rows[(kind, 4)]
        print(f"  {label:26} {one / 1024:7.1f} MiB {four / 1024:6.1f} MiB {(four - one) / 3 / 1024:13.1f} MiB")
    extra = ((rows[("ours", 4)] - rows[("ours", 1)]) - (rows[("none", 4)] - rows[("none", 1)])) / 3
    print(f"  an extra worker with our filter minus one without: {extra / 1024:+.1f} MiB; at 1 worker our filter's "
          f"process holds {(rows[('ours', 1)] - rows[('none', 1)]) / 1024:.1f} MiB more than without a filter, "
          f"{(rows[('ours', 1)] - rows[('pass', 1)]) / 1024:.1f} MiB more than with the pass-through one")


def sizes():
    pre = WASM.with_name(WASM.stem + ".pre-opt.wasm")
    print("The .wasm (scripts/build-wasm):")
    if pre.exists():
        print(f"  cargo build --release:   {pre.stat().st_size:9d} bytes ({pre.stat().st_size / 1024:.0f} KiB)")
    print(f"  after wasm-opt (shipped): {WASM.stat().st_size:8d} bytes ({WASM.stat().st_size / 1024:.0f} KiB)")
    out = subprocess.run(["wasm-opt", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"  ({out})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=100_000, help="live sessions in shared data for scenario 2")
    parser.add_argument("--cookie-sessions", type=int, default=5_000, help="distinct session cookies for scenario 2")
    parser.add_argument("--deny", type=int, default=250, help="back-channel logouts on the cookie store's deny-list (holds 256)")
    parser.add_argument("--login-workers", type=int, default=8)
    parser.add_argument("--callbacks", type=int, default=200, help="logins timed one at a time")
    parser.add_argument("--skip-side-by-side", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    need_wrk()

    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if not os.environ.get("OIDC_FILTER_WASM"):  # the harness's switch to another build of the module
        build_filter()
    build_passthrough()
    sizes()
    print()
    workdir = Path(tempfile.mkdtemp(prefix="oidc-bench-cost-"))
    upstream = start_upstream(workdir)
    ports = {k: free_port() for k in "abcdfg"}
    idp = Idp(workdir, redirect_uris=[f"http://127.0.0.1:{ports[k]}/oauth2/callback" for k in "cdf"])
    try:
        idp.start()
        if not args.skip_side_by_side:
            side_by_side(args, workdir, upstream, idp, ports)
        if not args.skip_memory:
            memory(args, workdir, upstream, idp)
        if not args.skip_scale:
            at_scale(args, workdir, upstream)
    finally:
        idp.stop()
        upstream.stop()
    print()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
