"""Text in, text out for any Hugging Face causal LM.

Paths travel between models as *text*, so every model only ever needs its own
tokenizer: these helpers tokenise prompt + path, score paths, and write paths
greedily. They are the only place that knows about padding sides and label
masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .answers import family_of
from .data import Sample, is_correct
from .losses import IGNORE, token_logprobs
from .progress import Progress
from .prompts import completion_text, finish, prompt_ids


def load_model(path: str, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model exactly as a hub model is loaded (a local folder or a hub name), in ``dtype`` on
    ``device`` (``common/models.py: load_for`` picks both from the config)."""
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device)
    model.eval()
    return model, tok


def _ids(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _prompt_ids(tok: PreTrainedTokenizerBase, question: str) -> list[int]:
    """The prompt in the tokenizer's prompt format (``common/prompts.py``; default: embedded)."""
    return prompt_ids(tok, question)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def encode_pairs(
    tok: PreTrainedTokenizerBase, questions: Sequence[str], paths: Sequence[str], max_len: int
) -> Batch:
    """Right-padded prompt + path + EOS; labels mask everything but the path."""
    rows, labels = [], []
    for q, p in zip(questions, paths, strict=True):
        pr = _prompt_ids(tok, q)
        comp = _ids(tok, completion_text(tok, p)) + [tok.eos_token_id]
        ids = (pr + comp)[:max_len]
        lab = ([IGNORE] * len(pr) + comp)[:max_len]
        rows.append(ids)
        labels.append(lab)
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    lab_t = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        lab_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return Batch(input_ids, mask, lab_t)


def forward_logits(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def batches(lengths: Sequence[int], batch_size: int, sort: bool) -> list[list[int]]:
    """Row indices in batches of ``batch_size``; ``sort``: rows of similar length together (by length,
    a stable sort), so a batch pads to little more than its rows need. Callers put results back by index."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__) if sort else list(range(len(lengths)))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def path_logprobs(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    questions: Sequence[str],
    paths: Sequence[str],
    max_len: int,
    batch_size: int = 128,
    sort: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of token log-probs of each path and its token count (numpy, [n] each). ``sort``: batch by
    length (``batches``); the values come back in input order."""
    device = next(model.parameters()).device
    if len(questions) != len(paths):
        raise ValueError(f"{len(questions)} questions but {len(paths)} paths")
    sums, counts = np.zeros(len(questions), np.float64), np.zeros(len(questions), np.int64)
    lengths = [len(q) + len(p) for q, p in zip(questions, paths)] if sort else [0] * len(questions)
    for idx in batches(lengths, batch_size, sort):
        b = encode_pairs(tok, [questions[i] for i in idx], [paths[i] for i in idx], max_len).to(device)
        picked, mask = token_logprobs(forward_logits(model, b), b.labels)
        sums[idx] = picked.sum(-1).cpu().numpy()
        counts[idx] = mask.sum(-1).cpu().numpy()
    return sums, counts


def path_nll(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    questions: Sequence[str],
    paths: Sequence[str],
    max_len: int,
    batch_size: int = 128,
    sort: bool = False,
) -> np.ndarray:
    """Mean per-token NLL of each path under the model: the learnability statistic."""
    s, n = path_logprobs(model, tok, questions, paths, max_len, batch_size, sort)
    return -s / np.maximum(n, 1)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's mean hidden state over its unmasked tokens, as float32 on the CPU."""
    m = mask.unsqueeze(-1).float()
    return ((hidden * m).sum(1) / m.sum(1).clamp_min(1)).float().cpu()


def _fit_prompts(model: PreTrainedModel, tok: PreTrainedTokenizerBase, questions: Sequence[str],
                 max_new_tokens: int) -> list[list[int]]:
    """Prompt ids, each cut to its last tokens where it would leave the path no room in the context."""
    n_ctx = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    room = max(1, n_ctx - max_new_tokens) if n_ctx else None
    prompts = [_prompt_ids(tok, q) for q in questions]
    return [p[-room:] for p in prompts] if room else prompts


@torch.inference_mode()
def generate_paths(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    questions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 128,
    progress: str | None = None,
    sort: bool = False,
    pooled: dict[int, torch.Tensor] | None = None,
) -> list[str]:
    """Greedy reasoning paths (chain of thought + '#### answer'). A prompt longer than the model's
    context leaves room for the path keeps its last tokens: a model with learned positions (GPT-2)
    would otherwise fail on a long question from another data set. ``progress``: the label of a
    progress bar on stderr over the batches (None: silent). ``sort``: batch prompts of similar
    token length together (less left padding to attend over); paths come back in input order.
    ``pooled``: filled with each prompt's mean last hidden state from the prefill generation runs
    anyway (question index -> vector), so an embedding costs no second forward pass (issue 17)."""
    device = next(model.parameters()).device
    out: list[str] = [""] * len(questions)
    pad = tok.pad_token_id
    all_prompts = _fit_prompts(model, tok, questions, max_new_tokens)
    with Progress(len(questions), progress or "", enabled=progress is not None, unit="path") as bar:
        for idx in batches([len(p) for p in all_prompts], batch_size, sort):
            prompts = [all_prompts[i] for i in idx]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, p in enumerate(prompts):  # left padding: every row ends where generation starts
                ids[j, width - len(p) :] = torch.tensor(p)
                mask[j, width - len(p) :] = 1
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
                **({"output_hidden_states": True, "return_dict_in_generate": True} if pooled is not None else {}),
            )
            if pooled is not None:  # step 0's hidden states are the prefill's, over the whole prompt
                for i, v in zip(idx, _mean_pool(gen.hidden_states[0][-1], mask.to(device))):
                    pooled[i] = v
                gen = gen.sequences
            for i, row in zip(idx, gen[:, width:].tolist()):
                if tok.eos_token_id in row:
                    row = row[: row.index(tok.eos_token_id)]
                out[i] = finish(tok, tok.decode(row, skip_special_tokens=True))
            bar.update(len(prompts))
    return out


@torch.inference_mode()
def pool_prompts(model: PreTrainedModel, tok: PreTrainedTokenizerBase, questions: Sequence[str],
                 max_new_tokens: int = 64, batch_size: int = 128, sort: bool = False) -> torch.Tensor:
    """Each prompt's mean last hidden state: what ``generate_paths(pooled=...)`` takes from the
    prefill, for when no generation runs (right padding: positions as generation's left padding
    gets them from the attention mask)."""
    device = next(model.parameters()).device
    prompts = _fit_prompts(model, tok, questions, max_new_tokens)
    out: torch.Tensor | None = None
    for idx in batches([len(p) for p in prompts], batch_size, sort):
        rows = [prompts[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        mask = mask.to(device)
        hs = model(input_ids=ids.to(device), attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        v = _mean_pool(hs, mask)
        if out is None:
            out = torch.zeros(len(prompts), v.shape[1])
        out[idx] = v
    return out if out is not None else torch.zeros(0, 1)


def evaluate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    samples: Sequence[Sample],
    max_new_tokens: int = 64,
    batch_size: int = 128,
    progress: str | None = None,
    sort: bool = False,
) -> tuple[float, list[str], list[bool]]:
    """Exact-match accuracy of greedy paths, with the paths and per-sample correctness."""
    paths = generate_paths(model, tok, [s.question for s in samples], max_new_tokens, batch_size, progress, sort)
    correct = [is_correct(p, s.answer, family_of(s.id)) for p, s in zip(paths, samples)]
    acc = float(np.mean(correct)) if correct else 0.0
    return acc, paths, correct
