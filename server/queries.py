"""Read side of the run database: typed queries for the dashboard (and anyone who reads runs).

Every function takes an open SQLAlchemy ``Session`` and only reads. Results are
pydantic models, which the dashboard's JSON API uses as its response schemas,
so the API and the OpenAPI document come from one definition.

Conventions of the writer (``lada.server.storage``) this module relies on:

* ``Metric.round_idx`` 0 is "before any collaboration"; ``subject`` is a client
  name or ``"llm"``; ``bytes_up`` / ``bytes_down`` are bytes moved *in* that
  round (cumulative sums are computed here).
* ``Allocation.receiver == "llm"`` is the SLM -> LLM direction ("up"); every
  other receiver is a client receiving the LLM's paths ("down").
* ``Reward.sample_id == "*"`` is the batch reward of a (round, receiver, sender).
* All timestamps are naive UTC; they leave this module as aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from lada.server.storage import (
    Allocation,
    Client,
    Event,
    Metric,
    PublicSample,
    ReasoningPath,
    Reward,
    Round,
    Run,
)
from pydantic import BaseModel, Field
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

LLM = "llm"
BATCH = "*"
MB = 1_000_000.0
TERMINAL_STATUSES = ("finished", "failed")
SCORE_DIGITS = 4
Direction = Literal["down", "up"]


def _utc(ts: dt.datetime | None) -> dt.datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


SECRET_KEY_RE = re.compile(
    r"(^|[_.-])(token|secret|password|passwd|credentials?|api_?key|private_key)$", re.IGNORECASE
)
URL_PASSWORD_RE = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")
REDACTED = "***"


def redact(value: Any, key: str = "") -> Any:
    """The config as the dashboard may show it: secrets (join token, passwords in DB URLs) masked."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if key and SECRET_KEY_RE.search(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return URL_PASSWORD_RE.sub(rf"\1{REDACTED}@", value)
    return value


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()


# =========================================================================== schemas
class RunSummary(BaseModel):
    id: int
    name: str
    status: str = Field(description="pending | running | finished | failed")
    method: str
    rounds_total: int
    current_round: int
    rounds_done: int = Field(description="rounds committed (status done)")
    n_clients: int
    created_at: dt.datetime
    finished_at: dt.datetime | None = None
    llm_accuracy: float | None = Field(None, description="the LLM's held-out accuracy at the latest round")
    slm_accuracy: float | None = Field(None, description="mean SLM local test accuracy at the latest round")


class RunDetail(RunSummary):
    config: dict[str, Any] = Field(
        description="the run config (sections run, data, models, ...), secrets such as the join token masked"
    )


class ClientInfo(BaseModel):
    name: str
    model: str
    domain: str
    state: str = Field(description="registered | active | dropped | left")
    joined_at: dt.datetime | None = None
    last_heartbeat: dt.datetime | None = None
    accuracy: float | None = Field(None, description="latest local test accuracy")
    accuracy_start: float | None = Field(None, description="local test accuracy at round 0")


class RoundInfo(BaseModel):
    idx: int
    status: str
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_s: float | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="phase -> seconds")
    n_allocated: int = Field(0, description="allocation rows of the round (both directions)")


class MetricPoint(BaseModel):
    round_idx: int
    subject: str
    name: str
    value: float


class Series(BaseModel):
    name: str = Field(description="a client name or 'llm' (or 'total')")
    x: list[int] = Field(description="round indices")
    y: list[float]


class ChartData(BaseModel):
    rounds: list[int]
    subjects: list[str] = Field(description="every subject with data, clients first then 'llm'")
    accuracy: list[Series] = Field(description="local test accuracy of each SLM, held-out accuracy of the LLM")
    public_accuracy: list[Series]
    reward: list[Series] = Field(description="reward per receiver and round (batch reward, else mean)")
    bytes_cumulative_mb: list[Series] = Field(description="cumulative MB (up + down) per subject, and 'total'")
    budget_mb: float | None = Field(None, description="communication budget the totals are compared with")


class GridRow(BaseModel):
    peer: str = Field(description="the client on the other end (receiver for 'down', sender for 'up')")
    round_idx: int


class AllocationGrid(BaseModel):
    """Public samples x (client, round), in columns: cell i is (row[i], col[i]) with score[i], rank[i].

    Scores are rounded to 4 decimals (they colour a heat map; ``SampleDetail`` has them exact).
    """

    direction: Direction
    rows: list[GridRow]
    samples: list[str] = Field(description="sample ids, one per column")
    domains: list[str] = Field(description="domain of each column's sample")
    row: list[int]
    col: list[int]
    score: list[float]
    rank: list[int]
    score_min: float | None = None
    score_max: float | None = None


class AllocationInfo(BaseModel):
    round_idx: int
    receiver: str
    sender: str
    score: float
    rank: int
    reward: float | None = Field(None, description="per-sample reward, if the run records them")
    batch_reward: float | None = Field(None, description="the batch reward of (round, receiver, sender)")


