"""Attacks on the gRPC transport that once broke the server (issue 15), each replayed against
the production gRPC server on a TCP port in this process.

Streams that stop sending cannot take the server's worker threads from health checks and
enrolments. Identical uploads of two clients (content addressing stores them once) must both be
reportable; a client cannot pass off the server's candidate blob as its own paths, reuse a
finished task id for another kind of report, or report rewards for part of its allocation.
"""

from __future__ import annotations

import os
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lada.client.runtime import Connection
from lada.common import chunks, errors
from lada.common.config import TransportConfig
from lada.common.proto.lada.v1 import allocation_pb2, coordinator_pb2, exchange_pb2, messages_pb2

from tests.support.transport import (
    TOKEN,
    Server,
    Stubs,
    candidates,
    dispatch,
    grpc_server,
    in_thread,
    register,
    stubs,
    wait_until,
)

# a small pool so the attack is cheap: 16 workers, 4 kept for short calls, 4 long calls per client
LIMITS = TransportConfig(rpc_reserve=4, streams_per_client=4, stream_idle=2.0)


def _stalled_upload(s: Stubs, release: threading.Event) -> grpc.Future:
    """An Upload stream that sends one chunk of a two-chunk blob and then never another (no deadline)."""
    first = next(iter(chunks.split(os.urandom(2048), 1024, s.name)))

    def stream():  # noqa: ANN202 - a request iterator
        yield first
        release.wait()

    return s.exchange.Upload.future(stream(), metadata=s.md)


def _answers_fast(srv: Server, name: str) -> None:
    """Health.Check and Register from a fresh channel, each within a second."""
    ch = srv.channel()
    t0 = time.time()
    rep = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
    assert rep.status == health_pb2.HealthCheckResponse.SERVING
    s = register(stubs(ch), name)
    s.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(), metadata=s.md, timeout=1)
    assert time.time() - t0 < 1.5
    ch.close()


def _busy(f: grpc.Future) -> bool:
    return f.done() and f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and errors.reason_of(f) == errors.BUSY


def _upload(s: Stubs, data: bytes) -> str:
    return s.exchange.Upload(chunks.split(data, 1 << 16, s.name), metadata=s.md, timeout=10).blob_id


def _probe_report(s: Stubs, task_id: str, bid: str, own: messages_pb2.PathBatch) -> allocation_pb2.LearnabilityReport:
    rep = allocation_pb2.LearnabilityReport(client_id=s.name, task_id=task_id, round=1, own_paths_blob=bid,
                                            public_accuracy=0.5)
    for p in own.paths:
        rep.stats.add(sample_id=p.sample_id, nll=1.0, sender_len=5, own_len=6, answer_ce=0.5)
    return rep


def _failure(fn) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001 - a zero-argument call
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def test_identical_uploads_of_two_clients_are_both_reportable() -> None:
    """client-1 and client-3 upload byte-identical own paths (same base model): the blob is
    stored once with two claims; accepting client-1's report drops only client-1's claim."""
    with grpc_server() as srv:
        a, c = (register(stubs(srv.channel()), n) for n in ("client-1", "client-3"))
        tasks = dispatch(srv.grid, messages_pb2.TASK_KIND_PROBE, ["client-1", "client-3"])
        own = candidates(5)
        own.paths[0].text = "step 0 #### 9"  # not the candidate blob itself
        data = own.SerializeToString()
        bid = _upload(a, data)
        assert _upload(c, data) == bid and len(srv.grid.blobs.blobs) == 2  # candidates + one copy of X
        assert a.alloc.ReportLearnability(_probe_report(a, tasks["client-1"], bid, own), metadata=a.md,
                                          timeout=10).ok
        assert c.alloc.ReportLearnability(_probe_report(c, tasks["client-3"], bid, own), metadata=c.md,
                                          timeout=10).ok
        assert (1, "client-1") in srv.grid.probes and (1, "client-3") in srv.grid.probes
        assert bid not in srv.grid.blobs.blobs  # nobody holds a claim any more: the bytes are gone


