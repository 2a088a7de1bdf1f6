//! `cargo xtask bench goroutines`: the cost of goroutine events (a uprobe at
//! `runtime.casgstatus`) beside `loupe stat` without events (the goroutine census and the
//! runtime's scheduling latency histogram, what is always on) and nothing at all, interleaved
//! over rounds, for the newest and the oldest Go toolchain (whose `casgstatus` prologue the
//! kernel single-steps), on two workloads:
//!
//! - a Go program that creates goroutines and switches between them a lot
//!   (`fixtures/go/gevents bench`): the work's own wall time;
//! - a Go HTTP server under `wrk` (`fixtures/go/httpserver`, the `bench sched` workload):
//!   requests per second, and the goroutine state changes a request makes, estimated from
//!   loupe's own reports of the runs (the runtime's sample and the probe's counts).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::http::{self, throughput_cost, HttpServer, WrkRun};
use super::{interrupt_and_wait, median, start_loupe};
use crate::util::{target_dir, which};
use crate::{build, fixtures, setup};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracing {
    None,
    Stat,
    Events,
}

/// Goroutine state changes `gevents bench` makes (counted by `casgstatus` probe hits).
const STATE_CHANGES: f64 = 2.4e6;

const TRACINGS: [Tracing; 3] = [Tracing::None, Tracing::Stat, Tracing::Events];

/// Where the benchmark's HTTP server listens (not `bench sched`'s port, so both can run).
const HTTP_ADDR: &str = "127.0.0.1:8091";

/// The runtime's scheduling latency histogram times one wait in eight.
const RUNTIME_SAMPLE_RATE: f64 = 8.0;

impl Tracing {
    fn label(self) -> &'static str {
        match self {
            Tracing::None => "nothing",
            Tracing::Stat => "loupe stat --pid",
            Tracing::Events => "loupe stat --pid --goroutine-events",
        }
    }

    /// Starts loupe on `pid` (nothing for [`Tracing::None`]), its report going to `output`.
    fn start(self, loupe: &Path, pid: u32, output: Option<&Path>) -> Result<Option<Child>> {
        if self == Tracing::None {
            return Ok(None);
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
        start_loupe(cmd).map(Some)
    }

    fn stop(self, tracer: Option<Child>) -> Result<()> {
        if let Some(tracer) = tracer {
            let (status, _) = interrupt_and_wait(tracer)?;
            if !status.success() {
                bail!("{} failed: {status}", self.label());
            }
        }
        Ok(())
    }
}

