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


class QuotaError(Exception):
    """The blob store is full (RESOURCE_EXHAUSTED)."""


class DeniedError(Exception):
    """A chunk claims another client (PERMISSION_DENIED)."""


@dataclass(eq=False)
class _Partial:
    """One client's unfinished upload of one blob: the verified chunks as they arrived (views into the
    received messages: nothing is copied) and their digests, from which the blob's id is derived."""

    total: int
    size: int
    parts: dict[int, int] = field(default_factory=dict)  # chunk index -> its length (claimed or landed)
    nbytes: int = 0
    touched: float = field(default_factory=time.time)
    cs: int = 0  # the length of every chunk but the last (0: no chunk seen yet)
    landed: set[int] = field(default_factory=set)  # chunks whose bytes are in ``data``
    data: dict[int, chunks.Buffer] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)  # their verified digests
    completing: bool = False
    misfits: set[int] = field(default_factory=set)  # chunks whose length fits no uniform layout

    def fit(self, index: int, n: int) -> None:
        """Chunk ``index`` of ``n`` bytes must fit this upload's layout (every chunk but the last as long
        as the first one seen, the last one the rest)."""
        cs = chunks.uniform_size(index, n, self.total, self.size)
        if self.cs and cs != self.cs:
            raise chunks.ChunkError(f"chunk {index} of {n} bytes does not fit the upload's layout "
                                    f"({self.total} chunks, {self.size} bytes, {self.cs} bytes a chunk)")
        self.cs = cs


@dataclass
class UploadResult:
    blob_id: str
    size: int
    already_present: bool
    complete: bool
    received: int
    total: int


