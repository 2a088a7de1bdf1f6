// loupe web UI: state, URL hash, wiring between the list, the toolbar and the views.
// Everything it shows comes from the daemon's JSON API (API.md).

import { get, targetParams, isAbort } from "./api.js";
import * as fmt from "./format.js";
import { FlameGraph } from "./flame.js";
import { renderHistogram } from "./histogram.js";
import { renderGoroutines, THRESHOLDS } from "./goroutines.js";
import { ProcessList, sameTarget } from "./proclist.js";

const $ = (sel) => document.querySelector(sel);
const PRESETS = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600 };
const MAX_NODES = 50000;
const LIST_REFRESH_MS = 10000;

// The whole UI state; the hash of the URL mirrors it (shareable, survives reloads).
const state = {
  view: "flame", // "flame" | "diff" | "hist:<name>" | "goroutines"
  type: "cpu",
  target: { kind: "all" },
  range: "5m", // a PRESETS key, or {from, to} in unix seconds
  base: "prev", // "prev", or {from, to} in unix seconds
  q: "",
  older: "1m", // leak threshold of the goroutines view
};

let types = { types: [], histograms: [] };
let processes = [];
let statusInfo = null;
let targetLabel = "Whole host";
let ready = false;
let listShown = false;

const tooltip = $("#tooltip");
const flame = new FlameGraph($("#flame"), tooltip);
const list = new ProcessList($("#list"), (target, label, view) => {
  state.target = target;
  targetLabel = label;
  if (view) state.view = view;
  update();
});

// ------------------------------------------------------------------ URL hash

function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("view")) state.view = h.get("view");
  if (h.get("type")) state.type = h.get("type");
  const t = h.get("target");
  if (t === "all" || !t) state.target = { kind: "all" };
  else if (t.startsWith("pid:")) state.target = { kind: "pid", id: +t.slice(4) };
  else if (t.startsWith("container:")) state.target = { kind: "container", id: t.slice(10) };
  state.range = parseRange(h.get("range")) || "5m";
  state.base = parseRange(h.get("base")) || "prev";
  state.q = h.get("q") || "";
  if (THRESHOLDS.includes(h.get("older"))) state.older = h.get("older");
}

function parseRange(s) {
  if (!s) return null;
  if (PRESETS[s] || s === "prev") return s;
  const m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(s);
  return m && +m[1] < +m[2] ? { from: +m[1], to: +m[2] } : null;
}

function writeHash() {
  const t = state.target;
  const r = (x) => (typeof x === "string" ? x : `${x.from}-${x.to}`);
  const h = new URLSearchParams({
    view: state.view,
    type: state.type,
    target: t.kind === "all" ? "all" : `${t.kind}:${t.id}`,
    range: r(state.range),
  });
  if (state.view === "diff" && state.base !== "prev") h.set("base", r(state.base));
  if (state.q) h.set("q", state.q);
  if (state.view === "goroutines") h.set("older", state.older);
  history.replaceState(null, "", `#${h}`);
}

// ------------------------------------------------------------------ ranges as API parameters

function rangeParams(range) {
  if (typeof range === "string") return { from: `now-${range}`, to: "now" };
  return { from: range.from, to: range.to };
}

// Baseline A: the period of the same length just before B, or a custom range.
function baseParams() {
  if (state.base !== "prev") return { a_from: state.base.from, a_to: state.base.to };
  if (typeof state.range === "string") {
    const s = PRESETS[state.range];
    return { a_from: `now-${s * 2}s`, a_to: `now-${s}s` };
  }
  const len = state.range.to - state.range.from;
  return { a_from: state.range.from - len, a_to: state.range.from };
}

function rangeLength() {
  return typeof state.range === "string" ? PRESETS[state.range] : state.range.to - state.range.from;
}

// ------------------------------------------------------------------ loading

let busy = 0;
function setBusy(d) {
  busy += d;
  $("#busy").hidden = busy <= 0;
}

