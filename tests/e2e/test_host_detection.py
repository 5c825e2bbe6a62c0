"""The filter detects its proxy-wasm host once at start and says which it is (the engine side is
in test_kong_engine.py)."""

from harness import wait_until


def test_on_envoy_the_filter_says_it_runs_on_envoy(gw):
    wait_until(lambda: "oidc-filter: running on Envoy" in gw.log(), 10, what="the host detection log line")
    assert "ngx_wasm_module" not in gw.log()
