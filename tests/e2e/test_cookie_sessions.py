"""Stateless cookie sessions (`session.store: cookie`) across separate Envoy processes.

Gateways listen on different ports of 127.0.0.1; cookies are per host, not per port, so
one curl jar presents a session made through one gateway to every other.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from harness import Browser, login, wait_until

SEAL = Path(__file__).resolve().parent / "seal_session.mjs"
BASE = "__Host-oidc-session"


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


K1, K2, K3 = new_key(), new_key(), new_key()


def cookie_store(keys: list[str], **session) -> dict:
    return {"session": {"store": "cookie", **session}, "cookie": {"keys": keys}}


def session_cookies(browser: Browser) -> dict[str, str]:
    return {c.name: c.value for c in browser.cookies() if c.name.startswith(BASE)}


def copy_of(browser: Browser, make, cookies: dict[str, str] | None = None) -> Browser:
    """A fresh browser holding `cookies` (default: the session cookies of `browser`)."""
    other = make("copy")
    for name, value in (cookies if cookies is not None else session_cookies(browser)).items():
        other.set_cookie(name, value, secure=True)
    return other


def restart(gw):
    """Stops the Envoy process and starts a new one with the same config and port."""
    gw.stop()
    gw.admin = None  # the new process gets a new admin port
    gw.admin_address_path.unlink(missing_ok=True)
    gw.start().wait_ready()
    gw.wait_metadata()


def user_at(browser: Browser, gw) -> str | None:
    """The user the upstream sees for a GET through `gw`, or None if the gateway did not forward."""
    r = browser.get(gw.url("/whoami"))
    if r.status != 200:
        return None
    return r.json()["headers"].get("x-auth-request-user")


def assert_new_login(r, gw, sent: dict[str, str]):
    """A refused session: a redirect to the IdP, and every session cookie sent is expired."""
    assert r.status == 302, r
    assert r.location.startswith(f"{gw.idp.issuer}/auth?"), r
    expired = {c.name for c in r.set_cookies() if c.name.startswith(BASE) and c.expired}
    assert expired == set(sent), r


def flip(value: str, position: int) -> str:
    c = value[position]
    return value[:position] + ("B" if c == "A" else "A") + value[position + 1:]


def seal(key: str, session: dict, base: str = BASE) -> str:
    out = subprocess.run(["node", str(SEAL), key, base, json.dumps(session)], capture_output=True,
                         check=True, timeout=10)
    return out.stdout.decode()


def test_a_session_made_through_one_gateway_works_through_another_and_after_a_restart(gateway, browser):
    a = gateway(**cookie_store([K1]))
    b = gateway(**cookie_store([K1]))
    alice = browser("alice")
    done = login(alice, a.url("/app"), "alice")
    assert done.status == 302 and done.location == "/app", done
    cookies = session_cookies(alice)
    assert list(cookies) == [BASE], "a typical session fits in one cookie"
    assert 500 < len(cookies[BASE]) < 3800
    print(f"\ntypical oidc-provider session cookie: {len(cookies[BASE])} bytes of value")

    assert user_at(alice, b) == "alice"
    assert user_at(alice, a) == "alice"
    assert "__Host-oidc-session" not in json.dumps(alice.get(b.url("/")).json()["headers"]), \
        "the session cookie is not passed upstream"

    restart(a)
    assert user_at(alice, a) == "alice", "a restarted replica still opens the session"

    # Without the keys, the same cookie means nothing.
    other = gateway(**cookie_store([K3]))
    assert_new_login(alice.get(other.url("/")), other, cookies)


def test_key_rotation_keeps_the_session_while_the_old_key_is_listed(gateway, browser):
    old_only = gateway(**cookie_store([K1]))
    rotated = gateway(**cookie_store([K2, K1]))
    new_only = gateway(**cookie_store([K2]))
    alice = browser("alice")
    login(alice, old_only.url("/"), "alice")
    sealed_with_old = session_cookies(alice)

    r = alice.get(rotated.url("/"))
    assert r.status == 200 and r.json()["headers"]["x-auth-request-user"] == "alice", r
    reissued = r.set_cookie(BASE)
    assert reissued is not None and not reissued.expired, "re-sealed with the new key on first use"
    assert session_cookies(alice) != sealed_with_old
    assert user_at(alice, new_only) == "alice", "the re-sealed cookie needs only the new key"

    stale = copy_of(alice, browser, sealed_with_old)
    assert user_at(stale, rotated) == "alice"
    stale = copy_of(alice, browser, sealed_with_old)
    assert_new_login(stale.get(new_only.url("/")), new_only, sealed_with_old)


def send(browser: Browser, url: str, cookies: dict[str, str]):
    """A GET with exactly these cookies. curl caps the Cookie header it builds from its jar
    at 8 KB (browsers do not), so sessions of more chunks are sent explicitly."""
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return browser.get(url, use_jar=False, headers={"Cookie": header})


def test_a_large_session_is_chunked_and_every_tampering_starts_a_new_login(gateway, browser):
    a = gateway(**cookie_store([K1]))
    b = gateway(**cookie_store([K1]))
    big = browser("big")
    login(big, a.url("/"), "big")
    chunks = session_cookies(big)
    names = sorted(chunks, key=lambda n: int(n.rsplit("-", 1)[1]))
    assert BASE not in chunks and len(chunks) >= 3, names
    assert names == [f"{BASE}-{i}" for i in range(len(chunks))]
    assert all(len(v) <= 3800 for v in chunks.values())
    print(f"\nsession with a {len(chunks)}-chunk ID token: {sum(map(len, chunks.values()))} bytes of values")
    # Envoy flushes its log file every few seconds.
    wait_until(lambda: f"needs {len(chunks)} chunks" in a.log(), 15, what="the many-chunks warning")

    def user(gw, cookies):
        r = send(big, gw.url("/whoami"), cookies)
        return r.json()["headers"].get("x-auth-request-user") if r.status == 200 else r

    assert user(a, chunks) == "big"
    assert user(b, chunks) == "big", "a chunked session works at another replica too"
    shuffled = dict(reversed(list(chunks.items())))
    assert user(b, shuffled) == "big", "the order the browser sends them in does not matter"

    other = browser("big2")
    login(other, a.url("/"), "big2")
    theirs = session_cookies(other)
    assert sorted(theirs) == sorted(names)

    cases: list[tuple[str, dict[str, str]]] = []
    for name in names:
        cases.append((f"flipped bit in {name}", {**chunks, name: flip(chunks[name], len(chunks[name]) // 2)}))
        cases.append((f"missing {name}", {k: v for k, v in chunks.items() if k != name}))
        cases.append((f"{name} from another session", {**chunks, name: theirs[name]}))
    cases.append(("an extra chunk", {**chunks, f"{BASE}-{len(chunks)}": "AAAA"}))
    cases.append(("reordered chunks", {**chunks, names[1]: chunks[names[2]], names[2]: chunks[names[1]]}))
    cases.append(("a single cookie next to the chunks", {**chunks, BASE: chunks[names[1]]}))
    for case, cookies in cases:
        r = send(big, b.url("/"), cookies)
        try:
            assert_new_login(r, b, cookies)
        except AssertionError as e:
            raise AssertionError(f"{case}: {e}") from None

    assert user(b, chunks) == "big", "the untouched session still works"

    r = send(big, a.url("/oauth2/logout"), chunks)
    assert r.status == 302 and r.location.startswith(f"{a.idp.issuer}/session/end?"), r
    assert "id_token_hint=" in r.location
    expired = {c.name for c in r.set_cookies() if c.name.startswith(BASE) and c.expired}
    assert expired == set(names), "logout expires every chunk"


def test_an_expired_session_is_refused(gateway, browser):
    gw = gateway(**cookie_store([K1]))
    now = int(time.time())
    live = {"sub": "carol", "created_at": now - 60, "expires_at": now + 3600, "last_seen": now - 60,
            "access_token": "opaque-at"}
    # Control: a session sealed by the independent implementation opens.
    assert user_at(copy_of(None, browser, {BASE: seal(K1, live)}), gw) == "carol"

    ended = {**live, "created_at": now - 7200, "expires_at": now - 10}
    cookies = {BASE: seal(K1, ended)}
    assert_new_login(copy_of(None, browser, cookies).get(gw.url("/")), gw, cookies)
    idle = {**live, "last_seen": now - 2 * 3600}
    cookies = {BASE: seal(K1, idle)}
    assert_new_login(copy_of(None, browser, cookies).get(gw.url("/")), gw, cookies)
    # Sealed for another cookie name: the associated data does not match.
    cookies = {BASE: seal(K1, live, base="__Host-other-session")}
    assert_new_login(copy_of(None, browser, cookies).get(gw.url("/")), gw, cookies)


@pytest.mark.parametrize("keys", [["c2hvcnQ="], ["not base64!"]])
def test_the_cookie_store_refuses_bad_or_missing_keys(gateway, keys):
    gw = gateway(_wait_ready=False, **cookie_store(keys))
    assert gw.wait_exit() != 0
    assert "cookie.keys" in gw.log()
    gw = gateway(_wait_ready=False, session={"store": "cookie"})
    assert gw.wait_exit() != 0
    assert "session.store" in gw.log()


def test_a_refresh_reissues_the_cookie(gateway, browser, idp_factory):
    idp = idp_factory(env={"TTL_ACCESS_TOKEN": "6"})
    # 6-second access tokens, refreshed once 3 s are left.
    gw = gateway(_idp=idp, **cookie_store([K1], refresh_margin_seconds=3))
    alice = browser("alice")
    login(alice, gw.url("/"), "alice")
    due = time.monotonic() + 3.5
    before = session_cookies(alice)

    refreshes = idp.token_requests("refresh_token")
    time.sleep(max(0.0, due - time.monotonic()))
    r = alice.get(gw.url("/whoami"))
    assert r.status == 200 and r.json()["headers"]["x-auth-request-user"] == "alice", r
    assert idp.token_requests("refresh_token") == refreshes + 1
    reissued = r.set_cookie(BASE)
    assert reissued is not None and not reissued.expired, "the refreshed session goes back in the cookie"
    assert session_cookies(alice) != before
    assert user_at(alice, gw) == "alice", "the re-issued cookie opens"
    assert idp.token_requests("refresh_token") == refreshes + 1, \
        "the refresh claim on this replica holds for a few seconds: no second refresh"


def test_a_back_channel_logout_denies_the_cookie_on_the_replica_that_received_it(
        gateway, browser, idp_factory, port_pool):
    port = port_pool.take()
    bcl_path = "/oauth2/backchannel-logout"
    idp = idp_factory(backchannel_logout_uri=f"http://127.0.0.1:{port}{bcl_path}")
    gw = gateway(_idp=idp, _port=port, backchannel_logout_path=bcl_path, **cookie_store([K1]))
    alice = browser("alice")
    login(alice, gw.url("/"), "alice")
    assert user_at(alice, gw) == "alice"

    # RP-initiated logout expires the cookie here and ends the IdP session, which sends
    # the back-channel logout. A copy of the cookie kept elsewhere must not work either.
    kept = dict(session_cookies(alice))
    out = alice.get(gw.url("/oauth2/logout"))
    assert out.status == 302 and out.location.startswith(f"{idp.issuer}/session/end?"), out
    page = alice.get(out.location)
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
    assert xsrf, page.text[:500]
    done = alice.post(f"{idp.issuer}/session/end/confirm", {"xsrf": xsrf.group(1), "logout": "yes"})
    assert done.status in (302, 303), done
    assert idp.stats()["backchannel"] == {"success": 1, "error": 0}, idp.log()[-2000:]
    assert_new_login(copy_of(None, browser, kept).get(gw.url("/")), gw, kept)

    bob = browser("bob")
    login(bob, gw.url("/"), "bob")
    assert user_at(bob, gw) == "bob", "other users' cookie sessions are unaffected"
