"""The experiment harness: a real tiny cell, then the table and plots it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from lada.common.config import LadaConfig

from lada.experiment import (
    DOC_BEGIN,
    DOC_END,
    METHODS,
    join,
    paired,
    premise_check,
    redraw,
    run_cell,
    splice_into,
    summary_table,
    write_outputs,
)
from tests.support.paths import TINY


@pytest.fixture(scope="module")
def cells(tiny_overrides: dict) -> dict[str, list[dict]]:
    """One real one-round tiny cell each of lada and local_only, shared by the tests that read outputs."""
    base = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 1}, env=False).flat()
    return {m: run_cell(base, m, 0) for m in ("lada", "local_only")}


def test_matrix_outputs(tmp_path: Path, tiny_overrides: dict, cells: dict[str, list[dict]]) -> None:
    rows = cells["lada"] + cells["local_only"]
    assert {r["method"] for r in rows} == {"lada", "local_only"}
    metrics = [r for r in rows if r.get("kind") != "items"]
    assert all(0 <= r["accuracy"] <= 1 for r in metrics)
    write_outputs(rows, tmp_path, ["lada", "local_only"], wall=1.0)
    for f in ("metrics.csv", "metrics.jsonl", "summary.md", "accuracy.png", "reward_overlap.png", "allocation.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    table = summary_table(rows, ["lada", "local_only"])
    assert table.count("\n") == 3 and "| lada |" in table and "± " in table
    shares = [r["in_domain"] for r in metrics if r["method"] == "lada" and r["subject"] != "llm" and r["round"]]
    assert shares and all(0 <= v <= 1 for v in shares)  # what part of each allocation was the client's domain
    assert all(r.get("in_domain") is None for r in metrics if r["method"] == "local_only")
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    steps = [r["given_steps"] for r in metrics if r["method"] == "lada" and r["subject"] != "llm" and r["round"]]
    assert steps and all(cfg.data.min_steps <= v <= cfg.data.max_steps for v in steps)  # mean difficulty given
    firsts = [r for r in metrics if r["method"] == "lada" and r["subject"] != "llm" and r["round"] == 1]
    assert firsts and all(r["fresh"] == 1.0 and r["distinct"] == r["n_allocated"] for r in firsts)
    items = [r for r in rows if r.get("kind") == "items"]
    assert {(r["method"], r["subject"], r["round"]) for r in items} >= {("lada", "client-1", 0), ("lada", "llm", 1)}
    assert (tmp_path / "items.jsonl").stat().st_size > 0
    (tmp_path / "accuracy.png").unlink()
    redraw(tmp_path)  # table and plots again from the stored metrics, same wall time
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert (tmp_path / "summary.md").read_text().startswith(table)
    assert "Wall time of the matrix: 0.0 min" in (tmp_path / "summary.md").read_text()


def test_every_method_is_a_known_policy() -> None:
    from lada.common import model_refs, models
    from lada.common.policies import POLICIES

    assert set(model_refs.SCENARIO_NAMES) == set(models.SCENARIO_MODELS)

    for m in METHODS.values():
        assert m.overrides["run.method"] in POLICIES
        LadaConfig.load(overrides=m.overrides, env=False)  # every override is a real knob


def test_oracles_and_paired_tests_against_random(tmp_path: Path, tiny_overrides: dict) -> None:
    """Every method is evaluated on the same items (per-item rows of equal length), the table's
    "vs random" cells are McNemar tests on them, and the oracle cells feed the premise check."""
    over = {**tiny_overrides, "run.rounds": 1, "models.llm_pretrain_domains": ["arith", "shop", "count"],
            "data.server_domains": ["arith", "shop", "count"]}
    base = LadaConfig.load(TINY, overrides=over, env=False).flat()
    rows = run_cell(base, "random", 0) + run_cell(base, "oracle", 0)
    items = {(r["method"], r["subject"], r["round"]): r["correct"] for r in rows if r.get("kind") == "items"}
    for subj in ("client-1", "client-2", "client-3", "llm"):
        assert len({len(items[(m, subj, 1)]) for m in ("random", "oracle")}) == 1
        assert items[("random", subj, 0)] == items[("oracle", subj, 0)]  # same start, same items
    res = paired(rows, "oracle", "random")
    assert res is not None and res.n == sum(len(items[("oracle", c, 1)]) for c in ("client-1", "client-2", "client-3"))
    a = [c == "1" for c in items[("oracle", "client-1", 1)] + items[("oracle", "client-2", 1)]
         + items[("oracle", "client-3", 1)]]
    b = [c == "1" for c in items[("random", "client-1", 1)] + items[("random", "client-2", 1)]
         + items[("random", "client-3", 1)]]
    assert res.a_only == sum(x and not y for x, y in zip(a, b))
    table = summary_table(rows, ["random", "oracle"])
    assert "(baseline)" in table and "p=" in table and "LLM on clock, never seen" in table
    llm_final = [r for r in rows if r["method"] == "oracle" and r["subject"] == "llm" and r["round"] == 1
                 and r.get("kind") != "items"]
    assert llm_final and 0 <= llm_final[0]["acc_clock"] <= 1
    # the LLM half of the premise check compares the oracle with its one-direction control, on the
    # clock items only: a copy of the oracle's cell relabelled as the control differs by nothing
    twin = [{**r, "method": "oracle_one_way"} for r in rows if r["method"] == "oracle"]
    check = premise_check(rows + twin)
    assert "same-budget oracle against random" in check and "LLM accuracy on clock" in check
    n_clock = sum(d == "clock" for r in rows if r.get("kind") == "items" and r["subject"] == "llm"
                  and r["method"] == "oracle" and r["round"] == 1 for d in r["domains"])
    assert f"+0.0 points, McNemar p = 1 over {n_clock} paired items" in check
    write_outputs(rows, tmp_path, ["random", "oracle"], wall=1.0)
    assert "Premise check" in (tmp_path / "summary.md").read_text()


def test_join_puts_runs_of_one_scenario_together_and_refuses_another(
        tmp_path: Path, tiny_overrides: dict, cells: dict[str, list[dict]]) -> None:
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 1}, env=False)
    for m, wall in (("lada", 60.0), ("local_only", 120.0)):
        (tmp_path / m).mkdir()
        (tmp_path / m / "config.yaml").write_text(cfg.dump_yaml())
        (tmp_path / m / "commit.txt").write_text(f"c-{m}\n")
        write_outputs(cells[m], tmp_path / m, [m], wall=wall)
    # a folder that repeats a (method, seed) already taken adds nothing
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "config.yaml").write_text(cfg.dump_yaml())
    write_outputs([{**r, "accuracy": 0.0} if "accuracy" in r else r for r in cells["lada"]], tmp_path / "again",
                  ["lada"], wall=0.0)
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text(f"# Results\n\nprose\n\n{DOC_BEGIN}\nold table\n{DOC_END}\n\nmore prose\n")
    join([tmp_path / "lada", tmp_path / "local_only", tmp_path / "again"], tmp_path / "all", doc)
    summary = (tmp_path / "all" / "summary.md").read_text()
    page = doc.read_text()
    assert page.startswith("# Results\n\nprose\n\n") and page.endswith(f"{DOC_END}\n\nmore prose\n")
    assert summary.strip() in page and "old table" not in page and "](../all/accuracy.png)" in page
    assert summary.startswith(summary_table(cells["lada"] + cells["local_only"], ["lada", "local_only"]))
    assert "Wall time of the matrix: 3.0 min" in summary
    assert (tmp_path / "all" / "commit.txt").read_text().splitlines() == [
        "lada: c-lada", "local_only: c-local_only", "again: unknown"]
    other = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 1, "run.budget": 3}, env=False)
    (tmp_path / "local_only" / "config.yaml").write_text(other.dump_yaml())
    with pytest.raises(ValueError, match="another scenario.*run.budget=3"):
        join([tmp_path / "lada", tmp_path / "local_only"], tmp_path / "bad")
    doc.write_text("# Results without markers\n")
    with pytest.raises(ValueError, match="needs one"):
        splice_into(doc, tmp_path / "all")
