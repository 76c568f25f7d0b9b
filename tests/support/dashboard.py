"""Databases for the dashboard tests and benchmark.

``fill_demo_run`` writes, through ``Store`` (the server's own writer), a run
shaped like a real LaDa run: clients, rounds with per-phase timings, a public
set, allocations with the filter's scores in both directions, per-sample and
batch rewards, metrics (accuracy, rewards, bytes), reasoning paths and events.
One public sample's question carries a ``<script>`` payload and one event
message an HTML payload, so the tests can check that untrusted text is shown
as text.

``DB_BUILDERS`` maps a name to a function ``(tmp_dir) -> db_url``; the API tests
run against every entry, so a database recorded from a real run can be added
here and the same tests check it (or named by ``$LADA_DASHBOARD_TEST_DB``, which
adds a copy of that SQLite file as the entry ``env``).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lada.common.config import DataConfig
from lada.common.data import Sample
from lada.common.scenario import scenario_splits
from lada.server.db.tables import Client, Event, PublicSample, Round, Run
from lada.server.db.writer import RoundRecord, Store

XSS_QUESTION = "<script>window.__xss=1</script> What is 2 + 2 ?"
XSS_EVENT = '<img src=x onerror="window.__xss=2"> client sent a malformed chunk'
XSS_PATH = "<b>2 + 2</b> = 4 ."
JOIN_TOKEN = "join-s3cret-do-not-show"
XSS_INDEX = 4
XSS_SAMPLE_ID = f"public-{XSS_INDEX:05d}"
DOMAINS = ["arith", "shop", "clock", "count"]
PHASES = ["teach", "probe", "allocate", "learn_client", "learn_server", "record"]


def _public_set(data: dict) -> list[Sample]:
    """The run's public set as the server builds it (``common.scenario``, so the dashboard can recover
    each sample's difficulty from the stored config), with untrusted payloads in one 'arith' sample."""
    out = list(scenario_splits(DataConfig.model_validate(data)).public)
    if len(out) > XSS_INDEX:
        out[XSS_INDEX] = replace(out[XSS_INDEX], question=XSS_QUESTION, solution=XSS_PATH, answer="4")
    return out


def _path(s: Sample, correct: bool, rng: random.Random) -> str:
    if correct:
        return f"{s.solution} #### {s.answer}"
    return f"{s.solution.split(' . ')[0]} . #### {int(s.answer) + rng.choice([-2, -1, 1, 3])}"


