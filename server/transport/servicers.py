"""The gRPC servicers clients dial into. They only authenticate, validate,
translate and hand over to the :class:`~lada.server.transport.grid.GrpcGrid`;
the round logic stays in ``federation``.

Contract of every RPC (docs/security.md, docs/architecture.md):

- credentials are checked by :class:`~lada.server.auth.AuthInterceptor`
  (UNAUTHENTICATED) and bound to one client here: a request naming another
  client gets PERMISSION_DENIED, a credential of a client the server does not
  know (restarted, or dropped for missing a deadline) gets NOT_FOUND
  "register again", an older credential of a re-enrolled client gets
  UNAUTHENTICATED "superseded";
- every abort a client acts on carries a ``lada-reason``
  (:mod:`lada.common.errors`): CREDENTIAL_REJECTED, REGISTER_AGAIN,
  SUPERSEDED, JOIN_REJECTED, TASK_NOT_OUTSTANDING, STORE_FULL, BUSY;
- a stream (Upload, Download, GetAllocation) takes a place in ``grid.gate``
  (per client and in all, short of the worker pool) or is refused at once
  with RESOURCE_EXHAUSTED / BUSY, and is cancelled once it goes idle;
- every input is validated (ids, sizes, NaN/inf, lengths, enum values) before
  anything is stored; a rejected call stores nothing and answers
  INVALID_ARGUMENT with a message (FAILED_PRECONDITION when the input is well
  formed but does not fit the server's state, e.g. a report for a task that
  is not outstanding);
- a report for a task that was already accepted is acknowledged again and
  ignored, so a client may retry a call whose answer it did not get.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import grpc
from lada.common import candidates as cands
from lada.common import chunks, errors, wire
from lada.common.proto.lada.v1 import (
    allocation_pb2,
    allocation_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    exchange_pb2,
    exchange_pb2_grpc,
    messages_pb2,
)

from ..auth import AuthError
from ..tls import peer_names
from .blobs import DeniedError, QuotaError
from .grid import ClientSlot, GrpcGrid, NotOutstanding, Superseded, UnknownClient
from .limits import Busy, Ticket
from .validation import (
    INSTANCE,
    MAX_DOMAIN,
    MAX_LEN,
    MAX_MODEL,
    MAX_NLL,
    MAX_REASON,
    MAX_STEPS,
    MAX_WAIT_S,
    check_id,
    check_ids,
    check_paths,
    check_task,
    finite,
    invalid,
)

PROTOCOL_VERSION = 1
ACK = messages_pb2.Ack(ok=True)


def caller(g: GrpcGrid, ctx: grpc.ServicerContext, claimed: str) -> ClientSlot:
    """The calling client's slot: credential verified, bound to ``claimed`` (when given)."""
    try:
        ident = g.creds.identity_of(ctx.invocation_metadata())
    except AuthError as e:
        errors.abort(ctx, grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIAL_REJECTED, str(e))
    if claimed:
        check_id(ctx, claimed, "client_id")
        if claimed != ident.client_id:
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED,
                      f"credential is for {ident.client_id!r}, not {claimed!r}")
    if g.bind_peer_names and ident.client_id not in peer_names(ctx):
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "client certificate does not name this client")
    try:
        return g.slot_of(ident)
    except UnknownClient as e:
        errors.abort(ctx, grpc.StatusCode.NOT_FOUND, errors.REGISTER_AGAIN, str(e))
    except Superseded as e:
        errors.abort(ctx, grpc.StatusCode.UNAUTHENTICATED, errors.SUPERSEDED, str(e))
    raise AssertionError("unreachable")  # ctx.abort raises


def already_reported(g: GrpcGrid, ctx: grpc.ServicerContext, slot: ClientSlot, task_id: str, kind: int,
                     t: int) -> bool:
    """True if this task was already reported (a retry); abort unless it is outstanding."""
    check_task(ctx, task_id, t)
    try:
        return g.reported(slot, task_id, kind, t)
    except NotOutstanding as e:
        not_outstanding(ctx, e)
    raise AssertionError("unreachable")


def admit_stream(g: GrpcGrid, ctx: grpc.ServicerContext, slot: ClientSlot) -> Ticket:
    """A place for one more stream of this client, or RESOURCE_EXHAUSTED (BUSY) before it holds a
    worker thread for long; the ticket is closed when the RPC ends, however it ends."""
    try:
        ticket = g.gate.enter(slot.name, ctx.cancel)
    except Busy as e:
        errors.abort(ctx, grpc.StatusCode.RESOURCE_EXHAUSTED, errors.BUSY, str(e))
    ctx.add_callback(ticket.close)
    return ticket


