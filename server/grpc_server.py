"""gRPC transport: the ``Grid`` the round loop talks to, and the servicers
clients dial into. Servicers only validate, translate and hand over; the
round logic stays in ``federation``."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lada.common import chunks
from lada.common.proto.lada.v1 import (
    allocation_pb2,
    allocation_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    exchange_pb2,
    exchange_pb2_grpc,
    messages_pb2,
)

from .auth import AuthError, AuthInterceptor, Credentials
from .federation import ProbeReply

PROTOCOL_VERSION = 1
MAX_ID = 200


@dataclass
class ClientSlot:
    name: str
    model: str = ""
    domain: str = ""
    last_seen: float = field(default_factory=time.time)
    tasks: deque = field(default_factory=deque)
    outstanding: dict[str, messages_pb2.Task] = field(default_factory=dict)
    up: int = 0
    down: int = 0


class BlobStore:
    """Content-addressed blobs (sha256 id); partial uploads kept for resume."""

    def __init__(self, max_blob: int) -> None:
        self.max_blob = max_blob
        self.blobs: dict[str, bytes] = {}
        self.partial: dict[str, dict[int, bytes]] = {}
        self.lock = threading.Lock()

    def put(self, data: bytes) -> str:
        bid = chunks.sha256(data)
        with self.lock:
            self.blobs.setdefault(bid, data)
        return bid

    def add_chunk(self, c: exchange_pb2.Chunk) -> bytes | None:
        """Store one verified chunk; return the whole blob once it is complete."""
        chunks.check_chunk(c, self.max_blob)
        with self.lock:
            if c.blob_sha256 in self.blobs:
                return self.blobs[c.blob_sha256]
            parts = self.partial.setdefault(c.blob_sha256, {})
            parts.setdefault(c.index, bytes(c.data))
            if len(parts) < c.total:
                return None
            data = b"".join(parts[i] for i in range(c.total))
            del self.partial[c.blob_sha256]
            if chunks.sha256(data) != c.blob_sha256:
                raise chunks.ChunkError("assembled blob fails its sha256 check")
            self.blobs[c.blob_sha256] = data
            return data

    def get(self, bid: str) -> bytes | None:
        with self.lock:
            return self.blobs.get(bid)


class GrpcGrid:
    """Task queues per client; results arrive through the servicers."""

    def __init__(self, creds: Credentials, max_blob: int, chunk_size: int, timeout: float) -> None:
        self.creds, self.chunk_size, self.timeout = creds, chunk_size, timeout
        self.blobs = BlobStore(max_blob)
        self.clients: dict[str, ClientSlot] = {}
        self.cv = threading.Condition()
        self.probes: dict[tuple[int, str], ProbeReply] = {}
        self.allocs: dict[tuple[int, str], list[allocation_pb2.AllocatedSample]] = {}
        self.rewards: dict[tuple[int, str], allocation_pb2.RewardReport] = {}
        self.round = 0
        self.stopped = False
        self.run_id = 0
        self.on_event: Any = None  # callable(kind, subject, message)

    # ------------------------------------------------------------------ Grid API
    def wait_for_clients(self, n: int, timeout: float) -> list[str]:
        end = time.time() + timeout
        with self.cv:
            while len(self.clients) < n and time.time() < end:
                self.cv.wait(timeout=max(0.0, end - time.time()))
            return sorted(self.clients)

    def client_info(self, name: str) -> tuple[str, str]:
        slot = self.clients[name]
        return slot.model, slot.domain

    def _dispatch(self, t: int, kind: int, names: list[str], blob_id: str = "", evaluate: bool = False,
                  blob_size: int = 0) -> None:
        with self.cv:
            self.round = t
            for name in names:
                task = messages_pb2.Task(task_id=uuid.uuid4().hex, round=t, kind=kind, blob_id=blob_id,
                                         evaluate=evaluate, blob_size=blob_size)
                slot = self.clients[name]
                slot.tasks.append(task)
                slot.outstanding[task.task_id] = task
            self.cv.notify_all()

    def _collect(self, results: dict, t: int, names: list[str]) -> dict:
        end = time.time() + self.timeout
        with self.cv:
            while not all((t, n) in results for n in names) and time.time() < end:
                self.cv.wait(timeout=max(0.0, min(1.0, end - time.time())))
            return {n: results.pop((t, n)) for n in names if (t, n) in results}

    def probe(self, round_idx: int, candidates: messages_pb2.PathBatch, evaluate: bool,
              clients: list[str]) -> dict[str, ProbeReply]:
        data = candidates.SerializeToString()
        bid = self.blobs.put(data)
        self._dispatch(round_idx, messages_pb2.TASK_KIND_PROBE, clients, bid, evaluate, len(data))
        return self._collect(self.probes, round_idx, clients)

    def train(self, round_idx: int, allocations: dict[str, list[allocation_pb2.AllocatedSample]]
              ) -> dict[str, allocation_pb2.RewardReport]:
        with self.cv:
            for name, samples in allocations.items():
                self.allocs[(round_idx, name)] = samples
        self._dispatch(round_idx, messages_pb2.TASK_KIND_TRAIN, list(allocations))
        return self._collect(self.rewards, round_idx, list(allocations))

    def take_bytes(self) -> dict[str, tuple[int, int]]:
        with self.cv:
            out = {n: (s.up, s.down) for n, s in self.clients.items()}
            for s in self.clients.values():
                s.up = s.down = 0
            return out

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify_all()

    # ------------------------------------------------------------------ servicer helpers
    def slot_for(self, ctx: grpc.ServicerContext, claimed: str) -> ClientSlot:
        try:
            who = self.creds.client_of(ctx.invocation_metadata())
        except AuthError as e:
            ctx.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        if claimed and claimed != who:
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, f"credential is for {who!r}, not {claimed!r}")
        slot = self.clients.get(who)
        if slot is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"unknown client {who!r}; register again")
        slot.last_seen = time.time()
        return slot

    def finish_task(self, ctx: grpc.ServicerContext, slot: ClientSlot, task_id: str, kind: int, t: int) -> None:
        task = slot.outstanding.get(task_id)
        if task is None or task.kind != kind or task.round != t:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no outstanding task {task_id!r} of this kind/round")


def _invalid(ctx: grpc.ServicerContext, msg: str) -> None:
    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)


def _check_id(ctx: grpc.ServicerContext, val: str, what: str) -> None:
    if not val or len(val) > MAX_ID or not val.replace("-", "").replace("_", "").replace(".", "").isalnum():
        _invalid(ctx, f"{what} must be 1-{MAX_ID} characters of [A-Za-z0-9._-], got {val[:40]!r}")


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, grid: GrpcGrid, allowed: dict[str, str]) -> None:
        self.grid, self.allowed = grid, allowed  # allowed: client name -> domain

    def Register(self, req: coordinator_pb2.RegisterRequest, ctx: grpc.ServicerContext
                 ) -> coordinator_pb2.RegisterReply:
        g = self.grid
        try:
            g.creds.check_join_token(req.join_token)
        except AuthError as e:
            ctx.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        _check_id(ctx, req.client_name, "client_name")
        if self.allowed and req.client_name not in self.allowed:
            _invalid(ctx, f"client {req.client_name!r} is not in this run's clients {sorted(self.allowed)}")
        if req.protocol_version not in (0, PROTOCOL_VERSION):
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"protocol {req.protocol_version} unsupported")
        with g.cv:
            rejoin = req.client_name in g.clients
            slot = g.clients.setdefault(req.client_name, ClientSlot(req.client_name))
            slot.model, slot.domain = req.model[:300], req.domain[:100] or self.allowed.get(req.client_name, "")
            slot.last_seen = time.time()
            g.cv.notify_all()
        if g.on_event:
            g.on_event("rejoin" if rejoin else "join", req.client_name, f"model={req.model}")
        cred, exp = g.creds.issue(req.client_name)
        return coordinator_pb2.RegisterReply(client_id=req.client_name, credential=cred, run_id=g.run_id,
                                             heartbeat_interval_s=5.0, credential_expires_unix=exp)

    def Heartbeat(self, req: coordinator_pb2.HeartbeatRequest, ctx: grpc.ServicerContext
                  ) -> coordinator_pb2.HeartbeatReply:
        self.grid.slot_for(ctx, req.client_id)
        return coordinator_pb2.HeartbeatReply(round=self.grid.round, server_time_unix=int(time.time()))

    def PullTask(self, req: coordinator_pb2.PullTaskRequest, ctx: grpc.ServicerContext) -> messages_pb2.Task:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if not math.isfinite(req.wait_s) or req.wait_s < 0 or req.wait_s > 60:
            _invalid(ctx, "wait_s must be in [0, 60]")
        end = time.time() + req.wait_s
        with g.cv:
            while not slot.tasks and not g.stopped and time.time() < end and ctx.is_active():
                g.cv.wait(timeout=max(0.0, min(1.0, end - time.time())))
            if slot.tasks:
                task = slot.tasks.popleft()
                slot.down += task.ByteSize()
                return task
            kind = messages_pb2.TASK_KIND_STOP if g.stopped else messages_pb2.TASK_KIND_WAIT
            return messages_pb2.Task(kind=kind, round=g.round)

    def Leave(self, req: coordinator_pb2.LeaveRequest, ctx: grpc.ServicerContext) -> messages_pb2.Ack:
        slot = self.grid.slot_for(ctx, req.client_id)
        if self.grid.on_event:
            self.grid.on_event("leave", slot.name, req.reason[:500])
        return messages_pb2.Ack(ok=True)


class AllocationServicer(allocation_pb2_grpc.AllocationServicer):
    def __init__(self, grid: GrpcGrid) -> None:
        self.grid = grid

    def ReportLearnability(self, req: allocation_pb2.LearnabilityReport, ctx: grpc.ServicerContext
                           ) -> messages_pb2.Ack:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        g.finish_task(ctx, slot, req.task_id, messages_pb2.TASK_KIND_PROBE, req.round)
        for s in req.stats:
            if not all(math.isfinite(v) for v in (s.nll, s.answer_ce)) or s.nll < 0:
                _invalid(ctx, f"stats for {s.sample_id[:40]!r} contain NaN, inf or a negative NLL")
            if s.sender_len < 0 or s.own_len < 0:
                _invalid(ctx, "path lengths must be non-negative")
        for v in (req.public_accuracy, req.test_accuracy):
            if not math.isfinite(v) or not 0 <= v <= 1:
                _invalid(ctx, "accuracies must be finite and in [0, 1]")
        blob = g.blobs.get(req.own_paths_blob)
        if blob is None:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "own_paths_blob was not uploaded")
        try:
            own = messages_pb2.PathBatch.FromString(blob)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError subclasses
            _invalid(ctx, "own_paths_blob is not a PathBatch")
        with g.cv:
            slot.outstanding.pop(req.task_id, None)
            slot.up += req.ByteSize() + len(blob)
            g.probes[(req.round, slot.name)] = ProbeReply(req, own)
            g.cv.notify_all()
        return messages_pb2.Ack(ok=True)

    def GetAllocation(self, req: allocation_pb2.AllocationRequest, ctx: grpc.ServicerContext) -> Any:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        samples = g.allocs.get((req.round, slot.name))
        if samples is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"no allocation for {slot.name!r} in round {req.round}")
        for s in samples:
            slot.down += s.ByteSize()
            yield s

    def ReportReward(self, req: allocation_pb2.RewardReport, ctx: grpc.ServicerContext) -> messages_pb2.Ack:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        g.finish_task(ctx, slot, req.task_id, messages_pb2.TASK_KIND_TRAIN, req.round)
        allocated = {s.sample_id for s in g.allocs.get((req.round, slot.name), [])}
        for s in req.samples:
            if s.sample_id not in allocated:
                _invalid(ctx, f"reward for sample {s.sample_id[:40]!r} that was not allocated")
            if not (math.isfinite(s.nll_before) and math.isfinite(s.nll_after)) or s.nll_before < 0 \
                    or s.nll_after < 0:
                _invalid(ctx, "NLL values must be finite and non-negative")
        if not math.isfinite(req.test_accuracy) or not 0 <= req.test_accuracy <= 1:
            _invalid(ctx, "test_accuracy must be finite and in [0, 1]")
        with g.cv:
            slot.outstanding.pop(req.task_id, None)
            slot.up += req.ByteSize()
            g.rewards[(req.round, slot.name)] = req
            g.cv.notify_all()
        return messages_pb2.Ack(ok=True)


class ExchangeServicer(exchange_pb2_grpc.ExchangeServicer):
    def __init__(self, grid: GrpcGrid) -> None:
        self.grid = grid

    def Upload(self, request_iterator: Any, ctx: grpc.ServicerContext) -> exchange_pb2.UploadReply:
        g = self.grid
        slot = g.slot_for(ctx, "")
        data, bid, present = None, "", False
        for c in request_iterator:
            present = present or g.blobs.get(c.blob_sha256) is not None
            try:
                data = g.blobs.add_chunk(c)
            except chunks.ChunkError as e:
                _invalid(ctx, str(e))
            bid = c.blob_sha256
            slot.up += c.ByteSize()
        if data is None:
            ctx.abort(grpc.StatusCode.DATA_LOSS, f"upload of {bid[:12]} incomplete; resend the missing chunks")
        return exchange_pb2.UploadReply(blob_id=bid, size=len(data), already_present=present)

    def Download(self, req: exchange_pb2.DownloadRequest, ctx: grpc.ServicerContext) -> Any:
        g = self.grid
        slot = g.slot_for(ctx, "")
        data = g.blobs.get(req.blob_id)
        if data is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"no blob {req.blob_id[:16]!r}")
        if req.from_chunk < 0:
            _invalid(ctx, "from_chunk must be >= 0")
        for c in chunks.split(data, g.chunk_size, start=req.from_chunk):
            slot.down += c.ByteSize()
            yield c


def grpc_options(max_message_mb: int) -> list[tuple[str, int]]:
    """Explicit size limits and keepalive pings that survive idle load balancers."""
    n = max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", n),
        ("grpc.max_receive_message_length", n),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def start_server(grid: GrpcGrid, address: str, allowed: dict[str, str], max_message_mb: int,
                 max_workers: int = 32, tls: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    """Start the gRPC server (Coordinator, Allocation, Exchange, Health); returns it and its port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         interceptors=[AuthInterceptor(grid.creds)], options=grpc_options(max_message_mb))
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(grid, allowed), server)
    allocation_pb2_grpc.add_AllocationServicer_to_server(AllocationServicer(grid), server)
    exchange_pb2_grpc.add_ExchangeServicer_to_server(ExchangeServicer(grid), server)
    hs = health.HealthServicer()
    hs.set("", health_pb2.HealthCheckResponse.SERVING)
    hs.set("lada.v1.Coordinator", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    server.start()
    return server, port
