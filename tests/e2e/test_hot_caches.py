"""The per-VM caches of the hot path (verified bearer tokens, opened cookie sessions, decoded
session records) never serve what the provider or a logout has taken back: after a key
rotation, a logout or a back-channel logout, the next request through the same workers is
judged afresh."""

import re
import time

import pytest

from harness import login
from test_cookie_sessions import K1, assert_new_login, cookie_store, copy_of, session_cookies
from test_hardening_tokens import CLIENT_AUDIENCE, access_claims, bearer_get


def test_a_cached_bearer_token_is_refused_once_its_key_is_withdrawn(rogue, gateway, browser):
    gw = gateway(_idp=rogue, bearer=CLIENT_AUDIENCE)
    b = browser()
    old = rogue.sign(access_claims(rogue), header={"typ": "at+jwt"}, kid="k1")
    # Enough requests for every worker to have verified (and cached) the token.
    for _ in range(8):
        r = bearer_get(b, gw, old)
        assert r.status == 200, r
    # The provider withdraws k1; a token signed with the new key makes the filter fetch the keys.
    rogue.control(jwks_kids=["k2"], signing_kid="k2")
    new = rogue.sign(access_claims(rogue), header={"typ": "at+jwt"}, kid="k2")
    r = bearer_get(b, gw, new)
    assert r.status == 200, r
    assert rogue.stats()["jwks_requests"] == 2, "one refetch for the new kid"
    time.sleep(1.2)  # every worker re-reads the shared keys within a second
    for _ in range(8):
        r = bearer_get(b, gw, old)
        assert r.status == 401, f"a token signed by a withdrawn key was served: {r}"
    assert bearer_get(b, gw, new).status == 200


def warm(b, gw, times: int = 8):
    """Enough requests for every worker to have opened (and cached) the session."""
    for _ in range(times):
        r = b.get(gw.url("/whoami"))
        assert r.status == 200, r


STORES = {"shared": {}, "cookie": cookie_store([K1])}


def assert_refused(b, gw, kept: dict[str, str], store: str):
    """The kept session cookie no longer passes: a new login (which expires a cookie session)."""
    r = b.get(gw.url("/whoami"))
    if store == "cookie":
        assert_new_login(r, gw, kept)
    else:
        assert r.status == 302 and r.location.startswith(f"{gw.idp.issuer}/auth?"), r


@pytest.mark.parametrize("store", STORES)
def test_a_session_every_worker_cached_is_refused_after_its_logout(gateway, browser, store):
    gw = gateway(**STORES[store])
    alice = browser("alice")
    login(alice, gw.url("/"), "alice")
    kept = session_cookies(alice)
    copy = copy_of(None, browser, kept)
    warm(copy, gw)
    out = alice.get(gw.url("/oauth2/logout"))
    assert out.status == 302, out
    for _ in range(8):
        assert_refused(copy_of(None, browser, kept), gw, kept, store)


@pytest.mark.parametrize("store", STORES)
def test_a_back_channel_logout_refuses_a_session_every_worker_cached(
        gateway, browser, idp_factory, port_pool, store):
    port = port_pool.take()
    bcl_path = "/oauth2/backchannel-logout"
    idp = idp_factory(backchannel_logout_uri=f"http://127.0.0.1:{port}{bcl_path}")
    gw = gateway(_idp=idp, _port=port, backchannel_logout_path=bcl_path, **STORES[store])
    alice = browser("alice")
    login(alice, gw.url("/"), "alice")
    kept = session_cookies(alice)
    warm(copy_of(None, browser, kept), gw)
    # Ends the session at the IdP (without the filter's logout), which sends the back-channel logout.
    page = alice.get(f"{idp.issuer}/session/end")
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
    assert xsrf, page.text[:500]
    done = alice.post(f"{idp.issuer}/session/end/confirm", {"xsrf": xsrf.group(1), "logout": "yes"})
    assert done.status in (302, 303), done
    assert idp.stats()["backchannel"] == {"success": 1, "error": 0}, idp.log()[-2000:]
    for _ in range(8):
        assert_refused(copy_of(None, browser, kept), gw, kept, store)
