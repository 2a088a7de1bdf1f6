//! `cargo xtask bench goroutines`: the cost of goroutine events (a uprobe at
//! `runtime.casgstatus`) to a Go program that creates goroutines and switches between them a
//! lot (`fixtures/go/gevents bench`), beside `loupe stat` without events and nothing at all,
//! interleaved over rounds, for the newest and the oldest Go toolchain (whose `casgstatus`
//! prologue the kernel single-steps).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{interrupt_and_wait, median, start_loupe};
use crate::util::target_dir;
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

impl Tracing {
    fn label(self) -> &'static str {
        match self {
            Tracing::None => "nothing",
            Tracing::Stat => "loupe stat --pid",
            Tracing::Events => "loupe stat --pid --goroutine-events",
        }
    }
}

/// One run of the fixture's fixed work under `tracing`: its own wall time for the work.
fn run_once(fixture: &Path, loupe: &Path, tracing: Tracing) -> Result<Duration> {
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
    let tracer = match tracing {
        Tracing::None => None,
        Tracing::Stat | Tracing::Events => {
            let mut cmd = Command::new(loupe);
            cmd.args(["stat", "--pid", &pid.to_string(), "-d", "1h", "--json"]);
            if tracing == Tracing::Events {
                cmd.arg("--goroutine-events");
            }
            Some(start_loupe(cmd)?)
        }
    };
    stdin.write_all(b"go\n")?;
    let result = lines.next().transpose()?.unwrap_or_default();
    let elapsed = result
        .split("\"elapsed_ns\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("no elapsed_ns in {result:?}"))?;
    if let Some(tracer) = tracer {
        let (status, _) = interrupt_and_wait(tracer)?;
        if !status.success() {
            bail!("{} failed: {status}", tracing.label());
        }
    }
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

pub fn run(rounds: usize) -> Result<()> {
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, true)?;
    let fixtures = fixtures::build_all()?;
    let versions = setup::go_versions();
    let (Some(oldest), Some(newest)) = (versions.first(), versions.last()) else {
        bail!("no Go toolchain listed in xtask/go-toolchains.txt");
    };
    let mut report = format!(
        "`gevents bench` (goroutine pairs passing a token, a new goroutine every 10th round: \
         2.4 million state changes, GOMAXPROCS 2): the work's wall time, medians of {rounds} \
         interleaved rounds; slowdown against the same round's untraced run.\n"
    );
    for version in [newest, oldest] {
        let fixture = fixtures.join(format!("go{version}/gevents"));
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); TRACINGS.len()];
        for round in 0..rounds {
            for i in 0..TRACINGS.len() {
                let index = (i + round) % TRACINGS.len();
                let tracing = TRACINGS[index];
                let t = run_once(&fixture, &loupe, tracing)?.as_secs_f64();
                println!(
                    "bench: go{version} round {}/{rounds}: {}: {t:.3} s",
                    round + 1,
                    tracing.label()
                );
                times[index].push(t);
            }
        }
        report += &format!(
            "\nGo {version}\n\n| tracing | work time | slowdown | added per state change |\n\
             |---|---|---|---|\n"
        );
        for (tracing, runs) in TRACINGS.iter().zip(&times) {
            let slowdown = median(
                runs.iter()
                    .zip(&times[0])
                    .map(|(t, base)| t / base)
                    .collect(),
            );
            let added = median(
                runs.iter()
                    .zip(&times[0])
                    .map(|(t, base)| t - base)
                    .collect(),
            );
            report += &format!(
                "| {} | {:.3} s | {slowdown:.2}x | {:.2} us |\n",
                tracing.label(),
                median(runs.clone()),
                added / STATE_CHANGES * 1e6
            );
        }
    }
    println!("\n{report}");
    let path = target_dir().join("bench").join("goroutines.md");
    std::fs::create_dir_all(target_dir().join("bench"))?;
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: report written to {}", path.display());
    Ok(())
}