def fill_demo_run(
    url: str,
    *,
    n_clients: int = 3,
    n_rounds: int = 5,
    n_public: int = 1000,
    budget: int = 100,
    server_budget: int = 50,
    seed: int = 0,
    finished: bool = True,
    name: str = "demo",
    paths: bool = True,
    method: str = "lada",
) -> int:
    """Write one realistic run into the database at ``url`` and return its id.

    ``finished=False`` leaves the run running in the middle of its last round
    (round started, not committed), as the dashboard sees a live run.
    ``budget`` allocations go to every client per round (LLM -> SLM) and
    ``server_budget`` SLM paths per client to the LLM (SLM -> LLM). With ``method="lada"``
    round 1 is a cold start, as the real policy's: every chosen sample scores 1.0 in both directions.
    """
    rng = random.Random(seed)
    store = Store(url)
    clients = [f"client-{k + 1}" for k in range(n_clients)]
    client_domain = {c: DOMAINS[k % 3] for k, c in enumerate(clients)}
    config = {
        "run": {
            "name": name,
            "seed": seed,
            "rounds": n_rounds,
            "method": method,
            "budget": budget,
            "server_budget": server_budget,
            "bidirectional": True,
            "threads": 1,
        },
        "data": {
            "seed": seed,
            "client_domains": client_domain,
            "n_train": 1000,
            "n_test": 500,
            "n_public": n_public,
            "n_server_test": 500,
            "n_server_train": 1000,
            "min_steps": 1,
            "max_steps": 3,
            "gsm8k_public": None,
        },
        "models": {
            "llm": "embedded:llm",
            "clients": {c: ("embedded:slm-llama" if k % 2 else "embedded:slm-gpt2") for k, c in enumerate(clients)},
            "cache_dir": ".lada/models",
        },
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None},
        "train": {"lr": 0.002, "batch_size": 32, "local_steps": 30, "cd_epochs": 2, "max_len": 128},
        "distill": {"alpha": 1.0, "beta": 0.5, "length_norm": True, "sft_positive": 0.5},
        "filter": {
            "lam": 1.0,
            "hidden": 64,
            "epochs": 10,
            "select": "topk",
            "cold_start": "kmeans",
            "reward_mode": "per_sample",
        },
        "server": {"address": "127.0.0.1:50051", "db": url, "join_token": JOIN_TOKEN,
                   "replica_db": "postgresql://lada:hunter2@db:5432/lada"},
    }
    run_id = store.create_run(name, method, config, n_rounds)
    samples = _public_set(config["data"])
    store.add_public_samples(run_id, samples)
    store.event(run_id, "run_start", "server", f"run {name!r} started with {n_clients} clients")
    for c in clients:
        store.upsert_client(run_id, c, config["models"]["clients"][c], client_domain[c])
        store.event(run_id, "join", c, f"{c} joined ({client_domain[c]})")

    acc = {c: 0.28 + 0.05 * k for k, c in enumerate(clients)}
    acc["llm"] = 0.61
    store.record_metrics(
        run_id,
        [(0, s, "accuracy", v) for s, v in acc.items()],
    )
    # a sample's intrinsic difficulty and how well it suits each client
    difficulty = [0.7 * (s.difficulty - 1) / 2 + 0.3 * rng.random() for s in samples]
    cold = method == "lada"
    last = n_rounds if finished else n_rounds - 1
    for r in range(1, n_rounds + 1):
        store.start_round(run_id, r)
        store.event(run_id, "round_start", "server", f"round {r} started")
        if r > last:
            break
        rec = RoundRecord()
        for k, c in enumerate(clients):
            scores = [
                min(
                    1.0,
                    max(
                        0.0,
                        0.55 * (s.domain == client_domain[c])
                        + 0.35 * (1 - difficulty[i])
                        + 0.08 * r / n_rounds
                        + rng.gauss(0, 0.08),
                    ),
                )
                for i, s in enumerate(samples)
            ]
            if r == 1 and c == clients[0] and n_public > XSS_INDEX:
                scores[XSS_INDEX] = 1.0  # the XSS sample is allocated (the top score), so the heat map shows it
            order = sorted(range(len(samples)), key=lambda i: -scores[i])[:budget]
            if cold and r == 1:  # no reward history: the policy marks what it chose with 1.0
                scores = [1.0] * len(scores)
            rewards = []
            for rank, i in enumerate(order):
                rec.allocations.append((c, "llm", samples[i].id, scores[i], rank))
                v = 1 / (1 + math.exp(-(scores[i] - 0.5) * 4 - rng.gauss(0, 0.5)))
                rewards.append(v)
                rec.rewards.append((c, "llm", samples[i].id, v))
            rec.rewards.append((c, "llm", "*", sum(rewards) / max(1, len(rewards))))
            # SLM -> LLM: the server's filter picks this client's paths novel for the LLM
            own = [i for i, s in enumerate(samples) if s.domain == client_domain[c]]
            up = sorted(own, key=lambda i: -difficulty[i] - rng.gauss(0, 0.2))[:server_budget]
            up_rewards = []
            for rank, i in enumerate(up):
                sc = 1.0 if cold and r == 1 else min(0.99, max(0.0, 0.4 + 0.5 * difficulty[i] + rng.gauss(0, 0.05)))
                rec.allocations.append(("llm", c, samples[i].id, sc, rank))
                v = 1 / (1 + math.exp(-(sc - 0.5) * 3 - rng.gauss(0, 0.5)))
                up_rewards.append(v)
                rec.rewards.append(("llm", c, samples[i].id, v))
            rec.rewards.append(("llm", c, "*", sum(up_rewards) / max(1, len(up_rewards))))
            acc[c] = min(0.95, acc[c] + 0.045 + rng.gauss(0, 0.01))
            rec.metrics += [
                (r, c, "accuracy", acc[c]),
                (r, c, "public_accuracy_before", acc[c] - 0.08),  # measured at the round's start
                (r, c, "reward", sum(rewards) / len(rewards)),
                (r, c, "bytes_down", budget * (900 + 350 * k + rng.randint(0, 80)) + 40_000),
                (r, c, "bytes_up", n_public * 48 + len(own) * (150 + 60 * k) + 12_000),
                (r, c, "n_allocated", budget),
            ]
            if paths:
                for i in own:
                    s = samples[i]
                    rec.paths.append((c, s.id, _path(s, ok := rng.random() < acc[c], rng), ok))
        acc["llm"] = min(0.97, acc["llm"] + 0.012 + rng.gauss(0, 0.004))
        rec.metrics += [
            (r, "llm", "accuracy", acc["llm"]),
            (r, "llm", "public_accuracy_before", acc["llm"] - 0.03),
            (r, "llm", "n_allocated", server_budget * n_clients),
        ]
        if paths:
            for i, s in enumerate(samples):
                ok = rng.random() < 0.9 - 0.3 * difficulty[i]
                rec.paths.append(("llm", s.id, _path(s, ok, rng), ok))
        rec.timings = {
            p: round(abs(rng.gauss(m, m / 8)), 3)
            for p, m in zip(PHASES, [14.0, 9.0, 0.6, 42.0, 21.0, 0.3], strict=True)
        }
        store.commit_round(run_id, r, rec)
        store.event(run_id, "round_end", "server", f"round {r} committed ({len(rec.allocations)} allocations)")
        if r == 2 and n_clients >= 3:
            store.set_client_state(run_id, clients[2], "dropped")
            store.event(run_id, "drop", clients[2], "heartbeat timeout after 30 s")
            store.event(run_id, "error", clients[2], XSS_EVENT)
            store.upsert_client(run_id, clients[2], config["models"]["clients"][clients[2]], client_domain[clients[2]])
            store.event(run_id, "join", clients[2], f"{clients[2]} re-joined and resumed from round 2")
        for c in clients:
            store.heartbeat(run_id, c)
    if finished:
        store.event(run_id, "run_end", "server", "run finished")
        store.finish_run(run_id)
    _spread_timestamps(store, run_id)
    store.engine.dispose()
    return run_id


