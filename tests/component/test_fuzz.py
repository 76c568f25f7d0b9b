"""Property-based bad input against every RPC (hypothesis).

Each example starts from a *valid* request for the RPC (so the fuzzing reaches
the deep checks, not only the first one) and applies random mutations driven
by the message descriptor: any field set to an adversarial value (NaN, inf,
huge, negative, empty, over-long, wrong ids, unknown enum values), repeated
fields grown, shrunk or duplicated. Raw random bytes go to every method too.

Properties: the server never crashes (no UNKNOWN/INTERNAL from a handler),
every rejected call leaves the transport state exactly as it was (nothing
partial is stored), and whatever an accepted call stored is valid. The server
is the production gRPC server on a TCP port in this process so its state can
be compared before and after each call.
"""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lada.common import chunks, wire
from lada.common.data import is_correct
from lada.common.proto.lada.v1 import (
    allocation_pb2,
    coordinator_pb2,
    exchange_pb2,
    messages_pb2,
)
from lada.common.rounds import grade
from lada.server.transport.grid import GrpcGrid
from lada.server.transport.validation import MAX_NLL

from tests.support.transport import (
    METHODS,
    TOKEN,
    candidates,
    dispatch,
    grpc_server,
    raw_call,
    register,
    snapshot,
    stubs,
)

CRASH = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
ids = st.one_of(text, st.sampled_from(["", "client-1", "client-2", "s0", "s4", "s9", "a b", "../x", "é", "-"]),
                st.text(alphabet="ab-_.0", min_size=195, max_size=230))
floats = st.one_of(st.floats(width=32), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1.0, 1.5, MAX_NLL * 2,
                                                         3.4e38]))
ints32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 0, 1, 2, 5, 2**31 - 1]))
ints64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-1, 0, 1, 1 << 40]))
hexes = st.one_of(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), ids)


def _scalar(f, draw):  # noqa: ANN001, ANN202
    if f.type == f.TYPE_STRING:
        return draw(st.one_of(ids, hexes) if "sha" in f.name or f.name.endswith(("blob", "_id")) else ids)
    if f.type == f.TYPE_BYTES:
        return draw(st.binary(max_size=200))
    if f.type in (f.TYPE_FLOAT, f.TYPE_DOUBLE):
        return draw(floats)
    if f.type == f.TYPE_INT32:
        return draw(ints32)
    if f.type == f.TYPE_INT64:
        return draw(ints64)
    if f.type == f.TYPE_BOOL:
        return draw(st.booleans())
    if f.type == f.TYPE_ENUM:
        return draw(st.integers(-3, 9))
    raise AssertionError(f"unhandled field type {f.type}")


def mutate(msg, draw) -> None:  # noqa: ANN001
    """One random, descriptor-driven change to ``msg`` (recursing into sub-messages)."""
    f = draw(st.sampled_from(list(msg.DESCRIPTOR.fields)))
    if f.is_repeated:
        seq = getattr(msg, f.name)
        op = draw(st.sampled_from(["add", "drop", "dup", "edit", "many"]))
        if op == "add" or not len(seq):
            item = seq.add()
            for _ in range(draw(st.integers(0, 3))):
                mutate(item, draw)
        elif op == "drop":
            del seq[draw(st.integers(0, len(seq) - 1))]
        elif op == "dup":
            seq.add().CopyFrom(seq[draw(st.integers(0, len(seq) - 1))])
        elif op == "many":
            for _ in range(draw(st.integers(1, 300))):
                seq.add().CopyFrom(seq[0])
        else:
            mutate(seq[draw(st.integers(0, len(seq) - 1))], draw)
    elif f.type == f.TYPE_MESSAGE:
        mutate(getattr(msg, f.name), draw)
    else:
        setattr(msg, f.name, _scalar(f, draw))


