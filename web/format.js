// Number and time formatting shared by the views. Pure functions, no DOM.

const nf = new Intl.NumberFormat("en-US");

export function count(n) {
  return n == null ? "–" : nf.format(Math.round(n));
}

// A duration in nanoseconds as "850 ns", "12.3 µs", "4.56 ms", "1.23 s", "2m 05s", "1h 02m".
export function ns(v) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a < 1e3) return `${Math.round(v)} ns`;
  if (a < 1e6) return `${sig(v / 1e3)} µs`;
  if (a < 1e9) return `${sig(v / 1e6)} ms`;
  return seconds(v / 1e9);
}

export function seconds(s) {
  if (s == null || !isFinite(s)) return "–";
  const a = Math.abs(s);
  if (a === 0) return "0 s";
  if (a < 1) return ns(s * 1e9);
  if (a < 60) return `${sig(s)} s`;
  if (a < 3600) return `${Math.floor(s / 60)}m ${String(Math.round(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.round((s % 3600) / 60)).padStart(2, "0")}m`;
}

// Compact seconds for narrow table cells: "850 ms", "21.7 s", "49.2m", "2.4h", "31d".
export function secondsShort(s) {
  if (s == null || !isFinite(s)) return "–";
  const a = Math.abs(s);
  if (a < 60) return seconds(s);
  if (a < 3600) return `${sig(s / 60)}m`;
  if (a < 86400 * 2) return `${sig(s / 3600)}h`;
  return `${sig(s / 86400)}d`;
}

// Three significant digits, no exponent.
function sig(x) {
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export function percent(part, whole) {
  if (!whole) return "0%";
  const p = (100 * part) / whole;
  if (p === 0) return "0%";
  if (Math.abs(p) < 0.01) return "<0.01%";
  return `${Math.abs(p) >= 10 ? p.toFixed(1) : p.toFixed(2)}%`;
}

export function bytes(b) {
  if (b == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return `${i ? sig(b) : b} ${units[i]}`;
}

// A flame graph value in its unit, as a person reads it: samples also as CPU time.
export function value(v, unit, periodNs) {
  switch (unit) {
    case "samples":
      return periodNs ? `${count(v)} samples · ${ns(v * periodNs)}` : `${count(v)} samples`;
    case "nanoseconds":
      return ns(v);
    case "bytes":
      return bytes(v);
    default:
      return count(v);
  }
}

// Compact form for table cells and axis labels.
export function valueShort(v, unit, periodNs) {
  if (unit === "samples" && periodNs) return ns(v * periodNs);
  if (unit === "nanoseconds") return ns(v);
  if (unit === "bytes") return bytes(v);
  return count(v);
}

export function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function span(fromIso, toIso) {
  const a = new Date(fromIso);
  const b = new Date(toIso);
  return `${clock(a)} – ${clock(b)} (${seconds((b - a) / 1000)})`;
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