def _spread_timestamps(store: Store, run_id: int) -> None:
    """Give rounds and events plausible wall-clock times (the fixture itself takes well under a second)."""
    with store.session() as s:
        run = s.get(Run, run_id)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        t0 = now - dt.timedelta(minutes=15)
        run.created_at = t0
        rounds = list(s.query(Round).filter(Round.run_id == run_id).order_by(Round.idx))
        for k, rd in enumerate(rounds):
            rd.started_at = t0 + dt.timedelta(seconds=20 + 150 * k)
            if rd.finished_at is not None:
                rd.finished_at = rd.started_at + dt.timedelta(seconds=sum((rd.timings or {}).values()) + 3)
        if run.finished_at is not None:
            run.finished_at = (rounds[-1].finished_at or now) + dt.timedelta(seconds=2)
        evs = list(s.query(Event).filter(Event.run_id == run_id).order_by(Event.id))
        for k, e in enumerate(evs):
            e.ts = t0 + dt.timedelta(seconds=5 + k * 650 / max(1, len(evs)))
        for c in s.query(Client).filter(Client.run_id == run_id):
            c.joined_at = t0 + dt.timedelta(seconds=3)


def demo_db(tmp: Path) -> str:
    url = f"sqlite:///{tmp / 'demo.db'}"
    fill_demo_run(url)
    return url


def two_runs_db(tmp: Path) -> str:
    """A finished run and a live one (mid-round) in one database."""
    url = f"sqlite:///{tmp / 'two.db'}"
    fill_demo_run(url, name="finished-run", n_public=300, budget=40, server_budget=10)
    fill_demo_run(url, name="live-run", n_public=300, budget=40, server_budget=10, finished=False, seed=1)
    return url


def env_db(tmp: Path) -> str:
    """A copy of the SQLite database named by $LADA_DASHBOARD_TEST_DB (e.g. one a real run wrote)."""
    src = Path(os.environ["LADA_DASHBOARD_TEST_DB"])
    dst = tmp / src.name
    con = sqlite3.connect(src)  # the backup API also copies what is still in the WAL
    with sqlite3.connect(dst) as out:
        con.backup(out)
    con.close()
    return f"sqlite:///{dst}"


def real_run_db(tmp: Path) -> str:
    """A database written by a REAL small run: the round loop, real tiny models,
    real LoRA training, in-process transport (the same code as over gRPC)."""
    from lada.client.app import ClientApp
    from lada.common.config import LadaConfig
    from lada.server.federation import Federation
    from lada.server.transport.inprocess import InProcessGrid

    from tests.support.paths import TINY, shared_model_cache

    url = f"sqlite:///{tmp / 'real.db'}"
    cfg = LadaConfig.load(TINY, overrides={"models.cache_dir": str(shared_model_cache()),
                                           "server.data_dir": str(tmp), "run.name": "real-tiny"}, env=False)
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    Federation(cfg, InProcessGrid(apps), Store(url), log=lambda s: None).run()
    return url


DB_BUILDERS: dict[str, Callable[[Path], str]] = {
    "demo": demo_db,
    "two_runs": two_runs_db,
    "real_run": real_run_db,
}
if os.environ.get("LADA_DASHBOARD_TEST_DB"):
    DB_BUILDERS["env"] = env_db


def advance_live_run(url: str, run_id: int, finish: bool = True) -> int:
    """Commit the round a live run is in (as the server would) and optionally finish the run.

    Returns the committed round's index. Used to check that open pages update without reloading.
    """
    store = Store(url, create=False)
    with store.session() as s:
        run = s.get(Run, run_id)
        idx = run.current_round
        clients = [c.name for c in s.query(Client).filter(Client.run_id == run_id).order_by(Client.name)]
        samples = [x[0] for x in s.query(PublicSample.sample_id).filter(PublicSample.run_id == run_id)
                   .order_by(PublicSample.sample_id).limit(20)]
    rec = RoundRecord()
    for k, c in enumerate(clients):
        for rank, sid in enumerate(samples):
            rec.allocations.append((c, "llm", sid, 0.9 - 0.01 * rank, rank))
        rec.rewards.append((c, "llm", "*", 0.9))
        rec.metrics += [(idx, c, "accuracy", 0.9 - 0.01 * k), (idx, c, "reward", 0.9),
                        (idx, c, "bytes_down", 150_000), (idx, c, "bytes_up", 90_000)]
    rec.metrics.append((idx, "llm", "accuracy", 0.93))
    rec.timings = dict(zip(PHASES, [10.0, 5.0, 0.5, 20.0, 10.0, 0.2], strict=True))
    store.commit_round(run_id, idx, rec)
    store.event(run_id, "round_end", "server", f"round {idx} committed (live update)")
    if finish:
        store.event(run_id, "run_end", "server", "run finished (live update)")
        store.finish_run(run_id)
    store.engine.dispose()
    return idx
