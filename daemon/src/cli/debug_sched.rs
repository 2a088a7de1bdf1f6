//! `loupe debug-sched` (hidden): runs the scheduling capability on processes through the
//! engine, as `loupe stat` and `loupe profile --type offcpu` do, and prints what it measured
//! as JSON: off-CPU time and blocks by symbolized stack, per-thread totals and run-queue
//! histograms, beside the kernel's own per-thread schedstat over the same interval. It
//! exists so the kernel side can be tested end to end against ground truth.

use std::{
    collections::HashMap,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::bail;

use super::DebugSchedArgs;
use crate::{
    collectors::targets::TargetSpec,
    engine::{Capability, Session, SessionConfig, Window},
    profile::ProfileType,
    stat::{counter as stat_counter, RUNQUEUE_HISTOGRAM},
    symbolize::Symbolizer,
};

/// How often the end conditions are checked.
const POLL: Duration = Duration::from_millis(25);

pub fn run(args: DebugSchedArgs) -> anyhow::Result<ExitCode> {
    for &pid in &args.pid {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("no process with PID {pid}");
        }
    }
    let session = Session::start(SessionConfig {
        targets: TargetSpec::Pids(args.pid.clone()),
        capabilities: vec![
            Capability::Sched {
                offcpu_stacks: true,
            },
            Capability::OffCpuBlockCounts,
        ],
    })?;
    eprintln!("loupe: attached");
    let started = Instant::now();
    // Totals count from the end of the warm-up, when every running thread has switched out
    // once and so is tracked; ground truth (the kernel's own per-thread totals, for tests)
    // is read at that window boundary.
    let mut schedstat_start = read_schedstats(&args.pid);
    let mut warming_up = !args.warmup.is_zero();
    loop {
        std::thread::sleep(POLL);
        if started.elapsed() >= args.duration || !args.pid.iter().any(|&p| alive(p)) {
            break;
        }
        if warming_up && started.elapsed() >= args.warmup {
            schedstat_start = read_schedstats(&args.pid);
            drop(session.take_window()?);
            warming_up = false;
        }
    }
    if warming_up {
        bail!("the run ended before the warm-up did");
    }
    let schedstat_end = read_schedstats(&args.pid);
    let window = session.stop()?;
    let mut report = report(window, started.elapsed());
    report["schedstat"] = schedstat_end
        .iter()
        .map(|(tid, end)| {
            // A thread born since the start started from zero.
            let start = schedstat_start.get(tid).copied().unwrap_or([0; 3]);
            let delta = |i: usize| end[i].saturating_sub(start[i]);
            let totals = serde_json::json!({
                "oncpu_ns": delta(0),
                "runq_wait_ns": delta(1),
                "timeslices": delta(2),
            });
            (tid.to_string(), totals)
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    super::write_stdout(|out| {
        serde_json::to_writer(&mut *out, &report)?;
        writeln!(out)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The window as JSON: stacks symbolized off the collection thread, as every front-end does.
fn report(mut window: Window, elapsed: Duration) -> serde_json::Value {
    // The blocks-counting profile carries two values per stack: (blocks, blocked ns).
    let profile = window.build_profile(ProfileType::Lock, String::new(), 1, &Symbolizer::default());
    let offcpu: Vec<_> = profile
        .samples
        .iter()
        .map(|s| {
            serde_json::json!({
                "pid": s.pid,
                "tid": s.tid,
                "blocks": s.values.first(),
                "total_ns": s.values.get(1),
                "frames": s.stack.iter()
                    .map(|&f| profile.frames[f as usize].function.clone())
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let threads: Vec<_> = window
        .threads
        .iter()
        .map(|(tid, t)| {
            let value = |name: &str| t.values.get(name).copied().unwrap_or(0);
            serde_json::json!({
                "tid": tid,
                "pid": t.pid,
                "comm": t.comm,
                "oncpu_ns": value(stat_counter::ONCPU_NS),
                "offcpu_ns": value(stat_counter::OFFCPU_NS),
                "runq_wait_ns": value(stat_counter::RUNQUEUE_WAIT_NS),
                "runq_waits": value(stat_counter::RUNQUEUE_WAITS),
                "voluntary_switches": value(stat_counter::VOLUNTARY_SWITCHES),
                "involuntary_switches": value(stat_counter::INVOLUNTARY_SWITCHES),
            })
        })
        .collect();
    let histograms: Vec<_> = window
        .histograms
        .iter()
        .filter(|(key, _)| key.name == RUNQUEUE_HISTOGRAM)
        .map(|(key, histogram)| {
            serde_json::json!({
                "pid": key.pid,
                "waits": histogram.count,
                "p50_ns": histogram.quantile(0.5),
                "p99_ns": histogram.quantile(0.99),
            })
        })
        .collect();
    serde_json::json!({
        "elapsed_ns": elapsed.as_nanos() as u64,
        "offcpu": offcpu,
        "threads": threads,
        "runq_histograms": histograms,
        "counters": window.counters
            .iter()
            .map(|(name, n)| (name.clone(), (*n).into()))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// Whether `pid` exists and has not exited (a zombie waiting for its parent has).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// `/proc/PID/task/TID/schedstat` of every thread of `pids`: on-CPU ns, run-queue wait ns,
/// time slices.
fn read_schedstats(pids: &[u32]) -> HashMap<u32, [u64; 3]> {
    let mut stats = HashMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let fields: Vec<u64> = text
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            if let [oncpu, runq, slices] = fields[..] {
                stats.insert(tid, [oncpu, runq, slices]);
            }
        }
    }
    stats
}
