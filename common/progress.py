"""Progress of a long loop: a tqdm bar with an estimate in a terminal, a line per 10% in a log.

Model builds and a round's long phases take minutes on a CPU; without this a user sees
nothing between "building ..." and the result. In a terminal (stderr is a tty) the bar
redraws in place; piped into a file or a test's capture, it writes one plain line per tenth
of the work with elapsed time and an estimate, so a log stays short and readable. ``enabled``
False (tests, experiments) makes it a no-op.
"""

from __future__ import annotations

import shutil
import sys
import time
from types import TracebackType
from typing import IO

from tqdm import tqdm


class Progress:
    """``with Progress(total, desc) as p: ... p.update(n)``; see the module docstring."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, unit: str = "step",
                 stream: IO[str] | None = None) -> None:
        self.total, self.desc, self.unit = max(0, total), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.tty = self.enabled and self.stream.isatty()
        self._bar: tqdm | None = None
        self.done = 0
        self._next_tenth = 1
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        self._t0 = time.perf_counter()
        if self.tty:
            # a pty that reports a 0 x 0 size (script, some CI runners): tqdm hides every bar at row 0
            # of 0 rows, so give it the size shutil falls back to
            size = shutil.get_terminal_size((100, 24))
            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream, leave=True,
                             ncols=size.columns, nrows=size.lines)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            tenth = min(10, self.done * 10 // self.total)
            if tenth >= self._next_tenth:  # one line per update at most: a big batch does not print three
                self._line(tenth * 10)
                self._next_tenth = tenth + 1

    def _line(self, pct: int) -> None:
        spent = time.perf_counter() - self._t0
        left = spent * (self.total - self.done) / self.done if self.done else 0.0
        print(f"  {self.desc}: {pct:3d}% ({min(self.done, self.total)}/{self.total} {self.unit}s), "
              f"{spent:.0f}s elapsed, ~{left:.0f}s left", file=self.stream, flush=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
