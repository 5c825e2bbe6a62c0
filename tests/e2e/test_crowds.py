"""Crowds: 200 browsers logging in at once through real Envoy and the real oidc-provider.

Each browser is a curl cookie jar that walks the whole login by itself (the gateway's redirect,
the provider's login and consent pages, the callback, the page it asked for) and stops when it
lands on the upstream; a bounded pool of threads drives them, so many logins are in flight at
every moment. Every browser is its own user, and the upstream names the session's `sid` too
(an extra claim header), so a session that reached the wrong browser, or two browsers sharing
one, would show.

- Shared data at 4 workers: every browser ends with its own identity, no 5xx; then 200
  concurrent back-channel logouts for half of them (by `sid` and by `sub`) end exactly that
  half, and the session and index-link gauges count what is left.
- The cookie store across two Envoys sharing the key: browsers alternate between them and
  every later request goes to both; a back-channel logout holds at the replica that got it.
- Right after an Envoy restart (empty shared data), the crowd arrives at once: nobody's login
  or session is lost to a first write racing another.

Every figure (logins per second, provider requests, errors, durations) is printed (`pytest -s`).
Nothing here asserts a speed; the runtime limits are only generous timeouts.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from harness import CLIENT_ID, REPO, Browser, Response, absolute, wait_until

CROWD = 200
# Browsers in flight at once (the client's bound), well above Envoy's workers.
THREADS = 64
# Requests of one login: gateway, provider (7: /auth, login page and form, /auth/UID, consent
# page and form, /auth/UID2), callback, the page. A walk that takes more is lost in a loop.
MAX_STEPS = 16
MAX_TIME = 30  # per request: the machine is small and shared

BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
SIGN_JWT = REPO / "tests" / "idp" / "sign-jwt.mjs"
SESSION_COOKIE = "__Host-oidc-session"

IDENTITY = {"upstream": {"claim_headers": {"x-auth-request-user": "sub", "x-auth-request-email": "email",
                                           "x-auth-request-sid": "sid"}}}
# 128 buckets for 200 sessions and 400 index links: many logins write the same keys at once.
SMALL_STORE = {"max_sessions": 512, "sweep_interval_seconds": 1}


class Lost(Exception):
    """A browser that did not end where it should have."""


@dataclass
class Member:
    """One browser of the crowd and what it went through."""

    index: int
    user: str
    browser: Browser
    statuses: list[int] = field(default_factory=list)
    sid: str | None = None
    unavailable: int = 0  # 503s of a gateway still loading the provider's metadata
    error: str | None = None
    seconds: float = 0.0


def crowd(browser, tag: str) -> list[Member]:
    return [Member(i, f"{tag}{i:03d}", browser(f"{tag}{i:03d}")) for i in range(CROWD)]


def is_gateway(url: str, gateways) -> bool:
    return any(url.startswith(gw.url("/")) for gw in gateways)


def walk(m: Member, url: str, gateways, *, stop_before: str | None = None, wait_for_metadata: bool = False):
    """Follows the login from `url` like a browser: redirects, the provider's login form (as
    m.user) and its consent form, until a gateway answers 200 (returned). With `stop_before`,
    returns the first redirect target that starts with it instead of visiting it. With
    `wait_for_metadata`, a gateway's first answer may be 503 with Retry-After (it is still
    loading the provider's metadata): the browser tries again shortly, as a user would."""
    method, data = "GET", None
    for _ in range(MAX_STEPS):
        r = m.browser.request(method, url, data=data, max_time=MAX_TIME)
        while (wait_for_metadata and r.status == 503 and r.header("retry-after") and not m.statuses
               and m.unavailable < 200):
            m.unavailable += 1
            time.sleep(0.1)
            r = m.browser.request(method, url, data=data, max_time=MAX_TIME)
        m.statuses.append(r.status)
        method, data = "GET", None
        if r.status >= 500:
            raise Lost(f"{r.status} from {url}: {r.text[:300]}")
        if r.status in (302, 303):
            url = absolute(url, r.location)
            if stop_before and url.startswith(stop_before):
                return url
            continue
        if r.status == 200 and is_gateway(url, gateways):
            return r
        if r.status == 200 and "/interaction/" in url:
            if 'name="login"' in r.text:
                method, data = "POST", {"prompt": "login", "login": m.user, "password": "x"}
            elif 'value="consent"' in r.text:
                method, data = "POST", {"prompt": "consent"}
            else:
                raise Lost(f"unexpected interaction page at {url}: {r.text[:300]}")
            continue
        raise Lost(f"unexpected {r.status} from {url}: {r!r}")
    raise Lost(f"the login did not finish in {MAX_STEPS} requests: {m.statuses}")


