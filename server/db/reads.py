"""Typed read queries of the run database, for the dashboard (and anyone who reads runs).

Every function takes an open SQLAlchemy ``Session`` and only reads; results
are the pydantic models of ``views``. The conventions the values follow are in
``tables``; timestamps leave here as aware UTC datetimes. Configs leave here
masked (``lada.common.redact``), whatever the writer stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from typing import Any

from lada.common.redact import redact
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from .tables import BATCH, LLM, Allocation, Client, Event, Metric, PublicSample, ReasoningPath, Reward, Round, Run
from .views import (
    AllocationInfo,
    ClientInfo,
    EventInfo,
    LiveState,
    MetricPoint,
    PathInfo,
    RoundInfo,
    RunDetail,
    RunSummary,
    SampleDetail,
)


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
    return SampleDetail(
        sample_id=sample_id,
        domain=ps.domain if ps else "?",
        question=ps.question if ps else "",
        answer=ps.answer if ps else "",
        allocations=[
            AllocationInfo(
                round_idx=idx, receiver=rec, sender=snd, score=score, rank=rank,
                reward=rewards.get((idx, rec, snd, sample_id)),
                batch_reward=rewards.get((idx, rec, snd, BATCH)),
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
