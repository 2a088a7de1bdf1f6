// Drives headless Chromium through loupe's web UI and checks what a person would see.
//
//   cd web/test && npm install            # playwright-core only; uses the system's Chromium
//   node ui_test.mjs                      # starts mock_server.py on a free port and tests it
//   node ui_test.mjs --base-url http://127.0.0.1:7470/ --process split --function main.spin
//
// Options:
//   --base-url URL       the UI to test; without it, mock_server.py is started and used
//   --process NAME       a process name (comm) that must be in the list and have samples
//   --function TEXT      a substring of a frame name in that process's CPU profile
//   --min-processes N    the list must show at least N processes (default: 1000 with the mock, 1 otherwise)
//   --max-load-ms MS     page start to list + first flame graph drawn (default 1000)
//   --out DIR            screenshots go here (default web/test/out)
//   --chromium PATH      browser binary (default /usr/lib/chromium/chromium, then /usr/bin/chromium)
//   --go-pid PID         a Go process in the list: its goroutines view is opened from the list's
//                        "goroutines" link and checked against the two options below (with the
//                        mock: one of its Go services, with the mock's numbers)
//   --go-wait-reasons R  "chan receive=400;sleep=150": wait reasons the view must show, with counts
//   --go-functions F     "main.spawnRecv,main.leakGoroutines": creation sites the view must name
//   --go-latency-pid PID a Go process whose goroutines view must draw the runtime's scheduling
//                        latency: the figures shown must be the ones of the /api/v1/goroutines
//                        answer the page drew (written to DIR/go-sched-latency.json, for the
//                        caller to check against the runtime's own; with the mock: --go-pid's)
//
// Exits 0 when every check passes, 1 otherwise (each check prints ok/FAIL with what it saw).

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`unexpected argument ${argv[i]}`);
    opts[m[1]] = m[2] ?? argv[++i];
    if (opts[m[1]] === undefined) throw new Error(`--${m[1]} needs a value`);
  }
  const known = ["base-url", "process", "function", "min-processes", "max-load-ms", "out", "chromium", "go-pid", "go-wait-reasons", "go-functions", "go-latency-pid"];
  for (const k of Object.keys(opts)) if (!known.includes(k)) throw new Error(`unknown option --${k}`);
  return opts;
}

