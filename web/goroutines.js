// Goroutines of a Go process (from /api/v1/goroutines): counts by state and by wait reason, the
// runtime's own scheduling latency histogram (drawn by histogram.js, as the run-queue one), the
// leak view (goroutines blocked longer than a threshold, by creation site, largest first) and
// every goroutine grouped by identical stack. Stacks expand on click (<details>).

import * as fmt from "./format.js";
import { renderHistogram } from "./histogram.js";

// Leak thresholds offered; the daemon's default (goroutine_leak_threshold) is 1m.
export const THRESHOLDS = ["10s", "1m", "5m", "15m"];
const SHOWN_GROUPS = 100; // per list; the rest are counted

const esc = fmt.escapeHtml;

export function renderGoroutines(host, doc, threshold, tooltip) {
  const leaks = doc.leaks;
  const stat = (k, v, title = "") => `<div class="stat" title="${esc(title)}"><span>${k}</span><b>${v}</b></div>`;
  const losses = doc.skipped || doc.truncated_stacks ? `${doc.skipped} skipped · ${doc.truncated_stacks} truncated stacks` : "";
  host.innerHTML = `
    <div class="hist-summary">
      ${stat("goroutines", fmt.count(doc.live), "as runtime.NumGoroutine() counts them")}
      ${stat("runtime's own", fmt.count(doc.system), "GC workers and other runtime goroutines, not counted above")}
      ${stat(`blocked > ${esc(threshold)}`, fmt.count(leaks.count), "leak suspects")}
      ${stat("Go", esc(doc.go_version))}
    </div>
    <p class="muted">Census of pid ${doc.pid} (${esc(doc.comm)}) read from its memory at ${new Date(doc.taken_at).toLocaleTimeString()} in ${doc.census_ms.toFixed(0)} ms${losses ? " · " + esc(losses) : ""}</p>
    <div class="gor-counts">
      ${countTable("By state", "state", doc.by_state, doc.live)}
      ${countTable("Waiting, by wait reason", "wait reason", doc.by_wait_reason, doc.live)}
    </div>
    <section class="gor-section" id="gor-latency">
      <h2>Scheduling latency <span class="muted">runnable to running, the Go runtime's own histogram (<code>/sched/latencies:seconds</code>)</span></h2>
      ${latencyNote(doc)}
      <div class="gor-latency"></div>
    </section>
    <section class="gor-section" id="gor-leaks">
      <h2>Blocked longer than
        <select id="gor-threshold" aria-label="Leak threshold">${THRESHOLDS.map((t) => `<option${t === threshold ? " selected" : ""}>${t}</option>`).join("")}</select>
        <span class="muted">by creation site and wait reason, largest first</span></h2>
      ${groupList(leaks.groups, leaks.groups_omitted, true, "No goroutine has been blocked that long (a wait is known once a GC has seen the goroutine blocked).")}
    </section>
    <section class="gor-section" id="gor-stacks">
      <h2>All goroutines <span class="muted">by identical stack, largest first</span></h2>
      ${groupList(doc.groups, doc.groups_omitted, false, "No goroutines.")}
    </section>`;
  const h = doc.sched_latency;
  if (h) {
    renderHistogram(host.querySelector(".gor-latency"), h, tooltip, {
      countLabel: "waits sampled",
      label: "Goroutine scheduling latency histogram, from the Go runtime",
      source: "Go runtime",
      emptyText: "No goroutine became runnable between these two reads (or none the runtime sampled).",
    });
  }
}

// What span the latency covers, or why there is none.
function latencyNote(doc) {
  const h = doc.sched_latency;
  if (!h) return `<p class="empty">No scheduling latency: ${esc(doc.sched_latency_unavailable || "not read yet")}.</p>`;
  const from = new Date(h.from);
  const to = new Date(h.to);
  const span = fmt.seconds((to - from) / 1000);
  return `<p class="muted" id="gor-latency-span">The Go runtime's own figures between the daemon's two latest reads of its histogram, ${from.toLocaleTimeString()} to ${to.toLocaleTimeString()} (${span}; read every goroutine census). The runtime times one goroutine wait in eight, and keeps no sum: the mean takes each wait at its bucket's middle.</p>`;
}

function countTable(title, what, counts, total) {
  const rows = Object.entries(counts || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const max = Math.max(1, ...rows.map((r) => r[1]));
  return `<table class="gor-count" aria-label="${esc(title)}">
    <caption>${esc(title)}</caption>
    <thead><tr><th>${esc(what)}</th><th class="num">goroutines</th><th class="num">share</th></tr></thead>
    <tbody>${rows
      .map(
        ([k, n]) =>
          `<tr><td class="key">${esc(k)}</td><td class="num">${fmt.count(n)}</td><td class="num"><span class="bar" style="width:${Math.max(1, Math.round((60 * n) / max))}px"></span>${fmt.percent(n, total)}</td></tr>`,
      )
      .join("")}</tbody></table>`;
}

function waiting(w) {
  if (!w) return "";
  return w.min === w.max ? fmt.ns(w.min) : `${fmt.ns(w.min)} to ${fmt.ns(w.max)}`;
}

function frameText(f) {
  const where = f.file ? `${f.file}${f.line ? ":" + f.line : ""}` : "";
  return `<span class="fn">${esc(f.function)}</span>${f.inlined ? ' <span class="muted">(inlined)</span>' : ""}${where ? ` <span class="muted">${esc(where)}</span>` : ""}`;
}

const frame = (f) => `<li>${frameText(f)}</li>`;

// Each group: a <details> whose summary is count, wait reason (or state), how long, creation
// site; open, it lists the stack (leaf first).
function groupList(groups, omitted, leaks, empty) {
  if (!groups.length) return `<p class="empty">${esc(empty)}</p>`;
  const items = groups.slice(0, SHOWN_GROUPS).map((g) => {
    const shown = g.wait_reason || g.state;
    const w = waiting(g.waiting_ns);
    const site = g.created_by ? `created by <span class="fn">${esc(g.created_by.function)}</span>` : "started by the runtime";
    const top = g.stack.find((f) => !f.function.startsWith("runtime.")) || g.stack[0];
    return `<details class="gor-group">
      <summary><b class="n">${fmt.count(g.count)}</b> <span class="reason">${esc(shown)}</span>${w ? ` <span class="muted">${w}</span>` : ""}
        · ${top ? `in <span class="fn">${esc(top.function)}</span> · ` : ""}${site}</summary>
      ${leaks ? '<div class="muted">most common stack</div>' : ""}
      <ol class="stack">${g.stack.map(frame).join("")}</ol>
      ${g.created_by ? `<div class="created">created by ${frameText(g.created_by)}</div>` : ""}
    </details>`;
  });
  const more = groups.length - items.length + (omitted || 0);
  return items.join("") + (more > 0 ? `<p class="muted">and ${fmt.count(more)} smaller groups</p>` : "");
}
