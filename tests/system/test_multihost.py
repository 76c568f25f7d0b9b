"""Server and clients on separate (virtual) hosts: a whole tiny run across network namespaces.

Topology, all of it inside namespaces this test creates and always deletes:

    ns <tag>-srv  10.199.42.1/24 ─veth─┐
    ns <tag>-c1   10.199.42.11/24 ─veth─┤  bridge in ns <tag>-hub (no address)
    ns <tag>-c2   10.199.42.12/24 ─veth─┤
    ns <tag>-c3   10.199.42.13/24 ─veth─┘

The server and the clients run the commands and environment of the split
deployment's compose files (deploy/compose.server.yaml, deploy/compose.client.yaml),
mutual TLS included, with certificates from deploy/make-certs.sh naming
10.199.42.1. `lada server` listens on 10.199.42.1 only; each `lada client`
runs in its own namespace, where 127.0.0.1 is its own loopback and the only
way to the server is its namespace address over the virtual ethernet. The namespaces have
no route anywhere else, so no packet leaves them. The network checks (gRPC
health with deploy/healthcheck.py, a refused loopback dial) target only
namespaced addresses. Needs root (CI has it); elsewhere it skips, under CI it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import compose as cf
from tests.support.paths import ROOT, TINY

pytestmark = pytest.mark.slow

SUBNET = "10.199.42"
SERVER_IP = f"{SUBNET}.1"
PORT = 50051
CLIENTS = ["client-1", "client-2", "client-3"]
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


def _need_root() -> None:
    why = None
    if os.geteuid() != 0:
        why = "network namespaces need root"
    elif shutil.which("ip") is None:
        why = "iproute2 (`ip`) is not installed"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + " (CI=true: the multi-host test must run)")
        pytest.skip(why)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Hosts:
    """Namespaces joined by a bridge; `.exec(host, argv)` runs argv on that virtual host."""

    def __init__(self, names: list[str]) -> None:
        self.tag = f"lada{uuid.uuid4().hex[:6]}"
        self.hub = f"{self.tag}-hub"
        self.ns = {n: f"{self.tag}-{n}" for n in names}
        self.made: list[str] = []

    def up(self, addresses: dict[str, str]) -> None:
        _ip("netns", "add", self.hub)
        self.made.append(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for k, (name, ns) in enumerate(self.ns.items()):
            _ip("netns", "add", ns)
            self.made.append(ns)
            host_end, hub_end = f"lv{self.tag[-6:]}h{k}", f"lv{self.tag[-6:]}b{k}"  # <= 15 chars
            # create the pair inside the hub namespace: it never exists in the caller's namespace
            _ip("-n", self.hub, "link", "add", hub_end, "type", "veth", "peer", "name", host_end)
            _ip("-n", self.hub, "link", "set", host_end, "netns", ns)
            _ip("-n", self.hub, "link", "set", hub_end, "master", "br0")
            _ip("-n", self.hub, "link", "set", hub_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addresses[name]}/24", "dev", host_end)
            _ip("-n", ns, "link", "set", host_end, "up")

    def exec(self, name: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[name], *argv]

    def down(self) -> None:
        for ns in reversed(self.made):
            # anything still running in it was started by this test
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    _need_root()
    h = Hosts(["srv", *CLIENTS])
    try:
        h.up({"srv": SERVER_IP, **{c: f"{SUBNET}.{11 + i}" for i, c in enumerate(CLIENTS)}})
        yield h
    finally:
        h.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert h.tag not in left, f"namespaces left behind: {left}"


def _env() -> dict[str, str]:
    """The test's environment without proxies: gRPC honours *_proxy, and traffic must stay in the namespaces."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("LADA_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _lada(*args: str) -> list[str]:
    return [sys.executable, "-m", "lada.cli", *args]


def _argv(doc: dict, svc: dict, overrides: list[str]) -> list[str]:
    """A compose service's own command, run from this checkout: `lada` -> `python -m lada.cli`, mounted
    secrets -> the certificate files on this machine, the mounted run config -> the tiny scenario."""
    cmd = list(svc["command"])
    assert cmd[0] == "lada"
    out = [sys.executable, "-m", "lada.cli"]
    for i, a in enumerate(cmd[1:], start=1):
        if cmd[i - 1] == "--config":
            out.append(str(TINY))
        elif a.startswith(cf.SECRETS_DIR):
            host = cf.host_path(doc, svc, a)
            assert host is not None and host.is_file(), a
            out.append(str(host))
        else:
            out.append(a)
    return out + overrides


def _service_env(svc: dict, env: dict[str, str]) -> dict[str, str]:
    """The container's LADA_* environment from the compose file (paths are overridden by flags)."""
    lada = {k: v for k, v in cf.container_env(svc).items() if k.startswith("LADA_") and "__" in k}
    return {**env, **lada}


