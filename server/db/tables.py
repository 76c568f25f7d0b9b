"""The run database's tables (SQLAlchemy 2 ORM) and the conventions their values follow.

The server is the only writer (``writer.Store``); the dashboard reads the same
database (``reads``, ``charts``, ``prom``). The schema is what the Alembic
revisions in ``server/migrations`` build (``migrations.upgrade``).

Conventions the writer keeps and the readers rely on:

* ``Metric.round_idx`` 0 is "before any collaboration"; ``subject`` is a client
  name or ``LLM``; ``bytes_up`` / ``bytes_down`` are bytes moved *in* that
  round (readers compute cumulative sums). A metric of round k is measured
  after round k's learning, except ``public_accuracy_before``: the public-mix
  accuracy at the start of round k, before its learning (that is, after round
  k-1's). Stored values are rounded to 6 significant digits (``writer.tidy``):
  float32 noise is not data.
* A failed run has ``Run.reason``, its open round ``status == "failed"`` and
  its clients that were still in it ``state == "left"``.
* ``Allocation.receiver == LLM`` is the SLM -> LLM direction ("up"); every
  other receiver is a client receiving the LLM's paths ("down").
* ``Reward.sample_id == BATCH`` is the batch reward of a (round, receiver, sender).
* All timestamps are naive UTC (``utcnow``).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

LLM = "llm"  # the subject / author / receiver / sender that is the server's LLM
BATCH = "*"  # Reward.sample_id of a round's batch reward
TERMINAL_STATUSES = ("finished", "failed")  # Run.status values after which a run never changes


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
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # why a failed run failed


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
    status: Mapped[str] = mapped_column(String(20), default="running")  # running|done|failed
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


class PathText(Base):
    """A path's text, stored once however many rounds, authors and runs wrote it (issue 17: the
    LLM's unchanged candidates and an SLM's unchanged paths were stored again every round). Rows
    reference it by ``id`` (a small integer: a demo path is about as long as a hex digest); the
    sha256 of the text (``text_key``) finds it. A text no row references any more (its round was
    redone) stays: it is immutable and harmless."""

    __tablename__ = "path_texts"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    text: Mapped[str] = mapped_column(Text)


def text_key(text: str) -> bytes:
    """``PathText.sha256`` of a path's text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class ReasoningPath(Base):
    """A path some model wrote for a public sample in a round (LLM or SLM); its text is in
    ``path_texts`` (``text`` reads it through a correlated subquery)."""

    __tablename__ = "paths"
    __table_args__ = (UniqueConstraint("run_id", "round_idx", "author", "sample_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    round_idx: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(100))  # "llm" or a client name
    sample_id: Mapped[str] = mapped_column(String(100))
    text_id: Mapped[int] = mapped_column(ForeignKey("path_texts.id", name="fk_paths_text_id_path_texts"))
    correct: Mapped[bool] = mapped_column(Boolean)
    text: Mapped[str] = column_property(
        select(PathText.text).where(PathText.id == text_id).correlate_except(PathText).scalar_subquery())


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
