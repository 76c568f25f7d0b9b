"""Caps on the RPCs that hold a gRPC worker thread for long: streams and long-polls.

The sync gRPC server runs each RPC on a pool thread until it ends, so a client
that opens streams and stops sending would hold the whole pool, and health
checks and enrolments from anyone else would queue behind it (grpc's own
``maximum_concurrent_rpcs`` counts queued RPCs too, so it never triggers).
The gate admits at most ``per_client`` of these calls per client and
``capacity`` in all (the pool less a reserve for short calls) and refuses the
rest at once; a stream that neither sends nor takes a message for ``idle_s``
is cancelled by one watchdog thread, which gives its worker back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Busy(Exception):
    """The client or the server holds as many long calls as allowed (RESOURCE_EXHAUSTED, BUSY)."""


@dataclass(eq=False)
class Ticket:
    """One admitted long call; ``touch`` on every message, ``close`` when it ends (idempotent)."""

    gate: StreamGate
    name: str
    cancel: Callable[[], None] | None  # None: not watched (a long-poll bounds its own wait)
    last: float = field(default_factory=time.monotonic)
    closed: bool = False

    def touch(self) -> None:
        self.last = time.monotonic()

    def close(self) -> None:
        self.gate._release(self)


class StreamGate:
    """Per-client and global admission of long calls, and the idle-stream watchdog."""

    def __init__(self, capacity: int = 1 << 30, per_client: int = 1 << 30, idle_s: float = 30.0) -> None:
        self.capacity, self.per_client, self.idle_s = capacity, per_client, idle_s
        self.lock = threading.Lock()
        self.tickets: set[Ticket] = set()
        self.by_client: dict[str, int] = {}
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def enter(self, name: str, cancel: Callable[[], None] | None = None) -> Ticket:
        """Admit one long call of ``name`` (``cancel`` ends it if it goes idle) or raise :class:`Busy`."""
        with self.lock:
            mine = self.by_client.get(name, 0)
            if mine >= self.per_client:
                raise Busy(f"{name!r} already has {mine} streams or long-polls open (at most {self.per_client}); "
                           "retry when one ends")
            if len(self.tickets) >= self.capacity:
                raise Busy(f"the server has {len(self.tickets)} streams and long-polls open (at most "
                           f"{self.capacity}); retry later")
            t = Ticket(self, name, cancel)
            self.tickets.add(t)
            self.by_client[name] = mine + 1
            if cancel is not None and self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="lada-stream-watchdog", daemon=True)
                self._watchdog.start()
            return t

    def active(self, name: str | None = None) -> int:
        with self.lock:
            return len(self.tickets) if name is None else self.by_client.get(name, 0)

    def stop(self) -> None:
        self._stop.set()

    def _release(self, t: Ticket) -> None:
        with self.lock:
            if t.closed:
                return
            t.closed = True
            self.tickets.discard(t)
            left = self.by_client.get(t.name, 1) - 1
            if left > 0:
                self.by_client[t.name] = left
            else:
                self.by_client.pop(t.name, None)

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.idle_s / 4)):
            now = time.monotonic()
            with self.lock:
                idle = [t for t in self.tickets if t.cancel is not None and now - t.last > self.idle_s]
            for t in idle:  # outside the lock: cancelling wakes the RPC thread, which closes its ticket
                t.close()
                t.cancel()  # type: ignore[misc]
