"""The gRPC ``Grid``: per-client task queues the round loop fills and the servicers drain.

Liveness: a phase ends when every client it was sent to has reported, or has
gone (left, re-registered as a new process, or sent no heartbeat for
``liveness_s``), or at the round deadline. A client that did not report is
dropped: its slot is removed, so its late calls get NOT_FOUND and it
re-registers, and it takes part again from the next round on.

The lock and the per-client dicts are the grid's own: the servicers go
through the small methods below (enrol, leave, next task, what a round
expects, accept a report), which raise :class:`UnknownClient`,
:class:`Superseded` or :class:`NotOutstanding` for the servicers to turn into
status codes, so the grid itself knows nothing of gRPC contexts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from lada.common import candidates as cands
from lada.common import wire
from lada.common.config import TransportConfig
from lada.common.proto.lada.v1 import messages_pb2
from lada.common.rounds import AllocatedPair, ProbeResult, ReasoningPath, TrainResult

from ..auth import Credentials, Identity
from .blobs import BlobStore
from .limits import Busy, StreamGate

log = logging.getLogger("lada.server")

DONE_MEMORY = 64       # accepted task ids remembered per client, for idempotent retries


class UnknownClient(Exception):
    """The credential is valid but the server has no slot for it (restarted, or dropped it)."""


class Superseded(Exception):
    """The credential is of an older enrolment of a client that enrolled again since."""


class NotOutstanding(Exception):
    """A report for a task that is not (or no longer) outstanding for this client."""


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
    done: OrderedDict = field(default_factory=OrderedDict)  # accepted task id -> (kind, round), for retries
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
                 heartbeat_s: float = TransportConfig().heartbeat, liveness_s: float | None = None,
                 max_waiters: int = 1 << 30,
                 store_bytes: int | None = None, bind_peer_names: bool = False) -> None:
        self.creds, self.chunk_size, self.timeout = creds, chunk_size, timeout
        self.heartbeat_s = heartbeat_s
        self.liveness_s = liveness_s if liveness_s is not None else max(6 * heartbeat_s, 30.0)
        self.max_waiters = max_waiters
        self.bind_peer_names = bind_peer_names
        self.run_key = ""  # set by the Federation; tasks carry it so a client can spot a redone round
        self.train_align = (0, True)  # set by the Federation: what TRAIN tasks ask (Task.align_items)
        self.blobs = BlobStore(max_blob, store_bytes, chunk_size=chunk_size)
        self.gate = StreamGate()  # sized to the worker pool by serve.start_server
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        self.clients: dict[str, ClientSlot] = {}
        self.info: dict[str, tuple[str, str]] = {}  # name -> (model, domain), kept after a drop
        self.dropped_at: dict[str, float] = {}  # name -> when it was dropped, until it enrols again or leaves
        self.probes: dict[tuple[int, str], ProbeResult] = {}
        self.allocs: dict[tuple[int, str], list[AllocatedPair]] = {}
        self.rewards: dict[tuple[int, str], TrainResult] = {}
        self.candidates: dict[int, list[str]] = {}  # round -> public sample ids of the probe, in order
        self.candidate_blob = ""
        # the round's candidate paths (the next round's delta base; what an allocation names by id),
        # its delta blob against the round before's batch, and each client's own paths of its probe
        self.candidate_paths: list[ReasoningPath] = []
        self.candidate_by_id: dict[str, ReasoningPath] = {}
        self.delta_blob = ""
        self.own_paths: dict[tuple[int, str], dict[str, str]] = {}
        self.candidate_delta = True  # transport.candidate_delta: false sends the full batch and every text
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

    def last_seen(self) -> dict[str, float]:
        """name -> Unix time each enrolled client was last heard from (its heartbeats, or any
        other authenticated call); the RPC threads only note it, ``server.heartbeats`` stores it."""
        with self.lock:
            return {n: s.last_seen for n, s in self.clients.items()}

    def _dispatch(self, t: int, kind: int, names: list[str], blob_id: str = "", evaluate: Collection[str] = (),
                  blob_size: int = 0, extra: dict | None = None) -> dict[str, tuple[str, str]]:
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
                                         evaluate=name in evaluate, blob_size=blob_size, run_key=self.run_key,
                                         **(extra or {}))
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
            self.dropped_at[name] = time.time()
            slot.cv.notify_all()
            log.info("dropped %s: %s", name, why)

    def probe(self, round_idx: int, candidates: Sequence[ReasoningPath], evaluate: Collection[str],
              clients: list[str]) -> dict[str, ProbeResult]:
        """Publish the round's candidates (the full batch, and a delta against the batch of the round
        before for the clients that hold it), then collect every client's statistics."""
        data = cands.batch_bytes(candidates)
        bid = self.blobs.put(data, pin=True)
        with self.lock:
            old, prev, old_delta = self.candidate_blob, self.candidate_paths, self.delta_blob
        extra: dict = {}
        delta = (cands.make_delta(prev, old, candidates, bid, data)
                 if old and old != bid and self.candidate_delta else None)
        if delta is not None:
            db = delta.SerializeToString()
            if len(db) < len(data):  # else the full batch is the cheaper download
                extra = {"delta_blob_id": self.blobs.put(db, pin=True), "delta_base": old, "delta_blob_size": len(db)}
        with self.lock:
            self.candidate_blob, self.delta_blob = bid, extra.get("delta_blob_id", "")
            self.candidate_paths = list(candidates)
            self.candidate_by_id = {p.sample_id: p for p in candidates}
            self.candidates = {round_idx: [p.sample_id for p in candidates]}
            self.own_paths = {}
        for gone in {old, old_delta} - {bid, self.delta_blob, ""}:
            self.blobs.unpin(gone)
            self.blobs.discard(gone, "*")
        sent = self._dispatch(round_idx, messages_pb2.TASK_KIND_PROBE, clients, bid, evaluate, len(data), extra)
        out = self._collect(self.probes, round_idx, sent, "probe")
        with self.lock:  # what an allocation of this round may name as the client's own y-
            self.own_paths = {(round_idx, n): {p.sample_id: p.text for p in pr.own_paths} for n, pr in out.items()}
        return out

    def train(self, round_idx: int, allocations: dict[str, list[AllocatedPair]]) -> dict[str, TrainResult]:
        with self.lock:
            self.allocs = {(round_idx, name): list(samples) for name, samples in allocations.items()}
        sent = self._dispatch(round_idx, messages_pb2.TASK_KIND_TRAIN, list(allocations),
                              extra={"align_items": self.train_align[0], "align_center": self.train_align[1]})
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
        self.gate.stop()
        with self.cv:
            self.stopped = True
            self.cv.notify_all()
            for s in self.clients.values():
                s.cv.notify_all()


    # ------------------------------------------------------------------ for the servicers
    def event(self, kind: str, subject: str, message: str) -> None:
        """Record a transport event; a failing event sink never fails an RPC."""
        if self.on_event is None:
            return
        try:
            self.on_event(kind, subject, message)
        except Exception:  # noqa: BLE001 - logging must not break the protocol
            log.exception("event sink failed for %s %s", kind, subject)

    def slot_of(self, ident: Identity) -> ClientSlot:
        """The slot of a verified credential's client, marked as seen now."""
        with self.lock:
            slot = self.clients.get(ident.client_id)
            if slot is not None and slot.nonce == ident.nonce:
                slot.last_seen = time.time()
                return slot
        if slot is None:
            raise UnknownClient(f"unknown client {ident.client_id!r}; register again")
        raise Superseded(f"credential superseded by a newer enrolment of {ident.client_id!r}")

    def enrol(self, name: str, instance: str, model: str, domain: str) -> tuple[str, str, int]:
        """Give ``name`` a slot and a fresh credential; returns (event kind: "enrol" for a new
        process, "reenrol" for the same one, credential, expiry).

        The same process enrolling again (its credential expired, ...) keeps its
        slot and tasks; a new process under this name replaces the old one, whose
        tasks cannot finish any more."""
        with self.cv:
            old = self.clients.get(name)
            if old is not None and old.instance == instance:
                slot, kind = old, "reenrol"
            else:
                slot = ClientSlot(name, instance=instance, cv=threading.Condition(self.lock))
                # transport only: joining the run ("join", "rejoin") is the Federation's event
                kind = "enrol"
                if old is not None:
                    self.clients.pop(name)
                    old.outstanding.clear()
                    old.tasks.clear()
                    old.cv.notify_all()
                self.clients[name] = slot
            self.dropped_at.pop(name, None)
            slot.model, slot.domain = model, domain
            slot.last_seen = time.time()
            self.info[name] = (model, domain)
            cred, exp, slot.nonce = self.creds.issue(name)
            self.cv.notify_all()
        return kind, cred, exp

    def next_task(self, slot: ClientSlot, wait_s: float, active: Callable[[], bool], req_bytes: int = 0
                  ) -> messages_pb2.Task:
        """Long-poll: the client's next task, or WAIT/STOP once ``wait_s`` passed (or the call ended).
        A poll that hands out a task counts in the round's bytes (``req_bytes``: its request); one that
        comes back empty is liveness traffic, like a heartbeat, and does not."""
        end = time.time() + wait_s
        with self.lock:
            ticket = None
            if not slot.tasks and wait_s > 0 and not self.stopped:
                try:  # every long-poll holds a server thread: it shares the gate with the streams
                    ticket = self.gate.enter(slot.name) if self.waiters < self.max_waiters else None
                except Busy:
                    pass
                if ticket is None:  # send the client away briefly
                    return messages_pb2.Task(kind=messages_pb2.TASK_KIND_WAIT, round=self.round,
                                             retry_after_s=1.0 + 2.0 * random.random())
            self.waiters += 1
            try:
                while (not slot.tasks and not self.stopped and self.clients.get(slot.name) is slot
                       and time.time() < end and active()):
                    slot.cv.wait(timeout=max(0.0, min(1.0, end - time.time())))
            finally:
                self.waiters -= 1
                if ticket is not None:
                    ticket.close()
            slot.last_seen = time.time()
            if slot.tasks and self.clients.get(slot.name) is slot:
                task = slot.tasks.popleft()
                slot.up += req_bytes
                slot.down += task.ByteSize()
                return task
            kind = messages_pb2.TASK_KIND_STOP if self.stopped else messages_pb2.TASK_KIND_WAIT
            return messages_pb2.Task(kind=kind, round=self.round)

    def wait_until_clients_leave(self, timeout: float) -> list[str]:
        """After ``stop``: wait until every live client has pulled its STOP and left, or ``timeout``
        passed; returns the clients still here. A client still busy with a round when the run
        ended (its heartbeats keep it live) is waited for, so it is told STOP instead of finding the
        server gone and retrying for ``client.give_up_after``; a silent one stops counting after
        ``liveness_s``."""
        end = time.time() + timeout
        with self.cv:
            while self._owed_stop() and time.time() < end:
                self.cv.wait(timeout=max(0.0, min(1.0, end - time.time())))
            return self._owed_stop()

    def _owed_stop(self) -> list[str]:
        """Live clients, and clients dropped less than ``liveness_s`` ago that have not enrolled again
        yet (a dropped client that is still running enrols again within a heartbeat)."""
        now = time.time()
        recent = {n for n, t in self.dropped_at.items() if now - t <= self.liveness_s and n not in self.clients}
        return sorted(set(self.live_clients()) | recent)

    def leave(self, slot: ClientSlot) -> None:
        """The client leaves; a phase waiting for it stops waiting."""
        with self.cv:
            if self.clients.get(slot.name) is slot:
                del self.clients[slot.name]
                self.dropped_at.pop(slot.name, None)
                slot.cv.notify_all()
                self.cv.notify_all()

    def reported(self, slot: ClientSlot, task_id: str, kind: int, t: int) -> bool:
        """True if this task was already reported (a retry); raise unless it is outstanding."""
        with self.lock:
            if task_id in slot.done:
                if slot.done[task_id] == (kind, t):
                    return True  # a retry of this very report
                raise NotOutstanding(f"task {task_id[:12]} was a {messages_pb2.TaskKind.Name(slot.done[task_id][0])} "
                                     f"task of round {slot.done[task_id][1]}, not this report's")
            task = slot.outstanding.get(task_id)
            if task is not None and task.kind == kind and task.round == t:
                return False
        raise NotOutstanding(f"no outstanding {messages_pb2.TaskKind.Name(kind)} task {task_id[:12]} in round {t} "
                             "(expired, cancelled, or never sent)")

    def expected_candidates(self, t: int) -> list[str]:
        """The public sample ids of round ``t``'s probe, in the order the stats must follow."""
        with self.lock:
            return list(self.candidates.get(t, []))

    def allocation_of(self, t: int, name: str) -> list[AllocatedPair] | None:
        """What ``name`` is to learn in round ``t`` (None: nothing allocated to it)."""
        with self.lock:
            samples = self.allocs.get((t, name))
            return None if samples is None else list(samples)

    def allocation_messages(self, t: int, name: str, req: Any) -> list | None:
        """``name``'s allocation of round ``t`` as AllocatedSample messages: y+ and y- by id where
        ``req`` (an AllocationRequest) says the client holds them, their text otherwise."""
        with self.lock:
            samples = self.allocs.get((t, name))
            if samples is None:
                return None
            if not self.candidate_delta:  # every text, as before issue 17
                return [wire.allocated_sample(p) for p in samples]
            return cands.compact_all(samples, req, self.candidate_blob, self.candidate_by_id,
                                     self.own_paths.get((t, name)))

    def accept_probe(self, slot: ClientSlot, task_id: str, t: int, reply: ProbeResult, nbytes: int,
                     down: int = 0) -> None:
        self._accept(slot, task_id, self.probes, (t, slot.name), reply, nbytes, down)

    def accept_reward(self, slot: ClientSlot, task_id: str, t: int, report: TrainResult,
                      nbytes: int, down: int = 0) -> None:
        self._accept(slot, task_id, self.rewards, (t, slot.name), report, nbytes, down)

    def _accept(self, slot: ClientSlot, task_id: str, results: dict, key: tuple[int, str], value: Any,
                nbytes: int, down: int = 0) -> None:
        """Store a validated report, once; raise if it lost a race with a drop (a retry's twin is fine).
        ``nbytes``/``down``: the report's and its answer's sizes, counted before the round can see the
        report (the answer is sent after, but a count added then could land in the next round)."""
        with self.cv:
            if self.clients.get(slot.name) is not slot or task_id not in slot.outstanding:
                if task_id in slot.done:
                    return
                raise NotOutstanding(f"task {task_id[:12]} is no longer outstanding")
            task = slot.outstanding.pop(task_id)
            slot.done[task_id] = (task.kind, task.round)
            while len(slot.done) > DONE_MEMORY:
                slot.done.popitem(last=False)
            slot.up += nbytes
            slot.down += down
            results[key] = value
            self.cv.notify_all()
