//! `loupe stat`: exact scheduling figures of processes, a command, or the whole host.

use std::{fs::File, io::Write, process::ExitCode, time::Duration};

use anyhow::{bail, Context};

use super::StatArgs;
use crate::{
    collectors::targets::TargetSpec,
    engine::{Capability, Window},
    goroutines::{sched_latency, GoroutineError},
    stat,
};

/// How long `--pid`/`--all` trace without `--duration`.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

pub fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let spec = args.target.spec()?;
    // Fail on an unwritable path before tracing, not after.
    let output = match &args.output {
        Some(path) => Some(
            File::create(path)
                .with_context(|| format!("cannot write the output file {}", path.display()))?,
        ),
        None => None,
    };
    let duration = match (&spec, args.duration) {
        (_, Some(d)) => Some(d),
        (TargetSpec::Command(_), None) => None,
        _ => Some(DEFAULT_DURATION),
    };
    let announce = format!(
        "loupe: tracing scheduling of {} {}",
        spec.describe(),
        match duration {
            Some(d) => format!("for {} (Ctrl-C ends early)", humantime::format_duration(d)),
            None => "until it exits (Ctrl-C ends early)".to_string(),
        }
    );
    let mut capabilities = vec![Capability::Sched {
        offcpu_stacks: false,
    }];
    if args.goroutine_events {
        capabilities.extend(goroutine_events(&spec)?);
    }
    // Goroutine scheduling latency without probes: the runtime's own histogram, read now
    // and at the end of the window (a launched command's starts empty: read at the end).
    let latency_start = match &spec {
        TargetSpec::Pids(pids) if pids.len() == 1 && !args.goroutine_events => {
            runtime_latency_start(pids[0])
        }
        _ => None,
    };
    let mut total: Option<Window> = None;
    let outcome =
        super::session::collect(&spec, capabilities, duration, &announce, &mut |window| {
            match &mut total {
                Some(t) => t.absorb(window),
                None => total = Some(window),
            }
        })?;
    let window = total.context("the session ended without a window")?;
    let subject = match &spec {
        TargetSpec::Command(_) => outcome.command_pid,
        TargetSpec::Pids(pids) if pids.len() == 1 => Some(pids[0]),
        _ => None,
    };
    let mut report = stat::report(&window, subject, &spec.describe());
    // A census at the end of the window, for a Go process still running.
    if let Some(pid) = subject.filter(|pid| !window.exited.contains(pid)) {
        if let Some(census) = super::goroutines::stat_section(pid) {
            report
                .goroutines
                .get_or_insert_with(Default::default)
                .census = Some(census);
        }
        let latency = match (latency_start, &spec) {
            (Some((reader, before)), _) => Some((reader, Some(before))),
            (None, TargetSpec::Command(_)) => latency_reader(pid).map(|r| (r, None)),
            _ => None,
        };
        if let Some(latency) = latency.and_then(|(r, before)| runtime_latency_end(&r, before)) {
            report
                .goroutines
                .get_or_insert_with(Default::default)
                .sched_latency = Some(latency);
        }
    }
    let json = serde_json::to_string_pretty(&report)? + "\n";
    match output {
        Some(mut file) => {
            file.write_all(json.as_bytes())
                .context("writing the JSON report")?;
            if let Some(path) = &args.output {
                eprintln!("loupe: wrote {}", path.display());
            }
        }
        None if args.json => super::write_stdout(|out| out.write_all(json.as_bytes()))?,
        None => {
            let mut text = Vec::new();
            stat::render_table(&report, args.top, &mut text)?;
            // The table goes to stderr for a launched command (its own stdout stays
            // untouched), to stdout otherwise.
            if matches!(spec, TargetSpec::Command(_)) {
                std::io::stderr().write_all(&text)?;
            } else {
                super::write_stdout(|out| out.write_all(&text))?;
            }
        }
    }
    Ok(outcome.exit_code)
}

