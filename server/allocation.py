"""Allocation service: one policy (filter) per (receiver, sender) pair, in both
directions (or one per direction shared by every client, ``filter.share``);
builds the context vectors and turns learning gains into rewards.

The policy math lives in ``lada.common.policies``; this module only assembles
its inputs from what the clients and the LLM reported, and keeps what a context
needs across rounds: the LLM embedding frozen at its first round (and its
K-means clusters), and how often each receiver was given each sample.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lada.common.config import LadaConfig
from lada.common.data import path_steps
from lada.common.filters import kmeans, squash_reward
from lada.common.policies import POLICIES, Allocation, AllocationContext, AllocationPolicy, make_policy, retrain_stale
from lada.common.policy_names import LEARNS_FROM_REWARDS
from lada.common.rounds import ProbeResult, ReasoningPath

LLM = "llm"
ANY = "*"  # the other end of a shared filter (filter.share)
CODE_DIM = 8  # width of a client's code in a shared filter's context
_FROZEN_IDS = "~frozen_ids"  # the frozen embedding's sample ids, stored beside "given"
_SEGMENT = re.compile(r"\n| \. |\.$")


def count_steps(text: str) -> int:
    """Reasoning steps of a path (its difficulty): the segments of its solution that compute
    something (hold an ``=``), or every non-empty segment where none does."""
    segs = [g.strip() for g in _SEGMENT.split(path_steps(text)) if g.strip()]
    calc = sum("=" in g for g in segs)
    return calc if calc else len(segs)


@dataclass
class PairView:
    """Per-candidate statistics of one receiver on one sender's paths."""

    sample_ids: list[str]
    receiver_nll: np.ndarray      # receiver's mean token NLL of the sender path
    sender_len: np.ndarray
    receiver_len: np.ndarray
    sender_correct: np.ndarray
    receiver_correct: np.ndarray
    teacher_ce: np.ndarray | None = None
    student_ce: np.ndarray | None = None
    sender_steps: np.ndarray | None = None  # reasoning steps of the sender's path y+ (difficulty)


@dataclass
class Teaching:
    """What the LLM offers in a round: its path per public sample, their grades and lengths, and
    what the policies need of the LLM besides (embedding, answer cross-entropies)."""

    candidates: list[ReasoningPath]
    lengths: np.ndarray  # LLM tokens per path
    embedding: np.ndarray | None = None
    answer_ce: np.ndarray | None = None  # only for policies that need it

    @property
    def correct(self) -> np.ndarray:
        return np.array([c.correct for c in self.candidates], dtype=bool)


def down_view(teach: Teaching, probe: ProbeResult) -> PairView:
    """LLM -> client: the client's statistics on the LLM's paths (in candidate order)."""
    stats = probe.stats
    return PairView(
        sample_ids=[s.sample_id for s in stats],
        receiver_nll=np.array([s.nll for s in stats], dtype=np.float64),
        sender_len=teach.lengths,
        receiver_len=np.array([s.own_len for s in stats], dtype=np.float32),
        sender_correct=teach.correct,
        receiver_correct=np.array([s.own_correct for s in stats], dtype=bool),
        teacher_ce=teach.answer_ce,
        student_ce=np.array([s.answer_ce for s in stats], dtype=np.float64),
        sender_steps=np.array([count_steps(c.text) for c in teach.candidates], dtype=np.float32),
    )


def up_eligible(slm_correct: np.ndarray, llm_correct: np.ndarray) -> np.ndarray:
    """Which SLM paths the LLM may learn: a y+ on a sample whose own path is not (DESIGN §3.5;
    issue 13). Where the LLM is already right, an SLM path only pays for imitation."""
    return np.asarray(slm_correct, dtype=bool) & ~np.asarray(llm_correct, dtype=bool)