async function load(fn) {
  setBusy(1);
  try {
    return await fn();
  } finally {
    setBusy(-1);
  }
}

function showMessage(text, kind = "info") {
  const m = $("#message");
  m.hidden = !text;
  m.textContent = text || "";
  m.className = `message ${kind}`;
}

async function loadProcesses() {
  const window = typeof state.range === "string" ? state.range : "60s";
  try {
    const r = await load(() => get("processes", { window }, "processes"));
    processes = r.processes;
    performance.mark("loupe-processes-json");
    list.setData(processes);
    performance.mark("loupe-list-rendered");
    list.select(state.target);
    if (ready) renderControls(); // the goroutines tab follows what the daemon knows of Go
    if (!listShown) list.reveal(); // a link to a process opens with its row in view
    listShown = true;
    updateTitle();
  } catch (e) {
    if (!isAbort(e)) showMessage(e.message, "error");
  }
}

async function loadStatus() {
  try {
    statusInfo = await get("status");
    renderStatus();
  } catch (e) {
    $("#status-line").textContent = "daemon unreachable";
    $("#status").dataset.state = "bad";
  }
}

async function loadView() {
  writeHash();
  tooltip.hidden = true;
  renderControls();
  const view = state.view;
  const flameView = view === "flame" || view === "diff";
  $("#flame").hidden = !flameView;
  $("#flame-tools").hidden = !flameView;
  $("#hist").hidden = flameView || view === "goroutines";
  $("#gor").hidden = view !== "goroutines";
  const typeInfo = types.types.find((t) => t.type === state.type);
  if (flameView && typeInfo && !typeInfo.enabled) {
    flame.clear();
    $("#covered").textContent = "";
    showMessage(`${typeInfo.label} is disabled: ${typeInfo.reason}`, "warn");
    return;
  }
  try {
    if (view === "flame") await loadFlame();
    else if (view === "diff") await loadDiff();
    else if (view === "goroutines") await loadGoroutines();
    else await loadHistogram(view.slice(5));
  } catch (e) {
    if (isAbort(e)) return;
    flame.clear();
    $("#covered").textContent = "";
    showMessage(e.message, "error");
  }
}

async function loadFlame() {
  const p = await load(() =>
    get("flamegraph", { type: state.type, ...targetParams(state.target), ...rangeParams(state.range), max_nodes: MAX_NODES }, "view"),
  );
  performance.mark("loupe-flame-json");
  flame.setProfile(p);
  applySearch();
  const asked = rangeLength();
  const got = (new Date(p.to) - new Date(p.from)) / 1000;
  let text = `${fmt.span(p.from, p.to)} · ${fmt.value(p.total, p.unit, p.period_ns)}`;
  if (got < asked * 0.95) text += ` · only ${fmt.seconds(got)} of ${fmt.seconds(asked)} stored`;
  if (p.trimmed) text += ` · ${fmt.count(p.trimmed)} tiny frames merged`;
  const lost = Object.values(p.drops || {}).reduce((a, b) => a + b, 0);
  if (lost) text += ` · ${fmt.count(lost)} lost`;
  $("#covered").textContent = text;
  $("#covered").title = lost ? Object.entries(p.drops).map(([k, v]) => `${k}: ${v}`).join("\n") : "";
  showMessage(p.total ? "" : "No samples for this target in this range.", "info");
}

async function loadDiff() {
  const p = await load(() =>
    get(
      "flamegraph/diff",
      {
        type: state.type,
        ...targetParams(state.target),
        ...baseParams(),
        b_from: rangeParams(state.range).from,
        b_to: rangeParams(state.range).to,
        max_nodes: MAX_NODES,
      },
      "view",
    ),
  );
  flame.setProfile(p, true);
  applySearch();
  const v = (x) => fmt.valueShort(x, p.unit, p.period_ns);
  $("#covered").textContent = `A ${fmt.span(p.a.from, p.a.to)}: ${v(p.a.total)} · B ${fmt.span(p.b.from, p.b.to)}: ${v(p.b.total)}`;
  $("#covered").title = "";
  let msg = "";
  if (!p.b.total) msg = "No samples in range B.";
  else if (!p.a.total) msg = "No samples in baseline A: every frame counts as new.";
  showMessage(msg, "info");
}

