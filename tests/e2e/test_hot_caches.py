"""The per-VM caches of the hot path (verified bearer tokens, opened cookie sessions, decoded
session records) never serve what the provider or a logout has taken back: after a key
rotation, a logout or a back-channel logout, the next request through the same workers is
judged afresh."""

import time

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
