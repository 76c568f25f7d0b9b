"""gRPC transport: the ``Grid`` the round loop talks to, and the servicers
clients dial into. Servicers only authenticate, validate, translate and hand
over; the round logic stays in ``federation``.

Contract of every RPC (docs/protocol.md, docs/security.md):

- credentials are checked by :class:`~lada.server.auth.AuthInterceptor`
  (UNAUTHENTICATED) and bound to one client here: a request naming another
  client gets PERMISSION_DENIED, a credential of a client the server does not
  know (restarted, or dropped for missing a deadline) gets NOT_FOUND
  "register again", an older credential of a re-enrolled client gets
  UNAUTHENTICATED "superseded";
- every input is validated (ids, sizes, NaN/inf, lengths, enum values) before
  anything is stored; a rejected call stores nothing and answers
  INVALID_ARGUMENT with a message (FAILED_PRECONDITION when the input is well
  formed but does not fit the server's state, e.g. a report for a task that
  is not outstanding);
- a report for a task that was already accepted is acknowledged again and
  ignored, so a client may retry a call whose answer it did not get.

Liveness: a phase ends when every client it was sent to has reported, or has
gone (left, re-registered as a new process, or sent no heartbeat for
``liveness_s``), or at the round deadline. A client that did not report is
dropped: its slot is removed, so its late calls get NOT_FOUND and it
re-registers, and it takes part again from the next round on.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lada.common import chunks
from lada.common.data import is_correct
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
from .tls import peer_names

log = logging.getLogger("lada.server")

PROTOCOL_VERSION = 1
MAX_ID = 200           # client names, sample ids
MAX_MODEL = 300
MAX_DOMAIN = 100
MAX_REASON = 500
MAX_TEXT = 64 * 1024   # one question / reasoning path
MAX_ANSWER = 1024
MAX_NLL = 1e4          # a per-token NLL above this is a bug or an attack (and would overflow float32 math)
MAX_LEN = 1_000_000    # tokens in one path
MAX_STEPS = 1_000_000_000
MAX_WAIT_S = 60.0
DONE_MEMORY = 64       # accepted task ids remembered per client, for idempotent retries
_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")  # MAX_ID
_INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TASK = re.compile(r"[0-9a-f]{32}")


# ---------------------------------------------------------------------- blobs
class QuotaError(Exception):
    """The blob store is full (RESOURCE_EXHAUSTED)."""


class DeniedError(Exception):
    """A chunk claims another client (PERMISSION_DENIED)."""


@dataclass
class _Partial:
    total: int
    size: int
    parts: dict[int, bytes] = field(default_factory=dict)
    nbytes: int = 0
    touched: float = field(default_factory=time.time)


@dataclass
class UploadResult:
    blob_id: str
    size: int
    already_present: bool
    complete: bool
    received: int
    total: int


class BlobStore:
    """Content-addressed blobs (sha256 id) with per-client partial uploads kept for resume.

    A completed blob is stored once however often it is sent; a partial upload
    belongs to the client sending it (another client cannot poison it) and
    survives an interrupted stream. Readers: a blob the server publishes is
    readable by every client, an uploaded one only by its uploaders. Memory is
    bounded: least recently used unpinned blobs and stale partials are evicted,
    and beyond that uploads get RESOURCE_EXHAUSTED.
    """

    def __init__(self, max_blob: int, max_bytes: int | None = None, max_partials: int = 4,
                 partial_ttl_s: float = 3600.0) -> None:
        self.max_blob = max_blob
        self.max_bytes = max_bytes or 8 * max_blob
        self.max_partials, self.partial_ttl_s = max_partials, partial_ttl_s
        self.blobs: OrderedDict[str, bytes] = OrderedDict()
        self.readers: dict[str, set[str]] = {}
        self.pinned: set[str] = set()
        self.partial: dict[tuple[str, str, int, int], _Partial] = {}  # (owner, blob, total, size)
        self.nbytes = 0
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ complete blobs
    def put(self, data: bytes, reader: str = "*", pin: bool = False) -> str:
        bid = chunks.sha256(data)
        with self.lock:
            if bid not in self.blobs:
                self.blobs[bid] = data
                self.nbytes += len(data)
            self.blobs.move_to_end(bid)
            self.readers.setdefault(bid, set()).add(reader)
            if pin:
                self.pinned.add(bid)
            self._evict()
        return bid

    def unpin(self, bid: str) -> None:
        with self.lock:
            self.pinned.discard(bid)

    def discard(self, bid: str) -> None:
        """Forget a blob nobody needs any more (pinned blobs stay)."""
        with self.lock:
            if bid in self.blobs and bid not in self.pinned:
                self.nbytes -= len(self.blobs.pop(bid))
                self.readers.pop(bid, None)

    def get(self, bid: str, reader: str | None = None) -> bytes | None:
        """The blob, if ``reader`` (None = the server) may read it."""
        with self.lock:
            data = self.blobs.get(bid)
            if data is None:
                return None
            if reader is not None and not self.readers.get(bid, set()) & {"*", reader}:
                return None
            self.blobs.move_to_end(bid)
            return data

    def _readable(self, bid: str, reader: str) -> bool:
        return bid in self.blobs and bool(self.readers.get(bid, set()) & {"*", reader})

    def state(self, owner: str, bid: str) -> tuple[bool, list[int], int, int]:
        """(present, chunk indices held of owner's partial upload, its total, its size).

        "present" only if ``owner`` may already read the blob: knowing a blob's id is no proof
        of holding its content, so a client sends the bytes of a blob someone else uploaded
        (verified, then not stored again) before it may use it."""
        with self.lock:
            if self._readable(bid, owner):
                return True, [], 0, len(self.blobs[bid])
            mine = [p for k, p in self.partial.items() if k[:2] == (owner, bid)]
            if not mine:
                return False, [], 0, 0
            p = max(mine, key=lambda q: q.touched)
            return False, sorted(p.parts), p.total, p.size

    # ------------------------------------------------------------------ uploads
    def add_chunks(self, owner: str, stream: Iterable[exchange_pb2.Chunk],
                   check: Callable[[exchange_pb2.Chunk], None] | None = None) -> UploadResult:
        """Store the verified chunks of one blob from one upload stream.

        A chunk that fails validation rolls back every chunk this stream added
        and raises (nothing is stored from a rejected call; only a partial
        upload whose chunks turn out to assemble to another blob is discarded
        whole); a stream that merely ends early (interrupted) keeps what it
        delivered for resume.
        """
        bid, added, present, total, size = "", [], False, 0, 0
        completed_here = False
        try:
            for c in stream:
                if check is not None:
                    check(c)
                chunks.check_chunk(c, self.max_blob)
                if bid and (c.blob_sha256, c.total, c.blob_size) != (bid, total, size):
                    raise chunks.ChunkError(f"chunk {c.index} declares blob {c.blob_sha256[:12]}, total={c.total}, "
                                            f"size={c.blob_size}; one upload stream carries one blob, one layout")
                bid, total, size = c.blob_sha256, c.total, c.blob_size
                with self.lock:
                    if self._readable(bid, owner):
                        present = present or not completed_here
                        continue
                    p = self._partial_for(owner, c)
                    if c.index in p.parts:
                        continue  # a re-sent chunk: verified above, stored once
                    if p.nbytes + len(c.data) > p.size:
                        raise chunks.ChunkError(f"chunks of {bid[:12]} add up to more than its {p.size} bytes")
                    if self.nbytes + len(c.data) > self.max_bytes:
                        self._evict(len(c.data))
                        if self.nbytes + len(c.data) > self.max_bytes:
                            raise QuotaError("the server's transfer store is full; retry later")
                    p.parts[c.index] = bytes(c.data)
                    p.nbytes += len(c.data)
                    p.touched = time.time()
                    self.nbytes += len(c.data)
                    added.append(c.index)
                    if len(p.parts) == p.total:
                        self._complete(owner, bid, p)
                        completed_here = True
        except (chunks.ChunkError, QuotaError, DeniedError):
            self._rollback((owner, bid, total, size), added)
            raise
        if not bid:
            raise chunks.ChunkError("empty upload: no chunks")
        with self.lock:
            mine = sorted((q.touched, k) for k, q in self.partial.items() if k[0] == owner)
            for _, k in mine[: max(0, len(mine) - self.max_partials)]:
                self._drop_partial(k)  # a client resumes its newest uploads, not ancient ones
            if self._readable(bid, owner):
                return UploadResult(bid, len(self.blobs[bid]), present, True, total, total)
            p = self.partial.get((owner, bid, total, size))
            return UploadResult(bid, size, False, False, len(p.parts) if p else 0, total)

    def _partial_for(self, owner: str, c: exchange_pb2.Chunk) -> _Partial:
        """The owner's partial upload of this blob in this layout (chunk count and size)."""
        key = (owner, c.blob_sha256, c.total, c.blob_size)
        p = self.partial.get(key)
        if p is None:
            p = self.partial[key] = _Partial(c.total, c.blob_size)
        return p

    def _complete(self, owner: str, bid: str, p: _Partial) -> None:
        data = b"".join(p.parts[i] for i in range(p.total))
        self._drop_partial((owner, bid, p.total, p.size))
        if len(data) != p.size or chunks.sha256(data) != bid:
            raise chunks.ChunkError(f"assembled blob {bid[:12]} fails its sha256/size check; upload it again")
        if bid not in self.blobs:  # else: another client's identical upload; proven, not stored twice
            self.blobs[bid] = data
            self.nbytes += len(data)
        self.readers.setdefault(bid, set()).add(owner)

    def _rollback(self, key: tuple[str, str, int, int], added: list[int]) -> None:
        with self.lock:
            p = self.partial.get(key)
            if p is None:
                return
            for i in added:
                piece = p.parts.pop(i, None)
                if piece is not None:
                    p.nbytes -= len(piece)
                    self.nbytes -= len(piece)
            if not p.parts:
                del self.partial[key]

    def _drop_partial(self, key: tuple[str, str, int, int]) -> None:
        p = self.partial.pop(key, None)
        if p is not None:
            self.nbytes -= p.nbytes

    def _evict(self, need: int = 0) -> None:
        """Stale partials, then least recently used unpinned blobs, until ``need`` bytes fit."""
        now = time.time()
        for k in [k for k, p in self.partial.items() if now - p.touched > self.partial_ttl_s]:
            self._drop_partial(k)
        for bid in list(self.blobs):
            if self.nbytes + need <= self.max_bytes:
                break
            if bid not in self.pinned:
                self.nbytes -= len(self.blobs.pop(bid))
                self.readers.pop(bid, None)


# ---------------------------------------------------------------------- the grid
@dataclass
class ClientSlot:
    name: str
    model: str = ""
    domain: str = ""
    instance: str = ""
    nonce: str = ""
    last_seen: float = field(default_factory=time.time)
    tasks: deque = field(default_factory=deque)
    outstanding: dict[str, messages_pb2.Task] = field(default_factory=dict)
    done: OrderedDict = field(default_factory=OrderedDict)  # accepted task ids (idempotent retries)
    up: int = 0
    down: int = 0
    cv: threading.Condition | None = None


class GrpcGrid:
    """Task queues per client; results arrive through the servicers.

    ``timeout`` is the per-phase deadline (``server.round_timeout``),
    ``heartbeat_s`` the interval clients are told to heartbeat at, and a
    client silent for ``liveness_s`` counts as gone.
    """

    def __init__(self, creds: Credentials, max_blob: int, chunk_size: int, timeout: float,
                 heartbeat_s: float = 5.0, liveness_s: float | None = None, max_waiters: int = 1 << 30,
                 store_bytes: int | None = None, bind_peer_names: bool = False) -> None:
        self.creds, self.chunk_size, self.timeout = creds, chunk_size, timeout
        self.heartbeat_s = heartbeat_s
        self.liveness_s = liveness_s if liveness_s is not None else max(6 * heartbeat_s, 30.0)
        self.max_waiters = max_waiters
        self.bind_peer_names = bind_peer_names
        self.run_key = ""  # set by the Federation; tasks carry it so a client can spot a redone round
        self.blobs = BlobStore(max_blob, store_bytes)
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        self.clients: dict[str, ClientSlot] = {}
        self.info: dict[str, tuple[str, str]] = {}  # name -> (model, domain), kept after a drop
        self.probes: dict[tuple[int, str], ProbeReply] = {}
        self.allocs: dict[tuple[int, str], list[allocation_pb2.AllocatedSample]] = {}
        self.rewards: dict[tuple[int, str], allocation_pb2.RewardReport] = {}
        self.candidates: dict[int, list[str]] = {}  # round -> public sample ids of the probe, in order
        self.labels: dict[str, tuple[str, bool]] = {}  # sample id -> (answer label, the sender path is correct)
        self.candidate_blob = ""
        self.waiters = 0
        self.round = 0
        self.stopped = False
        self.run_id = 0
        self.on_event: Any = None  # callable(kind, subject, message)

    # ------------------------------------------------------------------ Grid API
    def _live(self, slot: ClientSlot, now: float) -> bool:
        return now - slot.last_seen <= self.liveness_s

    def live_clients(self) -> list[str]:
        now = time.time()
        with self.lock:
            return sorted(n for n, s in self.clients.items() if self._live(s, now))

    def wait_for_clients(self, n: int, timeout: float) -> list[str]:
        """Registered, live clients, once there are ``n`` of them or ``timeout`` passed."""
        end = time.time() + timeout
        with self.cv:
            while len(self.live_clients()) < n and not self.stopped and time.time() < end:
                self.cv.wait(timeout=max(0.0, min(1.0, end - time.time())))
            return self.live_clients()

    def client_info(self, name: str) -> tuple[str, str]:
        with self.lock:
            return self.info.get(name, ("", ""))

    def _dispatch(self, t: int, kind: int, names: list[str], blob_id: str = "", evaluate: Collection[str] = (),
                  blob_size: int = 0) -> dict[str, tuple[str, str]]:
        """Queue one task per client (``evaluate``: the clients that also measure their test
        accuracy); returns name -> (client instance, task id) of those reached."""
        sent: dict[str, tuple[str, str]] = {}
        with self.lock:
            self.round = t
            for name in names:
                slot = self.clients.get(name)
                if slot is None:
                    continue  # gone since the round started: reported as missing by _collect
                task = messages_pb2.Task(task_id=uuid.uuid4().hex, round=t, kind=kind, blob_id=blob_id,
                                         evaluate=name in evaluate, blob_size=blob_size, run_key=self.run_key)
                slot.tasks.append(task)
                slot.outstanding[task.task_id] = task
                sent[name] = (slot.instance, task.task_id)
                slot.cv.notify_all()
        for name in names:
            if name not in sent:
                sent[name] = ("", "")
        return sent

    def _gone(self, name: str, sent: tuple[str, str], now: float) -> bool:
        slot = self.clients.get(name)
        return (slot is None or slot.instance != sent[0] or sent[1] not in slot.outstanding
                or not self._live(slot, now))

    def _collect(self, results: dict, t: int, sent: dict[str, tuple[str, str]], phase: str) -> dict:
        """Wait for the reports of one phase; drop whoever has not reported when it ends."""
        end = time.time() + self.timeout
        with self.cv:
            while not self.stopped:
                now = time.time()
                pending = [n for n in sent if (t, n) not in results]
                if not pending or now >= end or all(self._gone(n, sent[n], now) for n in pending):
                    break
                self.cv.wait(timeout=max(0.0, min(1.0, end - now)))
            out = {n: results.pop((t, n)) for n in sent if (t, n) in results}
            for name in sent:
                if name not in out:
                    self._drop(name, sent[name], f"no {phase} result in round {t}")
            for k in [k for k in results if k[0] <= t]:
                del results[k]
            return out

    def _drop(self, name: str, sent: tuple[str, str], why: str) -> None:
        """A client missed a phase: cancel its task; if it is still the same process, forget it."""
        slot = self.clients.get(name)
        if slot is None or not sent[1]:
            return  # gone already, or never reached (it registered again since: it counts next round)
        slot.outstanding.pop(sent[1], None)
        slot.tasks = deque(x for x in slot.tasks if x.task_id != sent[1])
        if slot.instance == sent[0]:
            del self.clients[name]
            slot.cv.notify_all()
            log.info("dropped %s: %s", name, why)

    def probe(self, round_idx: int, candidates: messages_pb2.PathBatch, evaluate: Collection[str],
              clients: list[str]) -> dict[str, ProbeReply]:
        data = candidates.SerializeToString()
        bid = self.blobs.put(data, pin=True)
        with self.lock:
            old, self.candidate_blob = self.candidate_blob, bid
            self.candidates = {round_idx: [p.sample_id for p in candidates.paths]}
            self.labels = {p.sample_id: (p.answer, p.correct) for p in candidates.paths}
        if old and old != bid:
            self.blobs.unpin(old)
            self.blobs.discard(old)
        sent = self._dispatch(round_idx, messages_pb2.TASK_KIND_PROBE, clients, bid, evaluate, len(data))
        return self._collect(self.probes, round_idx, sent, "probe")

    def train(self, round_idx: int, allocations: dict[str, list[allocation_pb2.AllocatedSample]]
              ) -> dict[str, allocation_pb2.RewardReport]:
        with self.lock:
            self.allocs = {(round_idx, name): list(samples) for name, samples in allocations.items()}
        sent = self._dispatch(round_idx, messages_pb2.TASK_KIND_TRAIN, list(allocations))
        out = self._collect(self.rewards, round_idx, sent, "train")
        with self.lock:
            self.allocs = {}
        return out

    def take_bytes(self) -> dict[str, tuple[int, int]]:
        with self.lock:
            out = {n: (s.up, s.down) for n, s in self.clients.items()}
            for s in self.clients.values():
                s.up = s.down = 0
            return out

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify_all()
            for s in self.clients.values():
                s.cv.notify_all()

    # ------------------------------------------------------------------ servicer helpers
    def event(self, kind: str, subject: str, message: str) -> None:
        """Record a transport event; a failing event sink never fails an RPC."""
        if self.on_event is None:
            return
        try:
            self.on_event(kind, subject, message)
        except Exception:  # noqa: BLE001 - logging must not break the protocol
            log.exception("event sink failed for %s %s", kind, subject)

    def slot_for(self, ctx: grpc.ServicerContext, claimed: str) -> ClientSlot:
        """The calling client's slot: credential verified, bound to ``claimed`` (when given)."""
        try:
            ident = self.creds.identity_of(ctx.invocation_metadata())
        except AuthError as e:
            ctx.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        if claimed:
            check_id(ctx, claimed, "client_id")
            if claimed != ident.client_id:
                ctx.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"credential is for {ident.client_id!r}, not {claimed!r}")
        if self.bind_peer_names and ident.client_id not in peer_names(ctx):
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "client certificate does not name this client")
        with self.lock:
            slot = self.clients.get(ident.client_id)
            if slot is not None and slot.nonce == ident.nonce:
                slot.last_seen = time.time()
                return slot
        if slot is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"unknown client {ident.client_id!r}; register again")
        ctx.abort(grpc.StatusCode.UNAUTHENTICATED,
                  f"credential superseded by a newer enrolment of {ident.client_id!r}")
        raise AssertionError("unreachable")  # ctx.abort raises

    def outstanding(self, ctx: grpc.ServicerContext, slot: ClientSlot, task_id: str, kind: int, t: int
                    ) -> bool:
        """True if this task was already reported (a retry); abort unless it is outstanding."""
        if not _TASK.fullmatch(task_id):
            invalid(ctx, "task_id must be the 32 hex characters of a task")
        if t < 1:
            invalid(ctx, f"round must be >= 1, got {t}")
        with self.lock:
            if task_id in slot.done:
                return True
            task = slot.outstanding.get(task_id)
            if task is not None and task.kind == kind and task.round == t:
                return False
        ctx.abort(grpc.StatusCode.FAILED_PRECONDITION,
                  f"no outstanding {messages_pb2.TaskKind.Name(kind)} task {task_id[:12]} in round {t} "
                  "(expired, cancelled, or never sent)")
        raise AssertionError("unreachable")

    def accept(self, slot: ClientSlot, task_id: str, results: dict, key: tuple[int, str], value: Any,
               nbytes: int) -> bool:
        """Store a validated report, once; False if it lost a race with its own retry or a drop."""
        with self.cv:
            if self.clients.get(slot.name) is not slot or task_id not in slot.outstanding:
                return task_id in slot.done
            slot.outstanding.pop(task_id)
            slot.done[task_id] = None
            while len(slot.done) > DONE_MEMORY:
                slot.done.popitem(last=False)
            slot.up += nbytes
            results[key] = value
            self.cv.notify_all()
            return True


