"""Content-addressed chunking of blobs (path batches, adapters).

A blob's id is a hash list (``lada-blob-v3``): the BLAKE3-256 of a tag, the
blob's chunk size and length, and the digest (BLAKE3-256) of each of its chunks
in order (:func:`blob_id`). Each chunk carries its own digest, so a receiver
verifies every piece as it arrives and derives the id from the verified
digests: each byte is hashed once per side (the id of the bytes themselves was a
second pass). The id still pins the bytes (BLAKE3 is a cryptographic hash:
other bytes, or the same bytes cut differently, give another id), and a retried
chunk or upload is idempotent. Chunks may arrive in any order and any subset at
a time, which is what lets an interrupted upload resume with only the chunks the
receiver does not hold yet. The id depends on the chunk size (a blob of one
chunk: only on its bytes); every LaDa party cuts at ``server.chunk_kb``
(1 MiB), and a blob is always served in the layout its id names. Ids of the
older schemes (v1: the sha256 of the bytes; v2: the same hash list with sha256)
are refused with an error that says so. BLAKE3 replaced sha256 in v3 because
hashing is most of the exchange's CPU (``benchmarks/bench_exchange.py``).

Transfers are hot paths (a 256 MiB blob must move near raw gRPC speed), so a
sender computes a blob's chunk hashes and id once (:class:`Layout`) and sends
chunks it encodes itself (:func:`encode_chunk`: the protobuf ``Chunk`` wire
format, with the data copied once), and a receiver parses them without copying
the data (:func:`parse_chunk`); an upload is kept as the received chunks
themselves (:class:`Pieces`), a download lands in a buffer allocated once
(:func:`buffer`). The bytes on the wire are those of ``exchange_pb2.Chunk``:
peers using the generated classes interoperate.
"""

from __future__ import annotations

import hashlib
import mmap
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from .proto.lada.v1 import exchange_pb2

DEFAULT_CHUNK = 1024 * 1024  # the fastest in benchmarks/bench_exchange.py (docs/performance.md)
MAX_CHUNKS = 1 << 16  # a blob in more pieces than this is refused (bounds per-blob bookkeeping)
CHUNK_OVERHEAD = 512  # bytes of a Chunk message besides its data, with room (two 64-hex ids, a 200-char client id)
PARALLEL_HASH = 4 << 20  # from this size on a blob's chunk hashes are computed in two threads
PIPELINE_FROM = 16 << 20  # from this size on an upload starts before its id is known (Hashing)
ID_TAG = b"lada-blob-v3\0"  # domain separation: an id is never the digest of some chunk's bytes
_HEX = frozenset("0123456789abcdef")


