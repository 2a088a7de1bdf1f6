// Interactive flame graph on a canvas (root on top, callees below), fast enough for deep trees of
// tens of thousands of nodes: only frames at least half a pixel wide are laid out and drawn.
//
// Mouse: hover for a tooltip, click to zoom into a frame, click an ancestor (or the root) to zoom
// out. Keyboard (canvas focused): arrows move between frames, Home goes to the top, Enter zooms,
// Backspace zooms out one level.

import * as fmt from "./format.js";

const ROW = 18; // px per stack level
const MIN_WIDTH = 0.5; // px; narrower frames (and their callees) are not drawn
const FONT = '12px ui-sans-serif, system-ui, -apple-system, "Segoe UI", sans-serif';

// Per-node fields, set once by prepare(): name, value, kind, module, children (sorted by name),
// parent, depth, x (start, in value units from the left edge of the root), self, hue (0..1 from
// the name), a_value/delta (diff only), match (search).
function prepare(raw, parent, depth, x, diff, out) {
  const n = {
    name: raw.name,
    value: raw.value,
    kind: raw.kind || null,
    module: raw.module || null,
    parent,
    depth,
    x,
    children: [],
    self: raw.value,
    hue: hash(raw.name),
    match: false,
  };
  if (diff) {
    n.a_value = raw.a_value ?? 0;
    n.delta = raw.delta ?? 0;
  }
  out.push(n);
  const kids = (raw.children || []).filter((c) => c.value > 0 || diff);
  kids.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let cx = x;
  for (const c of kids) {
    const child = prepare(c, n, depth + 1, cx, diff, out);
    n.children.push(child);
    n.self -= child.value;
    cx += child.value;
  }
  if (n.self < 0) n.self = 0;
  return n;
}

function hash(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return ((h >>> 0) % 1000) / 1000;
}

export class FlameGraph {
  constructor(host, tooltip) {
    this.host = host;
    this.tooltip = tooltip;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "flame-canvas";
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", "Flame graph; arrow keys move between frames, Enter zooms");
    host.appendChild(this.canvas);
    this.ctx = this.canvas.getContext("2d");
    this.root = null;
    this.nodes = [];
    this.zoom = null;
    this.focus = null;
    this.hover = null;
    this.rects = []; // drawn frames: {n, x, w, y}, in depth-first order
    this.dark = false;
    this.onZoom = () => {};
    this.pending = false;

    this.canvas.addEventListener("mousemove", (e) => this.#mouseMove(e));
    this.canvas.addEventListener("mouseleave", () => {
      this.hover = null;
      this.#hideTip();
      this.#schedule();
    });
    this.canvas.addEventListener("click", (e) => {
      const r = this.#hit(e);
      if (r) {
        this.focus = r.n;
        this.zoomTo(r.n);
      }
    });
    this.canvas.addEventListener("keydown", (e) => this.#key(e));
    this.canvas.addEventListener("blur", () => {
      if (!this.hover) this.#hideTip();
    });
    new ResizeObserver(() => this.#schedule()).observe(host);
  }

  // profile: {root, unit, period_ns} from /flamegraph, or /flamegraph/diff with diff = true.
  setProfile(profile, diff = false) {
    const keepPath = this.zoom ? pathOf(this.zoom) : null;
    this.unit = profile.unit;
    this.periodNs = profile.period_ns;
    this.diff = diff;
    this.nodes = [];
    this.root = prepare(profile.root, null, 0, 0, diff, this.nodes);
    this.maxDelta = 0;
    if (diff) for (const n of this.nodes) this.maxDelta = Math.max(this.maxDelta, Math.abs(n.delta));
    // Keep the zoom across refreshes when the same frame still exists.
    this.zoom = keepPath ? findPath(this.root, keepPath) : null;
    this.focus = null;
    this.hover = null;
    this.#hideTip();
    if (this.query) this.setSearch(this.query);
    this.#schedule();
    this.onZoom(this.zoom);
  }

  clear() {
    this.root = null;
    this.nodes = [];
    this.rects = [];
    this.#schedule();
  }

  // Highlights frames whose name contains `query` (case-insensitive), or matches it as a regular
  // expression when written /like this/. Returns {frames, value, total} with value counted once per
  // stack (a match under a matching frame is not added again), or null for an empty query.
  setSearch(query) {
    this.query = query;
    let re = null;
    if (query) {
      const m = /^\/(.+)\/([a-z]*)$/.exec(query);
      try {
        re = m ? new RegExp(m[1], m[2].includes("i") ? "i" : "") : null;
      } catch {
        re = null;
      }
      if (!re) re = new RegExp(query.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i");
    }
    let frames = 0;
    let value = 0;
    for (const n of this.nodes) {
      n.match = !!re && n.depth > 0 && re.test(n.name);
      if (n.match) {
        frames++;
        let p = n.parent;
        while (p && !p.match) p = p.parent;
        if (!p) value += n.value;
      }
    }
    this.#schedule();
    if (!re || !this.root) return null;
    return { frames, value, total: this.root.value };
  }

  zoomTo(n) {
    if (!n || n === this.root) n = null;
    this.zoom = n;
    this.#schedule();
    this.onZoom(n);
  }

  resetZoom() {
    this.zoomTo(null);
  }

  // For tests and tools: the frames drawn, with their names and page coordinates (CSS px).
  debugFrames() {
    const box = this.canvas.getBoundingClientRect();
    return this.rects.map((r) => ({
      name: r.n.name,
      depth: r.n.depth,
      value: r.n.value,
      match: r.n.match,
      x: box.left + r.x,
      y: box.top + r.y,
      w: r.w,
      h: ROW - 1,
    }));
  }

  #schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.#render();
    });
  }

  #layout(width) {
    const rects = [];
    if (!this.root) return rects;
    const z = this.zoom || this.root;
    // Ancestors of the zoomed frame fill the width (shown dimmed), then the zoomed subtree.
    const chain = [];
    for (let p = z.parent; p; p = p.parent) chain.unshift(p);
    for (const p of chain) rects.push({ n: p, x: 0, w: width, y: p.depth * ROW, ancestor: true });
    const x0 = z.x;
    const scale = width / Math.max(z.value, 1e-9);
    const stack = [z];
    while (stack.length) {
      const n = stack.pop();
      const w = n.value * scale;
      if (w < MIN_WIDTH) continue;
      rects.push({ n, x: (n.x - x0) * scale, w, y: n.depth * ROW, ancestor: false });
      for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
    }
    return rects;
  }