/// Runs `measure` under every tracing in turn for `rounds` rounds, the order rotating each
/// round, and returns each tracing's results in [`TRACINGS`] order.
fn interleaved<T>(
    rounds: usize,
    what: &str,
    mut measure: impl FnMut(Tracing) -> Result<T>,
) -> Result<Vec<Vec<T>>> {
    let mut results: Vec<Vec<T>> = TRACINGS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..TRACINGS.len() {
            let index = (i + round) % TRACINGS.len();
            let tracing = TRACINGS[index];
            println!(
                "bench: {what} round {}/{rounds}: {}",
                round + 1,
                tracing.label()
            );
            results[index].push(measure(tracing)?);
        }
    }
    Ok(results)
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
    let times = interleaved(rounds, &format!("gevents go{version}"), |tracing| {
        let t = gevents_once(fixture, loupe, tracing)?.as_secs_f64();
        println!("bench:   {t:.3} s");
        Ok(t)
    })?;
    let mut out = format!(
        "\nGo {version}\n\n| tracing | work time | slowdown | added per state change |\n\
         |---|---|---|---|\n"
    );
    for (tracing, runs) in TRACINGS.iter().zip(&times) {
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

/// Goroutine figures of one HTTP run, per request, from loupe's report of the run.
#[derive(Clone, Copy, Default)]
struct PerRequest {
    /// `loupe stat --pid`: running periods, i.e. entries into running (the runtime records
    /// one in eight in its histogram, a zero wait for a start not from runnable; up to Go
    /// 1.25 syscall returns too, which from 1.26 bypass `casgstatus` and its tracking).
    running_entries: Option<f64>,
    /// `--goroutine-events`: the probe's counts of waits (runnable to running), blocks
    /// (waiting to runnable) and goroutines created.
    waits: Option<f64>,
    blocks: Option<f64>,
    created: Option<f64>,
}

impl PerRequest {
    fn read(tracing: Tracing, report: &Path, requests: u64) -> Result<PerRequest> {
        if tracing == Tracing::None {
            return Ok(PerRequest::default());
        }
        let text = std::fs::read_to_string(report)
            .with_context(|| format!("reading {}", report.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", report.display()))?;
        let g = &json["goroutines"];
        let requests = requests.max(1) as f64;
        let field = |value: &serde_json::Value, name: &str| {
            value
                .as_f64()
                .map(|v| v / requests)
                .with_context(|| format!("no goroutines.{name} in {}", report.display()))
        };
        let count = field(&g["sched_latency"]["count"], "sched_latency.count")?;
        if tracing == Tracing::Stat {
            return Ok(PerRequest {
                running_entries: Some(count * RUNTIME_SAMPLE_RATE),
                ..PerRequest::default()
            });
        }
        let blocks = g["blocked_by_wait_reason"]
            .as_object()
            .with_context(|| {
                format!(
                    "no goroutines.blocked_by_wait_reason in {}",
                    report.display()
                )
            })?
            .values()
            .filter_map(|r| r["count"].as_f64())
            .sum::<f64>();
        Ok(PerRequest {
            running_entries: None,
            waits: Some(count),
            blocks: Some(blocks / requests),
            created: Some(field(&g["created"], "created")?),
        })
    }
}

/// One `wrk` run against the server under `tracing`, and loupe's goroutine figures of it.
fn http_once(
    server: &HttpServer,
    loupe: &Path,
    tracing: Tracing,
    seconds: u32,
    report: &Path,
) -> Result<(WrkRun, PerRequest)> {
    // A report left by an earlier run must not pass for this one's.
    if report.exists() {
        std::fs::remove_file(report).with_context(|| format!("removing {}", report.display()))?;
    }
    let tracer = tracing.start(loupe, server.pid(), Some(report))?;
    let run = server.load(seconds);
    tracing.stop(tracer)?;
    let run = run?;
    Ok((run, PerRequest::read(tracing, report, run.requests)?))
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
    let runs = interleaved(rounds, &format!("http go{version}"), |tracing| {
        let (run, per) = http_once(&server, loupe, tracing, seconds, report)?;
        let figure =
            |name: &str, v: Option<f64>| v.map_or(String::new(), |v| format!(", {v:.2} {name}"));
        println!(
            "bench:   {:.0} requests/s{}{}{}{}",
            run.requests_per_sec,
            figure("running periods/request", per.running_entries),
            figure("waits/request", per.waits),
            figure("blocks/request", per.blocks),
            figure("created/request", per.created)
        );
        Ok((run, per))
    })?;
    let rates: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| r.iter().map(|(run, _)| run.requests_per_sec).collect())
        .collect();
    // Each figure from the runs that report it, per request.
    let per_request = |pick: fn(&PerRequest) -> Option<f64>| {
        median(runs.iter().flatten().filter_map(|(_, p)| pick(p)).collect())
    };
    let running_entries = per_request(|p| p.running_entries);
    let waits = per_request(|p| p.waits);
    let blocks = per_request(|p| p.blocks);
    let created = per_request(|p| p.created);
    // Every running period starts and ends with a state change through `casgstatus`;
    // blocks add their waiting -> runnable step and creations their dead -> runnable one.
    let state_changes = 2.0 * running_entries + blocks + created;
    let mut out = format!(
        "\nGo {version}\n\n| tracing | requests/s | cost vs nothing | added per request | \
         added per state change |\n|---|---|---|---|---|\n"
    );
    for (tracing, rate) in TRACINGS.iter().zip(&rates) {
        let added = median(
            rate.iter()
                .zip(&rates[0])
                .map(|(r, base)| 1.0 / r - 1.0 / base)
                .collect(),
        );
        out += &format!(
            "| {} | {:.0} | {:+.1}% | {:.2} us | {:.2} us |\n",
            tracing.label(),
            median(rate.clone()),
            throughput_cost(rate, &rates[0]) * 100.0,
            added * 1e6,
            added / state_changes * 1e6
        );
    }
    out += &format!(
        "\nPer request: {running_entries:.1} running periods (entries into running: 8 x the \
         runtime's one-in-eight sample, from the `loupe stat --pid` runs; syscalls are among them up \
         to Go 1.25 only), {waits:.1} waits \
         (runnable to running), {blocks:.1} blocks and {created:.1} goroutines created (the \
         probe's counts): about {state_changes:.1} goroutine state changes (2 x running \
         periods + blocks + created).\n"
    );
    Ok(out)
}

pub fn run(rounds: usize, seconds: u32) -> Result<()> {
    if which("wrk").is_none() {
        bail!("wrk is missing: run `cargo xtask setup`");
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
         per state change: that over the goroutine state changes a request makes, estimated \
         from loupe's own reports of the runs (below each table).\n",
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
