"""Transfers, size limits and liveness of the gRPC transport.

Chunked, content-addressed transfers of multi-MB blobs over TLS; an interrupted
upload resumes with only the missing chunks; a chunk or a whole upload sent
twice is stored once; a rejected upload stores nothing; message-size limits
hold on both ends; silent clients are dropped before the round deadline,
unresponsive ones at it, and both can rejoin. The server is the production
gRPC server on a TCP port in this process (so its state can be inspected).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lada.client.runtime import Connection, channel_options
from lada.common import chunks, wire
from lada.common.proto.lada.v1 import allocation_pb2, coordinator_pb2, exchange_pb2, messages_pb2
from lada.common.rounds import grade
from lada.common.tls import channel_credentials
from lada.server.tls import server_credentials
from lada.server.transport.blobs import BlobStore
from lada.server.transport.serve import grpc_options

from tests.support.transport import (
    TOKEN,
    candidates,
    certs,  # noqa: F401 - fixture
    code_of,
    dispatch,
    grpc_server,
    in_thread,
    register,
    snapshot,
    stubs,
    wait_until,
)

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------------- chunks (pure)
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), size=st.integers(1, 700), seed=st.randoms(use_true_random=False))
def test_split_join_roundtrip_in_any_order_with_duplicates(data: bytes, size: int, seed) -> None:  # noqa: ANN001
    parts = list(chunks.split(data, size))
    assert len(parts) == chunks.n_chunks(len(data), size)
    mixed = parts + parts[: len(parts) // 2]
    seed.shuffle(mixed)
    assert chunks.join(mixed) == data
    for c in parts:
        chunks.check_chunk(c, max_blob=len(data))


def test_join_and_check_refuse_corruption() -> None:
    data = os.urandom(3000)
    parts = list(chunks.split(data, 1000))
    bad = exchange_pb2.Chunk()
    bad.CopyFrom(parts[1])
    bad.data = bytes([bad.data[0] ^ 0xFF]) + bad.data[1:]  # always a change (b"x" + ... was not, 1 in 256)
    with pytest.raises(chunks.ChunkError):
        chunks.join([parts[0], bad, parts[2]])
    with pytest.raises(chunks.ChunkError):
        chunks.check_chunk(bad, 10_000)
    with pytest.raises(chunks.ChunkError, match="incomplete"):
        chunks.join(parts[:2])
    with pytest.raises(chunks.ChunkError):
        chunks.check_chunk(parts[0], max_blob=100)  # the blob is over the limit


# ---------------------------------------------------------------------- transfers over TLS
def test_multi_mb_blob_round_trips_in_verified_chunks_over_tls(certs: Path) -> None:  # noqa: F811
    blob = os.urandom(6 * 1024 * 1024 + 123)  # > the 4 MB message limit: only chunking gets it through
    with grpc_server(certs, max_message_mb=4, chunk_size=256 * 1024) as srv:
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", max_message_mb=4, chunk_kb=256,
                          tls=channel_credentials(str(certs / "ca.pem")), call_timeout=30)
        conn.register()
        bid = conn.upload(blob)
        assert bid == chunks.id_of(blob, 256 * 1024) and srv.grid.blobs.get(bid) == blob
        up = srv.grid.clients["client-1"].up
        assert len(blob) < up < len(blob) * 1.01
        # the same bytes again: the server says it has them, nothing is re-sent or stored twice
        n_before = srv.grid.blobs.nbytes
        assert conn.upload(blob) == bid
        assert srv.grid.clients["client-1"].up == up and srv.grid.blobs.nbytes == n_before
        # and back down, resumable from any chunk
        assert conn.download(bid) == blob
        s = stubs(srv.channel())
        s.credential = conn.credential
        tail = list(s.exchange.Download(exchange_pb2.DownloadRequest(blob_id=bid, from_chunk=20), metadata=s.md,
                                        timeout=30))
        assert [c.index for c in tail] == list(range(20, chunks.n_chunks(len(blob), 256 * 1024)))
        assert b"".join(c.data for c in tail) == blob[20 * 256 * 1024:]


def test_an_interrupted_upload_resumes_with_only_the_missing_chunks() -> None:
    blob = os.urandom(3 * 1024 * 1024)
    size = 64 * 1024
    total = chunks.n_chunks(len(blob), size)
    with grpc_server(chunk_size=size) as srv:
        s = register(stubs(srv.channel()), "client-1")
        gate, sent = threading.Event(), []

        def first_part():  # noqa: ANN202
            for c in chunks.split(blob, size, "client-1"):
                if c.index == 17:
                    gate.wait(10)  # the network "hangs" here ...
                sent.append(c.index)
                yield c

        fut = s.exchange.Upload.future(first_part(), metadata=s.md, timeout=30)
        p, key = srv.grid.blobs.partial, ("client-1", chunks.id_of(blob, size), total, len(blob))
        assert wait_until(lambda: key in p and len(p[key].parts) == 17)
        fut.cancel()  # ... and the connection is lost
        gate.set()
        assert fut.cancelled()
        held = srv.grid.blobs.state("client-1", chunks.id_of(blob, size))
        assert held[:3] == (False, list(range(17)), total)
        # the client retries: it asks what the server holds and sends only the rest
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", chunk_kb=size // 1024, call_timeout=30)
        conn.credential = s.credential
        conn.instance_id = "inst-a"
        up0 = srv.grid.clients["client-1"].up
        assert conn.upload(blob) == chunks.id_of(blob, size)
        resent = srv.grid.clients["client-1"].up - up0
        assert (total - 17) * size < resent < (total - 16) * size  # only the 31 missing chunks travelled
        assert srv.grid.blobs.get(chunks.id_of(blob, size)) == blob
        assert not srv.grid.blobs.partial and srv.grid.blobs.nbytes == len(blob)


def test_chunks_sent_twice_are_stored_once() -> None:
    blob = os.urandom(200_000)
    with grpc_server(chunk_size=50_000) as srv:
        s = register(stubs(srv.channel()), "client-1")
        parts = list(chunks.split(blob, 50_000, "client-1"))
        rep = s.exchange.Upload(iter([parts[0], parts[0], parts[2], parts[0]]), metadata=s.md, timeout=10)
        assert not rep.complete and rep.received == 2 and rep.total == 4
        assert srv.grid.blobs.nbytes == 100_000
        rep = s.exchange.Upload(iter(parts[::-1] + parts), metadata=s.md, timeout=10)  # everything, twice
        assert rep.complete and rep.blob_id == chunks.id_of(blob, 50_000) and not rep.already_present
        assert srv.grid.blobs.nbytes == len(blob) and len(srv.grid.blobs.blobs) == 1
        rep = s.exchange.Upload(iter(parts), metadata=s.md, timeout=10)
        assert rep.complete and rep.already_present and srv.grid.blobs.nbytes == len(blob)


def test_a_rejected_upload_stores_nothing() -> None:
    blob = os.urandom(100_000)
    with grpc_server(max_message_mb=1, max_blob=1 << 20) as srv:
        s = register(stubs(srv.channel()), "client-1")
        parts = list(chunks.split(blob, 30_000, "client-1"))
        keep = s.exchange.Upload(iter(parts[:1]), metadata=s.md, timeout=10)  # an earlier, interrupted upload
        assert keep.received == 1
        before = snapshot(srv.grid)

        def corrupt(c: exchange_pb2.Chunk, **kw) -> exchange_pb2.Chunk:  # noqa: ANN003
            out = exchange_pb2.Chunk()
            out.CopyFrom(c)
            for k, v in kw.items():
                setattr(out, k, v)
            return out

        big, fat = os.urandom(2 << 20), os.urandom(80_000)
        bad_streams = {
            "a chunk failing its digest": [parts[1], corrupt(parts[2], data=b"x" * 30_000)],
            "an index out of range": [parts[1], corrupt(parts[2], index=9)],
            "a different total mid-upload": [parts[1], corrupt(parts[2], total=5)],
            "a different size mid-upload": [parts[1], corrupt(parts[2], blob_size=99_999)],
            "upper-case ids": [corrupt(parts[1], blob_id=parts[1].blob_id.upper())],
            "two blobs in one stream": [parts[1], next(chunks.split(b"other", 30_000, "client-1"))],
            "more bytes than declared": [corrupt(parts[1], data=fat, chunk_digest=chunks.digest(fat))],
            "a blob over the size limit": list(chunks.split(big, 500_000, "client-1"))[:1],
            "an empty stream": [],
            "chunks that assemble to the wrong blob": [corrupt(c, blob_id="ab" * 32) for c in parts],
        }
        for what, stream in bad_streams.items():
            code = code_of(lambda st=stream: s.exchange.Upload(iter(st), metadata=s.md, timeout=10))
            assert code == INVALID, f"{what}: {code}"
            assert snapshot(srv.grid) == before, what


def test_message_size_limits_hold_on_both_ends() -> None:
    with grpc_server(max_message_mb=1) as srv:
        s = register(stubs(srv.channel(max_mb=8)), "client-1")
        task = dispatch(srv.grid, messages_pb2.TASK_KIND_PROBE, ["client-1"])["client-1"]
        before = snapshot(srv.grid)
        huge = allocation_pb2.LearnabilityReport(client_id="client-1", task_id=task, round=1,
                                                 own_paths_blob="0" * 64)
        huge.stats.add(sample_id="x" * (2 << 20))
        with pytest.raises(grpc.RpcError) as e:
            s.alloc.ReportLearnability(huge, metadata=s.md, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert snapshot(srv.grid) == before
        # the client's own limit stops it before sending
        small = stubs(grpc.insecure_channel(srv.address, channel_options(1)))
        small.credential = s.credential
        with pytest.raises(grpc.RpcError) as e:
            small.alloc.ReportLearnability(huge, metadata=small.md, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert code_of(lambda: s.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(), metadata=s.md,
                                                 timeout=5)) == OK
    opts = dict(grpc_options(7))
    assert opts["grpc.max_receive_message_length"] == opts["grpc.max_send_message_length"] == 7 << 20
    assert opts["grpc.keepalive_time_ms"] <= 60_000 and opts["grpc.keepalive_permit_without_calls"] == 1
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] <= opts["grpc.keepalive_time_ms"]
    copts = dict(channel_options(7))
    assert copts["grpc.max_receive_message_length"] == 7 << 20 and copts["grpc.keepalive_time_ms"] == 30_000


def test_blob_store_is_bounded() -> None:
    b = BlobStore(max_blob=1000, max_bytes=2500)
    pinned = b.put(b"p" * 1000, pin=True)
    ids = [b.put(bytes([i]) * 1000) for i in range(3)]
    assert b.nbytes <= 2500 and b.get(pinned) is not None and b.get(ids[-1]) is not None
    assert b.get(ids[0]) is None  # least recently used goes first
    assert b.get(ids[-1], reader="client-9") is not None  # published blobs are readable by all
    own = b.add_chunks("client-1", chunks.split(b"mine" * 100, 100, "client-1"))
    assert own.complete and b.get(own.blob_id, "client-1") and b.get(own.blob_id, "client-2") is None


# ---------------------------------------------------------------------- liveness and deadlines
def _report_probe(s, task_id: str, n: int = 5) -> None:  # noqa: ANN001
    own = candidates(n)
    own.paths[0].text = "my own step 0 #### 0"  # the client's paths, not the server's candidate blob
    bid = s.exchange.Upload(chunks.split(own.SerializeToString(), 1 << 16, s.name), metadata=s.md,
                            timeout=10).blob_id
    rep = allocation_pb2.LearnabilityReport(client_id=s.name, task_id=task_id, round=1, own_paths_blob=bid,
                                            public_accuracy=0.5)
    for p in own.paths:
        rep.stats.add(sample_id=p.sample_id, nll=1.0, sender_len=5, own_len=6, answer_ce=0.5)
    s.alloc.ReportLearnability(rep, metadata=s.md, timeout=10)


def _pull(s, wait: float = 0.0) -> messages_pb2.Task:  # noqa: ANN001
    return s.coord.PullTask(coordinator_pb2.PullTaskRequest(client_id=s.name, wait_s=wait), metadata=s.md,
                            timeout=wait + 10)


def test_a_silent_client_is_dropped_before_the_deadline_and_can_rejoin() -> None:
    with grpc_server(timeout=30, heartbeat_s=0.2, liveness_s=1.0) as srv:
        a = register(stubs(srv.channel()), "client-1")
        b = register(stubs(srv.channel()), "client-2")
        assert srv.grid.wait_for_clients(2, 5) == ["client-1", "client-2"]
        t0 = time.time()
        th, box = in_thread(srv.grid.probe, 1, wire.paths_of(candidates()), (), ["client-1", "client-2"])
        task = _pull(a, 5)
        stop = threading.Event()
        threading.Thread(target=lambda: [a.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(), metadata=a.md,
                                                           timeout=5) for _ in iter(lambda: stop.wait(0.2), True)],
                         daemon=True).start()
        _report_probe(a, task.task_id)
        th.join(15)  # client-2 never heartbeats: gone after liveness_s, not after the 30 s deadline
        stop.set()
        assert set(box["value"]) == {"client-1"} and time.time() - t0 < 10
        assert "client-2" not in srv.grid.clients and srv.grid.live_clients() == ["client-1"]
        # client-2's late calls are refused until it enrols again; then it counts again
        err = code_of(lambda: _pull(b))
        assert err == grpc.StatusCode.NOT_FOUND
        register(b, "client-2")
        assert "client-2" in srv.grid.wait_for_clients(2, 5)


def test_an_unresponsive_live_client_is_dropped_at_the_round_deadline() -> None:
    with grpc_server(timeout=1.5, heartbeat_s=0.2, liveness_s=60) as srv:
        a = register(stubs(srv.channel()), "client-1")
        t0 = time.time()
        th, box = in_thread(srv.grid.train, 1, {"client-1": []})
        task = _pull(a, 5)
        assert task.kind == messages_pb2.TASK_KIND_TRAIN
        th.join(10)
        assert box["value"] == {} and 1.4 < time.time() - t0 < 5
        late = allocation_pb2.RewardReport(client_id="client-1", task_id=task.task_id, round=1)
        assert code_of(lambda: a.alloc.ReportReward(late, metadata=a.md, timeout=5)) == grpc.StatusCode.NOT_FOUND
        assert not srv.grid.rewards


def test_a_restarted_client_process_cancels_its_old_tasks_at_once() -> None:
    with grpc_server(timeout=30) as srv:
        a = register(stubs(srv.channel()), "client-1", instance="first")
        t0 = time.time()
        th, box = in_thread(srv.grid.probe, 1, wire.paths_of(candidates()), (), ["client-1"])
        assert _pull(a, 5).kind == messages_pb2.TASK_KIND_PROBE
        register(stubs(srv.channel()), "client-1", instance="second")  # the process died and came back
        th.join(10)
        assert box["value"] == {} and time.time() - t0 < 5
        assert srv.grid.clients["client-1"].instance == "second"  # the new process stays registered


def test_long_polls_are_capped_so_threads_remain_for_reports() -> None:
    with grpc_server(max_workers=20) as srv:
        srv.grid.max_waiters = 2
        ss = [register(stubs(srv.channel()), n) for n in ("client-1", "client-2", "client-3")]
        threads = [in_thread(_pull, s, 3.0) for s in ss[:2]]
        assert wait_until(lambda: srv.grid.waiters == 2)
        t0 = time.time()
        task = _pull(ss[2], 3.0)
        assert task.kind == messages_pb2.TASK_KIND_WAIT and task.retry_after_s > 0 and time.time() - t0 < 1.0
        for th, _ in threads:
            th.join(10)


def test_tls_flag_errors() -> None:
    with pytest.raises(ValueError, match="both"):
        server_credentials("cert.pem", None)
    with pytest.raises(ValueError, match="mutual TLS"):
        server_credentials(None, None, "ca.pem")
    with pytest.raises(ValueError, match="no such file"):
        server_credentials("/nonexistent.pem", "/nonexistent.key")
    with pytest.raises(ValueError, match="both"):
        channel_credentials(None, "cert.pem", None)
    assert server_credentials(None, None) is None and channel_credentials(None) is None
    assert channel_credentials(None, tls=True) is not None  # system roots


def test_the_server_grades_correctness_itself() -> None:
    """A client cannot claim its wrong paths are right (they would be taught to the LLM): the
    round grades what the servicer accepted against the labels it offered (``rounds.grade``,
    the one grading step of both transports, ``Federation.probe``)."""
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1")
        task = dispatch(srv.grid, messages_pb2.TASK_KIND_PROBE, ["client-1"])["client-1"]
        own = candidates(5)  # "step i #### i": right for every sample ...
        own.paths[1].text = "step 1 #### 7"  # ... but this one
        for p in own.paths:
            p.correct = True  # the client claims all are right
        bid = s.exchange.Upload(chunks.split(own.SerializeToString(), 1 << 16, s.name), metadata=s.md,
                                timeout=10).blob_id
        rep = allocation_pb2.LearnabilityReport(client_id=s.name, task_id=task, round=1, own_paths_blob=bid)
        for p in own.paths:
            rep.stats.add(sample_id=p.sample_id, nll=1.0, own_correct=True, sender_correct=True)
        assert s.alloc.ReportLearnability(rep, metadata=s.md, timeout=10).ok
        got = grade(srv.grid.probes[(1, "client-1")], wire.paths_of(candidates(5)))
        assert [p.correct for p in got.own_paths] == [True, False, True, True, True]
        assert [x.own_correct for x in got.stats] == [True, False, True, True, True]
        assert [x.sender_correct for x in got.stats] == [p.correct for p in candidates(5).paths]


def test_knowing_a_blob_id_is_not_access_to_it() -> None:
    """Dedup across clients needs the bytes: an id alone (or one forged chunk) grants nothing."""
    blob = os.urandom(50_000)
    bid = chunks.id_of(blob, 10_000)  # the id names the layout: the same bytes cut at 10 kB
    with grpc_server(chunk_size=10_000) as srv:
        a = register(stubs(srv.channel()), "client-1")
        b = register(stubs(srv.channel()), "client-2")
        a.exchange.Upload(chunks.split(blob, 10_000, "client-1"), metadata=a.md, timeout=10)
        assert not b.exchange.QueryUpload(exchange_pb2.UploadQuery(blob_id=bid), metadata=b.md, timeout=5).present
        fake = b"not the content"
        forged = exchange_pb2.Chunk(blob_id=bid, index=0, total=4, data=fake, chunk_digest=chunks.digest(fake),
                                    blob_size=len(blob))
        rep = b.exchange.Upload(iter([forged]), metadata=b.md, timeout=10)
        assert not rep.complete and not rep.already_present
        assert code_of(lambda: list(b.exchange.Download(exchange_pb2.DownloadRequest(blob_id=bid), metadata=b.md,
                                                        timeout=5))) == grpc.StatusCode.NOT_FOUND
        # client-2 really has the same bytes: it sends them, they are verified, and stored once
        n = srv.grid.blobs.nbytes
        rep = b.exchange.Upload(chunks.split(blob, 10_000, "client-2"), metadata=b.md, timeout=10)
        assert rep.complete and rep.blob_id == bid
        assert srv.grid.blobs.nbytes == n and len(srv.grid.blobs.blobs) == 1  # verified, not stored again
        assert b"".join(c.data for c in b.exchange.Download(exchange_pb2.DownloadRequest(blob_id=bid),
                                                            metadata=b.md, timeout=5)) == blob
