"""A causal LM with LoRA adapters that learns one LaDa round.

The same class serves both directions: a client's SLM learning from the LLM's
paths, and the server's LLM learning from the SLMs' paths ("roles swapped").
It knows nothing of transport or storage.
"""

from __future__ import annotations

import copy
import math
import random
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .answers import extract, family_of
from .config import DistillConfig, FilterConfig, LoraConfig, TrainConfig
from .data import Sample, path_steps
from .losses import contrastive_distillation_loss, sequence_logprob, sft_loss
from .policy_names import LEARNS_FROM_REWARDS
from .textlm import encode_pairs, evaluate, forward_logits, generate_paths, path_logprobs, path_nll, pool_prompts

# peft calls a transformers 5 API that warns on every wrap; it is not ours to fix
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class Pair:
    """One allocated sample: the sender's correct path y⁺ and the receiver's own path y⁻
    (empty: no contrast for this pair, only the SFT on y⁺)."""

    sample_id: str
    question: str
    positive: str
    negative: str


@dataclass
class LearnerState:
    """Everything learning changes (adapter, optimizer, kept paths, RNGs): a copy taken at the
    start of a round lets a receiver undo that round when the server redoes it."""

    adapter: dict[str, torch.Tensor]
    optimizer: dict
    kept: dict[str, Sample]
    rng: object
    torch_rng: torch.Tensor


@dataclass
class LearnReport:
    sample_ids: list[str]
    nll_before: np.ndarray
    nll_after: np.ndarray
    steps: int
    seconds: float
    losses: dict[str, float] = field(default_factory=dict)
    alignment: np.ndarray | None = None  # per pair, when asked (filter.reward=aligned): see Learner.alignment


_ALIGN_STACK_BYTES = 256 << 20  # Learner.alignment keeps the pairs' gradients at once up to this size


def align_items(f: FilterConfig, method: str) -> int:
    """The slice a receiver aligns with this round: ``filter.align_items`` when the method's filters
    learn from alignment (``filter.reward=aligned`` and a method that learns from rewards), else
    none (no extra backward passes). The server decides, for the clients too (``Task.align_items``)."""
    return f.align_items if f.reward == "aligned" and method in LEARNS_FROM_REWARDS else 0