class BlobStore:
    """Content-addressed blobs (hash-list ids, :func:`chunks.blob_id`) with per-client partial uploads
    kept for resume.

    A completed blob is stored once however often it is sent; a partial upload
    belongs to the client sending it (another client cannot poison it) and
    survives an interrupted stream. Readers: a blob the server publishes is
    readable by every client, an uploaded one only by its uploaders. The
    readers are also the blob's claims: :meth:`discard` drops one, and the bytes
    go when none is left. Memory is bounded: least recently used unpinned blobs and stale partials are evicted,
    and beyond that uploads get RESOURCE_EXHAUSTED.

    The lock only guards bookkeeping: hashing and verifying a completed upload run outside it, so one
    client's large transfer never blocks another's calls. Each uploaded byte is hashed once (its
    chunk's digest) and not copied: the blob is kept as the chunks it arrived in (:class:`chunks.Pieces`)
    and its id derived from their hashes. A blob's layout (its chunks' hashes, at the chunk size its id
    names) is computed once, when it is stored, and every download sends it in that layout.
    """

    def __init__(self, max_blob: int, max_bytes: int | None = None, max_partials: int = 4,
                 partial_ttl_s: float = 3600.0, chunk_size: int = chunks.DEFAULT_CHUNK) -> None:
        self.max_blob = max_blob
        self.max_bytes = max_bytes or 2 * max_blob  # was 8x: 2 GiB of partial uploads by default
        self.max_partials, self.partial_ttl_s = max_partials, partial_ttl_s
        self.chunk_size = chunk_size
        self.blobs: OrderedDict[str, chunks.Stored] = OrderedDict()
        self.layouts: dict[str, chunks.Layout] = {}  # blob id -> its chunks' digests (the id's layout)
        self.readers: dict[str, set[str]] = {}
        self.pinned: set[str] = set()
        self.partial: dict[tuple[str, str, int, int], _Partial] = {}  # (owner, blob, total, size)
        self.nbytes = 0
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ complete blobs
    def put(self, data: bytes, reader: str = "*", pin: bool = False) -> str:
        lay = chunks.Layout.of(data, self.chunk_size)  # the chunks' hashes and the id from them, once
        bid = lay.blob_id
        with self.lock:
            if bid not in self.blobs:
                self.blobs[bid] = data
                self.nbytes += len(data)
            self.layouts.setdefault(bid, lay)
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
                self._pop_blob(bid)

    def _pop_blob(self, bid: str) -> None:
        self.nbytes -= len(self.blobs.pop(bid))
        self.readers.pop(bid, None)
        self.layouts.pop(bid, None)

    def uploaded_by(self, bid: str, owner: str) -> chunks.Buffer | None:
        """The blob if ``owner`` itself uploaded it (a blob the server published does not count:
        a client's own paths are bytes it sent, not ones it was given)."""
        with self.lock:
            if not self._owned(bid, owner):
                return None
            self.blobs.move_to_end(bid)
            data = self.blobs[bid]
        return _whole(data)

    def get(self, bid: str, reader: str | None = None) -> chunks.Buffer | None:
        """The blob, if ``reader`` (None = the server) may read it (an upload's chunks joined: a copy)."""
        with self.lock:
            data = self.blobs.get(bid)
            if data is None:
                return None
            if reader is not None and not self._readable(bid, reader):
                return None
            self.blobs.move_to_end(bid)
        return _whole(data)

    def chunked(self, bid: str, reader: str) -> tuple[chunks.Stored, chunks.Layout] | None:
        """The blob and its layout for a download, if ``reader`` may read it: the layout its id names
        (a receiver derives the id from exactly these chunks' hashes), hashed once per blob."""
        with self.lock:
            data = self.blobs.get(bid)
            if data is None or not self._readable(bid, reader):
                return None
            self.blobs.move_to_end(bid)
            return data, self.layouts[bid]

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
            return False, sorted(p.landed), p.total, p.size

    # ------------------------------------------------------------------ uploads
    def add_chunks(self, owner: str, stream: Iterable[chunks.AnyChunk],
                   check: Callable[[chunks.AnyChunk], None] | None = None) -> UploadResult:
        """Store the verified chunks of one blob from one upload stream.

        A chunk that fails validation rolls back every chunk this stream added
        and raises (nothing is stored from a rejected call; only a partial
        upload whose chunks turn out to assemble to another blob is discarded
        whole); a stream that merely ends early (interrupted) keeps what it
        delivered for resume. Each chunk is hashed once (its own digest, from
        which the blob's id is derived) and kept as received (no copy); only the
        bookkeeping holds the lock. Chunks may leave the blob id empty until a
        later chunk of the stream names it (a sender that starts before it has
        hashed the whole blob, :class:`chunks.Hashing`): they are held for the
        stream, counted against the quota, and land once it is named; a stream
        that ends before naming its blob keeps none of them.
        """
        bid, added, present, total, size = "", [], False, 0, 0
        completed_here = False
        p: _Partial | None = None
        stash: list[chunks.AnyChunk] = []  # unnamed chunks, verified, until the stream names its blob
        stashed = 0  # their bytes (counted in self.nbytes meanwhile)
        try:
            for c in stream:
                if check is not None:
                    check(c)
                chunks.check_chunk(c, self.max_blob, unnamed=True)
                if total and ((c.total, c.blob_size) != (total, size) or (bid and c.blob_id not in ("", bid))):
                    raise chunks.ChunkError(f"chunk {c.index} declares blob {c.blob_id[:12]!r}, total={c.total}, "
                                            f"size={c.blob_size}; one upload stream carries one blob, one layout")
                total, size = c.total, c.blob_size
                if not bid and not c.blob_id:
                    with self.lock:
                        self._make_room(len(c.data))
                        self.nbytes += len(c.data)
                    stashed += len(c.data)
                    stash.append(c)
                    continue
                bid = bid or c.blob_id
                todo = [c]
                if stash:
                    with self.lock:
                        self.nbytes -= stashed
                    todo, stash, stashed = [*stash, c], [], 0
                for c in todo:
                    n = len(c.data)
                    with self.lock:
                        if self._owned(bid, owner):
                            present = present or not completed_here
                            continue
                        p = self._partial_for(owner, bid, total, size)
                        if c.index in p.parts:
                            continue  # a re-sent chunk: verified above, stored once
                        if p.nbytes + n > p.size:
                            raise chunks.ChunkError(f"chunks of {bid[:12]} add up to more than its {p.size} bytes")
                        try:
                            p.fit(c.index, n)
                        except chunks.ChunkError:  # kept and counted, as any chunk: the blob then fails its check
                            p.misfits.add(c.index)
                        self._make_room(n)
                        p.parts[c.index] = n
                        p.nbytes += n
                        p.touched = time.time()
                        self.nbytes += n
                        added.append(c.index)
                        p.landed.add(c.index)
                        p.data[c.index] = c.data  # a view into the received message: no copy
                        p.ids[c.index] = c.chunk_digest
                        done = (len(p.landed) == p.total and not p.completing
                                and self.partial.get((owner, bid, total, size)) is p)
                        p.completing = p.completing or done
                    if done:
                        self._complete(owner, bid, p)
                        completed_here = True
        except (chunks.ChunkError, QuotaError, DeniedError):
            self._rollback((owner, bid, total, size), added)
            raise
        finally:
            if stashed:
                with self.lock:
                    self.nbytes -= stashed
        if not bid:
            raise chunks.ChunkError("an upload stream that never names its blob (every chunk's blob_id is "
                                    "empty)" if total else "empty upload: no chunks")
        with self.lock:
            mine = sorted((q.touched, k) for k, q in self.partial.items() if k[0] == owner)
            for _, k in mine[: max(0, len(mine) - self.max_partials)]:
                self._drop_partial(k)  # a client resumes its newest uploads, not ancient ones
            if self._owned(bid, owner):
                return UploadResult(bid, len(self.blobs[bid]), present, True, total, total)
            q = self.partial.get((owner, bid, total, size))
            return UploadResult(bid, size, False, False, len(q.landed) if q else 0, total)

    def _partial_for(self, owner: str, bid: str, total: int, size: int) -> _Partial:
        """The owner's partial upload of this blob in this layout (chunk count and size)."""
        key = (owner, bid, total, size)
        p = self.partial.get(key)
        if p is None:
            p = self.partial[key] = _Partial(total, size)
        return p

    def _make_room(self, n: int) -> None:
        """Evict until ``n`` more bytes fit, else QuotaError (under the lock)."""
        if self.nbytes + n > self.max_bytes:
            self._evict(n)
            if self.nbytes + n > self.max_bytes:
                raise QuotaError("the server's transfer store is full; retry later")

    def _complete(self, owner: str, bid: str, p: _Partial) -> None:
        """Every chunk landed: derive the id from the chunks' verified hashes (no pass over the bytes)
        and store the chunks themselves as the blob (no join, no copy)."""
        lay = chunks.Layout.from_ids([p.ids[i] for i in range(p.total)], p.size, p.cs)
        blob = chunks.Pieces([p.data[i] for i in range(p.total)])
        err = None
        if p.misfits:
            err = chunks.ChunkError(f"chunks of {bid[:12]} do not fit one uniform layout; upload it again")
        elif lay.blob_id != bid or len(blob) != p.size:
            err = chunks.id_error(bid, lay.blob_id, blob, p.cs)
        with self.lock:
            key = (owner, bid, p.total, p.size)
            if self.partial.get(key) is p:
                self._drop_partial(key)
            if err is not None:
                raise err
            if bid not in self.blobs:  # else: another client's identical upload; proven, not stored twice
                self.blobs[bid] = blob.parts[0] if p.total == 1 else blob
                self.nbytes += p.size
                self.layouts[bid] = lay
            self.readers.setdefault(bid, set()).add(owner)

    def _rollback(self, key: tuple[str, str, int, int], added: list[int]) -> None:
        with self.lock:
            p = self.partial.get(key)
            if p is None:
                return
            for i in added:
                n = p.parts.pop(i, None)
                p.landed.discard(i)
                p.misfits.discard(i)
                p.ids.pop(i, None)
                p.data.pop(i, None)
                if n is not None:
                    p.nbytes -= n
                    self.nbytes -= n
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
                self._pop_blob(bid)


def _whole(data: chunks.Stored) -> chunks.Buffer:
    return data.tobytes() if isinstance(data, chunks.Pieces) else data
