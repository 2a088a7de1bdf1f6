//! `cargo xtask bench goroutines`: the cost of goroutine events (a uprobe at
//! `runtime.casgstatus`) beside `loupe stat` without events (scheduling tracepoints, the
//! runtime's scheduling latency histogram read at both ends and a goroutine census at the
//! end: what is always on) and nothing at all, interleaved over rounds, for the newest and
//! the oldest Go toolchain (whose `casgstatus` prologue the kernel single-steps), on two
//! workloads:
//!
//! - a Go program that creates goroutines and switches between them a lot
//!   (`fixtures/go/gevents bench`): the work's own wall time;
//! - a Go HTTP server under `wrk` (`fixtures/go/httpserver`, the `bench sched` workload):
//!   requests per second, also with a goroutine census every second during the run
//!   (`loupe goroutines --pid`), and the goroutine state changes a request makes (the
//!   probe's own count of `casgstatus` calls, read from loupe's map with bpftool).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::http::{self, throughput_cost, HttpServer, WrkRun};
use super::{interleaved, interrupt_and_wait, median, run_ok, start_loupe};
use crate::util::{target_dir, which};
use crate::{build, fixtures, setup};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracing {
    None,
    /// `loupe stat --pid`: scheduling tracepoints during the run, the runtime's scheduling
    /// latency histogram read at both ends and a goroutine census at the end.
    Stat,
    /// `loupe goroutines --pid` every [`CENSUS_INTERVAL`] during the run: the census alone.
    Census,
    Events,
}

/// The census period of [`Tracing::Census`]: 30 times the daemon's default.
const CENSUS_INTERVAL: Duration = Duration::from_secs(1);

/// A condition while it runs.
enum Tracer {
    Nothing,
    Loupe(Child),
    /// A thread taking a census every [`CENSUS_INTERVAL`] until told to stop; it returns
    /// how many it took.
    Census {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<Result<u32>>,
    },
}

/// Goroutine state changes `gevents bench` makes (counted by `casgstatus` probe hits).
const STATE_CHANGES: f64 = 2.4e6;

/// `gevents bench`'s work lasts a fraction of a second: too short for a census every second.
const GEVENTS_TRACINGS: [Tracing; 3] = [Tracing::None, Tracing::Stat, Tracing::Events];
const HTTP_TRACINGS: [Tracing; 4] = [
    Tracing::None,
    Tracing::Stat,
    Tracing::Census,
    Tracing::Events,
];

/// Where the benchmark's HTTP server listens (not `bench sched`'s port, so both can run).
const HTTP_ADDR: &str = "127.0.0.1:8091";

impl Tracing {
    fn label(self) -> &'static str {
        match self {
            Tracing::None => "nothing",
            Tracing::Stat => "loupe stat --pid",
            Tracing::Census => "loupe goroutines --pid, every 1 s",
            Tracing::Events => "loupe stat --pid --goroutine-events",
        }
    }

    /// Starts loupe on `pid` (nothing for [`Tracing::None`]), its report going to `output`.
    fn start(self, loupe: &Path, pid: u32, output: Option<&Path>) -> Result<Tracer> {
        match self {
            Tracing::None => return Ok(Tracer::Nothing),
            Tracing::Census => return Ok(census_every_interval(loupe, pid)),
            Tracing::Stat | Tracing::Events => {}
        }
        let mut cmd = Command::new(loupe);
        cmd.args(["stat", "--pid", &pid.to_string(), "-d", "1h"]);
        match output {
            Some(path) => cmd.arg("-o").arg(path),
            None => cmd.arg("--json"),
        };
        if self == Tracing::Events {
            cmd.arg("--goroutine-events");
        }
        start_loupe(cmd).map(Tracer::Loupe)
    }

    fn stop(self, tracer: Tracer) -> Result<()> {
        match tracer {
            Tracer::Nothing => {}
            Tracer::Loupe(child) => {
                let (status, _) = interrupt_and_wait(child)?;
                if !status.success() {
                    bail!("{} failed: {status}", self.label());
                }
            }
            Tracer::Census { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                let taken = thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("the census thread panicked"))??;
                println!("bench:   {taken} censuses");
            }
        }
        Ok(())
    }
}

