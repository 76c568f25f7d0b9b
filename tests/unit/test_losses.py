from __future__ import annotations

import torch
from lada.common.losses import IGNORE, contrastive_distillation_loss, sequence_logprob, sft_loss


def test_sequence_logprob_sums_path_tokens_only() -> None:
    logits = torch.zeros(1, 4, 5)  # uniform: log p = -log 5 per token
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3]])  # 2 path tokens (positions 2,3 predicted from 1,2)
    lp = sequence_logprob(logits, labels)
    assert torch.allclose(lp, torch.tensor([-2 * torch.log(torch.tensor(5.0))]))
    assert torch.allclose(sequence_logprob(logits, labels, length_norm=True), lp / 2)


def test_cd_loss_value_at_zero_margin() -> None:
    z = torch.zeros(3)
    assert torch.allclose(contrastive_distillation_loss(z, z, z, z, beta=0.5), torch.log(torch.tensor(2.0)))


def test_cd_gradient_raises_positive_relative_to_negative() -> None:
    """A gradient step on L_CD raises log p(y+) - log p(y-) of a real little model."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(7, 16)
    head = torch.nn.Linear(16, 7)
    opt = torch.optim.SGD([*emb.parameters(), *head.parameters()], lr=0.5)
    x = torch.tensor([[1, 2, 3, 4], [1, 2, 5, 6]])  # row 0: y+ ; row 1: y-
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4], [IGNORE, IGNORE, 5, 6]])

    def logps() -> torch.Tensor:
        return sequence_logprob(head(emb(x)), labels)

    with torch.no_grad():
        ref = logps()
    before = ref[0] - ref[1]
    for _ in range(5):
        lp = logps()
        loss = contrastive_distillation_loss(lp[:1], lp[1:], ref[:1], ref[1:], beta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = logps()
    assert (after[0] - after[1]) > before + 0.1
    assert loss.item() < torch.log(torch.tensor(2.0)).item()


def test_sft_loss_matches_cross_entropy() -> None:
    logits = torch.randn(2, 5, 9)
    labels = torch.tensor([[IGNORE, 1, 2, 3, IGNORE], [IGNORE, IGNORE, 4, 5, 6]])
    manual = -(sequence_logprob(logits, labels).sum() / (labels[:, 1:] != IGNORE).sum())
    assert torch.allclose(sft_loss(logits, labels), manual, atol=1e-5)
