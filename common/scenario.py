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
from .rg_tasks import check_family, is_rg_domain
from .rg_tasks import client_split as rg_client_split
from .rg_tasks import draw as rg_draw


def _rg_domains(d: DataConfig) -> list[str]:
    """The clients' reasoning-gym domains, each once, in a fixed order (checked before any data)."""
    doms = sorted({dom for dom in d.client_domains.values() if is_rg_domain(dom)})
    for dom in doms:
        check_family(dom)
    return doms


def _rg_only(d: DataConfig) -> bool:
    """Every generated client domain is a reasoning-gym one: the public set and the server's own
    sets are then drawn from those families alone (an embedded mix would teach nothing they test)."""
    gen = [dom for dom in d.client_domains.values() if not is_gsm8k_domain(dom)]
    return bool(gen) and all(is_rg_domain(dom) for dom in gen)


@lru_cache(maxsize=8)
def _splits(d_json: str) -> Splits:
    d = DataConfig.model_validate_json(d_json)
    rg = _rg_domains(d)
    generated = {c: dom for c, dom in d.client_domains.items() if not is_gsm8k_domain(dom) and not is_rg_domain(dom)}
    # reasoning-gym families take their share of the public set (all of it when every client is one)
    n_rg_public = d.n_public if _rg_only(d) else d.n_public * len(rg) // (len(rg) + len(DOMAINS))
    sp = build_splits(generated, d.n_train, d.n_test, max(1, d.n_public - n_rg_public), d.n_server_test,
                      seed=d.seed, min_steps=d.min_steps, max_steps=d.max_steps)
    for c, dom in d.client_domains.items():
        if is_rg_domain(dom):
            sp.client_train[c], sp.client_test[c] = rg_client_split(dom, c, d.n_train, d.n_test, d.seed)
    if _rg_only(d):
        sp.public, sp.server_test = [], rg_draw(rg, d.n_server_test, d.seed, "server-test", test=True)
    if rg and n_rg_public:
        train_q = {s.question for v in sp.client_train.values() for s in v}
        sp.public = sp.public + rg_draw(rg, n_rg_public, d.seed, "public", test=False, exclude=train_q)
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
    if _rg_only(d):
        return rg_draw(_rg_domains(d), d.n_server_train, d.seed, "server-train", test=False)
    public = {s.domain for s in scenario_splits(d).public} & set(DOMAINS)  # GSM8K is not generated
    doms = d.server_domains or sorted(({*d.client_domains.values()} | public) & set(DOMAINS)) or sorted(DOMAINS)
    return generate(doms, d.n_server_train, seed=d.seed, prefix="server-train",
                    min_steps=d.min_steps, max_steps=d.max_steps)
