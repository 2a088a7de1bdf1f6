//! `cargo xtask bench sched`: the cost of scheduling tracing on a context-switch-heavy host.
//!
//! The workload is `perf bench sched pipe` (two tasks passing a token through a pipe: two
//! context switches per operation, about 100k switches a second per pair here). It runs under
//! each condition in turn, interleaved over rounds (the order rotates), and each run's
//! operations per second are compared with the same round's run without tracing:
//! nothing, `loupe stat --all`, `loupe profile --type offcpu --all`, and
//! `perf record -e sched:sched_switch -a -g` (a peer's way to get off-CPU stacks).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{interrupt_and_wait, median, start_loupe};
use crate::util::{target_dir, which};
use crate::{build, setup};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracer {
    None,
    LoupeStat,
    LoupeOffcpu,
    PerfSchedSwitch,
}

const TRACERS: [Tracer; 4] = [
    Tracer::None,
    Tracer::LoupeStat,
    Tracer::LoupeOffcpu,
    Tracer::PerfSchedSwitch,
];

impl Tracer {
    fn label(self) -> &'static str {
        match self {
            Tracer::None => "nothing",
            Tracer::LoupeStat => "loupe stat --all",
            Tracer::LoupeOffcpu => "loupe profile --type offcpu --all",
            Tracer::PerfSchedSwitch => "perf record -e sched:sched_switch -a -g",
        }
    }

    fn start(self, loupe: &Path, out_dir: &Path) -> Result<Option<Child>> {
        let mut cmd = Command::new(loupe);
        match self {
            Tracer::None => return Ok(None),
            Tracer::LoupeStat => {
                cmd.args(["stat", "--all", "-d", "1h", "-o"])
                    .arg(out_dir.join("sched-stat.json"));
            }
            Tracer::LoupeOffcpu => {
                cmd.args(["profile", "--type", "offcpu", "--all", "-d", "1h", "-o"])
                    .arg(out_dir.join("sched-offcpu.pb.gz"));
            }
            Tracer::PerfSchedSwitch => {
                let child = Command::new("perf")
                    .args(["record", "-q", "-e", "sched:sched_switch", "-a", "-g", "-o"])
                    .arg(out_dir.join("sched-perf.data"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting perf record")?;
                // perf prints nothing when it starts recording; give it a moment.
                std::thread::sleep(Duration::from_secs(1));
                return Ok(Some(child));
            }
        }
        start_loupe(cmd).map(Some)
    }
}

pub fn run(rounds: usize, loops: u32) -> Result<()> {
    if which("perf").is_none() {
        bail!("perf is missing: run `cargo xtask setup` (installs linux-perf)");
    }
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, true)?;
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let mut ops: Vec<Vec<f64>> = vec![Vec::new(); TRACERS.len()];
    for round in 0..rounds {
        for i in 0..TRACERS.len() {
            let index = (i + round) % TRACERS.len();
            let tracer = TRACERS[index];
            println!("bench: round {}/{rounds}: {}", round + 1, tracer.label());
            let child = tracer.start(&loupe, &out_dir)?;
            let rate = pipe_ops_per_sec(loops)?;
            println!("bench:   {rate:.0} ops/s");
            if let Some(child) = child {
                let (status, _) = interrupt_and_wait(child)?;
                // perf record re-raises SIGINT after writing its data: its normal end.
                let by_sigint =
                    std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
                let normal_end =
                    status.success() || (by_sigint && tracer == Tracer::PerfSchedSwitch);
                if !normal_end {
                    bail!("{} failed: {status}", tracer.label());
                }
            }
            ops[index].push(rate);
        }
    }
    let report = report(&ops, rounds, loops);
    println!("\n{report}");
    let path = out_dir.join("sched.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: report written to {}", path.display());
    Ok(())
}

/// Runs `perf bench sched pipe -l LOOPS` and reads its operations per second.
fn pipe_ops_per_sec(loops: u32) -> Result<f64> {
    let output = Command::new("perf")
        .args(["bench", "sched", "pipe", "-l", &loops.to_string()])
        .output()
        .context("running perf bench sched pipe")?;
    if !output.status.success() {
        bail!("perf bench sched pipe failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.trim_end().ends_with("ops/sec"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no ops/sec in perf bench's output {text:?}"))
}

fn report(ops: &[Vec<f64>], rounds: usize, loops: u32) -> String {
    let baseline = &ops[0];
    let mut out = format!(
        "Benchmark: `perf bench sched pipe -l {loops}` (2 context switches per op), medians of {rounds} \
         interleaved rounds; cost: the median over rounds of 1 - ops/s against the same round's run \
         with nothing traced.\n\n| tracing | ops/s | cost per op vs nothing |\n|---|---|---|\n"
    );
    for (tracer, runs) in TRACERS.iter().zip(ops) {
        let rate = median(runs.clone());
        let cost = median(
            runs.iter()
                .zip(baseline)
                .map(|(r, base)| base / r - 1.0)
                .collect(),
        );
        out += &format!(
            "| {} | {rate:.0} | {:+.1}% |\n",
            tracer.label(),
            cost * 100.0
        );
    }
    out
}
