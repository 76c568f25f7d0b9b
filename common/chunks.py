"""Content-addressed chunking of blobs (path batches, adapters).

A blob's id is the sha256 of its bytes and each chunk carries its own sha256,
so a receiver verifies every piece and a retried chunk or upload is
idempotent: storing it again is a no-op. Chunks may arrive in any order and
any subset at a time, which is what lets an interrupted upload resume with
only the chunks the receiver does not hold yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

from .proto.lada.v1 import exchange_pb2

DEFAULT_CHUNK = 256 * 1024
MAX_CHUNKS = 1 << 16  # a blob in more pieces than this is refused (bounds per-blob bookkeeping)
CHUNK_OVERHEAD = 512  # bytes of a Chunk message besides its data, with room (two sha256 ids, a 200-char client id)
_HEX = frozenset("0123456789abcdef")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(s: str) -> bool:
    """64 lower-case hex characters (the form :func:`sha256` writes)."""
    return len(s) == 64 and set(s) <= _HEX


def n_chunks(size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    return max(1, -(-size // chunk_size))


def message_size(chunk_size: int) -> int:
    """The most bytes one Chunk message of ``chunk_size`` data takes on the wire (to fit a message limit)."""
    return chunk_size + CHUNK_OVERHEAD


def split(data: bytes, chunk_size: int = DEFAULT_CHUNK, client_id: str = "", start: int = 0,
          indices: Sequence[int] | None = None) -> Iterator[exchange_pb2.Chunk]:
    """The chunks of ``data`` from index ``start`` on, or only those in ``indices``."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    blob_id = sha256(data)
    total = n_chunks(len(data), chunk_size)
    for i in (range(start, total) if indices is None else indices):
        if not 0 <= i < total:
            raise ValueError(f"chunk index {i} out of range for {total} chunks")
        piece = data[i * chunk_size : (i + 1) * chunk_size]
        yield exchange_pb2.Chunk(blob_sha256=blob_id, index=i, total=total, data=piece,
                                 chunk_sha256=sha256(piece), blob_size=len(data), client_id=client_id)


class ChunkError(ValueError):
    pass


def check_chunk(c: exchange_pb2.Chunk, max_blob: int) -> None:
    """Self-consistency of one chunk: ids, index range, size limits, its own sha256."""
    if not is_sha256(c.blob_sha256) or not is_sha256(c.chunk_sha256):
        raise ChunkError("blob_sha256 and chunk_sha256 must be 64 lower-case hex characters")
    if c.blob_size < 0 or c.blob_size > max_blob:
        raise ChunkError(f"blob_size {c.blob_size} is outside [0, {max_blob}] bytes")
    if c.total < 1 or c.total > MAX_CHUNKS or c.total > max(1, c.blob_size):
        raise ChunkError(f"total {c.total} chunks is impossible for a blob of {c.blob_size} bytes")
    if not 0 <= c.index < c.total:
        raise ChunkError(f"chunk index {c.index} out of range for total {c.total}")
    if len(c.data) > c.blob_size or (c.blob_size > 0 and not c.data):
        raise ChunkError(f"chunk {c.index} has {len(c.data)} bytes, blob has {c.blob_size}")
    if sha256(c.data) != c.chunk_sha256:
        raise ChunkError(f"chunk {c.index} of {c.blob_sha256[:12]} fails its sha256 check")


def join(chunks: Iterable[exchange_pb2.Chunk], max_blob: int | None = None) -> bytes:
    """Reassemble and verify a blob (chunks in any order, duplicates ignored)."""
    parts: dict[int, bytes] = {}
    blob_id, total, size = "", 0, -1
    for c in chunks:
        if sha256(c.data) != c.chunk_sha256:
            raise ChunkError(f"chunk {c.index} fails its sha256 check")
        if blob_id and (c.blob_sha256, c.total, c.blob_size) != (blob_id, total, size):
            raise ChunkError("chunks of different blobs mixed in one transfer")
        blob_id, total, size = c.blob_sha256, c.total, c.blob_size
        if max_blob is not None and size > max_blob:
            raise ChunkError(f"blob of {size} bytes exceeds the limit of {max_blob}")
        if not 0 <= c.index < total:
            raise ChunkError(f"chunk index {c.index} out of range for total {total}")
        parts.setdefault(c.index, c.data)
    if total == 0 or len(parts) != total:
        raise ChunkError(f"incomplete blob: {len(parts)} of {total} chunks")
    data = b"".join(parts[i] for i in range(total))
    if len(data) != size or sha256(data) != blob_id:
        raise ChunkError("blob fails its sha256 check")
    return data
