/* The runs list: refreshes itself while any run is live. */
"use strict";

(() => {
  const { api, h, clear, fmtTs, fmtPct } = LADA;
  const body = document.body;
  const pollMs = Math.max(1000, 2 * parseInt(body.dataset.pollMs || "2000", 10));
  let last = "";

  const picked = () => [...document.querySelectorAll('#runs-table input[name="runs"]:checked')].map((e) => e.value);
  function syncCompare() {
    const n = picked().length;
    const btn = document.getElementById("compare-btn");
    btn.disabled = n < 2;
    btn.textContent = n >= 2 ? `Compare ${n} runs` : "Compare selected";
  }
  document.getElementById("runs-table").addEventListener("change", syncCompare);

  function row(r, checked) {
    const meter = h("meter", { min: 0, max: r.rounds_total || 1, value: r.rounds_done });
    return h("tr", { dataset: { runId: String(r.id) } },
      h("td", { class: "pick" }, h("input", { type: "checkbox", name: "runs", value: String(r.id), checked,
                                             "aria-label": `compare run ${r.id}` })),
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
      const keep = new Set(picked());
      clear(tb);
      for (const r of runs) tb.appendChild(row(r, keep.has(String(r.id))));
      if (!runs.length) {
        tb.appendChild(h("tr", { class: "empty-row" }, h("td", { colspan: 11, text: "No runs yet." })));
      }
      syncCompare();
    }
    last = key;
    document.getElementById("runs-updated").textContent = `checked ${new Date().toLocaleTimeString()}`;
    return true;
  }
  syncCompare();
  refresh().catch((e) => console.warn(e));
  LADA.poll(refresh, pollMs);
})();
