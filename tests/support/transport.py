"""Shared pieces of the transport tests: certificates from deploy/make-certs.sh, a
real gRPC server (the production servicers, on a TCP port, optionally over TLS)
around a ``GrpcGrid`` in this process, and raw stubs to talk to it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from lada.common.config import TransportConfig
from lada.common.proto.lada.v1 import (
    allocation_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    exchange_pb2_grpc,
    messages_pb2,
)
from lada.common.rounds import AllocatedPair
from lada.common.tls import channel_credentials
from lada.server.auth import Credentials
from lada.server.tls import server_credentials
from lada.server.transport.grid import GrpcGrid
from lada.server.transport.serve import start_server

from tests.support.paths import ROOT, TINY

TOKEN = "test-join-token"
SECRET = b"s" * 32
CLIENTS = {"client-1": "arith", "client-2": "shop", "client-3": "clock"}


def make_certs(out: Path, clients: str = "client-1 client-2 client-3") -> Path:
    subprocess.run([str(ROOT / "deploy" / "make-certs.sh"), str(out), "--clients", clients], check=True,
                   capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="session")
def built_models(model_cache: Path) -> Path:
    """The tiny config's embedded models, built once per session (a no-op when cached)."""
    import sys

    subprocess.run([sys.executable, "-m", "lada.cli", "models", "build", "--config", str(TINY), "--models.cache_dir",
                    str(model_cache)], check=True, capture_output=True, timeout=900)
    return model_cache


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development CA, a server certificate for localhost/127.0.0.1, client-1..3 certificates."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@dataclass
class Server:
    grid: GrpcGrid
    server: grpc.Server
    address: str
    certs: Path | None
    mtls: bool

    def channel(self, client: str | None = None, max_mb: int = 64) -> grpc.Channel:
        """A channel to the server (TLS when the server has it; ``client`` = its cert for mTLS)."""
        opts = [("grpc.max_send_message_length", max_mb << 20), ("grpc.max_receive_message_length", max_mb << 20)]
        if self.certs is None:
            return grpc.insecure_channel(self.address, opts)
        cert = key = None
        if client:
            cert, key = str(self.certs / "clients" / f"{client}.pem"), str(self.certs / "clients" / f"{client}.key")
        return grpc.secure_channel(self.address, channel_credentials(str(self.certs / "ca.pem"), cert, key), opts)

    def tls(self, client: str | None = None) -> grpc.ChannelCredentials | None:
        if self.certs is None:
            return None
        cert = key = None
        if client and self.mtls:
            cert, key = str(self.certs / "clients" / f"{client}.pem"), str(self.certs / "clients" / f"{client}.key")
        return channel_credentials(str(self.certs / "ca.pem"), cert, key)


@contextmanager
def grpc_server(certs: Path | None = None, mtls: bool = False, timeout: float = 30.0, max_message_mb: int = 4,
                chunk_size: int = 64 * 1024, ttl_s: float = 3600.0, heartbeat_s: float = 5.0,
                liveness_s: float | None = None, max_workers: int = 32, allowed: dict | None = None,
                max_blob: int | None = None, port: int = 0, secret: bytes = SECRET,
                models: dict | None = None, limits: TransportConfig | None = None) -> Iterator[Server]:
    grid = GrpcGrid(Credentials(secret, TOKEN, ttl_s=ttl_s), max_blob=max_blob or 4 * max_message_mb << 20,
                    chunk_size=chunk_size, timeout=timeout, heartbeat_s=heartbeat_s, liveness_s=liveness_s,
                    bind_peer_names=mtls)
    tls = None
    if certs is not None:
        tls = server_credentials(str(certs / "server.pem"), str(certs / "server.key"),
                                 str(certs / "ca.pem") if mtls else None)
    server, bound = start_server(grid, f"127.0.0.1:{port}", CLIENTS if allowed is None else allowed,
                                 max_message_mb, max_workers=max_workers, tls=tls, models=models, limits=limits)
    try:
        yield Server(grid, server, f"127.0.0.1:{bound}", certs, mtls)
    finally:
        grid.stop()
        server.stop(grace=None)


@dataclass
class Stubs:
    coord: coordinator_pb2_grpc.CoordinatorStub
    alloc: allocation_pb2_grpc.AllocationStub
    exchange: exchange_pb2_grpc.ExchangeStub
    name: str = ""
    credential: str = ""

    @property
    def md(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.credential}")]