def up_view(teach: Teaching, probe: ProbeResult, paths: list[str], correct: np.ndarray, llm_nll: np.ndarray,
            path_lengths: np.ndarray) -> PairView:
    """Client -> LLM: the LLM's statistics on the client's own paths (one per public sample; "" and
    not correct where the client sent none). ``sender_correct`` is :func:`up_eligible`: only the
    SLM's y+ on samples the LLM gets wrong can be allocated, by any policy."""
    return PairView(
        sample_ids=[c.sample_id for c in teach.candidates],
        receiver_nll=llm_nll,
        sender_len=path_lengths,
        receiver_len=teach.lengths,
        sender_correct=up_eligible(correct, teach.correct),
        receiver_correct=teach.correct,
        teacher_ce=np.array([s.answer_ce for s in probe.stats]) if teach.answer_ce is not None else None,
        student_ce=teach.answer_ce,
        sender_steps=np.array([count_steps(p) for p in paths], dtype=np.float32),
    )


def contexts(embedding: np.ndarray | None, v: PairView, given_count: np.ndarray | None = None,
             code: np.ndarray | None = None) -> np.ndarray:
    """Context = sample part (frozen-embedding cluster and/or vector) ⊕ learnability statistics:
    the receiver's NLL of y+ and whether its own path is right, y+'s steps and both lengths, and
    whether and how often the receiver was given the sample before ⊕ the client's code when one
    filter serves every client (docs/architecture.md, "One round")."""
    n = len(v.sample_ids)
    steps = v.sender_steps if v.sender_steps is not None else np.zeros(n, dtype=np.float32)
    given = np.zeros(n) if given_count is None else np.asarray(given_count, dtype=np.float64)
    stats = np.stack(
        [
            v.receiver_nll,
            v.receiver_correct.astype(np.float32),
            steps,
            v.sender_len / 32.0,
            v.receiver_len / 32.0,
            (given > 0).astype(np.float32),
            given,
        ],
        axis=1,
    ).astype(np.float32)
    if not np.all(np.isfinite(stats)):
        raise ValueError("learnability statistics contain NaN or inf")
    parts = [stats] if embedding is None else [np.asarray(embedding, dtype=np.float32), stats]
    if code is not None:
        parts.append(np.broadcast_to(np.asarray(code, dtype=np.float32), (n, len(code))))
    return np.concatenate(parts, axis=1)


def client_code(name: str) -> np.ndarray:
    """A fixed unit-scale vector per client name (seeded by its CRC-32), how a shared filter tells
    clients apart without a cap on their number or an order of arrival."""
    return (np.random.default_rng(zlib.crc32(name.encode())).normal(size=CODE_DIM) / np.sqrt(CODE_DIM)).astype(
        np.float32)


