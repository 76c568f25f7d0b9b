"""Attacks on the gRPC transport that once broke the server (issue 15), each replayed against
the production gRPC server on a TCP port in this process.

Identical uploads of two clients (content addressing stores them once) must both be
reportable; a client cannot pass off the server's candidate blob as its own paths, reuse a
finished task id for another kind of report, or report rewards for part of its allocation.
"""

from __future__ import annotations

import grpc
from lada.common import chunks
from lada.common.proto.lada.v1 import allocation_pb2, exchange_pb2, messages_pb2

from tests.support.transport import Stubs, candidates, dispatch, grpc_server, register, stubs


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
        published = chunks.sha256(cand.SerializeToString())
        assert srv.grid.blobs.get(published, reader="client-1") is not None  # the client may download it
        srv.grid.candidate_blob = published
        code, _ = _failure(lambda: s.alloc.ReportLearnability(_probe_report(s, task, published, cand),
                                                              metadata=s.md, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        # a blob another client was given is not "present" for it: it must send the bytes to own them
        st = s.exchange.QueryUpload(exchange_pb2.UploadQuery(blob_sha256=published, client_id="client-1"),
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