# ---------------------------------------------------------------------- the server under fuzz
class Bench:
    """A server with client-1 registered and a PROBE and a TRAIN task outstanding."""

    def __init__(self, srv) -> None:  # noqa: ANN001
        self.srv, self.grid = srv, srv.grid
        self.channel = srv.channel()
        self.s = stubs(self.channel)
        self.reset()

    def reset(self) -> None:
        g: GrpcGrid = self.grid
        with g.lock:
            g.probes.clear()
            g.rewards.clear()
            for slot in g.clients.values():
                slot.tasks.clear()
                slot.outstanding.clear()
                slot.done.clear()
        slot = g.clients.get("client-1")
        if slot is None or not self.s.credential.startswith(f"client-1.{slot.nonce}."):
            register(self.s, "client-1", instance="fuzz")
        self.probe = dispatch(g, messages_pb2.TASK_KIND_PROBE, ["client-1"])["client-1"]
        self.train = dispatch(g, messages_pb2.TASK_KIND_TRAIN, ["client-1"])["client-1"]
        with g.lock:
            g.clients["client-1"].tasks.clear()
        self.own = candidates(5)
        self.own.paths[0].text = "own step 0 #### 0"  # the client's paths, not the server's candidate blob
        own = self.own.SerializeToString()
        self.own_blob = g.blobs.add_chunks("client-1", chunks.split(own, 100, "client-1")).blob_id
        self.cand_blob = g.candidate_blob = next(iter(g.blobs.pinned))

    def valid(self, method: str):  # noqa: ANN201 - a valid request (or chunk list) for the RPC
        if method == "Register":
            return coordinator_pb2.RegisterRequest(join_token=TOKEN, client_name="client-2", model="m",
                                                   domain="shop", protocol_version=1, instance_id="fz")
        if method == "Heartbeat":
            return coordinator_pb2.HeartbeatRequest(client_id="client-1")
        if method == "PullTask":
            return coordinator_pb2.PullTaskRequest(client_id="client-1", wait_s=0.0)
        if method == "Leave":
            return coordinator_pb2.LeaveRequest(client_id="client-1", reason="fuzz")
        if method == "ReportLearnability":
            rep = allocation_pb2.LearnabilityReport(client_id="client-1", task_id=self.probe, round=1,
                                                    own_paths_blob=self.own_blob, public_accuracy=0.4,
                                                    has_test_accuracy=True, test_accuracy=0.3, bytes_down=100)
            for p in self.own.paths:
                rep.stats.add(sample_id=p.sample_id, nll=1.5, sender_len=9, own_len=7, own_correct=True,
                              sender_correct=p.correct, answer_ce=0.7)
            return rep
        if method == "GetAllocation":
            return allocation_pb2.AllocationRequest(client_id="client-1", round=1)
        if method == "ReportReward":
            return allocation_pb2.RewardReport(
                client_id="client-1", task_id=self.train, round=1, test_accuracy=0.5, steps=3, train_seconds=0.2,
                loss_sft=1.0, loss_cd=0.6, samples=[allocation_pb2.SampleReward(sample_id=f"s{i}", nll_before=2.0,
                                                                                nll_after=1.0) for i in range(3)])
        if method == "Upload":
            return list(chunks.split(b"fuzz payload " * 40, 128, "client-1"))
        if method == "QueryUpload":
            return exchange_pb2.UploadQuery(blob_id=self.own_blob, client_id="client-1")
        if method == "Download":
            return exchange_pb2.DownloadRequest(blob_id=self.cand_blob, from_chunk=0, client_id="client-1")
        raise AssertionError(method)

    def call(self, method: str, req) -> grpc.StatusCode:  # noqa: ANN001
        s = self.s
        fn = {
            "Register": lambda: s.coord.Register(req, timeout=5),
            "Heartbeat": lambda: s.coord.Heartbeat(req, metadata=s.md, timeout=5),
            "PullTask": lambda: s.coord.PullTask(req, metadata=s.md, timeout=0.5),
            "Leave": lambda: s.coord.Leave(req, metadata=s.md, timeout=5),
            "ReportLearnability": lambda: s.alloc.ReportLearnability(req, metadata=s.md, timeout=5),
            "GetAllocation": lambda: list(s.alloc.GetAllocation(req, metadata=s.md, timeout=5)),
            "ReportReward": lambda: s.alloc.ReportReward(req, metadata=s.md, timeout=5),
            "Upload": lambda: s.exchange.Upload(iter(req), metadata=s.md, timeout=5),
            "QueryUpload": lambda: s.exchange.QueryUpload(req, metadata=s.md, timeout=5),
            "Download": lambda: list(s.exchange.Download(req, metadata=s.md, timeout=5)),
        }[method]
        try:
            fn()
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK


def assert_stored_state_is_valid(g: GrpcGrid) -> None:
    for (t, name), pr in g.probes.items():
        assert t == 1 and name == "client-1"
        assert [s.sample_id for s in pr.stats] == g.candidates[1]
        assert all(math.isfinite(s.nll) and 0 <= s.nll <= MAX_NLL and s.sender_len >= 0 for s in pr.stats)
        assert 0 <= pr.public_accuracy <= 1 and 0 <= (pr.test_accuracy or 0.0) <= 1
        assert len({p.sample_id for p in pr.own_paths}) == len(pr.own_paths)
        # what the round learns from is graded against the labels it offered, whatever was claimed
        offered = {c.sample_id: c for c in wire.paths_of(candidates())}
        graded = grade(pr, list(offered.values()))
        assert all(p.correct == is_correct(p.text, offered[p.sample_id].answer) for p in graded.own_paths)
        assert all(s.sender_correct == offered[s.sample_id].correct for s in graded.stats)
    for (_, name), r in g.rewards.items():
        allocated = {s.sample_id for s in g.allocs[(1, name)]}
        assert {s.sample_id for s in r.samples} <= allocated
        assert all(math.isfinite(s.nll_before) and math.isfinite(s.nll_after) for s in r.samples)
        assert 0 <= r.test_accuracy <= 1 and r.steps >= 0
    for bid in list(g.blobs.blobs):
        assert chunks.Layout.of(g.blobs.get(bid), g.blobs.layouts[bid].chunk_size).blob_id == bid


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    with grpc_server(max_message_mb=1, max_blob=64 * 1024, chunk_size=1024) as srv:
        yield Bench(srv)