def not_outstanding(ctx: grpc.ServicerContext, e: NotOutstanding) -> None:
    errors.abort(ctx, grpc.StatusCode.FAILED_PRECONDITION, errors.TASK_NOT_OUTSTANDING, str(e))


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, grid: GrpcGrid, allowed: dict[str, str], models: dict[str, str] | None = None) -> None:
        self.grid, self.allowed = grid, allowed  # allowed: client name -> domain
        self.models = models or {}  # client name -> the SLM the run's config gives it (models.clients)

    def Register(self, req: coordinator_pb2.RegisterRequest, ctx: grpc.ServicerContext
                 ) -> coordinator_pb2.RegisterReply:
        g = self.grid
        try:
            g.creds.check_join_token(req.join_token)
        except AuthError as e:
            errors.abort(ctx, grpc.StatusCode.UNAUTHENTICATED, errors.JOIN_REJECTED, str(e))
        check_id(ctx, req.client_name, "client_name")
        if len(req.model) > MAX_MODEL or len(req.domain) > MAX_DOMAIN:
            invalid(ctx, f"model must be <= {MAX_MODEL} and domain <= {MAX_DOMAIN} characters")
        if req.instance_id and not INSTANCE.fullmatch(req.instance_id):
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
        if req.model and name in self.models and req.model != self.models[name]:
            # the run records and compares each client's SLM: another model is refused, not run silently
            invalid(ctx, f"client {name!r} runs {self.models[name]!r} in this run (models.clients), "
                    f"not {req.model[:MAX_MODEL]!r}")
        if g.bind_peer_names and name not in peer_names(ctx):
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, f"client certificate does not name {name!r}")
        kind, cred, exp = g.enrol(name, req.instance_id, req.model, domain)
        g.event(kind, name, f"model={req.model} instance={req.instance_id[:16]}")
        return coordinator_pb2.RegisterReply(client_id=name, credential=cred, run_id=g.run_id,
                                             heartbeat_interval_s=g.heartbeat_s, credential_expires_unix=exp)

    def Heartbeat(self, req: coordinator_pb2.HeartbeatRequest, ctx: grpc.ServicerContext
                  ) -> coordinator_pb2.HeartbeatReply:
        g = self.grid
        caller(g, ctx, req.client_id)
        return coordinator_pb2.HeartbeatReply(round=g.round, server_time_unix=int(time.time()),
                                              heartbeat_interval_s=g.heartbeat_s)

    def PullTask(self, req: coordinator_pb2.PullTaskRequest, ctx: grpc.ServicerContext) -> messages_pb2.Task:
        g = self.grid
        slot = caller(g, ctx, req.client_id)
        if not finite(req.wait_s, lo=0.0, hi=MAX_WAIT_S):
            invalid(ctx, f"wait_s must be in [0, {MAX_WAIT_S:g}]")
        return g.next_task(slot, req.wait_s, ctx.is_active, req.ByteSize())

    def Leave(self, req: coordinator_pb2.LeaveRequest, ctx: grpc.ServicerContext) -> messages_pb2.Ack:
        g = self.grid
        slot = caller(g, ctx, req.client_id)
        if len(req.reason) > MAX_REASON:
            invalid(ctx, f"reason must be <= {MAX_REASON} characters")
        g.leave(slot)
        g.event("leave", slot.name, req.reason)
        return messages_pb2.Ack(ok=True)


