"""Client-side helpers shared by the tests of saved learner state."""

from __future__ import annotations

import torch
from lada.client.app import ClientApp
from lada.common.rounds import TaskInfo


def learn_a_round(app: ClientApp, run_key: str = "run-a") -> None:
    """Round 1 of ``run_key``: probe, move every adapter weight (so the state is unmistakably not the
    base model's), then train, which saves the state when the app has a state folder."""
    app.probe(TaskInfo(round=1, run_key=run_key), [])
    with torch.no_grad():
        for p in app.learner.model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    app.train(TaskInfo(round=1, run_key=run_key), [])