async function loadHistogram(name) {
  const h = await load(() => get("histograms", { name, ...targetParams(state.target), ...rangeParams(state.range) }, "view"));
  showMessage("", "info");
  const host = $("#hist");
  renderHistogram(host, h, tooltip);
  const note = document.createElement("p");
  note.className = "muted";
  note.textContent = `${fmt.span(h.from, h.to)} · ${types.histograms.find((x) => x.name === name)?.description || ""}`;
  host.prepend(note);
}

// The goroutines view is offered for a process not known to be anything but Go (the daemon
// finds out on the first census: `go` is null until then).
function goroutinesOffered() {
  const t = state.target;
  if (t.kind !== "pid") return false;
  return processes.find((p) => p.pid === t.id)?.go !== false;
}

async function loadGoroutines() {
  const host = $("#gor");
  if (state.target.kind !== "pid") {
    host.textContent = "";
    showMessage("Goroutines are counted per process: pick a Go process in the list.", "info");
    return;
  }
  const doc = await load(() => get("goroutines", { pid: state.target.id, older_than: state.older }, "view"));
  showMessage("", "info");
  renderGoroutines(host, doc, state.older, tooltip);
  performance.mark("loupe-goroutines-rendered");
  $("#gor-threshold").addEventListener("change", (e) => {
    state.older = e.target.value;
    loadView();
  });
}

function applySearch() {
  const r = flame.setSearch(state.q);
  const m = $("#match");
  if (!r) m.textContent = "";
  else if (!r.frames) m.textContent = "no match";
  else m.textContent = `${r.frames} frame${r.frames === 1 ? "" : "s"} · ${fmt.percent(r.value, r.total)} of total`;
  m.classList.toggle("hit", !!r?.frames);
}

// ------------------------------------------------------------------ rendering of chrome

function renderControls() {
  const views = $("#views");
  const want = [["flame", "Flame graph"], ["diff", "Diff"], ...types.histograms.map((h) => [`hist:${h.name}`, h.label, h])];
  if (goroutinesOffered()) want.push(["goroutines", "Goroutines"]);
  views.innerHTML = want
    .map(([id, label, h]) => {
      const dis = h && !h.enabled;
      return `<button type="button" role="tab" data-view="${id}" aria-selected="${state.view === id}" ${dis ? `disabled title="${fmt.escapeHtml(h.reason)}"` : ""}>${fmt.escapeHtml(label)}</button>`;
    })
    .join("");
  const flameView = state.view === "flame" || state.view === "diff";
  $("#types").hidden = !flameView;
  $("#ranges").hidden = state.view === "goroutines"; // a census is of now
  if (state.view === "goroutines") $("#custom").hidden = true;
  $("#types").innerHTML = types.types
    .map(
      (t) =>
        `<button type="button" role="radio" data-type="${fmt.escapeHtml(t.type)}" aria-checked="${state.type === t.type}" ${t.enabled ? "" : "disabled"} title="${fmt.escapeHtml(t.enabled ? t.description || "" : `Disabled: ${t.reason}`)}">${fmt.escapeHtml(t.label || t.type)}</button>`,
    )
    .join("");
  for (const b of $("#ranges").children) {
    const on = typeof state.range === "string" ? b.dataset.range === state.range : b.dataset.range === "custom";
    b.setAttribute("aria-checked", on);
    b.setAttribute("role", "radio");
  }
  $("#diffbar").hidden = state.view !== "diff";
  $("#baseline").value = state.base === "prev" ? "prev" : "custom";
  $("#base-custom").hidden = state.base === "prev" && $("#baseline").value === "prev";
  for (const b of $("#modes").children) b.setAttribute("aria-selected", b.dataset.mode === list.mode);
}

