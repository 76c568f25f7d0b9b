"""The experiment harness: a real tiny cell, then the table and plots it writes."""

from __future__ import annotations

from pathlib import Path

from lada.common.config import LadaConfig

from lada.experiment import METHODS, redraw, run_cell, summary_table, write_outputs
from tests.support.paths import TINY


def test_matrix_outputs(tmp_path: Path, tiny_overrides: dict) -> None:
    base = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 1}, env=False).flat()
    rows = run_cell(base, "lada", 0) + run_cell(base, "local_only", 0)
    assert {r["method"] for r in rows} == {"lada", "local_only"}
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    write_outputs(rows, tmp_path, ["lada", "local_only"], wall=1.0)
    for f in ("metrics.csv", "metrics.jsonl", "summary.md", "accuracy.png", "reward_overlap.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    table = summary_table(rows, ["lada", "local_only"])
    assert table.count("\n") == 3 and "| lada |" in table and "± " in table
    shares = [r["in_domain"] for r in rows if r["method"] == "lada" and r["subject"] != "llm" and r["round"]]
    assert shares and all(0 <= v <= 1 for v in shares)  # what part of each allocation was the client's domain
    assert all(r.get("in_domain") is None for r in rows if r["method"] == "local_only")
    firsts = [r for r in rows if r["method"] == "lada" and r["subject"] != "llm" and r["round"] == 1]
    assert firsts and all(r["fresh"] == 1.0 and r["distinct"] == r["n_allocated"] for r in firsts)
    (tmp_path / "accuracy.png").unlink()
    redraw(tmp_path)  # table and plots again from the stored metrics, same wall time
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert (tmp_path / "summary.md").read_text().startswith(table)
    assert "Wall time of the matrix: 0.0 min" in (tmp_path / "summary.md").read_text()


def test_every_method_is_a_known_policy() -> None:
    from lada.common.policies import POLICIES

    for m in METHODS.values():
        assert m.overrides["run.method"] in POLICIES
        LadaConfig.load(overrides=m.overrides, env=False)  # every override is a real knob
