"""Clients' last heartbeats, from the grid to the run database, off the RPC threads.

A Heartbeat RPC (like every authenticated call) only notes the time in the
client's slot (``GrpcGrid.slot_of`` sets ``last_seen``); this recorder's thread
writes the latest of those times for every client of the current run every
``interval`` seconds (``transport.heartbeat``) in one transaction
(``Store.heartbeats``). So 500 clients heartbeating every few seconds cost the
database one small write per interval, not one per call, and no RPC ever waits
for the database (SQLite has one writer: a row per heartbeat inside the
servicers would queue the server's threads behind each other and behind a
round's commit). The stored time lags the real one by at most one interval.
A failing write is logged and retried at the next interval; it never reaches
an RPC, and it never stops the recorder.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from .db.writer import Store

log = logging.getLogger("lada.server")


class Sightings(Protocol):
    def last_seen(self) -> dict[str, float]: ...


def _utc(ts: float) -> dt.datetime:
    """Unix time as the database's naive UTC."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)


class HeartbeatRecorder:
    """Every ``interval`` seconds, store ``grid.last_seen()`` for the clients of run ``run_id()``
    (0: no run open yet, nothing is written); only times that changed since the last write."""

    def __init__(self, grid: Sightings, store: Store, run_id: Callable[[], int], interval: float) -> None:
        self.grid, self.store, self.run_id, self.interval = grid, store, run_id, interval
        self._written: tuple[int, dict[str, float]] = (0, {})
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> int:
        """Write what changed since the last flush; the number of clients written. Never raises."""
        try:
            run_id = self.run_id()
            if not run_id:
                return 0
            seen = self.grid.last_seen()
            prev = self._written[1] if self._written[0] == run_id else {}
            fresh = {n: t for n, t in seen.items() if prev.get(n) != t}
            if fresh:
                self.store.heartbeats(run_id, {n: _utc(t) for n, t in fresh.items()})
            self._written = (run_id, seen)
        except Exception as e:  # noqa: BLE001 - the run goes on; the next flush writes the newer times
            if not self._failing:
                log.warning("recording client heartbeats failed (retrying every %.1fs): %s", self.interval, e)
            self._failing = True
            return 0
        if self._failing:
            log.info("recording client heartbeats works again")
            self._failing = False
        return len(fresh)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def start(self) -> HeartbeatRecorder:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="heartbeat-recorder")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, then write the last sightings."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5.0)
        self.flush()