function updateTitle() {
  const t = state.target;
  let title = "Whole host";
  let sub = statusInfo ? `${statusInfo.hostname} · ${processes.length} processes` : "";
  if (t.kind === "pid") {
    const p = processes.find((x) => x.pid === t.id);
    title = p ? p.comm : `PID ${t.id}`;
    sub = p
      ? [`pid ${p.pid}`, p.exe, p.pod, p.container_id && `container ${p.container_id.slice(0, 12)}`, p.alive === false && "exited"]
          .filter(Boolean)
          .join(" · ")
      : "not in the process list of this window";
  } else if (t.kind === "container") {
    const ps = processes.filter((p) => p.container_id === t.id);
    title = ps[0]?.pod || `container ${t.id.slice(0, 12)}`;
    sub = `container ${t.id.slice(0, 12)} · ${ps.length} processes · ${[...new Set(ps.map((p) => p.comm))].join(", ")}`;
  }
  $("#target-title").textContent = title;
  $("#target-sub").textContent = sub;
  document.title = `${title} · loupe`;
}

function renderStatus() {
  const s = statusInfo;
  $("#hostname").textContent = s.hostname;
  const off = s.collectors.filter((c) => !c.enabled);
  const lost = Object.values(s.drops).reduce((a, b) => a + b, 0);
  const parts = [`${s.collectors.length - off.length} of ${s.collectors.length} collectors`];
  if (lost) parts.push(`${fmt.count(lost)} lost`);
  $("#status-line").textContent = parts.join(" · ");
  $("#status").dataset.state = off.length || lost ? "warn" : "ok";
  const skew = (Date.now() - new Date(s.now)) / 1000;
  const w = s.windows;
  const row = (k, v) => `<tr><th>${fmt.escapeHtml(k)}</th><td>${v}</td></tr>`;
  $("#status-body").innerHTML = `
    <h3>Collectors</h3>
    <table>${s.collectors
      .map((c) => row(c.name, c.enabled ? `<span class="ok">on</span> ${fmt.escapeHtml(c.detail || "")}` : `<span class="off">off</span> ${fmt.escapeHtml(c.reason || "")}`))
      .join("")}</table>
    <h3>Losses</h3>
    <table>${Object.entries(s.drops).map(([k, v]) => row(k, fmt.count(v))).join("")}</table>
    <h3>Store</h3>
    <table>
      ${row("windows", `${fmt.count(w.count)} × ${w.seconds} s`)}
      ${row("oldest", w.oldest ? new Date(w.oldest).toLocaleString() : "–")}
      ${row("retention", fmt.seconds(w.retention_seconds))}
      ${row("memory", `${fmt.bytes(s.memory.rss_bytes)} RSS · ${fmt.bytes(s.memory.store_bytes)} store · ${fmt.bytes(s.memory.bpf_maps_bytes)} BPF maps`)}
      ${row("daemon", `loupe ${fmt.escapeHtml(s.version)}, up ${fmt.seconds((new Date(s.now) - new Date(s.started)) / 1000)}`)}
      ${Math.abs(skew) > 5 ? row("clock", `this browser is ${fmt.seconds(Math.abs(skew))} ${skew > 0 ? "ahead of" : "behind"} the host`) : ""}
    </table>`;
  updateTitle();
}

