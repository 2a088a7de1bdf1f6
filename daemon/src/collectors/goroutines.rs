//! Goroutine events (`ebpf/src/probes/goroutines.rs`): a uprobe on `runtime.casgstatus` in
//! each traced Go process, and the reader of the cumulative totals it keeps per process
//! (goroutines created and exited, runnable-to-running latency). Each tick moves what was
//! added since the previous reading into the store; totals are never reset in the kernel,
//! so no increment is lost to a read.

use std::{collections::HashMap as StdHashMap, num::NonZeroU32};

use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{uprobe::UProbeScope, UProbe},
    Ebpf,
};
use loupe_ebpf::{
    goroutines::{counter, GoroutineStats},
    histogram::HIST_BUCKETS,
};

use super::take_map;
use crate::{
    bpf::BpfError,
    engine::{Collector, Context, Feature, FeatureKind, HistogramKey},
    goroutines::probes::ProbePoints,
};

pub const FEATURES: [Feature; 1] = [Feature {
    kind: FeatureKind::Uprobes,
    used_for: "goroutine events of Go programs (stat --goroutine-events)",
}];

/// The program attached at each Go process's `runtime.casgstatus`.
const PROGRAM: &str = "go_casgstatus";

/// Store names of what this collector adds, per process.
pub const CREATED: &str = "goroutines_created";
pub const EXITED: &str = "goroutines_exited";
/// Runnable-to-running latency histogram (with its exact sum).
pub const SCHED_LATENCY_HISTOGRAM: &str = "goroutine_sched_latency";

pub struct GoroutineCollector {
    stats: HashMap<MapData, u32, GoroutineStats>,
    counters: PerCpuArray<MapData, u64>,
    /// The totals of each traced process at the previous reading.
    last: StdHashMap<u32, Box<GoroutineStats>>,
}

impl GoroutineCollector {
    /// Attaches the probe to each process's runtime. A process that exited meanwhile is
    /// skipped with a warning; any other failure is an error naming the process.
    pub fn attach(
        ebpf: &mut Ebpf,
        targets: &[(u32, ProbePoints)],
    ) -> Result<GoroutineCollector, BpfError> {
        let mut stats: HashMap<MapData, u32, GoroutineStats> = take_map(ebpf, "GOROUTINE_STATS")?;
        let counters = take_map(ebpf, "GOROUTINE_COUNTERS")?;
        let program_error = |what: String| {
            move |source: aya::programs::ProgramError| BpfError::Program { what, source }
        };
        let program: &mut UProbe = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| BpfError::Program {
                what: format!("uprobe {PROGRAM}"),
                source: aya::programs::ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(program_error(format!("uprobe {PROGRAM}")))?;
        program
            .load()
            .map_err(program_error(format!("uprobe {PROGRAM}")))?;
        let mut last = StdHashMap::new();
        for (pid, points) in targets {
            let Some(scope) = NonZeroU32::new(*pid) else {
                continue;
            };
            // The entry exists before the probe fires: the kernel only looks it up.
            let zero = GoroutineStats::default();
            stats.insert(pid, zero, 0).map_err(|source| BpfError::Map {
                name: "GOROUTINE_STATS",
                source,
            })?;
            let attached = program.attach(
                aya::programs::uprobe::UProbeAttachLocation::AbsoluteOffset(points.casgstatus),
                &points.exe,
                UProbeScope::OneProcess(scope),
            );
            match attached {
                Ok(_) => {
                    last.insert(*pid, Box::new(zero));
                }
                Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                    log::warn!("process {pid} exited before its goroutine probes were attached");
                    let _ = stats.remove(pid);
                }
                Err(source) => {
                    return Err(BpfError::Program {
                        what: format!(
                            "uprobe on runtime.casgstatus of process {pid} (Go {})",
                            points.go_version
                        ),
                        source,
                    })
                }
            }
        }
        Ok(GoroutineCollector {
            stats,
            counters,
            last,
        })
    }

    /// Adds what each process's totals gained since the last reading to the store; forgets
    /// processes that exited (after their last reading).
    fn drain(&mut self, cx: &mut Context<'_>) {
        let mut gone = Vec::new();
        for (pid, last) in &mut self.last {
            let Ok(now) = self.stats.get(pid, 0) else {
                gone.push(*pid);
                continue;
            };
            cx.store
                .add_process_counter(*pid, CREATED, now.created.wrapping_sub(last.created));
            cx.store
                .add_process_counter(*pid, EXITED, now.exited.wrapping_sub(last.exited));
            let mut buckets = [0u64; HIST_BUCKETS as usize];
            for (i, b) in buckets.iter_mut().enumerate() {
                *b = now.buckets[i].wrapping_sub(last.buckets[i]);
            }
            cx.store
                .histogram(HistogramKey {
                    name: SCHED_LATENCY_HISTOGRAM,
                    pid: *pid,
                })
                .add_buckets(&buckets, now.sched_wait_ns.wrapping_sub(last.sched_wait_ns));
            **last = now;
            if cx.store.exited.contains(pid) {
                gone.push(*pid);
            }
        }
        for pid in gone {
            self.last.remove(&pid);
            let _ = self.stats.remove(&pid);
        }
    }
}

impl Collector for GoroutineCollector {
    fn name(&self) -> &'static str {
        "goroutines"
    }

    fn handles(&self, _kind: u32) -> bool {
        false // Nothing goes through the ring buffer.
    }

    fn on_record(&mut self, _kind: u32, _record: &[u8], _cx: &mut Context<'_>) {}

    fn tick(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        self.drain(cx);
        Ok(())
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        self.drain(cx);
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        super::sum_per_cpu(&self.counters, &counter::NAMES)
    }
}
