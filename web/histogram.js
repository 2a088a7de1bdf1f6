// Latency histogram (from /api/v1/histograms, or a Go process's sched_latency from
// /api/v1/goroutines, which has the same shape) as an SVG bar chart on a log2 time axis, with
// the percentiles marked. Bars have a hover tooltip and are listed in a table for screen readers.
//
// opts (all optional): countLabel (what the count counts, default "events"), label (the chart's
// accessible name), emptyText, source (a note on the summary, e.g. whose figures these are).
// Each summary figure carries data-stat="count|mean|p50|p90|p99|max" for tests.

import * as fmt from "./format.js";

const SVG = "http://www.w3.org/2000/svg";

export function renderHistogram(host, h, tooltip, opts = {}) {
  host.textContent = "";
  const summary = document.createElement("div");
  summary.className = "hist-summary";
  // The daemon's mean when it gives one (the Go runtime's is estimated from bucket middles).
  const mean = h.mean_ns ?? (h.count ? h.sum_ns / h.count : null);
  const stats = [
    ["count", opts.countLabel || "events", fmt.count(h.count)],
    ["mean", "mean", fmt.ns(mean)],
    ["p50", "p50", fmt.ns(h.p50_ns)],
    ["p90", "p90", fmt.ns(h.p90_ns)],
    ["p99", "p99", fmt.ns(h.p99_ns)],
  ];
  if (h.max_ns != null || !opts.source) stats.push(["max", "max", fmt.ns(h.max_ns)]);
  summary.innerHTML =
    stats.map(([id, k, v]) => `<div class="stat" data-stat="${id}"><span>${k}</span><b>${v}</b></div>`).join("") +
    (opts.source ? `<div class="stat source"><span>source</span><b>${fmt.escapeHtml(opts.source)}</b></div>` : "");
  host.appendChild(summary);
  if (!h.count) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = opts.emptyText || "No events in this range.";
    host.appendChild(empty);
    return;
  }

  // Fill gaps so every power of two between the first and last bucket has a bar.
  const buckets = [];
  const finite = h.buckets.filter((b) => b.le_ns != null);
  const inf = h.buckets.find((b) => b.le_ns == null);
  let prev = 0;
  for (const b of finite) {
    // Missing power-of-two buckets between prev and b.le_ns.
    let le = prev ? prev * 2 + 1 : null;
    while (le != null && le < b.le_ns) {
      buckets.push({ lo: prev + 1, le_ns: le, count: 0 });
      prev = le;
      le = le * 2 + 1;
    }
    buckets.push({ lo: prev + 1, le_ns: b.le_ns, count: b.count });
    prev = b.le_ns;
  }
  if (inf && inf.count) buckets.push({ lo: prev + 1, le_ns: null, count: inf.count });

  const W = Math.max(480, host.clientWidth - 2);
  const H = 280;
  const m = { l: 64, r: 16, t: 40, b: 44 };
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;
  const maxCount = Math.max(...buckets.map((b) => b.count));
  const bw = iw / buckets.length;

  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "hist-chart");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", opts.label || `${h.name} latency histogram`);
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.appendChild(e);
    return e;
  };

  // Horizontal grid lines with counts.
  for (let i = 0; i <= 4; i++) {
    const y = m.t + ih - (ih * i) / 4;
    el("line", { x1: m.l, x2: m.l + iw, y1: y, y2: y, class: "grid" });
    el("text", { x: m.l - 8, y: y + 4, class: "axis", "text-anchor": "end" }, fmt.count((maxCount * i) / 4));
  }
  buckets.forEach((b, i) => {
    const bh = maxCount ? (ih * b.count) / maxCount : 0;
    const x = m.l + i * bw;
    const rect = el("rect", {
      x: x + 1,
      y: m.t + ih - bh,
      width: Math.max(bw - 2, 1),
      height: Math.max(bh, b.count ? 1 : 0),
      class: "bar",
      rx: 2,
    });
    const hit = el("rect", { x, y: m.t, width: bw, height: ih, class: "bar-hit" });
    const label = `${fmt.ns(b.lo)} – ${b.le_ns == null ? "∞" : fmt.ns(b.le_ns + 1)}`;
    hit.addEventListener("mousemove", (e) => {
      rect.classList.add("hot");
      tooltip.innerHTML = `<div class="tip-name">${label}</div>
        <div class="tip-row"><span>${opts.countLabel || "events"}</span><b>${fmt.count(b.count)}</b></div>
        <div class="tip-row"><span>share</span><b>${fmt.percent(b.count, h.count)}</b></div>`;
      tooltip.hidden = false;
      tooltip.style.transform = `translate(${e.clientX + 14}px, ${e.clientY + 14}px)`;
    });
    hit.addEventListener("mouseleave", () => {
      rect.classList.remove("hot");
      tooltip.hidden = true;
    });
    // Axis labels on at most ~14 bars (every bar when few).
    if (i % Math.ceil(buckets.length / 14) === 0) {
      el("text", { x: x + bw / 2, y: m.t + ih + 16, class: "axis", "text-anchor": "middle" }, fmt.ns(b.le_ns == null ? b.lo : b.le_ns + 1));
    }
  });
  el("text", { x: m.l + iw / 2, y: H - 6, class: "axis-title", "text-anchor": "middle" }, "latency (bucket upper bound, log scale)");

  // Percentile markers: position within the bucket by log interpolation.
  const xOf = (v) => {
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i];
      if (b.le_ns == null || v <= b.le_ns) {
        const lo = Math.log2(Math.max(b.lo, 1));
        const hi = Math.log2(b.le_ns == null ? b.lo * 2 : b.le_ns + 1);
        const f = hi > lo ? (Math.log2(Math.max(v, 1)) - lo) / (hi - lo) : 0.5;
        return m.l + (i + Math.min(Math.max(f, 0), 1)) * bw;
      }
    }
    return m.l + iw;
  };
  let lastX = -Infinity;
  let row = 0;
  for (const [name, v] of [["p50", h.p50_ns], ["p90", h.p90_ns], ["p99", h.p99_ns]]) {
    if (v == null) continue;
    const x = xOf(v);
    // Labels closer than their width go one line lower instead of overlapping.
    row = x - lastX < 96 ? row + 1 : 0;
    lastX = x;
    const y = m.t - 22 + row * 13;
    el("line", { x1: x, x2: x, y1: y + 3, y2: m.t + ih, class: `pct pct-${name}` });
    const right = x + 100 > m.l + iw;
    el("text", { x: right ? x - 4 : x + 4, y, class: `pct-label pct-${name}`, "text-anchor": right ? "end" : "start" }, `${name} ${fmt.ns(v)}`);
  }
  host.appendChild(svg);

  // The same numbers as a table (accessible, copyable).
  const details = document.createElement("details");
  details.className = "hist-table";
  details.innerHTML = `<summary>Buckets</summary><table><thead><tr><th>latency</th><th>${opts.countLabel || "events"}</th><th>share</th><th>cumulative</th></tr></thead><tbody>${(() => {
    let cum = 0;
    return buckets
      .filter((b) => b.count)
      .map((b) => {
        cum += b.count;
        return `<tr><td>${fmt.ns(b.lo)} – ${b.le_ns == null ? "∞" : fmt.ns(b.le_ns + 1)}</td><td>${fmt.count(b.count)}</td><td>${fmt.percent(b.count, h.count)}</td><td>${fmt.percent(cum, h.count)}</td></tr>`;
      })
      .join("");
  })()}</tbody></table>`;
  host.appendChild(details);
}