def test_split_deployment_across_hosts(hosts: Hosts, tmp_path: Path, model_cache: Path) -> None:
    """deploy/compose.server.yaml's server and deploy/compose.client.yaml's client, with their own commands,
    environment and mutual TLS (certificates from deploy/make-certs.sh), on four virtual hosts."""
    t0 = time.perf_counter()
    env = _env()
    certs = tmp_path / "certs"
    subprocess.run(["bash", str(cf.DEPLOY / "make-certs.sh"), str(certs), "--hosts", SERVER_IP,
                    "--clients", " ".join([*CLIENTS, "healthcheck"])], check=True, capture_output=True, timeout=120)
    compose_env = {"LADA_JOIN_TOKEN": "multihost-join-token", "LADA_CERTS": str(certs),
                   "LADA_SERVER_ADDRESS": f"{SERVER_IP}:{PORT}"}
    server_doc = cf.load(["compose.server.yaml"], compose_env)
    server_svc = server_doc["services"]["server"]
    db = f"sqlite:///{tmp_path / 'lada.db'}"
    paths = ["--models.cache_dir", str(model_cache), "--server.data_dir", str(tmp_path)]
    # the models every host needs, built once into the shared cache (the compose demo's volume)
    subprocess.run(_lada("models", "build", "--config", str(TINY), *paths), check=True, capture_output=True,
                   timeout=600, env=env)

    server_log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        hosts.exec("srv", _argv(server_doc, server_svc, [*paths, "--server.db", db, "--server.address",
                                                         f"{SERVER_IP}:{PORT}", "--transport.linger", "3"])),
        stdout=server_log, stderr=subprocess.STDOUT, env=_service_env(server_svc, env), start_new_session=True)
    procs = [server]
    client_logs = []
    try:
        # network check from a client host: gRPC health over mutual TLS at the server's namespace address,
        # with the health-check certificate the server's compose service uses
        tls = [arg for key, flag in (("LADA_HEALTH_TLS_CA", "--tls-ca"), ("LADA_HEALTH_TLS_CERT", "--tls-cert"),
                                     ("LADA_HEALTH_TLS_KEY", "--tls-key"))
               for arg in (flag, str(cf.host_path(server_doc, server_svc, server_svc["environment"][key])))]
        health = hosts.exec("client-1", [sys.executable, str(HEALTHCHECK), "grpc", f"{SERVER_IP}:{PORT}",
                                         "--timeout", "2", *tls])
        deadline = time.time() + 300
        while subprocess.run(health, capture_output=True, env=env).returncode != 0:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "server never became healthy at its namespace address"
            time.sleep(1)
        plain = hosts.exec("client-1", [sys.executable, str(HEALTHCHECK), "grpc", f"{SERVER_IP}:{PORT}",
                                        "--timeout", "2"])
        assert subprocess.run(plain, capture_output=True, env=env).returncode == 1, "server must require TLS"
        probe = f"import socket; s=socket.socket(); s.settimeout(2); print(s.connect_ex(('127.0.0.1', {PORT})))"
        own_loopback = subprocess.run(hosts.exec("client-2", [sys.executable, "-c", probe]), capture_output=True,
                                      text=True, env=env, timeout=30)
        assert own_loopback.stdout.strip() not in ("", "0"), "a client host must not see the server on loopback"

        for name in CLIENTS:
            doc = cf.load(["compose.client.yaml"], {**compose_env, "LADA_CLIENT_NAME": name})
            svc = doc["services"]["client"]
            log = (tmp_path / f"{name}.log").open("w")
            client_logs.append(log)
            procs.append(subprocess.Popen(hosts.exec(name, _argv(doc, svc, paths)), stdout=log,
                                          stderr=subprocess.STDOUT, env=_service_env(svc, env),
                                          start_new_session=True))
        assert server.wait(timeout=900) == 0, (tmp_path / "server.log").read_text()[-3000:]
        for name, p in zip(CLIENTS, procs[1:]):
            assert p.wait(timeout=120) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
        server_log.close()
        for log in client_logs:
            log.close()

    out = (tmp_path / "server.log").read_text()
    assert f"listening on {SERVER_IP}:{PORT}" in out and "mutual TLS" in out
    assert "[round 2/2]" in out
    eng = create_engine(db)
    with eng.connect() as c:
        assert c.execute(text("select status from runs")).scalar_one() == "finished"
        assert c.execute(text("select idx from rounds where status='done' order by idx")).scalars().all() == [1, 2]
        assert sorted(c.execute(text("select name from clients")).scalars()) == CLIENTS
        for k in CLIENTS:
            n = c.execute(text("select count(*) from allocations where receiver=:k"), {"k": k}).scalar_one()
            assert n > 0, f"{k} got no allocation"
        assert c.execute(text("select sum(value) from metrics where name='bytes_up'")).scalar_one() > 0
    eng.dispose()
    for name in CLIENTS:
        assert "tasks done, leaving" in (tmp_path / f"{name}.log").read_text(), name
    print(f"multi-host run (4 namespaces, mutual TLS): {time.perf_counter() - t0:.1f}s wall")
