"""The data of a run, as a pure function of its config (server and clients agree)."""

from __future__ import annotations

from functools import lru_cache

from .config import DataConfig
from .data import DOMAINS, GSM_SYMBOLIC, Sample, Splits, build_splits, generate, load_gsm8k_jsonl, load_gsm_symbolic


@lru_cache(maxsize=8)
def _splits(d_json: str) -> Splits:
    d = DataConfig.model_validate_json(d_json)
    sp = build_splits(d.client_domains, d.n_train, d.n_test, d.n_public, d.n_server_test, seed=d.seed,
                      min_steps=d.min_steps, max_steps=d.max_steps)
    if d.gsm8k_public == GSM_SYMBOLIC:
        sp.public = load_gsm_symbolic(limit=d.n_public)
    elif d.gsm8k_public:
        sp.public = load_gsm8k_jsonl(d.gsm8k_public, limit=d.n_public)
    return sp


def scenario_splits(d: DataConfig) -> Splits:
    return _splits(d.model_dump_json())


def server_train_set(d: DataConfig) -> list[Sample]:
    """The server's own private mix the LLM keeps fine-tuning on (its 'local data')."""
    if d.n_server_train == 0:
        return []
    public = {s.domain for s in scenario_splits(d).public} & set(DOMAINS)  # GSM8K is not generated
    doms = d.server_domains or sorted({*d.client_domains.values()} | public)
    return generate(doms, d.n_server_train, seed=d.seed, prefix="server-train",
                    min_steps=d.min_steps, max_steps=d.max_steps)
