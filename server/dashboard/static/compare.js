/* The comparison page: each run's accuracy curves overlaid, one style (colour, dash, marker) per run. */
"use strict";

(() => {
  const { api, fmtPct } = LADA;
  const body = document.body;
  const ids = (body.dataset.runs || "").split(",").filter(Boolean);
  const pctFmt = (v) => `${(100 * v).toFixed(Math.abs(v) < 0.1 ? 1 : 0)}%`;

  async function draw() {
    const params = new URLSearchParams();
    for (const id of ids) params.append("runs", id);
    const d = await api(`/api/compare?${params}`);
    const style = {}, label = {};
    d.runs.forEach((r, i) => { style[r.id] = LADA.styleAt(i); label[r.id] = `${r.name} (#${r.id})`; });
    for (const el of document.querySelectorAll(".run-swatch[data-run]")) {
      const st = style[el.dataset.run];
      if (st) el.style.background = st.color;
    }
    const spec = (list) => list.map((sr) => ({ ...sr, ...style[sr.name], label: label[sr.name] }));
    const common = { xLabel: "round (0 = before collaboration)", yLabel: "accuracy", yFormat: pctFmt,
                     valueFormat: (v) => fmtPct(v), clamp: [0, 1], empty: "no accuracy recorded" };
    LADA.lineChart(document.getElementById("chart-compare-llm"), { ...common, series: spec(d.llm_accuracy) });
    LADA.lineChart(document.getElementById("chart-compare-slm"), { ...common, series: spec(d.slm_accuracy) });
  }
  draw().then(() => body.setAttribute("data-ready", "1"))
    .catch((e) => { console.error(e); body.setAttribute("data-ready", "error"); });
})();
