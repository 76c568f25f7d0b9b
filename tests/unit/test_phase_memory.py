"""Peak memory per round phase (server/phase_memory.py, RoundState.phase): a phase that holds a
large buffer for a moment reports it even though the buffer is gone when the phase ends."""

from __future__ import annotations

import mmap
import time

from lada.server.federation import RoundState
from lada.server.phase_memory import PeakMemory, rss_bytes

MB = 2**20


def _hold(mb: int, seconds: float = 0.3) -> None:
    """Fresh anonymous pages, each touched, then unmapped: the resident set must rise and fall by
    ``mb`` (a malloc'd buffer can reuse memory a long test process already holds, and not show)."""
    buf = mmap.mmap(-1, mb * MB)
    for i in range(0, mb * MB, mmap.PAGESIZE):
        buf[i] = 1
    time.sleep(seconds)
    buf.close()


def test_peak_sees_a_buffer_freed_before_the_phase_ends() -> None:
    base = rss_bytes() / MB
    with PeakMemory(cuda=False) as m:
        _hold(200)
    assert m.peak_mb >= base + 150, (base, m.peak_mb)
    with PeakMemory(cuda=False) as quiet:
        time.sleep(0.1)
    assert quiet.peak_mb < base + 100, (base, quiet.peak_mb)


def test_round_state_records_and_logs_each_phase_peak() -> None:
    logs: list[str] = []
    r = RoundState(1, log=logs.append, of=1)
    with r.phase("teach"):
        _hold(120)
    with r.phase("probe"):
        pass
    assert set(r.peak_mb) == {"teach", "probe"} and r.peak_mb["teach"] > 0
    assert r.peak_mb["teach"] >= rss_bytes() / MB + 80  # the 120 MB buffer, gone by now
    assert any(s.startswith("[lada] round 1/1: teach peak ") and s.endswith(" MB") for s in logs), logs
