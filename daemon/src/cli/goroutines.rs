//! `loupe goroutines` (the goroutine dump and leak view of a Go process), and the goroutine
//! parts of `loupe profile --type goroutines` and `loupe stat`. All read a census
//! (`crate::goroutines`): no probes, the process is only read.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;

use super::{ProfileArgs, ProfileTypeArg};
use crate::{
    goroutines::{profile, report, GoProcess, GoroutineError},
    profile::ProfileMerger,
    render::Format,
};

#[derive(Args, Debug)]
pub struct GoroutinesArgs {
    /// The Go process to read.
    #[arg(short, long, value_name = "PID")]
    pub pid: u32,
    /// Show goroutines blocked longer than --older-than, grouped by creation site and wait
    /// reason, largest groups first.
    #[arg(long)]
    pub leaks: bool,
    /// The leak threshold (implies --leaks): `30s`, `1m`, `2h`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// Print JSON (the schema is in the README) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write to this file instead of stdout (JSON with --json or a `.json` name).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The leak threshold without --older-than.
const DEFAULT_LEAK_AGE: Duration = Duration::from_secs(60);

pub fn run(args: GoroutinesArgs) -> anyhow::Result<ExitCode> {
    let process = attach(args.pid)?;
    let output = create_output(args.output.as_deref())?;
    let snapshot = process.snapshot()?;
    let leaks = (args.leaks || args.older_than.is_some())
        .then(|| args.older_than.unwrap_or(DEFAULT_LEAK_AGE));
    let report = report::report(&snapshot, leaks);
    let json = args.json
        || args
            .output
            .as_deref()
            .and_then(Path::extension)
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut text = Vec::new();
    if json {
        serde_json::to_writer_pretty(&mut text, &report)?;
        text.push(b'\n');
    } else {
        report::render_table(&report, &mut text)?;
    }
    match (output, &args.output) {
        (Some(file), Some(path)) => {
            let mut out = BufWriter::new(file);
            out.write_all(&text)
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("loupe: wrote {}", path.display());
        }
        _ => super::write_stdout(|out| out.write_all(&text))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `loupe profile --type goroutines --pid P...`: one census per process, like Go's
/// `/debug/pprof/goroutine`: taken at once, or at the end of `--duration` when one is given.
pub fn profile(args: &ProfileArgs) -> anyhow::Result<ExitCode> {
    if args.types != [ProfileTypeArg::Goroutines] {
        bail!(
            "--type goroutines is a snapshot, not a sampled window: profile it alone, not with \
             cpu or offcpu"
        );
    }
    if args.target.all || !args.target.command.is_empty() || args.target.pid.is_empty() {
        bail!("--type goroutines reads running Go processes: name them with --pid");
    }
    let format = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) => Format::from_path(path)?,
        (None, None) => Format::Top,
    };
    let processes = args
        .target
        .pid
        .iter()
        .map(|&pid| attach(pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let output = create_output(args.output.as_deref())?;
    if let Some(wait) = args.duration {
        eprintln!(
            "loupe: goroutine census of pid {} in {} (Ctrl-C takes it now)",
            join_pids(&args.target.pid),
            humantime::format_duration(wait)
        );
        wait_or_interrupt(wait)?;
    }
    let target = format!("pid {}", join_pids(&args.target.pid));
    let mut merged = ProfileMerger::default();
    for process in &processes {
        merged.add(profile::profile(&process.snapshot()?, target.clone()));
    }
    let mut profile = merged.finish().context("no process was read")?;
    profile.duration = Duration::ZERO;
    eprintln!("loupe: {} in {target}", profile.describe_total());
    super::profile::write_profile(
        &profile,
        format,
        output.zip(args.output.as_deref()),
        args.top,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The `goroutines` section of `loupe stat` for `pid`: None when it is not a Go process
/// (or no longer runs); a Go process whose goroutines cannot be read gets a warning.
pub fn stat_section(pid: u32) -> Option<report::Counts> {
    let snapshot = GoProcess::attach(pid).and_then(|p| p.snapshot());
    match snapshot {
        Ok(s) => Some(report::Counts::of(&s)),
        Err(
            GoroutineError::NotGo { .. }
            | GoroutineError::NoExecutable { .. }
            | GoroutineError::ProcessExited { .. },
        ) => None,
        Err(e) => {
            eprintln!("loupe: warning: no goroutine figures: {e}");
            None
        }
    }
}

fn attach(pid: u32) -> anyhow::Result<GoProcess> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no process with PID {pid}");
    }
    Ok(GoProcess::attach(pid)?)
}

/// Fails on an unwritable path before reading goroutines (after attaching: a process that
/// cannot be read leaves no empty file).
fn create_output(path: Option<&Path>) -> anyhow::Result<Option<File>> {
    path.map(|p| {
        File::create(p).with_context(|| format!("cannot write the output file {}", p.display()))
    })
    .transpose()
}

fn join_pids(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn wait_or_interrupt(wait: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the timer")?;
    runtime.block_on(async {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    Ok(())
}
