"""The dashboard in headless Chromium: charts drawn, allocation drill-down, escaping, live updates, token.

Needs the Debian ``chromium`` package (``apt-get install -y chromium``); Playwright
never downloads a browser here. A screenshot of the run page is saved under
``tests/artifacts/``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import dashboard as fx
from tests.support.paths import ARTIFACTS

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "br0wser-t0ken"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found: install it with `apt-get install -y chromium`", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")


@dataclass
class Served:
    url: str
    secured_url: str
    db_url: str
    finished_run: int
    live_run: int
    servers: list = field(default_factory=list)


def _serve(app) -> tuple[str, object, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, t


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from lada.server.dashboard.app import create_app

    db_url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'runs.db'}"
    finished = fx.fill_demo_run(db_url)
    live = fx.fill_demo_run(db_url, name="live-run", n_public=200, budget=20, server_budget=10,
                            finished=False, seed=1)
    open_url, s1, t1 = _serve(create_app(db_url, comm_budget_mb=6.0, poll_ms=300))
    sec_url, s2, t2 = _serve(create_app(db_url, token=TOKEN, poll_ms=300))
    srv = Served(open_url, sec_url, db_url, finished, live, [(s1, t1), (s2, t2)])
    yield srv
    for s, t in srv.servers:
        s.should_exit = True
        t.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    yield from open_page(browser)


def open_page(browser, **context: object) -> Iterator[object]:
    """A page in a fresh browser context that collects the page's errors in ``page.errors``."""
    # the pages send a strict Content-Security-Policy; the tests bypass it so that the escaping
    # checks below prove the page itself never turns data into markup (CSP is a second line)
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000}, bypass_csp=True, **context)
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def _ready(pg) -> None:
    pg.wait_for_selector("body[data-ready]")
    assert pg.get_attribute("body", "data-ready") == "1", pg.errors


def test_run_page_charts_allocations_and_escaping(served: Served, page) -> None:
    page.goto(f"{served.url}/runs/{served.finished_run}")
    _ready(page)
    # charts: non-empty SVGs with one line per series, axes and a legend
    for chart, n_series in (("accuracy", 4), ("reward", 4), ("bytes", 4)):
        sel = f"#chart-{chart} svg.line-chart"
        assert page.locator(f"{sel} g.series path").count() >= n_series, chart
        assert page.locator(f"{sel} circle").count() >= n_series * 5, chart
        assert page.locator(f"{sel} text.axis-label").count() == 2, chart
        assert page.locator(f"#chart-{chart} .legend .legend-item").count() >= n_series, chart
    assert "budget 6" in page.locator("#chart-bytes .hline-label").text_content()
    # bytes per client per round (issue 17): one line per client, no total, against the paper's band
    rb = page.locator("#chart-round-bytes svg.line-chart")
    assert rb.locator("g.series").count() == 3 and rb.locator("circle").count() >= 3 * 5
    assert "3.87-6.71 MB" in rb.locator(".band-label").text_content()
    vals = page.evaluate("""() => ['#chart-round-bytes', '#chart-bytes'].map(c => [...document.querySelectorAll(
        c + ' g.series[data-name="client-1"] circle title')].map(t => parseFloat(t.textContent.split(': ')[1])))""")
    per_round, cumulative = vals
    assert len(per_round) == len(cumulative) >= 5
    assert abs(sum(per_round) - cumulative[-1]) < 0.01 and max(per_round) < cumulative[-1]  # a round's, not the sum
    # heat map: coloured cells for the allocated samples
    assert page.locator("#heatmap rect.cell").count() > 500
    # the first page of samples, sorted by allocations: click any cell and get that sample
    first = page.locator("#heatmap rect.cell").first
    sid = first.get_attribute("data-sid")
    first.click()
    page.wait_for_selector("#sample-detail:not([hidden])")
    page.wait_for_function("sid => document.getElementById('sd-title').textContent.includes(sid)", arg=sid)
    assert page.locator("#sd-question").text_content().strip()
    assert page.locator("#sd-llm-path").text_content().strip()
    assert "score" in page.locator("#sd-context").text_content()

    # the untrusted sample: find it, click its cell, its text shows as text and runs nothing
    page.fill("#hm-find", fx.XSS_SAMPLE_ID)
    page.click(f'#heatmap rect.cell[data-sid="{fx.XSS_SAMPLE_ID}"]')
    page.wait_for_function("sid => document.getElementById('sd-title').textContent.includes(sid)",
                           arg=fx.XSS_SAMPLE_ID)
    assert page.locator("#sd-question").text_content() == fx.XSS_QUESTION
    assert page.locator("#sd-slm-path").text_content().startswith(fx.XSS_PATH)
    assert page.locator("#sd-question *, #sd-slm-path *").count() == 0, "text nodes only, no parsed markup"
    assert page.locator("#sample-detail script").count() == 0
    assert page.locator("#sec-events td.msg", has_text="onerror").count() == 1
    assert page.locator("#sec-events img").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.wait_for_timeout(200)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard_run.png"), full_page=True)
    assert page.errors == []