function renderCrumbs(z) {
  const c = $("#crumbs");
  $("#reset").disabled = !z;
  if (!z) {
    c.innerHTML = "";
    return;
  }
  const chain = [];
  for (let n = z; n && n.parent; n = n.parent) chain.unshift(n);
  const shown = chain.length > 4 ? [null, ...chain.slice(-3)] : chain;
  c.innerHTML = shown
    .map((n) => (n ? `<button type="button" class="link" data-depth="${n.depth}">${fmt.escapeHtml(n.name)}</button>` : "<span>…</span>"))
    .join('<span class="sep">›</span>');
  c.onclick = (e) => {
    const d = e.target.dataset?.depth;
    if (d == null) return;
    let n = z;
    while (n.depth > +d) n = n.parent;
    flame.zoomTo(n);
  };
}
flame.onZoom = renderCrumbs;

// ------------------------------------------------------------------ events

function update() {
  if (state.view === "goroutines" && state.target.kind !== "pid") state.view = "flame";
  list.select(state.target);
  updateTitle();
  loadView();
}

function setRange(r) {
  state.range = r;
  loadProcesses();
  loadView();
}

$("#views").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-view]");
  if (b) setView(b.dataset.view);
});
function setView(v) {
  if (v === "hist" ) v = types.histograms.find((h) => h.enabled) ? `hist:${types.histograms.find((h) => h.enabled).name}` : state.view;
  if (state.view === v) return;
  state.view = v;
  loadView();
}
$("#types").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-type]");
  if (b && !b.disabled) {
    state.type = b.dataset.type;
    loadView();
  }
});
$("#ranges").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-range]");
  if (!b) return;
  if (b.dataset.range === "custom") {
    const f = $("#custom");
    f.hidden = !f.hidden;
    if (!f.hidden) {
      const now = Date.now() / 1000;
      const r = typeof state.range === "string" ? { from: now - PRESETS[state.range], to: now } : state.range;
      $("#custom-from").value = toLocalInput(r.from);
      $("#custom-to").value = toLocalInput(r.to);
      $("#custom-from").focus();
    }
    return;
  }
  $("#custom").hidden = true;
  setRange(b.dataset.range);
});
$("#custom").addEventListener("submit", (e) => {
  e.preventDefault();
  const from = fromLocalInput($("#custom-from").value);
  const to = fromLocalInput($("#custom-to").value);
  if (!(from < to)) {
    showMessage("The custom range must start before it ends.", "error");
    return;
  }
  setRange({ from, to });
});
$("#baseline").addEventListener("change", () => {
  const custom = $("#baseline").value === "custom";
  $("#base-custom").hidden = !custom;
  if (!custom) {
    state.base = "prev";
    loadView();
  } else {
    const now = Date.now() / 1000;
    const len = rangeLength();
    const b = typeof state.range === "string" ? { from: now - len, to: now } : state.range;
    $("#base-from").value = toLocalInput(b.from - len);
    $("#base-to").value = toLocalInput(b.from);
    $("#base-from").focus();
  }
});
$("#diffbar").addEventListener("submit", (e) => {
  e.preventDefault();
  const from = fromLocalInput($("#base-from").value);
  const to = fromLocalInput($("#base-to").value);
  if (!(from < to)) {
    showMessage("The baseline range must start before it ends.", "error");
    return;
  }
  state.base = { from, to };
  loadView();
});
$("#modes").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-mode]");
  if (!b) return;
  list.setMode(b.dataset.mode);
  list.select(state.target);
  renderControls();
});
$("#filter").addEventListener("input", (e) => {
  list.setFilter(e.target.value);
  list.select(state.target);
});
$("#filter").addEventListener("keydown", (e) => {
  if (e.key === "ArrowDown" || e.key === "Enter") {
    e.preventDefault();
    const first = $("#list tbody tr:nth-child(2)") || $("#list tbody tr");
    first?.focus();
  }
});
let searchTimer = 0;
$("#search").addEventListener("input", (e) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    state.q = e.target.value;
    applySearch();
    writeHash();
  }, 80);
});
$("#reset").addEventListener("click", () => flame.resetZoom());

