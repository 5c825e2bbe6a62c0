"""The configuration files users run (envoy.yaml, docker-compose.yml, the IdP's defaults)
are valid and agree with each other."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from harness import ENVOY_YAML, REPO, Idp, filter_config, find_envoy, load_envoy_config, query_params, wasm_filter

COMPOSE = REPO / "docker-compose.yml"


def cluster_port(cfg, name):
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            return c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
                "port_value"]
    raise KeyError(name)


def test_docker_compose_is_valid():
    checker = Path(sys.executable).parent / "check-jsonschema"
    proc = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_envoy_yaml_validates(wasm, tmp_path):
    """`envoy --mode validate` loads the wasm module and configures the plugin."""
    env = dict(os.environ, OIDC_CLIENT_SECRET="demo-client-secret")
    config = "envoy.yaml"
    if os.environ.get("OIDC_FILTER_WASM"):  # the tests run against another build of the module
        config = str(tmp_path / "envoy.yaml")
        Path(config).write_text(ENVOY_YAML.read_text().replace(
            "target/wasm32-wasip1/release/oidc_filter.wasm", str(wasm)))
    proc = subprocess.run([find_envoy(), "--mode", "validate", "-c", config, "--use-dynamic-base-id"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"configuration '{config}' OK" in proc.stdout + proc.stderr


def test_envoy_yaml_is_consistent():
    cfg = load_envoy_config()
    listener = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert (listener["address"], listener["port_value"]) == ("127.0.0.1", 8080)
    wf = wasm_filter(cfg)["typed_config"]["config"]
    assert wf["failure_policy"] == "FAIL_CLOSED"
    # Request bodies (back-channel logout) must reach the filter while it pauses on headers.
    assert wf["allow_on_headers_stop_iteration"] is True
    assert wf["vm_config"]["vm_id"], "a unique vm_id keeps shared data apart from other plugins"
    assert wf["vm_config"]["code"]["local"]["filename"] == "target/wasm32-wasip1/release/oidc_filter.wasm"
    fc = filter_config(cfg)
    assert fc["redirect_uri"] == "http://127.0.0.1:8080/oauth2/callback"
    assert fc["issuer"] == f"http://127.0.0.1:{cluster_port(cfg, fc['provider_cluster'])}"
    assert fc["client_secret_env"] in wf["vm_config"]["environment_variables"]["host_env_keys"]
    http_filters = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"]
    assert [f["name"] for f in http_filters] == ["envoy.filters.http.wasm", "envoy.filters.http.router"]


def test_docker_compose_matches_envoy_yaml():
    """docker-compose.yml runs the same envoy.yaml with the wasm at the relative path it names,
    and the IdP/echo ports and redirect URIs it sets are the ones envoy.yaml uses."""
    compose = yaml.safe_load(COMPOSE.read_text())
    cfg = load_envoy_config()
    fc = filter_config(cfg)
    services = compose["services"]
    for name in ("idp", "echo", "envoy"):
        assert services[name]["network_mode"] == "host"

    envoy = services["envoy"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in envoy["volumes"]}
    wasm_rel = wasm_filter(cfg)["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
    assert mounts[f"{envoy['working_dir']}/{wasm_rel}"] == f"./{wasm_rel}"
    config_arg = envoy["command"][envoy["command"].index("-c") + 1]
    assert mounts[config_arg] == "./envoy.yaml"
    assert envoy["environment"][fc["client_secret_env"]] == "demo-client-secret"

    idp = services["idp"]["environment"]
    assert int(idp["IDP_PORT"]) == cluster_port(cfg, fc["provider_cluster"])
    assert fc["redirect_uri"] in idp["RP_REDIRECT_URIS"].split(",")
    assert int(services["echo"]["environment"]["PORT"]) == cluster_port(cfg, "upstream")


def test_idp_defaults_accept_the_demo_redirect_uri(workdir, browser):
    """With no RP_* variables the IdP registers envoy.yaml's redirect_uri (scripts/demo relies on it)."""
    fc = filter_config(load_envoy_config())
    server = Idp(workdir)
    server.env.pop("RP_REDIRECT_URIS")
    server.env.pop("RP_POST_LOGOUT_REDIRECT_URIS")
    server.start()
    try:
        url = (f"{server.issuer}/auth?client_id={fc['client_id']}&response_type=code&scope=openid"
               f"&redirect_uri={fc['redirect_uri']}&state=abcdefghijklmnopqrstuv&nonce=n"
               f"&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256")
        r = browser().get(url)
        assert r.status == 303, r
        assert r.location.startswith("/interaction/"), r
        assert "error" not in query_params(r.location)
    finally:
        server.stop()
