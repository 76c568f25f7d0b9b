/* The run page: charts, allocation heat map with sample drill-down, live updates. */
"use strict";

(() => {
  const { api, h, s, clear, colorFor, fmtTs, fmtPct, fmtNum, fmtSecs } = LADA;
  const body = document.body;
  const runId = body.dataset.runId;
  const pollMs = Math.max(500, parseInt(body.dataset.pollMs || "2000", 10));
  const $ = (id) => document.getElementById(id);
  const R = (p) => `/api/runs/${runId}${p}`;

  let versions = {};
  try { versions = JSON.parse(body.dataset.versions || "{}"); } catch (e) { versions = {}; }
  let lastEventId = parseInt(body.dataset.lastEventId || "0", 10);
  let budgetMb = body.dataset.budgetMb ? parseFloat(body.dataset.budgetMb) : null;
  let chartData = null;

  // ------------------------------------------------------------------ subjects and colours
  const clientNames = [...document.querySelectorAll("#clients-table [data-subject]")].map((e) => e.dataset.subject);
  LADA.registerSubjects(clientNames);
  LADA.paintSwatches();
  const label = (name) => (name === "llm" ? "LLM" : name === "total" ? "total" : name);

  // ------------------------------------------------------------------ charts
  // the paper's communication per client per round for LaDa (server/report.py PAPER_MB)
  const PAPER_MB = [3.87, 6.71];
  const pctFmt = (v) => `${(100 * v).toFixed(Math.abs(v) < 0.1 ? 1 : 0)}%`;
  function seriesSpec(list, opts = {}) {
    return list.map((sr) => ({
      name: sr.name, x: sr.x, y: sr.y, ...LADA.styleFor(sr.name),
      label: opts.labels && opts.labels[sr.name] ? opts.labels[sr.name] : label(sr.name),
    }));
  }
  function drawCharts() {
    if (!chartData) return;
    const d = chartData;
    LADA.registerSubjects(d.subjects);
    LADA.lineChart($("chart-accuracy"), {
      series: seriesSpec(d.accuracy), xLabel: "round (0 = before collaboration)", yLabel: "accuracy",
      yFormat: pctFmt, valueFormat: (v) => fmtPct(v), clamp: [0, 1], empty: "no accuracy recorded yet",
    });
    LADA.lineChart($("chart-public"), {
      series: seriesSpec(d.public_accuracy), xLabel: "after round (0 = before collaboration)",
      yLabel: "public-mix accuracy", yFormat: pctFmt, valueFormat: (v) => fmtPct(v), clamp: [0, 1],
      empty: "no public-mix accuracy recorded yet (measured at each round's start)",
    });
    LADA.lineChart($("chart-reward"), {
      series: seriesSpec(d.reward, { labels: { llm: "LLM (from SLMs)" } }), xLabel: "round", yLabel: "reward",
      valueFormat: (v) => fmtNum(v, 3), empty: "no reward recorded yet",
    });
    const total = d.bytes_cumulative_mb.find((sr) => sr.name === "total");
    const used = total ? total.y[total.y.length - 1] : 0;
    const hl = budgetMb ? [{
      y: budgetMb, color: used > budgetMb ? "#c0392b" : "#b45309", label: `budget ${budgetMb} MB`,
      legend: `budget ${budgetMb} MB (${Math.round((100 * used) / budgetMb)}% used${used > budgetMb ? ", over" : ""})`,
    }] : [];
    LADA.lineChart($("chart-bytes"), {
      series: seriesSpec(d.bytes_cumulative_mb), xLabel: "round", yLabel: "cumulative MB (up + down)",
      valueFormat: (v) => `${v.toFixed(2)} MB`, zeroBased: true, hlines: hl, empty: "no bytes recorded yet",
    });
    LADA.lineChart($("chart-round-bytes"), {
      series: seriesSpec(perRound(d.bytes_cumulative_mb)), xLabel: "round", yLabel: "MB per client (up + down)",
      valueFormat: (v) => `${v.toFixed(3)} MB`, zeroBased: true, empty: "no bytes recorded yet",
      bands: [{ y0: PAPER_MB[0], y1: PAPER_MB[1], label: `paper's LaDa ${PAPER_MB[0]}-${PAPER_MB[1]} MB`,
                legend: `paper's LaDa: ${PAPER_MB[0]}-${PAPER_MB[1]} MB per client per round` }],
    });
  }
  // each client's MB in each round it moved bytes, from the cumulative series (clients only)
  function perRound(cumulative) {
    return cumulative.filter((sr) => sr.name !== "total" && sr.name !== "llm").map((sr) => ({
      name: sr.name, x: sr.x, y: sr.y.map((v, i) => v - (i ? sr.y[i - 1] : 0)),
    }));
  }
  async function refreshCharts() {
    chartData = await api(R("/charts"));
    drawCharts();
  }
  $("budget-form").addEventListener("submit", (e) => e.preventDefault());
  $("budget-input").addEventListener("input", () => {
    const v = parseFloat($("budget-input").value);
    budgetMb = v > 0 ? v : null;
    const u = new URL(location.href);
    if (budgetMb) u.searchParams.set("budget_mb", String(budgetMb)); else u.searchParams.delete("budget_mb");
    history.replaceState(null, "", u.pathname + u.search + u.hash);
    drawCharts();
  });

  // ------------------------------------------------------------------ heat map
  const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
  const DOMAIN_COLORS = ["#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#d9d9d9"];
  const EMPTY_CELL = "#e9edf2";
  const COLD_FILL = "url(#hm-cold)";  // hatched: chosen by the cold start, no score to colour by
  const hm = { grid: null, direction: "down", sort: "count", only: true, find: "", page: 0, selected: null, layout: null };

  function hexToRgb(hx) { const n = parseInt(hx.slice(1), 16); return [(n >> 16) & 255, (n >> 8) & 255, n & 255]; }
  const VIR_RGB = VIRIDIS.map(hexToRgb);
  function scoreColor(v, lo, hi) {
    let t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    t = Math.min(1, Math.max(0, t)) * (VIR_RGB.length - 1);
    const i = Math.min(VIR_RGB.length - 2, Math.floor(t)), f = t - i;
    const c = VIR_RGB[i].map((a, k) => Math.round(a + (VIR_RGB[i + 1][k] - a) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }
  function domainColor(dom) {
    const doms = hm.domainList;
    const i = doms.indexOf(dom);
    return dom === "?" || i < 0 ? "#cccccc" : DOMAIN_COLORS[i % DOMAIN_COLORS.length];
  }

  function indexGrid(g) {
    const nr = g.rows.length, nc = g.samples.length;
    g.cellAt = new Int32Array(nr * nc).fill(-1);
    g.count = new Int32Array(nc);
    g.sum = new Float64Array(nc);
    for (let i = 0; i < g.row.length; i++) {
      g.cellAt[g.row[i] * nc + g.col[i]] = i;
      g.count[g.col[i]] += 1;
      g.sum[g.col[i]] += g.score[i];
    }
    hm.domainList = [...new Set(g.domains)].filter((d) => d !== "?").sort();
  }
  function visibleColumns() {
    const g = hm.grid;
    let cols = [...Array(g.samples.length).keys()];
    if (hm.only) cols = cols.filter((c) => g.count[c] > 0);
    const f = hm.find.trim().toLowerCase();
    if (f) cols = cols.filter((c) => g.samples[c].toLowerCase().includes(f));
    const byId = (a, b) => (g.samples[a] < g.samples[b] ? -1 : g.samples[a] > g.samples[b] ? 1 : 0);
    const mean = (c) => (g.count[c] ? g.sum[c] / g.count[c] : -1);
    const sorters = {
      id: byId,
      count: (a, b) => g.count[b] - g.count[a] || mean(b) - mean(a) || byId(a, b),
      score: (a, b) => mean(b) - mean(a) || byId(a, b),
      domain: (a, b) => (g.domains[a] < g.domains[b] ? -1 : g.domains[a] > g.domains[b] ? 1 : byId(a, b)),
    };
    return cols.sort(sorters[hm.sort] || byId);
  }

  function renderHeatmap() {
    const box = $("heatmap");
    clear(box);
    const g = hm.grid;
    if (!g) return;
    if (!g.rows.length) {
      box.appendChild(h("p", { class: "muted loading", text: hm.direction === "up"
        ? "No SLM → LLM allocations recorded yet." : "No allocations recorded yet." }));
      $("hm-page").textContent = "–";
      renderLegend();
      return;
    }
    const W = Math.max(480, Math.floor(box.clientWidth || 900));
    const labelW = 118, right = 8, top = 16, rowH = 15, rowGap = 2, groupGap = 9;
    const plotW = W - labelW - right;
    const cols = visibleColumns();
    const pageSize = Math.max(20, Math.min(250, Math.floor(plotW / 5)));
    const pages = Math.max(1, Math.ceil(cols.length / pageSize));
    hm.page = Math.min(Math.max(0, hm.page), pages - 1);
    const pageCols = cols.slice(hm.page * pageSize, (hm.page + 1) * pageSize);
    $("hm-page").textContent = cols.length
      ? `${hm.page * pageSize + 1}–${hm.page * pageSize + pageCols.length} of ${cols.length} samples`
      : "no samples";
    $("hm-prev").disabled = hm.page === 0;
    $("hm-next").disabled = hm.page >= pages - 1;
    const cw = pageCols.length ? Math.min(28, plotW / pageCols.length) : plotW;
    const gapX = cw >= 6 ? 1 : 0;

    // row positions: grouped by peer
    const rowY = [];
    let y = top, prevPeer = null;
    const groups = [];
    g.rows.forEach((r, i) => {
      if (prevPeer !== null && r.peer !== prevPeer) y += groupGap;
      if (r.peer !== prevPeer) groups.push({ peer: r.peer, y0: y, y1: y });
      rowY.push(y);
      groups[groups.length - 1].y1 = y + rowH;
      y += rowH + rowGap;
      prevPeer = r.peer;
    });
    const H = y + 4;
    const svg = s("svg", { class: "heatmap-svg", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "grid",
                           "aria-label": "allocation heat map" });
    svg.appendChild(coldPattern());
    // domain strip
    const strip = s("g", { class: "domain-strip" });
    pageCols.forEach((c, j) => strip.appendChild(s("rect", {
      x: labelW + j * cw, y: 3, width: Math.max(1, cw - gapX), height: 8, fill: domainColor(g.domains[c]) })));
    svg.appendChild(strip);
    // labels and empty rows
    const labels = s("g", { class: "row-labels" });
    for (const gr of groups) {
      labels.appendChild(s("rect", { x: 0, y: (gr.y0 + gr.y1) / 2 - 5, width: 10, height: 10, rx: 2, fill: colorFor(gr.peer) }));
      labels.appendChild(s("text", { x: 15, y: (gr.y0 + gr.y1) / 2 + 4, class: "peer-label", text: label(gr.peer) }));
    }
    g.rows.forEach((r, i) => {
      labels.appendChild(s("text", { x: labelW - 6, y: rowY[i] + rowH - 4, "text-anchor": "end",
                                     class: r.cold_start ? "round-label cold" : "round-label",
                                     text: r.cold_start ? `r${r.round_idx} cold` : `r${r.round_idx}` }));
      labels.appendChild(s("rect", { x: labelW, y: rowY[i], width: pageCols.length * cw, height: rowH,
                                     fill: EMPTY_CELL, class: "row-bg" }));
    });
    svg.appendChild(labels);
    // cells
    const lo = g.score_min ?? 0, hi = g.score_max ?? 1;
    const cells = s("g", { class: "cells" });
    const nc = g.samples.length;
    pageCols.forEach((c, j) => {
      for (let r = 0; r < g.rows.length; r++) {
        const k = g.cellAt[r * nc + c];
        if (k < 0) continue;
        const cold = g.rows[r].cold_start;
        cells.appendChild(s("rect", {
          class: cold ? "cell cold" : "cell", x: labelW + j * cw, y: rowY[r], width: Math.max(1, cw - gapX), height: rowH,
          fill: cold ? COLD_FILL : scoreColor(g.score[k], lo, hi), "data-sid": g.samples[c], "data-row": r, "data-col": c,
        }));
      }
    });
    svg.appendChild(cells);
    // selection
    if (hm.selected) {
      const j = pageCols.indexOf(hm.selected.col);
      if (j >= 0) {
        svg.appendChild(s("rect", { class: "sel-col", x: labelW + j * cw - 1, y: top - 2, width: cw - gapX + 2,
                                    height: H - top - 2 }));
        const r = hm.selected.row;
        if (r !== null && r < rowY.length) {
          svg.appendChild(s("rect", { class: "sel-cell", x: labelW + j * cw - 1.5, y: rowY[r] - 1.5,
                                      width: cw - gapX + 3, height: rowH + 3 }));
        }
      }
    }
    box.appendChild(svg);
    hm.layout = { labelW, cw, rowY, rowH, pageCols, svg };
    renderLegend();
  }

  function coldPattern() {
    return s("defs", null, s("pattern", { id: "hm-cold", width: 4, height: 4, patternUnits: "userSpaceOnUse",
                                          patternTransform: "rotate(45)" },
      s("rect", { width: 4, height: 4, fill: "#cfd6df" }), s("line", { x1: 0, y1: 0, x2: 0, y2: 4, stroke: "#7b8794",
                                                                       "stroke-width": 2 })));
  }
  function renderLegend() {
    const lg = $("hm-legend");
    clear(lg);
    const g = hm.grid;
    if (!g) return;
    const lo = g.score_min ?? 0, hi = g.score_max ?? 1;
    const bar = s("svg", { width: 180, height: 14, class: "gradient" });
    const n = 36;
    for (let i = 0; i < n; i++) bar.appendChild(s("rect", { x: (i * 180) / n, y: 0, width: 180 / n + 0.5, height: 14,
                                                            fill: scoreColor(lo + ((hi - lo) * i) / (n - 1), lo, hi) }));
    lg.appendChild(h("span", { class: "legend-item" }, "score", h("b", { text: fmtNum(lo, 2) }), bar, h("b", { text: fmtNum(hi, 2) })));
    const empty = s("svg", { width: 14, height: 14 }, s("rect", { width: 14, height: 14, rx: 2, fill: EMPTY_CELL }));
    lg.appendChild(h("span", { class: "legend-item" }, empty, "not allocated"));
    if (g.rows.some((r) => r.cold_start)) {
      const cold = s("svg", { width: 14, height: 14 }, coldPattern(), s("rect", { width: 14, height: 14, rx: 2, fill: COLD_FILL }));
      lg.appendChild(h("span", { class: "legend-item", id: "hm-cold-legend" }, cold,
        "cold start (no reward history yet: chosen, not scored)"));
    }
    for (const d of hm.domainList) {
      const sw = s("svg", { width: 14, height: 8 }, s("rect", { width: 14, height: 8, rx: 1, fill: domainColor(d) }));
      lg.appendChild(h("span", { class: "legend-item" }, sw, `domain ${d}`));
    }
  }

  function hit(evt) {
    const L = hm.layout;
    if (!L) return null;
    const rect = L.svg.getBoundingClientRect();
    const x = evt.clientX - rect.left, y = evt.clientY - rect.top;
    const j = Math.floor((x - L.labelW) / L.cw);
    if (x < L.labelW || j < 0 || j >= L.pageCols.length) return null;
    const r = L.rowY.findIndex((ry) => y >= ry && y < ry + L.rowH);
    if (r < 0) return null;
    return { row: r, col: L.pageCols[j] };
  }
  function cellInfo(row, col) {
    const g = hm.grid;
    const k = g.cellAt[row * g.samples.length + col];
    return { k, sid: g.samples[col], dom: g.domains[col], peer: g.rows[row].peer, round: g.rows[row].round_idx,
             score: k >= 0 ? g.score[k] : null, rank: k >= 0 ? g.rank[k] : null, cold: g.rows[row].cold_start };
  }

  const tip = $("hm-tooltip");
  $("heatmap").addEventListener("mousemove", (evt) => {
    const c = hit(evt);
    if (!c) { tip.hidden = true; return; }
    const info = cellInfo(c.row, c.col);
    const dir = hm.direction === "down" ? `LLM → ${label(info.peer)}` : `${label(info.peer)} → LLM`;
    tip.textContent = `${info.sid} (${info.dom}) · ${dir} · round ${info.round} · `
      + (info.k < 0 ? "not allocated" : info.cold ? `cold start pick (no score yet) · rank ${info.rank}`
        : `score ${fmtNum(info.score, 3)} · rank ${info.rank}`);
    const wrap = tip.parentElement.getBoundingClientRect();
    tip.hidden = false;
    tip.style.left = `${Math.min(evt.clientX - wrap.left + 14, wrap.width - tip.offsetWidth - 4)}px`;
    tip.style.top = `${evt.clientY - wrap.top + 16}px`;
  });
  $("heatmap").addEventListener("mouseleave", () => { tip.hidden = true; });

  $("heatmap").addEventListener("click", (evt) => {
    const c = hit(evt);
    if (!c) return;
    if (evt.detail >= 2) {  // a double click opens the sample's own page (the first click re-drew the map,
      // so this is the second click's count, not a dblclick event on one element)
      location.href = LADA.link(`/runs/${runId}/samples/${encodeURIComponent(hm.grid.samples[c.col])}`);
      return;
    }
    hm.selected = { row: c.row, col: c.col, sid: hm.grid.samples[c.col], peer: hm.grid.rows[c.row].peer,
                    round: hm.grid.rows[c.row].round_idx };
    renderHeatmap();
    showSample();
  });

  async function refreshHeatmap() {
    const g = await api(R("/allocations"), { direction: hm.direction });
    if (g.direction !== hm.direction) return;
    indexGrid(g);
    hm.grid = g;
    if (hm.selected) {  // keep the selection across refreshes
      const col = g.samples.indexOf(hm.selected.sid);
      const row = g.rows.findIndex((r) => r.peer === hm.selected.peer && r.round_idx === hm.selected.round);
      hm.selected = col >= 0 ? { ...hm.selected, col, row: row >= 0 ? row : null } : null;
    }
    renderHeatmap();
  }
  $("hm-direction").addEventListener("change", (e) => {
    hm.direction = e.target.value; hm.page = 0; hm.selected = null; $("sample-detail").hidden = true;
    refreshHeatmap();
  });
  $("hm-sort").addEventListener("change", (e) => { hm.sort = e.target.value; hm.page = 0; renderHeatmap(); });
  $("hm-only").addEventListener("change", (e) => { hm.only = e.target.checked; hm.page = 0; renderHeatmap(); });
  $("hm-find").addEventListener("input", (e) => { hm.find = e.target.value; hm.page = 0; renderHeatmap(); });
  $("hm-prev").addEventListener("click", () => { hm.page -= 1; renderHeatmap(); });
  $("hm-next").addEventListener("click", () => { hm.page += 1; renderHeatmap(); });

  // ------------------------------------------------------------------ sample drill-down
  let sampleSeq = 0;
  function pickPath(paths, author, round) {
    const mine = paths.filter((p) => p.author === author);
    const exact = mine.find((p) => p.round_idx === round);
    if (exact) return exact;
    const before = mine.filter((p) => p.round_idx <= round);
    return before.length ? before[before.length - 1] : mine.length ? mine[mine.length - 1] : null;
  }
  function fillPath(labelEl, preEl, who, p, round) {
    labelEl.textContent = "";
    clear(labelEl);
    if (!p) {
      labelEl.append(`${who} path`);
      preEl.textContent = "no path recorded for this sample";
      preEl.classList.add("muted");
      return;
    }
    preEl.classList.remove("muted");
    labelEl.append(`${who} path · round ${p.round_idx}${p.round_idx !== round ? " (latest before)" : ""} `,
      h("span", { class: p.correct ? "badge ok" : "badge bad", text: p.correct ? "correct" : "wrong" }));
    preEl.textContent = p.text;
  }
  async function showSample() {
    const sel = hm.selected;
    if (!sel) return;
    const seq = ++sampleSeq;
    const d = await api(R(`/samples/${encodeURIComponent(sel.sid)}`));
    if (seq !== sampleSeq) return;
    const panel = $("sample-detail");
    panel.hidden = false;
    $("sd-title").textContent = `Sample ${d.sample_id}`;
    $("sd-permalink").href = LADA.link(`/runs/${runId}/samples/${encodeURIComponent(d.sample_id)}`);
    $("sd-question").textContent = d.question;
    $("sd-answer").textContent = d.answer;
    $("sd-domain").textContent = d.difficulty === null || d.difficulty === undefined
      ? d.domain : `${d.domain} · ${d.difficulty} step${d.difficulty === 1 ? "" : "s"}`;
    const receiver = hm.direction === "down" ? sel.peer : "llm";
    const sender = hm.direction === "down" ? "llm" : sel.peer;
    const a = d.allocations.find((x) => x.round_idx === sel.round && x.receiver === receiver && x.sender === sender);
    const ctx = $("sd-context");
    clear(ctx);
    ctx.append(h("b", { text: `${label(sender)} → ${label(receiver)} · round ${sel.round}` }));
    if (a) {
      const score = a.cold_start ? "cold start (no score)" : fmtNum(a.score, 3);
      for (const [k, v] of [["score", score], ["rank", String(a.rank)], ["reward", fmtNum(a.reward, 3)],
                            ["batch reward", fmtNum(a.batch_reward, 3)]]) {
        ctx.append(h("span", { class: "kv-chip" }, `${k} `, h("b", { text: v })));
      }
    } else {
      ctx.append(h("span", { class: "kv-chip muted", text: "not allocated in this round" }));
    }
    fillPath($("sd-llm-label"), $("sd-llm-path"), "LLM", pickPath(d.paths, "llm", sel.round), sel.round);
    fillPath($("sd-slm-label"), $("sd-slm-path"), `${label(sel.peer)}'s`, pickPath(d.paths, sel.peer, sel.round), sel.round);
    const at = $("sd-allocs").tBodies[0];
    clear(at);
    for (const x of d.allocations) {
      const cur = a && x === a;
      at.appendChild(h("tr", { class: cur ? "current" : null },
        h("td", { class: "num", text: x.round_idx }), h("td", { text: label(x.receiver) }), h("td", { text: label(x.sender) }),
        h("td", { class: "num" }, x.cold_start ? h("span", { class: "badge cold-badge", text: "cold start" }) : fmtNum(x.score, 3)),
        h("td", { class: "num", text: x.rank }),
        h("td", { class: "num", text: fmtNum(x.reward, 3) }), h("td", { class: "num", text: fmtNum(x.batch_reward, 3) })));
    }
    if (!d.allocations.length) at.appendChild(h("tr", { class: "empty-row" }, h("td", { colspan: 7, text: "never allocated" })));
    const pt = $("sd-paths").tBodies[0];
    clear(pt);
    for (const p of d.paths) {
      pt.appendChild(h("tr", null, h("td", { class: "num", text: p.round_idx }), h("td", { text: label(p.author) }),
        h("td", null, h("span", { class: p.correct ? "badge ok" : "badge bad", text: p.correct ? "yes" : "no" })),
        h("td", { class: "path-text", text: p.text })));
    }
  }
  $("sd-close").addEventListener("click", () => {
    $("sample-detail").hidden = true; hm.selected = null; renderHeatmap();
  });

  // ------------------------------------------------------------------ tables (live re-render)
  function renderRun(r) {
    const st = $("run-status");
    st.textContent = r.status;
    st.className = `badge status-${r.status}`;
    $("run-round").textContent = `${r.current_round} / ${r.rounds_total}`;
    $("run-progress").max = r.rounds_total || 1;
    $("run-progress").value = r.rounds_done;
    $("run-done").textContent = `${r.rounds_done} done`;
    $("run-clients").textContent = String(r.n_clients);
    $("run-llm-acc").textContent = fmtPct(r.llm_accuracy);
    $("run-slm-acc").textContent = fmtPct(r.slm_accuracy);
    $("run-finished").textContent = fmtTs(r.finished_at);
    $("run-reason").hidden = !r.reason;  // why a failed run failed
    $("run-reason-text").textContent = r.reason || "";
  }
  function renderClients(list) {
    const tb = $("clients-table").tBodies[0];
    clear(tb);
    LADA.registerSubjects(list.map((c) => c.name));
    for (const c of list) {
      tb.appendChild(h("tr", null,
        h("td", null, h("span", { class: "swatch subject", dataset: { subject: c.name } }),
          h("a", { class: "client-link", href: LADA.link(`/runs/${runId}/clients/${encodeURIComponent(c.name)}`), text: c.name })),
        h("td", null, h("code", { text: c.model })),
        h("td", { text: c.domain }),
        h("td", null, h("span", { class: `badge state-${c.state}`, text: c.state })),
        h("td", { text: fmtTs(c.joined_at) }),
        h("td", null, h("span", { class: "ago", dataset: { ts: c.last_heartbeat || "" }, title: `${fmtTs(c.last_heartbeat)} UTC` })),
        h("td", { class: "num" }, `${fmtPct(c.accuracy_start)} → `, h("b", { text: fmtPct(c.accuracy) }))));
    }
    if (!list.length) tb.appendChild(h("tr", { class: "empty-row" }, h("td", { colspan: 7, text: "No client has registered yet." })));
    LADA.paintSwatches($("clients-table"));
    LADA.tickAgo();
  }
  function renderRounds(list) {
    const table = $("rounds-table");
    const phases = [];
    for (const r of list) for (const k of Object.keys(r.timings)) if (!phases.includes(k)) phases.push(k);
    const color = (p) => LADA.PHASE_COLORS[phases.indexOf(p) % LADA.PHASE_COLORS.length];
    clear(table.tHead);
    table.tHead.appendChild(h("tr", null, h("th", { class: "num", text: "Round" }), h("th", { text: "Status" }),
      h("th", { text: "Started (UTC)" }), h("th", { class: "num", text: "Duration" }),
      phases.map((p) => h("th", { class: "num", text: p })), h("th", { class: "num", text: "Allocations" }),
      h("th", { class: "bar-col", text: "Phases" })));
    const tb = table.tBodies[0];
    clear(tb);
    const longest = Math.max(0, ...list.map((r) => Object.values(r.timings).reduce((a, b) => a + b, 0))) || 1;
    for (const r of list) {
      const bar = s("svg", { class: "phase-bar", viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img" });
      let x = 0;
      for (const p of phases) {
        const v = r.timings[p];
        if (!v) continue;
        const w = (100 * v) / longest;
        bar.appendChild(s("rect", { x, y: 0, width: w, height: 10, fill: color(p) }, s("title", { text: `${p}: ${v.toFixed(2)} s` })));
        x += w;
      }
      tb.appendChild(h("tr", null, h("td", { class: "num", text: r.idx }),
        h("td", null, h("span", { class: `badge round-${r.status}`, text: r.status })),
        h("td", { class: "nowrap", text: fmtTs(r.started_at) }), h("td", { class: "num", text: fmtSecs(r.duration_s) }),
        phases.map((p) => h("td", { class: "num", text: p in r.timings ? r.timings[p].toFixed(2) : "—" })),
        h("td", { class: "num", text: r.n_allocated }), h("td", { class: "bar-col" }, bar)));
    }
    if (!list.length) tb.appendChild(h("tr", { class: "empty-row" }, h("td", { colspan: 7, text: "No round has started yet." })));
    const lg = document.querySelector("#sec-rounds .phase-legend");
    clear(lg);
    for (const p of phases) {
      lg.appendChild(h("span", null, s("svg", { class: "sw", viewBox: "0 0 10 10" },
        s("rect", { width: 10, height: 10, rx: 2, fill: color(p) })), p));
    }
  }
  function eventRow(e) {
    return h("tr", { dataset: { kind: e.kind, id: String(e.id) } },
      h("td", { class: "nowrap", text: fmtTs(e.ts) }),
      h("td", null, h("span", { class: `badge kind-${e.kind}`, text: e.kind })),
      h("td", { text: e.subject }), h("td", { class: "msg", text: e.message }));
  }
  const MAX_EVENTS = 200;
  async function refreshEvents(full) {
    const kind = $("ev-kind").value;
    const tb = $("events-table").tBodies[0];
    if (full) {
      const list = await api(R("/events"), { kind, limit: MAX_EVENTS });
      clear(tb);
      for (const e of list.reverse()) tb.appendChild(eventRow(e));
      if (!list.length) tb.appendChild(h("tr", { class: "empty-row" }, h("td", { colspan: 4, text: "No events." })));
      return;
    }
    const list = await api(R("/events"), { kind, after_id: lastEventId, limit: 500 });
    if (!list.length) return;
    const empty = tb.querySelector(".empty-row");
    if (empty) empty.remove();
    for (const e of list) {
      tb.insertBefore(eventRow(e), tb.firstChild);
      lastEventId = Math.max(lastEventId, e.id);
    }
    while (tb.rows.length > MAX_EVENTS) tb.deleteRow(tb.rows.length - 1);
  }
  $("ev-kind").addEventListener("change", () => refreshEvents(true));

  // ------------------------------------------------------------------ live updates
  const indicator = $("live-indicator");
  async function tick() {
    const live = await api(R("/live"));
    const v = live.versions, old = versions;
    versions = v;
    const jobs = [];
    if (v.run !== old.run || v.metrics !== old.metrics || v.clients !== old.clients || v.rounds !== old.rounds) {
      jobs.push(api(R("")).then(renderRun));
    }
    if (v.clients !== old.clients) jobs.push(api(R("/clients")).then(renderClients));
    if (v.rounds !== old.rounds) jobs.push(api(R("/rounds")).then(renderRounds));
    if (v.metrics !== old.metrics || v.rounds !== old.rounds) jobs.push(refreshCharts());
    if (v.allocations !== old.allocations) {
      jobs.push(refreshHeatmap().then(() => (hm.selected && !$("sample-detail").hidden ? showSample() : null)));
    }
    if (v.events !== old.events) jobs.push(refreshEvents(false));
    await Promise.all(jobs);
    const now = new Date();
    $("live-updated").textContent = `checked ${now.toLocaleTimeString()}`;
    if (live.status === "finished" || live.status === "failed") {
      indicator.textContent = "not live";
      indicator.classList.add("off");
      return false;
    }
    indicator.textContent = "live";
    indicator.classList.remove("off");
    return true;
  }

  // ------------------------------------------------------------------ start
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { drawCharts(); renderHeatmap(); }, 150);
  });
  if (budgetMb) $("budget-input").value = String(budgetMb);
  Promise.all([refreshCharts(), refreshHeatmap()])
    .then(() => body.setAttribute("data-ready", "1"))
    .catch((e) => { console.error(e); body.setAttribute("data-ready", "error"); });
  if (body.dataset.terminal !== "true") LADA.poll(tick, pollMs);
})();
