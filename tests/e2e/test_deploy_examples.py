"""The deployment examples under deploy/ and the configurations in docs/providers.md.

- Every YAML and JSON file parses; the JSON blocks of docs/providers.md are the files.
- deploy/envoy/okta.yaml passes `envoy --mode validate`, which loads the module and makes it
  parse its configuration; the Istio WasmPlugin's pluginConfig and the Envoy Gateway
  EnvoyExtensionPolicy's config are put into the same Envoy configuration and validated the
  same way, so the filter itself accepts what Istio and Envoy Gateway will hand it.
- The Kubernetes resources are checked for the structure that ties them together (the
  cluster names the filter calls, the environment variables it reads, the OCI layout), and
  each one against its published schema, strictly (tests/k8s-schemas: the schemas come from
  pinned npm packages that scripts/setup installs, so the check runs offline).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from harness import REPO, find_envoy

DEPLOY = REPO / "deploy"
OKTA = json.loads((DEPLOY / "providers" / "okta.json").read_text())
ENVOY_OKTA = DEPLOY / "envoy" / "okta.yaml"


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def resource(path: Path, kind: str) -> dict:
    found = [d for d in yaml_docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path}: expected one {kind}"
    return found[0]


def test_every_file_parses():
    files = sorted(DEPLOY.rglob("*"))
    yamls = [f for f in files if f.suffix in (".yaml", ".yml")]
    jsons = [f for f in files if f.suffix == ".json"]
    assert len(yamls) >= 6 and len(jsons) >= 6
    for f in yamls:
        docs = yaml_docs(f)
        assert docs, f
        for d in docs:
            assert isinstance(d, dict), f
    for f in jsons:
        assert isinstance(json.loads(f.read_text()), dict), f


def test_the_provider_page_shows_the_files():
    text = (REPO / "docs" / "providers.md").read_text()
    blocks = re.findall(r"<!-- deploy/providers/([\w.-]+\.json) -->\n```json\n(.*?)```", text, re.S)
    assert sorted(name for name, _ in blocks) == sorted(p.name for p in (DEPLOY / "providers").glob("*.json"))
    for name, block in blocks:
        assert block == (DEPLOY / "providers" / name).read_text(), f"docs/providers.md shows an old {name}"


def without(config: dict, *keys) -> dict:
    return {k: v for k, v in config.items() if k not in keys}


# ---- Envoy -----------------------------------------------------------------------------


def envoy_filter_config(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    return wasm["typed_config"]["config"]


def validate_envoy(tmp_path: Path, wasm: Path, filter_json: dict | None = None,
                   env_keys: list[str] | None = None) -> subprocess.CompletedProcess:
    """envoy --mode validate on deploy/envoy/okta.yaml with local paths for the module and a
    throwaway certificate, and optionally another filter configuration and the environment
    variables the platform passes to the VM."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=app.example.com", "-keyout", str(tmp_path / "tls.key"),
                    "-out", str(tmp_path / "tls.crt")], check=True, capture_output=True, timeout=60)
    text = ENVOY_OKTA.read_text().replace("/etc/envoy/oidc_filter.wasm", str(wasm))
    text = text.replace("/etc/envoy/tls/", f"{tmp_path}/")
    cfg = yaml.safe_load(text)
    if filter_json is not None:
        envoy_filter_config(cfg)["configuration"]["value"] = json.dumps(filter_json)
    if env_keys is not None:
        envoy_filter_config(cfg)["vm_config"]["environment_variables"]["host_env_keys"] = env_keys
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ, OIDC_CLIENT_SECRET="x", OIDC_COOKIE_KEYS="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY")
    return subprocess.run([find_envoy(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
                          env=env, capture_output=True, text=True, timeout=120)


def assert_valid(proc: subprocess.CompletedProcess):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and re.search(r"^configuration '.*envoy\.yaml' OK$", out, re.M), out[-4000:]


def test_the_envoy_example_validates_and_runs_the_okta_file(wasm, tmp_path):
    cfg = yaml.safe_load(ENVOY_OKTA.read_text())
    wasm_cfg = envoy_filter_config(cfg)
    assert wasm_cfg["failure_policy"] == "FAIL_CLOSED"
    assert json.loads(wasm_cfg["configuration"]["value"]) == OKTA
    assert OKTA["client_secret_env"] in wasm_cfg["vm_config"]["environment_variables"]["host_env_keys"]
    okta = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == OKTA["provider_cluster"])
    tls = okta["transport_socket"]["typed_config"]
    host = urlsplit(OKTA["issuer"]).hostname
    assert tls["sni"] == host and tls["common_tls_context"]["validation_context"]["trusted_ca"]
    assert_valid(validate_envoy(tmp_path, wasm))


def test_validation_catches_a_bad_filter_configuration(wasm, tmp_path):
    """Guards the two tests below: a configuration the filter refuses fails validation."""
    proc = validate_envoy(tmp_path, wasm, dict(OKTA, bearer={"mode": "accept"}))
    assert proc.returncode != 0
    assert "`bearer.audiences`" in proc.stdout + proc.stderr


# ---- Istio -----------------------------------------------------------------------------


def test_istio_wasm_plugin(wasm, tmp_path):
    plugin = resource(DEPLOY / "istio" / "wasmplugin.yaml", "WasmPlugin")
    assert plugin["apiVersion"] == "extensions.istio.io/v1alpha1"
    spec = plugin["spec"]
    assert spec["url"].startswith("oci://") and spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["phase"] == "AUTHN"
    config = spec["pluginConfig"]
    env = {e["name"]: e.get("valueFrom") for e in spec["vmConfig"]["env"]}
    assert env == {config["client_secret_env"]: "HOST", config["cookie"]["keys_env"]: "HOST"}
    # The Okta file, with Istio's cluster name and cookie sessions for several replicas.
    assert without(config, "provider_cluster", "cookie", "session") == without(OKTA, "provider_cluster")
    assert config["session"] == {"store": "cookie"}

    entry = resource(DEPLOY / "istio" / "provider-okta.yaml", "ServiceEntry")
    rule = resource(DEPLOY / "istio" / "provider-okta.yaml", "DestinationRule")
    host = urlsplit(OKTA["issuer"]).hostname
    port = entry["spec"]["ports"][0]
    assert entry["spec"]["hosts"] == [host] and port["targetPort"] == 443
    assert config["provider_cluster"] == f"outbound|{port['number']}||{host}"
    tls = rule["spec"]["trafficPolicy"]["portLevelSettings"][0]
    assert rule["spec"]["host"] == host and tls["port"]["number"] == port["number"]
    assert tls["tls"]["mode"] == "SIMPLE" and tls["tls"]["sni"] == host and tls["tls"]["caCertificates"]

    assert_valid(validate_envoy(tmp_path, wasm, config, list(env)))


def test_istio_image_follows_the_wasm_oci_layout():
    lines = [ln.split() for ln in (DEPLOY / "istio" / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == [["FROM", "scratch"], ["COPY", "target/wasm32-wasip1/release/oidc_filter.wasm", "./plugin.wasm"]]


# ---- Envoy Gateway ---------------------------------------------------------------------


def test_envoy_gateway_extension_policy(wasm, tmp_path):
    policy = resource(DEPLOY / "envoy-gateway" / "extension-policy.yaml", "EnvoyExtensionPolicy")
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    ext = policy["spec"]["wasm"][0]
    assert ext["rootID"] == "oidc" and ext["failOpen"] is False and ext["code"]["type"] == "Image"
    config = ext["config"]
    assert set(ext["env"]["hostKeys"]) == {config["client_secret_env"], config["cookie"]["keys_env"]}
    assert without(config, "provider_cluster", "cookie", "session") == without(OKTA, "provider_cluster")

    backend = resource(DEPLOY / "envoy-gateway" / "provider-okta.yaml", "Backend")
    route = resource(DEPLOY / "envoy-gateway" / "provider-okta.yaml", "HTTPRoute")
    host = urlsplit(OKTA["issuer"]).hostname
    assert backend["spec"]["endpoints"] == [{"fqdn": {"hostname": host, "port": 443}}]
    assert backend["spec"]["tls"] == {"sni": host, "wellKnownCACertificates": "System"}
    ns, name = route["metadata"]["namespace"], route["metadata"]["name"]
    assert config["provider_cluster"] == f"httproute/{ns}/{name}/rule/0"
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == backend["metadata"]["name"]
    # The route relays one exact path only.
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "Exact", "value": "/.oidc-filter-cluster-only"}}]

    proxy = resource(DEPLOY / "envoy-gateway" / "envoy-proxy.yaml", "EnvoyProxy")
    env = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
    assert {e["name"] for e in env} == set(ext["env"]["hostKeys"])
    assert all("secretKeyRef" in e["valueFrom"] for e in env)

    assert_valid(validate_envoy(tmp_path, wasm, config, ext["env"]["hostKeys"]))


