"""Dashboard JSON API, pages, /metrics, /healthz and auth, through FastAPI's TestClient.

The generic tests run against every database in ``tests.support.dashboard.DB_BUILDERS``
and only assume the shape of a LaDa run database, not particular values; the
tests at the end check the synthetic run's known content (escaping included).
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from lada.server.dashboard.app import create_app
from lada.server.db import views
from lada.server.db.tables import Run
from lada.server.db.writer import RoundRecord, Store

from tests.support import dashboard as fx
from tests.support import openapi

BUDGET = 5.0
RUN_ENDPOINTS = ["", "/clients", "/rounds", "/metrics", "/charts", "/allocations", "/allocations?direction=up",
                 "/events", "/live", "/samples/some-sample", "/clients/client-1", "/download/metrics.csv",
                 "/download/allocations.json"]


@pytest.fixture(scope="module", params=sorted(fx.DB_BUILDERS))
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return fx.DB_BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def client(db_url: str):
    with TestClient(create_app(db_url, comm_budget_mb=BUDGET)) as c:
        yield c


@pytest.fixture(scope="module")
def runs(client: TestClient) -> list[dict]:
    r = client.get("/api/runs")
    assert r.status_code == 200
    data = r.json()
    assert data, "the fixture database has no runs"
    return data


def _ok(client: TestClient, path: str, **params) -> object:
    r = client.get(path, params=params)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.json()


# --------------------------------------------------------------------------- generic: any LaDa database
def test_runs_list(runs: list[dict]) -> None:
    for r in runs:
        views.RunSummary.model_validate(r)
        assert 0 <= r["rounds_done"] <= max(r["rounds_total"], r["current_round"])
        assert r["created_at"].endswith(("Z", "+00:00"))
    assert [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)


def test_run_detail_and_clients(client: TestClient, runs: list[dict]) -> None:
    for r in runs:
        d = views.RunDetail.model_validate(_ok(client, f"/api/runs/{r['id']}"))
        assert d.id == r["id"] and isinstance(d.config, dict)
        cl = [views.ClientInfo.model_validate(c) for c in _ok(client, f"/api/runs/{r['id']}/clients")]
        assert len(cl) == r["n_clients"]
        assert [c.name for c in cl] == sorted(c.name for c in cl)


def test_rounds(client: TestClient, runs: list[dict]) -> None:
    for r in runs:
        rounds = [views.RoundInfo.model_validate(x) for x in _ok(client, f"/api/runs/{r['id']}/rounds")]
        assert [x.idx for x in rounds] == sorted(x.idx for x in rounds)
        assert sum(x.status == "done" for x in rounds) == r["rounds_done"]
        for x in rounds:
            assert all(v >= 0 for v in x.timings.values())
            if x.duration_s is not None:
                assert x.duration_s >= 0


def test_metrics_filters(client: TestClient, runs: list[dict]) -> None:
    rid = runs[0]["id"]
    every = [views.MetricPoint.model_validate(m) for m in _ok(client, f"/api/runs/{rid}/metrics")]
    acc = _ok(client, f"/api/runs/{rid}/metrics", name="accuracy")
    assert {m["name"] for m in acc} <= {"accuracy"}
    assert len(acc) == sum(m.name == "accuracy" for m in every)
    llm = _ok(client, f"/api/runs/{rid}/metrics", subject="llm")
    assert {m["subject"] for m in llm} <= {"llm"}


def test_charts(client: TestClient, runs: list[dict]) -> None:
    for r in runs:
        c = views.ChartData.model_validate(_ok(client, f"/api/runs/{r['id']}/charts"))
        assert c.budget_mb == BUDGET
        for group in (c.accuracy, c.public_accuracy, c.reward, c.bytes_cumulative_mb):
            for s in group:
                assert len(s.x) == len(s.y) and s.x == sorted(s.x)
                assert all(math.isfinite(v) for v in s.y)
        for s in c.bytes_cumulative_mb:
            assert all(b >= a for a, b in zip(s.y, s.y[1:], strict=False)), "cumulative bytes must not decrease"
        if c.bytes_cumulative_mb:
            assert c.bytes_cumulative_mb[-1].name == "total"
        assert set(c.subjects) >= {s.name for s in c.accuracy}
    c = _ok(client, f"/api/runs/{runs[0]['id']}/charts", budget_mb=2.5)
    assert c["budget_mb"] == 2.5
    assert client.get(f"/api/runs/{runs[0]['id']}/charts", params={"budget_mb": -1}).status_code == 422


@pytest.mark.parametrize("direction", ["down", "up"])
def test_allocation_grid(client: TestClient, runs: list[dict], direction: str) -> None:
    for r in runs:
        g = views.AllocationGrid.model_validate(_ok(client, f"/api/runs/{r['id']}/allocations", direction=direction))
        n = len(g.row)
        assert len(g.col) == len(g.score) == len(g.rank) == n
        assert len(g.samples) == len(g.domains) == len(set(g.samples))
        assert all(0 <= i < len(g.rows) for i in g.row)
        assert all(0 <= j < len(g.samples) for j in g.col)
        assert len({(i, j) for i, j in zip(g.row, g.col, strict=True)}) == n, "one cell per (row, sample)"
        assert len({(x.peer, x.round_idx) for x in g.rows}) == len(g.rows)
        assert all(x.peer != "llm" for x in g.rows)
        scored = [v for i, v in zip(g.row, g.score, strict=True) if not g.rows[i].cold_start]
        if scored:  # the range colours the scored cells; a cold start's 1.0s only mark what was chosen
            assert g.score_min == min(scored) and g.score_max == max(scored)
        assert all(v == 1.0 for i, v in zip(g.row, g.score, strict=True) if g.rows[i].cold_start)
    assert client.get(f"/api/runs/{runs[0]['id']}/allocations", params={"direction": "sideways"}).status_code == 422


def test_sample_detail_matches_grid(client: TestClient, runs: list[dict]) -> None:
    for r in runs:
        g = _ok(client, f"/api/runs/{r['id']}/allocations")
        if not g["row"]:
            continue
        k = len(g["row"]) // 2
        sid, row = g["samples"][g["col"][k]], g["rows"][g["row"][k]]
        d = views.SampleDetail.model_validate(_ok(client, f"/api/runs/{r['id']}/samples/{sid}"))
        assert d.sample_id == sid
        hits = [a for a in d.allocations
                if a.round_idx == row["round_idx"] and a.receiver == row["peer"] and a.sender == "llm"]
        assert len(hits) == 1 and hits[0].score == pytest.approx(g["score"][k], abs=1e-4)
        assert all(p.author and p.round_idx >= 0 for p in d.paths)
        missing = client.get(f"/api/runs/{r['id']}/samples/no-such-sample")
        assert missing.status_code == 404


def test_client_detail(client: TestClient, runs: list[dict]) -> None:
    for r in runs:
        allocs = _ok(client, f"/api/runs/{r['id']}/download/allocations.json")
        for c in _ok(client, f"/api/runs/{r['id']}/clients"):
            d = views.ClientDetail.model_validate(_ok(client, f"/api/runs/{r['id']}/clients/{c['name']}"))
            assert d.run.id == r["id"] and d.run.name == r["name"] and d.client.name == c["name"]
            got = sum(a["receiver"] == c["name"] for a in allocs)
            gave = sum(a["sender"] == c["name"] for a in allocs)
            assert sum(g.n for g in d.given if g.direction == "down") == sum(x.received for x in d.rounds) == got
            assert sum(g.n for g in d.given if g.direction == "up") == sum(x.sent for x in d.rounds) == gave
            assert sum(g.n_cold for g in d.given) == sum(
                a["cold_start"] for a in allocs if c["name"] in (a["receiver"], a["sender"]))
            assert all(0 <= g.n_cold <= g.n for g in d.given)
            assert all(e.subject == c["name"] for e in d.events)
            assert [x.round_idx for x in d.rounds] == sorted({x.round_idx for x in d.rounds})
            acc = {m["round_idx"]: m["value"] for m in _ok(client, f"/api/runs/{r['id']}/metrics", name="accuracy",
                                                          subject=c["name"])}
            assert {x.round_idx: x.accuracy for x in d.rounds if x.accuracy is not None} == acc
        assert client.get(f"/api/runs/{r['id']}/clients/no-such-client").status_code == 404


def test_downloads(client: TestClient, runs: list[dict]) -> None:
    for r in runs:
        base = f"/api/runs/{r['id']}/download"
        metrics = _ok(client, f"/api/runs/{r['id']}/metrics")
        for fmt in ("csv", "json"):
            resp = client.get(f"{base}/metrics.{fmt}")
            assert resp.status_code == 200
            assert resp.headers["content-disposition"] == f'attachment; filename="run-{r["id"]}-metrics.{fmt}"'
        rows = list(csv.DictReader(io.StringIO(client.get(f"{base}/metrics.csv").text)))
        assert [(int(x["round_idx"]), x["subject"], x["name"], float(x["value"])) for x in rows] == [
            (m["round_idx"], m["subject"], m["name"], m["value"]) for m in metrics]
        assert _ok(client, f"{base}/metrics.json") == metrics
        allocs = [views.AllocationRow.model_validate(a) for a in _ok(client, f"{base}/allocations.json")]
        down, up = (_ok(client, f"/api/runs/{r['id']}/allocations", direction=d) for d in ("down", "up"))
        assert len(allocs) == len(down["row"]) + len(up["row"])
        table = list(csv.DictReader(io.StringIO(client.get(f"{base}/allocations.csv").text)))
        assert len(table) == len(allocs) and list(table[0] if table else views.AllocationRow.model_fields) == list(
            views.AllocationRow.model_fields)
        assert client.get(f"{base}/everything.zip").status_code == 422


def test_compare(client: TestClient, runs: list[dict]) -> None:
    ids = [r["id"] for r in runs]
    if len(ids) >= 2:
        cmp = views.RunCompare.model_validate(_ok(client, "/api/compare", runs=ids[:2]))
        assert [x.id for x in cmp.final] == ids[:2] and [x.name for x in cmp.runs] == [r["name"] for r in runs[:2]]
        for row, r in zip(cmp.final, runs, strict=False):
            assert row.llm_final == r["llm_accuracy"]
            assert row.slm_final == pytest.approx(r["slm_accuracy"]) if r["slm_accuracy"] is not None else True
    missing = max(ids) + 1000
    assert client.get(f"/api/compare?runs={ids[0]}&runs={missing}").status_code == 404
    for q in (f"runs={ids[0]}", f"runs={ids[0]}&runs={ids[0]}", "runs=x&runs=1", f"runs={ids[0]}&runs={2**63}"):
        assert client.get(f"/api/compare?{q}").status_code == 422, q


def test_events(client: TestClient, runs: list[dict]) -> None:
    rid = runs[0]["id"]
    evs = [views.EventInfo.model_validate(e) for e in _ok(client, f"/api/runs/{rid}/events", limit=5000)]
    ids = [e.id for e in evs]
    assert ids == sorted(ids)
    if len(evs) >= 3:
        assert [e["id"] for e in _ok(client, f"/api/runs/{rid}/events", limit=2)] == ids[-2:]
        assert [e["id"] for e in _ok(client, f"/api/runs/{rid}/events", after_id=ids[0], limit=2)] == ids[1:3]
        kind = evs[0].kind
        assert {e["kind"] for e in _ok(client, f"/api/runs/{rid}/events", kind=kind)} == {kind}
    assert client.get(f"/api/runs/{rid}/events", params={"limit": 0}).status_code == 422


def test_live(client: TestClient, runs: list[dict]) -> None:
    for r in runs:
        live = views.LiveState.model_validate(_ok(client, f"/api/runs/{r['id']}/live"))
        assert live.status == r["status"] and live.rounds_done == r["rounds_done"]
        assert set(live.versions) >= {"run", "clients", "rounds", "metrics", "allocations", "events"}
        again = _ok(client, f"/api/runs/{r['id']}/live")
        assert again["versions"] == live.versions, "versions are stable while nothing changes"


@pytest.mark.parametrize("suffix", RUN_ENDPOINTS)
def test_unknown_run_is_404(client: TestClient, runs: list[dict], suffix: str) -> None:
    missing = max(r["id"] for r in runs) + 1000
    r = client.get(f"/api/runs/{missing}{suffix}")
    assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_pages(client: TestClient, runs: list[dict]) -> None:
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    for r in runs:
        assert f'href="/runs/{r["id"]}"' in index.text
        page = client.get(f"/runs/{r['id']}")
        assert page.status_code == 200
        for section in ("sec-clients", "chart-accuracy", "chart-reward", "chart-bytes", "heatmap", "sec-rounds",
                        "sec-events", "sec-config"):
            assert f'id="{section}"' in page.text
        assert "https://" not in page.text, "no external resources"
    missing = client.get(f"/runs/{max(r['id'] for r in runs) + 1000}")
    assert missing.status_code == 404 and "not found" in missing.text.lower()
    assert client.get("/no/such/page").status_code == 404
    css = client.get("/static/style.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_security_headers(client: TestClient) -> None:
    h = client.get("/").headers
    assert "script-src 'self'" in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff"


def test_healthz(client: TestClient) -> None:
    assert _ok(client, "/healthz") == {"status": "ok", "db": True, "schema_ready": True}


def test_openapi(client: TestClient) -> None:
    doc = _ok(client, "/openapi.json")
    paths = doc["paths"]
    for p in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/clients", "/api/runs/{run_id}/rounds",
              "/api/runs/{run_id}/metrics", "/api/runs/{run_id}/charts", "/api/runs/{run_id}/allocations",
              "/api/runs/{run_id}/samples/{sample_id}", "/api/runs/{run_id}/events", "/api/runs/{run_id}/live",
              "/api/runs/{run_id}/clients/{name}", "/api/runs/{run_id}/download/{what}", "/api/compare",
              "/healthz", "/metrics"):
        assert p in paths, p
    assert not any(p.startswith("/runs") or p == "/" for p in paths), "pages stay out of the API document"
    schemas = doc["components"]["schemas"]
    for name in ("RunSummary", "RunDetail", "ClientInfo", "RoundInfo", "ChartData", "AllocationGrid",
                 "SampleDetail", "EventInfo", "LiveState", "ClientDetail", "RunCompare"):
        assert name in schemas
    assert client.get("/docs").status_code == 404, "docs UI needs a CDN: disabled"


# --------------------------------------------------------------------------- Prometheus
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? "
    r"(?P<value>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|NaN|[+-]Inf)$"
)


def parse_prometheus(text: str) -> dict[str, dict]:
    """Strict enough check of the text exposition format: HELP/TYPE before samples, valid lines."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in families, f"family {name} declared twice"
            families[name] = {"help": line, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in ("gauge", "counter", "untyped", "histogram", "summary")
            families[name]["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line: {line!r}"
            assert m["name"] == current, f"sample {m['name']} outside its family"
            families[current]["samples"].append(line)
    for name, f in families.items():
        assert f["type"], name
        if f["type"] == "counter":
            assert name.endswith("_total"), name
    return families


def test_prometheus_metrics(client: TestClient, runs: list[dict]) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    fam = parse_prometheus(r.text)
    assert fam["lada_dashboard_up"]["samples"] == ["lada_dashboard_up 1"]
    assert len(fam["lada_run_info"]["samples"]) == len(runs)
    total = sum(float(s.rsplit(" ", 1)[1]) for s in fam["lada_runs"]["samples"])
    assert total == len(runs)
    for name in ("lada_run_current_round", "lada_client_state", "lada_metric", "lada_events_total"):
        assert name in fam


def test_prometheus_label_escaping(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'esc.db'}"
    store = Store(url)
    store.create_run('we"ird\\name\nx', "lada", {}, 1)
    store.engine.dispose()
    with TestClient(create_app(url)) as c:
        text = c.get("/metrics").text
    parse_prometheus(text)
    assert 'name="we\\"ird\\\\name\\nx"' in text


# --------------------------------------------------------------------------- auth
@pytest.fixture(scope="module")
def secured(db_url: str):
    with TestClient(create_app(db_url, token="s3cret")) as c:
        yield c


@pytest.mark.parametrize("path", ["/api/runs", "/metrics", "/openapi.json", "/"])
def test_auth_required(secured: TestClient, path: str) -> None:
    r = secured.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert secured.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert secured.get(path, params={"token": "nope"}).status_code == 401
    assert secured.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert secured.get(path, params={"token": "s3cret"}).status_code == 200


def test_auth_open_paths_and_pages(secured: TestClient, runs: list[dict]) -> None:
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/static/run.js").status_code == 200
    page = secured.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'name="token"' in page.text, "a sign-in form, not a bare error"
    rid = runs[0]["id"]
    assert secured.get(f"/api/runs/{rid}/live").status_code == 401
    run_page = secured.get(f"/runs/{rid}", params={"token": "s3cret"})
    assert run_page.status_code == 200
    assert 'href="/?token=s3cret"' in run_page.text, "pages carry the token into their links"
    index = secured.get("/", params={"token": "s3cret"})
    assert f'href="/runs/{rid}?token=s3cret"' in index.text
    doc = secured.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_new_pages_keep_the_token(secured: TestClient, runs: list[dict]) -> None:
    """The client, sample and comparison pages and the downloads need the token, and carry it on."""
    rid = runs[0]["id"]
    client = _ok(secured, f"/api/runs/{rid}/clients", token="s3cret")[0]["name"]
    sid = _ok(secured, f"/api/runs/{rid}/allocations", token="s3cret")["samples"][0]
    for path in (f"/runs/{rid}/clients/{client}", f"/runs/{rid}/samples/{sid}", f"/api/runs/{rid}/download/metrics.csv",
                 f"/api/runs/{rid}/clients/{client}"):
        assert secured.get(path).status_code == 401, path
        assert secured.get(path, params={"token": "s3cret"}).status_code == 200, path
    page = secured.get(f"/runs/{rid}/clients/{client}", params={"token": "s3cret"}).text
    assert f'href="/runs/{rid}?token=s3cret"' in page and f'href="/runs/{rid}?token=s3cret#sec-clients"' in page
    run_page = secured.get(f"/runs/{rid}", params={"token": "s3cret"}).text
    assert f'/runs/{rid}/clients/{client}?token=s3cret"' in run_page
    assert f'/api/runs/{rid}/download/allocations.csv?token=s3cret"' in run_page
    index = secured.get("/", params={"token": "s3cret"}).text
    assert '<input type="hidden" name="token" value="s3cret">' in index, "the compare form (GET) keeps the token"
    if len(runs) >= 2:
        ids = [r["id"] for r in runs[:2]]
        assert secured.get("/compare", params={"runs": ids}).status_code == 401
        cmp = secured.get("/compare", params={"runs": ids, "token": "s3cret"})
        assert cmp.status_code == 200 and f'href="/runs/{ids[0]}?token=s3cret"' in cmp.text


def test_no_token_links_when_open(client: TestClient) -> None:
    assert "token=" not in client.get("/", params={"token": "whatever"}).text


# --------------------------------------------------------------------------- empty and fresh databases
def test_database_without_tables(tmp_path: Path) -> None:
    """The dashboard may start before the server has created the schema."""
    url = f"sqlite:///{tmp_path / 'none.db'}"
    with TestClient(create_app(url)) as c:
        assert _ok(c, "/api/runs") == []
        assert _ok(c, "/healthz")["schema_ready"] is False
        assert c.get("/api/runs/1").status_code == 404
        assert c.get("/runs/1").status_code == 404
        assert "No runs yet" in c.get("/").text
        parse_prometheus(c.get("/metrics").text)


def test_fresh_run_without_rounds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    store = Store(url)
    rid = store.create_run("fresh", "lada", {"run": {"rounds": 3}}, 3)
    store.engine.dispose()
    with TestClient(create_app(url)) as c:
        assert c.get(f"/runs/{rid}").status_code == 200
        g = _ok(c, f"/api/runs/{rid}/allocations")
        assert g["rows"] == [] and g["score_min"] is None
        ch = _ok(c, f"/api/runs/{rid}/charts")
        assert ch["accuracy"] == [] and ch["bytes_cumulative_mb"] == [] and ch["budget_mb"] is None
        assert _ok(c, f"/api/runs/{rid}/live")["rounds_done"] == 0


# --------------------------------------------------------------------------- the synthetic run's content
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    url = fx.demo_db(tmp_path_factory.mktemp("demo-content"))
    with TestClient(create_app(url, comm_budget_mb=BUDGET)) as c:
        yield c, url


def test_demo_shape(demo) -> None:
    c, _ = demo
    (run,) = _ok(c, "/api/runs")
    assert run["status"] == "finished" and run["rounds_done"] == 5 and run["n_clients"] == 3
    g = _ok(c, f"/api/runs/{run['id']}/allocations")
    assert len(g["samples"]) == 1000 and len(g["rows"]) == 15 and len(g["row"]) == 15 * 100
    up = _ok(c, f"/api/runs/{run['id']}/allocations", direction="up")
    assert len(up["row"]) == 15 * 50
    ch = _ok(c, f"/api/runs/{run['id']}/charts")
    assert [s["name"] for s in ch["accuracy"]] == ["client-1", "client-2", "client-3", "llm"]
    assert ch["accuracy"][0]["x"] == [0, 1, 2, 3, 4, 5]
    assert [s["name"] for s in ch["bytes_cumulative_mb"]][-1] == "total"
    kinds = {e["kind"] for e in _ok(c, f"/api/runs/{run['id']}/events")}
    assert {"join", "drop", "error", "round_end"} <= kinds


def test_demo_untrusted_text_is_escaped(demo) -> None:
    c, _ = demo
    rid = _ok(c, "/api/runs")[0]["id"]
    d = _ok(c, f"/api/runs/{rid}/samples/{fx.XSS_SAMPLE_ID}")
    assert d["question"] == fx.XSS_QUESTION, "the API returns the raw text; escaping is the renderer's job"
    assert any(p["text"].startswith(fx.XSS_PATH) for p in d["paths"])
    page = c.get(f"/runs/{rid}").text
    assert "&lt;img src=x onerror=" in page and "<img src=x" not in page
    assert "<script>window" not in page


def test_demo_config_secrets_are_masked(demo) -> None:
    c, _ = demo
    rid = _ok(c, "/api/runs")[0]["id"]
    cfg = _ok(c, f"/api/runs/{rid}")["config"]
    assert cfg["server"]["join_token"] == "***"
    assert cfg["server"]["replica_db"] == "postgresql://lada:***@db:5432/lada"
    assert cfg["run"]["budget"] == 100, "everything else is shown as recorded"
    page = c.get(f"/runs/{rid}").text
    assert fx.JOIN_TOKEN not in page and "hunter2" not in page


def test_live_versions_change_when_the_server_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    rid = fx.fill_demo_run(url, n_public=120, budget=10, server_budget=5, finished=False, paths=False)
    with TestClient(create_app(url)) as c:
        before = _ok(c, f"/api/runs/{rid}/live")
        assert before["status"] == "running" and before["rounds_done"] == 4
        fx.advance_live_run(url, rid)
        after = _ok(c, f"/api/runs/{rid}/live")
    assert after["status"] == "finished" and after["rounds_done"] == 5
    assert after["last_event_id"] > before["last_event_id"]
    for part in ("run", "rounds", "metrics", "allocations", "events"):
        assert after["versions"][part] != before["versions"][part], part


# --------------------------------------------------------------------------- hostile input (issue 15 item 7)
ID_LIMIT = 2**63  # one past SQLite's largest INTEGER: binding it raised OverflowError, a 500
API_ROUTES = ["/api/runs/{run_id}", "/api/runs/{run_id}/clients", "/api/runs/{run_id}/rounds",
              "/api/runs/{run_id}/metrics", "/api/runs/{run_id}/charts", "/api/runs/{run_id}/allocations",
              "/api/runs/{run_id}/samples/{sample_id}", "/api/runs/{run_id}/events", "/api/runs/{run_id}/live"]


@pytest.fixture(scope="module")
def lenient(demo):
    """The demo database's app, answering a server error as a 500 instead of raising it into the test."""
    with TestClient(create_app(demo[1]), raise_server_exceptions=False) as c:
        yield c, c.get("/openapi.json").json(), c.get("/api/runs").json()[0]["id"]


def _conforms(doc: dict, route: str, r, status: int) -> None:
    assert r.status_code == status, (r.url, r.status_code, r.text[:300])
    assert openapi.response_errors(doc, route, status, r.json()) == [], r.text[:300]


@pytest.mark.parametrize("route", API_ROUTES)
@pytest.mark.parametrize("bad", [ID_LIMIT, -ID_LIMIT - 1, 10**30, -1])
def test_run_ids_outside_sqlite_range_are_422(lenient, route: str, bad: int) -> None:
    c, doc, _ = lenient
    _conforms(doc, route, c.get(route.format(run_id=bad, sample_id="public-00001")), 422)


def test_largest_sqlite_id_is_an_unknown_run(lenient) -> None:
    c, doc, _ = lenient
    for route in API_ROUTES:
        _conforms(doc, route, c.get(route.format(run_id=2**63 - 1, sample_id="x")), 404)
    assert c.get(f"/runs/{2**63 - 1}").status_code == 404


@pytest.mark.parametrize("after_id", [ID_LIMIT, 10**30, -1])
def test_event_cursor_outside_sqlite_range_is_422(lenient, after_id: int) -> None:
    c, doc, rid = lenient
    _conforms(doc, "/api/runs/{run_id}/events", c.get(f"/api/runs/{rid}/events", params={"after_id": after_id}), 422)
    _conforms(doc, "/api/runs/{run_id}/events", c.get(f"/api/runs/{rid}/events", params={"after_id": 2**63 - 1}), 200)


@pytest.mark.parametrize("budget", ["-1", "0", "nan", "inf", "-inf", "x"])
def test_bad_budget_is_a_schema_valid_422(lenient, budget: str) -> None:
    c, doc, rid = lenient
    _conforms(doc, "/api/runs/{run_id}/charts", c.get(f"/api/runs/{rid}/charts", params={"budget_mb": budget}), 422)


@pytest.mark.parametrize("query", [{}, {"budget_mb": "-1"}, {"budget_mb": "nan"}])
@pytest.mark.parametrize("bad", [ID_LIMIT, -ID_LIMIT - 1, -1])
def test_run_page_rejects_bad_input_as_an_html_422(lenient, bad: int, query: dict) -> None:
    c, _, _ = lenient
    r = c.get(f"/runs/{bad}", params=query)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), r.text[:200]
    assert "Bad request" in r.text
    r = c.get(f"/runs/{lenient[2]}", params={"budget_mb": "-1"})
    assert r.status_code == 422 and "budget_mb" in r.text


def test_not_found_bodies_match_the_schema(lenient) -> None:
    c, doc, rid = lenient
    for route in API_ROUTES:
        _conforms(doc, route, c.get(route.format(run_id=rid + 1000, sample_id="x")), 404)
    _conforms(doc, "/api/runs/{run_id}/samples/{sample_id}", c.get(f"/api/runs/{rid}/samples/no-such"), 404)


def test_unauthorized_bodies_match_the_schema(db_url: str) -> None:
    with TestClient(create_app(db_url, token="s3cret")) as c:
        doc = c.get("/openapi.json", params={"token": "s3cret"}).json()
        for route in ["/api/runs", *API_ROUTES, "/metrics"]:
            _conforms(doc, route, c.get(route.format(run_id=1, sample_id="x")), 401)
        assert doc["paths"]["/healthz"]["get"]["security"] == [], "/healthz needs no token"


def test_unreadable_database_is_a_schema_valid_503(tmp_path: Path) -> None:
    bad = tmp_path / "not-a.db"
    bad.write_bytes(b"not a database " * 1000)
    with TestClient(create_app(f"sqlite:///{bad}"), raise_server_exceptions=False) as c:
        doc = c.get("/openapi.json").json()
        for route in ["/api/runs", *API_ROUTES, "/metrics"]:
            _conforms(doc, route, c.get(route.format(run_id=1, sample_id="x")), 503)
        assert c.get("/runs/1").status_code == 503 and c.get("/").status_code == 503


# --------------------------------------------------------------------------- cold start and difficulty
def _store_run(url: str, method: str, groups: dict[tuple[int, str, str], list[float]]) -> int:
    store = Store(url)
    rid = store.create_run(f"{method}-run", method, {}, 3)
    for idx in sorted({k[0] for k in groups}):
        store.start_round(rid, idx)
        rec = RoundRecord()
        for (i, rec_name, snd), scores in groups.items():
            if i == idx:
                rec.allocations += [(rec_name, snd, f"s{k}", v, k) for k, v in enumerate(scores)]
        store.commit_round(rid, idx, rec)
    store.engine.dispose()
    return rid


def test_cold_start_is_lada_without_history_only(tmp_path: Path) -> None:
    """A pair's allocations that are all 1.0 are LaDa's cold start (round 1, or a client's first round);
    the same 1.0s from a baseline, or a mix of 1.0 and learned scores, are scores."""
    url = f"sqlite:///{tmp_path / 'cold.db'}"
    groups = {(1, "a", "llm"): [1.0, 1.0, 1.0], (1, "llm", "a"): [1.0, 1.0],
              (2, "a", "llm"): [1.0, 0.7, 0.4], (2, "b", "llm"): [1.0, 1.0]}  # b joined in round 2
    lada, base = _store_run(url, "lada", groups), _store_run(url, "random", groups)
    with TestClient(create_app(url)) as c:
        g = _ok(c, f"/api/runs/{lada}/allocations")
        assert {(x["peer"], x["round_idx"]) for x in g["rows"] if x["cold_start"]} == {("a", 1), ("b", 2)}
        assert (g["score_min"], g["score_max"]) == (0.4, 1.0), "range of the scored cells only"
        up = _ok(c, f"/api/runs/{lada}/allocations", direction="up")
        assert [x["cold_start"] for x in up["rows"]] == [True] and up["score_min"] is None
        cold = {(a["round_idx"], a["receiver"]) for a in _ok(c, f"/api/runs/{lada}/download/allocations.json")
                if a["cold_start"]}
        assert cold == {(1, "a"), (1, "llm"), (2, "b")}
        assert [a["cold_start"] for a in _ok(c, f"/api/runs/{lada}/samples/s0")["allocations"]] == [
            True, True, False, True]
        assert not any(x["cold_start"] for x in _ok(c, f"/api/runs/{base}/allocations")["rows"])
        assert _ok(c, f"/api/runs/{base}/allocations")["score_max"] == 1.0


def test_difficulty_recovered_from_the_stored_config(demo) -> None:
    from lada.common.config import DataConfig
    from lada.common.scenario import scenario_splits

    c, url = demo
    rid = _ok(c, "/api/runs")[0]["id"]
    data = _ok(c, f"/api/runs/{rid}")["config"]["data"]
    truth = {s.id: s.difficulty for s in scenario_splits(DataConfig.model_validate(data)).public}
    rows = _ok(c, f"/api/runs/{rid}/download/allocations.json")
    assert rows and all(a["difficulty"] == truth[a["sample_id"]] for a in rows if a["sample_id"] != fx.XSS_SAMPLE_ID)
    assert len({a["difficulty"] for a in rows}) >= 2
    assert _ok(c, f"/api/runs/{rid}/samples/public-00000")["difficulty"] == truth["public-00000"]
    # a stored question that is not the regenerated one (the XSS sample's was edited): unknown, never a guess
    assert _ok(c, f"/api/runs/{rid}/samples/{fx.XSS_SAMPLE_ID}")["difficulty"] is None
    given = _ok(c, f"/api/runs/{rid}/clients/client-1")["given"]
    assert {g["difficulty"] for g in given} - {None} and sum(g["n"] for g in given if g["difficulty"] is None) <= 5


def test_difficulty_unknown_when_the_config_cannot_rebuild_the_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    rid = fx.fill_demo_run(url, n_public=40, budget=5, server_budget=2, n_rounds=2, paths=False)
    with Store(url).session() as s:  # a data section this version cannot read (a renamed knob)
        run = s.get(Run, rid)
        run.config = {**run.config, "data": {**run.config["data"], "n_publik": 40}}
    with TestClient(create_app(url)) as c:
        rows = _ok(c, f"/api/runs/{rid}/download/allocations.json")
        assert rows and {a["difficulty"] for a in rows} == {None}
        assert _ok(c, f"/api/runs/{rid}/samples/public-00000")["difficulty"] is None
