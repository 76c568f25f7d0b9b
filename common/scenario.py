"""The data of a run, as a pure function of its config (server and clients agree)."""

from __future__ import annotations

from functools import lru_cache

from .config import DataConfig
from .data import (
    DOMAINS,
    GSM8K_DOMAIN,
    Sample,
    Splits,
    build_splits,
    generate,
    gsm8k_client_split,
    is_gsm8k_domain,
    load_gsm8k_source,
)


@lru_cache(maxsize=8)
def _splits(d_json: str) -> Splits:
    d = DataConfig.model_validate_json(d_json)
    generated = {c: dom for c, dom in d.client_domains.items() if not is_gsm8k_domain(dom)}
    sp = build_splits(generated, d.n_train, d.n_test, d.n_public, d.n_server_test, seed=d.seed,
                      min_steps=d.min_steps, max_steps=d.max_steps)
    if d.gsm8k_public:
        sp.public = load_gsm8k_source(d.gsm8k_public, limit=d.n_public)
    public = {s.question for s in sp.public}
    for c, dom in d.client_domains.items():  # GSM8K-format client domains: split, never a public question
        if is_gsm8k_domain(dom):
            sp.client_train[c], sp.client_test[c] = gsm8k_client_split(
                dom[len(GSM8K_DOMAIN):], c, d.n_train, d.n_test, d.seed, public)
    return sp


def scenario_splits(d: DataConfig) -> Splits:
    return _splits(d.model_dump_json())


def server_train_set(d: DataConfig) -> list[Sample]:
    """The server's own private mix the LLM keeps fine-tuning on (its 'local data')."""
    if d.n_server_train == 0:
        return []
    public = {s.domain for s in scenario_splits(d).public} & set(DOMAINS)  # GSM8K is not generated
    doms = d.server_domains or sorted(({*d.client_domains.values()} | public) & set(DOMAINS)) or sorted(DOMAINS)
    return generate(doms, d.n_server_train, seed=d.seed, prefix="server-train",
                    min_steps=d.min_steps, max_steps=d.max_steps)
