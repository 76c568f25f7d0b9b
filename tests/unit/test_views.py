"""The per-pair views the round builds from a probe: each statistic lands in its own field."""

from __future__ import annotations

import numpy as np
from lada.common.rounds import ProbeResult, ReasoningPath, SampleStats
from lada.server.allocation import Teaching, contexts, count_steps, down_view, up_view


def _round() -> tuple[Teaching, ProbeResult]:
    cands = [ReasoningPath("a", "qa", "4 - 3 = 1 . 1 + 8 = 9 . #### 9", "1", True),
             ReasoningPath("b", "qb", "2 * 3 = 6 . #### 6", "2", False)]
    teach = Teaching(cands, lengths=np.array([10.0, 20.0], dtype=np.float32), answer_ce=np.array([0.1, 0.2]))
    stats = [SampleStats("a", 1.5, 11, 7, own_correct=False, sender_correct=True, answer_ce=0.9),
             SampleStats("b", 2.5, 21, 8, own_correct=True, sender_correct=False, answer_ce=0.8)]
    return teach, ProbeResult(stats, [], 0.5)


def test_down_view_is_the_clients_statistics_on_the_llms_paths() -> None:
    teach, pr = _round()
    v = down_view(teach, pr)
    assert v.sample_ids == ["a", "b"]
    assert v.receiver_nll.tolist() == [1.5, 2.5] and v.receiver_len.tolist() == [7, 8]
    assert v.sender_len.tolist() == [10, 20]
    assert v.sender_correct.tolist() == [True, False] and v.receiver_correct.tolist() == [False, True]
    assert v.teacher_ce.tolist() == [0.1, 0.2] and v.student_ce.tolist() == [0.9, 0.8]
    assert v.sender_steps is not None and v.sender_steps.tolist() == [2, 1]  # the LLM's path's steps


def test_up_view_swaps_the_roles() -> None:
    teach, pr = _round()
    correct = np.array([False, True])
    v = up_view(teach, pr, ["", "own b"], correct, np.array([0.0, 3.0]), np.array([0.0, 5.0]))
    assert v.sample_ids == ["a", "b"]
    assert v.receiver_nll.tolist() == [0.0, 3.0] and v.sender_len.tolist() == [0, 5]
    assert v.receiver_len.tolist() == [10, 20]
    assert v.sender_correct.tolist() == [False, True] and v.receiver_correct.tolist() == [True, False]
    assert v.teacher_ce.tolist() == [0.9, 0.8] and v.student_ce.tolist() == [0.1, 0.2]
    assert v.sender_steps is not None and v.sender_steps.tolist() == [0, 1]  # "": none; "own b": one segment
    assert up_view(Teaching(teach.candidates, teach.lengths), pr, ["", ""], correct, np.zeros(2),
                   np.zeros(2)).teacher_ce is None  # no answer CEs unless a policy asked for them


def test_count_steps() -> None:
    assert count_steps("4 - 3 = 1 . 1 + 8 = 9 . #### 9") == 2
    assert count_steps("3 + 4 = 7 .\n7 * 2 = 14 .\n#### 14") == 2
    assert count_steps("first do this . then that . #### 3") == 2  # no '=': every segment is a step
    assert count_steps("#### 5") == 0 and count_steps("") == 0


def test_contexts_carry_what_learnability_depends_on() -> None:
    """Columns: sample part, then receiver NLL, receiver right, steps of y+, both lengths / 32,
    given before, times given, then the client's code (shared filter)."""
    teach, pr = _round()
    v = down_view(teach, pr)
    emb = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    x = contexts(emb, v, np.array([0, 3]), np.array([0.5, -0.5, 0.25]))
    assert x.shape == (2, 2 + 7 + 3)
    np.testing.assert_allclose(x[:, :2], emb)
    np.testing.assert_allclose(x[:, 2:9], [[1.5, 0, 2, 10 / 32, 7 / 32, 0, 0], [2.5, 1, 1, 20 / 32, 8 / 32, 1, 3]])
    np.testing.assert_allclose(x[:, 9:], [[0.5, -0.5, 0.25]] * 2)
    assert contexts(None, v).shape == (2, 7)
