"""The edge client process: dial out, enrol, pull tasks, report back.

No port is opened on the edge machine. Every call has a deadline. Transient
failures (server restarting, network blips, an overloaded server) are retried
with jittered exponential backoff; an expired or unknown credential (the
server restarted, or dropped this client for missing a deadline) triggers a
fresh enrolment, after which the client keeps working with the model it holds
in memory. A task the server no longer wants (its round moved on while this
client was away) is skipped, not fatal. Uploads resume: the client asks the
server which chunks it already holds and sends only the rest.

What to do about an error is decided by its status code and the server's
``lada-reason`` (:mod:`lada.common.errors`), never by its message text.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from lada.common import candidates as cands
from lada.common import chunks, errors, wire
from lada.common.config import ClientConfig, TransportConfig
from lada.common.proto.lada.v1 import (
    allocation_pb2,
    allocation_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    exchange_pb2,
    exchange_pb2_grpc,
    messages_pb2,
)

from . import held

log = logging.getLogger("lada.client")
T = TypeVar("T")
# CANCELLED: this client never cancels its own calls, so it is the server ending a stream that went
# idle (transport.stream_idle), e.g. over a stalled link; the transfer resumes
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED}
STALE_TASK = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
PROTOCOL_VERSION = 1
MAX_REENROL = 3


class SupersededError(RuntimeError):
    """Another process enrolled under this client's name; this one must stop."""


def channel_options(max_message_mb: int, server_name: str | None = None) -> list[tuple[str, Any]]:
    """Explicit size limits; keepalive pings every 30 s (idle load balancers keep the
    connection); reconnect attempts at most 5 s apart so a restarted server is found fast."""
    n = max_message_mb * 1024 * 1024
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", n),
        ("grpc.max_receive_message_length", n),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        ("grpc.enable_retries", 0),  # retries are ours (below), with re-enrolment
    ]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return opts


class TransportMismatch(RuntimeError):
    """The server speaks TLS and this client plaintext, or the other way round: no retry can help."""


def probe_tls(address: str, timeout: float = 3.0) -> bool | None:
    """Whether the server at ``host:port`` answers a TLS handshake: True (it speaks TLS), False (it
    answered without TLS), None (it could not be reached, or the address is not ``host:port``).

    gRPC reports both mismatches only as UNAVAILABLE ("Socket closed", "handshake failed"), the same
    as a server that is restarting; one real handshake tells them apart without reading message text.
    Certificates are not checked here: this only asks which protocol the port speaks."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=host.strip("[]") or None):
                return True
        except ssl.SSLError as e:  # a TLS alert from the peer (e.g. it wants a client certificate) is TLS
            return "ALERT" in (e.reason or "").upper()
        except OSError:  # closed or reset on our hello: not a TLS server
            return False


class MessageTooLarge(ValueError):
    """A request over this client's own message-size limit: refused before sending, never retried."""


