//! `loupe stat`: exact scheduling figures of processes, a command, or the whole host.

use std::{fs::File, io::Write, process::ExitCode, time::Duration};

use anyhow::{bail, Context};

use super::StatArgs;
use crate::{
    collectors::targets::TargetSpec,
    engine::{Capability, Window},
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
        capabilities.push(goroutine_events(&spec)?);
    }
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

/// The goroutine event capability over the `--pid` processes: each one's probe points, read
/// from its executable now, so a process that cannot be probed is named before tracing.
/// With several processes, those that are not Go programs (or cannot be probed) are skipped
/// with a warning, and the others traced.
fn goroutine_events(spec: &TargetSpec) -> anyhow::Result<Capability> {
    let TargetSpec::Pids(pids) = spec else {
        bail!("--goroutine-events traces running Go programs: name them with --pid");
    };
    let mut targets = Vec::new();
    for &pid in pids {
        match crate::goroutines::probes::probe_points(pid) {
            Ok(points) => {
                if points.single_stepped {
                    eprintln!(
                        "loupe: warning: process {pid} ({}): the kernel single-steps its probed \
                         instruction, each goroutine state change costs about 10x more than \
                         with Go 1.21+ (see the README)",
                        points.go_version
                    );
                }
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
    Ok(Capability::GoroutineEvents { targets })
}
