"""The per-pair views the round builds from a probe: each statistic lands in its own field."""

from __future__ import annotations

import numpy as np
from lada.common.rounds import ProbeResult, ReasoningPath, SampleStats
from lada.server.allocation import Teaching, down_view, up_view


def _round() -> tuple[Teaching, ProbeResult]:
    cands = [ReasoningPath("a", "qa", "pa", "1", True), ReasoningPath("b", "qb", "pb", "2", False)]
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


def test_up_view_swaps_the_roles() -> None:
    teach, pr = _round()
    correct = np.array([False, True])
    v = up_view(teach, pr, ["", "own b"], correct, np.array([0.0, 3.0]), np.array([0.0, 5.0]))
    assert v.sample_ids == ["a", "b"]
    assert v.receiver_nll.tolist() == [0.0, 3.0] and v.sender_len.tolist() == [0, 5]
    assert v.receiver_len.tolist() == [10, 20]
    assert v.sender_correct.tolist() == [False, True] and v.receiver_correct.tolist() == [True, False]
    assert v.teacher_ce.tolist() == [0.9, 0.8] and v.student_ce.tolist() == [0.1, 0.2]
    assert up_view(Teaching(teach.candidates, teach.lengths), pr, ["", ""], correct, np.zeros(2),
                   np.zeros(2)).teacher_ce is None  # no answer CEs unless a policy asked for them