let failures = 0;
function check(ok, what, seen = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${seen !== "" ? `  [${seen}]` : ""}`);
  if (!ok) failures++;
  return ok;
}

async function startMock() {
  const proc = spawn("python3", [join(here, "mock_server.py"), "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise((res, rej) => {
    let buf = "";
    proc.stdout.on("data", (d) => {
      buf += d;
      const m = /(http:\/\/\S+\/)/.exec(buf);
      if (m) res(m[1]);
    });
    proc.on("exit", (code) => rej(new Error(`mock_server.py exited with ${code}`)));
    setTimeout(() => rej(new Error("mock_server.py did not start in 10 s")), 10000);
  });
  return { proc, url };
}

function hueOf([r, g, b]) {
  r /= 255; g /= 255; b /= 255;
  const max = Math.max(r, g, b);
  const min = Math.min(r, g, b);
  const d = max - min;
  if (d < 0.04) return { hue: null, sat: 0 }; // grey
  let h;
  if (max === r) h = ((g - b) / d) % 6;
  else if (max === g) h = (b - r) / d + 2;
  else h = (r - g) / d + 4;
  return { hue: (h * 60 + 360) % 360, sat: d };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let mock = null;
  let base = opts["base-url"];
  if (!base) {
    mock = await startMock();
    base = mock.url;
    console.log(`using mock_server.py at ${base}`);
  }
  if (mock && !opts["go-pid"]) {
    // The mock's Go services have made-up goroutines (mock_server.py GO_GROUPS).
    const ps = await (await fetch(`${base}api/v1/processes`)).json();
    opts["go-pid"] = String(ps.processes.find((p) => p.comm === "checkout-api" && p.go).pid);
    opts["go-wait-reasons"] = "IO wait=412;chan receive=160;select=40;sync.Mutex.Lock=12";
    opts["go-functions"] = "main.(*api).startWatchers,net/http.(*Server).Serve,main.(*pool).start";
    opts["go-latency-pid"] ??= opts["go-pid"];
  }
  const procName = opts.process ?? (mock ? "checkout-api" : null);
  const func = opts.function ?? (mock ? "sha256" : null);
  if (!procName || !func) throw new Error("--process and --function are required with --base-url");
  const minProcs = +(opts["min-processes"] ?? (mock ? 1000 : 1));
  const maxLoadMs = +(opts["max-load-ms"] ?? 1000);
  const out = resolve(opts.out ?? join(here, "out"));
  mkdirSync(out, { recursive: true });
  const exe = opts.chromium ?? ["/usr/lib/chromium/chromium", "/usr/bin/chromium"].find(existsSync);
  if (!exe || !existsSync(exe)) throw new Error(`no Chromium binary (${exe ?? "tried /usr/lib/chromium/chromium, /usr/bin/chromium"}): apt-get install -y chromium`);

  const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", "--disable-gpu"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 }, colorScheme: "light" });
    const errors = [];
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()}`));

    // 1. Load: the list and the first flame graph, timed by the page itself. The first load of a
    // freshly started browser pays for the browser's own cold start, so the second one is timed.
    await page.goto(base);
    await page.waitForSelector('html[data-ready="1"]', { timeout: 15000 });
    const coldMs = await page.evaluate(() => performance.getEntriesByName("loupe-ready")[0].startTime);
    await page.reload();
    await page.waitForSelector('html[data-ready="1"]', { timeout: 15000 });
    const loadMs = await page.evaluate(() => performance.getEntriesByName("loupe-ready")[0].startTime);
    check(loadMs < maxLoadMs, `page ready (list + flame graph drawn) in under ${maxLoadMs} ms`, `${loadMs.toFixed(0)} ms; first load ${coldMs.toFixed(0)} ms`);
    const countText0 = await page.textContent(".list-count");
    const listed = +(/^(\d+) processes$/.exec(countText0)?.[1] ?? -1);
    check(listed >= minProcs, `process list shows at least ${minProcs} processes`, countText0);
    const hostFrames = await page.evaluate(() => window.loupe.flame.debugFrames().length);
    check(hostFrames > 10, "whole-host flame graph has frames", `${hostFrames} frames drawn`);
    // The list is virtual: scrolling to the end must bring the last rows in.
    await page.$eval("#list .table-wrap", (w) => (w.scrollTop = w.scrollHeight));
    await page.waitForTimeout(100);
    const lastRow = await page.$$eval("#list tbody tr[data-i]", (trs) => Math.max(...trs.map((t) => +t.dataset.i)));
    check(lastRow === listed, "scrolling the list to the end shows the last row", `row ${lastRow} of ${listed}`);
    const heights = await page.$$eval("#list tbody tr[data-i]", (trs) => [...new Set(trs.map((t) => t.getBoundingClientRect().height))]);
    check(heights.length === 1 && heights[0] === 44, "list rows have the fixed height the virtual list assumes (44 px)", heights.join(","));
    await page.$eval("#list .table-wrap", (w) => (w.scrollTop = 0));

    // 2. Filter the list, pick the busiest process of that name (the list is sorted by CPU).
    await page.keyboard.press("f");
    await page.keyboard.type(procName);
    await page.waitForTimeout(50);
    const filtered = await page.$$eval("#list tbody tr[data-i]:not(.host) .comm", (els) => els.map((e) => e.textContent));
    check(filtered.includes(procName), `filter "${procName}" shows "${procName}"`, `${filtered.length} rows: ${[...new Set(filtered)].slice(0, 5).join(", ")}`);
    if (!filtered.includes(procName)) throw new Error(`process "${procName}" is not in the list; the remaining checks need it`);
    const countText = await page.textContent(".list-count");
    check(/ of /.test(countText), "list says how many rows the filter keeps", countText);
    const row = page.locator("#list tbody tr[data-i]:not(.host)", { has: page.locator(".comm", { hasText: procName }) }).first();
    const pid = await row.locator(".sub").textContent();
    await row.click();
    await page.waitForFunction(
      (name) => {
        const f = window.loupe.flame.debugFrames();
        return document.querySelector("#busy").hidden && f.some((x) => x.depth === 1 && x.name === name);
      },
      procName,
      { timeout: 10000 },
    );
    const title = await page.textContent("#target-title");
    check(title === procName, "title shows the selected process", `${title}, ${pid}`);

    // 3. Named frames: real names, and hovering one shows it in the tooltip.
    const frames = await page.evaluate(() => window.loupe.flame.debugFrames());
    const named = frames.filter((f) => f.depth >= 2 && /[A-Za-z_]/.test(f.name) && !/^0x[0-9a-f]+$/.test(f.name));
    check(named.length >= 3, "flame graph draws named frames", named.slice(0, 4).map((f) => f.name).join(", "));
    const deepest = Math.max(...frames.map((f) => f.depth));
    check(deepest >= 3, "flame graph has stacks deeper than the process level", `depth ${deepest}`);
    const vh = page.viewportSize().height;
    const target = named.filter((f) => f.w > 40 && f.y + f.h < vh - 10).sort((a, b) => b.depth - a.depth)[0];
    if (check(!!target, "a frame wide enough to hover")) {
      await page.mouse.move(target.x + target.w / 2, target.y + target.h / 2);
      await page.waitForSelector("#tooltip:not([hidden])", { timeout: 3000 });
      const tip = await page.textContent("#tooltip");
      check(tip.includes(target.name) && /%/.test(tip), "hover tooltip names the frame with its share", tip.slice(0, 120));
      await page.screenshot({ path: join(out, "flame-hover.png") });
    }

    // 4. Search highlights the matching frames and reports their share.
    await page.mouse.move(5, 5);
    await page.keyboard.press("/");
    await page.keyboard.type(func);
    await page.waitForFunction(() => /frame/.test(document.querySelector("#match").textContent) || /no match/.test(document.querySelector("#match").textContent), null, { timeout: 3000 });
    const match = await page.textContent("#match");
    check(/^\d+ frames? · [\d.<]+% of total$/.test(match), `search "${func}" reports matched frames and share`, match);
    await page.waitForTimeout(100); // one animation frame for the redraw
    const state = await page.evaluate(() => window.loupe.flame.debugFrames());
    const hits = state.filter((f) => f.match);
    check(hits.length > 0 && hits.every((f) => f.name.toLowerCase().includes(func.toLowerCase())), "matching frames are marked", hits.slice(0, 3).map((f) => f.name).join(", "));
    const onScreen = (f) => f.y + f.h < vh - 10;
    const hit = hits.filter(onScreen).sort((a, b) => b.w - a.w)[0];
    const miss = state.filter((f) => !f.match && f.depth >= 2 && onScreen(f)).sort((a, b) => b.w - a.w)[0];
    if (hit && miss) {
      const px = await page.evaluate(
        ([a, b]) => {
          const c = window.loupe.flame.canvas;
          const box = c.getBoundingClientRect();
          const dpr = window.devicePixelRatio || 1;
          const at = (f) => [...c.getContext("2d").getImageData(Math.round((f.x - box.left + 2) * dpr), Math.round((f.y - box.top + 2) * dpr), 1, 1).data];
          return [at(a), at(b)];
        },
        [hit, miss],
      );
      const h = hueOf(px[0]);
      const m = hueOf(px[1]);
      check(h.hue !== null && h.hue > 270 && h.hue < 320, "a matching frame is drawn in the highlight colour", `rgb ${px[0].slice(0, 3)}`);
      check(m.sat < 0.15, "a frame that does not match is drawn grey", `rgb ${px[1].slice(0, 3)}`);
    }
    await page.screenshot({ path: join(out, "flame-search.png") });

    // 5. Click to zoom: the frame fills the width; Esc clears the search, Esc again resets.
    if (hit) {
      await page.mouse.click(hit.x + Math.min(hit.w / 2, 20), hit.y + hit.h / 2);
      await page.waitForTimeout(100);
      const z = await page.evaluate(() => {
        const f = window.loupe.flame.debugFrames();
        const w = window.loupe.flame.canvas.getBoundingClientRect().width;
        const zoom = window.loupe.flame.zoom;
        return { name: zoom?.name, w, zw: f.find((x) => zoom && x.name === zoom.name && x.depth === zoom.depth)?.w };
      });
      check(z.name === hit.name && Math.abs(z.zw - z.w) < 2, "click zooms the frame to the full width", `${z.name}: ${z.zw?.toFixed(0)} of ${z.w.toFixed(0)} px`);
      check(!(await page.isDisabled("#reset")), "reset zoom is enabled while zoomed");
      await page.screenshot({ path: join(out, "flame-zoom.png") });
      await page.keyboard.press("Escape");
      await page.keyboard.press("Escape");
      await page.waitForTimeout(100);
      const after = await page.evaluate(() => ({ zoom: !!window.loupe.flame.zoom, q: window.loupe.state.q }));
      check(!after.zoom && after.q === "", "Esc clears the search, then resets the zoom", JSON.stringify(after));
    }

    // 5b. Keyboard: focus the flame graph, walk down to the widest callee, Enter zooms into it.
    await page.click("#target-title"); // out of any text field, so "g" is a shortcut
    await page.keyboard.press("g");
    await page.keyboard.press("Home");
    for (let i = 0; i < 2; i++) await page.keyboard.press("ArrowDown");
    const focused = await page.evaluate(() => window.loupe.flame.focus && { name: window.loupe.flame.focus.name, depth: window.loupe.flame.focus.depth });
    await page.keyboard.press("Enter");
    await page.waitForTimeout(100);
    const kz = await page.evaluate(() => window.loupe.flame.zoom && { name: window.loupe.flame.zoom.name, depth: window.loupe.flame.zoom.depth });
    check(focused?.depth === 2 && kz?.name === focused.name, "arrow keys move the frame focus and Enter zooms", `${JSON.stringify(focused)} -> ${JSON.stringify(kz)}`);
    await page.keyboard.press("Backspace");
    await page.waitForTimeout(50);
    const up = await page.evaluate(() => window.loupe.flame.zoom?.depth);
    check(up === 1, "Backspace zooms out one level", `zoomed at depth ${up}`);
    await page.keyboard.press("Escape");

    // 5c. A custom range (the last 2 minutes, typed into the form) is what the view shows.
    await page.click('#ranges button[data-range="custom"]');
    const nowS = Math.floor(Date.now() / 1000);
    await page.evaluate(([a, b]) => {
      const local = (s) => { const d = new Date(s * 1000); const p = (n) => String(n).padStart(2, "0"); return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`; };
      document.querySelector("#custom-from").value = local(a);
      document.querySelector("#custom-to").value = local(b);
    }, [nowS - 120, nowS]);
    await page.click('#custom button[type="submit"]');
    await page.waitForFunction(() => typeof window.loupe.state.range === "object" && document.querySelector("#busy").hidden, null, { timeout: 10000 });
    const cov = await page.textContent("#covered");
    const asked = await page.evaluate(() => window.loupe.state.range.to - window.loupe.state.range.from);
    const m = /\((?:(\d+)m )?(\d+)s\)/.exec(cov) || /\(([\d.]+) s\)/.exec(cov);
    const shown = m ? (m.length === 3 ? +(m[1] || 0) * 60 + +m[2] : +m[1]) : NaN;
    // The daemon answers with whole stored windows, so the span may pass 2 minutes by one window.
    check(asked === 120 && shown > 0 && shown <= 150, "a custom range of 2 minutes is asked for and shown", `${asked} s asked; ${cov}`);

    // 6. Diff of two ranges.
    await page.keyboard.press("2"); // last 5 minutes
    await page.keyboard.press("d");
    await page.waitForFunction(() => window.loupe.state.view === "diff" && document.querySelector("#busy").hidden && /^A /.test(document.querySelector("#covered").textContent), null, { timeout: 10000 });
    const diffFrames = await page.evaluate(() => window.loupe.flame.debugFrames().length);
    check(diffFrames > 3, "diff view draws frames", `${diffFrames} frames, ${await page.textContent("#covered")}`);
    await page.screenshot({ path: join(out, "diff.png") });

    // 7. Run-queue latency histogram.
    const histAvailable = await page.evaluate(() => window.loupe && document.querySelector('#views [data-view^="hist:"]:not([disabled])') !== null);
    if (check(histAvailable, "a latency histogram view is offered")) {
      await page.keyboard.press("h");
      await page.waitForFunction(() => document.querySelector("#busy").hidden && document.querySelector("#hist .hist-summary"), null, { timeout: 10000 });
      const bars = await page.$$eval("#hist rect.bar", (r) => r.length);
      const events = await page.textContent("#hist .stat b");
      check(bars > 0 || events === "0", "histogram draws its buckets", `${bars} bars, ${events} events`);
      await page.screenshot({ path: join(out, "histogram.png") });
    }

    // 8. Every enabled profile type draws (off-CPU, ...), in the dark theme.
    await page.keyboard.press("p");
    await page.keyboard.press("t");
    await page.keyboard.press("t"); // system -> light -> dark
    const types = await page.$$eval("#types button:not([disabled])", (bs) => bs.map((b) => b.dataset.type));
    for (const t of types) {
      await page.click(`#types button[data-type="${t}"]`);
      await page.waitForFunction((t) => window.loupe.state.type === t && document.querySelector("#busy").hidden, t, { timeout: 10000 });
      await page.waitForTimeout(50);
      const n = await page.evaluate(() => window.loupe.flame.debugFrames().length);
      const msg = await page.evaluate(() => document.querySelector("#message").hidden ? "" : document.querySelector("#message").textContent);
      check(n > 1 || /No samples/.test(msg), `profile type ${t} draws`, `${n} frames ${msg}`);
      await page.screenshot({ path: join(out, `dark-${t}.png`) });
    }

    // 9. Containers: the list groups processes by container; one's flame graph loads.
    await page.click('#modes button[data-mode="containers"]');
    await page.fill("#filter", "");
    await page.waitForTimeout(50);
    const ctext = await page.textContent(".list-count");
    const nContainers = +(/^(\d+) containers$/.exec(ctext)?.[1] ?? -1);
    if (nContainers > 0) {
      const crow = page.locator("#list tbody tr[data-i]:not(.host)").first();
      const cname = await crow.locator(".comm").textContent();
      await crow.click();
      await page.waitForFunction(() => window.loupe.state.target.kind === "container" && document.querySelector("#busy").hidden, null, { timeout: 10000 });
      await page.waitForTimeout(50);
      const n = await page.evaluate(() => window.loupe.flame.debugFrames().length);
      check(n > 1, "a container's flame graph draws", `${cname}: ${n} frames`);
      await page.screenshot({ path: join(out, "dark-container.png") });
    } else {
      console.log(`note: no containers on this host (${ctext})`);
    }

    // 10. Goroutines of a Go process: opened from the list, counts by wait reason as given, the
    // creation sites named, the leak view largest first, a stack expands.
    if (opts["go-pid"]) await goroutinesView(page, opts, out);
    if (opts["go-latency-pid"]) await schedLatencyView(page, opts["go-latency-pid"], out);

    check(errors.length === 0, "no errors in the page", errors.join(" | "));
    console.log(`screenshots in ${out}`);
  } finally {
    await browser.close();
    mock?.proc.kill();
  }
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  console.log("all checks passed");
}