RPCS = [p.rsplit("/", 1)[1] for p, _, _ in METHODS]


@pytest.mark.parametrize("method", RPCS)
@FUZZ
@given(data=st.data())
def test_mutated_requests_never_crash_or_store_partial_state(bench: Bench, method: str, data) -> None:  # noqa: ANN001
    bench.reset()
    req = bench.valid(method)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if isinstance(req, list):  # an upload: mutate a chunk, or drop / repeat / reorder chunks
            op = data.draw(st.sampled_from(["edit", "drop", "dup", "shuffle"]))
            i = data.draw(st.integers(0, len(req) - 1)) if req else 0
            if op == "edit" and req:
                mutate(req[i], data.draw)
            elif op == "drop" and req:
                del req[i]
            elif op == "dup" and req:
                req.insert(data.draw(st.integers(0, len(req))), req[i])
            else:
                req = data.draw(st.permutations(req))
        else:
            mutate(req, data.draw)
    before = snapshot(bench.grid)
    code = bench.call(method, req)
    event(code.name)  # pytest --hypothesis-show-statistics: how deep the examples got
    assert code not in CRASH, f"{method} crashed the handler: {code}"
    if method == "PullTask" and code == grpc.StatusCode.DEADLINE_EXCEEDED:
        code = grpc.StatusCode.OK  # a long poll may outlive the test's deadline; it stores nothing
    if code != grpc.StatusCode.OK:
        assert snapshot(bench.grid) == before, f"rejected {method} ({code}) changed the server state"
    assert_stored_state_is_valid(bench.grid)


@pytest.mark.parametrize("method", [p for p, _, _ in METHODS])
@FUZZ
@given(payload=st.one_of(st.binary(max_size=300), st.lists(st.binary(max_size=80), max_size=4)))
def test_random_bytes_never_crash_or_store_anything(bench: Bench, method: str, payload) -> None:  # noqa: ANN001
    bench.reset()
    before = snapshot(bench.grid)
    try:
        raw_call(bench.channel, method, payload, bench.s.md, timeout=1.5)
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    if code == grpc.StatusCode.INTERNAL:  # the gRPC runtime refuses bytes that do not parse, before any handler
        streaming = {p: cs for p, cs, _ in METHODS}[method]
        parts = payload if isinstance(payload, list) else [payload]
        msgs = parts if streaming else [b"".join(parts)]
        assert not all(_parses(_request_class(method), b) for b in msgs), f"{method}: INTERNAL for valid bytes"
    else:
        assert code not in CRASH, f"{method}: {code}"
    if code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED):
        assert snapshot(bench.grid) == before
    assert_stored_state_is_valid(bench.grid)


def _parses(cls, b: bytes) -> bool:  # noqa: ANN001
    try:
        cls.FromString(b)
    except DecodeError:
        return False
    return True


def _request_class(method: str):  # noqa: ANN202
    name = method.rsplit("/", 1)[1]
    return {"Register": coordinator_pb2.RegisterRequest, "Heartbeat": coordinator_pb2.HeartbeatRequest,
            "PullTask": coordinator_pb2.PullTaskRequest, "Leave": coordinator_pb2.LeaveRequest,
            "ReportLearnability": allocation_pb2.LearnabilityReport, "GetAllocation": allocation_pb2.AllocationRequest,
            "ReportReward": allocation_pb2.RewardReport, "Upload": exchange_pb2.Chunk,
            "QueryUpload": exchange_pb2.UploadQuery, "Download": exchange_pb2.DownloadRequest}[name]


def test_the_server_still_serves_a_valid_round_trip_after_the_fuzzing(bench: Bench) -> None:
    bench.reset()
    for method in ("ReportLearnability", "ReportReward"):
        assert bench.call(method, bench.valid(method)) == grpc.StatusCode.OK
    assert set(bench.grid.probes) == set(bench.grid.rewards) == {(1, "client-1")}
    assert_stored_state_is_valid(bench.grid)