def stubs(channel: grpc.Channel) -> Stubs:
    return Stubs(coordinator_pb2_grpc.CoordinatorStub(channel), allocation_pb2_grpc.AllocationStub(channel),
                 exchange_pb2_grpc.ExchangeStub(channel))


def register(s: Stubs, name: str, instance: str = "inst-a", token: str = TOKEN) -> Stubs:
    rep = s.coord.Register(coordinator_pb2.RegisterRequest(join_token=token, client_name=name, protocol_version=1,
                                                           instance_id=instance), timeout=10)
    s.name, s.credential = name, rep.credential
    return s


def code_of(fn) -> grpc.StatusCode:  # noqa: ANN001 - any zero-argument call
    try:
        fn()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def candidates(n: int = 5) -> messages_pb2.PathBatch:
    return messages_pb2.PathBatch(paths=[
        messages_pb2.ReasoningPath(sample_id=f"s{i}", question=f"q{i}?", text=f"step {i} #### {i}", correct=i % 2 == 0,
                                   answer=str(i)) for i in range(n)])


def in_thread(fn, *args):  # noqa: ANN001, ANN201 - returns (thread, result box)
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def wait_until(cond, timeout: float = 10.0, step: float = 0.02) -> bool:  # noqa: ANN001
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _methods() -> list[tuple[str, bool, bool]]:
    from lada.common.proto.lada.v1 import allocation_pb2, exchange_pb2

    out = []
    for mod, svc in ((coordinator_pb2, "Coordinator"), (allocation_pb2, "Allocation"), (exchange_pb2, "Exchange")):
        for m in mod.DESCRIPTOR.services_by_name[svc].methods:
            out.append((f"/{m.containing_service.full_name}/{m.name}", m.client_streaming, m.server_streaming))
    return out


METHODS = _methods()  # (path, request streaming, response streaming) of every LaDa RPC


def raw_call(channel: grpc.Channel, method: str, payload: bytes | list[bytes], metadata=None,  # noqa: ANN001
             timeout: float = 10.0) -> object:
    """Call any LaDa RPC with raw request bytes (a list of them for a request stream)."""
    kinds = {p: (cs, ss) for p, cs, ss in METHODS}
    cs, ss = kinds[method]
    md = metadata or ()
    if cs:
        msgs = payload if isinstance(payload, list) else [payload]
        return channel.stream_unary(method)(iter(msgs), metadata=md, timeout=timeout)
    data = payload if isinstance(payload, bytes) else b"".join(payload)
    if ss:
        return list(channel.unary_stream(method)(data, metadata=md, timeout=timeout))
    return channel.unary_unary(method)(data, metadata=md, timeout=timeout)


def snapshot(grid: GrpcGrid) -> tuple:
    """Everything a call could store in the transport (not clocks or byte counters)."""
    with grid.lock:
        clients = {n: (s.nonce, s.instance, s.model, s.domain, tuple(sorted(s.outstanding)),
                       tuple(t.task_id for t in s.tasks), tuple(s.done)) for n, s in grid.clients.items()}
        probes = {k: repr(v) for k, v in grid.probes.items()}
        rewards = {k: repr(v) for k, v in grid.rewards.items()}
        allocs = {k: [repr(s) for s in v] for k, v in grid.allocs.items()}
    b = grid.blobs
    with b.lock:
        blobs = (tuple(sorted(b.blobs)), {k: tuple(sorted(p.parts)) for k, p in b.partial.items()}, b.nbytes)
    return clients, probes, rewards, allocs, blobs


def dispatch(grid: GrpcGrid, kind: int, names: list[str], t: int = 1, n: int = 5) -> dict[str, str]:
    """Make a PROBE (with ``n`` candidates) or TRAIN task outstanding for ``names``, as the
    round loop would, without waiting for the results; returns name -> task id."""
    if kind == messages_pb2.TASK_KIND_PROBE:
        cand = candidates(n)
        bid = grid.blobs.put(cand.SerializeToString(), pin=True)
        with grid.lock:
            grid.candidates = {t: [p.sample_id for p in cand.paths]}
        sent = grid._dispatch(t, kind, names, bid, (), cand.ByteSize())
    else:
        with grid.lock:
            grid.allocs = {(t, nm): [AllocatedPair(f"s{i}", f"q{i}?", positive="p", negative="n", rank=i)
                                     for i in range(3)] for nm in names}
        sent = grid._dispatch(t, kind, names)
    return {nm: tid for nm, (_, tid) in sent.items()}
