"""Run data shaped for the dashboard's charts and heat maps (one read each, then arithmetic).

``charts``: accuracy, reward and cumulative traffic per subject and round;
``allocation_grid``: which public sample went to whom in which round, with the
policy's score, in columns a heat map draws directly.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .reads import cold_start_of
from .tables import BATCH, LLM, Allocation, Metric, PublicSample, Reward, Round
from .views import AllocationGrid, ChartData, Direction, GridRow, Series

MB = 1_000_000.0
PUBLIC_BEFORE = "public_accuracy_before"  # the metric of round k, measured at its start
SCORE_DIGITS = 4  # heat-map scores are rounded to this (SampleDetail has them exact)


def _subject_order(subjects: set[str] | list[str]) -> list[str]:
    return sorted((s for s in subjects if s != LLM), key=str) + ([LLM] if LLM in subjects else [])


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
            Metric.name.in_(("accuracy", PUBLIC_BEFORE, "reward", "bytes_up", "bytes_down")),
        )
    ):
        if name == PUBLIC_BEFORE:  # before round k's learning = after round k-1's, as every other series
            name, idx = "public_accuracy", idx - 1
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
    cold_rows = {row_of[(s if direction == "up" else r, i)] for i, r, s in cold_start_of(session, run_id, allocs)}
    rows_i, cols_i, scores, ranks = [], [], [], []
    for idx, receiver, sender, sid, score, rank in allocs:
        rows_i.append(row_of[(sender if direction == "up" else receiver, idx)])
        cols_i.append(col_of[sid])
        scores.append(round(score, SCORE_DIGITS))
        ranks.append(rank)
    scored = [v for r, v in zip(rows_i, scores, strict=True) if r not in cold_rows]  # cold 1.0s are no scores
    return AllocationGrid(
        direction=direction,
        rows=[GridRow(peer=p, round_idx=i, cold_start=k in cold_rows) for k, (p, i) in enumerate(keys)],
        samples=samples,
        domains=domains,
        row=rows_i,
        col=cols_i,
        score=scores,
        rank=ranks,
        score_min=min(scored) if scored else None,
        score_max=max(scored) if scored else None,
    )