def invalid(ctx: grpc.ServicerContext, msg: str) -> None:
    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)


def check_id(ctx: grpc.ServicerContext, val: str, what: str) -> None:
    if not _ID.fullmatch(val):
        invalid(ctx, f"{what} must be 1-{MAX_ID} characters of [A-Za-z0-9._-], got {val[:40]!r}")


def _finite(*vals: float, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return all(math.isfinite(v) and lo <= v <= hi for v in vals)


def _check_ids(ctx: grpc.ServicerContext, ids: list[str], allowed: set[str], what: str, offered: str) -> None:
    """Every id must be one the server offered, and appear at most once."""
    seen: set[str] = set()
    for sid in ids:
        if sid not in allowed:
            invalid(ctx, f"{what} for sample {sid[:40]!r} that was not {offered}")
        if sid in seen:
            invalid(ctx, f"two {what}s for sample {sid[:40]!r}")
        seen.add(sid)


def _check_paths(ctx: grpc.ServicerContext, batch: messages_pb2.PathBatch, allowed: set[str]) -> None:
    _check_ids(ctx, [p.sample_id for p in batch.paths], allowed, "path", "a candidate")
    for p in batch.paths:
        if len(p.text) > MAX_TEXT or len(p.question) > MAX_TEXT or len(p.answer) > MAX_ANSWER:
            invalid(ctx, f"path for {p.sample_id[:40]!r} is longer than {MAX_TEXT} characters")


def _judge(g: GrpcGrid, req: allocation_pb2.LearnabilityReport, own: messages_pb2.PathBatch) -> None:
    """Correctness is the server's call, not the client's: grade the client's paths against the
    public answer labels, and take the sender's correctness from the server's own candidates."""
    with g.lock:
        labels = dict(g.labels)
    for p in own.paths:
        answer = labels.get(p.sample_id, (p.answer, False))[0]
        p.answer, p.correct = answer, is_correct(p.text, answer)
    graded = {p.sample_id: p.correct for p in own.paths}
    for s in req.stats:
        s.sender_correct = labels.get(s.sample_id, ("", s.sender_correct))[1]
        s.own_correct = graded.get(s.sample_id, s.own_correct)


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
        check_id(ctx, req.client_name, "client_name")
        if len(req.model) > MAX_MODEL or len(req.domain) > MAX_DOMAIN:
            invalid(ctx, f"model must be <= {MAX_MODEL} and domain <= {MAX_DOMAIN} characters")
        if req.instance_id and not _INSTANCE.fullmatch(req.instance_id):
            invalid(ctx, "instance_id must be 1-64 characters of [A-Za-z0-9_-]")
        if req.protocol_version < 0:
            invalid(ctx, "protocol_version must be >= 0")
        if req.protocol_version not in (0, PROTOCOL_VERSION):
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION,
                      f"protocol {req.protocol_version} unsupported; this server speaks {PROTOCOL_VERSION}")
        name = req.client_name
        if self.allowed and name not in self.allowed:
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED,
                      f"client {name!r} is not one of this run's clients {sorted(self.allowed)[:20]}")
        domain = req.domain or self.allowed.get(name, "")
        if self.allowed and req.domain and req.domain != self.allowed[name]:
            invalid(ctx, f"client {name!r} has domain {self.allowed[name]!r} in this run, not {req.domain!r}")
        if g.bind_peer_names and name not in peer_names(ctx):
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, f"client certificate does not name {name!r}")
        with g.cv:
            old = g.clients.get(name)
            if old is not None and old.instance == req.instance_id:
                slot, kind = old, "reenrol"  # same process (credential expired, ...): its tasks stay
            else:
                slot = ClientSlot(name, instance=req.instance_id, cv=threading.Condition(g.lock))
                kind = "rejoin" if name in g.info else "join"
                if old is not None:  # a new process under this name: the old one's tasks cannot finish
                    g.clients.pop(name)
                    old.outstanding.clear()
                    old.tasks.clear()
                    old.cv.notify_all()
                g.clients[name] = slot
            slot.model, slot.domain = req.model, domain
            slot.last_seen = time.time()
            g.info[name] = (req.model, domain)
            cred, exp, slot.nonce = g.creds.issue(name)
            g.cv.notify_all()
        g.event(kind, name, f"model={req.model} instance={req.instance_id[:16]}")
        return coordinator_pb2.RegisterReply(client_id=name, credential=cred, run_id=g.run_id,
                                             heartbeat_interval_s=g.heartbeat_s, credential_expires_unix=exp)

    def Heartbeat(self, req: coordinator_pb2.HeartbeatRequest, ctx: grpc.ServicerContext
                  ) -> coordinator_pb2.HeartbeatReply:
        g = self.grid
        g.slot_for(ctx, req.client_id)
        return coordinator_pb2.HeartbeatReply(round=g.round, server_time_unix=int(time.time()),
                                              heartbeat_interval_s=g.heartbeat_s)

    def PullTask(self, req: coordinator_pb2.PullTaskRequest, ctx: grpc.ServicerContext) -> messages_pb2.Task:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if not _finite(req.wait_s, lo=0.0, hi=MAX_WAIT_S):
            invalid(ctx, f"wait_s must be in [0, {MAX_WAIT_S:g}]")
        end = time.time() + req.wait_s
        with g.lock:
            if not slot.tasks and g.waiters >= g.max_waiters and req.wait_s > 0 and not g.stopped:
                # every long-poll holds a server thread: beyond max_waiters, send the client away briefly
                return messages_pb2.Task(kind=messages_pb2.TASK_KIND_WAIT, round=g.round,
                                         retry_after_s=1.0 + 2.0 * random.random())
            g.waiters += 1
            try:
                while (not slot.tasks and not g.stopped and g.clients.get(slot.name) is slot
                       and time.time() < end and ctx.is_active()):
                    slot.cv.wait(timeout=max(0.0, min(1.0, end - time.time())))
            finally:
                g.waiters -= 1
            slot.last_seen = time.time()
            if slot.tasks and g.clients.get(slot.name) is slot:
                task = slot.tasks.popleft()
                slot.down += task.ByteSize()
                return task
            kind = messages_pb2.TASK_KIND_STOP if g.stopped else messages_pb2.TASK_KIND_WAIT
            return messages_pb2.Task(kind=kind, round=g.round)

    def Leave(self, req: coordinator_pb2.LeaveRequest, ctx: grpc.ServicerContext) -> messages_pb2.Ack:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if len(req.reason) > MAX_REASON:
            invalid(ctx, f"reason must be <= {MAX_REASON} characters")
        with g.cv:
            if g.clients.get(slot.name) is slot:
                del g.clients[slot.name]
                slot.cv.notify_all()
                g.cv.notify_all()
        g.event("leave", slot.name, req.reason)
        return messages_pb2.Ack(ok=True)