/// The runtime scheduling latency reader of `pid`: None when it is not a Go process (or no
/// longer runs); a Go process whose histogram cannot be read gets a warning.
fn latency_reader(pid: u32) -> Option<sched_latency::Reader> {
    match sched_latency::Reader::attach(pid) {
        Ok(reader) => Some(reader),
        Err(
            GoroutineError::NotGo { .. }
            | GoroutineError::NoExecutable { .. }
            | GoroutineError::ProcessExited { .. },
        ) => None,
        Err(e) => {
            eprintln!("loupe: warning: no goroutine scheduling latency: {e}");
            None
        }
    }
}

/// The reader of a `--pid` Go process and its histogram at the start of the window.
fn runtime_latency_start(
    pid: u32,
) -> Option<(sched_latency::Reader, sched_latency::RuntimeHistogram)> {
    let reader = latency_reader(pid)?;
    match reader.read() {
        Ok(before) => Some((reader, before)),
        Err(e) => {
            eprintln!("loupe: warning: no goroutine scheduling latency: {e}");
            None
        }
    }
}

/// The window's figures: what the runtime recorded since `before` (since the process
/// started without one).
fn runtime_latency_end(
    reader: &sched_latency::Reader,
    before: Option<sched_latency::RuntimeHistogram>,
) -> Option<stat::SchedLatency> {
    let window = match &before {
        Some(before) => reader.since(before),
        None => reader.read(),
    };
    match window {
        Ok(w) => Some(stat::SchedLatency::from_runtime(&w)),
        Err(e) => {
            eprintln!("loupe: warning: no goroutine scheduling latency: {e}");
            None
        }
    }
}

/// The goroutine event capability over the `--pid` processes or the launched command: the
/// probe points, read from the executables now, so a process that cannot be probed is
/// named before tracing. With several processes, those that are not Go programs (or cannot
/// be probed) are skipped with a warning, and the others traced; a command that cannot be
/// probed is warned about and run without events.
fn goroutine_events(spec: &TargetSpec) -> anyhow::Result<Option<Capability>> {
    let pids = match spec {
        TargetSpec::Pids(pids) => pids,
        TargetSpec::Command(argv) => return Ok(command_events(&argv[0])),
        TargetSpec::All => bail!(
            "--goroutine-events traces Go programs: name them with --pid, or launch one \
             (loupe stat --goroutine-events -- COMMAND)"
        ),
    };
    let mut targets = Vec::new();
    for &pid in pids {
        match crate::goroutines::probes::probe_points(pid) {
            Ok(points) => {
                warn_if_single_stepped(&format!("process {pid}"), &points);
                targets.push((pid, points))
            }
            Err(e) if pids.len() == 1 => {
                return Err(anyhow::Error::new(e).context("--goroutine-events"))
            }
            Err(e) => eprintln!("loupe: warning: no goroutine events for process {pid}: {e}"),
        }
    }
    if targets.is_empty() {
        bail!("--goroutine-events: none of the given processes can be probed");
    }
    Ok(Some(Capability::GoroutineEvents {
        targets,
        command: None,
    }))
}

/// Goroutine events of the command to launch, probed from its first instruction (the
/// file `program` resolves to, as its exec will); none, with a warning, if it cannot be.
fn command_events(program: &std::ffi::OsStr) -> Option<Capability> {
    let name = program.to_string_lossy();
    // A command that cannot be found fails to start, with its own error, later.
    let path = super::launch::resolve_executable(program)?;
    match crate::goroutines::probes::probe_points_of_file(&path) {
        Ok(points) => {
            warn_if_single_stepped(&format!("command {name}"), &points);
            Some(Capability::GoroutineEvents {
                targets: Vec::new(),
                command: Some(points),
            })
        }
        Err(crate::goroutines::GoroutineError::NotGo { .. }) => {
            eprintln!(
                "loupe: warning: no goroutine events: {name} ({}) is not a Go program",
                path.display()
            );
            None
        }
        Err(e) => {
            eprintln!(
                "loupe: warning: no goroutine events for {name} ({}): {e}",
                path.display()
            );
            None
        }
    }
}

fn warn_if_single_stepped(what: &str, points: &crate::goroutines::probes::ProbePoints) {
    if points.single_stepped {
        eprintln!(
            "loupe: warning: {what} ({}): the kernel single-steps its probed instruction, each \
             goroutine state change costs about 10x more than with Go 1.21+ (see the README)",
            points.go_version
        );
    }
}
