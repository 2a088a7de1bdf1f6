//! `loupe debug-sched` (hidden): runs the scheduling collector on processes and prints what
//! it measured as JSON: off-CPU time by unwound, symbolized stack, per-thread totals and
//! run-queue histograms. It exists so the kernel side can be tested end to end before the
//! scheduling commands are built on it.

use std::{
    collections::HashMap,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use aya::maps::{MapData, RingBuf};
use loupe_ebpf::sched::{OffCpuKey, ThreadSchedStats};

use super::DebugSchedArgs;
use crate::{
    aggregate::{Aggregator, ProfileMeta, RawFrame},
    bpf,
    collectors::{
        sched::{self, SchedCollector, SchedDrain, SchedOptions},
        stacks,
        targets::{TargetSpec, Targets},
    },
    histogram::LatencyHistogram,
    process::{ProcessTable, UserAddress},
    profile::ProfileType,
    symbolize::Symbolizer,
};

/// How often the retired generation is drained and the generations rotate.
const PERIOD: Duration = Duration::from_millis(250);
/// How often stack copies are read (often: a process may exit soon after blocking).
const POLL: Duration = Duration::from_millis(25);

#[derive(Default)]
struct State {
    processes: ProcessTable,
    /// Frames of each off-CPU key, resolved when its copy (or first drain) arrived.
    key_frames: HashMap<OffCpuKey, Vec<RawFrame>>,
    offcpu: HashMap<(u32, u32, Vec<RawFrame>), (u64, u64)>,
    threads: HashMap<u32, ThreadSchedStats>,
    histograms: HashMap<u32, Vec<u64>>,
}

pub fn run(args: DebugSchedArgs) -> anyhow::Result<ExitCode> {
    for &pid in &args.pid {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("no process with PID {pid}");
        }
    }
    let mut ebpf = bpf::load()?;
    let _targets = Targets::attach(&mut ebpf, &TargetSpec::Pids(args.pid.clone()))?;
    let mut events: RingBuf<MapData> = ebpf
        .take_map("EVENTS")
        .context("no EVENTS map")?
        .try_into()
        .context("EVENTS is not a ring buffer")?;
    let mut collector = SchedCollector::attach(
        &mut ebpf,
        SchedOptions {
            offcpu_stacks: true,
            runq_stats: true,
        },
    )?;
    eprintln!("loupe: attached");
    let started = Instant::now();
    let mut state = State::default();
    // Totals count from the first generation after the warm-up, when every running thread
    // has switched out once and so is tracked; ground truth (the kernel's own per-thread
    // totals, for tests) is read at the same instant.
    let mut window_generation = collector.generation();
    let mut schedstat_start = read_schedstats(&args.pid);
    let mut warming_up = !args.warmup.is_zero();
    let mut last_rotation = Instant::now();
    loop {
        std::thread::sleep(POLL);
        state.read_events(&mut events, &mut collector);
        let ended = started.elapsed() >= args.duration || !args.pid.iter().any(|&p| alive(p));
        if ended {
            break;
        }
        let warmed_up = warming_up && started.elapsed() >= args.warmup;
        if warmed_up || last_rotation.elapsed() >= PERIOD {
            let drain = collector.take_retired();
            if collector.generation().wrapping_sub(1) >= window_generation && !warming_up {
                state.add(&mut collector, drain);
            }
            collector.rotate()?;
            last_rotation = Instant::now();
            if warmed_up {
                window_generation = collector.generation();
                schedstat_start = read_schedstats(&args.pid);
                warming_up = false;
            }
        }
    }
    if warming_up {
        bail!("the run ended before the warm-up did");
    }
    collector.stop()?;
    let schedstat_end = read_schedstats(&args.pid);
    state.read_events(&mut events, &mut collector);
    // Both maps: the current generation's, and the retired one's, which is empty or of the
    // window (it was drained when the window began).
    let drain = collector.take_all();
    state.add(&mut collector, drain);
    let elapsed = started.elapsed();
    let mut report = state.report(collector.counters(), elapsed);
    report["generations"] = collector.generation().into();
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

impl State {
    fn read_events(&mut self, events: &mut RingBuf<MapData>, collector: &mut SchedCollector) {
        while let Some(record) = events.next() {
            let Some(event) = sched::parse_event(&record) else {
                continue;
            };
            let key = event.header.key;
            let mut frames = kernel_frames(collector, &key);
            let snapshot = event.snapshot();
            let user = stacks::user_frames_of(
                &mut self.processes,
                key.pid,
                key.tid,
                &event.header.comm,
                &snapshot,
            );
            frames.extend(user.frames);
            self.key_frames.insert(key, frames);
        }
    }

    fn add(&mut self, collector: &mut SchedCollector, drain: SchedDrain) {
        for (key, value) in drain.offcpu {
            let frames = match self.key_frames.get(&key) {
                Some(frames) => frames.clone(),
                None => {
                    // No copy arrived (kernel thread, or a counted loss): frame pointers.
                    let mut frames = kernel_frames(collector, &key);
                    let fp = collector.stack(false, key.generation, key.user_stack_id);
                    frames.extend(user_frames(fp, UserAddress::unknown));
                    self.key_frames.insert(key, frames.clone());
                    frames
                }
            };
            if value.count > 0 {
                let entry = self.offcpu.entry((key.pid, key.tid, frames)).or_default();
                entry.0 += value.total_ns;
                entry.1 += value.count;
            }
        }
        for (tid, s) in drain.threads {
            let total = self.threads.entry(tid).or_insert(ThreadSchedStats {
                pid: s.pid,
                comm: s.comm,
                ..ThreadSchedStats::default()
            });
            total.oncpu_ns += s.oncpu_ns;
            total.offcpu_ns += s.offcpu_ns;
            total.runq_wait_ns += s.runq_wait_ns;
            total.runq_waits += s.runq_waits;
            total.voluntary_switches += s.voluntary_switches;
            total.involuntary_switches += s.involuntary_switches;
        }
        for (tgid, h) in drain.runq_histograms {
            let total = self
                .histograms
                .entry(tgid)
                .or_insert_with(|| vec![0; h.buckets.len()]);
            for (t, n) in total.iter_mut().zip(h.buckets.iter()) {
                *t += n;
            }
        }
    }

    fn report(self, counters: Vec<(String, u64)>, elapsed: Duration) -> serde_json::Value {
        // Symbolize through the aggregate store. The lock profile type carries two values
        // per stack, (count, ns): here blocks and blocked time.
        let mut aggregator = Aggregator::new(ProfileType::Lock);
        let mut modules = HashMap::new();
        for ((pid, tid, frames), (ns, count)) in self.offcpu {
            for frame in &frames {
                if let RawFrame::User(UserAddress::Module { module, .. }) = frame {
                    if let Some(m) = self.processes.modules.get(*module) {
                        modules.insert(*module, m.clone());
                    }
                }
            }
            aggregator.add(pid, tid, "", frames, &[count, ns]);
        }
        let profile = aggregator.finish(
            &modules,
            &Symbolizer::default(),
            ProfileMeta {
                target: String::new(),
                start_time: SystemTime::now(),
                duration: elapsed,
                frequency_hz: 1,
                drops: Vec::new(),
            },
        );
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
        let threads: Vec<_> = self
            .threads
            .iter()
            .map(|(tid, s)| {
                let len = s.comm.iter().position(|&b| b == 0).unwrap_or(s.comm.len());
                serde_json::json!({
                    "tid": tid,
                    "pid": s.pid,
                    "comm": String::from_utf8_lossy(&s.comm[..len]),
                    "oncpu_ns": s.oncpu_ns,
                    "offcpu_ns": s.offcpu_ns,
                    "runq_wait_ns": s.runq_wait_ns,
                    "runq_waits": s.runq_waits,
                    "voluntary_switches": s.voluntary_switches,
                    "involuntary_switches": s.involuntary_switches,
                })
            })
            .collect();
        let histograms: Vec<_> = self
            .histograms
            .iter()
            .map(|(pid, buckets)| {
                let mut histogram = LatencyHistogram::default();
                histogram.add_buckets(buckets, 0);
                serde_json::json!({
                    "pid": pid,
                    "waits": buckets.iter().sum::<u64>(),
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
            "counters": counters
                .into_iter()
                .map(|(name, n)| (name, n.into()))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
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

fn kernel_frames(collector: &mut SchedCollector, key: &OffCpuKey) -> Vec<RawFrame> {
    collector
        .stack(true, key.generation, key.kernel_stack_id)
        .iter()
        .map(|&a| RawFrame::Kernel(a))
        .collect()
}

/// Return addresses are looked up one byte back, inside the call instruction.
fn user_frames(addrs: &[u64], resolve: impl Fn(u64) -> UserAddress) -> Vec<RawFrame> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| RawFrame::User(resolve(if i == 0 { a } else { a.wrapping_sub(1) })))
        .collect()
}