/// Takes a census of `pid` at once and then every [`CENSUS_INTERVAL`], on a thread, until
/// stopped.
fn census_every_interval(loupe: &Path, pid: u32) -> Tracer {
    let stop = Arc::new(AtomicBool::new(false));
    let (loupe, flag) = (loupe.to_path_buf(), stop.clone());
    let thread = std::thread::spawn(move || -> Result<u32> {
        let mut taken = 0;
        loop {
            let started = Instant::now();
            run_ok(Command::new(&loupe).args(["goroutines", "--pid", &pid.to_string(), "--json"]))?;
            taken += 1;
            while started.elapsed() < CENSUS_INTERVAL {
                if flag.load(Ordering::Relaxed) {
                    return Ok(taken);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    Tracer::Census { stop, thread }
}

/// One run of `gevents bench`'s fixed work under `tracing`: its own wall time for the work.
fn gevents_once(fixture: &Path, loupe: &Path, tracing: Tracing) -> Result<Duration> {
    let mut child = Command::new(fixture)
        .arg("bench")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", fixture.display()))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().context("the fixture's stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("the fixture's stdout")?).lines();
    let ready = lines.next().transpose()?.unwrap_or_default();
    if !ready.contains("\"ready\"") {
        bail!("{} did not get ready: {ready:?}", fixture.display());
    }
    let tracer = tracing.start(loupe, pid, None)?;
    stdin.write_all(b"go\n")?;
    let result = lines.next().transpose()?.unwrap_or_default();
    let elapsed = result
        .split("\"elapsed_ns\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("no elapsed_ns in {result:?}"))?;
    tracing.stop(tracer)?;
    drop(stdin);
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "{} failed under {}: {status}",
            fixture.display(),
            tracing.label()
        );
    }
    Ok(Duration::from_nanos(elapsed))
}

fn gevents_table(fixture: &Path, loupe: &Path, version: &str, rounds: usize) -> Result<String> {
    let times = interleaved(
        &GEVENTS_TRACINGS,
        rounds,
        &format!("gevents go{version}"),
        Tracing::label,
        |tracing| {
            let t = gevents_once(fixture, loupe, tracing)?.as_secs_f64();
            println!("bench:   {t:.3} s");
            Ok(t)
        },
    )?;
    let mut out = format!(
        "\nGo {version}\n\n| tracing | work time | slowdown | added per state change |\n\
         |---|---|---|---|\n"
    );
    for (tracing, runs) in GEVENTS_TRACINGS.iter().zip(&times) {
        let slowdown = median(runs.iter().zip(&times[0]).map(|(t, b)| t / b).collect());
        let added = median(runs.iter().zip(&times[0]).map(|(t, b)| t - b).collect());
        out += &format!(
            "| {} | {:.3} s | {slowdown:.2}x | {:.2} us |\n",
            tracing.label(),
            median(runs.clone()),
            added / STATE_CHANGES * 1e6
        );
    }
    Ok(out)
}

/// Goroutine figures of one `--goroutine-events` HTTP run, per request: the probe's
/// `casgstatus` calls (every state change the runtime makes through it), and from loupe's
/// report the waits (runnable to running), blocks (waiting to runnable) and creations.
#[derive(Clone, Copy)]
struct PerRequest {
    calls: f64,
    waits: f64,
    blocks: f64,
    created: f64,
}

impl PerRequest {
    fn read(calls: u64, report: &Path, requests: u64) -> Result<PerRequest> {
        let text = std::fs::read_to_string(report)
            .with_context(|| format!("reading {}", report.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", report.display()))?;
        let g = &json["goroutines"];
        let missing = |name: &str| format!("no goroutines.{name} in {}", report.display());
        let waits = g["sched_latency"]["count"]
            .as_f64()
            .with_context(|| missing("sched_latency.count"))?;
        let blocks = g["blocked_by_wait_reason"]
            .as_object()
            .with_context(|| missing("blocked_by_wait_reason"))?
            .values()
            .filter_map(|r| r["count"].as_f64())
            .sum::<f64>();
        let created = g["created"].as_f64().with_context(|| missing("created"))?;
        let requests = requests.max(1) as f64;
        Ok(PerRequest {
            calls: calls as f64 / requests,
            waits: waits / requests,
            blocks: blocks / requests,
            created: created / requests,
        })
    }
}

/// The name the kernel keeps of loupe's per-CPU goroutine counters (`GOROUTINE_COUNTERS`,
/// cut to 15 characters); their index 0 counts `casgstatus` calls.
const COUNTERS_MAP: &str = "GOROUTINE_COUNT";

/// The `casgstatus` calls the goroutine probe of the loupe process `pid` has seen: its
/// counters map, found among the BPF maps it holds open, read with bpftool (other loupe
/// processes on the host have their own).
fn casgstatus_calls(pid: u32) -> Result<u64> {
    let fds = format!("/proc/{pid}/fdinfo");
    let mut found = None;
    for entry in std::fs::read_dir(&fds).with_context(|| format!("reading {fds}"))? {
        let info = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .map(str::trim)
        else {
            continue;
        };
        let show = run_ok(Command::new("bpftool").args(["-j", "map", "show", "id", id]))?;
        let map: serde_json::Value = serde_json::from_str(&show)
            .with_context(|| format!("bpftool map show id {id}: {show:?}"))?;
        if map["name"] == COUNTERS_MAP {
            found = Some(id.to_string());
            break;
        }
    }
    let id = found.with_context(|| format!("loupe (pid {pid}) holds no {COUNTERS_MAP} map"))?;
    let lookup = run_ok(
        Command::new("bpftool").args(["-j", "map", "lookup", "id", &id, "key", "0", "0", "0", "0"]),
    )?;
    let json: serde_json::Value = serde_json::from_str(&lookup)
        .with_context(|| format!("bpftool map lookup id {id}: {lookup:?}"))?;
    let cpus = json["values"]
        .as_array()
        .with_context(|| format!("no per-CPU values in {lookup:?}"))?;
    let mut calls = 0u64;
    for cpu in cpus {
        // The value's bytes, as "0x2a" strings, little-endian.
        let bytes = cpu["value"]
            .as_array()
            .with_context(|| format!("no value bytes in {lookup:?}"))?;
        let mut value = 0u64;
        for (i, byte) in bytes.iter().enumerate().take(8) {
            let byte = byte
                .as_str()
                .and_then(|b| u64::from_str_radix(b.trim_start_matches("0x"), 16).ok())
                .with_context(|| format!("a value byte {byte} in {lookup:?}"))?;
            value |= byte << (8 * i);
        }
        calls += value;
    }
    Ok(calls)
}

/// One `wrk` run against the server under `tracing`, and with events the goroutine
/// figures of it.
fn http_once(
    server: &HttpServer,
    loupe: &Path,
    tracing: Tracing,
    seconds: u32,
    report: &Path,
) -> Result<(WrkRun, Option<PerRequest>)> {
    // A report left by an earlier run must not pass for this one's.
    if report.exists() {
        std::fs::remove_file(report).with_context(|| format!("removing {}", report.display()))?;
    }
    let tracer = tracing.start(loupe, server.pid(), Some(report))?;
    let run = server.load(seconds);
    // The probe's count, read while loupe still runs (its maps go with it).
    let calls = match (&tracer, tracing) {
        (Tracer::Loupe(loupe), Tracing::Events) => Some(casgstatus_calls(loupe.id())),
        _ => None,
    };
    tracing.stop(tracer)?;
    let run = run?;
    let per = match calls {
        Some(calls) => Some(PerRequest::read(calls?, report, run.requests)?),
        None => None,
    };
    Ok((run, per))
}

fn http_table(
    server_binary: &Path,
    loupe: &Path,
    version: &str,
    rounds: usize,
    seconds: u32,
    report: &Path,
) -> Result<String> {
    let server = HttpServer::start(server_binary, HTTP_ADDR)?;
    let runs = interleaved(
        &HTTP_TRACINGS,
        rounds,
        &format!("http go{version}"),
        Tracing::label,
        |tracing| {
            let (run, per) = http_once(&server, loupe, tracing, seconds, report)?;
            println!("bench:   {:.0} requests/s", run.requests_per_sec);
            if let Some(p) = per {
                println!(
                    "bench:   per request: {:.2} casgstatus calls, {:.2} waits, {:.2} blocks, \
                 {:.2} created",
                    p.calls, p.waits, p.blocks, p.created
                );
            }
            Ok((run, per))
        },
    )?;
    let rates: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| r.iter().map(|(run, _)| run.requests_per_sec).collect())
        .collect();
    // Per request, from the runs with events.
    let per_request = |pick: fn(&PerRequest) -> f64| {
        median(
            runs.iter()
                .flatten()
                .filter_map(|(_, p)| p.as_ref().map(pick))
                .collect(),
        )
    };
    let state_changes = per_request(|p| p.calls);
    let mut out = format!(
        "\nGo {version}\n\n| tracing | requests/s | cost vs nothing | cost by round | added \
         per request | added per state change |\n|---|---|---|---|---|---|\n"
    );
    for (tracing, rate) in HTTP_TRACINGS.iter().zip(&rates) {
        let added = median(
            rate.iter()
                .zip(&rates[0])
                .map(|(r, base)| 1.0 / r - 1.0 / base)
                .collect(),
        );
        // The spread shows the noise of a shared machine beside the median.
        let by_round: Vec<f64> = rate
            .iter()
            .zip(&rates[0])
            .map(|(r, b)| b / r - 1.0)
            .collect();
        let lowest = by_round.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = by_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out += &format!(
            "| {} | {:.0} | {:+.1}% | {:+.1}% .. {:+.1}% | {:.2} us | {:.2} us |\n",
            tracing.label(),
            median(rate.clone()),
            throughput_cost(rate, &rates[0]) * 100.0,
            lowest * 100.0,
            highest * 100.0,
            added * 1e6,
            added / state_changes * 1e6
        );
    }
    out += &format!(
        "\nPer request (with events): {state_changes:.1} `casgstatus` calls (the probe's own \
         count), {:.1} waits (runnable to running), {:.1} blocks (waiting to runnable), {:.1} \
         goroutines created.\n",
        per_request(|p| p.waits),
        per_request(|p| p.blocks),
        per_request(|p| p.created)
    );
    Ok(out)
}

pub fn run(rounds: usize, seconds: u32) -> Result<()> {
    for tool in ["wrk", "bpftool"] {
        if which(tool).is_none() {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, true)?;
    let fixtures = fixtures::build_all()?;
    let versions = setup::go_versions();
    let (Some(oldest), Some(newest)) = (versions.first(), versions.last()) else {
        bail!("no Go toolchain listed in xtask/go-toolchains.txt");
    };
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let http_report: PathBuf = out_dir.join("goroutines-http.json");

    let load_before = load_average();
    let mut body = String::from(
        "## `gevents bench`\n\nGoroutine pairs passing a token, a new goroutine every 10th \
         round: 2.4 million state changes, GOMAXPROCS 2; the work's wall time; slowdown against \
         the same round's untraced run.\n",
    );
    for version in [newest, oldest] {
        let fixture = fixtures.join(format!("go{version}/gevents"));
        body += &gevents_table(&fixture, &loupe, version, rounds)?;
    }
    body += &format!(
        "\n## {}\n\nThroughput; cost: untraced requests/s / traced requests/s - 1; added per \
         request: 1 / traced rate - 1 / untraced rate (wall time with both CPUs busy); added \
         per state change: that over the `casgstatus` calls a request makes (the probe's \
         count in the runs with events, below each table).\n",
        http::label(seconds)
    );
    for version in [newest, oldest] {
        let server = fixtures.join(format!("go{version}/httpserver"));
        body += &http_table(&server, &loupe, version, rounds, seconds, &http_report)?;
    }
    let report = format!(
        "Medians of {rounds} interleaved rounds (the order rotates each round), each run \
         compared with the same round's untraced run. {} CPUs; load average (1 min) \
         {load_before} before the run, {} after it: other jobs share the CPUs.\n\n{body}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average()
    );
    println!("\n{report}");
    let path = out_dir.join("goroutines.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: report written to {}", path.display());
    Ok(())
}

/// The host's 1-minute load average, as /proc/loadavg says it ("?" if unreadable).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
