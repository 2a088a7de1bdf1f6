//! `cargo xtask bench`: loupe's cost to the host, measured side by side in one run.
//!
//! A fixed-work CPU benchmark (`fixtures/c/bench_work.c`, one thread per CPU, stacks through
//! glibc) runs under each condition in turn: nothing, `loupe profile --all` at 19 and 99 Hz,
//! `perf record -F 99 -a -g`, and `loupe daemon` with its defaults (where the /metrics scrape
//! time and the time `/debug/pprof/profile?seconds=5` takes beyond its 5 s are measured too). Conditions are interleaved over several rounds (the order
//! rotates each round) and medians are compared, so drift on the machine hits all alike.
//! Reported: the benchmark's elapsed time as a ratio to no profiler; for each profiler, the
//! time from the end of profiling to the written file and its peak RSS.

pub mod cargo_build;
pub mod churn;
pub mod goroutines;
mod http;
pub mod sched;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{target_dir, which};
use crate::{build, fixtures, setup};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    Baseline,
    Loupe {
        hz: u32,
    },
    Perf {
        hz: u32,
    },
    /// perf with DWARF unwinding: what loupe does (stack copies unwound in userspace).
    PerfDwarf {
        hz: u32,
    },
    /// The node daemon with its default collectors (CPU at 19 Hz, off-CPU, run queue).
    Daemon,
}

impl Condition {
    fn label(self) -> String {
        match self {
            Condition::Baseline => "no profiler".into(),
            Condition::Loupe { hz } => format!("loupe profile --all -F {hz}"),
            Condition::Perf { hz } => format!("perf record -F {hz} -a -g"),
            Condition::PerfDwarf { hz } => format!("perf record -F {hz} -a --call-graph dwarf"),
            Condition::Daemon => "loupe daemon (defaults)".into(),
        }
    }
}

const CONDITIONS: [Condition; 6] = [
    Condition::Baseline,
    Condition::Loupe { hz: 19 },
    Condition::Loupe { hz: 99 },
    Condition::Perf { hz: 99 },
    Condition::PerfDwarf { hz: 99 },
    Condition::Daemon,
];

/// Where the benchmark's daemon listens.
const DAEMON_ADDR: &str = "127.0.0.1:7479";

/// One run of the benchmark under one condition.
struct Measurement {
    workload: Duration,
    /// Profilers only: from stopping them to their exit (output written).
    finish: Option<Duration>,
    /// Profilers only: peak resident set, KiB.
    peak_rss_kib: Option<u64>,
    /// The daemon only: one /metrics scrape, and how long /debug/pprof/profile?seconds=5
    /// took beyond its 5 s.
    scrape: Option<Duration>,
    pprof_beyond_window: Option<Duration>,
}

pub fn run(rounds: usize, work_rounds: u32) -> Result<()> {
    if which("perf").is_none() {
        bail!("perf is missing: run `cargo xtask setup` (installs linux-perf)");
    }
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, true)?;
    let fixtures = fixtures::build_all()?;
    let work = fixtures.join("c/bench_work");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let runs = interleaved(&CONDITIONS, rounds, "", Condition::label, |condition| {
        let m = measure(condition, &loupe, &work, work_rounds, &out_dir)?;
        println!("bench:   workload {:.3}s", m.workload.as_secs_f64());
        Ok(m)
    })?;
    let results: Vec<(Condition, Vec<Measurement>)> =
        CONDITIONS.iter().copied().zip(runs).collect();
    let report = report(&results, rounds, work_rounds);
    println!("\n{report}");
    let path = out_dir.join("report.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: report written to {}", path.display());
    Ok(())
}

