"""Typed read queries of the run database, for the dashboard (and anyone who reads runs).

Every function takes an open SQLAlchemy ``Session`` and only reads; results
are the pydantic models of ``views``. The conventions the values follow are in
``tables``; timestamps leave here as aware UTC datetimes. Configs leave here
masked (``lada.common.redact``), whatever the writer stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lada.common.config import DataConfig
from lada.common.redact import redact
from lada.common.scenario import scenario_splits
from pydantic import ValidationError
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from .tables import BATCH, LLM, Allocation, Client, Event, Metric, PublicSample, ReasoningPath, Reward, Round, Run
from .views import (
    AllocationInfo,
    AllocationRow,
    ClientDetail,
    ClientInfo,
    ClientRound,
    CompareRow,
    EventInfo,
    GivenCell,
    LiveState,
    MetricPoint,
    PathInfo,
    RoundInfo,
    RunCompare,
    RunDetail,
    RunSummary,
    SampleDetail,
    Series,
)

COLD_START_METHODS = ("lada",)  # policies whose first allocation per pair is a cold start (scores 1.0 = chosen)
MB = 1_000_000.0


def as_utc(ts: dt.datetime | None) -> dt.datetime | None:
    """A stored (naive UTC) timestamp as an aware UTC one."""
    if ts is None:
        return None
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()


def schema_ready(session: Session) -> bool:
    """True once the writer has created the tables (the dashboard may start first)."""
    return inspect(session.get_bind()).has_table(Run.__tablename__)


def _latest_accuracy(session: Session, run_ids: list[int]) -> dict[int, dict[str, tuple[int, float]]]:
    """run_id -> subject -> (round, value) of the latest 'accuracy' metric."""
    out: dict[int, dict[str, tuple[int, float]]] = defaultdict(dict)
    if not run_ids:
        return out
    q = select(Metric.run_id, Metric.subject, Metric.round_idx, Metric.value).where(
        Metric.run_id.in_(run_ids), Metric.name == "accuracy"
    )
    for run_id, subject, idx, value in session.execute(q):
        cur = out[run_id].get(subject)
        if cur is None or idx > cur[0]:
            out[run_id][subject] = (idx, value)
    return out


def _summaries(session: Session, runs: list[Run]) -> list[RunSummary]:
    ids = [r.id for r in runs]
    if not ids:
        return []
    n_clients = dict(
        session.execute(select(Client.run_id, func.count()).where(Client.run_id.in_(ids)).group_by(Client.run_id)).all()
    )
    n_done = dict(
        session.execute(
            select(Round.run_id, func.count())
            .where(Round.run_id.in_(ids), Round.status == "done")
            .group_by(Round.run_id)
        ).all()
    )
    acc = _latest_accuracy(session, ids)
    out = []
    for r in runs:
        subj = acc.get(r.id, {})
        llm = subj.get(LLM)
        slm = [v for s, v in subj.items() if s != LLM]
        last = max((i for i, _ in slm), default=None)
        slm_vals = [v for i, v in slm if i == last]
        out.append(
            RunSummary(
                id=r.id,
                name=r.name,
                status=r.status,
                method=r.method,
                rounds_total=r.rounds_total,
                current_round=r.current_round,
                rounds_done=n_done.get(r.id, 0),
                n_clients=n_clients.get(r.id, 0),
                created_at=as_utc(r.created_at),
                finished_at=as_utc(r.finished_at),
                reason=r.reason,
                llm_accuracy=llm[1] if llm else None,
                slm_accuracy=sum(slm_vals) / len(slm_vals) if slm_vals else None,
            )
        )
    return out


# =========================================================================== runs
def list_runs(session: Session) -> list[RunSummary]:
    """All runs, newest first."""
    if not schema_ready(session):
        return []
    runs = list(session.scalars(select(Run).order_by(Run.id.desc())))
    return _summaries(session, runs)


def get_run(session: Session, run_id: int) -> RunSummary | None:
    run = session.get(Run, run_id)
    return _summaries(session, [run])[0] if run is not None else None


def run_detail(session: Session, run_id: int) -> RunDetail | None:
    run = session.get(Run, run_id)
    if run is None:
        return None
    summary = _summaries(session, [run])[0]
    config = redact(run.config) if isinstance(run.config, dict) else {}
    return RunDetail(**summary.model_dump(), config=config)


def run_exists(session: Session, run_id: int) -> bool:
    return session.scalar(select(Run.id).where(Run.id == run_id)) is not None


# =========================================================================== clients, rounds
def clients(session: Session, run_id: int) -> list[ClientInfo]:
    acc: dict[str, dict[int, float]] = defaultdict(dict)
    for subject, idx, value in session.execute(
        select(Metric.subject, Metric.round_idx, Metric.value).where(
            Metric.run_id == run_id, Metric.name == "accuracy"
        )
    ):
        acc[subject][idx] = value
    out = []
    for c in session.scalars(select(Client).where(Client.run_id == run_id).order_by(Client.name)):
        a = acc.get(c.name, {})
        out.append(
            ClientInfo(
                name=c.name,
                model=c.model,
                domain=c.domain,
                state=c.state,
                joined_at=as_utc(c.joined_at),
                last_heartbeat=as_utc(c.last_heartbeat),
                accuracy=a[max(a)] if a else None,
                accuracy_start=a.get(0),
            )
        )
    return out


def rounds(session: Session, run_id: int) -> list[RoundInfo]:
    counts = dict(
        session.execute(
            select(Allocation.round_idx, func.count())
            .where(Allocation.run_id == run_id)
            .group_by(Allocation.round_idx)
        ).all()
    )
    out = []
    for r in session.scalars(select(Round).where(Round.run_id == run_id).order_by(Round.idx)):
        timings = {}
        for k, v in (r.timings or {}).items():
            try:
                timings[str(k)] = float(v)
            except (TypeError, ValueError):
                continue
        duration = (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else None
        out.append(
            RoundInfo(
                idx=r.idx,
                status=r.status,
                started_at=as_utc(r.started_at),
                finished_at=as_utc(r.finished_at),
                duration_s=duration,
                timings=timings,
                n_allocated=counts.get(r.idx, 0),
            )
        )
    return out


def phases(round_infos: list[RoundInfo]) -> list[str]:
    """Phase names over all rounds, in first-seen order (the rounds table's columns)."""
    seen: dict[str, None] = {}
    for r in round_infos:
        for k in r.timings:
            seen.setdefault(k, None)
    return list(seen)


def metrics(
    session: Session, run_id: int, name: str | None = None, subject: str | None = None
) -> list[MetricPoint]:
    q = select(Metric.round_idx, Metric.subject, Metric.name, Metric.value).where(Metric.run_id == run_id)
    if name:
        q = q.where(Metric.name == name)
    if subject:
        q = q.where(Metric.subject == subject)
    q = q.order_by(Metric.round_idx, Metric.subject, Metric.name)
    return [MetricPoint(round_idx=i, subject=s, name=n, value=v) for i, s, n, v in session.execute(q)]


# =========================================================================== cold start, difficulty
def cold_groups(session: Session, run_id: int) -> set[tuple[int, str, str]]:
    """(round, receiver, sender) whose allocations were a cold start.

    LaDa's policy has no reward history for a pair's first allocation and stores 1.0 for
    every chosen sample (``common.policies.LadaPolicy``): a 1.0 there means "picked by
    K-means", not "top confidence". Its learned scores are raw filter outputs, so a group
    that is exactly 1.0 throughout is that cold start.
    """
    method = session.scalar(select(Run.method).where(Run.id == run_id))
    if method not in COLD_START_METHODS:
        return set()
    q = (
        select(Allocation.round_idx, Allocation.receiver, Allocation.sender)
        .where(Allocation.run_id == run_id)
        .group_by(Allocation.round_idx, Allocation.receiver, Allocation.sender)
        .having(func.min(Allocation.score) == 1.0, func.max(Allocation.score) == 1.0)
    )
    return {(i, r, s) for i, r, s in session.execute(q)}


def cold_start_of(session: Session, run_id: int, rows: Any) -> set[tuple[int, str, str]]:
    """``cold_groups`` over allocation rows already read (round, receiver, sender, sample, score, ...):
    the heat map's query has them, so no second pass over the table."""
    if session.scalar(select(Run.method).where(Run.id == run_id)) not in COLD_START_METHODS:
        return set()
    all_one: dict[tuple[int, str, str], bool] = {}
    for idx, rec, snd, _sid, score, *_ in rows:
        key = (idx, rec, snd)
        all_one[key] = all_one.get(key, True) and score == 1.0
    return {k for k, v in all_one.items() if v}


@lru_cache(maxsize=16)
def _generated_public(data_json: str) -> dict[str, tuple[str, int]]:
    d = DataConfig.model_validate_json(data_json)
    return {s.id: (s.question, s.difficulty) for s in scenario_splits(d).public}


def difficulties(session: Session, run_id: int) -> dict[str, int]:
    """sample id -> difficulty (reasoning steps) of a run's public samples.

    The table stores no difficulty, but a run's data is a pure function of its config
    (``common.scenario``): it is regenerated from the stored ``data`` section, and kept
    only for samples whose stored question is the regenerated one (an edited corpus, an
    older generator or a GSM8K file that is not here give "unknown", never a wrong value).
    """
    config = session.scalar(select(Run.config).where(Run.id == run_id))
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return {}
    try:
        gen = _generated_public(json.dumps(data, sort_keys=True))
    except (ValidationError, OSError, ValueError, ImportError):
        return {}
    out = {}
    for sid, question in session.execute(
        select(PublicSample.sample_id, PublicSample.question).where(PublicSample.run_id == run_id)
    ):
        g = gen.get(sid)
        if g is not None and g[0] == question:
            out[sid] = g[1]
    return out


def sample_detail(session: Session, run_id: int, sample_id: str) -> SampleDetail | None:
    ps = session.scalars(
        select(PublicSample).where(PublicSample.run_id == run_id, PublicSample.sample_id == sample_id)
    ).first()
    allocs = session.execute(
        select(Allocation.round_idx, Allocation.receiver, Allocation.sender, Allocation.score, Allocation.rank)
        .where(Allocation.run_id == run_id, Allocation.sample_id == sample_id)
        .order_by(Allocation.round_idx, Allocation.receiver, Allocation.sender)
    ).all()
    paths = session.execute(
        select(ReasoningPath.round_idx, ReasoningPath.author, ReasoningPath.text, ReasoningPath.correct)
        .where(ReasoningPath.run_id == run_id, ReasoningPath.sample_id == sample_id)
        .order_by(ReasoningPath.round_idx, ReasoningPath.author)
    ).all()
    if ps is None and not allocs and not paths:
        return None
    rewards: dict[tuple[int, str, str, str], float] = {}
    for idx, rec, snd, sid, v in session.execute(
        select(Reward.round_idx, Reward.receiver, Reward.sender, Reward.sample_id, Reward.value).where(
            Reward.run_id == run_id, Reward.sample_id.in_((sample_id, BATCH))
        )
    ):
        rewards[(idx, rec, snd, sid)] = v
    cold = cold_groups(session, run_id)
    return SampleDetail(
        sample_id=sample_id,
        domain=ps.domain if ps else "?",
        difficulty=difficulties(session, run_id).get(sample_id) if ps else None,
        question=ps.question if ps else "",
        answer=ps.answer if ps else "",
        allocations=[
            AllocationInfo(
                round_idx=idx, receiver=rec, sender=snd, score=score, rank=rank,
                reward=rewards.get((idx, rec, snd, sample_id)),
                batch_reward=rewards.get((idx, rec, snd, BATCH)),
                cold_start=(idx, rec, snd) in cold,
            )
            for idx, rec, snd, score, rank in allocs
        ],
        paths=[PathInfo(round_idx=i, author=a, text=t, correct=bool(c)) for i, a, t, c in paths],
    )


# =========================================================================== events, live state
def events(
    session: Session, run_id: int, after_id: int = 0, limit: int = 200, kind: str | None = None
) -> list[EventInfo]:
    """Events of a run in id order: the latest ``limit``, or the first ``limit`` after ``after_id``."""
    q = select(Event).where(Event.run_id == run_id)
    if kind:
        q = q.where(Event.kind == kind)
    if after_id:
        rows = list(session.scalars(q.where(Event.id > after_id).order_by(Event.id).limit(limit)))
    else:
        rows = list(session.scalars(q.order_by(Event.id.desc()).limit(limit)))[::-1]
    return [EventInfo(id=e.id, ts=as_utc(e.ts), kind=e.kind, subject=e.subject or "", message=e.message or "")
            for e in rows]


def live_state(session: Session, run_id: int) -> LiveState | None:
    run = session.get(Run, run_id)
    if run is None:
        return None
    cl = session.execute(
        select(Client.name, Client.state, Client.last_heartbeat).where(Client.run_id == run_id).order_by(Client.name)
    ).all()
    rd = session.execute(
        select(Round.idx, Round.status, Round.finished_at).where(Round.run_id == run_id).order_by(Round.idx)
    ).all()

    def top(model: Any) -> tuple[Any, Any]:
        return session.execute(select(func.max(model.id), func.count()).where(model.run_id == run_id)).one()

    met, alloc, ev = top(Metric), top(Allocation), top(Event)
    return LiveState(
        run_id=run.id,
        status=run.status,
        current_round=run.current_round,
        rounds_total=run.rounds_total,
        rounds_done=sum(1 for r in rd if r[1] == "done"),
        last_event_id=ev[0] or 0,
        versions={
            "run": _digest(run.status, run.current_round, run.rounds_total, run.finished_at),
            "clients": _digest(cl),
            "rounds": _digest(rd),
            "metrics": _digest(met, top(Reward)),
            "allocations": _digest(alloc),
            "events": _digest(ev),
        },
        server_time=as_utc(dt.datetime.now(dt.timezone.utc)),
    )


# =========================================================================== one client
@dataclass
class _Cell:
    n: int = 0
    cold: int = 0
    scores: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


def _rewards_by_pair(session: Session, run_id: int, subject: str) -> dict[tuple[int, str, str], float]:
    """(round, receiver, sender) -> reward for the pairs ``subject`` is in: the batch reward, else the
    mean per-sample one (as the run page's reward chart)."""
    batch: dict[tuple[int, str, str], float] = {}
    per: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for idx, rec, snd, sid, v in session.execute(
        select(Reward.round_idx, Reward.receiver, Reward.sender, Reward.sample_id, Reward.value).where(
            Reward.run_id == run_id, (Reward.receiver == subject) | (Reward.sender == subject)
        )
    ):
        if sid == BATCH:
            batch[(idx, rec, snd)] = v
        else:
            per[(idx, rec, snd)].append(v)
    out = {k: sum(v) / len(v) for k, v in per.items()}
    out.update(batch)
    return out


def client_detail(session: Session, run_id: int, name: str) -> ClientDetail | None:
    """One client of a run: its accuracy and rewards per round, what it was given (and gave) by
    domain and difficulty, and its events. None for an unknown run or client."""
    run = get_run(session, run_id)
    info = next((c for c in clients(session, run_id) if c.name == name), None) if run else None
    if run is None or info is None:
        return None
    metric: dict[str, dict[int, float]] = defaultdict(dict)
    for idx, mname, value in session.execute(
        select(Metric.round_idx, Metric.name, Metric.value).where(Metric.run_id == run_id, Metric.subject == name)
    ):
        metric[mname][idx] = value
    pair_reward = _rewards_by_pair(session, run_id, name)
    cold = cold_groups(session, run_id)
    diff = difficulties(session, run_id)
    domain_of = dict(session.execute(
        select(PublicSample.sample_id, PublicSample.domain).where(PublicSample.run_id == run_id)).all())
    sample_reward = {
        (idx, rec, snd, sid): v
        for idx, rec, snd, sid, v in session.execute(
            select(Reward.round_idx, Reward.receiver, Reward.sender, Reward.sample_id, Reward.value).where(
                Reward.run_id == run_id, Reward.sample_id != BATCH,
                (Reward.receiver == name) | (Reward.sender == name))
        )
    }
    received: dict[int, int] = defaultdict(int)
    sent: dict[int, int] = defaultdict(int)
    cells: dict[tuple[str, str, int | None], _Cell] = {}
    for idx, rec, snd, sid, score in session.execute(
        select(Allocation.round_idx, Allocation.receiver, Allocation.sender, Allocation.sample_id, Allocation.score)
        .where(Allocation.run_id == run_id, (Allocation.receiver == name) | (Allocation.sender == name))
    ):
        direction = "down" if rec == name else "up"
        (received if direction == "down" else sent)[idx] += 1
        key: tuple[str, str, int | None] = (direction, domain_of.get(sid, "?"), diff.get(sid))
        c = cells.setdefault(key, _Cell())
        c.n += 1
        if (idx, rec, snd) in cold:
            c.cold += 1
        else:
            c.scores.append(score)
        r = sample_reward.get((idx, rec, snd, sid))
        if r is not None:
            c.rewards.append(r)

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    given = [
        GivenCell(direction=d, domain=dom, difficulty=k, n=c.n, n_cold=c.cold, mean_score=mean(c.scores),
                  mean_reward=mean(c.rewards))
        for (d, dom, k), c in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0))
    ]
    round_ids = set(session.scalars(select(Round.idx).where(Round.run_id == run_id)))
    round_ids |= {i for pts in metric.values() for i in pts} | set(received) | set(sent)
    rows = []
    for idx in sorted(round_ids):
        down = [v for (i, rec, _), v in pair_reward.items() if i == idx and rec == name]
        up = [v for (i, rec, snd), v in pair_reward.items() if i == idx and rec == LLM and snd == name]
        moved = [metric[m][idx] for m in ("bytes_up", "bytes_down") if idx in metric[m]]
        rows.append(ClientRound(
            round_idx=idx,
            accuracy=metric["accuracy"].get(idx),
            public_accuracy_before=metric["public_accuracy_before"].get(idx),
            received=received.get(idx, 0),
            sent=sent.get(idx, 0),
            reward=mean(down) if down else metric["reward"].get(idx),
            reward_to_llm=mean(up),
            cold_start=any(i == idx and rec == name for i, rec, _ in cold),
            mb=sum(moved) / MB if moved else None,
        ))
    evs = [EventInfo(id=e.id, ts=as_utc(e.ts), kind=e.kind, subject=e.subject or "", message=e.message or "")
           for e in session.scalars(select(Event).where(Event.run_id == run_id, Event.subject == name)
                                    .order_by(Event.id))]
    return ClientDetail(run=run, client=info, rounds=rows, given=given, events=evs)


