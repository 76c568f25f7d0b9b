"""A long loop shows progress: a tqdm bar with an estimate in a terminal, a line per 10% in a log."""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from lada.common.models import EMBEDDED, build_tokenizer, make_model
from lada.common.progress import Progress
from lada.common.textlm import generate_paths


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


def test_a_big_batch_prints_one_line_not_one_per_tenth_it_crosses() -> None:
    out = io.StringIO()
    with Progress(1000, "LLM: generating paths", stream=out, unit="path") as p:
        for _ in range(4):
            p.update(250)
    assert [s.split(": ")[2][:4] for s in out.getvalue().splitlines()] == [" 20%", " 50%", " 70%", "100%"]


def test_generation_shows_progress_only_when_labelled(capsys: pytest.CaptureFixture[str]) -> None:
    """The LLM's path generation (teach, evaluation) reports its batches; unlabelled (tests, clients) is silent."""
    torch.manual_seed(0)
    tok = build_tokenizer("bpe")
    model = make_model(EMBEDDED["slm-llama"], tok).eval()
    questions = [f"What is {i} + 1?" for i in range(6)]
    generate_paths(model, tok, questions, max_new_tokens=4, batch_size=2)
    assert capsys.readouterr().err == ""
    generate_paths(model, tok, questions, max_new_tokens=4, batch_size=2, progress="LLM: generating paths")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("  LLM: generating paths: 100% (6/6 paths)"), lines


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script (a pty)")
def test_a_bar_shows_in_a_pty_of_unknown_size() -> None:
    """Under `script` (a pty whose size tqdm reads as -1 rows, as on some CI runners) tqdm alone
    draws nothing; Progress gives it a usable size, so the bar shows."""
    code = ("from lada.common.progress import Progress\n"
            "with Progress(5, 'in-a-pty') as p:\n"
            "    [p.update(1) for _ in range(5)]\n")
    cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    out = subprocess.run(["script", "-qfec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL).stdout
    assert "in-a-pty" in out and "5/5" in out, repr(out)
