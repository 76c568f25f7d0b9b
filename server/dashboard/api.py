"""JSON API under /api. Thin: every read is a function of ``lada.server.db`` (``reads``, ``charts``)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from lada.server.dashboard import deps
from lada.server.dashboard.errors import NOT_FOUND, UNAVAILABLE
from lada.server.db import charts as db_charts
from lada.server.db import reads, views
from pydantic import BaseModel
from sqlalchemy.orm import Session

router = APIRouter(prefix="/api", tags=["api"], responses=UNAVAILABLE)
DB = Annotated[Session, Depends(deps.session)]
RunId = deps.RunId


def _need_run(s: Session, run_id: int) -> None:
    if not reads.schema_ready(s) or not reads.run_exists(s, run_id):
        raise HTTPException(404, f"run {run_id} not found")


@router.get("/runs", response_model=list[views.RunSummary], summary="All runs, newest first")
def runs(s: DB) -> list[views.RunSummary]:
    return reads.list_runs(s)


@router.get("/runs/{run_id}", response_model=views.RunDetail, responses=NOT_FOUND, summary="A run with its config")
def run(s: DB, run_id: RunId) -> views.RunDetail:
    _need_run(s, run_id)
    return reads.run_detail(s, run_id)


@router.get("/runs/{run_id}/clients", response_model=list[views.ClientInfo], responses=NOT_FOUND)
def clients(s: DB, run_id: RunId) -> list[views.ClientInfo]:
    _need_run(s, run_id)
    return reads.clients(s, run_id)


@router.get("/runs/{run_id}/clients/{name}", response_model=views.ClientDetail, responses=NOT_FOUND,
            summary="One client: accuracy and rewards per round, what it was given by domain and difficulty, events")
def client(s: DB, run_id: RunId, name: str) -> views.ClientDetail:
    _need_run(s, run_id)
    detail = reads.client_detail(s, run_id, name)
    if detail is None:
        raise HTTPException(404, f"client {name!r} not found in run {run_id}")
    return detail


@router.get("/runs/{run_id}/rounds", response_model=list[views.RoundInfo], responses=NOT_FOUND)
def rounds(s: DB, run_id: RunId) -> list[views.RoundInfo]:
    _need_run(s, run_id)
    return reads.rounds(s, run_id)


@router.get("/runs/{run_id}/metrics", response_model=list[views.MetricPoint], responses=NOT_FOUND)
def metrics(
    s: DB,
    run_id: RunId,
    name: Annotated[str | None, Query(description="only this metric, e.g. accuracy")] = None,
    subject: Annotated[str | None, Query(description="only this subject: a client name or 'llm'")] = None,
) -> list[views.MetricPoint]:
    _need_run(s, run_id)
    return reads.metrics(s, run_id, name=name, subject=subject)


@router.get("/runs/{run_id}/charts", response_model=views.ChartData, responses=NOT_FOUND,
            summary="Series for the run page's charts")
def charts(
    s: DB,
    request: Request,
    run_id: RunId,
    budget_mb: deps.BudgetMb = None,
) -> views.ChartData:
    _need_run(s, run_id)
    return db_charts.charts(s, run_id, deps.budget(request, budget_mb))


@router.get("/runs/{run_id}/allocations", response_model=views.AllocationGrid, responses=NOT_FOUND,
            summary="Allocation heat map: public samples x (client, round), with the filter's scores")
def allocations(
    s: DB,
    run_id: RunId,
    direction: Annotated[
        Literal["down", "up"], Query(description="down: LLM paths to the SLMs; up: SLM paths to the LLM")
    ] = "down",
) -> Response:
    _need_run(s, run_id)
    # the biggest payload (one cell per allocation): serialised once by pydantic, not re-validated
    return Response(db_charts.allocation_grid(s, run_id, direction).model_dump_json(), media_type="application/json")


@router.get("/runs/{run_id}/samples/{sample_id:path}", response_model=views.SampleDetail, responses=NOT_FOUND,
            summary="A public sample: question, paths, allocations, scores and rewards")
def sample(s: DB, run_id: RunId, sample_id: str) -> views.SampleDetail:
    _need_run(s, run_id)
    detail = reads.sample_detail(s, run_id, sample_id)
    if detail is None:
        raise HTTPException(404, f"sample {sample_id!r} not found in run {run_id}")
    return detail


@router.get("/runs/{run_id}/events", response_model=list[views.EventInfo], responses=NOT_FOUND)
def events(
    s: DB,
    run_id: RunId,
    after_id: deps.EventId = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    kind: Annotated[str | None, Query(description="only this kind: join, drop, error, ...")] = None,
) -> list[views.EventInfo]:
    _need_run(s, run_id)
    return reads.events(s, run_id, after_id=after_id, limit=limit, kind=kind)


@router.get("/runs/{run_id}/live", response_model=views.LiveState, responses=NOT_FOUND,
            summary="Cheap snapshot for polling: status and a version per part of the page")
def live(s: DB, run_id: RunId) -> views.LiveState:
    _need_run(s, run_id)
    return reads.live_state(s, run_id)


@router.get("/compare", response_model=views.RunCompare, responses=NOT_FOUND,
            summary="Two or more runs side by side: accuracy curves and a final table")
def compare(s: DB, runs: deps.CompareIds) -> views.RunCompare:
    ids = deps.distinct_runs(runs)
    missing = [i for i in ids if not reads.schema_ready(s) or not reads.run_exists(s, i)]
    if missing:
        raise HTTPException(404, f"run {missing[0]} not found")
    return reads.compare(s, ids)


Download = Literal["metrics.csv", "metrics.json", "allocations.csv", "allocations.json"]


def _csv(rows: list[BaseModel], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.model_dump().items()})
    return buf.getvalue()


@router.get("/runs/{run_id}/download/{what}", responses={**NOT_FOUND, 200: {"content": {"text/csv": {}}}},
            summary="A run's metrics or allocations (with rewards, domain, difficulty) as a CSV or JSON file")
def download(s: DB, run_id: RunId, what: Download) -> Response:
    _need_run(s, run_id)
    table, fmt = what.split(".")
    rows: list[BaseModel]
    if table == "metrics":
        rows, model = list(reads.metrics(s, run_id)), views.MetricPoint
    else:
        rows, model = list(reads.allocation_rows(s, run_id)), views.AllocationRow
    headers = {"Content-Disposition": f'attachment; filename="run-{run_id}-{table}.{fmt}"'}
    if fmt == "csv":
        return Response(_csv(rows, list(model.model_fields)), media_type="text/csv; charset=utf-8", headers=headers)
    body = "[" + ",".join(r.model_dump_json() for r in rows) + "]"
    return Response(body, media_type="application/json", headers=headers)
