"""Candidate traffic that scales with what a client needs (issue 17).

Every round the LLM offers a path per public sample; most of them, and every question and
answer, are what the client already received last round. So a PROBE names two blobs: the full
candidate ``PathBatch`` and a ``PathDelta`` against the batch of the round before. A client that
holds that base applies the delta and checks the result's sha256 against the full blob's id (the
result is the very bytes the server serialised, or it downloads the full blob instead: never a
wrong path set). An allocation then names the y+ and y- the client holds by sample id, with a
digest of the texts they stand for, instead of sending them again.

Pure protobuf/dataclass code: the server's grids and the client runtime share it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import chunks, wire
from .proto.lada.v1 import allocation_pb2, messages_pb2
from .rounds import AllocatedPair, ReasoningPath


class DeltaError(ValueError):
    """A delta that does not apply to the batch held (another base, a path missing, a bad count)."""


class MissingText(LookupError):
    """An id-only allocation names a text this client does not hold (or holds differently)."""


def batch_bytes(paths: Sequence[ReasoningPath]) -> bytes:
    """The full candidate blob: what the server stores and a delta must reproduce byte for byte."""
    return wire.path_batch(paths).SerializeToString()


# ---------------------------------------------------------------------- deltas
def make_delta(base: Sequence[ReasoningPath], base_id: str, new: Sequence[ReasoningPath],
               new_id: str, new_bytes: bytes | None = None) -> messages_pb2.PathDelta | None:
    """``new`` as a change of ``base``; None when a delta cannot say it exactly (e.g. repeated
    sample ids), so the client then downloads the full batch. ``new_bytes``: ``batch_bytes(new)``
    when the caller has it (blob ids depend on the store's chunking: the delta names a plain sha256)."""
    by_id = {p.sample_id: p for p in base}
    order = [p.sample_id for p in new]
    d = messages_pb2.PathDelta(base_blob_id=base_id, blob_id=new_id, count=len(new),
                               sha256=chunks.sha256(new_bytes if new_bytes is not None else batch_bytes(new)),
                               order=[] if order == [p.sample_id for p in base] else order)
    for p in new:
        b = by_id.get(p.sample_id)
        if b is None or (b.question, b.answer) != (p.question, p.answer):
            d.paths.append(messages_pb2.ReasoningPath(sample_id=p.sample_id, question=p.question, text=p.text,
                                                      correct=p.correct, answer=p.answer))
        elif (b.text, b.correct) != (p.text, p.correct):
            d.paths.append(messages_pb2.ReasoningPath(sample_id=p.sample_id, text=p.text, correct=p.correct))
    try:
        if apply_delta(base, base_id, d) != list(new):
            return None
    except DeltaError:
        return None
    return d


def apply_delta(base: Sequence[ReasoningPath], base_id: str, d: messages_pb2.PathDelta) -> list[ReasoningPath]:
    """The batch ``d`` yields from ``base`` (whose blob id is ``base_id``); DeltaError if it does not apply.
    The caller still checks the result's sha256 against ``d.blob_id``."""
    if d.base_blob_id != base_id:
        raise DeltaError(f"delta is against {d.base_blob_id[:12]!r}, the batch held is {base_id[:12]!r}")
    by_id = {p.sample_id: p for p in base}
    changed: dict[str, messages_pb2.ReasoningPath] = {}
    for p in d.paths:
        if p.sample_id in changed:
            raise DeltaError(f"delta changes {p.sample_id[:40]!r} twice")
        changed[p.sample_id] = p
    order = list(d.order) if d.order else [p.sample_id for p in base]
    if len(order) != d.count:
        raise DeltaError(f"delta yields {len(order)} paths, says {d.count}")
    out = []
    for sid in order:
        b, c = by_id.get(sid), changed.get(sid)
        if c is None:
            if b is None:
                raise DeltaError(f"delta names {sid[:40]!r}, which neither the base nor the delta holds")
            out.append(b)
            continue
        question = c.question or (b.question if b else "")
        answer = c.answer or (b.answer if b else "")
        out.append(ReasoningPath(sid, question, c.text, answer, c.correct))
    unused = set(changed) - set(order)
    if unused:
        raise DeltaError(f"delta changes {len(unused)} paths not in its order (e.g. {sorted(unused)[0][:40]!r})")
    return out


def delta_to(base: Sequence[ReasoningPath], base_id: str, blob: chunks.Buffer, want_id: str) -> list[ReasoningPath]:
    """Apply the delta blob ``blob`` and check the result is the full batch ``want_id`` byte for byte
    (its bytes' sha256 is the delta's ``sha256``)."""
    try:
        d = messages_pb2.PathDelta.FromString(bytes(blob))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError subclasses
        raise DeltaError(f"not a PathDelta: {e}") from e
    if d.blob_id != want_id:
        raise DeltaError(f"delta yields {d.blob_id[:12]!r}, the task's candidates are {want_id[:12]!r}")
    out = apply_delta(base, base_id, d)
    got = chunks.sha256(batch_bytes(out))
    if not d.sha256 or got != d.sha256:
        raise DeltaError(f"delta result hashes to {got[:12]!r}, not {d.sha256[:12]!r}")
    return out


# ---------------------------------------------------------------------- own paths, up
def strip_known(own: Sequence[ReasoningPath], by_id: Mapping[str, ReasoningPath]) -> messages_pb2.PathBatch:
    """The client's own paths as uploaded: without the question and answer of a sample whose candidate
    (``by_id``: the batch just probed) has the same ones -- the server has them (``fill_known``)."""
    out = messages_pb2.PathBatch()
    for p in own:
        c = by_id.get(p.sample_id)
        known = c is not None and (c.question, c.answer) == (p.question, p.answer)
        out.paths.add(sample_id=p.sample_id, question="" if known else p.question, text=p.text, correct=p.correct,
                      answer="" if known else p.answer)
    return out


def fill_known(batch: messages_pb2.PathBatch, by_id: Mapping[str, ReasoningPath]) -> messages_pb2.PathBatch:
    """``batch`` with each path that came without question and answer given its candidate's (in place)."""
    for p in batch.paths:
        c = by_id.get(p.sample_id)
        if c is not None and not p.question and not p.answer:
            p.question, p.answer = c.question, c.answer
    return batch


# ---------------------------------------------------------------------- what a client holds
@dataclass
class Held:
    """What a client holds: the candidate batch it last probed (blob id, paths) and its own paths of
    that probe (sample id -> text; a restarted client has none)."""

    blob_id: str = ""
    paths: list[ReasoningPath] = field(default_factory=list)
    own: dict[str, str] = field(default_factory=dict)
    own_round: int = -1

    def by_id(self) -> dict[str, ReasoningPath]:
        return {p.sample_id: p for p in self.paths}

    def hold(self, blob_id: str, paths: Sequence[ReasoningPath]) -> None:
        self.blob_id, self.paths = blob_id, list(paths)
        self.own, self.own_round = {}, -1

    def hold_own(self, round_idx: int, own: Sequence[ReasoningPath]) -> None:
        self.own, self.own_round = {p.sample_id: p.text for p in own}, round_idx

    def request(self, client_id: str, round_idx: int) -> allocation_pb2.AllocationRequest:
        """An allocation request that says what may be named by id."""
        return allocation_pb2.AllocationRequest(client_id=client_id, round=round_idx, held_candidates=self.blob_id,
                                                holds_own_paths=self.own_round == round_idx)


# ---------------------------------------------------------------------- allocations by id
def digest(question: str, positive: str, negative: str) -> bytes:
    """16 bytes that change with any of the three texts (each length-prefixed: no two splits collide)."""
    h = hashlib.sha256()
    for s in (question, positive, negative):
        b = s.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()[:16]


def compact(p: AllocatedPair, held: ReasoningPath | None, own: str | None) -> allocation_pb2.AllocatedSample:
    """The wire form of ``p`` naming what the client holds: ``held`` its candidate of ``p.sample_id``
    (None: not held), ``own`` its own path of it (None: not held). Texts it does not hold are sent."""
    msg = wire.allocated_sample(p)
    msg.digest = digest(p.question, p.positive, p.negative)
    if held is not None and (held.question, held.text) == (p.question, p.positive):
        msg.positive_held, msg.question, msg.positive = True, "", ""
    if own is not None and p.negative and own == p.negative:
        msg.negative_own, msg.negative = True, ""
    return msg


def compact_all(pairs: Sequence[AllocatedPair], req: allocation_pb2.AllocationRequest, batch_id: str,
                batch: Mapping[str, ReasoningPath], own: Mapping[str, str] | None
                ) -> list[allocation_pb2.AllocatedSample]:
    """The allocation for a request: by id where the request says the client holds the round's
    candidate batch ``batch_id`` (``batch``: its paths by id) and its own paths (``own``, the server's
    copy; None: not known), in full text otherwise."""
    ids = bool(batch_id) and req.held_candidates == batch_id
    mine = own if (req.holds_own_paths and own is not None) else None
    return [compact(p, batch.get(p.sample_id) if ids else None, mine.get(p.sample_id) if mine is not None else None)
            for p in pairs]


def resolve(msg: allocation_pb2.AllocatedSample, held: Held, by_id: Mapping[str, ReasoningPath] | None = None
            ) -> AllocatedPair:
    """The pair ``msg`` stands for, from the texts it carries and those ``held``; MissingText if it
    names one not held or the digest does not match (ask again for the texts)."""
    sid = msg.sample_id
    question, positive, negative = msg.question, msg.positive, msg.negative
    if msg.positive_held:
        c = (by_id if by_id is not None else held.by_id()).get(sid)
        if c is None:
            raise MissingText(f"allocation names the candidate of {sid[:40]!r}, which this client does not hold")
        question, positive = c.question, c.text
    if msg.negative_own:
        if sid not in held.own:
            raise MissingText(f"allocation names this client's own path of {sid[:40]!r}, which it does not hold")
        negative = held.own[sid]
    if msg.digest and digest(question, positive, negative) != msg.digest:
        raise MissingText(f"the texts held for {sid[:40]!r} do not match the allocation's digest")
    return AllocatedPair(sid, question, positive, negative, msg.score, msg.rank)


def resolve_all(msgs: Sequence[allocation_pb2.AllocatedSample], held: Held) -> list[AllocatedPair]:
    by_id = held.by_id()
    return [resolve(m, held, by_id) for m in msgs]
