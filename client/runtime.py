"""The edge client process: dial out, enrol, pull tasks, report back.

No port is opened on the edge machine. Transient failures (server restarting,
network blips) are retried with exponential backoff; an expired or unknown
credential triggers a fresh enrolment.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
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

log = logging.getLogger("lada.client")
T = TypeVar("T")
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
PROTOCOL_VERSION = 1


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    n = max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", n),
        ("grpc.max_receive_message_length", n),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class Connection:
    """Stubs plus the credential; every call has a deadline and is retried on transient errors."""

    def __init__(self, address: str, name: str, join_token: str, model: str, domain: str,
                 max_message_mb: int = 64, chunk_kb: int = 256, tls: grpc.ChannelCredentials | None = None,
                 call_timeout: float = 60.0, give_up_after: float = 600.0) -> None:
        self.name, self.join_token, self.model, self.domain = name, join_token, model, domain
        opts = channel_options(max_message_mb)
        self.channel = grpc.secure_channel(address, tls, opts) if tls else grpc.insecure_channel(address, opts)
        self.coord = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.alloc = allocation_pb2_grpc.AllocationStub(self.channel)
        self.exchange = exchange_pb2_grpc.ExchangeStub(self.channel)
        self.chunk_size = chunk_kb * 1024
        self.call_timeout, self.give_up_after = call_timeout, give_up_after
        self.credential = ""
        self.bytes_down = 0

    @property
    def md(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.credential}")]

    def call(self, fn: Callable[[], T]) -> T:
        """Retry transient failures with jittered exponential backoff; re-enrol on auth loss."""
        delay, start = 0.5, time.time()
        while True:
            try:
                return fn()
            except grpc.RpcError as e:
                code = e.code()
                details = e.details() or ""
                lost = code == grpc.StatusCode.UNAUTHENTICATED or (
                    code == grpc.StatusCode.NOT_FOUND and "register again" in details)
                if lost and self.credential:
                    log.warning("%s: credential rejected (%s); enrolling again", self.name, details)
                    self.register()
                    continue
                if code not in RETRYABLE or time.time() - start > self.give_up_after:
                    raise
                log.info("%s: %s, retrying in %.1fs", self.name, code.name, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)

    def register(self) -> coordinator_pb2.RegisterReply:
        req = coordinator_pb2.RegisterRequest(join_token=self.join_token, client_name=self.name, model=self.model,
                                              domain=self.domain, protocol_version=PROTOCOL_VERSION)
        delay, start = 0.5, time.time()
        while True:
            try:
                rep = self.coord.Register(req, timeout=self.call_timeout)
                self.credential = rep.credential
                return rep
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE or time.time() - start > self.give_up_after:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def download(self, blob_id: str) -> bytes:
        got: list[exchange_pb2.Chunk] = []

        def fetch() -> bytes:
            # resume from the first chunk we do not have yet
            for c in self.exchange.Download(
                exchange_pb2.DownloadRequest(blob_id=blob_id, from_chunk=len(got), client_id=self.name),
                metadata=self.md, timeout=self.call_timeout,
            ):
                got.append(c)
                self.bytes_down += c.ByteSize()
            return chunks.join(got)

        return self.call(fetch)

    def upload(self, data: bytes) -> str:
        def send() -> str:
            rep = self.exchange.Upload(chunks.split(data, self.chunk_size, self.name), metadata=self.md,
                                       timeout=self.call_timeout)
            return rep.blob_id

        return self.call(send)


def run_client(conn: Connection, app: Any, poll_s: float = 10.0, stop: threading.Event | None = None) -> int:
    """Pull and execute tasks until the server says STOP; returns the number of tasks done."""
    stop = stop or threading.Event()
    conn.register()
    log.info("%s registered", conn.name)
    done = 0
    hb = threading.Thread(target=_heartbeats, args=(conn, stop), daemon=True)
    hb.start()
    try:
        while not stop.is_set():
            task = conn.call(lambda: conn.coord.PullTask(
                coordinator_pb2.PullTaskRequest(client_id=conn.name, wait_s=poll_s), metadata=conn.md,
                timeout=poll_s + conn.call_timeout))
            if task.kind == messages_pb2.TASK_KIND_STOP:
                break
            if task.kind == messages_pb2.TASK_KIND_WAIT:
                continue
            t0 = time.perf_counter()
            if task.kind == messages_pb2.TASK_KIND_PROBE:
                cand = messages_pb2.PathBatch.FromString(conn.download(task.blob_id))
                report, own = app.probe(task, cand)
                report.own_paths_blob = conn.upload(own.SerializeToString())
                conn.call(lambda r=report: conn.alloc.ReportLearnability(r, metadata=conn.md,
                                                                         timeout=conn.call_timeout))
            elif task.kind == messages_pb2.TASK_KIND_TRAIN:
                req = allocation_pb2.AllocationRequest(client_id=conn.name, round=task.round)
                samples = conn.call(lambda r=req: list(conn.alloc.GetAllocation(r, metadata=conn.md,
                                                                                timeout=conn.call_timeout)))
                result = app.train(task, samples)
                conn.call(lambda r=result: conn.alloc.ReportReward(r, metadata=conn.md, timeout=conn.call_timeout))
            done += 1
            log.info("%s: round %d %s done in %.1fs", conn.name, task.round,
                     messages_pb2.TaskKind.Name(task.kind), time.perf_counter() - t0)
        try:
            conn.coord.Leave(coordinator_pb2.LeaveRequest(client_id=conn.name, reason="run finished"),
                             metadata=conn.md, timeout=5)
        except grpc.RpcError:
            pass
    finally:
        stop.set()
    return done


def _heartbeats(conn: Connection, stop: threading.Event) -> None:
    while not stop.wait(5.0):
        try:
            conn.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(client_id=conn.name), metadata=conn.md,
                                 timeout=5)
        except grpc.RpcError:
            pass  # the main loop handles reconnection


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
