"""The etcd session store (session.store "etcd") with a real 3-member etcd cluster on
loopback and two Envoy processes in front of the same upstream: sessions are shared by the
fleet, a back-channel logout at one replica ends the session at all, a refresh happens once
across replicas, and the filter fails closed when etcd cannot answer.
"""

from __future__ import annotations

import threading
import time

import pytest

from etcd_harness import EtcdCluster, etcd_gateway
from harness import logged_in, wait_until

SESSION_COOKIE = "__Host-oidc-session"
BACKCHANNEL_PATH = "/oauth2/backchannel-logout"
PREFIX = "oidc-test/"


@pytest.fixture(scope="module")
def etcd(workdir):
    cluster = EtcdCluster(workdir, members=3)
    try:
        cluster.start()
    except Exception:
        print(cluster.log())
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def session_cookie(b) -> str:
    return f"{SESSION_COOKIE}={b.cookie(SESSION_COOKIE).value}"


def user_at(b, gw, cookie: str, path: str = "/", **kw):
    return b.get(gw.url(path), use_jar=False, headers={"Cookie": cookie, **kw.pop("headers", {})}, **kw)


def upstream_user(r) -> str:
    assert r.status == 200, r
    return r.json()["headers"]["x-auth-request-user"]


def is_login_redirect(r, idp) -> bool:
    return r.status == 302 and (r.location or "").startswith(f"{idp.issuer}/auth?")


def test_a_login_through_one_gateway_is_valid_at_the_other(etcd, gateway, browser):
    a = etcd_gateway(gateway, etcd)
    b_gw = etcd_gateway(gateway, etcd)
    b = browser()
    logged_in(b, a, "/", "alice")
    cookie = session_cookie(b)
    assert upstream_user(user_at(b, a, cookie)) == "alice"
    assert upstream_user(user_at(b, b_gw, cookie)) == "alice"
    # The session lives in etcd under the prefix, with its sub index link.
    keys = etcd.keys(PREFIX)
    assert any(k.startswith(PREFIX + "s/") for k in keys), keys
    assert any(k.startswith(PREFIX + "x/") for k in keys), keys
    # An unknown cookie is not a session anywhere.
    forged = f"{SESSION_COOKIE}={'A' * 43}"
    assert is_login_redirect(user_at(b, b_gw, forged), gateway.idp)