const THEMES = ["system", "light", "dark"];
function applyTheme(t) {
  document.documentElement.dataset.theme = t;
  localStorage.setItem("loupe-theme", t);
  $("#theme").textContent = { system: "◐ System", light: "☀ Light", dark: "☾ Dark" }[t];
  const dark = t === "dark" || (t === "system" && matchMedia("(prefers-color-scheme: dark)").matches);
  flame.dark = dark;
  flame.setSearch(state.q);
}
$("#theme").addEventListener("click", () => {
  const cur = document.documentElement.dataset.theme || "system";
  applyTheme(THEMES[(THEMES.indexOf(cur) + 1) % THEMES.length]);
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(document.documentElement.dataset.theme));
$("#help-open").addEventListener("click", () => $("#help").showModal());
// The status popover closes on a click elsewhere or Esc, as menus do.
document.addEventListener("click", (e) => {
  if (!$("#status").contains(e.target)) $("#status").open = false;
});

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const inField = e.target.matches("input, select, textarea");
  if (e.key === "Escape") {
    if ($("#status").open) {
      $("#status").open = false;
      return;
    }
    if (e.target === $("#search") || (!inField && state.q)) {
      if (state.q || $("#search").value) {
        $("#search").value = "";
        state.q = "";
        applySearch();
        writeHash();
        return;
      }
    }
    if (inField) {
      e.target.blur();
      return;
    }
    if (flame.zoom) flame.resetZoom();
    else tooltip.hidden = true;
    return;
  }
  if (inField || $("#help").open) return;
  const k = e.key;
  const act = {
    "/": () => $("#search").focus(),
    f: () => $("#filter").focus(),
    l: () => list.focus(),
    g: () => flame.canvas.focus(),
    a: () => {
      state.target = { kind: "all" };
      targetLabel = "Whole host";
      update();
    },
    p: () => setView("flame"),
    d: () => setView("diff"),
    h: () => setView("hist"),
    o: () => goroutinesOffered() && setView("goroutines"),
    c: () => {
      const on = types.types.filter((t) => t.enabled);
      const i = on.findIndex((t) => t.type === state.type);
      if (on.length) {
        state.type = on[(i + 1) % on.length].type;
        loadView();
      }
    },
    1: () => setRange("1m"),
    2: () => setRange("5m"),
    3: () => setRange("15m"),
    4: () => setRange("1h"),
    r: () => {
      loadProcesses();
      loadStatus();
      loadView();
    },
    t: () => $("#theme").click(),
    "?": () => $("#help").showModal(),
  }[k];
  if (act) {
    e.preventDefault();
    act();
  }
});

function toLocalInput(unix) {
  const d = new Date(unix * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function fromLocalInput(s) {
  const t = new Date(s).getTime();
  return isFinite(t) ? Math.round(t / 1000) : NaN;
}

// ------------------------------------------------------------------ start

async function start() {
  readHash();
  applyTheme(localStorage.getItem("loupe-theme") || "system");
  $("#search").value = state.q;
  // The list and the first view load in parallel; only the view waits for /types (tiny).
  const listDone = loadProcesses();
  loadStatus();
  try {
    types = await get("types");
  } catch (e) {
    showMessage(e.message, "error");
  }
  // Fall back to an enabled type when the hash names one that is unknown or disabled.
  const known = types.types.find((x) => x.type === state.type && x.enabled);
  if (!known && types.types.some((x) => x.enabled)) state.type = types.types.find((x) => x.enabled).type;
  if (state.view.startsWith("hist:") && !types.histograms.some((h) => `hist:${h.name}` === state.view)) state.view = "flame";
  list.select(state.target);
  updateTitle();
  await Promise.all([loadView(), listDone]);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))); // drawn
  ready = true;
  performance.mark("loupe-ready");
  document.documentElement.dataset.ready = "1";
  setInterval(() => {
    if (document.visibilityState === "visible") {
      loadProcesses();
      loadStatus();
    }
  }, LIST_REFRESH_MS);
}

window.loupe = { state, flame, list, isReady: () => ready, sameTarget };
start();
