/* The runs list: refreshes itself while any run is live. */
"use strict";

(() => {
  const { api, h, clear, fmtTs, fmtPct } = LADA;
  const body = document.body;
  const pollMs = Math.max(1000, 2 * parseInt(body.dataset.pollMs || "2000", 10));
  let last = "";

  function row(r) {
    const meter = h("meter", { min: 0, max: r.rounds_total || 1, value: r.rounds_done });
    return h("tr", { dataset: { runId: String(r.id) } },
      h("td", { class: "num", text: r.id }),
      h("td", null, h("a", { href: LADA.link(`/runs/${r.id}`), text: r.name })),
      h("td", { text: r.method }),
      h("td", null, h("span", { class: `badge status-${r.status}`, text: r.status })),
      h("td", null, h("div", { class: "progress", title: `${r.rounds_done} of ${r.rounds_total} rounds done` },
        meter, h("span", { text: `${r.rounds_done} / ${r.rounds_total}` }))),
      h("td", { class: "num", text: r.n_clients }),
      h("td", { class: "num", text: fmtPct(r.llm_accuracy) }),
      h("td", { class: "num", text: fmtPct(r.slm_accuracy) }),
      h("td", { text: fmtTs(r.created_at) }),
      h("td", { text: fmtTs(r.finished_at) }));
  }

  async function refresh() {
    const runs = await api("/api/runs");
    const key = JSON.stringify(runs);
    if (key !== last && last !== "") {
      const tb = document.querySelector("#runs-table tbody");
      clear(tb);
      for (const r of runs) tb.appendChild(row(r));
      if (!runs.length) {
        tb.appendChild(h("tr", { class: "empty-row" }, h("td", { colspan: 10, text: "No runs yet." })));
      }
    }
    last = key;
    document.getElementById("runs-updated").textContent = `checked ${new Date().toLocaleTimeString()}`;
    return true;
  }
  refresh().catch((e) => console.warn(e));
  LADA.poll(refresh, pollMs);
})();
