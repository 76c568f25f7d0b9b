"""Run state in a relational database through SQLAlchemy 2.

The server is the only writer; the dashboard reads the same database. SQLite
runs in WAL mode so readers never block the writer; any SQLAlchemy URL
(PostgreSQL) works. A round's results are written in one transaction, so a
crash leaves either the whole round or none of it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|running|finished|failed
    method: Mapped[str] = mapped_column(String(50), default="lada")
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    rounds_total: Mapped[int] = mapped_column(Integer, default=0)
    current_round: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Client(Base):
    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(300), default="")
    domain: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(20), default="registered")  # registered|active|dropped|left
    joined_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_heartbeat: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "idx"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running|done
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    timings: Mapped[dict] = mapped_column(JSON, default=dict)  # phase -> seconds


class PublicSample(Base):
    __tablename__ = "public_samples"
    __table_args__ = (UniqueConstraint("run_id", "sample_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    sample_id: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(50))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(String(100))


class ReasoningPath(Base):
    """A path some model wrote for a public sample in a round (LLM or SLM)."""

    __tablename__ = "paths"
    __table_args__ = (UniqueConstraint("run_id", "round_idx", "author", "sample_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    round_idx: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(100))  # "llm" or a client name
    sample_id: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    correct: Mapped[bool] = mapped_column(Boolean)


class Allocation(Base):
    """One public sample sent to a receiver in a round, with the policy's score."""

    __tablename__ = "allocations"
    __table_args__ = (UniqueConstraint("run_id", "round_idx", "receiver", "sender", "sample_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    round_idx: Mapped[int] = mapped_column(Integer, index=True)
    receiver: Mapped[str] = mapped_column(String(100))  # client name, or "llm"
    sender: Mapped[str] = mapped_column(String(100))  # "llm", or a client name
    sample_id: Mapped[str] = mapped_column(String(100))
    score: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)


class Reward(Base):
    __tablename__ = "rewards"
    __table_args__ = (UniqueConstraint("run_id", "round_idx", "receiver", "sender", "sample_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    round_idx: Mapped[int] = mapped_column(Integer)
    receiver: Mapped[str] = mapped_column(String(100))
    sender: Mapped[str] = mapped_column(String(100))
    sample_id: Mapped[str] = mapped_column(String(100))  # "*" = the round's batch reward
    value: Mapped[float] = mapped_column(Float)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("run_id", "round_idx", "subject", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    round_idx: Mapped[int] = mapped_column(Integer)  # 0 = before any collaboration
    subject: Mapped[str] = mapped_column(String(100))  # client name, or "llm"
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True, nullable=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(50))  # join|leave|drop|error|round_start|round_end|...
    subject: Mapped[str] = mapped_column(String(100), default="")
    message: Mapped[str] = mapped_column(Text, default="")


def normalize_url(url: str) -> str:
    """``postgres://`` and a bare ``postgresql://`` mean psycopg 3 (the ``postgres`` extra)
    unless psycopg2 is what is installed; every other URL is used as given."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        import importlib.util

        have = importlib.util.find_spec
        driver = "psycopg2" if have("psycopg") is None and have("psycopg2") is not None else "psycopg"
        return f"postgresql+{driver}://{rest}"
    return url


def make_engine(url: str) -> Engine:
    """Engine with SQLite tuned for one writer + concurrent readers (WAL); PostgreSQL through psycopg."""
    url = normalize_url(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True  # a restarted database server must not break a long run
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


class Store:
    """The one module that writes run state. Methods are small transactions."""

    def __init__(self, url: str, create: bool = True) -> None:
        """``create``: bring the schema up to date through the Alembic migrations
        (``lada.server.schema``; one ``SELECT`` when it already is); False opens as is."""
        self.url = url
        self.engine = make_engine(url)
        if create:
            from lada.server import schema

            schema.upgrade(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as s:
            yield s

    # ------------------------------------------------------------------ runs
    def create_run(self, name: str, method: str, config: dict, rounds_total: int) -> int:
        with self.session() as s:
            run = Run(name=name, method=method, config=config, rounds_total=rounds_total, status="running")
            s.add(run)
            s.flush()
            return run.id

    def latest_open_run(self, name: str) -> Run | None:
        with self.session() as s:
            return s.scalars(
                select(Run).where(Run.name == name, Run.status == "running").order_by(Run.id.desc())
            ).first()

    def finish_run(self, run_id: int, status: str = "finished") -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is not None:
                run.status = status
                run.finished_at = utcnow()

    def last_committed_round(self, run_id: int) -> int:
        with self.session() as s:
            idx = s.scalars(
                select(Round.idx).where(Round.run_id == run_id, Round.status == "done").order_by(Round.idx.desc())
            ).first()
            return idx or 0

    # ------------------------------------------------------------------ clients
    def upsert_client(self, run_id: int, name: str, model: str, domain: str, state: str = "active") -> int:
        with self.session() as s:
            c = s.scalars(select(Client).where(Client.run_id == run_id, Client.name == name)).first()
            if c is None:
                c = Client(run_id=run_id, name=name, model=model, domain=domain)
                s.add(c)
            c.model, c.domain, c.state, c.last_heartbeat = model, domain, state, utcnow()
            s.flush()
            return c.id

    def set_client_state(self, run_id: int, name: str, state: str) -> None:
        with self.session() as s:
            c = s.scalars(select(Client).where(Client.run_id == run_id, Client.name == name)).first()
            if c is not None:
                c.state = state

    def heartbeat(self, run_id: int, name: str) -> None:
        with self.session() as s:
            c = s.scalars(select(Client).where(Client.run_id == run_id, Client.name == name)).first()
            if c is not None:
                c.last_heartbeat = utcnow()

    # ------------------------------------------------------------------ events
    def event(self, run_id: int | None, kind: str, subject: str = "", message: str = "") -> None:
        with self.session() as s:
            s.add(Event(run_id=run_id, kind=kind, subject=subject, message=message[:4000]))

    # ------------------------------------------------------------------ samples
    def add_public_samples(self, run_id: int, samples: Iterable[Any]) -> None:
        with self.session() as s:
            have = set(s.scalars(select(PublicSample.sample_id).where(PublicSample.run_id == run_id)))
            s.add_all(
                PublicSample(run_id=run_id, sample_id=x.id, domain=x.domain, question=x.question, answer=x.answer)
                for x in samples
                if x.id not in have
            )

    # ------------------------------------------------------------------ rounds
    def start_round(self, run_id: int, idx: int) -> bool:
        """Mark round ``idx`` current; True if it is new, False if an earlier try of it
        (a server that died mid-round) already has its row, which is reused, not duplicated."""
        with self.session() as s:
            r = s.scalars(select(Round).where(Round.run_id == run_id, Round.idx == idx)).first()
            if r is None:
                s.add(Round(run_id=run_id, idx=idx))
            run = s.get(Run, run_id)
            if run is not None:
                run.current_round = idx
            return r is None

    def commit_round(self, run_id: int, idx: int, record: RoundRecord) -> None:
        """Everything a round produced, in one transaction (replacing a partial earlier try)."""
        with self.session() as s:
            for model in (Allocation, Reward, ReasoningPath):
                s.query(model).filter(model.run_id == run_id, model.round_idx == idx).delete()
            s.query(Metric).filter(Metric.run_id == run_id, Metric.round_idx == idx).delete()
            # rows this round writes for other rounds (round 0: before any collaboration) are
            # replaced too, so redoing a round after a crash duplicates nothing
            for m_idx, subj, name in {(m[0], m[1], m[2]) for m in record.metrics if m[0] != idx}:
                s.query(Metric).filter(Metric.run_id == run_id, Metric.round_idx == m_idx, Metric.subject == subj,
                                       Metric.name == name).delete()
            s.add_all(
                Allocation(run_id=run_id, round_idx=idx, receiver=a[0], sender=a[1], sample_id=a[2],
                           score=float(a[3]), rank=int(a[4]))
                for a in record.allocations
            )
            s.add_all(
                Reward(run_id=run_id, round_idx=idx, receiver=r[0], sender=r[1], sample_id=r[2], value=float(r[3]))
                for r in record.rewards
            )
            s.add_all(
                ReasoningPath(run_id=run_id, round_idx=idx, author=p[0], sample_id=p[1], text=p[2],
                              correct=bool(p[3]))
                for p in record.paths
            )
            s.add_all(
                Metric(run_id=run_id, round_idx=m_idx, subject=subj, name=name, value=float(v))
                for (m_idx, subj, name, v) in record.metrics
            )
            r = s.scalars(select(Round).where(Round.run_id == run_id, Round.idx == idx)).first()
            if r is None:
                r = Round(run_id=run_id, idx=idx)
                s.add(r)
            r.status, r.finished_at, r.timings = "done", utcnow(), dict(record.timings)

    def record_metrics(self, run_id: int, rows: Iterable[tuple[int, str, str, float]]) -> None:
        """Metrics outside a round (round 0: before any collaboration); idempotent."""
        with self.session() as s:
            for idx, subj, name, v in rows:
                m = s.scalars(
                    select(Metric).where(Metric.run_id == run_id, Metric.round_idx == idx,
                                         Metric.subject == subj, Metric.name == name)
                ).first()
                if m is None:
                    s.add(Metric(run_id=run_id, round_idx=idx, subject=subj, name=name, value=float(v)))
                else:
                    m.value = float(v)

    # ------------------------------------------------------------------ reads used by the server
    def metrics(self, run_id: int) -> list[Metric]:
        with self.session() as s:
            return list(s.scalars(select(Metric).where(Metric.run_id == run_id).order_by(Metric.round_idx)))


class RoundRecord:
    """What one round wrote, collected in memory and committed at once.

    Tuples keep the hot path allocation-free:
    allocations (receiver, sender, sample_id, score, rank); rewards (receiver,
    sender, sample_id or '*', value); paths (author, sample_id, text, correct);
    metrics (round_idx, subject, name, value).
    """

    def __init__(self) -> None:
        self.allocations: list[tuple[str, str, str, float, int]] = []
        self.rewards: list[tuple[str, str, str, float]] = []
        self.paths: list[tuple[str, str, str, bool]] = []
        self.metrics: list[tuple[int, str, str, float]] = []
        self.timings: dict[str, float] = {}

    def to_json(self) -> str:
        return json.dumps({"timings": self.timings, "n_alloc": len(self.allocations)})
