"""A long loop shows progress: a tqdm bar with an estimate in a terminal, a line per 10% in a log."""

from __future__ import annotations

import io

from lada.common.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_tenth_with_an_estimate() -> None:
    out = io.StringIO()
    with Progress(1200, "pre-training embedded:llm", stream=out) as p:
        for _ in range(1200):
            p.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("  pre-training embedded:llm:  10% (120/1200 steps), ") and "s left" in lines[0]
    assert lines[-1].startswith("  pre-training embedded:llm: 100% (1200/1200 steps)")


def test_a_terminal_gets_a_bar_and_disabled_prints_nothing() -> None:
    tty = _Tty()
    with Progress(50, "teach", stream=tty, unit="batch") as p:
        p.update(25)
    assert "teach:  50%" in tty.getvalue() and "25/50" in tty.getvalue() and "<" in tty.getvalue()  # tqdm: ETA
    quiet = io.StringIO()
    with Progress(50, "teach", stream=quiet, enabled=False) as p:
        p.update(50)
    assert quiet.getvalue() == ""