class AllocationServicer(allocation_pb2_grpc.AllocationServicer):
    def __init__(self, grid: GrpcGrid) -> None:
        self.grid = grid

    def ReportLearnability(self, req: allocation_pb2.LearnabilityReport, ctx: grpc.ServicerContext
                           ) -> messages_pb2.Ack:
        g = self.grid
        slot = caller(g, ctx, req.client_id)
        if already_reported(g, ctx, slot, req.task_id, messages_pb2.TASK_KIND_PROBE, req.round):
            return messages_pb2.Ack(ok=True, message="duplicate report: already received")
        expected = g.expected_candidates(req.round)
        if len(req.stats) != len(expected):
            invalid(ctx, f"{len(req.stats)} stats for {len(expected)} candidate samples")
        for s, sid in zip(req.stats, expected):
            if s.sample_id != sid:
                invalid(ctx, f"stats out of order: {s.sample_id[:40]!r} where {sid!r} was expected")
            if not finite(s.nll, s.answer_ce, lo=0.0, hi=MAX_NLL):
                invalid(ctx, f"stats for {sid!r}: NLL values must be finite and in [0, {MAX_NLL:g}]")
            if not (0 <= s.sender_len <= MAX_LEN and 0 <= s.own_len <= MAX_LEN):
                invalid(ctx, f"stats for {sid!r}: path lengths must be in [0, {MAX_LEN}]")
        if not finite(req.public_accuracy, req.test_accuracy, lo=0.0, hi=1.0):
            invalid(ctx, "accuracies must be finite and in [0, 1]")
        if req.bytes_down < 0:
            invalid(ctx, "bytes_down must be >= 0")
        if not chunks.is_hex_id(req.own_paths_blob):
            invalid(ctx, "own_paths_blob must be the sha256 id of an uploaded PathBatch")
        if req.own_paths_blob in (g.candidate_blob, g.delta_blob):
            invalid(ctx, "own_paths_blob is the server's candidate blob: own paths are the client's own")
        blob = g.blobs.uploaded_by(req.own_paths_blob, slot.name)  # not one it was only given
        if blob is None:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "own_paths_blob was not uploaded (upload it first)")
        try:
            own = messages_pb2.PathBatch.FromString(blob)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError subclasses
            invalid(ctx, "own_paths_blob is not a PathBatch")
        own = cands.fill_known(own, g.candidate_by_id)  # questions and answers the upload left out
        check_paths(ctx, own, set(expected))
        try:
            # the own paths crossed the wire as the Upload, counted there: only this message counts here
            g.accept_probe(slot, req.task_id, req.round, wire.probe_result(req, own), req.ByteSize(), ACK.ByteSize())
        except NotOutstanding as e:
            not_outstanding(ctx, e)
        g.blobs.discard(req.own_paths_blob, slot.name)  # another uploader of the same bytes keeps its claim
        return ACK

    def GetAllocation(self, req: allocation_pb2.AllocationRequest, ctx: grpc.ServicerContext) -> Any:
        g = self.grid
        slot = caller(g, ctx, req.client_id)
        if req.round < 1:
            invalid(ctx, f"round must be >= 1, got {req.round}")
        if req.held_candidates and not chunks.is_hex_id(req.held_candidates):
            invalid(ctx, "held_candidates must be the sha256 id of a candidate batch")
        # y+/y- the client holds go by id (with a digest of their texts), the rest as text
        samples = g.allocation_messages(req.round, slot.name, req)
        if samples is None:
            errors.abort(ctx, grpc.StatusCode.NOT_FOUND, errors.TASK_NOT_OUTSTANDING,
                         f"no allocation for {slot.name!r} in round {req.round}")
        ticket = admit_stream(g, ctx, slot)
        slot.up += req.ByteSize()
        try:
            for msg in samples:
                slot.down += msg.ByteSize()
                ticket.touch()
                yield msg
        finally:
            ticket.close()

    def ReportReward(self, req: allocation_pb2.RewardReport, ctx: grpc.ServicerContext) -> messages_pb2.Ack:
        g = self.grid
        slot = caller(g, ctx, req.client_id)
        if already_reported(g, ctx, slot, req.task_id, messages_pb2.TASK_KIND_TRAIN, req.round):
            return messages_pb2.Ack(ok=True, message="duplicate report: already received")
        allocated = {s.sample_id for s in g.allocation_of(req.round, slot.name) or []}
        check_ids(ctx, [s.sample_id for s in req.samples], allocated, "reward", "allocated")
        if len(req.samples) != len(allocated):  # the allocation's rewards are per sample: none may be missing
            invalid(ctx, f"{len(req.samples)} rewards for {len(allocated)} allocated samples; report every one")
        for s in req.samples:
            if not finite(s.nll_before, s.nll_after, lo=0.0, hi=MAX_NLL):
                invalid(ctx, f"NLL values must be finite and in [0, {MAX_NLL:g}]")
            if not finite(s.alignment, lo=-1.0, hi=1.0):
                invalid(ctx, "alignment (a cosine) must be finite and in [-1, 1]")
        if not finite(req.test_accuracy, lo=0.0, hi=1.0):
            invalid(ctx, "test_accuracy must be finite and in [0, 1]")
        if not 0 <= req.steps <= MAX_STEPS or not finite(req.train_seconds, lo=0.0):
            invalid(ctx, "steps and train_seconds must be finite and >= 0")
        if not finite(req.loss_sft, req.loss_cd):
            invalid(ctx, "losses must be finite")
        try:
            g.accept_reward(slot, req.task_id, req.round, wire.train_result(req), req.ByteSize(), ACK.ByteSize())
        except NotOutstanding as e:
            not_outstanding(ctx, e)
        return ACK


