"""reasoning-gym families as client domains (common/rg_tasks.py): deterministic items, the
embedded scenario's split discipline, and grading by the family's own scorer."""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")  # installed by make real-models / make test

from lada.common import answers, rg_tasks  # noqa: E402
from lada.common.config import DataConfig  # noqa: E402
from lada.common.data import DOMAINS, held_out  # noqa: E402
from lada.common.scenario import scenario_splits, server_train_set  # noqa: E402

CHAIN = "rg:chain_sum?max_terms=3&max_digits=2"


def test_items_deterministic_per_seed() -> None:
    a = rg_tasks.client_split(CHAIN, "c1", 6, 6, seed=3)
    b = rg_tasks.client_split(CHAIN, "c1", 6, 6, seed=3)
    c = rg_tasks.client_split(CHAIN, "c1", 6, 6, seed=4)
    assert a == b
    assert [s.question for s in a[1]] != [s.question for s in c[1]]
    other = rg_tasks.client_split(CHAIN, "c2", 6, 6, seed=3)  # each client its own draw
    assert [s.question for s in a[0]] != [s.question for s in other[0]]


def test_scenario_splits_disjoint_and_deduplicated() -> None:
    d = DataConfig(client_domains={"c1": CHAIN, "c2": "rg:leg_counting"}, n_train=30, n_test=20, n_public=24,
                   n_server_test=10, n_server_train=12)
    sp = scenario_splits(d)
    tests = {s.question for c in ("c1", "c2") for s in sp.client_test[c]} | {s.question for s in sp.server_test}
    train = {s.question for c in ("c1", "c2") for s in sp.client_train[c]}
    public = [s.question for s in sp.public]
    server_train = {s.question for s in server_train_set(d)}
    assert all(held_out(q) for q in tests) and not any(held_out(q) for q in train | set(public) | server_train)
    assert not tests & (train | set(public) | server_train)
    assert not set(public) & train  # the public set holds no client's training question
    assert len(set(public)) == len(public) == 24
    for c in ("c1", "c2"):
        assert len({s.question for s in sp.client_test[c]}) == 20 and len(sp.client_train[c]) == 30
    assert {s.domain for s in sp.public} == {CHAIN, "rg:leg_counting"}  # all-rg clients: the public set is theirs
    ids = [s.id for s in sp.public + sp.server_test] + [s.id for v in sp.client_train.values() for s in v]
    assert len(set(ids)) == len(ids)


def test_mixed_scenario_keeps_embedded_public_and_adds_family_share() -> None:
    d = DataConfig(client_domains={"c1": CHAIN, "c2": "shop"}, n_train=10, n_test=6, n_public=36, n_server_test=6)
    sp = scenario_splits(d)
    doms = [s.domain for s in sp.public]
    assert len(doms) == 36 and doms.count(CHAIN) == 36 // (1 + len(DOMAINS)) and "shop" in doms
    assert sp.client_test["c2"][0].domain == "shop"


def test_worked_solution_chains_to_the_answer() -> None:
    train, _ = rg_tasks.client_split(CHAIN, "c1", 20, 1, seed=0)
    for s in train:
        assert s.solution and s.solution.split("=")[-1].strip(" .") == s.answer
    assert rg_tasks.chain_steps("4 - 1 - 7") == "4 - 1 = 3. 3 - 7 = -4."
    assert rg_tasks.chain_steps("3 * 4 + 1") == ""  # not a +/- chain: no worked answer made up
    gsm, _ = rg_tasks.client_split("rg:gsm_symbolic", "c1", 2, 1, seed=0)
    assert all(s.solution and "####" not in s.solution and "<<" not in s.solution for s in gsm)


def test_graded_by_the_familys_scorer(monkeypatch: pytest.MonkeyPatch) -> None:
    (s,), _ = rg_tasks.client_split(CHAIN, "c1", 1, 1, seed=0)
    fam = answers.family_of(s.id)
    assert fam == "rg:chain_sum"
    right = f"{s.solution} #### {s.answer}"
    assert answers.is_correct(right, s.answer, fam) and answers.is_correct(right, s.answer, fam, check_steps=True)
    assert not answers.is_correct(f"#### {int(s.answer) + 1}", s.answer, fam)
    assert answers.is_correct(f"So the answer is {s.answer}.", s.answer, fam)

    calls = []

    class Strict:  # a scorer that refuses everything: grading must follow it, not string equality
        def score_answer(self, got: str, entry: dict) -> float:
            calls.append((got, entry["answer"]))
            return 0.0

    monkeypatch.setattr(rg_tasks, "scorer", lambda name: Strict())
    assert not answers.is_correct(right, s.answer, fam)
    assert calls == [(s.answer, s.answer)]


def test_partial_credit_is_not_correct() -> None:
    (s,), _ = rg_tasks.client_split("rg:gsm_symbolic", "c1", 1, 1, seed=0)
    fam = answers.family_of(s.id)
    wrong = f"#### {int(float(s.answer)) + 5}"
    assert rg_tasks.score(wrong, s.answer, fam) == pytest.approx(0.01)  # gsm_symbolic's own partial credit
    assert not answers.is_correct(wrong, s.answer, fam)
    assert answers.is_correct(f"\\boxed{{{s.answer}}}", s.answer, fam)


def test_non_numeric_answers_read_from_the_path() -> None:
    assert rg_tasks.extract("so we get\n#### Alice is a knight\n", "Alice is a knight") == "Alice is a knight"
    assert rg_tasks.extract("x <answer>blue</answer>", "blue") == "blue"
    assert rg_tasks.extract("I think the answer is: cat.", "cat") == "cat"
    assert rg_tasks.extract("3 + 4 = 7. #### 7", None) == "7"


@pytest.mark.parametrize("spec, msg", [
    ("rg:no_such_family", "has no family"),
    ("rg:word_sorting", "needs more than the label"),
    ("rg:countdown", "from the label alone"),
    ("rg:chain_sum?no_such_key=1", "bad parameters"),
    ("rg:chain_sum?max_terms", "is not key=value"),
    ("rg:Chain Sum", "expected rg:NAME"),
])
def test_bad_domain_is_a_clear_error(spec: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        rg_tasks.check_family(spec)
    with pytest.raises(ValueError, match=msg):  # before any data is drawn for a run
        scenario_splits(DataConfig(client_domains={"c1": spec}, n_train=2, n_test=2, n_public=2, n_server_test=2))


def test_draw_skips_excluded_questions() -> None:
    first = rg_tasks.draw([CHAIN], 8, 0, "public", test=False)
    again = rg_tasks.draw([CHAIN], 8, 0, "public", test=False, exclude=[s.question.upper() for s in first[:4]])
    assert {s.question for s in first[:4]}.isdisjoint(s.question for s in again)  # case/space folded
    assert again[0].question == first[4].question