/// Runs `measure` under every condition in turn for `rounds` rounds, the order rotating each
/// round (so a shared host's drift falls on every condition alike), and returns each
/// condition's results in the order of `conditions`. `what` names the workload in the log.
pub(crate) fn interleaved<C: Copy, L: std::fmt::Display, T>(
    conditions: &[C],
    rounds: usize,
    what: &str,
    label: impl Fn(C) -> L,
    mut measure: impl FnMut(C) -> Result<T>,
) -> Result<Vec<Vec<T>>> {
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("{what} ")
    };
    let mut results: Vec<Vec<T>> = conditions.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..conditions.len() {
            let index = (i + round) % conditions.len();
            let condition = conditions[index];
            println!(
                "bench: {what}round {}/{rounds}: {}",
                round + 1,
                label(condition)
            );
            results[index].push(measure(condition)?);
        }
    }
    Ok(results)
}

fn measure(
    condition: Condition,
    loupe: &Path,
    work: &Path,
    work_rounds: u32,
    out_dir: &Path,
) -> Result<Measurement> {
    let profiler = match condition {
        Condition::Baseline => None,
        Condition::Loupe { hz } => {
            let output = out_dir.join(format!("loupe-{hz}hz.pb.gz"));
            let mut cmd = Command::new(loupe);
            cmd.args(["profile", "--all", "-d", "1h", "-F", &hz.to_string(), "-o"])
                .arg(&output);
            Some(start_loupe(cmd)?)
        }
        Condition::Daemon => {
            let mut cmd = Command::new(loupe);
            cmd.args(["daemon", "--listen", DAEMON_ADDR]);
            Some(start_loupe(cmd)?)
        }
        Condition::Perf { hz } | Condition::PerfDwarf { hz } => {
            let unwinding: &[&str] = match condition {
                Condition::PerfDwarf { .. } => &["--call-graph", "dwarf"],
                _ => &["-g"],
            };
            let mut cmd = Command::new("perf");
            cmd.args(["record", "-q", "-F", &hz.to_string(), "-a"])
                .args(unwinding)
                .arg("-o")
                .arg(out_dir.join("perf.data"));
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf record")?;
            // perf prints nothing when it starts sampling; give it a moment.
            std::thread::sleep(Duration::from_secs(1));
            Some(child)
        }
    };
    let workload = run_workload(work, work_rounds)?;
    let Some(child) = profiler else {
        return Ok(Measurement {
            workload,
            finish: None,
            peak_rss_kib: None,
            scrape: None,
            pprof_beyond_window: None,
        });
    };
    let (scrape, pprof_beyond_window) = match condition {
        Condition::Daemon => {
            let scrape = timed_get(DAEMON_ADDR, "/metrics")?;
            let pprof = timed_get(DAEMON_ADDR, "/debug/pprof/profile?seconds=5")?;
            (
                Some(scrape),
                Some(pprof.saturating_sub(Duration::from_secs(5))),
            )
        }
        _ => (None, None),
    };
    let stopped = Instant::now();
    let (status, peak_rss_kib) = interrupt_and_wait(child)?;
    let finish = stopped.elapsed();
    // perf record re-raises SIGINT after writing its data: that is its normal end.
    let interrupted = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
    let normal_end = status.success()
        || (interrupted
            && matches!(
                condition,
                Condition::Perf { .. } | Condition::PerfDwarf { .. }
            ))
        || (condition == Condition::Daemon && interrupted);
    if !normal_end {
        bail!("{} failed after the benchmark: {status}", condition.label());
    }
    Ok(Measurement {
        workload,
        finish: Some(finish),
        peak_rss_kib: Some(peak_rss_kib),
        scrape,
        pprof_beyond_window,
    })
}

/// GETs `path` from `addr` (HTTP/1.0, read to the end) and returns how long the whole answer
/// took; fails unless it is a 200.
fn timed_get(addr: &str, path: &str) -> Result<Duration> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .with_context(|| format!("GET {path}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .with_context(|| format!("reading GET {path}"))?;
    let elapsed = started.elapsed();
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {head}");
    }
    Ok(elapsed)
}

/// Starts loupe and waits for its announcement (printed once its probes are attached), so
/// the benchmark runs under them.
pub(crate) fn start_loupe(mut cmd: Command) -> Result<Child> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting loupe")?;
    let stderr = child.stderr.take().context("loupe's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line))
                if line.starts_with("loupe: profiling")
                    || line.starts_with("loupe: tracing")
                    || line.contains("daemon listening on") =>
            {
                break
            }
            Some(Ok(_)) => {}
            _ => bail!("loupe exited before it started profiling"),
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("bench:   {line}");
        }
    });
    Ok(child)
}