class AllocationServicer(allocation_pb2_grpc.AllocationServicer):
    def __init__(self, grid: GrpcGrid) -> None:
        self.grid = grid

    def ReportLearnability(self, req: allocation_pb2.LearnabilityReport, ctx: grpc.ServicerContext
                           ) -> messages_pb2.Ack:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if g.outstanding(ctx, slot, req.task_id, messages_pb2.TASK_KIND_PROBE, req.round):
            return messages_pb2.Ack(ok=True, message="duplicate report: already received")
        with g.lock:
            expected = list(g.candidates.get(req.round, []))
        if len(req.stats) != len(expected):
            invalid(ctx, f"{len(req.stats)} stats for {len(expected)} candidate samples")
        for s, sid in zip(req.stats, expected):
            if s.sample_id != sid:
                invalid(ctx, f"stats out of order: {s.sample_id[:40]!r} where {sid!r} was expected")
            if not _finite(s.nll, s.answer_ce, lo=0.0, hi=MAX_NLL):
                invalid(ctx, f"stats for {sid!r}: NLL values must be finite and in [0, {MAX_NLL:g}]")
            if not (0 <= s.sender_len <= MAX_LEN and 0 <= s.own_len <= MAX_LEN):
                invalid(ctx, f"stats for {sid!r}: path lengths must be in [0, {MAX_LEN}]")
        if not _finite(req.public_accuracy, req.test_accuracy, lo=0.0, hi=1.0):
            invalid(ctx, "accuracies must be finite and in [0, 1]")
        if req.bytes_down < 0:
            invalid(ctx, "bytes_down must be >= 0")
        if not chunks.is_sha256(req.own_paths_blob):
            invalid(ctx, "own_paths_blob must be the sha256 id of an uploaded PathBatch")
        blob = g.blobs.get(req.own_paths_blob, reader=slot.name)
        if blob is None:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "own_paths_blob was not uploaded (upload it first)")
        try:
            own = messages_pb2.PathBatch.FromString(blob)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError subclasses
            invalid(ctx, "own_paths_blob is not a PathBatch")
        _check_paths(ctx, own, set(expected))
        _judge(g, req, own)
        if not g.accept(slot, req.task_id, g.probes, (req.round, slot.name), ProbeReply(req, own),
                        req.ByteSize() + len(blob)):
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"task {req.task_id[:12]} is no longer outstanding")
        g.blobs.discard(req.own_paths_blob)
        return messages_pb2.Ack(ok=True)

    def GetAllocation(self, req: allocation_pb2.AllocationRequest, ctx: grpc.ServicerContext) -> Any:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if req.round < 1:
            invalid(ctx, f"round must be >= 1, got {req.round}")
        with g.lock:
            samples = g.allocs.get((req.round, slot.name))
        if samples is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"no allocation for {slot.name!r} in round {req.round}")
        for s in samples:
            slot.down += s.ByteSize()
            yield s

    def ReportReward(self, req: allocation_pb2.RewardReport, ctx: grpc.ServicerContext) -> messages_pb2.Ack:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if g.outstanding(ctx, slot, req.task_id, messages_pb2.TASK_KIND_TRAIN, req.round):
            return messages_pb2.Ack(ok=True, message="duplicate report: already received")
        with g.lock:
            allocated = {s.sample_id for s in g.allocs.get((req.round, slot.name), [])}
        _check_ids(ctx, [s.sample_id for s in req.samples], allocated, "reward", "allocated")
        for s in req.samples:
            if not _finite(s.nll_before, s.nll_after, lo=0.0, hi=MAX_NLL):
                invalid(ctx, f"NLL values must be finite and in [0, {MAX_NLL:g}]")
        if not _finite(req.test_accuracy, lo=0.0, hi=1.0):
            invalid(ctx, "test_accuracy must be finite and in [0, 1]")
        if not 0 <= req.steps <= MAX_STEPS or not _finite(req.train_seconds, lo=0.0):
            invalid(ctx, "steps and train_seconds must be finite and >= 0")
        if not _finite(req.loss_sft, req.loss_cd):
            invalid(ctx, "losses must be finite")
        if not g.accept(slot, req.task_id, g.rewards, (req.round, slot.name), req, req.ByteSize()):
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"task {req.task_id[:12]} is no longer outstanding")
        return messages_pb2.Ack(ok=True)


