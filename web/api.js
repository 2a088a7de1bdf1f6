// The daemon's JSON API (see API.md). Every call returns parsed JSON or throws an Error whose
// message is the daemon's own ("bad parameter from: ...").

export class ApiError extends Error {}

// Requests of the same `slot` supersede each other: a newer one aborts the older, so a slow
// answer for a previous selection never overwrites the current one.
const inflight = new Map();

export async function get(path, params = {}, slot = null) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === false) continue;
    qs.append(k, v === true ? "" : String(v));
  }
  const url = `api/v1/${path}${qs.toString() ? "?" + qs : ""}`;
  let signal;
  if (slot) {
    inflight.get(slot)?.abort();
    const ctl = new AbortController();
    inflight.set(slot, ctl);
    signal = ctl.signal;
  }
  let res;
  try {
    res = await fetch(url, { signal, headers: { Accept: "application/json" } });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`cannot reach the loupe daemon (${e.message})`);
  }
  let body;
  try {
    body = await res.json();
  } catch {
    throw new ApiError(`${url}: HTTP ${res.status}, not JSON`);
  }
  if (slot && inflight.get(slot)?.signal === signal) inflight.delete(slot);
  if (!res.ok) throw new ApiError(body?.error || `${url}: HTTP ${res.status}`);
  return body;
}

// The target selector of API.md: {kind: "all" | "pid" | "container", id}.
export function targetParams(target) {
  if (target.kind === "pid") return { pid: target.id };
  if (target.kind === "container") return { container: target.id };
  return { all: true };
}

export const isAbort = (e) => e?.name === "AbortError";
