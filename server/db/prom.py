"""What the dashboard's Prometheus ``/metrics`` exposes, gathered in one read transaction.

``lada.server.dashboard.ops`` renders the snapshot in the text exposition format.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .reads import as_utc, list_runs, schema_ready
from .tables import LLM, Allocation, Client, Event, Metric, Round
from .views import RunSummary


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
        (r, n, s, as_utc(hb))
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