class ExchangeServicer(exchange_pb2_grpc.ExchangeServicer):
    def __init__(self, grid: GrpcGrid) -> None:
        self.grid = grid

    def Upload(self, request_iterator: Any, ctx: grpc.ServicerContext) -> exchange_pb2.UploadReply:
        g = self.grid
        slot = g.slot_for(ctx, "")

        def check(c: exchange_pb2.Chunk) -> None:
            if c.client_id and c.client_id != slot.name:
                raise DeniedError(f"chunk claims client {c.client_id[:40]!r}, credential is for {slot.name!r}")

        def counted() -> Iterable[exchange_pb2.Chunk]:
            for c in request_iterator:
                slot.up += c.ByteSize()
                yield c

        try:
            r = g.blobs.add_chunks(slot.name, counted(), check)
        except chunks.ChunkError as e:
            invalid(ctx, str(e))
        except DeniedError as e:
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except QuotaError as e:
            ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        return exchange_pb2.UploadReply(blob_id=r.blob_id, size=r.size, already_present=r.already_present,
                                        complete=r.complete, received=r.received, total=r.total)

    def QueryUpload(self, req: exchange_pb2.UploadQuery, ctx: grpc.ServicerContext) -> exchange_pb2.UploadState:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if not chunks.is_sha256(req.blob_sha256):
            invalid(ctx, "blob_sha256 must be 64 lower-case hex characters")
        present, have, total, size = g.blobs.state(slot.name, req.blob_sha256)
        return exchange_pb2.UploadState(present=present, received_chunks=have, total=total, blob_size=size)

    def Download(self, req: exchange_pb2.DownloadRequest, ctx: grpc.ServicerContext) -> Any:
        g = self.grid
        slot = g.slot_for(ctx, req.client_id)
        if not chunks.is_sha256(req.blob_id):
            invalid(ctx, "blob_id must be 64 lower-case hex characters")
        data = g.blobs.get(req.blob_id, reader=slot.name)
        if data is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"no blob {req.blob_id[:16]!r} for {slot.name!r}")
        total = chunks.n_chunks(len(data), g.chunk_size)
        if not 0 <= req.from_chunk <= total:
            invalid(ctx, f"from_chunk must be in [0, {total}]")
        for c in chunks.split(data, g.chunk_size, start=req.from_chunk):
            slot.down += c.ByteSize()
            yield c


def grpc_options(max_message_mb: int) -> list[tuple[str, int]]:
    """Explicit size limits, and keepalive that survives idle load balancers.

    Clients ping every 30 s (below the 60-350 s idle timeouts of common cloud
    load balancers) and the server accepts pings that often; connections are
    recycled after an hour (with a grace longer than any transfer) so an L4
    balancer can rebalance, and idle ones are closed after 10 minutes.
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
    ]


def start_server(grid: GrpcGrid, address: str, allowed: dict[str, str], max_message_mb: int,
                 max_workers: int = 256, tls: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    """Start the gRPC server (Coordinator, Allocation, Exchange, Health); returns it and its port.

    Long-polls hold a worker thread, so at most ``grid.max_waiters`` (kept
    below ``max_workers``) wait at once; beyond ``4 * max_workers`` concurrent
    RPCs the server answers RESOURCE_EXHAUSTED and clients back off.
    """
    grid.max_waiters = min(grid.max_waiters, max(1, max_workers - 16))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lada-rpc"),
                         interceptors=[AuthInterceptor(grid.creds)], options=grpc_options(max_message_mb),
                         maximum_concurrent_rpcs=4 * max_workers)
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