class PathInfo(BaseModel):
    round_idx: int
    author: str
    text: str
    correct: bool


class SampleDetail(BaseModel):
    sample_id: str
    domain: str
    question: str
    answer: str
    allocations: list[AllocationInfo]
    paths: list[PathInfo]


class EventInfo(BaseModel):
    id: int
    ts: dt.datetime
    kind: str
    subject: str
    message: str


class LiveState(BaseModel):
    """Small, cheap snapshot the pages poll; a changed version says which part to refetch."""

    run_id: int
    status: str
    current_round: int
    rounds_total: int
    rounds_done: int
    last_event_id: int
    versions: dict[str, str] = Field(description="part -> opaque version (clients, rounds, metrics, ...)")
    server_time: dt.datetime


# =========================================================================== helpers
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
                created_at=_utc(r.created_at),
                finished_at=_utc(r.finished_at),
                llm_accuracy=llm[1] if llm else None,
                slm_accuracy=sum(slm_vals) / len(slm_vals) if slm_vals else None,
            )
        )
    return out


def _subject_order(subjects: set[str] | list[str]) -> list[str]:
    return sorted((s for s in subjects if s != LLM), key=str) + ([LLM] if LLM in subjects else [])


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
                joined_at=_utc(c.joined_at),
                last_heartbeat=_utc(c.last_heartbeat),
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
                started_at=_utc(r.started_at),
                finished_at=_utc(r.finished_at),
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


# =========================================================================== metrics, charts
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


def _series(values: dict[str, dict[int, float]], order: list[str]) -> list[Series]:
    out = []
    for s in order:
        pts = values.get(s)
        if pts:
            xs = sorted(pts)
            out.append(Series(name=s, x=xs, y=[pts[i] for i in xs]))
    return out


def charts(session: Session, run_id: int, budget_mb: float | None = None) -> ChartData:
    by_name: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for idx, subject, name, value in session.execute(
        select(Metric.round_idx, Metric.subject, Metric.name, Metric.value).where(
            Metric.run_id == run_id,
            Metric.name.in_(("accuracy", "public_accuracy", "reward", "bytes_up", "bytes_down")),
        )
    ):
        by_name[name][subject][idx] = value

    # rewards: batch reward rows win, else the mean of per-sample rewards, else the 'reward' metric
    batch: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_sample: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    is_batch = Reward.sample_id == BATCH  # one expression (one bind) in both clauses: PostgreSQL needs them equal
    q = (
        select(Reward.receiver, Reward.round_idx, is_batch, func.avg(Reward.value))
        .where(Reward.run_id == run_id)
        .group_by(Reward.receiver, Reward.round_idx, is_batch)
    )
    for receiver, idx, is_batch, mean in session.execute(q):
        (batch if is_batch else per_sample)[receiver][idx].append(float(mean))
    reward: dict[str, dict[int, float]] = defaultdict(dict)
    for receiver in set(batch) | set(per_sample):
        for idx in set(batch[receiver]) | set(per_sample[receiver]):
            vals = batch[receiver].get(idx) or per_sample[receiver].get(idx) or []
            if vals:
                reward[receiver][idx] = sum(vals) / len(vals)
    for subject, pts in by_name["reward"].items():
        for idx, v in pts.items():
            reward[subject].setdefault(idx, v)

    # communication: cumulative MB per subject and in total
    per_round: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for name in ("bytes_up", "bytes_down"):
        for subject, pts in by_name[name].items():
            for idx, v in pts.items():
                per_round[subject][idx] += v / MB
    cum: dict[str, dict[int, float]] = {}
    total_round: dict[int, float] = defaultdict(float)
    for subject, pts in per_round.items():
        acc, cum[subject] = 0.0, {}
        for idx in sorted(pts):
            acc += pts[idx]
            cum[subject][idx] = acc
            total_round[idx] += pts[idx]
    if total_round:
        acc, cum["total"] = 0.0, {}
        for idx in sorted(total_round):
            acc += total_round[idx]
            cum["total"][idx] = acc

    subjects = set()
    for name in by_name:
        subjects |= set(by_name[name])
    subjects |= set(reward)
    order = _subject_order(subjects)
    all_rounds = {i for d in (*by_name.values(), reward) for pts in d.values() for i in pts}
    all_rounds |= set(session.scalars(select(Round.idx).where(Round.run_id == run_id)))
    return ChartData(
        rounds=sorted(all_rounds),
        subjects=order,
        accuracy=_series(by_name["accuracy"], order),
        public_accuracy=_series(by_name["public_accuracy"], order),
        reward=_series(reward, order),
        bytes_cumulative_mb=_series(cum, [*_subject_order(set(cum) - {"total"}), "total"]),
        budget_mb=budget_mb,
    )


