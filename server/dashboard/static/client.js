/* The client page: its accuracy and reward charts (tables are server-rendered). */
"use strict";

(() => {
  const { api, fmtPct, fmtNum } = LADA;
  const body = document.body;
  const runId = body.dataset.runId, name = body.dataset.client;
  const pctFmt = (v) => `${(100 * v).toFixed(Math.abs(v) < 0.1 ? 1 : 0)}%`;

  function series(rows, key, shift = 0) {
    const pts = rows.filter((r) => r[key] !== null && r[key] !== undefined);
    return { x: pts.map((r) => r.round_idx + shift), y: pts.map((r) => r[key]) };
  }

  async function draw() {
    const d = await api(`/api/runs/${runId}/clients/${encodeURIComponent(name)}`);
    const clients = [name];
    LADA.registerSubjects(clients);
    LADA.paintSwatches();
    const base = LADA.styleFor(name);
    const alt = LADA.styleAt(1);
    LADA.lineChart(document.getElementById("chart-client-accuracy"), {
      series: [
        { name: "accuracy", label: "local test accuracy", ...series(d.rounds, "accuracy"), ...base, dash: null, marker: "circle" },
        // public_accuracy_before of round k is the value after round k-1 (as on the run page)
        { name: "public", label: "public-mix accuracy", ...series(d.rounds, "public_accuracy_before", -1), ...base,
          dash: "7 3", marker: "square" },
      ],
      xLabel: "round (0 = before collaboration)", yLabel: "accuracy", yFormat: pctFmt, valueFormat: (v) => fmtPct(v),
      clamp: [0, 1], empty: "no accuracy recorded yet",
    });
    LADA.lineChart(document.getElementById("chart-client-reward"), {
      series: [
        { name: "reward", label: `${name} from the LLM's paths`, ...series(d.rounds, "reward"), ...base, dash: null,
          marker: "circle" },
        { name: "reward_to_llm", label: `LLM from ${name}'s paths`, ...series(d.rounds, "reward_to_llm"),
          ...LADA.styleFor("llm"), color: alt.color },
      ],
      xLabel: "round", yLabel: "reward", valueFormat: (v) => fmtNum(v, 3), empty: "no reward recorded yet",
    });
  }
  draw().then(() => body.setAttribute("data-ready", "1"))
    .catch((e) => { console.error(e); body.setAttribute("data-ready", "error"); });
})();
