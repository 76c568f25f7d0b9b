"""Server learn beside client learn (issue 17, ``server.overlap_learn``): the same results for a
seed as one phase after the other, with the two phases really running at once; filter updates
timed as a phase of their own; the held-out evaluation on a fixed subsample between the first
and the last round."""

from __future__ import annotations

import time

import numpy as np
import torch
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.common.rounds import ReasoningPath
from lada.server.allocation import Teaching
from lada.server.federation import Federation, RoundState, RoundSummary
from lada.server.transport.inprocess import InProcessGrid

from tests.support.paths import TINY


class SlowTrainGrid(InProcessGrid):
    """The in-process grid whose clients take a while longer to learn (as real ones do)."""

    def train(self, round_idx, allocations):  # noqa: ANN001, ANN201 - the Grid protocol's signature
        time.sleep(1.0)
        return super().train(round_idx, allocations)


def _run(overrides: dict, overlap: bool) -> Federation:
    cfg = LadaConfig.load(TINY, overrides={**overrides, "run.rounds": 1, "server.overlap_learn": overlap,
                                           "data.n_public": 40, "data.n_test": 10}, env=False)
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    fed = Federation(cfg, SlowTrainGrid(apps), None, log=lambda s: None)
    fed.run()
    return fed


def _flat(state: object, prefix: str = "") -> dict[str, object]:
    """A nested state dict as ``{path: plain value}`` (tensors as lists) to compare two of them."""
    if isinstance(state, dict):
        return {k: v for key, val in state.items() for k, v in _flat(val, f"{prefix}/{key}").items()}
    if isinstance(state, torch.Tensor):
        return {prefix: state.tolist()}
    if isinstance(state, np.ndarray):
        return {prefix: state.tolist()}
    return {prefix: state}


def test_overlapped_learning_gives_the_sequential_results(tiny_overrides: dict, one_torch_thread: None) -> None:
    seq, ovl = _run(tiny_overrides, False), _run(tiny_overrides, True)
    assert not seq.overlaps() and ovl.overlaps()
    a, b = seq.history[0], ovl.history[0]
    assert b.clients == a.clients and b.llm == a.llm and b.allocated == a.allocated
    assert seq.history[0].llm["n_allocated"] > 0  # the LLM learned from the clients' paths
    sa, sb = seq.alloc.state_dict(), ovl.alloc.state_dict()  # every filter learned the same rewards
    assert _flat(sa) == _flat(sb) and len(_flat(sa)) > 0
    la, lb = seq.llm.learner.adapter_state(), ovl.llm.learner.adapter_state()
    assert sorted(la) == sorted(lb) and all(torch.equal(la[k], lb[k]) for k in la)
    assert list(a.timings) == list(b.timings) == ["teach", "probe", "allocate", "client_learn", "server_learn",
                                                  "filter_update", "record"]
    # the learning part of the round (its wall time less the other phases): sequential, both learning
    # phases one after the other; overlapped, server learn ran inside client learn (which waits 1 s
    # more than the clients need), so that part is well under their sum
    def learning(s: RoundSummary) -> float:
        return s.wall - sum(v for k, v in s.timings.items() if k not in ("client_learn", "server_learn"))

    assert learning(a) >= a.timings["client_learn"] + a.timings["server_learn"]
    assert learning(b) < b.timings["client_learn"] + b.timings["server_learn"] - 0.5 * min(
        b.timings["client_learn"], b.timings["server_learn"])


def test_in_process_overlap_needs_an_llm_that_draws_no_global_randomness(tiny_overrides: dict,
                                                                          one_torch_thread: None) -> None:
    """In one process the clients' dropout draws from torch's global RNG: an LLM that draws too
    (LoRA dropout) would make results depend on which thread ran first, so it does not overlap."""
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "lora.dropout": 0.1}, env=False)
    fed = Federation(cfg, InProcessGrid({}), None, log=lambda s: None)
    assert fed.llm.learner.uses_global_rng() and not fed.overlaps()
    plain = Federation(LadaConfig.load(TINY, overrides=tiny_overrides, env=False), InProcessGrid({}), None,
                       log=lambda s: None)
    assert not plain.llm.learner.uses_global_rng() and plain.overlaps()
    state = torch.get_rng_state()  # and the embedded LLM's learning really draws nothing from it
    plain.llm.learn(plain.server_train[:8], [])
    assert torch.equal(state, torch.get_rng_state())


def test_mid_run_evaluation_uses_a_fixed_subsample(tiny_overrides: dict) -> None:
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 3, "server.eval_subsample": 7},
                          env=False)
    fed = Federation(cfg, InProcessGrid({}), None, log=lambda s: None)
    seen: list[int] = []
    fed.llm.evaluate = lambda samples: seen.append(len(samples)) or 0.5  # type: ignore[method-assign]
    again = Federation(cfg, InProcessGrid({}), None, log=lambda s: None)
    assert [s.id for s in fed.server_test_sub] == [s.id for s in again.server_test_sub]  # fixed for a seed
    assert len(fed.server_test_sub) == 7 and {s.id for s in fed.server_test_sub} <= {s.id for s in fed.server_test}
    fed.llm.learn = lambda *a: None  # type: ignore[method-assign]
    teach = Teaching(candidates=[ReasoningPath("p-0", "q", "#### 1", "1", True)], lengths=np.ones(1),
                     embedding=None)
    for t in (1, 2, 3):
        fed.server_learn(RoundState(t, of=3), teach, {})
    n = len(fed.server_test)
    assert n > 7 and seen == [n, 7, n]