class Pieces:
    """A blob held as the chunks it arrived in (views into the received messages, in order): storing
    an upload copies nothing, and a download of it sends the pieces as they are. The bytes are joined
    only when the whole is read (:meth:`tobytes`: a small own-paths batch)."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        self.parts = list(parts)
        self.size = sum(len(x) for x in self.parts)

    def __len__(self) -> int:
        return self.size

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


Buffer = bytes | bytearray | memoryview | mmap.mmap
Stored = Buffer | Pieces


def sha256(data: Buffer) -> str:
    """The plain sha256 of some bytes (a v1 blob id, a stored file's checksum); chunks use :func:`digest`."""
    return hashlib.sha256(data).hexdigest()


def digest(data: Buffer) -> str:
    """A chunk's digest: BLAKE3-256, hex. Every transferred byte is hashed once per side, so the hash is the
    exchange's main CPU cost: BLAKE3 is ~3.5x sha256 on one core here (2.7 against 0.76 GB/s, 1 MiB chunks)."""
    return blake3(data).hexdigest()


def is_hex_id(s: str) -> bool:
    """64 lower-case hex characters (the form :func:`digest` and :func:`sha256` write)."""
    return len(s) == 64 and set(s) <= _HEX


def n_chunks(size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    return max(1, -(-size // chunk_size))


def blob_id(chunk_ids: Sequence[str], size: int, chunk_size: int, hasher: Callable[[bytes], Any] | None = None,
            tag: bytes = ID_TAG) -> str:
    """The id of a blob of ``size`` bytes cut every ``chunk_size`` bytes whose chunks have the digests
    ``chunk_ids``: hashed from the digests (32 bytes a chunk), not the bytes again. A one-chunk blob's
    id does not depend on the chunk size it was cut at. ``hasher``/``tag``: an older scheme's (v2);
    the default is looked up at call time, so ``blake3`` is the module's own."""
    cs = size if len(chunk_ids) == 1 else chunk_size
    h = (hasher or blake3)(tag + cs.to_bytes(8, "big") + size.to_bytes(8, "big"))
    h.update(b"".join(bytes.fromhex(c) for c in chunk_ids))
    return h.hexdigest()


def _v2_id(data: Buffer, chunk_size: int) -> str:
    """The id ``data`` had under lada-blob-v2 (the same hash list with sha256), to name an old peer's id."""
    mv = memoryview(data).cast("B")
    digests = [sha256(mv[i * chunk_size:(i + 1) * chunk_size]) for i in range(n_chunks(len(mv), chunk_size))]
    return blob_id(digests, len(mv), chunk_size, hashlib.sha256, b"lada-blob-v2\0")


def id_of(data: Buffer, chunk_size: int = DEFAULT_CHUNK) -> str:
    """The id of ``data`` cut at ``chunk_size`` (hashes every byte once)."""
    return Layout.of(data, chunk_size).blob_id


def message_size(chunk_size: int) -> int:
    """The most bytes one Chunk message of ``chunk_size`` data takes on the wire (to fit a message limit)."""
    return chunk_size + CHUNK_OVERHEAD


def buffer(size: int) -> memoryview:
    """A writable zero-filled buffer of ``size`` bytes whose memory is only taken as it is written
    (an anonymous mmap): a receiver allocates a blob once, and a declared but unsent blob costs nothing."""
    if size == 0:
        return memoryview(bytearray())
    return memoryview(mmap.mmap(-1, size))


def chunk_hashes(data: Buffer, chunk_size: int) -> list[str]:
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    mv = memoryview(data).cast("B")
    return [digest(mv[i * chunk_size:(i + 1) * chunk_size]) for i in range(n_chunks(len(mv), chunk_size))]


def _piece(data: Stored, i: int, cs: int) -> Buffer:
    if isinstance(data, Pieces):
        return data.parts[i]
    return memoryview(data).cast("B")[i * cs:(i + 1) * cs]


@dataclass(frozen=True)
class Layout:
    """A blob cut into chunks: its id and every chunk's digest, each computed once (a sender before
    its first chunk, as every chunk names the id; a store when the blob is stored). A large blob's
    chunks are hashed in two threads (blake3 releases the GIL)."""

    blob_id: str
    size: int
    chunk_size: int
    chunk_ids: list[str]

    @property
    def total(self) -> int:
        return len(self.chunk_ids)

    @classmethod
    def of(cls, data: Buffer, chunk_size: int = DEFAULT_CHUNK) -> Layout:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        mv = memoryview(data).cast("B")
        n = n_chunks(len(mv), chunk_size)
        if len(mv) < PARALLEL_HASH or n < 2:
            ids = chunk_hashes(mv, chunk_size)
        else:
            half = (n // 2) * chunk_size
            out: dict[str, list[str]] = {}
            th = threading.Thread(target=lambda: out.update(ids=chunk_hashes(mv[half:], chunk_size)), daemon=True)
            th.start()
            first = chunk_hashes(mv[:half], chunk_size)
            th.join()
            ids = first + out["ids"]
        return cls.from_ids(ids, len(mv), chunk_size)

    @classmethod
    def from_ids(cls, chunk_ids: Sequence[str], size: int, chunk_size: int) -> Layout:
        """The layout of verified chunk hashes (an upload that landed): its id from the digests."""
        return cls(blob_id(chunk_ids, size, chunk_size), size, chunk_size, list(chunk_ids))

    def encoded(self, data: Stored, client_id: str = "", start: int = 0,
                indices: Sequence[int] | None = None) -> Iterator[bytes]:
        """The encoded Chunk messages of ``data`` (this layout's blob) from ``start`` on, or only ``indices``."""
        cs, total = self.chunk_size, self.total
        for i in (range(start, total) if indices is None else indices):
            if not 0 <= i < total:
                raise ValueError(f"chunk index {i} out of range for {total} chunks")
            yield encode_chunk(self.blob_id, i, total, _piece(data, i, cs), self.chunk_ids[i], self.size, client_id)


class Hashing:
    """A large blob's layout computed by a helper thread while its chunks are sent: chunk ``i`` goes
    out as soon as its own hash is known, without the blob's id (which needs every chunk's hash) until
    the id is known; the last chunk sent always names it (:meth:`encoded`). Sending then overlaps
    the sender's one pass over the bytes instead of waiting for it (a 256 MiB upload waited ~0.5 s)."""

    def __init__(self, data: Buffer, chunk_size: int = DEFAULT_CHUNK) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.mv, self.chunk_size = memoryview(data).cast("B"), chunk_size
        self.size, self.total = len(self.mv), n_chunks(len(self.mv), chunk_size)
        self.ids: list[str] = []
        self._layout: Layout | None = None
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="lada-hashing", daemon=True).start()

    def _run(self) -> None:
        try:
            cs = self.chunk_size
            for i in range(self.total):
                h = digest(self.mv[i * cs:(i + 1) * cs])
                with self._cond:
                    self.ids.append(h)
                    self._cond.notify_all()
            lay = Layout.from_ids(self.ids, self.size, cs)
            with self._cond:
                self._layout = lay
                self._cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - raised to the sender
            with self._cond:
                self._error = e
                self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool]) -> None:
        with self._cond:
            self._cond.wait_for(lambda: ready() or self._error is not None)
            if self._error is not None:
                raise self._error

    def chunk_id(self, i: int) -> str:
        self._wait(lambda: len(self.ids) > i)
        return self.ids[i]

    def layout(self) -> Layout:
        """The whole layout (waits for the last hash)."""
        self._wait(lambda: self._layout is not None)
        assert self._layout is not None
        return self._layout

    def encoded(self, client_id: str = "") -> Iterator[bytes]:
        """Every chunk in order, each as soon as it is hashed; named once the id is known, the last always."""
        cs, total = self.chunk_size, self.total
        for i in range(total):
            cid = self.chunk_id(i)
            lay = self.layout() if i == total - 1 else self._layout
            yield encode_chunk(lay.blob_id if lay else "", i, total, self.mv[i * cs:(i + 1) * cs], cid, self.size,
                               client_id)


def split(data: Buffer, chunk_size: int = DEFAULT_CHUNK, client_id: str = "", start: int = 0,
          indices: Sequence[int] | None = None) -> Iterator[exchange_pb2.Chunk]:
    """The chunks of ``data`` from index ``start`` on, or only those in ``indices`` (protobuf messages)."""
    lay = Layout.of(data, chunk_size)
    mv = memoryview(data).cast("B")
    for i in (range(start, lay.total) if indices is None else indices):
        if not 0 <= i < lay.total:
            raise ValueError(f"chunk index {i} out of range for {lay.total} chunks")
        yield exchange_pb2.Chunk(blob_id=lay.blob_id, index=i, total=lay.total,
                                 data=bytes(mv[i * chunk_size:(i + 1) * chunk_size]),
                                 chunk_digest=lay.chunk_ids[i], blob_size=lay.size, client_id=client_id)


# ---------------------------------------------------------------------- the Chunk wire format, by hand
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # protobuf writes negative int32/int64 as ten-byte two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(tag: int, b: bytes) -> bytes:
    return bytes([tag]) + _varint(len(b)) + b if b else b""


def _int_field(tag: int, v: int) -> bytes:
    return bytes([tag]) + _varint(v) if v else b""


def encode_chunk(blob_id: str, index: int, total: int, data: Buffer, chunk_digest: str, blob_size: int,
                 client_id: str = "") -> bytes:
    """The bytes ``exchange_pb2.Chunk(...).SerializeToString()`` writes, with ``data`` copied once
    (building the message would copy it three times: into the message, out of it, into the frame)."""
    head = (_len_field(0x0A, blob_id.encode()) + _int_field(0x10, index) + _int_field(0x18, total))
    n = len(data)
    mid = b"\x22" + _varint(n) if n else b""
    tail = (_len_field(0x2A, chunk_digest.encode()) + _int_field(0x30, blob_size)
            + _len_field(0x3A, client_id.encode()))
    return b"".join((head, mid, data, tail))


class ChunkView:
    """A parsed Chunk whose ``data`` is a view into the received message (no copy); reads like
    ``exchange_pb2.Chunk``, and ``ByteSize()`` is the size of the message as received."""

    __slots__ = ("blob_id", "index", "total", "data", "chunk_digest", "blob_size", "client_id", "_n")

    def __init__(self, n: int) -> None:
        self.blob_id = self.chunk_digest = self.client_id = ""
        self.index = self.total = self.blob_size = 0
        self.data: memoryview = memoryview(b"")
        self._n = n

    def ByteSize(self) -> int:  # noqa: N802 - the protobuf method's name
        return self._n


def _read_varint(mv: memoryview, pos: int) -> tuple[int, int]:
    out, shift = 0, 0
    while True:
        if pos >= len(mv) or shift > 63:
            raise ChunkError("malformed Chunk message: truncated or overlong varint")
        b = mv[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out & ((1 << 64) - 1), pos
        shift += 7


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


_STRINGS = {1: "blob_id", 5: "chunk_digest", 7: "client_id"}
_INTS = {2: ("index", 32), 3: ("total", 32), 6: ("blob_size", 64)}


def parse_chunk(raw: Buffer) -> ChunkView:
    """Parse the wire bytes of an ``exchange_pb2.Chunk`` as protobuf does (last value of a field wins,
    unknown fields and fields of another wire type skipped), with ``data`` a view into ``raw``."""
    mv = memoryview(raw).cast("B")
    c, pos, n = ChunkView(len(mv)), 0, len(mv)
    while pos < n:
        key, pos = _read_varint(mv, pos)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ChunkError("malformed Chunk message: field number 0")
        if wt == 0:
            v, pos = _read_varint(mv, pos)
            if field in _INTS:
                name, bits = _INTS[field]
                setattr(c, name, _signed(v, bits))
        elif wt == 2:
            ln, pos = _read_varint(mv, pos)
            if pos + ln > n:
                raise ChunkError("malformed Chunk message: a field runs past its end")
            piece, pos = mv[pos:pos + ln], pos + ln
            if field == 4:
                c.data = piece
            elif field in _STRINGS:
                try:
                    setattr(c, _STRINGS[field], str(piece, "utf-8"))
                except UnicodeDecodeError as e:
                    raise ChunkError(f"malformed Chunk message: field {field} is not UTF-8") from e
        elif wt in (1, 5):
            pos += 8 if wt == 1 else 4
            if pos > n:
                raise ChunkError("malformed Chunk message: truncated fixed-size field")
        else:
            raise ChunkError(f"malformed Chunk message: wire type {wt}")
    return c


# ---------------------------------------------------------------------- checks
class ChunkError(ValueError):
    pass


AnyChunk = exchange_pb2.Chunk | ChunkView


def check_header(c: AnyChunk, max_blob: int, unnamed: bool = False) -> None:
    """Self-consistency of one chunk's ids, index range and sizes (everything but its hash);
    ``unnamed``: an empty blob id is allowed (an upload names its blob in a later chunk)."""
    if not (is_hex_id(c.blob_id) or (unnamed and not c.blob_id)) or not is_hex_id(c.chunk_digest):
        raise ChunkError("blob_id and chunk_digest must be 64 lower-case hex characters")
    if c.blob_size < 0 or c.blob_size > max_blob:
        raise ChunkError(f"blob_size {c.blob_size} is outside [0, {max_blob}] bytes")
    if c.total < 1 or c.total > MAX_CHUNKS or c.total > max(1, c.blob_size):
        raise ChunkError(f"total {c.total} chunks is impossible for a blob of {c.blob_size} bytes")
    if not 0 <= c.index < c.total:
        raise ChunkError(f"chunk index {c.index} out of range for total {c.total}")
    if len(c.data) > c.blob_size or (c.blob_size > 0 and not len(c.data)):
        raise ChunkError(f"chunk {c.index} has {len(c.data)} bytes, blob has {c.blob_size}")


def check_chunk(c: AnyChunk, max_blob: int, unnamed: bool = False) -> None:
    """Self-consistency of one chunk: ids, index range, size limits, its own digest (the one pass over
    its bytes: the blob's id is derived from these hashes)."""
    check_header(c, max_blob, unnamed)
    if digest(c.data) != c.chunk_digest:
        raise ChunkError(f"chunk {c.index} of {c.blob_id[:12]} fails its digest check")


def uniform_size(index: int, n: int, total: int, size: int) -> int:
    """The chunk size a chunk ``index`` of ``n`` bytes implies for a blob of ``total`` chunks and
    ``size`` bytes cut uniformly (every chunk but the last as long, the last the rest); a length that
    fits no such cut is a ChunkError."""
    if total == 1:
        if n != size:
            raise ChunkError(f"a one-chunk blob of {size} bytes sent as {n} bytes")
        return max(1, size)
    if index < total - 1:
        cs = n
    else:
        rest = size - n
        if rest <= 0 or rest % (total - 1):
            raise ChunkError(f"last chunk of {n} bytes does not fit {total} chunks of a {size}-byte blob")
        cs = rest // (total - 1)
    if (total - 1) * cs >= size or total * cs < size:
        raise ChunkError(f"chunk {index} of {n} bytes does not fit {total} chunks of a {size}-byte blob")
    return cs


def id_error(claimed: str, got: str, data: Stored | None = None, chunk_size: int = DEFAULT_CHUNK) -> ChunkError:
    """The error for a blob whose chunks, each valid, derive another id than the one claimed; an id of
    an older scheme (v1: the sha256 of the bytes; v2: the sha256 hash list) is named as such. Only a
    refused blob pays the extra passes over ``data``."""
    if data is not None:
        whole = data.tobytes() if isinstance(data, Pieces) else data
        old = ("v1 id (the sha256 of its bytes)" if sha256(whole) == claimed else
               "v2 id (a sha256 hash list)" if _v2_id(whole, chunk_size) == claimed else "")
        if old:
            return ChunkError(f"blob {claimed[:12]} is named by a {old} of an older LaDa: ids are now "
                              "lada-blob-v3 BLAKE3 hash lists (common/chunks.py); upgrade the peer")
    return ChunkError(f"blob {claimed[:12]} fails its id check: its chunks hash to {got[:12]}")


def join(chunks: Iterable[AnyChunk], max_blob: int | None = None) -> bytes:
    """Reassemble and verify a blob (chunks in any order, duplicates ignored)."""
    parts: dict[int, AnyChunk] = {}
    bid, total, size = "", 0, -1
    for c in chunks:
        if digest(c.data) != c.chunk_digest:
            raise ChunkError(f"chunk {c.index} fails its digest check")
        if bid and (c.blob_id, c.total, c.blob_size) != (bid, total, size):
            raise ChunkError("chunks of different blobs mixed in one transfer")
        bid, total, size = c.blob_id, c.total, c.blob_size
        if max_blob is not None and size > max_blob:
            raise ChunkError(f"blob of {size} bytes exceeds the limit of {max_blob}")
        if not 0 <= c.index < total:
            raise ChunkError(f"chunk index {c.index} out of range for total {total}")
        parts.setdefault(c.index, c)
    if total == 0 or len(parts) != total:
        raise ChunkError(f"incomplete blob: {len(parts)} of {total} chunks")
    cs = uniform_size(0, len(parts[0].data), total, size)
    for i, c in parts.items():
        if uniform_size(i, len(c.data), total, size) != cs:
            raise ChunkError(f"chunk {i} of {len(c.data)} bytes breaks the blob's {cs}-byte chunks")
    got = blob_id([parts[i].chunk_digest for i in range(total)], size, cs)
    data = b"".join(parts[i].data for i in range(total))
    if got != bid:
        raise id_error(bid, got, data, cs)
    return data


class Receiver:
    """Assembles one blob from its chunks in order (a download, resumable from :attr:`received`) into
    a buffer allocated once (a one-chunk blob: the received chunk itself), hashing each byte once as
    it arrives (each chunk's digest, checked at once); :meth:`result` derives the id from the chunk
    hashes and checks it."""

    def __init__(self, blob_id: str, max_blob: int | None = None) -> None:
        self.blob_id, self.max_blob = blob_id, max_blob
        self.buf: memoryview | None = None
        self.total = self.size = self.received = self.filled = self.cs = 0
        self.ids: list[str] = []

    def add(self, c: AnyChunk) -> None:
        if c.blob_id != self.blob_id:
            raise ChunkError(f"a chunk of blob {c.blob_id[:12]} in the download of {self.blob_id[:12]}")
        if self.buf is None:
            if c.blob_size < 0 or (self.max_blob is not None and c.blob_size > self.max_blob):
                raise ChunkError(f"blob of {c.blob_size} bytes exceeds the limit of {self.max_blob}")
            if not 1 <= c.total <= max(1, c.blob_size) or c.total > MAX_CHUNKS:
                raise ChunkError(f"total {c.total} chunks is impossible for a blob of {c.blob_size} bytes")
            self.total, self.size = c.total, c.blob_size
        elif (c.total, c.blob_size) != (self.total, self.size):
            raise ChunkError("chunks of different layouts mixed in one transfer")
        if c.index != self.received:
            raise ChunkError(f"chunk {c.index} where chunk {self.received} was due (downloads come in order)")
        n = len(c.data)
        if self.filled + n > self.size or (n == 0 and self.size > 0):
            raise ChunkError(f"chunk {c.index} of {n} bytes does not fit the blob's {self.size} bytes")
        cs = uniform_size(c.index, n, self.total, self.size)
        if self.cs and cs != self.cs:
            raise ChunkError(f"chunk {c.index} of {n} bytes breaks the blob's {self.cs}-byte chunks")
        if digest(c.data) != c.chunk_digest:
            raise ChunkError(f"chunk {c.index} of {self.blob_id[:12]} fails its digest check")
        self.cs = cs
        if self.total == 1:  # the whole blob is this chunk: keep the view into the message, no copy
            self.buf = memoryview(c.data).cast("B")
        else:
            if self.buf is None:
                self.buf = buffer(self.size)
            self.buf[self.filled:self.filled + n] = c.data
        self.ids.append(c.chunk_digest)
        self.filled += n
        self.received += 1

    def result(self) -> memoryview:
        """The verified blob (read-only)."""
        if self.buf is None or self.received != self.total or self.filled != self.size:
            raise ChunkError(f"incomplete blob: {self.received} of {self.total} chunks")
        got = blob_id(self.ids, self.size, self.cs)
        if got != self.blob_id:
            raise id_error(self.blob_id, got, self.buf, self.cs)
        return self.buf.toreadonly()


_END = object()


def read_ahead(it: Iterable[Any], depth: int = 4, when: Callable[[Any], bool] | None = None) -> Iterator[Any]:
    """The items of ``it``, pulled by a helper thread up to ``depth`` ahead of the consumer.

    A gRPC stream hands over its next message only when asked, and flow control stops the
    sender while the receiver hashes and copies the last one: both sides then work in turn.
    Reading ahead keeps the stream moving while this thread works (hashing and the copies
    release the GIL). An exception of ``it`` is raised here at its place in the stream; when
    the consumer stops early (an error, or it is closed) the helper stops at its next item.
    ``when``: decide on the first item whether the rest is worth a thread (a one-chunk blob is not)."""
    import queue

    it = iter(it)
    if when is not None:
        try:
            first = next(it)
        except StopIteration:
            return
        yield first
        if not when(first):
            yield from it
            return

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def pump() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: tuple[Any, BaseException | None] = (_END, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, in order
            item = (_END, e)
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    th = threading.Thread(target=pump, name="lada-read-ahead", daemon=True)
    th.start()
    try:
        while True:
            x, err = q.get()
            if err is not None:
                raise err
            if x is _END:
                return
            yield x
    finally:
        stop.set()