async function goroutinesView(page, opts, out) {
  const pid = opts["go-pid"];
  await page.keyboard.press("p"); // out of the dark-theme type loop, back to a flame view
  await page.click('#modes button[data-mode="processes"]');
  await page.fill("#filter", pid);
  await page.waitForTimeout(100);
  const link = page.locator("#list tbody tr[data-i]:not(.host)", { has: page.locator(".sub", { hasText: pid }) }).locator(".go-link").first();
  if (!check((await link.count()) === 1, `the list offers a goroutines link for Go process ${pid}`, await page.textContent(".list-count"))) return;
  await link.click();
  await page.waitForFunction(() => window.loupe.state.view === "goroutines" && document.querySelector("#busy").hidden && document.querySelector("#gor .gor-count"), null, { timeout: 20000 });
  const tab = await page.$eval('#views button[data-view="goroutines"]', (b) => b.getAttribute("aria-selected"));
  check(tab === "true", "the Goroutines tab is selected", tab);
  const reasons = await page.$$eval('#gor table[aria-label^="Waiting"] tbody tr', (trs) =>
    Object.fromEntries(trs.map((tr) => [tr.querySelector(".key").textContent, +tr.querySelector(".num").textContent.replace(/,/g, "")])),
  );
  for (const pair of (opts["go-wait-reasons"] || "").split(";").filter(Boolean)) {
    const [reason, n] = pair.split("=");
    check(reasons[reason] === +n, `wait reason "${reason}" shows ${n} goroutines`, reasons[reason]);
  }
  const text = await page.textContent("#gor");
  for (const fn of (opts["go-functions"] || "").split(",").filter(Boolean)) {
    check(text.includes(`created by ${fn}`), `the view names the creation site ${fn}`);
  }
  // The leak view at the smallest threshold: the process ran past it, so groups are listed.
  await page.selectOption("#gor-threshold", "10s");
  await page.waitForFunction(() => window.loupe.state.older === "10s" && document.querySelector("#busy").hidden && document.querySelector("#gor-threshold")?.value === "10s", null, { timeout: 20000 });
  const leakCounts = await page.$$eval("#gor-leaks .gor-group .n", (ns) => ns.map((n) => +n.textContent.replace(/,/g, "")));
  check(leakCounts.length > 0 && leakCounts.every((n, i) => i === 0 || leakCounts[i - 1] >= n), "leak groups are listed largest first", leakCounts.slice(0, 8).join(","));
  const group = page.locator("#gor-stacks .gor-group").first();
  await group.locator("summary").click();
  const frames = await group.locator(".stack li").allTextContents();
  check(frames.length >= 2 && frames.some((f) => f.includes("runtime.gopark")), "a group expands to its stack", frames.slice(0, 3).join(" | "));
  await page.screenshot({ path: join(out, "goroutines.png"), fullPage: false });
}

