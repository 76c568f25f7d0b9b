"""y+ step checking (common/answers.py ``steps_hold``, ``distill.check_steps``): a path is y+ only if
its answer is right and every ``a op b = c`` step holds and chains into the answer.

REAL holds paths the embedded models really wrote in a demo run (``make demo``-style run at commit
ed84682, round 2, read from its lada.db); each has the right final answer, and whether its steps
hold was read off by a person, not by running the checker.
"""

from __future__ import annotations

import pytest
from lada.client.app import self_taught
from lada.common.answers import is_correct, parse_steps, steps_hold
from lada.common.config import LadaConfig
from lada.common.data import DOMAINS, Sample, generate
from lada.common.rounds import ProbeResult, ReasoningPath, SampleStats, grade

# (author, domain, label, path, every step holds?)
REAL = [
    ("llm", "count", "6", "3 + 1 = 4 . 4 + 2 = 6 . #### 6", True),
    ("llm", "clock", "11", "7 + 8 = 15 . 15 - 12 = 3 . 3 + 8 = 11 . #### 11", True),
    ("llm", "shop", "4", "2 * 1 = 2 . 2 * 1 = 2 . 2 + 2 = 4 . #### 4", True),
    ("llm", "arith", "15", "6 + 4 = 10 . 10 + 5 = 15 . #### 15", True),
    ("client-2", "shop", "12", "4 * 3 = 12 . #### 12", True),
    ("client-1", "clock", "1", "4 + 4 = 8 . 8 + 5 = 13 . 13 - 12 = 1 . #### 1", True),
    ("client-1", "count", "5", "8 - 3 = 5 . #### 5", True),
    ("client-1", "count", "5", "3 + 2 = 6 . 6 - 3 = 2 . 2 + 3 = 5 . #### 5", False),  # 3 + 2 is not 6
    ("client-3", "clock", "2", "2 + 9 = 10 . 10 + 3 = 14 . 14 - 12 = 2 . #### 2", False),  # 2 + 9 is not 10
    ("client-3", "arith", "11", "3 + 7 = 9 . 9 - 2 = 6 . 6 + 3 = 11 . #### 11", False),
    ("client-2", "shop", "12", "2 * 4 = 6 . 2 * 2 = 6 . 6 + 6 = 12 . #### 12", False),
    ("llm", "shop", "15", "4 * 2 = 8 . 1 * 7 = 7 . 8 + 8 = 15 . #### 15", False),  # adds 8, not the product 7
    ("llm", "arith", "20", "8 + 9 = 17 . 17 - 3 = 13 . 13 + 8 = 20 . #### 20", False),
    ("llm", "count", "7", "6 + 4 = 10 . 10 - 4 = 7 . #### 7", False),
]


@pytest.mark.parametrize(("author", "domain", "label", "path", "holds"), REAL)
def test_real_paths_graded_as_read_by_hand(author: str, domain: str, label: str, path: str, holds: bool) -> None:
    assert is_correct(path, label)  # every one has the right answer: answer-only calls them all right
    assert is_correct(path, label, check_steps=True) is holds
    assert steps_hold(path) is holds


def test_every_generated_solution_holds() -> None:
    """The checker accepts what the corpus itself writes, in every domain and difficulty (a checker
    that rejected a true solution would starve the receivers of y+)."""
    for dom in DOMAINS:
        for s in generate([dom], 150, seed=3, prefix=f"t-{dom}", min_steps=1, max_steps=6):
            assert steps_hold(s.path), (dom, s.path)
            assert is_correct(s.path, s.answer, check_steps=True)


@pytest.mark.parametrize(("path", "why"), [
    ("4 - 3 = 0 . 0 + 8 = 9 . #### 9", "the issue's example: 4 - 3 is not 0, nor 0 + 8 nine"),
    ("4 - 3 = 1 . 2 + 7 = 9 . #### 9", "the chain breaks: the second step does not go on from 1"),
    ("1 * 9 = 9 . 3 * 5 = 15 . 8 + 15 = 23 . #### 23", "shop's sum must start from the first product"),
    ("4 - 3 = 1 . 1 + 8 = 9 . 9 + 1 = 10 . #### 9", "the last step's result is not the answer"),
    ("#### 9", "no steps at all"),
    ("4 - 3 = 1 . then 8 more . #### 9", "a sentence that is not a step"),
])
def test_right_answer_with_a_wrong_step_is_not_y_plus(path: str, why: str) -> None:
    assert is_correct(path, "9") or is_correct(path, "23"), why
    assert not steps_hold(path), why
    assert not is_correct(path, "9", check_steps=True), why


def test_all_steps_right_is_y_plus_and_knob_off_is_answer_only() -> None:
    good, bad = "4 - 3 = 1 . 1 + 8 = 9 . #### 9", "4 - 3 = 0 . 0 + 8 = 9 . #### 9"
    assert is_correct(good, "9", check_steps=True)
    assert not is_correct(good, "8", check_steps=True)  # steps hold, answer wrong: not y+ either
    assert is_correct(bad, "9", check_steps=False)  # the knob off: the final answer decides
    assert parse_steps(good) == [(4, "-", 3, 1), (1, "+", 8, 9)]


def test_gsm8k_family_is_answer_only() -> None:
    """GSM8K free text has no checkable steps: the knob leaves it answer-only."""
    text = "She has 3 + 4 = 8 apples, so the answer is 7."
    assert is_correct(text, "7", "gsm8k", check_steps=True)


def test_knob_default_and_grade_threads_it() -> None:
    """The default checks steps; ``rounds.grade`` (the server's grading of the clients' own paths,
    which decides the SLM -> LLM y+) and ``self_taught`` follow the knob."""
    assert LadaConfig().distill.check_steps is True
    bad = "4 - 3 = 0 . 0 + 8 = 9 . #### 9"
    probe = ProbeResult(stats=[SampleStats("p-1", 1.0, 5, 5, True, True, 0.0)],
                        own_paths=[ReasoningPath("p-1", "What is 4 - 3 + 8 ?", bad, "9", True)], public_accuracy=1.0)
    cands = [ReasoningPath("p-1", "What is 4 - 3 + 8 ?", "4 - 3 = 1 . 1 + 8 = 9 . #### 9", "9", True)]
    assert grade(probe, cands, check_steps=False).own_paths[0].correct
    on = grade(probe, cands, check_steps=True)
    assert not on.own_paths[0].correct and not on.stats[0].own_correct
    s = Sample("x-1", "arith", "What is 4 - 3 + 8 ?", "", "9", 2)
    assert self_taught([s], [bad], check_steps=False) and not self_taught([s], [bad], check_steps=True)
