"""The two losses of LaDa, in plain PyTorch.

``labels`` follow the Hugging Face convention: token ids of the reasoning path,
``-100`` on prompt and padding positions, aligned with ``input_ids`` (the
shift for next-token prediction happens here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(y_t | x, y_<t) and the mask of path tokens, both [B, T-1]."""
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != IGNORE
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, length_norm: bool = False) -> torch.Tensor:
    """Joint log-probability of each path: log π(y|x) = Σ_t log π(y_t | x, y_<t), shape [B].

    With ``length_norm`` it is divided by |y|, so long and short paths compare fairly.
    """
    picked, mask = token_logprobs(logits, labels)
    total = picked.sum(-1)
    if length_norm:
        total = total / mask.sum(-1).clamp_min(1)
    return total


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ordinary fine-tuning: mean next-token cross-entropy over path tokens."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


def contrastive_distillation_loss(
    policy_pos: torch.Tensor,
    policy_neg: torch.Tensor,
    ref_pos: torch.Tensor,
    ref_neg: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Domain-adaptive reasoning distillation (DPO-style, on sequence log-probs):

        L_CD = -log σ( β [ (log πθ(y⁺|x) - log π_ref(y⁺|x)) - (log πθ(y⁻|x) - log π_ref(y⁻|x)) ] )

    y⁺ is the sender's correct path, y⁻ the receiver's own path, π_ref the
    receiver frozen at the start of the round. Minimising it raises the
    receiver's preference for y⁺ over y⁻ relative to where it started, rather
    than copying the sender's surface text.
    """
    margin = (policy_pos - ref_pos) - (policy_neg - ref_neg)
    return -F.logsigmoid(beta * margin).mean()
