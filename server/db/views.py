"""The response models of the run database's reads: what the dashboard's JSON API returns.

One definition serves the read functions (``reads``, ``charts``), the API's
response schemas and the OpenAPI document. Timestamps are aware UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

Direction = Literal["down", "up"]  # "down": the LLM's paths to clients; "up": clients' paths to the LLM


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
    reason: str | None = Field(None, description="why the run failed (the error that ended it); None otherwise")
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
    status: str = Field(description="running | done | failed (the run failed before committing it)")
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
    public_accuracy: list[Series] = Field(
        description="accuracy on the public mix after round x (x = 0: before any learning), like 'accuracy'; "
        "stored as metric public_accuracy_before of round x+1, measured at that round's start"
    )
    reward: list[Series] = Field(description="reward per receiver and round (batch reward, else mean)")
    bytes_cumulative_mb: list[Series] = Field(description="cumulative MB (up + down) per subject, and 'total'")
    budget_mb: float | None = Field(None, description="communication budget the totals are compared with")


class GridRow(BaseModel):
    peer: str = Field(description="the client on the other end (receiver for 'down', sender for 'up')")
    round_idx: int
    cold_start: bool = Field(
        False, description="the policy had no reward history yet (LaDa's round 1): its cells' score 1.0 only "
        "marks 'chosen' (K-means or random pick), not a confidence")


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
    score_min: float | None = Field(None, description="lowest score of the rows that are not cold start")
    score_max: float | None = Field(None, description="highest score of the rows that are not cold start")


class AllocationInfo(BaseModel):
    round_idx: int
    receiver: str
    sender: str
    score: float
    rank: int
    reward: float | None = Field(None, description="per-sample reward, if the run records them")
    batch_reward: float | None = Field(None, description="the batch reward of (round, receiver, sender)")
    cold_start: bool = Field(False, description="chosen by the cold start: the score is no confidence")


class PathInfo(BaseModel):
    round_idx: int
    author: str
    text: str
    correct: bool


class SampleDetail(BaseModel):
    sample_id: str
    domain: str
    difficulty: int | None = Field(None, description="reasoning steps (None: not recoverable from the config)")
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


class GivenCell(BaseModel):
    """What one client received (or sent) of one domain and difficulty, summed over the run."""

    direction: Direction
    domain: str
    difficulty: int | None = Field(description="reasoning steps; None when the run's config cannot recover it")
    n: int = Field(description="allocations")
    n_cold: int = Field(description="of them chosen by the cold start (no score)")
    mean_score: float | None = Field(None, description="mean policy score of the scored (not cold-start) ones")
    mean_reward: float | None = Field(None, description="mean per-sample reward, if the run records them")


class ClientRound(BaseModel):
    """One round of one client: what it got and what it gave."""

    round_idx: int
    accuracy: float | None = None
    public_accuracy_before: float | None = None
    received: int = Field(0, description="LLM paths it was given")
    sent: int = Field(0, description="its paths the LLM learned from")
    reward: float | None = Field(None, description="its batch reward as a receiver (else the mean per-sample one)")
    reward_to_llm: float | None = Field(None, description="the LLM's reward from this client's paths")
    cold_start: bool = Field(False, description="its down allocations this round were a cold start")
    mb: float | None = Field(None, description="MB moved (up + down) this round")


class ClientDetail(BaseModel):
    run: RunSummary
    client: ClientInfo
    rounds: list[ClientRound]
    given: list[GivenCell] = Field(description="by direction, domain and difficulty")
    events: list[EventInfo] = Field(description="events whose subject is this client, oldest first")


class CompareRow(BaseModel):
    """One run's line of the comparison table."""

    id: int
    name: str
    method: str
    status: str
    rounds_done: int
    llm_start: float | None = Field(None, description="the LLM's accuracy at round 0")
    llm_final: float | None = Field(None, description="... at the latest round")
    slm_start: float | None = Field(None, description="mean SLM accuracy at round 0")
    slm_final: float | None = Field(None, description="... at the latest round")
    clients: dict[str, float | None] = Field(description="client -> its latest accuracy")
    total_mb: float = Field(description="MB moved (up + down) over the run")
    duration_s: float | None = Field(None, description="created to finished (or to now for a live run)")


class RunCompare(BaseModel):
    """Two or more runs side by side: their accuracy curves and final values."""

    runs: list[RunSummary]
    llm_accuracy: list[Series] = Field(description="the LLM's accuracy per round, one per run (name = run id)")
    slm_accuracy: list[Series] = Field(description="mean SLM accuracy per round, one per run (name = run id)")
    final: list[CompareRow]


class AllocationRow(BaseModel):
    """One allocation with its sample's domain and difficulty and its reward (the download format)."""

    round_idx: int
    receiver: str
    sender: str
    sample_id: str
    domain: str
    difficulty: int | None
    score: float
    rank: int
    cold_start: bool
    reward: float | None
    batch_reward: float | None