class _SizeGuard(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Refuse a request gRPC would refuse for its size, before sending it.

    gRPC reports an over-limit message as RESOURCE_EXHAUSTED with no LaDa reason,
    the same as a server at its concurrent-RPC limit, which is transient; only
    the message text would tell them apart. Checking the size here (the same
    test gRPC makes: serialized bytes > max_send_message_length) makes the
    permanent case a distinct error, so RESOURCE_EXHAUSTED can always be retried.
    Upload's request stream is covered by the chunk size check in
    :class:`Connection`.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def _check(self, method: str, request: Any) -> None:
        n = request.ByteSize()
        if n > self.limit:
            raise MessageTooLarge(f"{method}: request of {n} bytes is over this client's limit of {self.limit} "
                                  "(server.max_message_mb)")

    def intercept_unary_unary(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        self._check(details.method, request)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        self._check(details.method, request)
        return continuation(details, request)


def _enrol_again(e: grpc.RpcError) -> bool:
    """A fresh enrolment is the remedy: the server says so (CREDENTIAL_REJECTED, REGISTER_AGAIN), or
    an UNAUTHENTICATED carries no LaDa reason (e.g. from a proxy): gRPC defines that code as "no valid
    credentials for the operation", so a new credential is the only thing that can help."""
    reason = errors.reason_of(e)
    if reason in (errors.CREDENTIAL_REJECTED, errors.REGISTER_AGAIN):
        return True
    return not reason and e.code() == grpc.StatusCode.UNAUTHENTICATED


class Connection:
    """Stubs plus the credential; every call has a deadline and is retried on transient errors."""

    def __init__(self, address: str, name: str, join_token: str, model: str, domain: str,
                 max_message_mb: int = 64, chunk_kb: int = 1024, tls: grpc.ChannelCredentials | None = None,
                 call_timeout: float = 60.0, give_up_after: float = ClientConfig().give_up_after,
                 server_name: str | None = None,
                 observer: Callable[[str, float, str], None] | None = None,
                 interceptors: Sequence[Any] = ()) -> None:
        self.name, self.join_token, self.model, self.domain = name, join_token, model, domain
        self.instance_id = uuid.uuid4().hex  # this process; a restarted client is a new instance
        opts = channel_options(max_message_mb, server_name)
        limit = max_message_mb * 1024 * 1024
        self.chunk_size = chunk_kb * 1024
        self.max_blob = 4 * limit
        if chunks.message_size(self.chunk_size) > limit:
            raise ValueError(f"chunk_kb={chunk_kb} leaves no room in max_message_mb={max_message_mb} "
                             f"(a chunk message is up to {chunks.CHUNK_OVERHEAD} bytes more than its data)")
        self.channel = grpc.secure_channel(address, tls, opts) if tls else grpc.insecure_channel(address, opts)
        self.address, self.tls = address, tls is not None
        # interceptors: more client interceptors, outside the size guard (e.g. to watch the messages)
        guarded = grpc.intercept_channel(self.channel, _SizeGuard(limit), *interceptors)
        self.coord = coordinator_pb2_grpc.CoordinatorStub(guarded)
        self.alloc = allocation_pb2_grpc.AllocationStub(guarded)
        self.exchange = exchange_pb2_grpc.ExchangeStub(guarded)
        # the bulk calls with chunks (de)serialized by lada.common.chunks (the same bytes on the wire as
        # the generated stub's, without three copies of every chunk's data): see download/upload
        self._download = guarded.unary_stream("/lada.v1.Exchange/Download",
                                              request_serializer=exchange_pb2.DownloadRequest.SerializeToString,
                                              response_deserializer=chunks.parse_chunk)
        self._upload = guarded.stream_unary("/lada.v1.Exchange/Upload",
                                            response_deserializer=exchange_pb2.UploadReply.FromString)
        self.call_timeout, self.give_up_after = call_timeout, give_up_after
        self.credential = ""
        self.heartbeat_s = TransportConfig().heartbeat  # until the server's enrol reply names its own
        self.bytes_down = 0
        self.enrolments = 0
        self.observer = observer  # (rpc name, seconds, status code name) per attempt, for metrics
        self._reg_lock = threading.RLock()

    @property
    def md(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.credential}")]

    def _timed(self, what: str, fn: Callable[[], T]) -> T:
        if self.observer is None:
            return fn()
        t0 = time.perf_counter()
        try:
            out = fn()
        except grpc.RpcError as e:
            self.observer(what, time.perf_counter() - t0, e.code().name)
            raise
        self.observer(what, time.perf_counter() - t0, "OK")
        return out

    def call(self, fn: Callable[[], T], what: str = "rpc") -> T:
        """Retry transient failures with jittered exponential backoff; re-enrol on auth loss.

        RESOURCE_EXHAUSTED is transient here: with a reason it is the server's full
        transfer store (STORE_FULL) or its cap on open streams (BUSY); without one it comes from the gRPC library,
        which raises it for a server at its concurrent-RPC limit and for a message
        over a size limit, and :class:`_SizeGuard` has already refused what this
        client would send over its own limit (a peer configured with a smaller
        ``server.max_message_mb`` is retried until ``give_up_after``)."""
        delay, start, reenrols = 0.5, time.time(), 0
        while True:
            seen, cred = self.enrolments, self.credential
            try:
                return self._timed(what, fn)
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
                if errors.reason_of(e) == errors.SUPERSEDED:
                    # the heartbeat thread may be enrolling again right now: the server has already
                    # superseded our credential but register() has not stored the new one yet, so
                    # wait for it (it holds the lock) before deciding another process took our name
                    with self._reg_lock:
                        renewed = self.credential != cred
                    if renewed:
                        continue  # this process enrolled again meanwhile
                    raise SupersededError(f"{self.name}: {details}") from e
                if _enrol_again(e) and self.credential and reenrols < MAX_REENROL:
                    reenrols += 1
                    self.reenrol(seen, f"{code.name} ({details})")
                    continue
                if code not in RETRYABLE or time.time() - start > self.give_up_after:
                    raise
                log.info("%s: %s on %s (%s), retrying in ~%.1fs", self.name, code.name, what, details[:200], delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)

    def register(self) -> coordinator_pb2.RegisterReply:
        """Enrol with the join token (retrying while the server is unreachable)."""
        req = coordinator_pb2.RegisterRequest(join_token=self.join_token, client_name=self.name, model=self.model,
                                              domain=self.domain, protocol_version=PROTOCOL_VERSION,
                                              instance_id=self.instance_id)
        delay, start = 0.5, time.time()
        with self._reg_lock:
            while True:
                try:
                    rep = self._timed("Register", lambda: self.coord.Register(req, timeout=self.call_timeout))
                    break
                except grpc.RpcError as e:
                    if e.code() not in RETRYABLE or time.time() - start > self.give_up_after:
                        raise
                    if e.code() == grpc.StatusCode.UNAVAILABLE:  # reachable, but in the other protocol?
                        self._check_protocol()
                    log.info("%s: server unreachable (%s), retrying in ~%.1fs", self.name, e.code().name, delay)
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
            self.credential = rep.credential
            if rep.heartbeat_interval_s > 0:
                self.heartbeat_s = float(rep.heartbeat_interval_s)
            self.enrolments += 1
            return rep

    def _check_protocol(self) -> None:
        """Raise :class:`TransportMismatch` if the server answers but in the other protocol."""
        speaks = probe_tls(self.address)
        if speaks is True and not self.tls:
            raise TransportMismatch(f"{self.name}: the server at {self.address} speaks TLS and this client "
                                    "plaintext: set --client.tls_ca (or --client.tls true)")
        if speaks is False and self.tls:
            raise TransportMismatch(f"{self.name}: the server at {self.address} does not speak TLS and this "
                                    "client does: drop --client.tls/--client.tls_ca, or give the server "
                                    "--transport.tls_cert/--transport.tls_key")

    def reenrol(self, seen: int, why: str) -> None:
        """Enrol again unless another thread already did since ``seen``."""
        with self._reg_lock:
            if self.enrolments == seen:
                log.warning("%s: %s; enrolling again", self.name, why)
                self.register()

    def download(self, blob_id: str, max_blob: int | None = None) -> memoryview:
        """The blob, verified against its id; an interrupted stream resumes from the first chunk not
        received. Chunks land in one buffer (no per-chunk objects kept, no join) and each byte is
        hashed once, on arrival (its chunk's digest; the id is derived from those)."""
        # a blob is at most 4 messages' worth (the server's rule, LadaConfig.max_blob_bytes): a chunk
        # claiming more is refused before its buffer is allocated
        rx = chunks.Receiver(blob_id, self.max_blob if max_blob is None else max_blob)

        def fetch() -> memoryview:
            stream = self._download(exchange_pb2.DownloadRequest(blob_id=blob_id, from_chunk=rx.received,
                                                                 client_id=self.name),
                                    metadata=self.md, timeout=self.call_timeout)
            for c in stream:  # (reading ahead in a thread, as the server's Upload does, measured slower here)
                rx.add(c)
                self.bytes_down += c.ByteSize()
            return rx.result()

        return self.call(fetch, "Download")

    def upload(self, data: chunks.Buffer) -> str:
        """Upload a blob in content-addressed chunks, sending only what the server lacks. Each byte is
        hashed once (its chunk's digest; the id is derived from those, and a retry reuses both). A blob
        under ``chunks.PIPELINE_FROM`` is hashed before the first try, which asks the server what it
        holds already; a larger one is first sent while it is hashed (``chunks.Hashing``: waiting for
        the id cost a 256 MiB upload ~0.5 s), and only a retry asks."""
        hashing = chunks.Hashing(data, self.chunk_size) if memoryview(data).nbytes >= chunks.PIPELINE_FROM else None
        fresh = [hashing is not None]
        known = [] if hashing is not None else [chunks.Layout.of(data, self.chunk_size)]

        def send() -> str:
            if fresh[0]:  # the first try of a large blob: every chunk, as soon as it is hashed
                fresh[0] = False
                rep = self._upload(hashing.encoded(self.name), metadata=self.md, timeout=self.call_timeout)
                if rep.complete:
                    return rep.blob_id
            lay = known[0] if known else hashing.layout()
            bid, total = lay.blob_id, lay.total
            for _ in range(3):
                st = self.exchange.QueryUpload(exchange_pb2.UploadQuery(blob_id=bid, client_id=self.name),
                                               metadata=self.md, timeout=self.call_timeout)
                if st.present:
                    return bid
                have = set(st.received_chunks) if (st.total, st.blob_size) == (total, lay.size) else set()
                todo = [i for i in range(total) if i not in have]
                rep = self._upload(lay.encoded(data, self.name, indices=todo), metadata=self.md,
                                   timeout=self.call_timeout)
                if rep.complete:
                    return rep.blob_id
            raise RuntimeError(f"{self.name}: upload of {bid[:12]} did not complete after 3 tries")

        return self.call(send, "Upload")

    def leave(self, reason: str) -> None:
        try:
            self.coord.Leave(coordinator_pb2.LeaveRequest(client_id=self.name, reason=reason[:500]),
                             metadata=self.md, timeout=5)
        except grpc.RpcError:
            pass


def run_client(conn: Connection, app: Any, poll_s: float = 10.0, stop: threading.Event | None = None) -> int:
    """Pull and execute tasks until the server says STOP; returns the number of tasks done."""
    stop = stop or threading.Event()
    conn.register()
    log.info("%s registered (instance %s)", conn.name, conn.instance_id[:8])
    done = 0
    holding = held.load(getattr(app, "state_dir", None))  # the candidates of an earlier round, if any
    hb = threading.Thread(target=_heartbeats, args=(conn, stop), daemon=True, name=f"hb-{conn.name}")
    hb.start()
    reason = "stopped"
    try:
        while not stop.is_set():
            t_poll = time.time()
            task = conn.call(lambda: conn.coord.PullTask(
                coordinator_pb2.PullTaskRequest(client_id=conn.name, wait_s=poll_s), metadata=conn.md,
                timeout=poll_s + conn.call_timeout), "PullTask")
            if task.kind == messages_pb2.TASK_KIND_STOP:
                reason = "run finished"
                break
            if task.kind not in (messages_pb2.TASK_KIND_PROBE, messages_pb2.TASK_KIND_TRAIN):
                # WAIT (or a kind this client does not know): do not spin if the server answered early
                pause = task.retry_after_s if task.retry_after_s > 0 else 0.0
                if pause == 0.0 and time.time() - t_poll < 0.5 * poll_s:
                    pause = 0.5 + random.random()
                stop.wait(min(pause, 30.0))
                continue
            t0 = time.perf_counter()
            try:
                _do_task(conn, app, task, holding)
            except grpc.RpcError as e:
                if e.code() not in STALE_TASK:
                    raise
                log.warning("%s: round %d %s no longer wanted by the server (%s: %s); skipping", conn.name,
                            task.round, messages_pb2.TaskKind.Name(task.kind), e.code().name, e.details())
                continue
            done += 1
            log.info("%s: round %d %s done in %.1fs", conn.name, task.round,
                     messages_pb2.TaskKind.Name(task.kind), time.perf_counter() - t0)
    finally:
        stop.set()
        hb.join(timeout=max(conn.heartbeat_s, 5.0) + 1.0)  # no heartbeat after Leave
        conn.leave(reason)
    return done


def _do_task(conn: Connection, app: Any, task: messages_pb2.Task, holding: cands.Held | None = None) -> None:
    """Run one PROBE or TRAIN: fetch its input, hand the app the round's dataclasses, report back.
    ``holding``: the candidates (and own paths) this client holds, so only what changed travels."""
    info = wire.task_info(task)
    holding = holding if holding is not None else cands.Held()
    if task.kind == messages_pb2.TASK_KIND_PROBE:
        b0 = conn.bytes_down
        cand = held.fetch(conn, task, holding, getattr(app, "state_dir", None))
        result = app.probe(info, cand)
        holding.hold_own(task.round, result.own_paths)
        # without the questions and answers the server sent: it fills them in from its candidates
        blob = conn.upload(cands.strip_known(result.own_paths, holding.by_id()).SerializeToString())
        result.bytes_down = conn.bytes_down - b0
        report = wire.learnability_report(result, conn.name, info, own_paths_blob=blob)
        conn.call(lambda r=report: conn.alloc.ReportLearnability(r, metadata=conn.md, timeout=conn.call_timeout),
                  "ReportLearnability")
    else:
        def get(r: allocation_pb2.AllocationRequest) -> list[allocation_pb2.AllocatedSample]:
            return conn.call(lambda: list(conn.alloc.GetAllocation(r, metadata=conn.md, timeout=conn.call_timeout)),
                             "GetAllocation")

        try:  # y+/y- this client holds come by id; a text it lacks: ask again for every text
            pairs = cands.resolve_all(get(holding.request(conn.name, task.round)), holding)
        except cands.MissingText as e:
            log.warning("%s: %s; fetching the allocation's texts", conn.name, e)
            full = get(allocation_pb2.AllocationRequest(client_id=conn.name, round=task.round))
            pairs = cands.resolve_all(full, cands.Held())
        result = wire.reward_report(app.train(info, pairs), conn.name, info)
        conn.call(lambda r=result: conn.alloc.ReportReward(r, metadata=conn.md, timeout=conn.call_timeout),
                  "ReportReward")


def _heartbeats(conn: Connection, stop: threading.Event) -> None:
    """Tell the server this client is alive; if it no longer knows us, enrol again right away
    (so a client dropped for missing a deadline is back for the next round)."""
    while not stop.wait(conn.heartbeat_s):
        seen = conn.enrolments
        try:
            conn._timed("Heartbeat", lambda: conn.coord.Heartbeat(
                coordinator_pb2.HeartbeatRequest(client_id=conn.name), metadata=conn.md,
                timeout=max(conn.heartbeat_s, 5.0)))
        except grpc.RpcError as e:
            if _enrol_again(e) and not stop.is_set():
                try:
                    conn.reenrol(seen, f"heartbeat: {e.code().name} ({e.details()})")
                except (grpc.RpcError, TransportMismatch):
                    pass  # the main loop handles reconnection


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