// Opens the goroutines view of Go process `pid` from the list (the flame view first, so the
// page loads it anew), returning the /api/v1/goroutines answer the page drew.
async function openGoroutines(page, pid) {
  await page.keyboard.press("p");
  await page.click('#modes button[data-mode="processes"]');
  await page.fill("#filter", pid);
  await page.waitForTimeout(100);
  const link = page.locator("#list tbody tr[data-i]:not(.host)", { has: page.locator(".sub", { hasText: pid }) }).locator(".go-link").first();
  if (!check((await link.count()) === 1, `the list offers a goroutines link for Go process ${pid}`, await page.textContent(".list-count"))) return null;
  const answer = page.waitForResponse((r) => /\/api\/v1\/goroutines\?/.test(r.url()) && new URL(r.url()).searchParams.get("pid") === pid, { timeout: 20000 });
  await link.click();
  const doc = await (await answer).json();
  await page.waitForFunction(() => window.loupe.state.view === "goroutines" && document.querySelector("#busy").hidden && document.querySelector("#gor #gor-latency"), null, { timeout: 20000 });
  return doc;
}

// 11. The runtime's scheduling latency in the goroutines view: drawn with the histogram
// renderer, labelled as the Go runtime's, and showing exactly the figures of the answer the
// page drew (which the caller checks against the runtime's own /sched/latencies:seconds).
async function schedLatencyView(page, pid, out) {
  const doc = await openGoroutines(page, pid);
  if (!doc) return;
  const h = doc.sched_latency;
  writeFileSync(join(out, "go-sched-latency.json"), JSON.stringify(h));
  if (!check(h && h.count > 0, `the daemon has a scheduling latency histogram for Go process ${pid}`, h ? `${h.count} waits` : doc.sched_latency_unavailable)) return;
  const shown = await page.$$eval("#gor-latency .hist-summary .stat", (ss) => Object.fromEntries(ss.map((s) => [s.dataset.stat || s.querySelector("span").textContent, s.querySelector("b").textContent])));
  const want = await page.evaluate(async (h) => {
    const fmt = await import(new URL("format.js", location.href).href);
    return { count: fmt.count(h.count), mean: fmt.ns(h.mean_ns), p50: fmt.ns(h.p50_ns), p99: fmt.ns(h.p99_ns) };
  }, h);
  check(+shown.count.replace(/,/g, "") === h.count && shown.count === want.count, "the latency view shows the API's count of waits", `${shown.count} shown, ${h.count} in the answer`);
  for (const k of ["mean", "p50", "p99"]) check(shown[k] === want[k], `the latency view shows the API's ${k}`, `${shown[k]} shown, ${want[k]} from the answer`);
  check(shown.source === "Go runtime", "the figures are labelled as the Go runtime's", shown.source);
  const bucketSum = h.buckets.reduce((a, b) => a + b.count, 0);
  check(bucketSum === h.count, "the answer's buckets add up to its count", `${bucketSum} vs ${h.count}`);
  const bars = await page.$$eval("#gor-latency rect.bar", (r) => r.length);
  check(bars === h.buckets.length, "one bar per bucket of the runtime's histogram", `${bars} bars, ${h.buckets.length} buckets`);
  const span = await page.textContent("#gor-latency-span");
  check(/Go runtime's own figures between the daemon's two latest reads/.test(span), "the view says which span the latency covers", span.slice(0, 120));
  await page.locator("#gor-latency").scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(out, "goroutines-latency.png") });
}

main().catch((e) => {
  console.error(`ui_test: ${e.message}`);
  process.exit(1);
});