@pytest.mark.parametrize("name", ["okta", "keycloak", "auth0", "entra-id", "google", "oidc-provider"])
def test_each_provider_file_configures_the_filter(wasm, tmp_path, name):
    config = json.loads((DEPLOY / "providers" / f"{name}.json").read_text())
    # Clusters are only names here; validation does not connect.
    assert_valid(validate_envoy(tmp_path, wasm, config))


# ---- published schemas (tests/k8s-schemas) ------------------------------------------------

SCHEMAS = REPO / "tests" / "k8s-schemas"


def kubernetes_resources() -> dict[str, dict]:
    """Every Kubernetes resource under deploy/ (deploy/envoy holds Envoy's own configuration),
    by "path#index kind"."""
    found = {}
    for f in sorted(DEPLOY.rglob("*.yaml")):
        if f.parent.name == "envoy":
            continue
        for i, doc in enumerate(yaml_docs(f)):
            found[f"{f.relative_to(DEPLOY)}#{i} {doc['kind']}"] = doc
    return found


def schema_verdicts(resources: list[dict]) -> tuple[int, list[dict]]:
    """tests/k8s-schemas/validate.mjs on the resources: its exit status and one verdict each."""
    assert (SCHEMAS / "node_modules" / "@kubernetes-models" / "istio").is_dir(), \
        "tests/k8s-schemas/node_modules is missing: run scripts/setup"
    proc = subprocess.run(["node", str(SCHEMAS / "validate.mjs")], input=json.dumps(resources),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    verdicts = json.loads(proc.stdout)
    assert len(verdicts) == len(resources)
    return proc.returncode, verdicts


def test_every_kubernetes_resource_passes_its_published_schema():
    resources = kubernetes_resources()
    assert sorted(d["kind"] for d in resources.values()) == sorted([
        "WasmPlugin", "ServiceEntry", "DestinationRule",
        "EnvoyExtensionPolicy", "EnvoyProxy", "Backend", "HTTPRoute"])
    status, verdicts = schema_verdicts(list(resources.values()))
    report = {name: v for name, v in zip(resources, verdicts)}
    assert all(v["schema"] for v in verdicts), report
    assert all(v["errors"] == [] for v in verdicts), report
    assert status == 0


def _set(path: str, value):
    def edit(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return edit


def _rename(path: str, new: str):
    def edit(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[new] = node.pop(last)
    return edit


def _drop(path: str):
    def edit(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[last]
    return edit


# (kind, how the copy is broken, where the error must point)
BROKEN = {
    "wasmplugin-misspelt-field": ("WasmPlugin", _rename("spec.failStrategy", "failureStrategy"),
                                  "/spec/failureStrategy: field not declared"),
    "wasmplugin-env-source": ("WasmPlugin", _set("spec.vmConfig.env.0.valueFrom", "SECRET"),
                              "/spec/vmConfig/env/0/valueFrom: must be equal to one of the allowed values"),
    "metadata-misspelt-field": ("WasmPlugin", _rename("metadata.namespace", "namespce"),
                                "/metadata/namespce: field not declared"),
    "serviceentry-port-as-string": ("ServiceEntry", _set("spec.ports.0.number", "80"),
                                    "/spec/ports/0/number: must be integer"),
    "destinationrule-tls-misspelt": ("DestinationRule",
                                     _rename("spec.trafficPolicy.portLevelSettings.0.tls.sni", "serverName"),
                                     "/spec/trafficPolicy/portLevelSettings/0/tls/serverName: field not declared"),
    "extensionpolicy-failopen-as-string": ("EnvoyExtensionPolicy", _set("spec.wasm.0.failOpen", "false"),
                                           "/spec/wasm/0/failOpen: must be boolean"),
    "extensionpolicy-without-code": ("EnvoyExtensionPolicy", _drop("spec.wasm.0.code"),
                                     "/spec/wasm/0: must have required property code"),
    "backend-port-as-string": ("Backend", _set("spec.endpoints.0.fqdn.port", "443"),
                               "/spec/endpoints/0/fqdn/port: must be integer"),
    "httproute-backend-without-name": ("HTTPRoute", _drop("spec.rules.0.backendRefs.0.name"),
                                       "/spec/rules/0/backendRefs/0: must have required property name"),
    "httproute-path-match-type": ("HTTPRoute", _set("spec.rules.0.matches.0.path.type", "Exactly"),
                                  "/spec/rules/0/matches/0/path/type: must be equal to one of the allowed values"),
    "envoyproxy-secret-ref-misspelt": ("EnvoyProxy", _rename(
        "spec.provider.kubernetes.envoyDeployment.container.env.0.valueFrom.secretKeyRef.key", "keys"),
        "/spec/provider/kubernetes/envoyDeployment/container/env/0/valueFrom/secretKeyRef/keys: field not declared"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_schema_check_refuses_a_broken_copy(case):
    kind, edit, expected = BROKEN[case]
    [doc] = [d for d in kubernetes_resources().values() if d["kind"] == kind]
    broken = copy.deepcopy(doc)
    edit(broken)
    status, [verdict] = schema_verdicts([broken])
    assert status == 1 and verdict["schema"], verdict
    assert any(e.startswith(expected) for e in verdict["errors"]), verdict
    # Only the edit is wrong: the original still passes.
    assert schema_verdicts([doc]) == (0, [dict(verdict, errors=[])])


def test_the_schema_check_leaves_the_filter_configuration_free_form():
    """pluginConfig and config are free-form JSON in both schemas (the filter checks them
    itself, see the envoy --mode validate tests above): any field passes there."""
    resources = kubernetes_resources()
    plugin = copy.deepcopy(next(d for d in resources.values() if d["kind"] == "WasmPlugin"))
    plugin["spec"]["pluginConfig"]["not_a_filter_field"] = {"nested": [1, {"x": True}]}
    policy = copy.deepcopy(next(d for d in resources.values() if d["kind"] == "EnvoyExtensionPolicy"))
    policy["spec"]["wasm"][0]["config"]["not_a_filter_field"] = {"nested": 1}
    status, verdicts = schema_verdicts([plugin, policy])
    assert status == 0 and all(v["errors"] == [] for v in verdicts), verdicts


def test_the_schema_check_refuses_a_kind_it_has_no_schema_for():
    status, [verdict] = schema_verdicts([{"apiVersion": "example.test/v1", "kind": "Widget",
                                          "metadata": {"name": "w"}}])
    assert status == 1 and verdict["schema"] is None
    assert verdict["errors"] == ["no schema installed for example.test/v1 Widget"]


# ---- scripts/check-k8s-examples: the same resources against CRD files you supply ---------


def test_the_schema_checker_refuses_undeclared_fields(tmp_path):
    """Mechanics only, with a made-up CRD: strict validation, and skipping kinds no CRD covers."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.test"},
        "spec": {"group": "example.test", "names": {"kind": "Widget"}, "versions": [{
            "name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer"}},
                         "required": ["size"]}}}}}]},
    }
    (tmp_path / "crd.yaml").write_text(yaml.safe_dump(crd))
    good = {"apiVersion": "example.test/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"size": 1}}
    typo = dict(good, spec={"size": 1, "colour": "red"})
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    (tmp_path / "good.yaml").write_text(yaml.safe_dump_all([good, other]))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(typo))
    script = [sys.executable, str(REPO / "scripts" / "check-k8s-examples"), str(tmp_path / "crd.yaml"), "--resources"]
    ok = subprocess.run(script + [str(tmp_path / "good.yaml")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "ok    " in ok.stdout and "skip  " in ok.stdout, ok.stdout + ok.stderr
    bad = subprocess.run(script + [str(tmp_path / "typo.yaml")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "colour" in bad.stdout, bad.stdout + bad.stderr
