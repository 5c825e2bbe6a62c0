"""The shipped Kong Gateway 3.9 configuration (examples/kong/kong.conf, kong.yml and
upstream-headers.conf). Kong itself does not run here: these checks parse the files and hold them
to what the engine tests (test_kong_engine.py, examples/kong/nginx.conf) run; the filter JSON in
kong.yml is also loaded into the engine there."""

from __future__ import annotations

import json
import re

import yaml

from harness import REPO
from nginx_harness import EXAMPLE, example_filter_config

KONG = REPO / "examples" / "kong"


def kong_conf() -> dict[str, str]:
    """kong.conf's `key = value` lines (Kong's format: # starts a comment)."""
    out = {}
    for line in (KONG / "kong.conf").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key = value line in kong.conf: {line!r}"
        assert key.strip() not in out, f"kong.conf sets {key.strip()} twice"
        out[key.strip()] = value.strip()
    return out


def kong_filter() -> dict:
    doc = yaml.safe_load((KONG / "kong.yml").read_text())
    assert doc["_format_version"] == "3.0"
    chains = [c for s in doc["services"] for c in s.get("filter_chains", [])]
    assert len(chains) == 1 and chains[0]["enabled"] is True
    filters = chains[0]["filters"]
    assert [f["name"] for f in filters] == ["oidc_filter"], "Kong names a filter after its .wasm file"
    assert filters[0]["enabled"] is True
    return filters[0]


def kong_filter_config() -> dict:
    raw = kong_filter()["config"]
    assert isinstance(raw, str), "a filter without a JSON schema takes its configuration as a string"
    return json.loads(raw)


def allow_list(text: str) -> set[str]:
    """Client headers forwarded by proxy_set_header Name $http_name lines."""
    pairs = re.findall(r"proxy_set_header\s+([A-Za-z-]+)\s+\$http_([a-z_]+);", text)
    for name, var in pairs:
        assert var == name.lower().replace("-", "_"), f"{name} forwarded from $http_{var}"
    return {name.lower() for name, _ in pairs} - {"host"}


def test_kong_conf_turns_the_engine_on_with_shared_data_and_the_secret():
    conf = kong_conf()
    assert conf["wasm"] == "on"
    assert conf["wasm_filters_path"].startswith("/")
    assert re.fullmatch(r"\d+[km]", conf["nginx_wasm_shm_kv"]), conf["nginx_wasm_shm_kv"]
    assert conf["nginx_main_env"] == kong_filter_config()["client_secret_env"]
    assert conf["database"] == "off" and conf["declarative_config"].endswith("kong.yml")
    assert conf["nginx_wasm_tls_verify_cert"] == "on" and conf["nginx_wasm_tls_verify_host"] == "on"


def test_kong_forwards_the_same_allow_list_as_the_tested_nginx_config():
    conf = kong_conf()
    assert conf["nginx_location_include"].endswith("/oidc-upstream-headers.conf")
    include = (KONG / "upstream-headers.conf").read_text()
    assert re.search(r"^proxy_pass_request_headers off;$", include, re.M)
    tested = EXAMPLE.read_text()
    assert re.search(r"^\s*proxy_pass_request_headers off;$", tested, re.M)
    assert allow_list(include) == allow_list(tested)
    # What the filter sets must be on the list, or the upstream never gets the identity.
    fc = kong_filter_config()
    assert set(fc["upstream"]["claim_headers"]) <= allow_list(include)
    assert {"authorization", "cookie"} <= allow_list(include)


def test_kong_yml_filter_config_has_the_tested_shape():
    fc = kong_filter_config()
    tested = example_filter_config()
    assert set(fc) <= set(tested) | {"insecure_allow_http"}, set(fc) - set(tested)
    assert fc["issuer"].startswith("https://") and "insecure_allow_http" not in fc
    assert re.fullmatch(r"[a-z0-9.-]+:\d+", fc["provider_cluster"]), "host:port on this engine"
    assert fc["redirect_uri"].endswith("/oauth2/callback")