class ExchangeServicer(exchange_pb2_grpc.ExchangeServicer):
    def __init__(self, grid: GrpcGrid) -> None:
        self.grid = grid

    def Upload(self, request_iterator: Any, ctx: grpc.ServicerContext) -> exchange_pb2.UploadReply:
        g = self.grid
        slot = caller(g, ctx, "")

        def check(c: chunks.AnyChunk) -> None:
            if c.client_id and c.client_id != slot.name:
                raise DeniedError(f"chunk claims client {c.client_id[:40]!r}, credential is for {slot.name!r}")

        ticket = admit_stream(g, ctx, slot)

        def counted() -> Iterable[chunks.AnyChunk]:
            for c in request_iterator:
                ticket.touch()
                slot.up += c.ByteSize()
                yield c

        try:
            # read ahead of the hashing and copying: the client keeps sending meanwhile
            r = g.blobs.add_chunks(slot.name, chunks.read_ahead(counted(), when=lambda c: c.total > 1), check)
            reply = exchange_pb2.UploadReply(blob_id=r.blob_id, size=r.size, already_present=r.already_present,
                                             complete=r.complete, received=r.received, total=r.total)
            slot.down += reply.ByteSize()
        except grpc.RpcError:  # cancelled (idle, or by the client): the chunks it delivered stay for resume
            return exchange_pb2.UploadReply()
        except chunks.ChunkError as e:
            invalid(ctx, str(e))
        except DeniedError as e:
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except QuotaError as e:
            errors.abort(ctx, grpc.StatusCode.RESOURCE_EXHAUSTED, errors.STORE_FULL, str(e))
        finally:
            ticket.close()
        return reply

    def QueryUpload(self, req: exchange_pb2.UploadQuery, ctx: grpc.ServicerContext) -> exchange_pb2.UploadState:
        g = self.grid
        slot = caller(g, ctx, req.client_id)
        if not chunks.is_hex_id(req.blob_id):
            invalid(ctx, "blob_id must be 64 lower-case hex characters")
        present, have, total, size = g.blobs.state(slot.name, req.blob_id)
        # not in the round's bytes: a resume probe is control traffic, like a heartbeat or an empty poll
        return exchange_pb2.UploadState(present=present, received_chunks=have, total=total, blob_size=size)

    def Download(self, req: exchange_pb2.DownloadRequest, ctx: grpc.ServicerContext) -> Any:
        """Yields encoded Chunk messages (bytes: see :func:`exchange_handler`), hashed when the blob was stored."""
        g = self.grid
        slot = caller(g, ctx, req.client_id)
        if not chunks.is_hex_id(req.blob_id):
            invalid(ctx, "blob_id must be 64 lower-case hex characters")
        got = g.blobs.chunked(req.blob_id, slot.name)  # in the layout its id names
        if got is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"no blob {req.blob_id[:16]!r} for {slot.name!r}")
        data, lay = got
        if not 0 <= req.from_chunk <= lay.total:
            invalid(ctx, f"from_chunk must be in [0, {lay.total}]")
        ticket = admit_stream(g, ctx, slot)
        slot.up += req.ByteSize()
        try:
            for msg in lay.encoded(data, start=req.from_chunk):
                slot.down += len(msg)
                ticket.touch()  # a reader that stops taking chunks blocks this send: the watchdog cancels it
                yield msg
        finally:
            ticket.close()


def exchange_handler(servicer: ExchangeServicer) -> grpc.GenericRpcHandler:
    """The Exchange service with its chunks (de)serialized by :mod:`lada.common.chunks`: Upload parses
    each Chunk without copying its data, Download sends Chunk messages it encoded with one copy. The
    bytes on the wire are the generated ``Chunk``'s; only the Python objects differ."""
    return grpc.method_handlers_generic_handler("lada.v1.Exchange", {
        "Upload": grpc.stream_unary_rpc_method_handler(
            servicer.Upload, request_deserializer=chunks.parse_chunk,
            response_serializer=exchange_pb2.UploadReply.SerializeToString),
        "QueryUpload": grpc.unary_unary_rpc_method_handler(
            servicer.QueryUpload, request_deserializer=exchange_pb2.UploadQuery.FromString,
            response_serializer=exchange_pb2.UploadState.SerializeToString),
        "Download": grpc.unary_stream_rpc_method_handler(
            servicer.Download, request_deserializer=exchange_pb2.DownloadRequest.FromString),
    })