  #render() {
    const width = Math.max(100, this.host.clientWidth);
    this.rects = this.#layout(width);
    let depth = 0;
    for (const r of this.rects) depth = Math.max(depth, r.n.depth);
    const height = this.root ? (depth + 1) * ROW + 2 : 0;
    const dpr = window.devicePixelRatio || 1;
    const c = this.canvas;
    if (c.width !== Math.round(width * dpr) || c.height !== Math.round(height * dpr)) {
      c.width = Math.round(width * dpr);
      c.height = Math.round(height * dpr);
      c.style.width = `${width}px`;
      c.style.height = `${height}px`;
    }
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    const searching = this.nodes.some((n) => n.match);
    for (const r of this.rects) {
      const n = r.n;
      ctx.fillStyle = this.#color(n, searching, r.ancestor);
      const w = Math.max(r.w - 1, 0.5);
      ctx.fillRect(r.x, r.y, w, ROW - 1);
      if (w > 28) {
        const label = this.#fit(n, w - 8);
        if (label) {
          ctx.fillStyle = this.#textColor(n, searching, r.ancestor);
          ctx.fillText(label, r.x + 4, r.y + ROW / 2);
        }
      }
    }
    for (const [n, style] of [
      [this.hover, this.dark ? "rgba(255,255,255,0.9)" : "rgba(0,0,0,0.75)"],
      [this.focus, this.dark ? "#fff" : "#111"],
    ]) {
      const r = n && this.rects.find((q) => q.n === n);
      if (!r) continue;
      ctx.strokeStyle = style;
      ctx.lineWidth = n === this.focus ? 2 : 1;
      ctx.strokeRect(r.x + 0.5, r.y + 0.5, Math.max(r.w - 2, 1), ROW - 2);
    }
  }

  #fit(n, room) {
    if (n.tw === undefined) n.tw = this.ctx.measureText(n.name).width;
    if (n.tw <= room) return n.name;
    const chars = Math.floor((n.name.length * room) / n.tw) - 1;
    return chars >= 3 ? n.name.slice(0, chars) + "…" : "";
  }

  #color(n, searching, ancestor) {
    const d = this.dark;
    if (searching && !n.match) return d ? "hsl(230 6% 30%)" : "hsl(230 8% 86%)";
    if (searching && n.match) return d ? "hsl(292 70% 62%)" : "hsl(292 65% 58%)";
    if (ancestor) return d ? "hsl(230 6% 36%)" : "hsl(230 8% 80%)";
    if (n.depth === 0) return d ? "hsl(230 6% 42%)" : "hsl(230 8% 74%)";
    if (this.diff) {
      const t = this.maxDelta ? Math.min(1, Math.abs(n.delta) / this.maxDelta) : 0;
      const k = Math.sqrt(t);
      if (n.delta > 0) return `hsl(2 ${30 + 55 * k}% ${(d ? 70 : 90) - 30 * k}%)`;
      if (n.delta < 0) return `hsl(214 ${30 + 55 * k}% ${(d ? 72 : 90) - 28 * k}%)`;
      return d ? "hsl(230 6% 62%)" : "hsl(230 8% 88%)";
    }
    const h = n.hue;
    switch (n.kind) {
      case "process":
        return d ? "hsl(230 8% 58%)" : "hsl(230 10% 78%)";
      case "kernel":
        return `hsl(${190 + 25 * h} ${45 + 20 * h}% ${d ? 60 : 70}%)`;
      case "inlined":
        return `hsl(${45 + 15 * h} ${65 + 15 * h}% ${d ? 66 : 72}%)`;
      default:
        return `hsl(${8 + 34 * h} ${70 + 15 * h}% ${d ? 60 : 64}%)`;
    }
  }

  #textColor(n, searching) {
    if (searching && !n.match) return this.dark ? "#8d8d97" : "#6b6b76";
    return "#16161a";
  }

  #hit(e) {
    const box = this.canvas.getBoundingClientRect();
    const x = e.clientX - box.left;
    const y = e.clientY - box.top;
    const depth = Math.floor(y / ROW);
    for (const r of this.rects) if (r.n.depth === depth && x >= r.x && x < r.x + r.w) return r;
    return null;
  }

  #mouseMove(e) {
    const r = this.#hit(e);
    const n = r ? r.n : null;
    if (n !== this.hover) {
      this.hover = n;
      this.#schedule();
    }
    if (n) this.#showTip(n, e.clientX, e.clientY);
    else this.#hideTip();
    this.canvas.style.cursor = n ? "pointer" : "default";
  }

  #key(e) {
    if (!this.root) return;
    const cur = this.focus && this.rects.find((r) => r.n === this.focus);
    let next = null;
    switch (e.key) {
      case "Home":
        next = this.zoom || this.root;
        break;
      case "ArrowUp":
        next = cur ? this.focus.parent : this.root;
        break;
      case "ArrowDown":
        if (!cur) next = this.zoom || this.root;
        else next = widest(this.focus.children.filter((c) => this.rects.some((r) => r.n === c)));
        break;
      case "ArrowLeft":
      case "ArrowRight": {
        if (!cur) {
          next = this.zoom || this.root;
          break;
        }
        const row = this.rects.filter((r) => r.n.depth === this.focus.depth);
        const i = row.indexOf(cur) + (e.key === "ArrowLeft" ? -1 : 1);
        next = row[i]?.n;
        break;
      }
      case "Enter":
      case " ":
        if (this.focus) this.zoomTo(this.focus);
        e.preventDefault();
        return;
      case "Backspace":
        if (this.zoom) this.zoomTo(this.zoom.parent);
        e.preventDefault();
        return;
      default:
        return;
    }
    e.preventDefault();
    if (!next) return;
    this.focus = next;
    this.#schedule();
    requestAnimationFrame(() => {
      const r = this.rects.find((q) => q.n === next);
      if (!r) return;
      const box = this.canvas.getBoundingClientRect();
      const top = box.top + r.y;
      if (top < 80 || top > window.innerHeight - 40) {
        this.host.scrollTop += top - window.innerHeight / 2;
      }
      const b2 = this.canvas.getBoundingClientRect();
      this.#showTip(next, b2.left + r.x + Math.min(r.w / 2, 60), b2.top + r.y + ROW);
    });
  }

  #showTip(n, cx, cy) {
    const total = this.root.value;
    const z = this.zoom;
    const v = (x) => fmt.value(x, this.unit, this.periodNs);
    const rows = [];
    const kind = n.kind === "kernel" ? "kernel" : n.kind === "inlined" ? "inlined" : null;
    const where = [n.module, kind].filter(Boolean).join(" · ");
    rows.push(`<div class="tip-name">${fmt.escapeHtml(n.name)}</div>`);
    if (where) rows.push(`<div class="tip-where">${fmt.escapeHtml(where)}</div>`);
    const line = (k, val) => `<div class="tip-row"><span>${k}</span><b>${val}</b></div>`;
    if (this.diff) {
      rows.push(line("now (B)", `${v(n.value)} · ${fmt.percent(n.value, total)}`));
      rows.push(line("before (A)", `${v(n.a_value)}`));
      const pts = (100 * n.delta).toFixed(2);
      rows.push(line("share change", `${n.delta > 0 ? "+" : ""}${pts} pts`));
    } else {
      rows.push(line("total", `${v(n.value)}`));
      rows.push(line("of all", fmt.percent(n.value, total)));
      if (z && z !== n && isUnder(n, z)) rows.push(line("of zoomed", fmt.percent(n.value, z.value)));
      rows.push(line("self", `${v(n.self)}`));
    }
    const tip = this.tooltip;
    tip.innerHTML = rows.join("");
    tip.hidden = false;
    const pad = 14;
    const tw = tip.offsetWidth;
    const th = tip.offsetHeight;
    let x = cx + pad;
    let y = cy + pad;
    if (x + tw > window.innerWidth - 8) x = Math.max(8, cx - tw - pad);
    if (y + th > window.innerHeight - 8) y = Math.max(8, cy - th - pad);
    tip.style.transform = `translate(${x}px, ${y}px)`;
  }

  #hideTip() {
    this.tooltip.hidden = true;
  }
}

function widest(list) {
  let best = null;
  for (const n of list) if (!best || n.value > best.value) best = n;
  return best;
}

function isUnder(n, anc) {
  for (let p = n; p; p = p.parent) if (p === anc) return true;
  return false;
}

function pathOf(n) {
  const out = [];
  for (let p = n; p && p.parent; p = p.parent) out.unshift(p.name);
  return out;
}

function findPath(root, path) {
  let n = root;
  for (const name of path) {
    n = n.children.find((c) => c.name === name);
    if (!n) return null;
  }
  return n;
}
