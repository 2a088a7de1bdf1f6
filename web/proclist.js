// The process / container list: filter box, sortable columns, keyboard selection. Only the rows
// in view are in the DOM; events are delegated to the table body.

import * as fmt from "./format.js";

const ROW_HEIGHT = 44; // px; fixed in style.css (.procs tbody tr), so rows can be virtual
const OVERSCAN = 12; // rows rendered above and below the visible ones

const COLUMNS = [
  { key: "name", label: "Name", num: false },
  { key: "cpu", label: "CPU", num: true, title: "CPU time in the window" },
  { key: "offcpu", label: "Off-CPU", num: true, title: "Time blocked off-CPU in the window (all threads)" },
  { key: "runq", label: "RunQ p99", num: true, title: "99th percentile run-queue latency" },
];

export class ProcessList {
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.mode = "processes"; // or "containers"
    this.sort = { key: "cpu", desc: true };
    this.filter = "";
    this.processes = [];
    this.selected = { kind: "all" };
    this.rows = [];
    this.table = root.querySelector("table");
    this.body = root.querySelector("tbody");
    this.head = root.querySelector("thead tr");
    this.count = root.querySelector(".list-count");
    this.wrap = root.querySelector(".table-wrap");
    this.rowH = ROW_HEIGHT;
    this.cursor = 0;
    let raf = 0;
    this.wrap.addEventListener("scroll", () => {
      if (raf) return;
      raf = requestAnimationFrame(() => {
        raf = 0;
        this.#paint();
      });
    });
    new ResizeObserver(() => this.rows.length && this.#paint()).observe(this.wrap);

    this.head.innerHTML = COLUMNS.map(
      (c) =>
        `<th class="${c.num ? "num" : ""}" data-key="${c.key}" aria-sort="none"><button type="button" title="${c.title || "Sort by name"}">${c.label}<span class="arrow"></span></button></th>`,
    ).join("");
    this.head.addEventListener("click", (e) => {
      const th = e.target.closest("th");
      if (!th) return;
      const key = th.dataset.key;
      this.sort = { key, desc: this.sort.key === key ? !this.sort.desc : key !== "name" };
      this.render();
    });
    this.body.addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-i]");
      if (!tr) return;
      const go = e.target.closest(".go-link");
      if (go) e.preventDefault();
      this.#choose(+tr.dataset.i, go ? "goroutines" : undefined);
    });
    this.body.addEventListener("keydown", (e) => this.#key(e));
  }

  setMode(mode) {
    this.mode = mode;
    this.render();
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.render();
  }

  setData(processes) {
    this.processes = processes;
    this.render();
  }

  select(target) {
    this.selected = target;
    for (const tr of this.body.querySelectorAll("tr[aria-selected=true]")) tr.setAttribute("aria-selected", "false");
    const i = this.rows.findIndex((r) => sameTarget(r.target, target));
    const tr = i >= 0 ? this.body.querySelector(`tr[data-i="${i}"]`) : null;
    if (tr) tr.setAttribute("aria-selected", "true");
    if (i >= 0) this.cursor = i;
  }

  // The rows for the current mode, filter and sort. The first row is always "Whole host".
  #build() {
    const ps = this.processes;
    let rows;
    if (this.mode === "containers") {
      const by = new Map();
      for (const p of ps) {
        if (!p.container_id) continue;
        let c = by.get(p.container_id);
        if (!c) {
          c = { id: p.container_id, pod: p.pod, comms: new Set(), n: 0, cpu: 0, offcpu: null, runq: null };
          by.set(p.container_id, c);
        }
        c.n++;
        c.comms.add(p.comm);
        c.cpu += p.cpu_seconds || 0;
        if (p.offcpu_seconds != null) c.offcpu = (c.offcpu || 0) + p.offcpu_seconds;
        if (p.runq_p99_ns != null) c.runq = Math.max(c.runq || 0, p.runq_p99_ns);
      }
      rows = [...by.values()].map((c) => ({
        target: { kind: "container", id: c.id },
        name: c.pod ? c.pod.split("/").pop() : c.id.slice(0, 12),
        sub: `${c.pod ? c.pod.split("/")[0] + " · " : ""}${c.id.slice(0, 12)} · ${c.n} proc · ${[...c.comms].slice(0, 3).join(", ")}`,
        search: `${c.pod || ""} ${c.id} ${[...c.comms].join(" ")}`.toLowerCase(),
        cpu: c.cpu,
        offcpu: c.offcpu,
        runq: c.runq,
        dead: false,
        label: c.pod || `container ${c.id.slice(0, 12)}`,
      }));
    } else {
      rows = ps.map((p) => ({
        target: { kind: "pid", id: p.pid },
        name: p.comm,
        sub: `${p.pid}${p.pod ? " · " + p.pod : p.container_id ? " · " + p.container_id.slice(0, 12) : ""}`,
        search: `${p.comm} ${p.pid} ${p.exe || ""} ${p.pod || ""} ${p.container_id || ""}`.toLowerCase(),
        cpu: p.cpu_seconds,
        offcpu: p.offcpu_seconds,
        runq: p.runq_p99_ns,
        dead: p.alive === false,
        go: p.go === true && p.alive !== false,
        label: `${p.comm} (${p.pid})`,
      }));
    }
    const total = rows.length;
    if (this.filter) rows = rows.filter((r) => r.search.includes(this.filter));
    const { key, desc } = this.sort;
    const dir = desc ? -1 : 1;
    rows.sort((a, b) => {
      const x = a[key];
      const y = b[key];
      if (x == null && y == null) return 0;
      if (x == null) return 1;
      if (y == null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    const host = {
      target: { kind: "all" },
      name: "Whole host",
      sub: `${ps.length} processes`,
      cpu: ps.reduce((s, p) => s + (p.cpu_seconds || 0), 0),
      offcpu: ps.some((p) => p.offcpu_seconds != null) ? ps.reduce((s, p) => s + (p.offcpu_seconds || 0), 0) : null,
      runq: null,
      label: "Whole host",
      host: true,
    };
    return { rows: [host, ...rows], shown: rows.length, total };
  }

  render() {
    const { rows, shown, total } = this.#build();
    this.rows = rows;
    for (const th of this.head.children) {
      const on = th.dataset.key === this.sort.key;
      th.setAttribute("aria-sort", on ? (this.sort.desc ? "descending" : "ascending") : "none");
      th.querySelector(".arrow").textContent = on ? (this.sort.desc ? " ↓" : " ↑") : "";
    }
    const i = rows.findIndex((r) => sameTarget(r.target, this.selected));
    this.cursor = i >= 0 ? i : 0;
    this.#paint();
    const what = this.mode === "containers" ? "containers" : "processes";
    this.count.textContent = this.filter ? `${shown} of ${total} ${what}` : `${total} ${what}`;
  }

  // Only the rows in view (plus a margin) are in the DOM: a 1,000-row table costs the browser
  // hundreds of milliseconds of layout, 40 rows cost nothing. Spacer rows keep the scroll height.
  #paint() {
    const rows = this.rows;
    const view = this.wrap.clientHeight || 800;
    const top = this.wrap.scrollTop;
    const h = this.rowH;
    const first = Math.max(0, Math.floor(top / h) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + view) / h) + OVERSCAN);
    const focused = this.body.contains(document.activeElement);
    const sel = this.selected;
    const html = [`<tr class="spacer" aria-hidden="true" style="height:${first * h}px"><td colspan="4"></td></tr>`];
    for (let i = first; i < last; i++) {
      const r = rows[i];
      const on = sameTarget(r.target, sel);
      html.push(
        `<tr data-i="${i}" tabindex="${i === this.cursor ? 0 : -1}" aria-selected="${on}" aria-rowindex="${i + 2}" class="${r.host ? "host" : ""}${r.dead ? " dead" : ""}">` +
          `<td class="name"><div class="comm">${fmt.escapeHtml(r.name)}</div><div class="sub">${fmt.escapeHtml(r.sub)}${r.go ? ' · <a href="#" class="go-link" title="Goroutines of this Go process (o)">goroutines</a>' : ""}</div></td>` +
          `<td class="num">${fmt.secondsShort(r.cpu)}</td>` +
          `<td class="num">${fmt.secondsShort(r.offcpu)}</td>` +
          `<td class="num">${r.runq == null ? "–" : fmt.ns(r.runq)}</td></tr>`,
      );
    }
    html.push(`<tr class="spacer" aria-hidden="true" style="height:${(rows.length - last) * h}px"><td colspan="4"></td></tr>`);
    this.body.innerHTML = html.join("");
    this.table.setAttribute("aria-rowcount", rows.length + 1);
    this.painted = [first, last];
    if (focused) this.body.querySelector(`tr[data-i="${this.cursor}"]`)?.focus({ preventScroll: true });
  }

  // Scrolls the selected row into view.
  reveal() {
    const i = this.rows.findIndex((r) => sameTarget(r.target, this.selected));
    if (i <= 0) return;
    this.wrap.scrollTop = Math.max(0, i * this.rowH - this.wrap.clientHeight / 3);
    this.#paint();
  }

  // Moves keyboard focus to the list (the selected row, or the first).
  focus() {
    this.#moveTo(this.cursor ?? 0);
  }

  #moveTo(i) {
    i = Math.max(0, Math.min(this.rows.length - 1, i));
    this.cursor = i;
    // Row i spans [head + i*h, head + (i+1)*h) in the scroll area; the sticky head covers the top.
    const h = this.rowH;
    const head = this.head.offsetHeight;
    const top = this.wrap.scrollTop;
    if (i * h < top) this.wrap.scrollTop = i * h;
    else if (head + (i + 1) * h > top + this.wrap.clientHeight) this.wrap.scrollTop = head + (i + 1) * h - this.wrap.clientHeight;
    this.#paint();
    this.body.querySelector(`tr[data-i="${i}"]`)?.focus({ preventScroll: true });
  }

  #choose(i, view) {
    const row = this.rows[i];
    this.cursor = i;
    this.select(row.target);
    this.onSelect(row.target, row.label, view);
  }

  #key(e) {
    const tr = e.target.closest("tr[data-i]");
    if (!tr) return;
    const i = +tr.dataset.i;
    const page = Math.max(1, Math.floor(this.wrap.clientHeight / this.rowH) - 1);
    const moves = {
      ArrowDown: i + 1, j: i + 1, ArrowUp: i - 1, k: i - 1,
      PageDown: i + page, PageUp: i - page, Home: 0, End: this.rows.length - 1,
    };
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      this.#choose(i);
    } else if (e.key in moves) {
      e.preventDefault();
      this.#moveTo(moves[e.key]);
    }
  }
}

export function sameTarget(a, b) {
  return a.kind === b.kind && (a.kind === "all" || String(a.id) === String(b.id));
}
