"""The hand-written Chunk codec is the protobuf one, byte for byte, and the in-order receiver refuses
what a download must not accept (issue 17: chunks are encoded and parsed without the three copies
the generated class makes, so both must stay exactly the generated class's wire format)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lada.common import chunks
from lada.common.proto.lada.v1 import exchange_pb2

INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
TEXT = st.text(max_size=80)


@settings(max_examples=200, deadline=None)
@given(bid=TEXT, index=INT32, total=INT32, data=st.binary(max_size=600), cid=TEXT, size=INT64, client=TEXT)
def test_encode_is_protobufs_serialization_and_parse_reads_it_back(bid: str, index: int, total: int, data: bytes,
                                                                   cid: str, size: int, client: str) -> None:
    ref = exchange_pb2.Chunk(blob_sha256=bid, index=index, total=total, data=data, chunk_sha256=cid,
                             blob_size=size, client_id=client)
    enc = chunks.encode_chunk(bid, index, total, data, cid, size, client)
    assert enc == ref.SerializeToString()
    v = chunks.parse_chunk(enc)
    assert (v.blob_sha256, v.index, v.total, bytes(v.data), v.chunk_sha256, v.blob_size, v.client_id) == (
        bid, index, total, data, cid, size, client)
    assert v.ByteSize() == ref.ByteSize() == len(enc)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300))
def test_parse_agrees_with_protobuf_on_any_bytes(raw: bytes) -> None:
    """Whatever protobuf accepts (unknown fields, repeated fields, wrong wire types) parses to the same
    values; whatever it refuses is a ChunkError, never another exception."""
    try:
        ref = exchange_pb2.Chunk.FromString(raw)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError
        ref = None
    try:
        v = chunks.parse_chunk(raw)
    except chunks.ChunkError:
        assert ref is None, f"protobuf parsed {raw!r}, parse_chunk refused it"
        return
    if ref is None:  # protobuf is stricter in places we need not be (e.g. end-group tags): values are moot
        return
    assert (v.blob_sha256, v.index, v.total, bytes(v.data), v.chunk_sha256, v.blob_size, v.client_id) == (
        ref.blob_sha256, ref.index, ref.total, ref.data, ref.chunk_sha256, ref.blob_size, ref.client_id)


def test_parse_shares_the_data_and_protobuf_reads_what_encode_wrote_from_a_view() -> None:
    blob = os.urandom(3000)
    lay = chunks.Layout.of(blob, 1024)
    enc = list(lay.encoded(memoryview(blob), "client-1", start=1))
    assert [exchange_pb2.Chunk.FromString(e).index for e in enc] == [1, 2]
    v = chunks.parse_chunk(enc[0])
    assert isinstance(v.data, memoryview) and v.data.obj is enc[0]  # a view into the message, not a copy
    assert bytes(v.data) == blob[1024:2048] and v.chunk_sha256 == chunks.sha256(blob[1024:2048])
    assert lay.blob_id == chunks.sha256(blob) and lay.total == 3


def test_layouts_big_and_small_hash_the_same() -> None:
    data = os.urandom(chunks.PARALLEL_HASH + 5)  # two threads above PARALLEL_HASH, one below
    big, small = chunks.Layout.of(data, 1 << 20), chunks.Layout.of(data[:1000], 300)
    assert big.blob_id == chunks.sha256(data) and big.chunk_ids[-1] == chunks.sha256(data[-5:])
    assert list(small.chunk_ids) == [chunks.sha256(data[i:min(i + 300, 1000)]) for i in range(0, 1000, 300)]


def _views(data: bytes, size: int) -> list[chunks.ChunkView]:
    return [chunks.parse_chunk(e) for e in chunks.Layout.of(data, size).encoded(data)]


def test_receiver_assembles_in_order_and_resumes() -> None:
    data = os.urandom(10_000)
    parts = _views(data, 1500)
    rx = chunks.Receiver(chunks.sha256(data), max_blob=10_000)
    for c in parts[:4]:
        rx.add(c)
    assert rx.received == 4  # an interrupted stream resumes from here
    for c in parts[4:]:
        rx.add(c)
    out = rx.result()
    assert out == data and out.readonly


def test_receiver_refuses_what_a_download_must_not_accept() -> None:
    data = os.urandom(5000)
    bid = chunks.sha256(data)
    parts = _views(data, 1000)
    refused_at_add = {
        "out of order": [parts[1]],
        "another blob": _views(b"other bytes", 4)[:1],
        "too big a blob": [chunks.parse_chunk(chunks.encode_chunk(bid, 0, 5, b"x" * 1000, "a" * 64, 10 ** 9))],
        "layouts mixed": [parts[0], chunks.parse_chunk(chunks.encode_chunk(bid, 1, 6, parts[1].data,
                                                                           parts[1].chunk_sha256, 5000))],
        "more bytes than the blob": [parts[0], parts[1], parts[2], parts[3],
                                     chunks.parse_chunk(chunks.encode_chunk(bid, 4, 5, b"y" * 1001, "a" * 64, 5000))],
    }
    for why, seq in refused_at_add.items():
        rx = chunks.Receiver(bid, max_blob=100_000)
        for c in seq[:-1]:
            rx.add(c)
        with pytest.raises(chunks.ChunkError):
            rx.add(seq[-1])
            pytest.fail(f"{why}: accepted")
    rx = chunks.Receiver(bid)  # a changed chunk fits: the id check at the end refuses the blob
    for c in [parts[0], chunks.parse_chunk(chunks.encode_chunk(bid, 1, 5, b"x" * 1000, parts[1].chunk_sha256, 5000)),
              *parts[2:]]:
        rx.add(c)
    with pytest.raises(chunks.ChunkError, match="sha256"):
        rx.result()
    rx = chunks.Receiver(bid)
    for c in parts[:-1]:
        rx.add(c)
    with pytest.raises(chunks.ChunkError, match="incomplete"):
        rx.result()


def test_malformed_messages_are_chunk_errors() -> None:
    for raw in (b"\x0a\x05ab", b"\x10\xff\xff", b"\x0f", b"\x00\x01", b"\x0a\x02\xff\xfe"):
        with pytest.raises(chunks.ChunkError):
            chunks.parse_chunk(raw)


def test_read_ahead_keeps_order_raises_in_place_and_stops_with_its_consumer() -> None:
    import threading
    import time

    assert list(chunks.read_ahead(iter(range(50)), depth=3)) == list(range(50))
    assert list(chunks.read_ahead(iter([7]), when=lambda x: False)) == [7]

    def failing():  # noqa: ANN202
        yield 1
        yield 2
        raise chunks.ChunkError("broken stream")

    got = []
    with pytest.raises(chunks.ChunkError, match="broken stream"):
        for x in chunks.read_ahead(failing(), depth=1):
            got.append(x)
    assert got == [1, 2]  # everything before the error, then the error itself
    pulled = []

    def endless():  # noqa: ANN202
        i = 0
        while True:
            pulled.append(i)
            yield i
            i += 1

    it = chunks.read_ahead(endless(), depth=2)
    assert next(it) == 0
    ahead = threading.Event()
    ahead.wait(0.2)  # the helper pulls ahead, but only depth items past what was taken
    assert 2 <= len(pulled) <= 4
    it.close()
    time.sleep(0.4)
    assert not [t for t in threading.enumerate() if t.name == "lada-read-ahead"]  # it stopped with its consumer
