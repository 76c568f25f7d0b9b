/* Hand-written SVG line charts (axes, grid, legend, point tooltips). */
"use strict";

(() => {
  const { h, s, clear } = LADA;

  function niceStep(range, count) {
    const raw = range / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / mag;
    return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  }
  function niceTicks(min, max, count) {
    if (!(max > min)) { const d = Math.abs(min) * 0.1 || 0.5; min -= d; max += d; }
    const step = niceStep(max - min, count);
    const lo = Math.floor(min / step + 1e-9) * step, hi = Math.ceil(max / step - 1e-9) * step;
    const out = [];
    for (let v = lo; v <= hi + step / 2; v += step) out.push(+v.toFixed(10));
    return { lo, hi, ticks: out, step };
  }
  function decimals(step) { return Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9))); }

  /** A marker shape centred on (x, y), about r across: distinct shapes keep coinciding points apart. */
  function markerPath(shape, x, y, r) {
    const q = r * 1.15;
    switch (shape) {
      case "square": return `M${x - r},${y - r}h${2 * r}v${2 * r}h${-2 * r}Z`;
      case "triangle": return `M${x},${y - q * 1.1}L${x + q},${y + q * 0.8}L${x - q},${y + q * 0.8}Z`;
      case "diamond": return `M${x},${y - q * 1.2}L${x + q},${y}L${x},${y + q * 1.2}L${x - q},${y}Z`;
      case "down": return `M${x},${y + q * 1.1}L${x + q},${y - q * 0.8}L${x - q},${y - q * 0.8}Z`;
      case "cross": return `M${x - r},${y - r}L${x + r},${y + r}M${x + r},${y - r}L${x - r},${y + r}`;
      default: return null;  // circle
    }
  }
  function legendKey(sr) {
    const k = s("svg", { class: "legend-key", width: 30, height: 12, viewBox: "0 0 30 12", "aria-hidden": "true" });
    k.appendChild(s("line", { x1: 1, x2: 29, y1: 6, y2: 6, stroke: sr.color, "stroke-width": sr.width || 2,
                              "stroke-dasharray": sr.dash || null }));
    const d = markerPath(sr.marker, 15, 6, 3.2);
    k.appendChild(d ? s("path", { d, fill: "#fff", stroke: sr.color, "stroke-width": 1.6 })
                    : s("circle", { cx: 15, cy: 6, r: 3.2, fill: "#fff", stroke: sr.color, "stroke-width": 1.6 }));
    return k;
  }

  /**
   * spec: { series: [{name, x:[], y:[], color, width, dash, marker}], xLabel, yLabel,
   *         yFormat(v) -> str, valueFormat(v) -> str, clamp: [lo, hi], hlines: [{y, label, color}],
   *         bands: [{y0, y1, label, legend, color}] (a shaded reference range, e.g. a paper's figures),
   *         empty: "text when there is no data" }
   */
  function lineChart(container, spec) {
    clear(container);
    const series = (spec.series || []).filter((sr) => sr.x && sr.x.length);
    const W = Math.max(300, Math.floor(container.clientWidth || 420));
    const H = spec.height || 250;
    const m = { l: 52, r: 14, t: 12, b: 38 };
    const svg = s("svg", { class: "line-chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    container.appendChild(svg);
    if (!series.length) {
      svg.appendChild(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty-text",
                                  text: spec.empty || "no data yet" }));
      return svg;
    }
    const xs = series.flatMap((sr) => sr.x);
    let ys = series.flatMap((sr) => sr.y);
    for (const hl of spec.hlines || []) if (hl.y !== null && hl.y !== undefined) ys = ys.concat([hl.y]);
    for (const b of spec.bands || []) ys = ys.concat([b.y0, b.y1]);
    let xmin = Math.min(...xs), xmax = Math.max(...xs);
    if (xmin === xmax) { xmin -= 1; xmax += 1; }
    let ymin = Math.min(...ys), ymax = Math.max(...ys);
    if (spec.zeroBased) ymin = Math.min(0, ymin);
    const pad = (ymax - ymin) * 0.08 || 0.05;
    ymin -= spec.zeroBased && ymin === 0 ? 0 : pad;
    ymax += pad;
    if (spec.clamp) { ymin = Math.max(spec.clamp[0], ymin); ymax = Math.min(spec.clamp[1], ymax); }
    const yt = niceTicks(ymin, ymax, Math.max(3, Math.floor((H - m.t - m.b) / 45)));
    const dec = decimals(yt.step);
    const yFmt = spec.yFormat || ((v) => v.toFixed(dec));
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const X = (v) => m.l + ((v - xmin) / (xmax - xmin)) * pw;
    const Y = (v) => m.t + ph - ((v - yt.lo) / (yt.hi - yt.lo)) * ph;

    const grid = s("g", { class: "grid" });
    for (const t of yt.ticks) {
      grid.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t) }));
      grid.appendChild(s("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick", text: yFmt(t) }));
    }
    const xstep = Math.max(1, Math.ceil((xmax - xmin) / Math.max(2, Math.floor(pw / 40))));
    for (let v = Math.ceil(xmin); v <= xmax; v += xstep) {
      grid.appendChild(s("line", { x1: X(v), x2: X(v), y1: m.t + ph, y2: m.t + ph + 4, class: "tickmark" }));
      grid.appendChild(s("text", { x: X(v), y: m.t + ph + 17, "text-anchor": "middle", class: "tick", text: String(v) }));
    }
    svg.appendChild(grid);
    svg.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph, class: "axis" }));
    svg.appendChild(s("line", { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph, class: "axis" }));
    if (spec.xLabel) {
      svg.appendChild(s("text", { x: m.l + pw / 2, y: H - 4, "text-anchor": "middle", class: "axis-label", text: spec.xLabel }));
    }
    if (spec.yLabel) {
      svg.appendChild(s("text", { x: 0, y: 0, transform: `translate(13 ${m.t + ph / 2}) rotate(-90)`,
                                  "text-anchor": "middle", class: "axis-label", text: spec.yLabel }));
    }
    for (const b of spec.bands || []) {
      const g = s("g", { class: "band" });
      g.appendChild(s("rect", { x: m.l, width: W - m.l - m.r, y: Y(b.y1), height: Math.max(1, Y(b.y0) - Y(b.y1)),
                                fill: b.color || "#2e86c1", "fill-opacity": 0.13 }));
      g.appendChild(s("text", { x: m.l + 6, y: Y(b.y1) + 13, fill: b.color || "#2e86c1", class: "band-label",
                                text: b.label || "" }));
      svg.appendChild(g);
    }
    for (const hl of spec.hlines || []) {
      if (hl.y === null || hl.y === undefined) continue;
      const g = s("g", { class: "hline" });
      g.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: Y(hl.y), y2: Y(hl.y), stroke: hl.color || "#c0392b",
                                "stroke-dasharray": "6 4", "stroke-width": 1.5 }));
      g.appendChild(s("text", { x: W - m.r - 4, y: Y(hl.y) - 5, "text-anchor": "end", fill: hl.color || "#c0392b",
                                class: "hline-label", text: hl.label || "" }));
      svg.appendChild(g);
    }
    const vfmt = spec.valueFormat || yFmt;
    for (const sr of series) {
      const g = s("g", { class: "series", "data-name": sr.name });
      const d = sr.x.map((x, i) => `${i ? "L" : "M"}${X(x).toFixed(1)},${Y(sr.y[i]).toFixed(1)}`).join("");
      g.appendChild(s("path", { d, fill: "none", stroke: sr.color, "stroke-width": sr.width || 2,
                                "stroke-dasharray": sr.dash || null, "stroke-linejoin": "round", "stroke-linecap": "round" }));
      sr.x.forEach((x, i) => {
        const r = sr.width > 2 ? 3.5 : 3;
        const d = markerPath(sr.marker, X(x), Y(sr.y[i]), r);
        if (d) g.appendChild(s("path", { class: "marker", d, fill: "#fff", stroke: sr.color, "stroke-width": 1.8 }));
        // the circle is the point's hover target (and its marker when the shape is a circle)
        g.appendChild(s("circle", { cx: X(x), cy: Y(sr.y[i]), r: d ? r + 2 : r, fill: d ? "transparent" : "#fff",
                                    stroke: d ? "none" : sr.color, "stroke-width": 1.8 },
                        s("title", { text: `${sr.label || sr.name} · round ${x}: ${vfmt(sr.y[i])}` })));
      });
      svg.appendChild(g);
    }
    const legend = h("div", { class: "legend" });
    for (const sr of series) {
      const last = sr.y[sr.y.length - 1];
      legend.appendChild(h("span", { class: "legend-item", dataset: { name: sr.name } },
        legendKey(sr), sr.label || sr.name, h("b", { text: vfmt(last) })));
    }
    for (const b of spec.bands || []) {
      legend.appendChild(h("span", { class: "legend-item band-item" },
        h("i", { class: "legend-line", style: { borderColor: b.color || "#2e86c1" } }), b.legend || b.label));
    }
    for (const hl of spec.hlines || []) {
      if (hl.y === null || hl.y === undefined) continue;
      legend.appendChild(h("span", { class: "legend-item" },
        h("i", { class: "legend-line dashed", style: { borderColor: hl.color || "#c0392b" } }), hl.legend || hl.label));
    }
    container.appendChild(legend);
    return svg;
  }

  LADA.lineChart = lineChart;
  LADA.markerPath = markerPath;
  LADA.niceTicks = niceTicks;
})();