def test_the_candidate_blob_is_not_a_clients_own_paths() -> None:
    """Naming the server's published candidate blob (readable by all, uploaded by none of them)
    as one's own paths would record the client as the author of the LLM's paths."""
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1")
        task = dispatch(srv.grid, messages_pb2.TASK_KIND_PROBE, ["client-1"])["client-1"]
        cand = candidates(5)
        published = chunks.id_of(cand.SerializeToString(), srv.grid.blobs.chunk_size)
        assert srv.grid.blobs.get(published, reader="client-1") is not None  # the client may download it
        srv.grid.candidate_blob = published
        code, _ = _failure(lambda: s.alloc.ReportLearnability(_probe_report(s, task, published, cand),
                                                              metadata=s.md, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        # a blob another client was given is not "present" for it: it must send the bytes to own them
        st = s.exchange.QueryUpload(exchange_pb2.UploadQuery(blob_id=published, client_id="client-1"),
                                    metadata=s.md, timeout=10)
        assert not st.present and (1, "client-1") not in srv.grid.probes


def test_a_published_blob_is_not_owned_by_its_readers() -> None:
    """Even one that is not the current candidate blob (an older round's, say)."""
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1")
        task = dispatch(srv.grid, messages_pb2.TASK_KIND_PROBE, ["client-1"])["client-1"]
        cand = candidates(5)
        published = srv.grid.blobs.put(cand.SerializeToString(), pin=True)
        srv.grid.candidate_blob = "0" * 64  # as if a newer round had published another
        code, details = _failure(lambda: s.alloc.ReportLearnability(_probe_report(s, task, published, cand),
                                                                    metadata=s.md, timeout=10))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "not uploaded" in details


def test_a_finished_probe_task_id_is_no_reward_report() -> None:
    """A duplicate is acknowledged only if it repeats the accepted report's kind and round."""
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1")
        probe = dispatch(srv.grid, messages_pb2.TASK_KIND_PROBE, ["client-1"])["client-1"]
        own = candidates(5)
        own.paths[0].text = "step 0 #### 9"
        bid = _upload(s, own.SerializeToString())
        assert s.alloc.ReportLearnability(_probe_report(s, probe, bid, own), metadata=s.md, timeout=10).ok
        dispatch(srv.grid, messages_pb2.TASK_KIND_TRAIN, ["client-1"])
        forged = allocation_pb2.RewardReport(client_id="client-1", task_id=probe, round=1, test_accuracy=0.5)
        code, _ = _failure(lambda: s.alloc.ReportReward(forged, metadata=s.md, timeout=5))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        rep = _probe_report(s, probe, bid, own)
        rep.round = 2  # nor is a probe report for another round
        code, _ = _failure(lambda: s.alloc.ReportLearnability(rep, metadata=s.md, timeout=10))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "duplicate" in s.alloc.ReportLearnability(_probe_report(s, probe, bid, own), metadata=s.md,
                                                         timeout=10).message  # the true retry still is one


def test_a_reward_report_covers_every_allocated_sample() -> None:
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1")
        task = dispatch(srv.grid, messages_pb2.TASK_KIND_TRAIN, ["client-1"])["client-1"]  # s0..s2 allocated
        rep = allocation_pb2.RewardReport(client_id="client-1", task_id=task, round=1, test_accuracy=0.5)
        code, details = _failure(lambda: s.alloc.ReportReward(rep, metadata=s.md, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "0 rewards for 3" in details
        rep.samples.add(sample_id="s1", nll_before=2.0, nll_after=1.0)
        assert _failure(lambda: s.alloc.ReportReward(rep, metadata=s.md, timeout=5))[0] == \
            grpc.StatusCode.INVALID_ARGUMENT
        for i in (0, 2):
            rep.samples.add(sample_id=f"s{i}", nll_before=2.0, nll_after=1.0)
        assert s.alloc.ReportReward(rep, metadata=s.md, timeout=5).ok


def test_one_client_cannot_freeze_the_server_with_stalled_upload_streams() -> None:
    """20 never-finishing Upload streams with one credential against 16 workers: without the gate
    they hold every worker and Health.Check / Register time out; with it, 4 are admitted, 16 get
    RESOURCE_EXHAUSTED (BUSY) at once, and the 4 are cancelled after ``stream_idle``."""
    release = threading.Event()
    with grpc_server(max_workers=16, limits=LIMITS) as srv:
        a = register(stubs(srv.channel()), "client-1")
        futs = [_stalled_upload(a, release) for _ in range(20)]
        try:
            time.sleep(0.5)  # every stream has reached the server
            _answers_fast(srv, "client-2")  # without the gate: DEADLINE_EXCEEDED, all 16 workers are held
            assert wait_until(lambda: sum(map(_busy, futs)) == 16, timeout=5)
            t0 = time.time()
            assert srv.grid.gate.active("client-1") == 4
            assert wait_until(lambda: all(f.done() for f in futs), timeout=LIMITS.stream_idle + 3)
            stalled = [f for f in futs if not _busy(f)]
            assert len(stalled) == 4 and all(f.code() == grpc.StatusCode.CANCELLED for f in stalled)
            assert time.time() - t0 < LIMITS.stream_idle + 2 and srv.grid.gate.active() == 0
            assert any(k[0] == "client-1" for k in srv.grid.blobs.partial)  # what they sent is kept for resume
            _answers_fast(srv, "client-3")
        finally:
            release.set()


def test_many_clients_together_leave_the_reserve_to_short_calls() -> None:
    """Four credentials with four stalled streams each: 12 admitted (16 workers less 4 in reserve),
    the rest BUSY, and health checks and enrolments still answer at once."""
    release = threading.Event()
    with grpc_server(max_workers=16, limits=LIMITS, allowed={f"client-{i}": "arith" for i in range(1, 6)}) as srv:
        ss = [register(stubs(srv.channel()), f"client-{i}") for i in range(1, 5)]
        futs = [_stalled_upload(s, release) for s in ss for _ in range(4)]
        try:
            assert wait_until(lambda: srv.grid.gate.active() == 12 and sum(map(_busy, futs)) == 4, timeout=5)
            _answers_fast(srv, "client-5")
        finally:
            release.set()


def test_long_polls_of_one_client_are_capped_too() -> None:
    """Ten concurrent PullTask long-polls of one credential: four wait, six are told WAIT at once."""
    with grpc_server(max_workers=16, limits=LIMITS) as srv:
        a = register(stubs(srv.channel()), "client-1")
        req = coordinator_pb2.PullTaskRequest(client_id="client-1", wait_s=3.0)
        polls = [in_thread(lambda: a.coord.PullTask(req, metadata=a.md, timeout=10)) for _ in range(10)]
        assert wait_until(lambda: sum("value" in box for _, box in polls) == 6, timeout=2)
        assert srv.grid.gate.active("client-1") == 4
        assert all(box["value"].retry_after_s > 0 for _, box in polls if "value" in box)
        _answers_fast(srv, "client-2")
        for th, _ in polls:
            th.join(10)
        assert srv.grid.gate.active() == 0


def test_the_real_client_backs_off_on_busy_and_uploads_once_a_place_frees() -> None:
    """One place per client, held by a stalled stream of the same name: the real client's upload
    gets RESOURCE_EXHAUSTED (BUSY), backs off, and succeeds once the watchdog cancels the stall."""
    release = threading.Event()
    lim = TransportConfig(rpc_reserve=4, streams_per_client=1, stream_idle=1.0)
    with grpc_server(max_workers=16, limits=lim) as srv:
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", call_timeout=5, give_up_after=20)
        conn.register()
        attacker = Stubs(*[getattr(conn, k) for k in ("coord", "alloc", "exchange")], "client-1", conn.credential)
        stalled = _stalled_upload(attacker, release)
        try:
            assert wait_until(lambda: srv.grid.gate.active("client-1") == 1, timeout=5)
            t0 = time.time()
            data = os.urandom(5000)
            assert conn.upload(data) == chunks.id_of(data)
            assert time.time() - t0 >= 0.5 and stalled.code() == grpc.StatusCode.CANCELLED
        finally:
            release.set()


def test_a_cancelled_call_is_retried() -> None:
    """The server cancels an idle stream (CANCELLED); this client never cancels its own calls."""

    class Cancelled(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.CANCELLED

        def details(self) -> str:
            return "idle stream"

    conn = Connection("127.0.0.1:1", "client-1", TOKEN, "m", "arith", call_timeout=1, give_up_after=5)
    tries = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise Cancelled()
        return "ok"

    assert conn.call(flaky, "Upload") == "ok" and len(tries) == 2
