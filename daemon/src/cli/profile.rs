//! `loupe profile`: sample on-CPU stacks of a target for a duration, then write the profile.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, IsTerminal, Write},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use tokio::io::{unix::AsyncFd, Interest};

use super::ProfileArgs;
use loupe_ebpf::cpu::{StackCount, StackCountKey, SAMPLE_NO_USER_STACK};

use crate::{
    aggregate::{Aggregator, ProfileMeta, RawFrame},
    bpf,
    collectors::{
        cpu::{CpuCollector, CpuEvent},
        targets::{TargetSpec, Targets},
    },
    process::{ProcessTable, UserAddress},
    profile::ProfileType,
    render::{self, Format},
    symbolize::Symbolizer,
    unwind::{self, StackSnapshot},
};

pub fn run(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let spec = target_spec(&args)?;
    let format = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) => Format::from_path(path)?,
        (None, None) => Format::Top,
    };
    // Fail on an unwritable path before profiling, not after.
    let output = match &args.output {
        Some(path) => Some(
            File::create(path)
                .with_context(|| format!("cannot write the output file {}", path.display()))?,
        ),
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(collect(&args, &spec))?;

    let collected = outcome.aggregator.total();
    let meta = ProfileMeta {
        profile_type: ProfileType::Cpu,
        target: spec.describe(),
        start_time: outcome.start_time,
        duration: outcome.elapsed,
        frequency_hz: args.frequency,
        drops: outcome
            .counters
            .iter()
            .filter(|(name, _)| name.starts_with("drop_"))
            .cloned()
            .collect(),
    };
    let profile =
        outcome
            .aggregator
            .finish(&outcome.processes.modules, &Symbolizer::default(), meta);

    let lost: u64 = profile.drops.iter().map(|(_, n)| n).sum();
    eprintln!(
        "loupe: {collected} samples of {} in {:.1}s{}",
        spec.describe(),
        outcome.elapsed.as_secs_f64(),
        if lost > 0 {
            // Samples or parts of them (frames): each counter says which.
            format!("; losses: {}", describe_drops(&profile.drops))
        } else {
            String::new()
        }
    );
    if collected == 0 {
        eprintln!("loupe: note: no samples: the target used no CPU while profiled");
    }
    // `--top` sets the table's rows wherever it is written.
    let write = |out: &mut dyn Write| match format {
        Format::Top => render::render_top(&profile, args.top, out),
        _ => render::render(&profile, format, out),
    };
    match (output, &args.output) {
        (Some(file), Some(path)) => {
            let mut out = BufWriter::new(file);
            write(&mut out)?;
            out.flush()
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("loupe: wrote {}", path.display());
        }
        _ => {
            let mut text = Vec::new();
            write(&mut text)?;
            super::write_stdout(|out| out.write_all(&text))?;
        }
    }
    Ok(outcome.exit_code)
}

fn target_spec(args: &ProfileArgs) -> anyhow::Result<TargetSpec> {
    if args.all {
        return Ok(TargetSpec::All);
    }
    if !args.command.is_empty() {
        return Ok(TargetSpec::Command(args.command.clone()));
    }
    for &pid in &args.pid {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("no process with PID {pid}");
        }
    }
    Ok(TargetSpec::Pids(args.pid.clone()))
}

