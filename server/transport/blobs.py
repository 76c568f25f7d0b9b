"""Content-addressed blob store of the gRPC transport: what clients upload and download.

Kept apart from the servicers so its bookkeeping (owners, readers, quota,
resumable partial uploads) is one unit with its own invariants; it raises
plain exceptions and the servicers translate them into status codes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lada.common import chunks
from lada.common.proto.lada.v1 import exchange_pb2


class QuotaError(Exception):
    """The blob store is full (RESOURCE_EXHAUSTED)."""


class DeniedError(Exception):
    """A chunk claims another client (PERMISSION_DENIED)."""


@dataclass
class _Partial:
    total: int
    size: int
    parts: dict[int, bytes] = field(default_factory=dict)
    nbytes: int = 0
    touched: float = field(default_factory=time.time)


@dataclass
class UploadResult:
    blob_id: str
    size: int
    already_present: bool
    complete: bool
    received: int
    total: int


class BlobStore:
    """Content-addressed blobs (sha256 id) with per-client partial uploads kept for resume.

    A completed blob is stored once however often it is sent; a partial upload
    belongs to the client sending it (another client cannot poison it) and
    survives an interrupted stream. Readers: a blob the server publishes is
    readable by every client, an uploaded one only by its uploaders. The
    readers are also the blob's claims: :meth:`discard` drops one, and the bytes
    go when none is left. Memory is bounded: least recently used unpinned blobs and stale partials are evicted,
    and beyond that uploads get RESOURCE_EXHAUSTED.
    """

    def __init__(self, max_blob: int, max_bytes: int | None = None, max_partials: int = 4,
                 partial_ttl_s: float = 3600.0) -> None:
        self.max_blob = max_blob
        self.max_bytes = max_bytes or 2 * max_blob  # was 8x: 2 GiB of partial uploads by default
        self.max_partials, self.partial_ttl_s = max_partials, partial_ttl_s
        self.blobs: OrderedDict[str, bytes] = OrderedDict()
        self.readers: dict[str, set[str]] = {}
        self.pinned: set[str] = set()
        self.partial: dict[tuple[str, str, int, int], _Partial] = {}  # (owner, blob, total, size)
        self.nbytes = 0
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ complete blobs
    def put(self, data: bytes, reader: str = "*", pin: bool = False) -> str:
        bid = chunks.sha256(data)
        with self.lock:
            if bid not in self.blobs:
                self.blobs[bid] = data
                self.nbytes += len(data)
            self.blobs.move_to_end(bid)
            self.readers.setdefault(bid, set()).add(reader)
            if pin:
                self.pinned.add(bid)
            self._evict()
        return bid

    def unpin(self, bid: str) -> None:
        with self.lock:
            self.pinned.discard(bid)

    def discard(self, bid: str, reader: str = "*") -> None:
        """Drop ``reader``'s claim on a blob ("*": the server's publication); the bytes go once
        nobody holds a claim and it is not pinned. Content addressing stores byte-identical
        uploads of two clients once, so one client's report must not delete the other's."""
        with self.lock:
            claims = self.readers.get(bid)
            if claims is None:
                return
            claims.discard(reader)
            if not claims and bid in self.blobs and bid not in self.pinned:
                self.nbytes -= len(self.blobs.pop(bid))
                self.readers.pop(bid, None)

    def uploaded_by(self, bid: str, owner: str) -> bytes | None:
        """The blob if ``owner`` itself uploaded it (a blob the server published does not count:
        a client's own paths are bytes it sent, not ones it was given)."""
        with self.lock:
            if not self._owned(bid, owner):
                return None
            self.blobs.move_to_end(bid)
            return self.blobs[bid]

    def get(self, bid: str, reader: str | None = None) -> bytes | None:
        """The blob, if ``reader`` (None = the server) may read it."""
        with self.lock:
            data = self.blobs.get(bid)
            if data is None:
                return None
            if reader is not None and not self._readable(bid, reader):
                return None
            self.blobs.move_to_end(bid)
            return data

    def _readable(self, bid: str, reader: str) -> bool:
        return bid in self.blobs and bool(self.readers.get(bid, set()) & {"*", reader})

    def _owned(self, bid: str, owner: str) -> bool:
        return bid in self.blobs and owner in self.readers.get(bid, set())

    def state(self, owner: str, bid: str) -> tuple[bool, list[int], int, int]:
        """(present, chunk indices held of owner's partial upload, its total, its size).

        "present" only if ``owner`` itself uploaded the blob: knowing a blob's id is no proof
        of holding its content, so a client sends the bytes of a blob someone else uploaded
        or the server published (verified, then not stored again) before it may use it as its own."""
        with self.lock:
            if self._owned(bid, owner):
                return True, [], 0, len(self.blobs[bid])
            mine = [p for k, p in self.partial.items() if k[:2] == (owner, bid)]
            if not mine:
                return False, [], 0, 0
            p = max(mine, key=lambda q: q.touched)
            return False, sorted(p.parts), p.total, p.size

    # ------------------------------------------------------------------ uploads
    def add_chunks(self, owner: str, stream: Iterable[exchange_pb2.Chunk],
                   check: Callable[[exchange_pb2.Chunk], None] | None = None) -> UploadResult:
        """Store the verified chunks of one blob from one upload stream.

        A chunk that fails validation rolls back every chunk this stream added
        and raises (nothing is stored from a rejected call; only a partial
        upload whose chunks turn out to assemble to another blob is discarded
        whole); a stream that merely ends early (interrupted) keeps what it
        delivered for resume.
        """
        bid, added, present, total, size = "", [], False, 0, 0
        completed_here = False
        try:
            for c in stream:
                if check is not None:
                    check(c)
                chunks.check_chunk(c, self.max_blob)
                if bid and (c.blob_sha256, c.total, c.blob_size) != (bid, total, size):
                    raise chunks.ChunkError(f"chunk {c.index} declares blob {c.blob_sha256[:12]}, total={c.total}, "
                                            f"size={c.blob_size}; one upload stream carries one blob, one layout")
                bid, total, size = c.blob_sha256, c.total, c.blob_size
                with self.lock:
                    if self._owned(bid, owner):
                        present = present or not completed_here
                        continue
                    p = self._partial_for(owner, c)
                    if c.index in p.parts:
                        continue  # a re-sent chunk: verified above, stored once
                    if p.nbytes + len(c.data) > p.size:
                        raise chunks.ChunkError(f"chunks of {bid[:12]} add up to more than its {p.size} bytes")
                    if self.nbytes + len(c.data) > self.max_bytes:
                        self._evict(len(c.data))
                        if self.nbytes + len(c.data) > self.max_bytes:
                            raise QuotaError("the server's transfer store is full; retry later")
                    p.parts[c.index] = bytes(c.data)
                    p.nbytes += len(c.data)
                    p.touched = time.time()
                    self.nbytes += len(c.data)
                    added.append(c.index)
                    if len(p.parts) == p.total:
                        self._complete(owner, bid, p)
                        completed_here = True
        except (chunks.ChunkError, QuotaError, DeniedError):
            self._rollback((owner, bid, total, size), added)
            raise
        if not bid:
            raise chunks.ChunkError("empty upload: no chunks")
        with self.lock:
            mine = sorted((q.touched, k) for k, q in self.partial.items() if k[0] == owner)
            for _, k in mine[: max(0, len(mine) - self.max_partials)]:
                self._drop_partial(k)  # a client resumes its newest uploads, not ancient ones
            if self._owned(bid, owner):
                return UploadResult(bid, len(self.blobs[bid]), present, True, total, total)
            p = self.partial.get((owner, bid, total, size))
            return UploadResult(bid, size, False, False, len(p.parts) if p else 0, total)

    def _partial_for(self, owner: str, c: exchange_pb2.Chunk) -> _Partial:
        """The owner's partial upload of this blob in this layout (chunk count and size)."""
        key = (owner, c.blob_sha256, c.total, c.blob_size)
        p = self.partial.get(key)
        if p is None:
            p = self.partial[key] = _Partial(c.total, c.blob_size)
        return p

    def _complete(self, owner: str, bid: str, p: _Partial) -> None:
        data = b"".join(p.parts[i] for i in range(p.total))
        self._drop_partial((owner, bid, p.total, p.size))
        if len(data) != p.size or chunks.sha256(data) != bid:
            raise chunks.ChunkError(f"assembled blob {bid[:12]} fails its sha256/size check; upload it again")
        if bid not in self.blobs:  # else: another client's identical upload; proven, not stored twice
            self.blobs[bid] = data
            self.nbytes += len(data)
        self.readers.setdefault(bid, set()).add(owner)

    def _rollback(self, key: tuple[str, str, int, int], added: list[int]) -> None:
        with self.lock:
            p = self.partial.get(key)
            if p is None:
                return
            for i in added:
                piece = p.parts.pop(i, None)
                if piece is not None:
                    p.nbytes -= len(piece)
                    self.nbytes -= len(piece)
            if not p.parts:
                del self.partial[key]

    def _drop_partial(self, key: tuple[str, str, int, int]) -> None:
        p = self.partial.pop(key, None)
        if p is not None:
            self.nbytes -= p.nbytes

    def _evict(self, need: int = 0) -> None:
        """Stale partials, then least recently used unpinned blobs, until ``need`` bytes fit."""
        now = time.time()
        for k in [k for k, p in self.partial.items() if now - p.touched > self.partial_ttl_s]:
            self._drop_partial(k)
        for bid in list(self.blobs):
            if self.nbytes + need <= self.max_bytes:
                break
            if bid not in self.pinned:
                self.nbytes -= len(self.blobs.pop(bid))
                self.readers.pop(bid, None)
