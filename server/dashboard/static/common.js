/* LaDa dashboard: shared helpers. No framework, no external code.
 * Every piece of data goes into the page through textContent / setAttribute,
 * never through innerHTML: questions, paths and messages come from models and
 * clients and are untrusted. */
"use strict";

const LADA = (() => {
  const body = document.body;
  const base = body.dataset.base || "";
  const token = new URLSearchParams(location.search).get("token");
  const SVG_NS = "http://www.w3.org/2000/svg";

  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#ff9da7", "#9c755f"];
  const PHASE_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"];
  const LLM_COLOR = "#2b2d42";
  const TOTAL_COLOR = "#111827";
  const subjects = [];

  /** A stable colour per subject: 'llm' and 'total' fixed, clients in order of first sight (sorted first). */
  function colorFor(name) {
    if (name === "llm") return LLM_COLOR;
    if (name === "total") return TOTAL_COLOR;
    let i = subjects.indexOf(name);
    if (i < 0) { subjects.push(name); i = subjects.length - 1; }
    return PALETTE[i % PALETTE.length];
  }
  // line style per subject: together with the colour, a dash pattern and a marker shape, so that
  // series with equal values (three clients moving the same bytes) still show as three lines
  const DASHES = [null, "7 3", "2 3", "9 3 2 3", "4 4", "12 4", "1 4", "6 2 2 2 2 2"];
  const MARKERS = ["circle", "square", "triangle", "diamond", "down", "cross"];
  function styleFor(name) {
    if (name === "llm") return { color: LLM_COLOR, dash: "10 3 3 3", marker: "diamond", width: 2.6 };
    if (name === "total") return { color: TOTAL_COLOR, dash: null, marker: "square", width: 2.6 };
    const c = colorFor(name), i = subjects.indexOf(name);
    return { color: c, dash: DASHES[i % DASHES.length], marker: MARKERS[i % MARKERS.length], width: 2 };
  }
  /** The same, by position (runs on the comparison page). */
  function styleAt(i) {
    return { color: PALETTE[i % PALETTE.length], dash: DASHES[i % DASHES.length], marker: MARKERS[i % MARKERS.length],
             width: 2.2 };
  }
  function registerSubjects(names) {
    [...names].filter((n) => n !== "llm" && n !== "total").sort().forEach((n) => colorFor(n));
  }

  function url(path, params) {
    const u = new URL(base + path, location.origin);
    if (params) for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.searchParams.set(k, v);
    return u.pathname + u.search;
  }
  /** A link that keeps the page's ?token= (pages are opened with it when the dashboard is protected). */
  function link(path) {
    return token ? url(path, { token }) : base + path;
  }
  async function api(path, params) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(url(path, params), { headers, cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  /** h("td", {class: "num"}, "text", node, ...): strings become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "style") Object.assign(el.style, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

  const pad = (n) => String(n).padStart(2, "0");
  /** ISO (UTC) -> "YYYY-MM-DD HH:MM:SS" in UTC, as the server renders it. */
  function fmtTs(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (isNaN(d)) return "—";
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function fmtAgo(iso) {
    if (!iso) return "never";
    const secs = (Date.now() - new Date(iso).getTime()) / 1000;
    if (!isFinite(secs)) return "—";
    if (secs < 2) return "just now";
    if (secs < 90) return `${Math.round(secs)} s ago`;
    if (secs < 5400) return `${Math.round(secs / 60)} min ago`;
    if (secs < 172800) return `${Math.round(secs / 3600)} h ago`;
    return `${Math.round(secs / 86400)} days ago`;
  }
  function fmtPct(v, digits = 1) { return v === null || v === undefined ? "—" : `${(100 * v).toFixed(digits)}%`; }
  function fmtNum(v, digits = 3) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }
  function fmtSecs(v) {
    if (v === null || v === undefined) return "—";
    if (v < 60) return `${v.toFixed(1)} s`;
    const m = Math.floor(Math.round(v) / 60), sec = Math.round(v) % 60;
    return m < 60 ? `${m} min ${pad(sec)} s` : `${Math.floor(m / 60)} h ${pad(m % 60)} min`;
  }

  /** Relative times ("12 s ago") refresh every second; the absolute time stays in the title. */
  function tickAgo() {
    for (const el of document.querySelectorAll(".ago[data-ts]")) el.textContent = fmtAgo(el.dataset.ts);
  }
  function paintSwatches(root = document) {
    for (const el of root.querySelectorAll(".swatch[data-subject]")) el.style.background = colorFor(el.dataset.subject);
  }

  /** Calls fn every ms while the tab is visible; fn returns false to stop. */
  function poll(fn, ms) {
    let stopped = false;
    async function loop() {
      if (stopped) return;
      let again = true;
      if (!document.hidden) {
        try { again = (await fn()) !== false; } catch (e) { console.warn("poll failed:", e); }
      }
      if (again) setTimeout(loop, ms); else stopped = true;
    }
    setTimeout(loop, ms);
    return () => { stopped = true; };
  }

  // links rendered by JS keep the token; server-rendered ones already do
  setInterval(tickAgo, 1000);
  document.addEventListener("DOMContentLoaded", () => { tickAgo(); paintSwatches(); });

  return { api, url, link, h, s, clear, colorFor, styleFor, styleAt, registerSubjects, paintSwatches, fmtTs, fmtAgo, fmtPct, fmtNum,
           fmtSecs, tickAgo, poll, PHASE_COLORS, token };
})();
