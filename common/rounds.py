"""What one round exchanges, as plain dataclasses: the types of the transport seam.

The round loop (``lada.server.federation``), both transports and the client's
task handlers (``lada.client.app``) speak these; only ``lada.common.wire``
knows their protobuf form. Correctness flags set by a client are claims: the
round grades every path once against the public labels (``grade``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from .answers import family_of
from .data import is_correct


@dataclass(frozen=True)
class TaskInfo:
    """What a task handler needs to know about the task it runs."""

    task_id: str = ""
    round: int = 0
    evaluate: bool = False  # PROBE: also measure the local test accuracy before learning
    run_key: str = ""  # one run of one database: a client spots a redone round by it
    align_items: int = 0  # TRAIN: measure the aligned reward on this many own items (0: none)
    align_center: bool = True  # ... with both gradients centred (filter.align_center)


@dataclass(frozen=True)
class ReasoningPath:
    """One model's path for one public sample: a candidate the LLM offers, or a client's own path."""

    sample_id: str
    question: str
    text: str
    answer: str = ""  # the public label, so a receiver can check its own path
    correct: bool = False


@dataclass(frozen=True)
class SampleStats:
    """A receiver's learnability statistics of one sender path (the probe phase)."""

    sample_id: str
    nll: float  # receiver's mean per-token NLL of the sender's path
    sender_len: int  # sender path length in receiver tokens
    own_len: int  # receiver's own greedy path length
    own_correct: bool
    sender_correct: bool
    answer_ce: float  # receiver's cross-entropy of the bare final answer (FedMKT)


@dataclass
class ProbeResult:
    """A client's answer to a PROBE: statistics per candidate (in candidate order) and its own paths."""

    stats: list[SampleStats]
    own_paths: list[ReasoningPath]
    public_accuracy: float
    test_accuracy: float | None = None  # only when the task asked (the client's first round)
    bytes_down: int = 0


@dataclass(frozen=True)
class AllocatedPair:
    """One allocated sample: the sender's path y+ and the receiver's own path y- ("" = none)."""

    sample_id: str
    question: str
    positive: str
    negative: str = ""
    score: float = 0.0
    rank: int = 0


@dataclass(frozen=True)
class SampleReward:
    sample_id: str
    nll_before: float
    nll_after: float
    alignment: float = 0.0  # filter.reward=aligned: cos(grad of y+'s loss, grad of the receiver's held-out loss)


@dataclass
class TrainResult:
    """A client's answer to a TRAIN: NLL of each allocated y+ before and after learning."""

    samples: list[SampleReward] = field(default_factory=list)
    test_accuracy: float = 0.0
    steps: int = 0
    train_seconds: float = 0.0
    loss_sft: float = 0.0
    loss_cd: float = 0.0


def grade(probe: ProbeResult, candidates: Sequence[ReasoningPath], check_steps: bool = False) -> ProbeResult:
    """Correctness is the server's call, not the client's: grade the client's own paths against the
    public labels and take the sender's correctness from the server's own candidates.
    ``check_steps`` (``distill.check_steps``): a right path is a y+, every checkable step holds."""
    labels: Mapping[str, ReasoningPath] = {c.sample_id: c for c in candidates}
    own = []
    for p in probe.own_paths:
        c = labels.get(p.sample_id)
        answer = c.answer if c is not None else p.answer
        ok = is_correct(p.text, answer, family_of(p.sample_id), check_steps)
        own.append(replace(p, answer=answer, correct=ok))
    graded = {p.sample_id: p.correct for p in own}
    stats = [replace(s, own_correct=graded.get(s.sample_id, s.own_correct),
                     sender_correct=labels[s.sample_id].correct if s.sample_id in labels else s.sender_correct)
             for s in probe.stats]
    return replace(probe, stats=stats, own_paths=own)