def test_direction_toggle_and_pager(served: Served, page) -> None:
    page.goto(f"{served.url}/runs/{served.finished_run}")
    _ready(page)
    label = page.locator("#hm-page").text_content()
    assert "of" in label
    page.uncheck("#hm-only")
    page.wait_for_function("() => document.getElementById('hm-page').textContent.includes('of 1000')")
    page.click("#hm-next")
    assert not page.locator("#hm-page").text_content().startswith("1–")
    page.select_option("#hm-direction", "up")
    page.wait_for_function("() => document.querySelectorAll('#heatmap rect.cell').length > 0")
    cell = page.locator("#heatmap rect.cell").first
    cell.click()
    page.wait_for_selector("#sample-detail:not([hidden])")
    assert "→ LLM" in page.locator("#sd-context").text_content()
    assert page.errors == []


def test_live_run_updates_without_reload(served: Served, page) -> None:
    page.goto(f"{served.url}/runs/{served.live_run}")
    _ready(page)
    assert page.locator("#run-status").text_content() == "running"
    assert page.locator("#live-indicator").text_content() == "live"
    page.evaluate("window.__sameDocument = true")
    done_before = page.locator("#rounds-table tbody .badge.round-done").count()
    points_before = page.locator("#chart-accuracy circle").count()

    idx = fx.advance_live_run(served.db_url, served.live_run)

    page.wait_for_function("() => document.getElementById('run-status').textContent === 'finished'")
    page.wait_for_function(
        "n => document.querySelectorAll('#rounds-table tbody .badge.round-done').length === n", arg=done_before + 1
    )
    page.wait_for_function(
        "n => document.querySelectorAll('#chart-accuracy circle').length > n", arg=points_before
    )
    page.wait_for_selector("#sec-events td.msg:has-text('run finished (live update)')")
    assert page.locator("#run-round").text_content().startswith(f"{idx} /")
    assert page.evaluate("window.__sameDocument") is True, "updated in place, not reloaded"
    page.wait_for_function("() => document.getElementById('live-indicator').textContent === 'not live'")
    assert page.errors == []


def test_token_protected_pages(served: Served, page) -> None:
    resp = page.goto(f"{served.secured_url}/")
    assert resp.status == 401
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#runs-table")
    page.errors.clear()  # the 401 of the first, token-less request is logged as a console error
    link = page.locator(f'#runs-table a[href^="/runs/{served.finished_run}"]')
    assert f"token={TOKEN}" in link.get_attribute("href")
    link.click()
    _ready(page)  # the page's API calls carry the token
    assert page.locator("#heatmap rect.cell").count() > 0
    assert page.locator("#chart-accuracy g.series").count() == 4
    assert page.errors == []