fn describe_drops(drops: &[(String, u64)]) -> String {
    drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Outcome {
    aggregator: Aggregator,
    processes: ProcessTable,
    counters: Vec<(String, u64)>,
    start_time: SystemTime,
    elapsed: Duration,
    exit_code: ExitCode,
}

/// Why collection stopped.
enum End {
    Duration,
    Interrupted,
    CommandExited(std::process::ExitStatus),
    TargetsExited,
}

/// How often in-kernel counts are drained and progress is shown.
const TICK: Duration = Duration::from_millis(250);

async fn collect(args: &ProfileArgs, spec: &TargetSpec) -> anyhow::Result<Outcome> {
    let mut ebpf = bpf::load()?;
    let mut targets = Targets::attach(&mut ebpf, spec)?;
    let mut collector = CpuCollector::attach(&mut ebpf, args.frequency, args.unwind)?;
    let mut session = Session::default();

    let mut child = match spec {
        TargetSpec::Command(argv) => {
            let child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .spawn()
                .with_context(|| format!("cannot start {}", argv[0].to_string_lossy()))?;
            targets.spawned();
            Some(child)
        }
        _ => None,
    };
    // Exit events cover targets that exit from now on; one may already be gone.
    let mut live_pids: HashSet<u32> = match spec {
        TargetSpec::Pids(pids) => pids
            .iter()
            .copied()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect(),
        _ => HashSet::new(),
    };

    eprintln!(
        "loupe: profiling {} for {} at {} Hz (Ctrl-C ends early)",
        spec.describe(),
        humantime::format_duration(args.duration),
        args.frequency
    );
    let start_time = SystemTime::now();
    let started = Instant::now();
    let progress = progress_bar(args.duration, spec);
    let ring_fd = collector
        .events_fd()
        .context("polling the event ring buffer")?;
    // SAFETY: the AsyncFd owns this duplicate descriptor for its whole life.
    let ring = unsafe { AsyncFd::register_with_interest(ring_fd, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(TICK);

    let end = loop {
        if matches!(spec, TargetSpec::Pids(_)) && live_pids.is_empty() {
            break End::TargetsExited;
        }
        tokio::select! {
            _ = &mut deadline => break End::Duration,
            _ = &mut ctrl_c => break End::Interrupted,
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                break End::CommandExited(status.context("waiting for the command")?);
            }
            guard = ring.readable() => {
                let mut guard = guard.context("polling the event ring buffer")?;
                let exited = session.drain_events(&mut collector);
                live_pids.retain(|pid| !exited.contains(pid));
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let exited = session.drain_events(&mut collector);
                live_pids.retain(|pid| !exited.contains(pid));
                session.drain_retired_counts(&mut collector)?;
                if let Some(bar) = &progress {
                    bar.set_position(started.elapsed().as_millis() as u64);
                    bar.set_message(format!("{} samples", session.aggregator.total()));
                }
            }
        }
    };
    // Samples already in the ring buffer or the count map still count.
    session.drain_events(&mut collector);
    let counts = collector.take_all_counts();
    session.add_counts(&mut collector, counts);
    let elapsed = started.elapsed();
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
        aggregator: session.aggregator,
        processes: session.processes,
        counters: collector.counters(),
        start_time,
        elapsed,
        exit_code,
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

/// Turns what the kernel recorded into raw stacks in the aggregate store.
#[derive(Default)]
struct Session {
    processes: ProcessTable,
    aggregator: Aggregator,
}

impl Session {
    /// Handles every pending ring-buffer record; returns the pids that exited.
    fn drain_events(&mut self, collector: &mut CpuCollector) -> Vec<u32> {
        let mut exited = Vec::new();
        collector.read_events(|collector, event| match event {
            CpuEvent::Sample { header, stack } => self.on_copied_sample(collector, &header, stack),
            CpuEvent::ProcessExec(pid) => self.processes.exec(pid),
            CpuEvent::ProcessExit(pid) => exited.push(pid),
        });
        exited
    }

    fn on_copied_sample(
        &mut self,
        collector: &mut CpuCollector,
        header: &loupe_ebpf::cpu::SampleHeader,
        stack: &[u8],
    ) {
        let mut frames = kernel_frames(collector, header.epoch, header.kernel_stack_id);
        let snapshot = StackSnapshot::of_sample(header, stack);
        let thread_comm = comm_str(&header.comm);
        // The leader thread named otherwise than the process we loaded: a sample taken before
        // its exec (a fork child still running its parent's code), which the current mappings
        // would misname.
        let before_exec =
            header.tid == header.pid && !self.processes.named(header.pid, &thread_comm);
        // A task with no user address space (exiting, or in execve): kernel frames only.
        if header.flags & SAMPLE_NO_USER_STACK == 0 {
            let user = match before_exec {
                true => None,
                false => unwind::unwind_in(&mut self.processes, header.pid, &snapshot),
            };
            match (user, self.processes.get(header.pid)) {
                (Some(user), Some(process)) => {
                    if let Some(addr) = user.missing {
                        collector.hint_stack_region(header.tid, addr & !0xfff);
                    }
                    frames.extend(user_frames(&user.frames, |a| process.resolve(a)));
                    if user.truncated {
                        frames.push(RawFrame::Truncated);
                    }
                }
                _ => {
                    let leaf = unwind::leaf_only(header.regs.ip);
                    frames.extend(user_frames(&leaf.frames, UserAddress::unknown));
                    frames.push(RawFrame::Truncated);
                }
            }
        }
        let comm = if before_exec {
            thread_comm
        } else {
            self.process_name(header.pid, &header.comm)
        };
        self.aggregator
            .add(header.pid, header.tid, &comm, frames, 1);
    }

    /// Adds the in-kernel counts of the retired epoch, then recycles its stack maps.
    fn drain_retired_counts(&mut self, collector: &mut CpuCollector) -> anyhow::Result<()> {
        let counts = collector.take_retired_counts();
        self.add_counts(collector, counts);
        Ok(collector.rotate()?)
    }

    fn add_counts(
        &mut self,
        collector: &mut CpuCollector,
        counts: Vec<(StackCountKey, StackCount)>,
    ) {
        for (key, value) in counts {
            let mut frames = kernel_frames(collector, key.epoch, key.kernel_stack_id);
            let user = collector
                .stack(false, key.epoch, key.user_stack_id)
                .to_vec();
            if !user.is_empty() {
                match self.processes.get(key.pid) {
                    Some(process) => frames.extend(user_frames(&user, |a| process.resolve(a))),
                    None => frames.extend(user_frames(&user, UserAddress::unknown)),
                }
            }
            let comm = self.process_name(key.pid, &value.comm);
            self.aggregator
                .add(key.pid, key.tid, &comm, frames, value.count);
        }
    }

    /// The group leader's name when known (threads may be named otherwise), else the
    /// sampled thread's.
    fn process_name(&mut self, pid: u32, thread_comm: &[u8; 16]) -> String {
        match self.processes.comm(pid) {
            Some(comm) => comm.to_string(),
            None => comm_str(thread_comm),
        }
    }
}

/// A kernel `comm` (NUL-padded) as text.
fn comm_str(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// Raw frames of a kernel stack id, leaf first.
fn kernel_frames(collector: &mut CpuCollector, epoch: u32, stack_id: i32) -> Vec<RawFrame> {
    collector
        .stack(true, epoch, stack_id)
        .iter()
        .map(|&a| RawFrame::Kernel(a))
        .collect()
}

/// Raw frames for user addresses, leaf first: return addresses are looked up one byte back,
/// inside the call instruction.
fn user_frames(addrs: &[u64], resolve: impl Fn(u64) -> UserAddress) -> Vec<RawFrame> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| RawFrame::User(resolve(if i == 0 { a } else { a.wrapping_sub(1) })))
        .collect()
}
