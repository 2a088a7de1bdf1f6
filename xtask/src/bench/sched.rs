//! `cargo xtask bench sched`: the cost of scheduling tracing on context-switch-heavy work.
//!
//! Two workloads: `perf bench sched pipe` (two tasks passing a token through a pipe: two
//! context switches per operation) and a Go HTTP server (fixtures/go/httpserver) under
//! `wrk` on loopback. Each runs under every tracer in turn, interleaved over rounds (the
//! order rotates), and each run's throughput is compared with the same round's run with
//! nothing traced: nothing, `loupe stat --all`, `loupe profile --type offcpu --all`,
//! `loupe daemon` with its defaults but a goroutine census every second (so the Go server's
//! goroutines are counted and its scheduling latency histogram read during every run, the
//! always-on Go figures), and `perf record -e sched:sched_switch -a -g` (a peer's way to get
//! off-CPU stacks).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::http::{self, throughput_cost, HttpServer};
use super::{interleaved, interrupt_and_wait, median, run_ok, start_loupe};
use crate::util::{target_dir, which};
use crate::{build, fixtures, setup};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracer {
    None,
    LoupeStat,
    LoupeOffcpu,
    LoupeDaemon,
    PerfSchedSwitch,
}

const TRACERS: [Tracer; 5] = [
    Tracer::None,
    Tracer::LoupeStat,
    Tracer::LoupeOffcpu,
    Tracer::LoupeDaemon,
    Tracer::PerfSchedSwitch,
];

/// Where the benchmark's daemon and HTTP server listen.
const DAEMON_ADDR: &str = "127.0.0.1:7478";
const HTTP_ADDR: &str = "127.0.0.1:8089";

impl Tracer {
    fn label(self) -> &'static str {
        match self {
            Tracer::None => "nothing",
            Tracer::LoupeStat => "loupe stat --all",
            Tracer::LoupeOffcpu => "loupe profile --type offcpu --all",
            Tracer::LoupeDaemon => "loupe daemon (defaults, goroutine census every 1 s)",
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
            Tracer::LoupeDaemon => {
                let config = out_dir.join("sched-daemon.toml");
                std::fs::write(&config, "goroutine_census_interval = \"1s\"\n")
                    .with_context(|| format!("writing {}", config.display()))?;
                cmd.args(["daemon", "--listen", DAEMON_ADDR, "--config"])
                    .arg(&config);
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

    fn stop(self, child: Option<Child>) -> Result<()> {
        let Some(child) = child else { return Ok(()) };
        let (status, _) = interrupt_and_wait(child)?;
        // perf record re-raises SIGINT after writing its data: its normal end.
        let by_sigint =
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
        if !(status.success() || (by_sigint && self == Tracer::PerfSchedSwitch)) {
            bail!("{} failed: {status}", self.label());
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Workload {
    Pipe { loops: u32 },
    Http { seconds: u32 },
}

impl Workload {
    fn label(self) -> String {
        match self {
            Workload::Pipe { loops } => format!("perf bench sched pipe -l {loops} (ops/s)"),
            Workload::Http { seconds } => format!("{} (requests/s)", http::label(seconds)),
        }
    }

    /// Runs once and returns its throughput (operations or requests per second).
    fn run(self, server: &HttpServer) -> Result<f64> {
        match self {
            Workload::Pipe { loops } => {
                let out = run_ok(Command::new("perf").args([
                    "bench",
                    "sched",
                    "pipe",
                    "-l",
                    &loops.to_string(),
                ]))?;
                out.lines()
                    .find(|l| l.trim_end().ends_with("ops/sec"))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|n| n.parse::<f64>().ok())
                    .with_context(|| format!("no ops/sec in perf bench's output {out:?}"))
            }
            Workload::Http { seconds } => Ok(server.load(seconds)?.requests_per_sec),
        }
    }
}

pub fn run(rounds: usize, loops: u32, seconds: u32) -> Result<()> {
    for tool in ["perf", "wrk"] {
        if which(tool).is_none() {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, true)?;
    let fixtures = fixtures::build_all()?;
    let go = setup::go_versions()
        .last()
        .map(|v| fixtures.join(format!("go{v}/httpserver")))
        .context("no Go toolchain listed")?;
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let server = HttpServer::start(&go, HTTP_ADDR)?;
    let workloads = [Workload::Pipe { loops }, Workload::Http { seconds }];
    let mut report = format!(
        "Medians of {rounds} interleaved rounds; cost: the median over rounds of the untraced run's \
         throughput / the traced run's, minus 1 (the same round's runs compared).\n"
    );
    for workload in workloads {
        let rates = interleaved(
            &TRACERS,
            rounds,
            &workload.label(),
            Tracer::label,
            |tracer| {
                let child = tracer.start(&loupe, &out_dir)?;
                let rate = workload.run(&server);
                tracer.stop(child)?;
                let rate = rate?;
                println!("bench:   {rate:.0}/s");
                Ok(rate)
            },
        )?;
        report += &table(&workload.label(), &rates);
    }
    println!("\n{report}");
    let path = out_dir.join("sched.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: report written to {}", path.display());
    Ok(())
}

fn table(workload: &str, rates: &[Vec<f64>]) -> String {
    let baseline = &rates[0];
    let mut out =
        format!("\n{workload}\n\n| tracing | throughput | cost vs nothing |\n|---|---|---|\n");
    for (tracer, runs) in TRACERS.iter().zip(rates) {
        let cost = throughput_cost(runs, baseline);
        out += &format!(
            "| {} | {:.0}/s | {:+.1}% |\n",
            tracer.label(),
            median(runs.clone()),
            cost * 100.0
        );
    }
    out
}
