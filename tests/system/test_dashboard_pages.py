"""The dashboard's client, sample and comparison pages, downloads, cold start and error pages, in headless Chromium.

One seeded database (a LaDa run with its cold-start round 1, and a random-policy run)
serves every test of the module. Screenshots of the new pages go to ``tests/artifacts/screenshots/``
(``LADA_SCREENSHOT_DIR=docs/img`` refreshes those in ``docs/img/``)
(``dashboard-client.png``, ``dashboard-sample.png``, ``dashboard-compare.png``,
``dashboard-run.png``, ``dashboard-runs.png``, ``dashboard-error.png``), which docs/dashboard.md shows.
Needs the Debian ``chromium`` package, like test_dashboard_browser.py, whose server helper it reuses.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import dashboard as fx
from tests.support.paths import ARTIFACTS, ROOT
from tests.system.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, _ready, _serve, open_page

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

#: where the screenshots go: tests/artifacts/ (ignored), so a test run leaves the checkout clean;
#: ``LADA_SCREENSHOT_DIR=docs/img`` refreshes the ones docs/dashboard.md shows
IMG = Path(os.environ.get("LADA_SCREENSHOT_DIR", ARTIFACTS / "screenshots"))
if not IMG.is_absolute():
    IMG = ROOT / IMG
BUDGET = 80  # LLM -> SLM allocations per client and round (more than a client's 60 own-domain public samples)


@dataclass
class Served:
    url: str
    db_url: str
    lada: int
    baseline: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from lada.server.dashboard.app import create_app

    db_url = f"sqlite:///{tmp_path_factory.mktemp('pages') / 'runs.db'}"
    lada = fx.fill_demo_run(db_url, name="lada-b80", n_public=240, budget=BUDGET, server_budget=10)
    base = fx.fill_demo_run(db_url, name="random-b80", n_public=240, budget=BUDGET, server_budget=10, seed=1,
                            method="random")
    url, server, thread = _serve(create_app(db_url, poll_ms=300))
    yield Served(url, db_url, lada, base)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    yield from open_page(browser, accept_downloads=True)


def _shot(pg, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    pg.wait_for_timeout(100)
    pg.screenshot(path=str(IMG / name), full_page=True)


def _styles(pg, chart: str) -> list[tuple[str, str, str]]:
    """(colour, dash, marker shape) of each series of a chart."""
    return [tuple(x) for x in pg.evaluate(
        """sel => [...document.querySelectorAll(sel + ' g.series')].map(g => {
             const line = g.querySelector('path:not(.marker)');
             const mk = g.querySelector('path.marker');
             return [line.getAttribute('stroke'), line.getAttribute('stroke-dasharray') || '',
                     mk ? mk.getAttribute('d').replace(/[-0-9.,]+/g, '#') : 'circle'];
           })""", chart)]


def test_run_page_public_chart_distinct_series_cold_start_links_and_knob_help(served: Served, page) -> None:
    page.goto(f"{served.url}/runs/{served.lada}")
    _ready(page)
    # public_accuracy_before drawn, as the value after round x-1: x = 0..4 for a 5-round run
    assert page.locator("#chart-public g.series").count() == 4
    assert page.locator("#chart-public g.series").first.locator("circle").count() == 5
    # three clients moving nearly the same bytes cannot hide each other: each line has its own dash and marker
    for chart in ("#chart-bytes", "#chart-accuracy"):
        st = _styles(page, chart)
        assert len({(d, m) for _, d, m in st}) == len(st), (chart, st)
    # round 1 is a cold start: hatched, labelled, not coloured as a top score
    cold = page.locator("#heatmap rect.cell.cold")
    assert cold.count() == 3 * BUDGET
    assert {cold.nth(i).get_attribute("fill") for i in range(cold.count())} == {"url(#hm-cold)"}
    assert page.locator("#heatmap text.round-label.cold").count() == 3
    assert "cold start" in page.locator("#hm-cold-legend").text_content()
    cold.first.click()
    page.wait_for_selector("#sample-detail:not([hidden])")
    page.wait_for_function("() => document.getElementById('sd-context').textContent.includes('cold start')")
    assert "1.000" not in page.locator("#sd-context").text_content()
    # knob descriptions from common/config.py in the config panel
    from lada.common.config import FilterConfig

    help_of = page.evaluate("""() => {
      const sec = [...document.querySelectorAll('#sec-config details')].find(d => d.querySelector('summary')
        .textContent === 'filter');
      const th = [...sec.querySelectorAll('th')].find(t => t.firstChild.textContent === 'lam');
      return th.querySelector('.knob-help').textContent; }""")
    assert help_of == FilterConfig.model_fields["lam"].description
    assert page.locator("#sec-config .knob-help").count() >= 30
    # allocation cell -> the sample's own page (permalink)
    sid = page.locator("#sd-title").text_content().removeprefix("Sample ")
    page.click("#sd-permalink")
    page.wait_for_url(f"**/runs/{served.lada}/samples/{sid}")
    assert page.locator("#sample-id").text_content() == sid
    # a double click on a cell opens the sample page too
    page.go_back()
    _ready(page)
    cell = page.locator("#heatmap rect.cell").nth(7)
    sid = cell.get_attribute("data-sid")
    cell.dblclick()
    page.wait_for_url(f"**/runs/{served.lada}/samples/{sid}")
    # run page -> client page
    page.go_back()
    page.click("#clients-table a.client-link >> text=client-2")
    page.wait_for_url(f"**/runs/{served.lada}/clients/client-2")
    _ready(page)
    page.goto(f"{served.url}/runs/{served.lada}")
    _ready(page)
    _shot(page, "dashboard-run.png")
    assert page.errors == []


def test_client_page(served: Served, page) -> None:
    page.goto(f"{served.url}/runs/{served.lada}/clients/client-3")
    _ready(page)
    assert page.title().startswith("client-3 · lada-b80")
    assert "lada-b80" in page.locator(".crumbs").text_content()
    # accuracy (local test, 6 points: rounds 0..5) and public-mix accuracy (5 points) drawn, distinct styles
    acc = page.locator("#chart-client-accuracy g.series")
    assert acc.count() == 2
    assert [acc.nth(i).locator("circle").count() for i in range(2)] == [6, 5]
    assert len(set(_styles(page, "#chart-client-accuracy"))) == 2
    assert page.locator("#chart-client-reward g.series").count() == 2
    # what it was given by domain and difficulty: every allocation counted once, difficulties recovered
    rows = page.locator("#given-down tbody tr")
    cells = [[rows.nth(i).locator("td").nth(k).text_content() for k in (0, 1, 2, 4)] for i in range(rows.count())]
    assert sum(int(n) for _, _, n, _ in cells) == 5 * BUDGET
    assert sum(int(c) for _, _, _, c in cells) == BUDGET, "round 1's picks are the cold start"
    api = json.loads(page.request.get(f"{served.url}/api/runs/{served.lada}/clients/client-3").text())
    assert cells == [[g["domain"], str(g["difficulty"]), str(g["n"]), str(g["n_cold"])]
                     for g in api["given"] if g["direction"] == "down"]
    assert len({dom for dom, _, _, _ in cells}) >= 2, "more than its own domain (budget > its domain's samples)"
    assert "?" not in {d for _, d, _, _ in cells}, "difficulty recovered from the stored config"
    assert page.locator("#given-up tbody tr").count() >= 1
    # per round: round 1 marked cold start
    r1 = page.locator("#client-rounds tbody tr", has=page.locator("td.num", has_text="1")).first
    assert "cold start" in r1.text_content()
    # its events only, untrusted text shown as text
    kinds = [page.locator("#client-events tbody tr").nth(i).get_attribute("data-kind")
             for i in range(page.locator("#client-events tbody tr").count())]
    assert kinds == ["join", "drop", "error", "join"]
    assert page.locator("#client-events td.msg", has_text="onerror").count() == 1
    assert page.locator("#client-events img").count() == 0
    _shot(page, "dashboard-client.png")
    assert page.errors == []


def test_sample_page(served: Served, page) -> None:
    api = json.loads(page.request.get(f"{served.url}/api/runs/{served.lada}/samples/{fx.XSS_SAMPLE_ID}").text())
    page.goto(f"{served.url}/runs/{served.lada}/samples/{fx.XSS_SAMPLE_ID}")
    _ready(page)
    assert page.locator("#sample-question").text_content() == fx.XSS_QUESTION
    assert page.locator("#sample-question *").count() == 0 and page.evaluate("typeof window.__xss") == "undefined"
    rows = page.locator("#sample-allocs tbody tr")
    assert rows.count() == len(api["allocations"]) >= 1
    cold = [a for a in api["allocations"] if a["cold_start"]]
    assert cold and page.locator("#sample-allocs tr.cold .cold-badge").count() == len(cold)
    assert page.locator("#sample-paths tbody tr").count() == len(api["paths"]) >= 2
    assert page.locator("#sample-paths td.path-text", has_text=fx.XSS_PATH).count() >= 1
    assert page.locator("#sample-paths b").count() == 0, "paths are text, not markup"
    # a sample with a generated question has its difficulty (the XSS one was edited: unknown)
    assert page.locator("#sample-difficulty").text_content() == "difficulty unknown"
    page.click("#sample-allocs a >> text=client-1")
    page.wait_for_url(f"**/runs/{served.lada}/clients/client-1")
    page.goto(f"{served.url}/runs/{served.lada}/samples/public-00000")
    assert page.locator("#sample-difficulty").text_content().endswith(("step", "steps"))
    sid = page.evaluate("""rid => fetch(`/api/runs/${rid}/allocations`).then(r => r.json())
                             .then(g => g.samples[g.col[g.col.length - 1]])""", served.lada)
    page.goto(f"{served.url}/runs/{served.lada}/samples/{sid}")
    _ready(page)
    _shot(page, "dashboard-sample.png")
    assert page.errors == []


def test_compare_page_from_the_runs_list(served: Served, page) -> None:
    page.goto(f"{served.url}/")
    assert page.locator("#compare-btn").is_disabled()
    page.check(f'#runs-table input[value="{served.lada}"]')
    page.check(f'#runs-table input[value="{served.baseline}"]')
    assert page.locator("#compare-btn").text_content() == "Compare 2 runs"
    _shot(page, "dashboard-runs.png")
    page.click("#compare-btn")
    page.wait_for_url("**/compare?runs=*")
    _ready(page)
    table = page.locator("#compare-table tbody tr")
    assert table.count() == 2
    lada_row = page.locator(f'#compare-table tr[data-run-id="{served.lada}"]')
    names = {table.nth(i).locator("td").first.locator("a").text_content() for i in range(2)}
    assert names == {"lada-b80", "random-b80"}
    for chart in ("#chart-compare-llm", "#chart-compare-slm"):
        assert page.locator(f"{chart} g.series").count() == 2
        assert page.locator(f"{chart} g.series").first.locator("circle").count() == 6
        assert len(set(_styles(page, chart))) == 2, "two runs, two styles"
        legend = page.locator(f"{chart} .legend").text_content()
        assert "lada-b80" in legend and "random-b80" in legend
    api = json.loads(page.request.get(f"{served.url}/api/compare?runs={served.lada}&runs={served.baseline}").text())
    final = next(f for f in api["final"] if f["id"] == served.lada)
    assert lada_row.locator("td").nth(4).text_content().endswith(f"{100 * final['llm_final']:.1f}%")
    assert lada_row.locator("td").nth(5).text_content().endswith(f"{100 * final['slm_final']:.1f}%")
    _shot(page, "dashboard-compare.png")
    assert page.errors == []


def test_downloads(served: Served, page) -> None:
    page.goto(f"{served.url}/runs/{served.lada}")
    _ready(page)
    with page.expect_download() as dl:
        page.click("#downloads a >> text=allocations.csv")
    d = dl.value
    assert d.suggested_filename == f"run-{served.lada}-allocations.csv"
    rows = list(csv.DictReader(io.StringIO(Path(d.path()).read_text())))
    assert len(rows) == 5 * 3 * BUDGET + 5 * 3 * 10
    r1 = [r for r in rows if r["round_idx"] == "1"]
    assert r1 and all(r["cold_start"] == "True" for r in r1)
    assert {r["difficulty"] for r in rows} >= {"1", "2", "3"}
    with page.expect_download() as dl:
        page.click("#downloads a >> text=metrics.json")
    metrics = json.loads(Path(dl.value.path()).read_text())
    assert {m["name"] for m in metrics} >= {"accuracy", "public_accuracy_before", "bytes_up", "reward"}
    assert page.errors == []


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/runs/abc", 422, "run_id"),
    ("/runs/99999", 404, "Run 99999 not found"),
    ("/runs/{lada}/clients/nobody", 404, "Client 'nobody' not found"),
    ("/runs/{lada}/samples/no-such-sample", 404, "Sample 'no-such-sample' not found"),
    ("/compare?runs={lada}", 422, "runs"),
    ("/compare?runs={lada}&runs=99999", 404, "Run 99999 not found"),
])
def test_error_pages_are_styled_html(served: Served, page, path: str, status: int, text: str) -> None:
    resp = page.goto(served.url + path.format(lada=served.lada))
    assert resp.status == status
    assert resp.headers["content-type"].startswith("text/html")
    assert page.locator(".error-card .error-code").text_content() == str(status)
    assert text in page.locator(".error-card").text_content()
    assert '"detail"' not in page.content(), "no raw JSON"
    assert page.locator(".topbar a.brand").count() == 1, "the dashboard's own layout"
    if path == "/runs/abc":
        _shot(page, "dashboard-error.png")
