"""Starting the gRPC server: channel options and the servicers on one port.

Separate from the servicers so what a deployment tunes (sizes, keepalive,
threads, TLS) is in one place and the servicers stay testable on their own.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lada.common.config import TransportConfig
from lada.common.proto.lada.v1 import allocation_pb2_grpc, coordinator_pb2_grpc

from ..auth import AuthInterceptor
from .grid import GrpcGrid
from .limits import StreamGate
from .servicers import AllocationServicer, CoordinatorServicer, ExchangeServicer, exchange_handler


def grpc_options(max_message_mb: int) -> list[tuple[str, int]]:
    """Explicit size limits, and keepalive that survives idle load balancers.

    Clients ping every 30 s (below the 60-350 s idle timeouts of common cloud
    load balancers) and the server accepts pings that often; connections are
    recycled after an hour (with a grace longer than any transfer) so an L4
    balancer can rebalance, and idle ones are closed after 10 minutes. SO_REUSEPORT
    is off, so a port another server holds is a bind error, not a silent share.
    """
    n = max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", n),
        ("grpc.max_receive_message_length", n),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),  # server: accept client pings >= 10 s apart
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_connection_idle_ms", 600_000),
        ("grpc.max_connection_age_ms", 3_600_000),
        ("grpc.max_connection_age_grace_ms", 300_000),
        ("grpc.so_reuseport", 0),  # gRPC's default is on: a second server could share the port unseen
    ]


TIMINGS_ENV = "LADA_RPC_TIMINGS"  # a file: each RPC's server-side time is written there at exit (benchmarks)


class TimingInterceptor(grpc.ServerInterceptor):
    """Server-side time per RPC, so a benchmark can tell the server's part of a latency from what a
    client on the same cores observes. Per call: from its arrival (this interceptor runs on the
    server's polling thread when the call comes in) to the handler's answer (a stream: its first
    message, the set-up), and the handler's own part of that (the rest is the wait for a worker
    thread and the GIL). Written as JSON ``[[method, arrival_to_answer_s, handler_s], ...]`` to
    ``path`` at exit; appended to without a lock (``list.append`` is atomic)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: list[tuple[str, float, float]] = []
        atexit.register(self.dump)

    def dump(self) -> None:
        with open(self.path, "w") as fh:
            json.dump(list(self.rows), fh)

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        arrived = time.perf_counter()
        h = continuation(details)
        if h is None:
            return None
        name, rows = details.method.rsplit("/", 1)[-1], self.rows
        if h.unary_unary or h.stream_unary:
            inner = h.unary_unary or h.stream_unary

            def unary(req: Any, ctx: grpc.ServicerContext) -> Any:
                t0 = time.perf_counter()
                try:
                    return inner(req, ctx)
                finally:
                    t1 = time.perf_counter()
                    rows.append((name, t1 - arrived, t1 - t0))

            make = grpc.unary_unary_rpc_method_handler if h.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary, request_deserializer=h.request_deserializer,
                        response_serializer=h.response_serializer)
        inner = h.unary_stream or h.stream_stream

        def stream(req: Any, ctx: grpc.ServicerContext) -> Iterator[Any]:
            t0, first = time.perf_counter(), None
            try:
                for msg in inner(req, ctx):
                    if first is None:
                        first = time.perf_counter()
                    yield msg
            finally:
                t1 = first or time.perf_counter()
                rows.append((name, t1 - arrived, t1 - t0))

        make = grpc.unary_stream_rpc_method_handler if h.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(stream, request_deserializer=h.request_deserializer, response_serializer=h.response_serializer)


def start_server(grid: GrpcGrid, address: str, allowed: dict[str, str], max_message_mb: int,
                 max_workers: int = TransportConfig().max_workers, tls: grpc.ServerCredentials | None = None,
                 models: dict[str, str] | None = None, limits: TransportConfig | None = None
                 ) -> tuple[grpc.Server, int]:
    """Start the gRPC server (Coordinator, Allocation, Exchange, Health); returns it and its port.

    ``allowed`` maps each client name to its domain, ``models`` to its SLM; Register refuses others.
    Streams and long-polls hold a worker thread until they end, so together at
    most ``max_workers - limits.rpc_reserve`` of them run, at most
    ``limits.streams_per_client`` per client (``grid.gate``); the rest are
    refused at once (RESOURCE_EXHAUSTED, reason BUSY; a long-poll gets WAIT), and
    the reserve keeps health checks, enrolments and reports answered. A stream
    silent for ``limits.stream_idle`` seconds is cancelled. Beyond
    ``4 * max_workers`` concurrent RPCs gRPC itself answers RESOURCE_EXHAUSTED.
    """
    lim = limits or TransportConfig()
    capacity = max(1, max_workers - lim.rpc_reserve)
    grid.gate = StreamGate(capacity, lim.streams_per_client, lim.stream_idle)
    grid.max_waiters = min(grid.max_waiters, capacity)
    interceptors: list[grpc.ServerInterceptor] = [AuthInterceptor(grid.creds)]
    if os.environ.get(TIMINGS_ENV):
        interceptors.insert(0, TimingInterceptor(os.environ[TIMINGS_ENV]))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lada-rpc"),
                         interceptors=interceptors, options=grpc_options(max_message_mb),
                         maximum_concurrent_rpcs=4 * max_workers)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(grid, allowed, models), server)
    allocation_pb2_grpc.add_AllocationServicer_to_server(AllocationServicer(grid), server)
    server.add_generic_rpc_handlers((exchange_handler(ExchangeServicer(grid)),))
    hs = health.HealthServicer()
    hs.set("", health_pb2.HealthCheckResponse.SERVING)
    hs.set("lada.v1.Coordinator", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    server.start()
    return server, port
