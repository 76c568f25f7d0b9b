"""Peak memory of one round phase (issue 14 item 3): what a user sizing a machine needs per phase.

On a GPU: ``torch.cuda.max_memory_allocated`` since the phase began (peak stats reset at its
start). On CPU: the process's resident set sampled from ``/proc/self/statm`` every
``interval`` seconds on a daemon thread (``ru_maxrss`` is a lifetime high-water mark, useless
per phase; tracemalloc misses torch's allocations and slows everything). Both are process-wide:
phases that overlap (server learn beside client learn) each see the other's memory too.
"""

from __future__ import annotations

import os
import resource
import threading
from types import TracebackType

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident set now (Linux ``/proc``; elsewhere the lifetime peak, the best there is)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.peak_mb``: the phase's peak (see the module docstring)."""

    def __init__(self, cuda: bool | None = None, interval: float = 0.02) -> None:
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, name="phase-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20
