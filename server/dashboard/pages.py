"""Server-rendered HTML pages (Jinja2, autoescaped). The JavaScript in static/ keeps them live."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from lada.common.config import LadaConfig
from lada.server.dashboard import deps
from lada.server.dashboard.security import request_token
from lada.server.db import reads, views
from lada.server.db.tables import TERMINAL_STATUSES
from sqlalchemy.orm import Session
from starlette.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC = HERE / "static"
ASSET_VERSION = hashlib.blake2b(
    b"".join(p.read_bytes() for p in sorted(STATIC.glob("*")) if p.is_file()), digest_size=4
).hexdigest()
PHASE_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]

router = APIRouter(include_in_schema=False)
DB = Annotated[Session, Depends(deps.session)]


def _fmt_ts(v: dt.datetime | None) -> str:
    return v.strftime("%Y-%m-%d %H:%M:%S") if v else "—"


def _fmt_iso(v: dt.datetime | None) -> str:
    return v.isoformat() if v else ""


def _fmt_pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def _fmt_secs(v: float | None) -> str:
    if v is None:
        return "—"
    if v < 60:
        return f"{v:.1f} s"
    m, s = divmod(int(round(v)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _fmt_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _context(request: Request) -> dict[str, Any]:
    base = request.scope.get("root_path", "").rstrip("/")
    token = request.query_params.get("token") if request.app.state.settings.token else None
    page_token = token if token and request_token(request.scope) == token else None
    tq = "?" + urlencode({"token": page_token}) if page_token else ""

    def link(path: str) -> str:
        if tq and "#" in path:
            path, frag = path.split("#", 1)
            return f"{base}{path}{tq}#{frag}"
        return f"{base}{path}{tq}"

    return {"base": base, "link": link, "asset_v": ASSET_VERSION, "page_token": page_token}


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters.update(ts=_fmt_ts, iso=_fmt_iso, pct=_fmt_pct, secs=_fmt_secs, value=_fmt_value)
templates = Jinja2Templates(env=_env, context_processors=[_context])


def phase_bars(rounds: list[views.RoundInfo], phases: list[str]) -> dict[int, list[dict[str, Any]]]:
    """Per round, the stacked-bar segments of its phase timings (x and width in % of the slowest round)."""
    longest = max((sum(r.timings.values()) for r in rounds), default=0.0) or 1.0
    out = {}
    for r in rounds:
        x, segs = 0.0, []
        for i, p in enumerate(phases):
            v = r.timings.get(p)
            if v:
                w = 100.0 * v / longest
                segs.append({"x": round(x, 3), "w": round(w, 3), "color": PHASE_COLORS[i % len(PHASE_COLORS)],
                             "label": f"{p}: {v:.2f} s"})
                x += w
        out[r.idx] = segs
    return out


def knob_help() -> dict[str, dict[str, str]]:
    """section -> knob -> its help text, from ``common.config`` (the config panel's descriptions)."""
    out: dict[str, dict[str, str]] = {}
    for sec, f in LadaConfig.model_fields.items():
        model = f.annotation
        fields = getattr(model, "model_fields", {})
        out[sec] = {k: v.description or "" for k, v in fields.items()}
    return out


KNOB_HELP = knob_help()


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return templates.TemplateResponse(request, "error.html",
                                      {"title": title, "message": message, "status_code": status}, status)


def not_found(request: Request, what: str) -> HTMLResponse:
    return error_page(request, 404, "Not found", what)


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, s: DB) -> HTMLResponse:
    return templates.TemplateResponse(request, "runs.html", {"runs": reads.list_runs(s),
                                                             "poll_ms": deps.settings(request).poll_ms})


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, s: DB, run_id: deps.RunId, budget_mb: deps.BudgetMb = None) -> HTMLResponse:
    if not reads.schema_ready(s):
        return not_found(request, f"Run {run_id} not found (the database has no runs yet).")
    run = reads.run_detail(s, run_id)
    if run is None:
        return not_found(request, f"Run {run_id} not found.")
    rounds = reads.rounds(s, run_id)
    phases = reads.phases(rounds)
    live = reads.live_state(s, run_id)
    config = run.config or {}
    sections = {k: v for k, v in config.items() if isinstance(v, dict)}
    loose = {k: v for k, v in config.items() if not isinstance(v, dict)}
    if loose:
        sections = {"(top level)": loose, **sections}
    ctx = {
        "run": run,
        "clients": reads.clients(s, run_id),
        "rounds": rounds,
        "phases": phases,
        "phase_colors": {p: PHASE_COLORS[i % len(PHASE_COLORS)] for i, p in enumerate(phases)},
        "bars": phase_bars(rounds, phases),
        "events": reads.events(s, run_id, limit=200)[::-1],
        "sections": sections,
        "knob_help": KNOB_HELP,
        "live": live,
        "budget_mb": deps.budget(request, budget_mb),
        "poll_ms": deps.settings(request).poll_ms,
        "terminal": run.status in TERMINAL_STATUSES,
    }
    return templates.TemplateResponse(request, "run.html", ctx)


@router.get("/runs/{run_id}/clients/{name}", response_class=HTMLResponse)
def client_page(request: Request, s: DB, run_id: deps.RunId, name: str) -> HTMLResponse:
    if not reads.schema_ready(s) or not reads.run_exists(s, run_id):
        return not_found(request, f"Run {run_id} not found.")
    detail = reads.client_detail(s, run_id, name)
    if detail is None:
        return not_found(request, f"Client {name!r} not found in run {run_id}.")
    by_dir: dict[str, list[views.GivenCell]] = {"down": [], "up": []}
    for c in detail.given:
        by_dir[c.direction].append(c)
    ctx = {"d": detail, "run": detail.run, "c": detail.client, "given": by_dir,
           "rounds": [r for r in detail.rounds if r.round_idx > 0 or r.accuracy is not None]}
    return templates.TemplateResponse(request, "client.html", ctx)


@router.get("/runs/{run_id}/samples/{sample_id:path}", response_class=HTMLResponse)
def sample_page(request: Request, s: DB, run_id: deps.RunId, sample_id: str) -> HTMLResponse:
    if not reads.schema_ready(s) or not reads.run_exists(s, run_id):
        return not_found(request, f"Run {run_id} not found.")
    detail = reads.sample_detail(s, run_id, sample_id)
    if detail is None:
        return not_found(request, f"Sample {sample_id!r} not found in run {run_id}.")
    run = reads.get_run(s, run_id)
    clients = {c.name for c in reads.clients(s, run_id)}
    ctx = {"run": run, "d": detail, "clients": clients,
           "n_cold": sum(a.cold_start for a in detail.allocations)}
    return templates.TemplateResponse(request, "sample.html", ctx)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, s: DB, runs: deps.CompareIds) -> HTMLResponse:
    ids = deps.distinct_runs(runs)
    missing = [i for i in ids if not reads.schema_ready(s) or not reads.run_exists(s, i)]
    if missing:
        return not_found(request, f"Run {missing[0]} not found.")
    cmp = reads.compare(s, ids)
    clients = sorted({c for row in cmp.final for c in row.clients})
    return templates.TemplateResponse(request, "compare.html", {"cmp": cmp, "clients": clients,
                                                                "ids": ",".join(map(str, ids))})