def identity(r: Response) -> tuple[str | None, str | None, str | None]:
    """(user, email, sid) as the upstream saw them."""
    headers = r.json()["headers"]
    return headers.get("x-auth-request-user"), headers.get("x-auth-request-email"), headers.get("x-auth-request-sid")


def check_identity(m: Member, r: Response, where: str):
    if r.status != 200:
        raise Lost(f"{where}: {r.status} instead of the upstream: {r!r}")
    user, email, sid = identity(r)
    if (user, email) != (m.user, f"{m.user}@example.test") or not sid:
        raise Lost(f"{where}: the upstream saw user {user!r}, email {email!r}, sid {sid!r} for {m.user}")
    if m.sid is None:
        m.sid = sid
    elif sid != m.sid:
        raise Lost(f"{where}: sid {sid!r}, not the session's {m.sid!r}")


def run(members: list[Member], task) -> float:
    """Runs task(member) for every member on THREADS threads; a failure is kept on the member.
    Returns the wall-clock seconds."""

    def one(m: Member):
        t0 = time.monotonic()
        try:
            task(m)
        except Exception as e:  # noqa: BLE001 - every failure is reported with its member
            m.error = m.error or f"{m.user}: {type(e).__name__}: {e}"
        m.seconds += time.monotonic() - t0

    t0 = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, members))
    return time.monotonic() - t0


def assert_all_well(members: list[Member], what: str):
    failed = [m.error for m in members if m.error]
    server_errors = sum(1 for m in members for s in m.statuses if s >= 500)
    assert not failed, f"{what}: {len(failed)} of {len(members)} browsers failed, e.g.\n" + "\n".join(failed[:5])
    assert server_errors == 0, f"{what}: {server_errors} answers were 5xx"


def report(what: str, members: list[Member], seconds: float, idp, idp_before: dict):
    after = idp.stats()
    requests = sum(after["requests"].values()) - sum(idp_before["requests"].values())
    codes = after["token_requests"].get("authorization_code", 0) - idp_before["token_requests"].get(
        "authorization_code", 0)
    token_errors = sum(after["token_errors"].values()) - sum(idp_before["token_errors"].values())
    per_login = sorted(m.seconds for m in members)
    failed = sum(1 for m in members if m.error)
    print(f"\n{what}: {len(members)} logins in {seconds:.1f}s = {len(members) / seconds:.1f} logins/s "
          f"({THREADS} in flight); per login median {per_login[len(per_login) // 2]:.2f}s, "
          f"max {per_login[-1]:.2f}s; provider: {requests} requests ({requests / seconds:.0f}/s), "
          f"{codes} code exchanges, {token_errors} token errors; browsers failed: {failed}; "
          f"503 while loading: {sum(m.unavailable for m in members)}")


def login_everyone(members: list[Member], gateway_of, gateways, idp, what: str, **walk_options) -> float:
    """The whole crowd logs in at once; each browser's landing page shows its own identity."""
    before = idp.stats()

    def task(m: Member):
        gw = gateway_of(m)
        check_identity(m, walk(m, gw.url(f"/crowd/{m.index}"), gateways, **walk_options), "after login")

    seconds = run(members, task)
    report(what, members, seconds, idp, before)
    assert_all_well(members, what)
    sids = {m.sid for m in members}
    assert len(sids) == len(members), f"{len(members) - len(sids)} browsers share a provider session"
    codes = idp.stats()["token_requests"].get("authorization_code", 0) - before["token_requests"].get(
        "authorization_code", 0)
    assert codes == len(members), f"{codes} code exchanges for {len(members)} logins"
    return seconds


# ----------------------------------------------------------------------------------------
# back-channel logout


