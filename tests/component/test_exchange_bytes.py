"""A round's recorded bytes are the bytes of the messages that crossed the wire (issue 17).

A real client (``client.runtime.run_client`` over a real gRPC server) does one
PROBE and one TRAIN; a client interceptor sums the protobuf size of every
message of the round's RPCs it sends and receives (the task handed out by a
poll, the candidate download, the own-paths upload, the reports and their
answers, the allocation). The server's per-round counters
(``GrpcGrid.take_bytes``, what ``Federation.record`` stores as bytes_up /
bytes_down) must equal those sums exactly: the own paths used to be counted a
second time in ReportLearnability (up by the blob's size too much).
Heartbeats, polls that come back empty and the upload's resume query
(QueryUpload) are control traffic, not the round's, and are left out on both
sides.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from lada.client.runtime import Connection, run_client
from lada.common.proto.lada.v1 import messages_pb2
from lada.common.rounds import AllocatedPair, ProbeResult, ReasoningPath, SampleReward, SampleStats, TrainResult
from lada.server.transport.blobs import QuotaError

from tests.support.transport import TOKEN, grpc_server, in_thread, wait_until

ROUND_RPCS = {"PullTask", "Download", "Upload", "ReportLearnability", "GetAllocation", "ReportReward"}
CHUNK = 16 * 1024


def _size(m: Any) -> int:
    return len(m) if isinstance(m, (bytes, bytearray, memoryview)) else m.ByteSize()


class WireCounter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor):
    """Sums the size of every request and response message of the round's RPCs, per direction."""

    def __init__(self) -> None:
        self.up = self.down = 0
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}

    def _add(self, up: int = 0, down: int = 0) -> None:
        with self.lock:
            self.up += up
            self.down += down

    @staticmethod
    def _rpc(details: grpc.ClientCallDetails) -> str:
        m = details.method
        return (m.decode() if isinstance(m, bytes) else m).rsplit("/", 1)[1]

    def intercept_unary_unary(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        out = continuation(details, request)
        rpc = self._rpc(details)
        if rpc in ROUND_RPCS and out.exception() is None:
            reply = out.result()
            if rpc != "PullTask" or reply.kind in (messages_pb2.TASK_KIND_PROBE, messages_pb2.TASK_KIND_TRAIN):
                self._add(_size(request), _size(reply))
                self.calls[rpc] = self.calls.get(rpc, 0) + 1
        return out

    def intercept_unary_stream(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        call = continuation(details, request)
        rpc = self._rpc(details)
        if rpc not in ROUND_RPCS:
            return call
        self._add(up=_size(request))
        self.calls[rpc] = self.calls.get(rpc, 0) + 1

        def counted() -> Iterator[Any]:
            for m in call:
                self._add(down=_size(m))
                yield m

        return counted()

    def intercept_stream_unary(self, continuation: Callable, details: grpc.ClientCallDetails,
                               request_iterator: Iterator[Any]) -> Any:
        rpc = self._rpc(details)

        def counted() -> Iterator[Any]:
            for m in request_iterator:
                self._add(up=_size(m))
                yield m

        out = continuation(details, counted() if rpc in ROUND_RPCS else request_iterator)
        if rpc in ROUND_RPCS and out.exception() is None:
            self._add(down=_size(out.result()))
            self.calls[rpc] = self.calls.get(rpc, 0) + 1
        return out


class App:
    """A model-free client whose own paths are large enough to take several chunks."""

    def probe(self, task: Any, cand: list[ReasoningPath]) -> ProbeResult:
        stats = [SampleStats(p.sample_id, nll=1.5, sender_len=9, own_len=7, own_correct=True,
                             sender_correct=p.correct, answer_ce=0.5) for p in cand]
        own = [ReasoningPath(p.sample_id, p.question, f"my step for {p.sample_id} " * 8 + "#### 1", p.answer, True)
               for p in cand]
        return ProbeResult(stats, own, 0.5, 0.25 if task.evaluate else None)

    def train(self, task: Any, samples: list[AllocatedPair]) -> TrainResult:
        return TrainResult([SampleReward(s.sample_id, 2.0, 1.5) for s in samples], test_accuracy=0.5, steps=1,
                           train_seconds=0.01)


def test_recorded_round_bytes_equal_the_messages_sent() -> None:
    cand = [ReasoningPath(f"s{i}", f"question {i}?", f"the server's step {i} " * 10 + f"#### {i}", str(i), i % 2 == 0)
            for i in range(300)]  # ~70 KB of candidates and ~65 KB of own paths: several 16 KiB chunks each way
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g, counter = srv.grid, WireCounter()
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", chunk_kb=CHUNK // 1024, call_timeout=30,
                          interceptors=[counter])
        th, box = in_thread(run_client, conn, App(), 0.3)
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.take_bytes()  # from here on: the round
        probes = g.probe(1, cand, ["client-1"], ["client-1"])
        assert probes["client-1"].test_accuracy == 0.25
        alloc = [AllocatedPair(p.sample_id, p.question, positive=p.text, negative="x #### 0", rank=i)
                 for i, p in enumerate(cand[:40])]
        trained = g.train(1, {"client-1": alloc})
        assert len(trained["client-1"].samples) == 40
        up, down = g.take_bytes()["client-1"]
        g.stop()
        th.join(15)
        assert not th.is_alive() and "error" not in box, box
    assert counter.calls == {"PullTask": 2, "Download": 1, "Upload": 1, "ReportLearnability": 1, "GetAllocation": 1,
                             "ReportReward": 1}
    own_blob = 300 * len("my step for s100 " * 8)
    assert down > 300 * len("the server's step 100 " * 10) and up > own_blob  # the transfers are in there
    assert (up, down) == (counter.up, counter.down), (
        f"recorded up {up} / down {down}, sent {counter.up} / received {counter.down}: "
        f"{up - counter.up:+d} / {down - counter.down:+d} bytes")


class _Counted:
    """blake3 that adds every byte it hashes to a shared count."""

    def __init__(self, count: list[int], lock: threading.Lock, data: Any = b"") -> None:
        from blake3 import blake3

        self.h, self.count, self.lock = blake3(), count, lock
        self.update(data)

    def update(self, data: Any) -> None:
        with self.lock:
            self.count[0] += memoryview(data).nbytes
        self.h.update(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def test_each_byte_is_hashed_once_per_pass(monkeypatch: Any) -> None:
    """Each byte is hashed once per side: a stored blob's chunk hashes (and the id derived from their
    digests) once, at put, not per download; a download once (the receiver's check of each chunk); an
    upload twice in all (the sender's chunk hashes, the receiver's check of each). Beyond that only the
    ids, hashed from 32 bytes a chunk. It was about 5x each way, then 4x an upload."""
    import os

    from lada.common import chunks

    count, lock = [0], threading.Lock()
    monkeypatch.setattr(chunks, "blake3", lambda data=b"": _Counted(count, lock, data))

    def hashed() -> int:
        n, count[0] = count[0], 0
        return n

    def ids(size: int) -> int:  # the bytes hashed to derive one id from the chunks' digests
        return len(chunks.ID_TAG) + 16 + 32 * chunks.n_chunks(size, CHUNK)

    blob, mine = os.urandom(1 << 20), os.urandom((1 << 20) + 123)
    mine_id = chunks.id_of(mine, CHUNK)
    with grpc_server(chunk_size=CHUNK, max_message_mb=1) as srv:
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", chunk_kb=CHUNK // 1024, call_timeout=30)
        conn.register()
        hashed()
        bid = srv.grid.blobs.put(blob, reader="client-1")
        assert hashed() == len(blob) + ids(len(blob))  # its chunks' hashes, once, and the id from them
        for _ in range(2):
            assert conn.download(bid) == blob
            assert hashed() == len(blob) + ids(len(blob))  # the client's check only: the server hashes nothing
        assert conn.upload(mine) == mine_id
        assert hashed() == 2 * (len(mine) + ids(len(mine)))  # once on each side
        assert srv.grid.blobs.get(mine_id, "client-1") == mine


def test_an_upload_lands_only_under_the_id_of_its_own_bytes() -> None:
    """Over real gRPC: a chunk with a flipped byte is refused on arrival (nothing stored); chunks that
    are each valid but another blob's (other bytes, or the same bytes cut elsewhere) cannot land
    under a given id, which then still takes its true bytes; a v1 id (sha256 of the bytes) is named."""
    import os

    from lada.common import chunks
    from lada.common.proto.lada.v1 import exchange_pb2

    from tests.support.transport import code_of, register, snapshot, stubs

    def relabel(cs: list[exchange_pb2.Chunk], bid: str) -> list[exchange_pb2.Chunk]:
        return [exchange_pb2.Chunk(blob_id=bid, index=c.index, total=c.total, data=c.data,
                                   chunk_digest=c.chunk_digest, blob_size=c.blob_size) for c in cs]

    blob = os.urandom(5 * CHUNK)
    parts = list(chunks.split(blob, CHUNK, "client-1"))
    bid = parts[0].blob_id
    with grpc_server(chunk_size=CHUNK) as srv:
        s = register(stubs(srv.channel()), "client-1")
        before = snapshot(srv.grid)
        flipped = bytearray(parts[2].data)
        flipped[100] ^= 1
        bad = exchange_pb2.Chunk()
        bad.CopyFrom(parts[2])
        bad.data = bytes(flipped)
        with pytest.raises(grpc.RpcError) as e:
            s.exchange.Upload(iter([parts[0], parts[1], bad]), metadata=s.md, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "digest check" in e.value.details()
        assert snapshot(srv.grid) == before  # the stream's valid chunks are rolled back too
        aliens = {"other bytes": relabel(list(chunks.split(os.urandom(5 * CHUNK), CHUNK)), bid),
                  "the same bytes cut elsewhere": relabel(list(chunks.split(blob, 2 * CHUNK)), bid)}
        for what, alien in aliens.items():
            for c in alien:
                chunks.check_chunk(c, 1 << 20)  # each one valid on its own
            with pytest.raises(grpc.RpcError) as e:
                s.exchange.Upload(iter(alien), metadata=s.md, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "id check" in e.value.details(), what
            assert srv.grid.blobs.get(bid) is None and not srv.grid.blobs.partial, what
        with pytest.raises(grpc.RpcError) as e:
            s.exchange.Upload(iter(relabel(parts, chunks.sha256(blob))), metadata=s.md, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "v1 id" in e.value.details()
        rep = s.exchange.Upload(iter(parts), metadata=s.md, timeout=10)  # the true bytes still land
        assert rep.complete and rep.blob_id == bid and srv.grid.blobs.get(bid) == blob
        got = list(s.exchange.Download(exchange_pb2.DownloadRequest(blob_id=bid), metadata=s.md, timeout=10))
        assert b"".join(c.data for c in got) == blob and chunks.join(got) == blob
        assert code_of(lambda: s.exchange.QueryUpload(exchange_pb2.UploadQuery(blob_id="A" * 64),
                                                      metadata=s.md, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT


def test_delta_round_bytes_equal_the_messages_sent() -> None:
    """Round 2 with a few paths changed: the client downloads the delta, not the batch, and the
    allocation names the candidates it holds by id; the counts still equal what crossed the wire."""
    cand = [ReasoningPath(f"s{i}", f"question {i}?", f"the server's step {i} " * 10 + f"#### {i}", str(i), i % 2 == 0)
            for i in range(300)]
    cand2 = [ReasoningPath(p.sample_id, p.question, p.text.replace("server's", "LLM's") if i % 25 == 0 else p.text,
                           p.answer, p.correct) for i, p in enumerate(cand)]
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g, counter = srv.grid, WireCounter()
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", chunk_kb=CHUNK // 1024, call_timeout=30,
                          interceptors=[counter])
        th, box = in_thread(run_client, conn, App(), 0.3)
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.probe(1, cand, ["client-1"], ["client-1"])
        assert wait_until(lambda: counter.calls.get("ReportLearnability") == 1)  # its answer is in round 1
        g.take_bytes()
        counter.up = counter.down = 0
        counter.calls = {}
        g.probe(2, cand2, [], ["client-1"])
        alloc = [AllocatedPair(p.sample_id, p.question, positive=p.text, negative="x #### 0", rank=i)
                 for i, p in enumerate(cand2[:40])]
        g.train(2, {"client-1": alloc})
        up, down = g.take_bytes()["client-1"]
        g.stop()
        th.join(15)
        assert not th.is_alive() and "error" not in box, box
    assert counter.calls["Download"] == 1
    assert down < 300 * len("the server's step 100 " * 10) / 5  # a delta and ids: a fraction of the batch
    assert (up, down) == (counter.up, counter.down), (
        f"recorded up {up} / down {down}, sent {counter.up} / received {counter.down}: "
        f"{up - counter.up:+d} / {down - counter.down:+d} bytes")


def test_a_large_upload_starts_before_its_id_is_known() -> None:
    """``chunks.Hashing`` sends each chunk once it is hashed, the blob id left empty until it is known
    (the last chunk always names it); the store holds such chunks for the stream, counted against its
    quota, and lands them under the id the stream names, checked as any upload; a stream that never
    names its blob, or is cut off first, keeps nothing, and unnamed chunks cannot land under another id."""
    import os

    from lada.common import chunks
    from lada.common.proto.lada.v1 import exchange_pb2
    from lada.server.transport.blobs import BlobStore

    blob = os.urandom(10 * CHUNK + 5)
    lay = chunks.Layout.of(blob, CHUNK)
    h = chunks.Hashing(blob, CHUNK)
    sent = [chunks.parse_chunk(m) for m in h.encoded("client-1")]
    assert h.layout() == lay and [c.chunk_digest for c in sent] == lay.chunk_ids
    assert sent[-1].blob_id == lay.blob_id and {c.blob_id for c in sent} <= {"", lay.blob_id}
    assert b"".join(c.data for c in sent) == blob

    def unnamed(cs: list[exchange_pb2.Chunk], k: int) -> list[exchange_pb2.Chunk]:
        """The first k of ``cs`` with their blob id left empty."""
        out = [exchange_pb2.Chunk.FromString(c.SerializeToString()) for c in cs]
        for c in out[:k]:
            c.blob_id = ""
        return out

    parts = list(chunks.split(blob, CHUNK, "client-1"))
    store = BlobStore(max_blob=1 << 20, chunk_size=CHUNK)
    with pytest.raises(chunks.ChunkError, match="never names"):
        store.add_chunks("client-1", unnamed(parts, len(parts)))
    assert store.nbytes == 0 and not store.partial

    def cut_off() -> Iterator[exchange_pb2.Chunk]:
        yield from unnamed(parts, 4)[:3]
        raise ConnectionError("stream lost")

    with pytest.raises(ConnectionError):
        store.add_chunks("client-1", cut_off())
    assert store.nbytes == 0 and not store.partial
    other = list(chunks.split(os.urandom(len(blob)), CHUNK, "client-1"))
    forged = unnamed(other, len(other) - 1)
    forged[-1].blob_id = lay.blob_id  # valid chunks of other bytes, then one naming this blob
    with pytest.raises(chunks.ChunkError, match="id check"):
        store.add_chunks("client-1", forged)
    assert store.nbytes == 0 and not store.partial and store.get(lay.blob_id) is None
    r = store.add_chunks("client-1", unnamed(parts, 6))
    assert r.complete and r.blob_id == lay.blob_id and store.get(lay.blob_id) == blob and store.nbytes == len(blob)
    small = BlobStore(max_blob=1 << 20, max_bytes=4 * CHUNK, chunk_size=CHUNK)
    with pytest.raises(QuotaError):
        small.add_chunks("client-1", unnamed(parts, len(parts) - 1))  # held chunks count against the quota
    assert small.nbytes == 0


def test_the_client_sends_a_large_blob_while_hashing_it(monkeypatch: Any) -> None:
    """Over real gRPC, with the pipelining threshold lowered to this test's sizes: the upload lands
    under its id, hashing each byte once per side, and a second upload of it stores nothing again."""
    import os

    from lada.common import chunks

    count, lock = [0], threading.Lock()
    monkeypatch.setattr(chunks, "blake3", lambda data=b"": _Counted(count, lock, data))
    monkeypatch.setattr(chunks, "PIPELINE_FROM", 4 * CHUNK)
    blob = os.urandom(40 * CHUNK + 7)
    bid = chunks.id_of(blob, CHUNK)
    with grpc_server(chunk_size=CHUNK, max_message_mb=1) as srv:
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", chunk_kb=CHUNK // 1024, call_timeout=30)
        conn.register()
        count[0] = 0
        assert conn.upload(blob) == bid and srv.grid.blobs.get(bid, "client-1") == blob
        per_side = len(blob) + len(chunks.ID_TAG) + 16 + 32 * chunks.n_chunks(len(blob), CHUNK)
        assert count[0] == 2 * per_side
        n = srv.grid.blobs.nbytes
        assert conn.upload(blob) == bid and srv.grid.blobs.nbytes == n and not srv.grid.blobs.partial