def held_out_slice(local: Sequence[Sample], k: int) -> tuple[list[Sample], list[Sample]]:
    """(held, rest): the ``k`` local samples with the smallest CRC-32 of their id, at most a quarter
    of them -- the same slice every round for the same data, and most data still trains."""
    k = min(k, len(local) // 4)
    order = sorted(range(len(local)), key=lambda i: (zlib.crc32(local[i].id.encode()), i))
    held_idx = set(order[:k])
    return ([local[i] for i in sorted(held_idx)], [s for i, s in enumerate(local) if i not in held_idx])


def _linear_targets(model: torch.nn.Module) -> list[str]:
    """Every linear/conv1d projection except the output head (GPT-2 uses Conv1D)."""
    names = set()
    for name, mod in model.named_modules():
        kind = type(mod).__name__
        if kind in ("Linear", "Conv1D") and not name.endswith("lm_head"):
            names.add(name.split(".")[-1])
    return sorted(names)


class Learner:
    def __init__(
        self,
        model: PreTrainedModel,
        tok: PreTrainedTokenizerBase,
        train: TrainConfig,
        distill: DistillConfig,
        lora: LoraConfig,
        seed: int = 0,
    ) -> None:
        self.tok = tok
        self.train_cfg, self.distill_cfg = train, distill
        self.merge_inference = lora.merge_inference
        self._merged = False  # inside an ``inference()`` block
        torch.manual_seed(seed)
        peft_cfg = PeftLoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules or _linear_targets(model),
            task_type="CAUSAL_LM",
            fan_in_fan_out=type(model).__name__.startswith("GPT2"),
        )
        self.model = get_peft_model(model, peft_cfg)
        self.model.eval()
        self.rng = random.Random(seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=0.0)
        # distill.retain: the y+ paths of earlier rounds, newest per sample id, kept as local SFT data
        self.kept: dict[str, Sample] = {}
        self.progress: str | None = None  # a label: generation and evaluation show progress (lada server)

    def uses_global_rng(self) -> bool:
        """Whether training draws from torch's global RNG: any dropout with p > 0 (a module, or a
        functional rate in the model config such as Llama's ``attention_dropout``). Learners that
        share a process may then only train one after the other, or their results would depend
        on timing (``server.overlap_learn``)."""
        if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in self.model.modules()):
            return True
        conf = self.model.get_base_model().config.to_dict()
        return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                   for k, v in conf.items() if "dropout" in k or "pdrop" in k)

    # ------------------------------------------------------------------ inference
    @contextmanager
    def inference(self) -> Iterator[torch.nn.Module]:
        """The model to run no-grad work on (generation, scoring, evaluation, embedding).

        With ``lora.merge_inference`` the adapter is merged into the base weights and every LoRA
        wrapper is swapped out for its base layer for the block, so the forward pass is the plain
        model's: peft's per-layer overhead was 14 % of the server's time and merged inference
        25-37 % faster (issue 17). On exit the original base weights are copied back (not
        un-merged by subtraction, which would drift a little every round) and the wrappers return,
        so training sees exactly the weights it had. Nested blocks reuse the outer merge. Nothing
        else may use this learner's model during the block (adapter_state would miss the swapped
        LoRA parameters)."""
        if not self.merge_inference:
            yield self.model
            return
        if self._merged:  # inside an outer block: it merged, it restores
            yield self.model.get_base_model()
            return
        root = self.model.get_base_model()
        layers = [(name, m) for name, m in root.named_modules() if isinstance(m, LoraLayer)]
        saved = []
        with torch.no_grad():
            for name, m in layers:
                w = m.get_base_layer().weight
                saved.append((w, w.detach().clone()))
                m.merge()
                parent, _, child = name.rpartition(".")
                setattr(root.get_submodule(parent), child, m.get_base_layer())
        self._merged = True
        try:
            yield root
        finally:
            self._merged = False
            with torch.no_grad():
                for (name, m), (w, orig) in zip(layers, saved):
                    parent, _, child = name.rpartition(".")
                    setattr(root.get_submodule(parent), child, m)
                    w.copy_(orig)
                    m.merged_adapters.clear()

    def paths(self, questions: Sequence[str], pooled: dict[int, torch.Tensor] | None = None) -> list[str]:
        """Greedy paths; ``pooled`` is filled with each prompt's mean last hidden state from the prefill."""
        c = self.train_cfg
        with self.inference() as model:
            return generate_paths(model, self.tok, questions, c.max_new_tokens, c.gen_batch_size,
                                  f"{self.progress}: generating paths" if self.progress else None,
                                  sort=c.sort_by_length, pooled=pooled)

    def pooled(self, questions: Sequence[str]) -> torch.Tensor:
        """Each prompt's mean last hidden state, as ``paths(pooled=...)`` gives it, without generating."""
        c = self.train_cfg
        with self.inference() as model:
            return pool_prompts(model, self.tok, questions, c.max_new_tokens, c.gen_batch_size, sort=c.sort_by_length)

    def nll(self, questions: Sequence[str], paths: Sequence[str]) -> np.ndarray:
        c = self.train_cfg
        with self.inference() as model:
            return path_nll(model, self.tok, questions, paths, c.max_len, c.gen_batch_size, sort=c.sort_by_length)

    def evaluate(self, samples: Sequence[Sample]) -> tuple[float, list[str], list[bool]]:
        c = self.train_cfg
        with self.inference() as model:
            return evaluate(model, self.tok, samples, c.max_new_tokens, c.gen_batch_size,
                            f"{self.progress}: evaluating" if self.progress else None, sort=c.sort_by_length)

    def answer_nll(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Cross-entropy of the bare final answer ('#### N'), FedMKT's selection signal."""
        return self.nll(questions, [f"#### {a}" for a in answers])

    # ------------------------------------------------------------------ learning
    def _seq_logp(self, questions: Sequence[str], paths: Sequence[str]) -> torch.Tensor:
        b = encode_pairs(self.tok, questions, paths, self.train_cfg.max_len).to(self.model.device)
        logits = forward_logits(self.model, b)
        return sequence_logprob(logits, b.labels, self.distill_cfg.length_norm)

    def _ref_logp(self, questions: Sequence[str], paths: Sequence[str]) -> np.ndarray:
        with self.inference() as model:
            s, n = path_logprobs(model, self.tok, questions, paths, self.train_cfg.max_len,
                                 self.train_cfg.gen_batch_size, sort=self.train_cfg.sort_by_length)
        return s / np.maximum(n, 1) if self.distill_cfg.length_norm else s

    def learn_round(self, local: Sequence[Sample], pairs: Sequence[Pair], align_items: int = 0,
                    align_to: Sequence[Sample] | None = None, align_center: bool = True) -> LearnReport:
        """L = L_SFT(local) + α·L_CD(pairs) + w⁺·L_SFT(y⁺), reference = self at round start.

        The local SFT data also holds the y⁺ kept from earlier rounds (``distill.retain``).
        Returns the per-sample NLL of y⁺ before and after, from which the
        caller computes the reward (learning gain) for its filter. ``align_items`` > 0
        (``filter.reward=aligned``): first, each pair's :meth:`alignment` with a fixed slice of
        ``align_to`` (default ``local``; :func:`held_out_slice`). A client passes its private set:
        its self-taught ``local`` can be nearly empty for a weak SLM (no slice, zero alignment) and
        changes every round; the private set does neither. The slice stays in the round's SFT: it
        probes the direction of the receiver's own loss, it is not an evaluation, and so every
        method trains on the same data whatever the reward knob.
        """
        t0 = time.perf_counter()
        c, d = self.train_cfg, self.distill_cfg
        align = None
        if align_items > 0:
            held, _ = held_out_slice(local if align_to is None else align_to, align_items)
            align = self.alignment(held, pairs, center=align_center)
        local = [*local, *self.kept.values()]
        qs = [p.question for p in pairs]
        pos = [p.positive for p in pairs]
        neg = [p.negative for p in pairs]
        has_neg = np.array([bool(n) for n in neg], dtype=bool)
        ref_neg = np.zeros(len(pairs))  # only pairs with a y⁻ enter the contrastive term
        with self.inference():  # one merge for the three no-grad passes
            nll_before = self.nll(qs, pos) if pairs else np.zeros(0)
            ref_pos = self._ref_logp(qs, pos) if pairs else np.zeros(0)
            if has_neg.any():
                k = np.flatnonzero(has_neg)
                ref_neg[k] = self._ref_logp([qs[i] for i in k], [neg[i] for i in k])

        cd_steps = c.cd_epochs * math.ceil(len(pairs) / c.batch_size) if pairs else 0
        n_steps = max(c.local_steps if local else 0, cd_steps)
        order: list[int] = []
        totals = {"sft": 0.0, "cd": 0.0, "pos": 0.0}
        self.model.train()
        for step in range(n_steps):
            loss = torch.zeros((), device=self.model.device)
            if local:
                batch = [local[self.rng.randrange(len(local))] for _ in range(c.batch_size)]
                b = encode_pairs(self.tok, [s.question for s in batch], [s.path for s in batch],
                                 c.max_len).to(self.model.device)
                l_sft = sft_loss(forward_logits(self.model, b), b.labels)
                loss = loss + l_sft
                totals["sft"] += l_sft.item()
            if step < cd_steps:
                if not order:
                    order = list(range(len(pairs)))
                    self.rng.shuffle(order)
                idx, order = order[: c.batch_size], order[c.batch_size :]
                bq = [qs[i] for i in idx]
                lp_pos = self._seq_logp(bq, [pos[i] for i in idx])
                cd_idx = [k for k, i in enumerate(idx) if has_neg[i]]
                if d.alpha > 0 and cd_idx:
                    sel = [idx[k] for k in cd_idx]
                    lp_neg = self._seq_logp([qs[i] for i in sel], [neg[i] for i in sel])
                    l_cd = contrastive_distillation_loss(
                        lp_pos[cd_idx], lp_neg,
                        torch.as_tensor(ref_pos[sel], dtype=lp_pos.dtype, device=lp_pos.device),
                        torch.as_tensor(ref_neg[sel], dtype=lp_pos.dtype, device=lp_pos.device),
                        d.beta,
                    ) * (len(cd_idx) / len(idx))
                    loss = loss + d.alpha * l_cd
                    totals["cd"] += l_cd.item()
                w_pos = d.sft_positive if d.alpha > 0 else max(d.sft_positive, 1.0)
                if w_pos > 0:
                    l_pos = -lp_pos.mean()  # SFT on the sender's path (per token when length-normalised)
                    loss = loss + w_pos * l_pos
                    totals["pos"] += l_pos.item()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
            self.opt.step()
        self.model.eval()
        nll_after = self.nll(qs, pos) if pairs else np.zeros(0)
        if d.retain:
            self.keep(pairs)
        losses = {k: v / max(n_steps, 1) for k, v in totals.items()}
        return LearnReport([p.sample_id for p in pairs], nll_before, nll_after, n_steps,
                           time.perf_counter() - t0, losses, align)

    def _loss_grad(self, params: list[torch.Tensor], questions: Sequence[str], paths: Sequence[str]) -> torch.Tensor:
        """The gradient of the mean token NLL of ``paths`` w.r.t. ``params``, flattened (float32)."""
        b = encode_pairs(self.tok, questions, paths, self.train_cfg.max_len).to(self.model.device)
        loss = sft_loss(forward_logits(self.model, b), b.labels)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                          for g, p in zip(grads, params)])

    def alignment(self, held: Sequence[Sample], pairs: Sequence[Pair], center: bool = True) -> np.ndarray:
        """First-order influence of each pair on this model's loss on ``held`` (TracIn / LESS):
        cos(∇ NLL(y⁺), ∇ NLL(held)) on the LoRA weights as they are now. > 0: a gradient step on y⁺
        also lowers the held-out loss -- what this receiver can learn for its own data, where the
        NLL drop of y⁺ after training on it mostly measures memorisation (issue 13). LoRA
        parameters only, one backward per pair; no dropout (eval mode), no parameter changes.
        Zeros when there is nothing held out to align with.

        ``center`` (``filter.align_center``): both gradients minus the pairs' mean gradient first.
        Every path shares a large common direction (the answer format, generic tokens) that ranks
        no pair above another; left in, it swamps the cosine (measured on the premise scenario,
        ``benchmarks/reward_signal.py``: own-domain, within-capacity samples stand out at Welch
        t = 1.0-1.7 uncentred, 1.0-5.0 centred)."""
        out = np.zeros(len(pairs))
        if not held or not pairs:
            return out
        params = [p for p in self.model.parameters() if p.requires_grad]
        was_training = self.model.training
        self.model.eval()
        try:
            bs = self.train_cfg.batch_size
            g_held = sum(self._loss_grad(params, [s.question for s in held[i:i + bs]], [s.path for s in held[i:i + bs]])
                         * len(held[i:i + bs]) for i in range(0, len(held), bs))
            assert isinstance(g_held, torch.Tensor)
            g_held = g_held / len(held)

            def grad(p: Pair) -> torch.Tensor:
                return self._loss_grad(params, [p.question], [p.positive])

            mu = torch.zeros_like(g_held)
            if center and len(pairs) > 1:
                # the pairs' gradients held at once if small (one pass), else a first pass for
                # their mean alone (two passes, memory of two gradients: a real model's LoRA)
                stacked = len(pairs) * g_held.numel() * 4 <= _ALIGN_STACK_BYTES
                grads = torch.stack([grad(p) for p in pairs]) if stacked else None
                mu = grads.mean(0) if grads is not None else sum(grad(p) for p in pairs) / len(pairs)
            else:
                grads = None
            h = g_held - mu
            h = h / h.norm().clamp_min(1e-12)
            for k, p in enumerate(pairs):
                g = (grads[k] if grads is not None else grad(p)) - mu
                out[k] = float((g @ h) / g.norm().clamp_min(1e-12))
        finally:
            self.model.train(was_training)
        return np.clip(out, -1.0, 1.0)

    def keep(self, pairs: Sequence[Pair]) -> None:
        """Add the pairs' y+ to the kept SFT data (a later path for a sample replaces the earlier one):
        one round's budget is tens of paths, too few for a small model to learn from once, while
        a few hundred kept over rounds are enough (docs/results.md, "The channel")."""
        for p in pairs:
            self.kept[p.sample_id] = Sample(p.sample_id, "", p.question, path_steps(p.positive),
                                            extract(p.positive, family_of(p.sample_id)) or "", 0)

    # ------------------------------------------------------------------ adapters
    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.named_parameters() if v.requires_grad}

    def snapshot(self) -> LearnerState:
        return LearnerState({k: v.clone() for k, v in self.adapter_state().items()},
                            copy.deepcopy(self.opt.state_dict()), dict(self.kept), self.rng.getstate(),
                            torch.get_rng_state())

    def restore(self, s: LearnerState) -> None:
        self._load_adapter_state(s.adapter)
        self.opt.load_state_dict(copy.deepcopy(s.optimizer))
        self.kept = dict(s.kept)
        self.rng.setstate(s.rng)
        torch.set_rng_state(s.torch_rng)

    def _load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for k, v in state.items():
                if k in params:
                    params[k].copy_(v)