# =========================================================================== allocations, samples
def allocation_grid(session: Session, run_id: int, direction: Direction = "down") -> AllocationGrid:
    q = select(
        Allocation.round_idx, Allocation.receiver, Allocation.sender, Allocation.sample_id,
        Allocation.score, Allocation.rank,
    ).where(Allocation.run_id == run_id)
    q = q.where(Allocation.receiver == LLM) if direction == "up" else q.where(Allocation.receiver != LLM)
    allocs = session.execute(q).all()

    samples: list[str] = []
    domains: list[str] = []
    col_of: dict[str, int] = {}
    for sid, dom in session.execute(
        select(PublicSample.sample_id, PublicSample.domain)
        .where(PublicSample.run_id == run_id)
        .order_by(PublicSample.sample_id)
    ):
        col_of[sid] = len(samples)
        samples.append(sid)
        domains.append(dom)
    for a in sorted({a[3] for a in allocs} - col_of.keys()):  # allocated but not in the public table
        col_of[a] = len(samples)
        samples.append(a)
        domains.append("?")

    keys = sorted({(a[2] if direction == "up" else a[1], a[0]) for a in allocs},
                  key=lambda k: (k[0] == LLM, k[0], k[1]))
    row_of = {k: i for i, k in enumerate(keys)}
    rows_i, cols_i, scores, ranks = [], [], [], []
    for idx, receiver, sender, sid, score, rank in allocs:
        rows_i.append(row_of[(sender if direction == "up" else receiver, idx)])
        cols_i.append(col_of[sid])
        scores.append(round(score, SCORE_DIGITS))
        ranks.append(rank)
    return AllocationGrid(
        direction=direction,
        rows=[GridRow(peer=p, round_idx=i) for p, i in keys],
        samples=samples,
        domains=domains,
        row=rows_i,
        col=cols_i,
        score=scores,
        rank=ranks,
        score_min=min(scores) if scores else None,
        score_max=max(scores) if scores else None,
    )


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
    return [EventInfo(id=e.id, ts=_utc(e.ts), kind=e.kind, subject=e.subject or "", message=e.message or "")
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
        server_time=_utc(dt.datetime.now(dt.timezone.utc)),
    )


# =========================================================================== Prometheus
@dataclass
class PromSnapshot:
    """Everything /metrics exposes, gathered in one read transaction."""

    runs: list[RunSummary] = field(default_factory=list)
    clients: list[tuple[int, str, str, dt.datetime | None]] = field(default_factory=list)  # run, name, state, hb
    latest: list[tuple[int, str, str, int, float]] = field(default_factory=list)  # run, subject, name, round, v
    bytes_total: list[tuple[int, str, str, float]] = field(default_factory=list)  # run, subject, direction, bytes
    phase_seconds: list[tuple[int, str, float]] = field(default_factory=list)  # run, phase, s (latest round)
    events: list[tuple[int, str, int]] = field(default_factory=list)  # run, kind, count
    allocations: list[tuple[int, str, int]] = field(default_factory=list)  # run, direction, count


def prometheus_snapshot(session: Session) -> PromSnapshot:
    snap = PromSnapshot()
    if not schema_ready(session):
        return snap
    snap.runs = list_runs(session)
    snap.clients = [
        (r, n, s, _utc(hb))
        for r, n, s, hb in session.execute(
            select(Client.run_id, Client.name, Client.state, Client.last_heartbeat).order_by(Client.run_id, Client.name)
        )
    ]
    latest: dict[tuple[int, str, str], tuple[int, float]] = {}
    sums: dict[tuple[int, str, str], float] = defaultdict(float)
    for run_id, subject, name, idx, value in session.execute(
        select(Metric.run_id, Metric.subject, Metric.name, Metric.round_idx, Metric.value)
    ):
        key = (run_id, subject, name)
        if key not in latest or idx > latest[key][0]:
            latest[key] = (idx, value)
        if name in ("bytes_up", "bytes_down"):
            sums[(run_id, subject, name[len("bytes_"):])] += value
    snap.latest = sorted((r, s, n, i, v) for (r, s, n), (i, v) in latest.items())
    snap.bytes_total = sorted((r, s, d, v) for (r, s, d), v in sums.items())
    last_round: dict[int, dict] = {}
    for run_id, _idx, timings in session.execute(
        select(Round.run_id, Round.idx, Round.timings).where(Round.status == "done").order_by(Round.run_id, Round.idx)
    ):
        last_round[run_id] = timings or {}
    for run_id, timings in sorted(last_round.items()):
        for phase, secs in timings.items():
            if isinstance(secs, (int, float)):
                snap.phase_seconds.append((run_id, str(phase), float(secs)))
    snap.events = [
        (r, k, n)
        for r, k, n in session.execute(
            select(Event.run_id, Event.kind, func.count())
            .where(Event.run_id.is_not(None))
            .group_by(Event.run_id, Event.kind)
            .order_by(Event.run_id, Event.kind)
        )
    ]
    up = Allocation.receiver == LLM
    snap.allocations = [
        (r, "up" if is_up else "down", n)
        for r, is_up, n in session.execute(
            select(Allocation.run_id, up, func.count()).group_by(Allocation.run_id, up).order_by(Allocation.run_id)
        )
    ]
    return snap
