"""Content-addressed chunking of blobs (path batches, adapters).

A blob's id is the sha256 of its bytes and each chunk carries its own sha256,
so a receiver verifies every piece and a retried chunk or upload is
idempotent: storing it again is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from .proto.lada.v1 import exchange_pb2

DEFAULT_CHUNK = 256 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(data: bytes, chunk_size: int = DEFAULT_CHUNK, client_id: str = "", start: int = 0
          ) -> Iterator[exchange_pb2.Chunk]:
    blob_id = sha256(data)
    total = max(1, -(-len(data) // chunk_size))
    for i in range(start, total):
        piece = data[i * chunk_size : (i + 1) * chunk_size]
        yield exchange_pb2.Chunk(blob_sha256=blob_id, index=i, total=total, data=piece,
                                 chunk_sha256=sha256(piece), blob_size=len(data), client_id=client_id)


class ChunkError(ValueError):
    pass


def check_chunk(c: exchange_pb2.Chunk, max_blob: int) -> None:
    if len(c.blob_sha256) != 64 or len(c.chunk_sha256) != 64:
        raise ChunkError("blob_sha256 and chunk_sha256 must be 64 hex characters")
    if c.total < 1 or not 0 <= c.index < c.total:
        raise ChunkError(f"chunk index {c.index} out of range for total {c.total}")
    if c.blob_size < 0 or c.blob_size > max_blob:
        raise ChunkError(f"blob_size {c.blob_size} exceeds the limit of {max_blob} bytes")
    if sha256(c.data) != c.chunk_sha256:
        raise ChunkError(f"chunk {c.index} of {c.blob_sha256[:12]} fails its sha256 check")


def join(chunks: Iterable[exchange_pb2.Chunk]) -> bytes:
    """Reassemble and verify a blob (chunks in any order, duplicates ignored)."""
    parts: dict[int, bytes] = {}
    blob_id, total = "", 0
    for c in chunks:
        if sha256(c.data) != c.chunk_sha256:
            raise ChunkError(f"chunk {c.index} fails its sha256 check")
        blob_id, total = c.blob_sha256, c.total
        parts.setdefault(c.index, c.data)
    if total == 0 or len(parts) != total:
        raise ChunkError(f"incomplete blob: {len(parts)} of {total} chunks")
    data = b"".join(parts[i] for i in range(total))
    if sha256(data) != blob_id:
        raise ChunkError("blob fails its sha256 check")
    return data