# =========================================================================== comparison, downloads
def compare(session: Session, run_ids: list[int]) -> RunCompare:
    """Runs side by side (unknown ids are left out; the caller checks there are enough)."""
    runs = [r for r in (session.get(Run, i) for i in dict.fromkeys(run_ids)) if r is not None]
    summaries = _summaries(session, runs)
    acc: dict[int, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    mb: dict[int, float] = defaultdict(float)
    for rid, idx, subject, name, value in session.execute(
        select(Metric.run_id, Metric.round_idx, Metric.subject, Metric.name, Metric.value).where(
            Metric.run_id.in_([r.id for r in runs]), Metric.name.in_(("accuracy", "bytes_up", "bytes_down")))
    ):
        if name == "accuracy":
            acc[rid][subject][idx] = value
        else:
            mb[rid] += value / MB
    llm_series, slm_series, final = [], [], []
    now = dt.datetime.now(dt.timezone.utc)
    for run, summ in zip(runs, summaries, strict=True):
        subj = acc[run.id]
        llm = subj.get(LLM, {})
        by_round: dict[int, list[float]] = defaultdict(list)
        for s, pts in subj.items():
            if s != LLM:
                for i, v in pts.items():
                    by_round[i].append(v)
        slm = {i: sum(v) / len(v) for i, v in by_round.items()}
        if llm:
            llm_series.append(Series(name=str(run.id), x=sorted(llm), y=[llm[i] for i in sorted(llm)]))
        if slm:
            slm_series.append(Series(name=str(run.id), x=sorted(slm), y=[slm[i] for i in sorted(slm)]))
        end = summ.finished_at or now
        final.append(CompareRow(
            id=run.id, name=run.name, method=run.method, status=run.status, rounds_done=summ.rounds_done,
            llm_start=llm.get(0), llm_final=llm[max(llm)] if llm else None,
            slm_start=slm.get(0), slm_final=slm[max(slm)] if slm else None,
            clients={s: pts[max(pts)] if pts else None for s, pts in sorted(subj.items()) if s != LLM},
            total_mb=mb[run.id], duration_s=(end - summ.created_at).total_seconds(),
        ))
    return RunCompare(runs=summaries, llm_accuracy=llm_series, slm_accuracy=slm_series, final=final)


def allocation_rows(session: Session, run_id: int) -> list[AllocationRow]:
    """Every allocation of a run with its sample's domain, difficulty, cold-start flag and rewards."""
    cold = cold_groups(session, run_id)
    diff = difficulties(session, run_id)
    domain_of = dict(session.execute(
        select(PublicSample.sample_id, PublicSample.domain).where(PublicSample.run_id == run_id)).all())
    rewards = {(i, r, s, sid): v for i, r, s, sid, v in session.execute(
        select(Reward.round_idx, Reward.receiver, Reward.sender, Reward.sample_id, Reward.value)
        .where(Reward.run_id == run_id))}
    q = (select(Allocation.round_idx, Allocation.receiver, Allocation.sender, Allocation.sample_id,
                Allocation.score, Allocation.rank)
         .where(Allocation.run_id == run_id)
         .order_by(Allocation.round_idx, Allocation.receiver, Allocation.sender, Allocation.rank))
    return [
        AllocationRow(round_idx=i, receiver=r, sender=s, sample_id=sid, domain=domain_of.get(sid, "?"),
                      difficulty=diff.get(sid), score=score, rank=rank, cold_start=(i, r, s) in cold,
                      reward=rewards.get((i, r, s, sid)), batch_reward=rewards.get((i, r, s, BATCH)))
        for i, r, s, sid, score, rank in session.execute(q)
    ]
