"""Operations endpoints: /healthz (never needs the token) and Prometheus /metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from lada.server.dashboard import deps
from lada.server.dashboard.errors import UNAVAILABLE
from lada.server.db import prom, reads
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

router = APIRouter(tags=["ops"])
DB = Annotated[Session, Depends(deps.session)]
PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Health(BaseModel):
    status: str
    db: bool
    schema_ready: bool


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(s: DB) -> Health | JSONResponse:
    try:
        s.execute(text("SELECT 1"))
        ready = reads.schema_ready(s)
    except Exception:  # noqa: BLE001 - any DB failure means unhealthy
        return JSONResponse(Health(status="db unavailable", db=False, schema_ready=False).model_dump(), 503)
    return Health(status="ok", db=True, schema_ready=ready)


# --------------------------------------------------------------------------- exposition format
def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, object], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_prometheus(snap: prom.PromSnapshot) -> str:
    w = _Writer()
    w.family("lada_dashboard_up", "gauge", "The dashboard is serving.", [({}, 1)])
    by_status: dict[str, int] = {s: 0 for s in ("pending", "running", "finished", "failed")}
    for r in snap.runs:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    w.family("lada_runs", "gauge", "Runs in the database by status.",
             [({"status": k}, v) for k, v in by_status.items()])
    w.family("lada_run_info", "gauge", "One series per run with its name, method and status.",
             [({"run_id": r.id, "name": r.name, "method": r.method, "status": r.status}, 1) for r in snap.runs])
    w.family("lada_run_current_round", "gauge", "Round the run is in (or ended in).",
             [({"run_id": r.id}, r.current_round) for r in snap.runs])
    w.family("lada_run_rounds_total", "gauge", "Rounds the run is configured for.",
             [({"run_id": r.id}, r.rounds_total) for r in snap.runs])
    w.family("lada_run_rounds_done", "gauge", "Rounds committed.",
             [({"run_id": r.id}, r.rounds_done) for r in snap.runs])
    w.family("lada_client_state", "gauge", "1 for each client's current state.",
             [({"run_id": r, "client": n, "state": s}, 1) for r, n, s, _ in snap.clients])
    w.family("lada_client_last_heartbeat_timestamp_seconds", "gauge", "Unix time of a client's last heartbeat.",
             [({"run_id": r, "client": n}, hb.timestamp()) for r, n, _, hb in snap.clients if hb is not None])
    w.family("lada_metric", "gauge", "Latest value of each recorded run metric (accuracy, reward, ...).",
             [({"run_id": r, "subject": s, "name": n}, v) for r, s, n, _, v in snap.latest])
    w.family("lada_metric_round", "gauge", "Round the latest value of each run metric comes from.",
             [({"run_id": r, "subject": s, "name": n}, i) for r, s, n, i, _ in snap.latest])
    w.family("lada_bytes_total", "counter", "Bytes exchanged per client and direction, summed over rounds.",
             [({"run_id": r, "subject": s, "direction": d}, v) for r, s, d, v in snap.bytes_total])
    w.family("lada_round_phase_seconds", "gauge", "Seconds per phase of the latest committed round.",
             [({"run_id": r, "phase": p}, v) for r, p, v in snap.phase_seconds])
    w.family("lada_events_total", "counter", "Events recorded per kind.",
             [({"run_id": r, "kind": k}, n) for r, k, n in snap.events])
    w.family("lada_allocations_total", "counter", "Allocation rows per direction (down: LLM to SLMs).",
             [({"run_id": r, "direction": d}, n) for r, d, n in snap.allocations])
    return w.text()


@router.get("/metrics", response_class=PlainTextResponse, responses=UNAVAILABLE,
            summary="Prometheus metrics (text exposition format)")
def prometheus(s: DB) -> PlainTextResponse:
    return PlainTextResponse(render_prometheus(prom.prometheus_snapshot(s)), media_type=PROM_CONTENT_TYPE)