fn run_workload(work: &Path, work_rounds: u32) -> Result<Duration> {
    let output = Command::new(work)
        .arg(work_rounds.to_string())
        .output()
        .with_context(|| format!("running {}", work.display()))?;
    if !output.status.success() {
        bail!("{} failed: {}", work.display(), output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let nanos = text
        .split("\"elapsed_ns\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("no elapsed_ns in the benchmark's output {text:?}"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Sends SIGINT (as Ctrl-C would) and reaps the child with its resource usage.
pub(crate) fn interrupt_and_wait(child: Child) -> Result<(std::process::ExitStatus, u64)> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling and reaping our own child; `child` is not used to wait afterwards.
    unsafe {
        if libc::kill(pid, libc::SIGINT) != 0 {
            bail!(
                "cannot interrupt pid {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) < 0 {
            bail!("waiting for pid {pid}: {}", std::io::Error::last_os_error());
        }
        std::mem::forget(child);
        let status = std::os::unix::process::ExitStatusExt::from_raw(status);
        Ok((status, usage.ru_maxrss as u64))
    }
}

/// Runs `cmd` to completion and returns its stdout; fails on a non-zero exit.
pub(crate) fn run_ok(cmd: &mut Command) -> Result<String> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!("{cmd:?} failed: {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn report(results: &[(Condition, Vec<Measurement>)], rounds: usize, work_rounds: u32) -> String {
    // The machine's speed drifts between rounds: compare each run with the same round's
    // run without a profiler, then take the median of those ratios.
    let baseline: Vec<f64> = results
        .iter()
        .find(|(c, _)| *c == Condition::Baseline)
        .map(|(_, m)| m.iter().map(|m| m.workload.as_secs_f64()).collect())
        .unwrap_or_default();
    let mut out = format!(
        "Benchmark: `bench_work {work_rounds}` (one thread per CPU, {} CPUs), medians of {rounds} interleaved rounds;\n\
         slowdown: the median over rounds of each run's time against the same round's run without a profiler.\n\n\
         | condition | workload time | slowdown vs none | stop-to-written | peak RSS |\n|---|---|---|---|---|\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for (condition, ms) in results {
        let time = median(ms.iter().map(|m| m.workload.as_secs_f64()).collect());
        let slowdown = median(
            ms.iter()
                .zip(&baseline)
                .map(|(m, base)| m.workload.as_secs_f64() / base)
                .collect(),
        );
        let finish = ms
            .iter()
            .filter_map(|m| m.finish)
            .map(|d| d.as_secs_f64())
            .collect::<Vec<_>>();
        let rss = ms
            .iter()
            .filter_map(|m| m.peak_rss_kib)
            .map(|k| k as f64 / 1024.0)
            .collect::<Vec<_>>();
        let dash = |v: Vec<f64>, unit: &str| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2} {unit}", median(v))
            }
        };
        out += &format!(
            "| {} | {time:.3} s | {:.3}x | {} | {} |\n",
            condition.label(),
            slowdown,
            dash(finish, "s"),
            dash(rss, "MiB"),
        );
    }
    let daemon: Vec<&Measurement> = results
        .iter()
        .filter(|(c, _)| *c == Condition::Daemon)
        .flat_map(|(_, ms)| ms)
        .collect();
    let ms = |pick: fn(&Measurement) -> Option<Duration>| {
        median(
            daemon
                .iter()
                .filter_map(|m| pick(m))
                .map(|d| d.as_secs_f64() * 1e3)
                .collect(),
        )
    };
    if !daemon.is_empty() {
        out += &format!(
            "\nloupe daemon: /metrics scrape {:.1} ms; /debug/pprof/profile?seconds=5 answered {:.0} ms after its window (medians).\n",
            ms(|m| m.scrape),
            ms(|m| m.pprof_beyond_window),
        );
    }
    out
}
