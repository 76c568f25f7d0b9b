"""A reader that leaves (``lada demo | head``) is not a failure of the writer (issue 16 item 2)."""

from __future__ import annotations

import subprocess
import sys

WRITER = """
import sys
from lada import pipes
pipes.install()
for i in range(2000):
    print(f"line {i} " + "x" * 200, flush=True)
    print(f"log {i}", file=sys.stderr, flush=True)
sys.exit(0)
"""


def _run_with_readers_leaving() -> subprocess.CompletedProcess[bytes]:
    """The writer's stdout and stderr are pipes whose read ends close after the first line."""
    p = subprocess.Popen([sys.executable, "-c", WRITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.readline()
    p.stderr.readline()
    p.stdout.close()
    p.stderr.close()
    p.wait(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode)


def test_writes_after_the_reader_left_are_dropped_not_raised() -> None:
    assert _run_with_readers_leaving().returncode == 0
