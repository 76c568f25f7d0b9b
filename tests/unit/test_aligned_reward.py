"""The aligned reward (``filter.reward=aligned``, ``Learner.alignment``): the cosine of a y+'s loss
gradient with the receiver's held-out loss gradient on its LoRA weights at round start, reported
by the receiver and squashed into the filter's reward on the server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lada.common import learner as learner_mod
from lada.common import wire
from lada.common.config import LadaConfig
from lada.common.data import generate
from lada.common.learner import Learner, Pair, align_items, held_out_slice
from lada.common.models import resolve_model
from lada.common.proto.lada.v1 import messages_pb2
from lada.common.rounds import SampleReward, TaskInfo, TrainResult
from lada.common.textlm import load_model
from lada.server.allocation import AllocationService
from lada.server.transport.inprocess import InProcessGrid

from tests.support.paths import TINY


@pytest.fixture(scope="module")
def learner(tiny_overrides: dict) -> Learner:
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    model, tok = load_model(resolve_model(cfg.models.clients["client-1"], cfg.models, seed=cfg.data.seed))
    torch.set_num_threads(1)
    return Learner(model, tok, cfg.train, cfg.distill, cfg.lora, seed=0)


def test_a_held_out_item_aligns_more_than_an_unrelated_one(learner: Learner) -> None:
    """A y+ identical to a held-out item pushes the held-out loss down more than an unrelated path
    does, whatever the unrelated one; and measuring changes no weight."""
    held = generate(["arith"], 6, seed=1, prefix="held")
    other = generate(["shop"], 3, seed=2, prefix="other")
    pairs = [Pair(held[0].id, held[0].question, held[0].path, ""),
             *[Pair(s.id, s.question, s.path, "") for s in other],
             Pair("junk", "Q : zz", "#### #### . . = = 12 12 12", "")]
    before = {k: v.clone() for k, v in learner.adapter_state().items()}
    a = learner.alignment(held, pairs)
    assert a.shape == (len(pairs),) and np.all(np.abs(a) <= 1.0)
    assert a[0] > max(a[1:]) + 0.05, a
    assert a[0] > 0.3, a  # its own gradient is one sixth of the held-out one's
    after = learner.adapter_state()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not learner.alignment([], pairs).any()  # nothing held out: no information, zeros


def test_learn_round_reports_alignment_and_keeps_the_slice_in_training(learner: Learner) -> None:
    local = generate(["arith"], 20, seed=3, prefix="loc")
    held, rest = held_out_slice(local, 32)
    assert len(held) == 5 and len(rest) == 15 and not {s.id for s in held} & {s.id for s in rest}
    assert {s.id for s in held_out_slice(local[::-1], 32)[0]} == {s.id for s in held}  # by id, not order
    pairs = [Pair(s.id, s.question, s.path, "") for s in generate(["arith"], 3, seed=4, prefix="y")]
    snap = learner.snapshot()
    rep = learner.learn_round(local, pairs, align_items=32)
    learner.restore(snap)
    assert rep.alignment is not None and rep.alignment.shape == (3,)
    plain = learner.learn_round(local, pairs)
    learner.restore(snap)
    assert plain.alignment is None  # not asked: no extra backward passes
    # the slice stays in training and measuring moves nothing: the same round either way
    assert np.allclose(rep.nll_after, plain.nll_after, atol=1e-6), (rep.nll_after, plain.nll_after)


def test_centring_removes_the_direction_every_path_shares(learner: Learner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Centred on the pairs' mean gradient, alignments rank pairs against each other: the common
    part gone, they take both signs (their norm-weighted sum is zero), and the pair identical to a
    held-out item still ranks first."""
    held = generate(["arith"], 6, seed=1, prefix="held")
    pairs = [Pair(held[0].id, held[0].question, held[0].path, ""),
             *[Pair(s.id, s.question, s.path, "") for s in generate(["shop", "clock", "count"], 6, seed=2, prefix="o")]]
    raw = learner.alignment(held, pairs, center=False)
    cen = learner.alignment(held, pairs, center=True)
    assert not np.allclose(raw, cen), (raw, cen)
    assert cen.min() < 0 < cen.max(), cen
    assert cen.argmax() == 0 and cen[0] > 0.3, cen
    # a real model's LoRA gradients do not fit at once: two passes (mean first), the same numbers
    monkeypatch.setattr(learner_mod, "_ALIGN_STACK_BYTES", 0)
    assert np.allclose(learner.alignment(held, pairs, center=True), cen, atol=1e-5)


def test_rewards_follow_the_knob_in_both_directions() -> None:
    on = LadaConfig.load(overrides={"filter.reward": "aligned"}, env=False)
    paper = LadaConfig.load(overrides={"filter.reward": "nll_drop"}, env=False)
    assert LadaConfig().filter.reward == "aligned" and align_items(paper.filter, "lada") == 0
    assert align_items(on.filter, "lada") == on.filter.align_items
    assert align_items(on.filter, "random") == 0  # a method that learns nothing from rewards pays nothing
    svc = AllocationService(on)
    r = svc.rewards([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], [0.4, 0.0, -0.4])
    assert r[0] > 0.5 and r[1] == pytest.approx(0.5) and r[2] < 0.5  # the NLL drops, all equal, play no part
    with pytest.raises(ValueError, match="alignment"):
        svc.rewards([2.0], [1.0])
    batch = AllocationService(LadaConfig.load(overrides={"filter.reward": "aligned", "filter.reward_mode": "batch"},
                                              env=False)).rewards([2.0, 2.0], [1.0, 1.0], [0.4, 0.0])
    assert batch[0] == batch[1] > 0.5
    paper_r = AllocationService(paper).rewards([2.0, 2.0], [1.0, 2.0], [-1.0, 1.0])
    assert paper_r[0] > paper_r[1] == pytest.approx(0.5)  # nll_drop ignores any alignment sent


def test_alignment_travels_in_the_reward_report() -> None:
    res = TrainResult(samples=[SampleReward("p-1", 1.5, 1.0, -0.25)])
    back = wire.train_result(wire.reward_report(res, "c", TaskInfo("t", 1)))
    assert back.samples[0].alignment == pytest.approx(-0.25)


def test_the_server_asks_for_alignment_on_the_train_task() -> None:
    """The server's knobs decide what a client measures (a client's own config cannot disagree):
    Task.align_items/align_center reach the client's TaskInfo, over the wire and in process."""
    info = wire.task_info(messages_pb2.Task(task_id="t", round=2, align_items=7, align_center=False))
    assert (info.align_items, info.align_center) == (7, False)
    assert wire.task_info(messages_pb2.Task(task_id="t")).align_items == 0  # not asked: no extra passes

    class Recorder:  # a stand-in client: this tests the transport, not the learner
        def __init__(self) -> None:
            self.infos: list[TaskInfo] = []

        def train(self, info: TaskInfo, pairs: list) -> TrainResult:
            self.infos.append(info)
            return TrainResult(samples=[])

    app = Recorder()
    grid = InProcessGrid({"c": app})
    grid.train_align = (5, False)
    grid.train(1, {"c": []})
    assert (app.infos[0].align_items, app.infos[0].align_center) == (5, False)
