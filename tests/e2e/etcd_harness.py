"""A real etcd cluster on loopback for the etcd session store's tests, and gateways
configured to use it.

`EtcdCluster(workdir, members=3).start()` starts Debian's `etcd` (3.4, `apt-get install
etcd-server`, see scripts/setup) with distinct ports and data directories; members can be
killed and started again with their data. Gateways reach every member through an Envoy
cluster of its own (`etcd0`, `etcd1`, …), which the filter lists in `session.etcd.cluster`.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from harness import ManagedProcess, build_envoy_config, free_port, wait_until, Gateway, wasm_filter, filter_config

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
# The name in the members' certificate: what the gateways' clusters send as SNI and check.
TLS_NAME = "etcd.test"


class EtcdTls:
    """A throwaway CA and one server certificate (for TLS_NAME and 127.0.0.1), made with openssl."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.ca, self.cert, self.key = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
        ca_key, csr, ext = directory / "ca-key.pem", directory / "server.csr", directory / "server.ext"
        ext.write_text(f"subjectAltName=DNS:{TLS_NAME},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        for argv in (
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", "/CN=oidc-filter test etcd CA", "-keyout", ca_key, "-out", self.ca],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", f"/CN={TLS_NAME}", "-keyout", self.key, "-out", csr],
            ["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
             "-extfile", ext, "-out", self.cert],
        ):
            subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True, timeout=30)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


class EtcdCluster:
    def __init__(self, workdir: Path, members: int = 3, extra_args: tuple[str, ...] = (), tls: bool = False):
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="etcd-", dir=workdir))
        # With TLS, the client port speaks only https (peers stay plain: loopback).
        self.tls = EtcdTls(self.dir / "tls") if tls else None
        if self.tls:
            self.extra_args += ["--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.processes: list[ManagedProcess | None] = [None] * members
        self.token: str | None = None

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports))

    def client_url(self, i: int) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_ports[i]}"

    def start_member(self, i: int):
        name = self.names[i]
        argv = [
            ETCD, "--name", name, "--data-dir", str(self.dir / name),
            "--listen-client-urls", self.client_url(i), "--advertise-client-urls", self.client_url(i),
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.dir.name,
            # A loaded test machine: elections must not fire on a slow heartbeat.
            "--heartbeat-interval", "200", "--election-timeout", "2000",
            "--logger", "zap", "--log-outputs", "stderr",
            *self.extra_args,
        ]
        self.processes[i] = ManagedProcess(f"etcd-{name}", argv, self.dir / f"{name}.log")

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        for i in range(len(self.names)):
            self.start_member(i)
        self.wait_healthy(timeout)
        return self

    def call(self, i: int, path: str, body: dict, timeout: float = 3.0) -> tuple[int, dict]:
        req = urllib.request.Request(self.client_url(i) + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": self.token} if self.token else {})})
        try:
            context = self.tls.context() if self.tls else None
            with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def any_call(self, path: str, body: dict) -> tuple[int, dict]:
        for i, p in enumerate(self.processes):
            if p is not None and p.alive():
                status, answer = self.call(i, path, body)
                if status == 200:
                    return status, answer
        return 0, {}

    def wait_healthy(self, timeout: float = 30.0):
        """Every running member answers a linearizable read (so a leader exists)."""
        def healthy():
            return all(self.call(i, "/v3/kv/range", {"key": b64("health")})[0] == 200
                       for i, p in enumerate(self.processes) if p is not None and p.alive())
        wait_until(healthy, timeout, interval=0.2, what="a healthy etcd cluster")

    def kill(self, i: int):
        p = self.processes[i]
        if p is not None:
            p.kill()
            p.stop()
        self.processes[i] = None

    def restart(self, i: int):
        # The data directory stays: the member rejoins with its identity.
        self.start_member(i)

    def keys(self, prefix: str) -> list[str]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        _, answer = self.any_call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end), "keys_only": True})
        return [base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs", [])]

    def delete_prefix(self, prefix: str) -> int:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        _, answer = self.any_call("/v3/kv/deleterange", {"key": b64(prefix), "range_end": b64(end)})
        return int(answer.get("deleted", 0))

    def enable_auth(self, user: str, password: str):
        """Creates `root` (etcd requires it for auth) with `password` and a user `user`
        with read-write access to everything, then turns authentication on."""
        for path, body in [
            ("/v3/auth/user/add", {"name": "root", "password": password}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/role/add", {"name": "sessions"}),
            ("/v3/auth/role/grant", {"name": "sessions", "perm": {
                "permType": "READWRITE", "key": b64("\0"), "range_end": b64("\0")}}),
            ("/v3/auth/user/add", {"name": user, "password": password}),
            ("/v3/auth/user/grant", {"user": user, "role": "sessions"}),
            ("/v3/auth/enable", {}),
        ]:
            status, answer = self.any_call(path, body)
            assert status == 200, (path, answer)
        _, answer = self.any_call("/v3/auth/authenticate", {"name": "root", "password": password})
        self.token = answer["token"]

    def stop(self):
        for i in range(len(self.processes)):
            p = self.processes[i]
            if p is not None:
                p.stop()
            self.processes[i] = None

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes if p is not None)


def etcd_envoy_config(port: int, idp_port: int, upstream_port: int, cluster: EtcdCluster,
                      etcd: dict | None = None, env_keys: tuple[str, ...] = (), **overrides) -> dict:
    """envoy.yaml with one Envoy cluster per etcd member and the filter on the etcd store."""
    session = {"store": "etcd", "etcd": {"cluster": [f"etcd{i}" for i in range(len(cluster.names))],
                                          "key_prefix": "oidc-test/", "timeout_ms": 1000, **(etcd or {})}}
    session.update(overrides.pop("session", {}))
    cfg = build_envoy_config(port, idp_port, upstream_port, {"session": session, **overrides})
    tls = getattr(cluster, "tls", None)
    for i, client_port in enumerate(cluster.client_ports):
        envoy_cluster = {
            "name": f"etcd{i}", "type": "STATIC", "connect_timeout": "0.5s",
            "load_assignment": {"cluster_name": f"etcd{i}", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": client_port}}}}]}]},
        }
        if tls:
            # As docs/configuration.md shows: SNI, the CA, and the name the certificate must carry.
            envoy_cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": TLS_NAME,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": str(tls.ca)},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": TLS_NAME}}]}}}}
        cfg["static_resources"]["clusters"].append(envoy_cluster)
    if env_keys:
        wasm_filter(cfg)["typed_config"]["config"]["vm_config"]["environment_variables"]["host_env_keys"] += list(env_keys)
    return cfg


def etcd_gateway(factory, cluster: EtcdCluster, _idp=None, _port: int | None = None, _env: dict | None = None,
                 _concurrency: int = 2, etcd: dict | None = None, **overrides) -> Gateway:
    """Like the `gateway` fixture's factory, with the etcd store; stopped with the factory's gateways."""
    provider = _idp or factory.idp
    port = factory.port_pool.take(_port)
    cfg = etcd_envoy_config(port, provider.port, factory.echo.port, cluster, etcd,
                            env_keys=tuple((_env or {}).keys()), **overrides)
    gw = Gateway(factory.workdir, cfg, port, env=_env, concurrency=_concurrency)
    gw.idp = provider
    factory.started.append(gw)
    gw.start()
    gw.wait_ready()
    gw.wait_metadata()
    return gw
