"""The hand-written Chunk codec is the protobuf one, byte for byte, the in-order receiver refuses
what a download must not accept, and a blob id (a hash list over the chunks' digests) pins the bytes
(issue 17: chunks are encoded and parsed without the three copies the generated class makes, so both
must stay exactly the generated class's wire format; each byte is hashed once per side)."""

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
    ref = exchange_pb2.Chunk(blob_id=bid, index=index, total=total, data=data, chunk_digest=cid,
                             blob_size=size, client_id=client)
    enc = chunks.encode_chunk(bid, index, total, data, cid, size, client)
    assert enc == ref.SerializeToString()
    v = chunks.parse_chunk(enc)
    assert (v.blob_id, v.index, v.total, bytes(v.data), v.chunk_digest, v.blob_size, v.client_id) == (
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
    assert (v.blob_id, v.index, v.total, bytes(v.data), v.chunk_digest, v.blob_size, v.client_id) == (
        ref.blob_id, ref.index, ref.total, ref.data, ref.chunk_digest, ref.blob_size, ref.client_id)


def test_parse_shares_the_data_and_protobuf_reads_what_encode_wrote_from_a_view() -> None:
    blob = os.urandom(3000)
    lay = chunks.Layout.of(blob, 1024)
    enc = list(lay.encoded(memoryview(blob), "client-1", start=1))
    assert [exchange_pb2.Chunk.FromString(e).index for e in enc] == [1, 2]
    v = chunks.parse_chunk(enc[0])
    assert isinstance(v.data, memoryview) and v.data.obj is enc[0]  # a view into the message, not a copy
    assert bytes(v.data) == blob[1024:2048] and v.chunk_digest == chunks.digest(blob[1024:2048])
    assert lay.blob_id == chunks.blob_id(lay.chunk_ids, 3000, 1024) and lay.total == 3


def _reference_id(data: bytes, cs: int, v: int = 3) -> str:
    """The v3 id (BLAKE3 hash list) or the v2 id (sha256 hash list) written out from its definition,
    independently of chunks.blob_id."""
    import hashlib

    from blake3 import blake3

    h = blake3 if v == 3 else hashlib.sha256
    parts = [data[i:i + cs] for i in range(0, len(data), cs)] or [b""]
    eff = len(data) if len(parts) == 1 else cs
    return h(f"lada-blob-v{v}\0".encode() + eff.to_bytes(8, "big") + len(data).to_bytes(8, "big")
             + b"".join(h(p).digest() for p in parts)).hexdigest()


def test_layouts_big_and_small_hash_the_same() -> None:
    data = os.urandom(chunks.PARALLEL_HASH + 5)  # two threads above PARALLEL_HASH, one below
    big, small = chunks.Layout.of(data, 1 << 20), chunks.Layout.of(data[:1000], 300)
    assert big.blob_id == _reference_id(data, 1 << 20) and big.chunk_ids[-1] == chunks.digest(data[-5:])
    assert big.chunk_ids == [chunks.digest(data[i:i + (1 << 20)]) for i in range(0, len(data), 1 << 20)]
    assert list(small.chunk_ids) == [chunks.digest(data[i:min(i + 300, 1000)]) for i in range(0, 1000, 300)]
    assert small.blob_id == _reference_id(data[:1000], 300)


def test_ids_pin_the_bytes_and_the_cut_and_are_not_v1_ids() -> None:
    data = os.urandom(5000)
    bid = chunks.id_of(data, 1000)
    assert bid == chunks.id_of(bytes(data), 1000) == _reference_id(data, 1000)  # same bytes, same id
    flipped = bytearray(data)
    flipped[4321] ^= 1
    assert chunks.id_of(bytes(flipped), 1000) != bid  # one bit elsewhere: another id
    assert chunks.id_of(data, 500) != bid  # another cut: another id (the id names its layout)
    assert chunks.id_of(data, 5000) == chunks.id_of(data, 1 << 20) != chunks.sha256(data)  # one chunk: no cs
    assert chunks.id_of(b"") == _reference_id(b"", 1) and chunks.n_chunks(0) == 1


def test_join_and_receiver_derive_the_id_from_the_chunk_hashes() -> None:
    data = os.urandom(5000)
    parts = list(chunks.split(data, 1000))
    assert chunks.join(parts[::-1]) == data
    # every chunk valid on its own, but they are another blob's (the same bytes cut elsewhere, or other
    # bytes) relabelled with this id: refused, by join as by the receiver
    other = os.urandom(5000)
    for alien in ([*chunks.split(other, 1000)], [*chunks.split(data, 1250)]):
        relabelled = [exchange_pb2.Chunk(blob_id=parts[0].blob_id, index=c.index, total=c.total, data=c.data,
                                         chunk_digest=c.chunk_digest, blob_size=c.blob_size) for c in alien]
        with pytest.raises(chunks.ChunkError, match="id check"):
            chunks.join(relabelled)
        rx = chunks.Receiver(parts[0].blob_id)
        for c in relabelled:
            rx.add(c)
        with pytest.raises(chunks.ChunkError, match="id check"):
            rx.result()
    # a v1 id (the sha256 of the bytes) is named as such, not silently taken
    v1 = [exchange_pb2.Chunk(blob_id=chunks.sha256(data), index=c.index, total=c.total, data=c.data,
                             chunk_digest=c.chunk_digest, blob_size=c.blob_size) for c in parts]
    with pytest.raises(chunks.ChunkError, match="v1 id"):
        chunks.join(v1)
    rx = chunks.Receiver(chunks.sha256(data))
    for c in v1:
        rx.add(c)
    with pytest.raises(chunks.ChunkError, match="v1 id"):
        rx.result()
    # so is a v2 id (the sha256 hash list of an older LaDa)
    v2 = [exchange_pb2.Chunk(blob_id=_reference_id(data, 1000, v=2), index=c.index, total=c.total, data=c.data,
                             chunk_digest=c.chunk_digest, blob_size=c.blob_size) for c in parts]
    with pytest.raises(chunks.ChunkError, match="v2 id"):
        chunks.join(v2)


def _views(data: bytes, size: int) -> list[chunks.ChunkView]:
    return [chunks.parse_chunk(e) for e in chunks.Layout.of(data, size).encoded(data)]


def test_receiver_assembles_in_order_and_resumes() -> None:
    data = os.urandom(10_000)
    parts = _views(data, 1500)
    rx = chunks.Receiver(chunks.id_of(data, 1500), max_blob=10_000)
    for c in parts[:4]:
        rx.add(c)
    assert rx.received == 4  # an interrupted stream resumes from here
    for c in parts[4:]:
        rx.add(c)
    out = rx.result()
    assert out == data and out.readonly
    (one,) = list(chunks.Layout.of(data, 1 << 20).encoded(data))
    rx = chunks.Receiver(chunks.id_of(data))
    rx.add(chunks.parse_chunk(one))
    assert rx.result() == data and rx.result().obj is one  # a one-chunk blob is the message itself: no copy


def test_receiver_refuses_what_a_download_must_not_accept() -> None:
    data = os.urandom(5000)
    bid = chunks.id_of(data, 1000)
    parts = _views(data, 1000)
    refused_at_add = {
        "out of order": [parts[1]],
        "another blob": _views(b"other bytes", 4)[:1],
        "too big a blob": [chunks.parse_chunk(chunks.encode_chunk(bid, 0, 5, b"x" * 1000, "a" * 64, 10 ** 9))],
        "layouts mixed": [parts[0], chunks.parse_chunk(chunks.encode_chunk(bid, 1, 6, parts[1].data,
                                                                           parts[1].chunk_digest, 5000))],
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
    flipped = bytearray(parts[1].data)
    flipped[7] ^= 0x40
    rx = chunks.Receiver(bid)  # a chunk with a flipped byte: refused on arrival, before it is stored
    rx.add(parts[0])
    with pytest.raises(chunks.ChunkError, match="chunk 1 .* fails its digest"):
        rx.add(chunks.parse_chunk(chunks.encode_chunk(bid, 1, 5, bytes(flipped), parts[1].chunk_digest, 5000)))
    assert rx.received == 1 and rx.filled == 1000
    with pytest.raises(chunks.ChunkError, match="breaks"):  # the cut changes midway: refused on arrival
        rx.add(chunks.parse_chunk(chunks.encode_chunk(bid, 1, 5, data[1000:2100], chunks.digest(data[1000:2100]),
                                                      5000)))
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