def sign_logout_tokens(issuer: str, names: list[dict]) -> list[str]:
    """Logout tokens signed with the test provider's own key, one per {"sid": …} or {"sub": …}."""
    now = int(time.time())
    specs = [{"key": "idp", "header": {"typ": "logout+jwt"},
              "claims": {"iss": issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4()),
                         "events": {LOGOUT_EVENT: {}}, **name}} for name in names]
    proc = subprocess.run(["node", str(SIGN_JWT)], input=json.dumps(specs).encode(), capture_output=True,
                          timeout=60, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def post_logout(client: Browser, gw, token: str) -> Response:
    return client.post(gw.url(BACKCHANNEL_PATH), f"logout_token={token}", use_jar=False, accept_html=False,
                          max_time=MAX_TIME, headers={"Content-Type": "application/x-www-form-urlencoded"})


def is_login_redirect(r: Response, idp) -> bool:
    return r.status == 302 and (r.location or "").startswith(f"{idp.issuer}/auth?")


def metric(gw, name: str) -> int:
    full = f"wasmcustom.oidc_filter.{name}"
    return gw.stats(full).get(full, 0)


def wait_gauges(gw, sessions: int, links: int, timeout: float = 20.0):
    """The sweep's counts of live sessions and index links reach these values (one pass a second)."""

    def reached():
        return metric(gw, "sessions_live") == sessions and metric(gw, "index_links_live") == links

    try:
        wait_until(reached, timeout, interval=0.2, what=f"{sessions} live sessions and {links} index links")
    except TimeoutError:
        raise AssertionError(f"the sweep counts {metric(gw, 'sessions_live')} live sessions and "
                             f"{metric(gw, 'index_links_live')} index links, expected {sessions} and {links}") from None


# ----------------------------------------------------------------------------------------
# the tests


@pytest.fixture
def idp_with_sid(idp_factory, port_pool):
    """A provider that puts `sid` into ID tokens: oidc-provider does so for clients that
    registered a back-channel logout URI with `backchannel_logout_session_required`. The URI
    is a gateway port kept for the test (`idp.gateway_port`); the provider only calls it when
    one of its own sessions ends, which these tests never do."""
    port = port_pool.take()
    provider = idp_factory(backchannel_logout_uri=f"http://127.0.0.1:{port}{BACKCHANNEL_PATH}")
    provider.gateway_port = port
    yield provider
    port_pool.give(port)


def test_200_browsers_log_in_at_once_over_4_workers_and_back_channel_logouts_end_exactly_their_half(
        gateway, idp_with_sid, browser):
    idp = idp_with_sid
    gw = gateway(_idp=idp, _port=idp.gateway_port, _concurrency=4, backchannel_logout_path=BACKCHANNEL_PATH,
                 session=SMALL_STORE, **IDENTITY)
    members = crowd(browser, "crowd")
    login_everyone(members, lambda m: gw, [gw], idp, "shared data, 4 workers")
    assert metric(gw, "sessions_created") == CROWD
    # Every session is in the store, filed under its sid and its sub: no more, no fewer.
    wait_gauges(gw, CROWD, 2 * CROWD)

    # Each browser again, on new connections (any worker): its own identity every time.
    def again(m: Member):
        for n in range(2):
            check_identity(m, m.browser.get(gw.url(f"/crowd/{m.index}/again/{n}"), max_time=MAX_TIME), "again")

    run(members, again)
    assert_all_well(members, "requests after the login")

    # 200 back-channel logouts at once for the first half: for every one of them a token naming
    # its sid and another naming its sub (a sid ends that provider session, a sub all of the
    # user's), sent side by side so that the two race. Exactly one of each pair finds the session.
    half, rest = members[: CROWD // 2], members[CROWD // 2:]
    in_half = {m.index for m in half}
    tokens = sign_logout_tokens(idp.issuer, [name for m in half for name in ({"sid": m.sid}, {"sub": m.user})])
    pairs = {m.index: tokens[2 * k: 2 * k + 2] for k, m in enumerate(half)}
    answers: list[int] = []
    lock = threading.Lock()

    def logout(job: tuple[Member, str]):
        m, token = job
        r = post_logout(browser("provider"), gw, token)
        with lock:
            answers.append(r.status)
        if r.status != 200:
            raise Lost(f"back-channel logout answered {r!r}")

    jobs = [(m, token) for m in half for token in pairs[m.index]]
    t0 = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        failures = [f.exception() for f in [pool.submit(logout, job) for job in jobs]]
    seconds = time.monotonic() - t0
    print(f"{len(jobs)} back-channel logouts in {seconds:.1f}s = {len(jobs) / seconds:.0f}/s; answers "
          f"{ {s: answers.count(s) for s in set(answers)} }")
    assert not any(failures), [str(e) for e in failures if e][:3]
    assert metric(gw, "backchannel_logout_sessions_ended") == len(half), "exactly one session per logged-out browser"

    # Exactly that half: they must log in again, the others go on as themselves.
    def after_logout(m: Member):
        r = m.browser.get(gw.url(f"/crowd/{m.index}/after"), max_time=MAX_TIME)
        m.statuses.append(r.status)
        if m.index in in_half:
            if not is_login_redirect(r, idp):
                raise Lost(f"a logged-out browser was not sent to log in: {r!r}")
        else:
            check_identity(m, r, "after the others' logout")

    run(members, after_logout)
    assert_all_well(members, "after the back-channel logouts")
    # Both links of every ended session are gone, whichever of its two tokens ended it.
    wait_gauges(gw, len(rest), 2 * len(rest))

    # The other half is reachable too: half of it by sid, half by sub, at once.
    tokens = sign_logout_tokens(idp.issuer, [{"sid": m.sid} if m.index % 2 else {"sub": m.user} for m in rest])
    by_member = dict(zip((m.index for m in rest), tokens))

    def logout_one(m: Member):
        r = post_logout(m.browser, gw, by_member[m.index])
        if r.status != 200:
            raise Lost(f"back-channel logout answered {r!r}")

    def logged_out(m: Member):
        r = m.browser.get(gw.url("/last"), max_time=MAX_TIME)
        if not is_login_redirect(r, idp):
            raise Lost(f"still logged in after its back-channel logout: {r!r}")

    run(rest, logout_one)
    assert_all_well(rest, "the second round of logouts")
    assert metric(gw, "backchannel_logout_sessions_ended") == CROWD
    run(rest, logged_out)
    assert_all_well(rest, "after the second round")
    wait_gauges(gw, 0, 0)


COOKIE_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
COOKIE_STORE = {"session": {"store": "cookie"}, "cookie": {"keys": [COOKIE_KEY]}}


def test_200_browsers_with_cookie_sessions_across_two_envoys_sharing_the_key(gateway, idp_with_sid, browser):
    idp = idp_with_sid
    a = gateway(_idp=idp, _port=idp.gateway_port, backchannel_logout_path=BACKCHANNEL_PATH, **COOKIE_STORE,
                **IDENTITY)
    b = gateway(_idp=idp, backchannel_logout_path=BACKCHANNEL_PATH, **COOKIE_STORE, **IDENTITY)
    members = crowd(browser, "cookie")
    # Even browsers start at A, odd ones at B; the login ends where it started (the callback is
    # that gateway's), then every browser goes back and forth between the two.
    first, other = (lambda m: (a, b)[m.index % 2]), (lambda m: (b, a)[m.index % 2])
    login_everyone(members, first, [a, b], idp, "cookie store, two Envoys")

    def both(m: Member):
        for n, gw in enumerate([other(m), first(m)]):
            check_identity(m, m.browser.get(gw.url(f"/crowd/{m.index}/{n}"), max_time=MAX_TIME), f"at :{gw.port}")

    run(members, both)
    assert_all_well(members, "cookie sessions at both Envoys")
    for m in members:
        assert m.browser.cookie(SESSION_COOKIE) is not None, f"{m.user} holds no session cookie"

    # A back-channel logout cannot delete a cookie: the replica that receives it denies the
    # session (by sid for some, by sub for others), the other replica knows nothing of it.
    half = members[: CROWD // 2]
    tokens = sign_logout_tokens(idp.issuer, [{"sid": m.sid} if m.index % 2 else {"sub": m.user} for m in half])
    by_member = dict(zip((m.index for m in half), tokens))

    def logout_at_a(m: Member):
        r = post_logout(m.browser, a, by_member[m.index])
        if r.status != 200:
            raise Lost(f"back-channel logout answered {r!r}")

    jars = {m.index: m.browser.jar.read_text() for m in half}
    run(half, logout_at_a)
    assert_all_well(half, "back-channel logouts at A")

    def after(m: Member):
        at_a = m.browser.get(a.url(f"/crowd/{m.index}/after"), max_time=MAX_TIME)
        m.statuses.append(at_a.status)
        if m.index in by_member:
            if not is_login_redirect(at_a, idp):
                raise Lost(f"A still let a logged-out browser in: {at_a!r}")
        else:
            check_identity(m, at_a, "at A after the others' logout")

    run(members, after)
    assert_all_well(members, "after the back-channel logouts at A")

    # A's answer expired the refused cookie; a copy kept from before the logout (another tab,
    # a copied jar) is still refused at A, but B, which never saw the logout, honours it: the
    # documented limit of the cookie store (revocation is per replica).
    kept = [m.user for m in half if m.browser.cookie(SESSION_COOKIE) is not None]
    assert not kept, f"A's refusal did not expire the cookie of {kept[:3]}"
    for m in half:
        m.browser.jar.write_text(jars[m.index])

    def copies(m: Member):
        at_a = m.browser.get(a.url(f"/crowd/{m.index}/copy"), max_time=MAX_TIME)
        if not is_login_redirect(at_a, idp):
            raise Lost(f"A let a kept copy of a logged-out cookie in: {at_a!r}")
        m.browser.jar.write_text(jars[m.index])
        check_identity(m, m.browser.get(b.url(f"/crowd/{m.index}/copy"), max_time=MAX_TIME), "copy at B")

    run(half, copies)
    assert_all_well(half, "kept cookies of logged-out browsers")


def restart(gw):
    """Stops the Envoy process and starts a new one with the same configuration and port; does
    not wait for the provider's metadata, so the crowd arrives while the filter loads it."""
    gw.stop()
    gw.admin = None  # the new process gets a new admin port
    gw.admin_address_path.unlink(missing_ok=True)
    gw.start().wait_ready()


def test_right_after_a_restart_200_browsers_at_once_lose_no_login_and_no_session(gateway, idp_with_sid, browser):
    idp = idp_with_sid
    gw = gateway(_idp=idp, _port=idp.gateway_port, _concurrency=4, session=SMALL_STORE, **IDENTITY)
    before = browser("before")
    walk(Member(-1, "before", before), gw.url("/"), [gw])

    restart(gw)
    members = crowd(browser, "restart")
    callback = gw.url("/oauth2/callback?")
    callbacks: dict[int, str] = {}

    def to_callback(m: Member):
        callbacks[m.index] = walk(m, gw.url(f"/crowd/{m.index}"), [gw], stop_before=callback,
                                  wait_for_metadata=True)

    def complete(m: Member):
        r = m.browser.get(callbacks[m.index], max_time=MAX_TIME)
        m.statuses.append(r.status)
        if r.status != 302 or r.location != f"/crowd/{m.index}":
            raise Lost(f"the callback did not complete the login: {r!r}")

    # Everyone starts at once against the fresh process (empty shared data, the provider's
    # metadata maybe still loading) and logs in at the provider; then a whole wave's callbacks
    # go at once: the first writes of sessions, index links and used states into keys that do
    # not exist yet, from 4 workers. In waves of THREADS browsers, so that no authorization
    # code waits past its 60 s at the provider on a slow machine.
    idp_before = idp.stats()
    login_seconds = callback_seconds = 0.0
    for wave in range(0, CROWD, THREADS):
        login_seconds += run(members[wave: wave + THREADS], to_callback)
        assert_all_well(members, "logins at the fresh process")
        callback_seconds += run(members[wave: wave + THREADS], complete)
        assert_all_well(members, "callbacks right after the restart")
    report("after a restart, up to the callback", members, login_seconds, idp, idp_before)
    print(f"{CROWD} callbacks, {THREADS} at once, in {callback_seconds:.1f}s")
    assert metric(gw, "sessions_created") == CROWD

    # Every session works on its next requests, each on a new connection (any of the workers).
    def next_requests(m: Member):
        for n in range(3):
            check_identity(m, m.browser.get(gw.url(f"/crowd/{m.index}/{n}"), max_time=MAX_TIME), f"request {n}")

    run(members, next_requests)
    assert_all_well(members, "requests after the restart")
    assert len({m.sid for m in members}) == CROWD
    wait_gauges(gw, CROWD, 2 * CROWD)

    # The session from before the restart is gone with the process's shared data.
    assert is_login_redirect(before.get(gw.url("/")), idp)
