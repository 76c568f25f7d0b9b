"""A closed stdout or stderr is not a failure of the run.

``lada demo | head`` closes the pipe after ten lines; every later print then raised
BrokenPipeError, which inside the round loop marked a committed run failed and in the demo
stopped the server. Wrapped streams instead point their file descriptor at /dev/null on the
first EPIPE and carry on: the run's record is the database, not the terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class PipeSafe:
    """A text stream whose writes and flushes after the reader left go to /dev/null."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _to_devnull(self) -> None:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._stream.fileno())
        finally:
            os.close(null)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()
            self._stream.flush()  # what was buffered now goes to /dev/null

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install() -> None:
    """Wrap sys.stdout and sys.stderr (once) so a closed reader never raises in this process."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PipeSafe):
            try:
                stream.fileno()
            except (AttributeError, OSError, ValueError):  # pytest's capture and the like: not a pipe
                continue
            setattr(sys, name, PipeSafe(stream))
