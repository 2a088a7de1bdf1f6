//! The collection loop every CLI front-end shares: start a session, launch the command if
//! there is one, and stop at the duration, Ctrl-C, the command's exit or the targets' exit.

use std::{
    io::IsTerminal,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    collectors::targets::TargetSpec,
    engine::{Capability, Session, SessionConfig, Status, Window},
    profile::ProfileType,
};

pub struct Outcome {
    /// The engine's state counts at the end.
    pub status: Status,
    /// The launched command's exit status, as loupe's own.
    pub exit_code: ExitCode,
    /// The launched command's pid.
    pub command_pid: Option<u32>,
}

/// Why collection stopped.
enum End {
    Duration,
    Interrupted,
    CommandExited(std::process::ExitStatus),
    TargetsExited,
}

/// How often progress is shown and target liveness checked.
const POLL: Duration = Duration::from_millis(250);

/// How often a long run hands a window to the front-end, which symbolizes and folds it, so
/// raw state (and the binaries it refers to) is released as the run goes.
const WINDOW: Duration = Duration::from_secs(30);

/// Runs a session over `spec` until `duration` passes (if given), Ctrl-C, the launched
/// command exits, or every given process has exited. Every window, the last included, goes
/// to `on_window` in order. `announce` is printed once the probes are attached, so what a
/// user (or a test) starts after reading it is observed from its first instruction.
pub fn collect(
    spec: &TargetSpec,
    capabilities: Vec<Capability>,
    duration: Option<Duration>,
    announce: &str,
    on_window: &mut dyn FnMut(Window),
) -> anyhow::Result<Outcome> {
    let session = Session::start(SessionConfig {
        targets: spec.clone(),
        capabilities,
    })?;
    eprintln!("{announce}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(drive(session, spec, duration, on_window))
}

async fn drive(
    session: Session,
    spec: &TargetSpec,
    duration: Option<Duration>,
    on_window: &mut dyn FnMut(Window),
) -> anyhow::Result<Outcome> {
    let mut child = match spec {
        TargetSpec::Command(argv) => {
            let mut command = tokio::process::Command::new(&argv[0]);
            command.args(&argv[1..]);
            let child = if session.attaches_before_exec() {
                super::launch::spawn_held_before_exec(command, &session)
            } else {
                command.spawn().map_err(anyhow::Error::from)
            }
            .with_context(|| format!("cannot start {}", argv[0].to_string_lossy()))?;
            session.command_spawned()?;
            Some(child)
        }
        _ => None,
    };

    let command_pid = child.as_ref().and_then(|c| c.id());
    let started = Instant::now();
    let progress = duration.and_then(|d| progress_bar(d, spec));
    // Without a duration (a command run to its end), the deadline never comes.
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(100 * 365 * 86400)));
    tokio::pin!(deadline);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut poll = tokio::time::interval(POLL);
    let mut next_window = Instant::now() + WINDOW;

    let end = loop {
        tokio::select! {
            _ = &mut deadline => break End::Duration,
            _ = &mut ctrl_c => break End::Interrupted,
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                break End::CommandExited(status.context("waiting for the command")?);
            }
            _ = poll.tick() => {
                let status = session.status();
                if matches!(spec, TargetSpec::Pids(_)) && status.targets_alive == 0 {
                    break End::TargetsExited;
                }
                if let Some(bar) = &progress {
                    bar.set_position(started.elapsed().as_millis() as u64);
                    if let Some(samples) = status.totals.get(&ProfileType::Cpu) {
                        bar.set_message(format!("{samples} samples"));
                    }
                }
                if Instant::now() >= next_window {
                    // Collection goes on in its own thread while the front-end folds this.
                    on_window(session.take_window()?);
                    next_window = Instant::now() + WINDOW;
                }
            }
        }
    };
    // Samples already in the ring buffer or the count maps still count.
    let status = session.status();
    on_window(session.stop()?);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    let exit_code = match end {
        End::Duration | End::Interrupted => {
            if let Some(child) = &child {
                if let Some(pid) = child.id() {
                    eprintln!("loupe: note: the command (pid {pid}) is still running; loupe leaves it running");
                }
            }
            ExitCode::SUCCESS
        }
        End::CommandExited(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => {
                eprintln!("loupe: note: the command exited with status {code}");
                ExitCode::from(code.clamp(1, 255) as u8)
            }
            None => {
                eprintln!("loupe: note: the command was killed by a signal ({status})");
                ExitCode::FAILURE
            }
        },
        End::TargetsExited => {
            eprintln!(
                "loupe: note: the target exited during the profile; writing what was gathered"
            );
            ExitCode::SUCCESS
        }
    };
    Ok(Outcome {
        status,
        exit_code,
        command_pid,
    })
}

fn progress_bar(duration: Duration, spec: &TargetSpec) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} profiling {prefix} [{bar:30}] {elapsed}/{duration} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(spec.describe());
    Some(bar)
}
