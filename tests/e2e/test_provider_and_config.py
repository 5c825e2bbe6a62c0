"""Provider metadata loading and configuration errors."""

import json

import pytest

from harness import filter_config, load_envoy_config, logged_in, wait_until


def test_503_until_metadata_then_login_works(gateway, idp_factory, browser):
    provider = idp_factory(start=False)
    gw = gateway(_idp=provider, _wait_metadata=False)
    b = browser()
    r = b.get(gw.url("/"))
    assert r.status == 503, r
    retry_after = r.header("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0, r

    provider.start()

    def loaded():
        resp = b.get(gw.url("/"))
        return resp if resp.status != 503 else None

    first = wait_until(loaded, 20, interval=0.2, what="the filter to fetch the metadata after the IdP came up")
    assert first.status == 302 and first.location.startswith(f"{provider.issuer}/auth?"), first
    logged_in(b, gw, "/page")
    r = b.get(gw.url("/page"))
    assert r.status == 200 and r.json()["headers"]["x-auth-request-user"] == "alice", r


def base_config(**changes):
    cfg = filter_config(load_envoy_config())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


@pytest.mark.parametrize("fields,config", [
    (["bogus_field"], base_config(bogus_field=1)),
    (["issuer", "insecure_allow_http"], base_config(insecure_allow_http=None)),
    (["client_id"], base_config(client_id=None)),
], ids=["unknown-field", "http-issuer-without-insecure_allow_http", "missing-client_id"])
def test_bad_config_stops_envoy_and_names_the_field(fields, config, gateway):
    gw = gateway(_raw_config=json.dumps(config), _wait_ready=False)
    code = gw.wait_exit(timeout=20)
    assert code != 0
    log = gw.log()
    # The message must come from the filter itself ("wasm log <plugin> ..."), not from Envoy
    # failing to load the module.
    lines = [ln for ln in log.splitlines()
             if "wasm log" in ln and any(f in ln for f in fields) and ("[error]" in ln or "[critical]" in ln)]
    assert lines, f"no error line names {' or '.join(fields)}:\n{log[-4000:]}"


def test_config_that_is_not_json_stops_envoy(gateway):
    gw = gateway(_raw_config="{not json", _wait_ready=False)
    assert gw.wait_exit(timeout=20) != 0
    filter_errors = [ln for ln in gw.log().splitlines() if "wasm log" in ln and ("[error]" in ln or "[critical]" in ln)]
    assert filter_errors, f"the filter logged no error about its configuration:\n{gw.log_summary()}"


def test_idp_restart_keeps_sessions_and_logins_working(gateway, idp_factory, browser):
    """The IdP restarts (losing its own state, keeping its signing key): gateway sessions
    survive, and new logins verify the new ID tokens."""
    provider = idp_factory()
    gw = gateway(_idp=provider)
    before = browser("before")
    logged_in(before, gw, "/")
    provider.stop()
    provider.start()
    assert before.get(gw.url("/")).status == 200
    after = browser("after")
    logged_in(after, gw, "/x")
    r = after.get(gw.url("/x"))
    assert r.status == 200 and r.json()["headers"]["x-auth-request-user"] == "alice", r