class AllocationService:
    def __init__(self, cfg: LadaConfig, method: str | None = None) -> None:
        self.cfg = cfg
        self.method = method or cfg.run.method
        self.policies: dict[tuple[str, str], AllocationPolicy] = {}
        self._last: dict[tuple[str, str], tuple[AllocationContext, Allocation]] = {}
        self.given: dict[tuple[str, str], set[str]] = {}  # (receiver, sender) -> sample ids given so far
        self.counts: dict[tuple[str, str], Counter[str]] = {}  # (receiver, sender) -> times each was given
        self.frozen_ids: list[str] = []  # sample ids of the frozen embedding's rows
        self.frozen: np.ndarray | None = None  # the LLM embedding of the first round that had one
        self.cluster: np.ndarray | None = None  # its K-means cluster per row
        self._stale = False  # some filter took rewards since the filters were last retrained
        policy = POLICIES.get(self.method)
        self.collaborates = policy.collaborates if policy else True  # (unknown: make_policy names the error)
        self.needs_answer_ce = policy.needs_answer_ce if policy else False

    def key(self, receiver: str, sender: str) -> tuple[str, str]:
        """The filter a pair uses: its own, or with ``filter.share`` its direction's."""
        if not self.cfg.filter.share:
            return receiver, sender
        return (ANY, sender) if receiver != LLM else (receiver, ANY)

    def policy(self, receiver: str, sender: str, dim: int) -> AllocationPolicy:
        key = self.key(receiver, sender)
        if key not in self.policies:
            seed = self.cfg.run.seed * 7919 + sum(map(ord, f"{key[0]}<-{key[1]}"))
            self.policies[key] = make_policy(self.method, self.cfg.filter, dim, seed)
        return self.policies[key]

    def _sample_part(self, embedding: np.ndarray | None, sample_ids: list[str]) -> np.ndarray | None:
        """The frozen embedding's rows for ``sample_ids`` as ``filter.context_embedding`` asks:
        frozen at the first call that has an embedding, so contexts do not follow the LLM as it
        trains; a sample the frozen set lacks takes its current vector and nearest cluster."""
        f = self.cfg.filter
        if f.context_embedding == "none" or (embedding is None and self.needs_embedding(sample_ids)):
            return None
        emb = self.frozen if embedding is None else np.asarray(embedding, dtype=np.float32)
        if self.frozen is None:
            self.frozen_ids, self.frozen = list(sample_ids), emb.copy()
            self.cluster, _ = kmeans(self.frozen, min(f.clusters, len(emb)), self.cfg.run.seed)
        assert self.cluster is not None
        row = {sid: i for i, sid in enumerate(self.frozen_ids)}
        vec = np.stack([self.frozen[row[s]] if s in row else emb[k] for k, s in enumerate(sample_ids)])
        if all(s in row for s in sample_ids):
            lab = self.cluster[[row[s] for s in sample_ids]]
        else:  # nearest centroid (raw space) of the frozen clusters
            cents = np.stack([self.frozen[self.cluster == j].mean(0) if (self.cluster == j).any()
                              else np.full(emb.shape[1], np.inf) for j in range(int(self.cluster.max()) + 1)])
            lab = np.array([self.cluster[row[s]] if s in row else int(np.argmin(((cents - vec[k]) ** 2).sum(1)))
                            for k, s in enumerate(sample_ids)])
        onehot = np.eye(f.clusters, dtype=np.float32)[lab]
        return {"cluster": onehot, "frozen": vec, "both": np.concatenate([onehot, vec], axis=1)}[f.context_embedding]

    def needs_embedding(self, sample_ids: list[str]) -> bool:
        """Whether a round must embed these samples: not once the frozen embedding holds them all
        (from the second round on, the LLM's current embedding would go unused)."""
        if self.cfg.filter.context_embedding == "none":
            return False
        if self.frozen is None:
            return True
        have = set(self.frozen_ids)
        return not all(s in have for s in sample_ids)

    def allocate(self, receiver: str, sender: str, embedding: np.ndarray | None, view: PairView,
                 budget: int, round_idx: int) -> Allocation:
        times = self.counts.setdefault((receiver, sender), Counter())
        seen = self.given.get((receiver, sender), set())
        count = np.array([max(times[sid], int(sid in seen)) for sid in view.sample_ids], dtype=np.int64)
        offer = count == 0 if self.cfg.run.fresh_only else None  # a sample given before is not offered again
        code = None
        if self.cfg.filter.share:
            code = client_code(receiver if receiver != LLM else sender)
        emb = self._sample_part(embedding if self.cfg.filter.embedding == "llm" else None, view.sample_ids)
        ctx = AllocationContext(
            sample_ids=view.sample_ids,
            contexts=contexts(emb, view, count, code),
            receiver_nll=view.receiver_nll,
            sender_correct=view.sender_correct,
            receiver_correct=view.receiver_correct,
            teacher_ce=view.teacher_ce,
            student_ce=view.student_ce,
            offer=offer,
            given_count=count,
        )
        if self._stale:  # the round's first allocation: retrain every pair's filter at once
            self.retrain()
        alloc = self.policy(receiver, sender, ctx.contexts.shape[1]).allocate(ctx, budget, round_idx)
        self._last[(receiver, sender)] = (ctx, alloc)
        times.update(view.sample_ids[i] for i in alloc.indices)
        self.given.setdefault((receiver, sender), set()).update(view.sample_ids[i] for i in alloc.indices)
        return alloc

    def retrain(self) -> int:
        """Retrain every filter that took rewards since it last trained, all pairs (both directions)
        together in one batched computation (``lada.common.filters.retrain_all``), instead of each
        on its own when it next scores; how many were retrained. ``allocate`` calls it once a round,
        before the round's first allocation; a filter trains on nothing that arrives later in the
        round either way (its rewards come in ``update``, after every allocation of the round)."""
        self._stale = False
        return retrain_stale(self.policies.values())

    def rewards(self, nll_before: Sequence[float], nll_after: Sequence[float],
                alignment: Sequence[float] | None = None) -> np.ndarray:
        """Reward per allocated sample, or one shared batch reward (``filter.reward_mode``), from
        ``filter.reward``: the squashed NLL drop (the paper's), or the squashed alignment the
        receiver measured (``Learner.alignment``); both directions follow the same knobs."""
        b = np.asarray(nll_before, dtype=np.float64)
        a = np.asarray(nll_after, dtype=np.float64)
        if len(b) == 0:
            return np.zeros(0)
        f = self.cfg.filter
        # a method that learns nothing from rewards asks nobody for alignment (Task.align_items): it
        # records the NLL drop the round measures anyway
        if f.reward == "aligned" and self.method in LEARNS_FROM_REWARDS:
            if alignment is None or len(alignment) != len(b):
                raise ValueError("filter.reward=aligned needs the receiver's alignment for every allocated sample")
            c = np.asarray(alignment, dtype=np.float64)
            if not np.all(np.isfinite(c)):
                raise ValueError("alignment values must be finite")
            c = np.full(len(c), c.mean()) if f.reward_mode == "batch" else c
            return 1.0 / (1.0 + np.exp(-f.reward_scale * c))
        if f.reward_mode == "batch":
            return np.full(len(b), float(squash_reward(b.mean(), a.mean(), f.reward_scale)))
        return np.asarray(squash_reward(b, a, f.reward_scale), dtype=np.float64)

    def update(self, receiver: str, sender: str, sample_ids: Sequence[str], rewards: Sequence[float]) -> None:
        """Feed this round's rewards to the pair's filter (retrains on the whole history), with
        what the filter predicted when it chose each sample."""
        if (receiver, sender) not in self._last:
            return
        ctx, alloc = self._last[(receiver, sender)]
        pos = {sid: i for i, sid in enumerate(ctx.sample_ids)}
        idx = [pos[s] for s in sample_ids if s in pos]
        rw = [float(r) for s, r in zip(sample_ids, rewards) if s in pos]
        if idx:
            self.policies[self.key(receiver, sender)].update(ctx, idx, rw, alloc)
            self._stale = True

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Every filter's tensors (``"<receiver><-<sender>/<name>"``), its context width, and what each
        receiver was given so far: all a resumed server needs to allocate as this one would."""
        tensors: dict[str, torch.Tensor] = {}
        dims: dict[str, int] = {}
        for (recv, send), pol in sorted(self.policies.items()):
            key = f"{recv}<-{send}"
            dims[key] = int(pol.context_dim)
            for k, v in pol.state_dict().items():
                tensors[f"{key}/{k}"] = v.detach().cpu().contiguous()
        given: dict[str, list[str]] = {}  # a sample given twice is listed twice
        for key in sorted(set(self.given) | set(self.counts)):
            times = self.counts.get(key, Counter())
            extra = self.given.get(key, set()) - set(times)  # in given only (set by hand): once
            given[f"{key[0]}<-{key[1]}"] = sorted([*times.elements(), *extra])
        if self.frozen is not None and self.cluster is not None:
            tensors["frozen/embedding"] = torch.from_numpy(self.frozen.copy())
            tensors["frozen/cluster"] = torch.from_numpy(self.cluster.astype(np.int64))
            given[_FROZEN_IDS] = list(self.frozen_ids)
        return {"tensors": tensors, "dims": dims, "given": given}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        given = dict(state.get("given", {}))
        ids = given.pop(_FROZEN_IDS, None)
        self.counts = {tuple(k.split("<-", 1)): Counter(v) for k, v in given.items()}  # type: ignore[misc]
        self.given = {k: set(v) for k, v in self.counts.items()}
        tensors = state["tensors"]
        if ids is not None and "frozen/embedding" in tensors:
            self.frozen_ids = list(ids)
            self.frozen = tensors["frozen/embedding"].numpy().astype(np.float32)
            self.cluster = tensors["frozen/cluster"].numpy().astype(np.int64)
        for key, dim in state["dims"].items():
            recv, send = key.split("<-", 1)
            prefix = f"{key}/"
            self.policy(recv, send, int(dim)).load_state_dict(
                {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        self._stale = True  # a checkpoint may hold filters that had not retrained yet
