//! Goroutine events (`ebpf/src/probes/goroutines.rs`): a uprobe on `runtime.casgstatus` in
//! each traced Go process, and the reader of the cumulative totals it keeps per process
//! (goroutines created and exited, runnable-to-running latency, blocked time per wait
//! reason, goroutines created per creation site and per parent goroutine). Each tick moves what was added since the
//! previous reading into the store; totals are never reset in the kernel, so no increment
//! is lost to a read.
//!
//! Wait reasons and creation sites are named here, with the process's executable opened at
//! attach: each process numbers its wait reasons by its own Go release, and it may be gone
//! (with `/proc/PID/exe`) by the time the window is rendered.

use std::{collections::HashMap as StdHashMap, num::NonZeroU32};

use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use loupe_ebpf::{
    goroutines::{counter, GoroutineStats, ParentKey, SiteKey, MAX_WAIT_REASONS},
    histogram::HIST_BUCKETS,
};

use super::take_map;
use crate::{
    bpf::BpfError,
    engine::{Collector, Context, Feature, FeatureKind, HistogramKey},
    goroutines::probes::{EventNames, ProbePoints},
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
/// Labelled by the runtime's wait reason string: blocks that ended, and their total time.
pub const BLOCKED_COUNT: &str = "goroutines_blocked";
pub const BLOCKED_NS: &str = "goroutines_blocked_ns";
/// Labelled by the function that executed the `go` statement.
pub const CREATED_BY_SITE: &str = "goroutines_created_by_site";
/// Labelled by the parent goroutine's id (decimal; 0: created by the runtime with no
/// goroutine running, as `runtime.main` is).
pub const CREATED_BY_PARENT: &str = "goroutines_created_by_parent";
/// The label of creation sites whose pc names no function.
pub const UNKNOWN_SITE: &str = "[unknown]";

/// One traced process.
struct Traced {
    /// Its totals at the previous reading.
    last: Box<GoroutineStats>,
    names: EventNames,
}

pub struct GoroutineCollector {
    stats: HashMap<MapData, u32, GoroutineStats>,
    sites: HashMap<MapData, SiteKey, u64>,
    parents: HashMap<MapData, ParentKey, u64>,
    counters: PerCpuArray<MapData, u64>,
    traced: StdHashMap<u32, Traced>,
    /// Creation-site counts at the previous reading, and each site's name.
    last_sites: StdHashMap<SiteKey, (u64, String)>,
    /// Parent goroutine counts at the previous reading.
    last_parents: StdHashMap<ParentKey, u64>,
    /// The launched command's probe point, attached once it exists (see
    /// [`Collector::command_started`]).
    command: Option<ProbePoints>,
}

fn program_error(what: String) -> impl FnOnce(aya::programs::ProgramError) -> BpfError {
    move |source| BpfError::Program { what, source }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut UProbe, BpfError> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| BpfError::Program {
            what: format!("uprobe {PROGRAM}"),
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(program_error(format!("uprobe {PROGRAM}")))
}

impl GoroutineCollector {
    /// Attaches the probe to each process's runtime. A process that exited meanwhile is
    /// skipped with a warning; any other failure is an error naming the process. `command`
    /// is the probe point of a command about to be launched, attached by
    /// [`Collector::command_started`].
    pub fn attach(
        ebpf: &mut Ebpf,
        targets: &[(u32, ProbePoints)],
        command: Option<ProbePoints>,
    ) -> Result<GoroutineCollector, BpfError> {
        let mut collector = GoroutineCollector {
            stats: take_map(ebpf, "GOROUTINE_STATS")?,
            sites: take_map(ebpf, "GOROUTINE_SITES")?,
            parents: take_map(ebpf, "GOROUTINE_PARENTS")?,
            counters: take_map(ebpf, "GOROUTINE_COUNTERS")?,
            traced: StdHashMap::new(),
            last_sites: StdHashMap::new(),
            last_parents: StdHashMap::new(),
            command,
        };
        program(ebpf)?
            .load()
            .map_err(program_error(format!("uprobe {PROGRAM}")))?;
        for (pid, points) in targets {
            collector.attach_process(ebpf, *pid, points)?;
        }
        Ok(collector)
    }

    fn attach_process(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        points: &ProbePoints,
    ) -> Result<(), BpfError> {
        let Some(scope) = NonZeroU32::new(pid) else {
            return Ok(());
        };
        let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
        let names = match EventNames::open(points) {
            Ok(names) => names,
            Err(_) if gone() => {
                log::warn!("process {pid} exited before its goroutine probes were attached");
                return Ok(());
            }
            // Its executable was readable a moment ago (the probe points come from it).
            Err(e) => {
                log::warn!("no goroutine events for process {pid}: {e}");
                return Ok(());
            }
        };
        // The entry exists before the probe fires: the kernel only looks it up.
        let zero = GoroutineStats::new(points.offsets);
        self.stats
            .insert(pid, zero, 0)
            .map_err(|source| BpfError::Map {
                name: "GOROUTINE_STATS",
                source,
            })?;
        let attached = program(ebpf)?.attach(
            UProbeAttachLocation::AbsoluteOffset(points.casgstatus),
            &points.exe,
            UProbeScope::OneProcess(scope),
        );
        match attached {
            Ok(_) => {
                self.traced.insert(
                    pid,
                    Traced {
                        last: Box::new(zero),
                        names,
                    },
                );
                Ok(())
            }
            Err(_) if gone() => {
                log::warn!("process {pid} exited before its goroutine probes were attached");
                let _ = self.stats.remove(&pid);
                Ok(())
            }
            Err(source) => {
                let _ = self.stats.remove(&pid);
                Err(BpfError::Program {
                    what: format!(
                        "uprobe on runtime.casgstatus of process {pid} (Go {})",
                        points.go_version
                    ),
                    source,
                })
            }
        }
    }

    /// Adds what each process's totals gained since the last reading to the store; forgets
    /// processes that exited (after their last reading).
    fn drain(&mut self, cx: &mut Context<'_>) {
        let mut gone = Vec::new();
        for (pid, traced) in &mut self.traced {
            let Ok(now) = self.stats.get(pid, 0) else {
                gone.push(*pid);
                continue;
            };
            let last = &mut traced.last;
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
            for reason in 0..MAX_WAIT_REASONS {
                let (n, b) = (&now.blocked[reason], &last.blocked[reason]);
                let count = n.count.wrapping_sub(b.count);
                if count == 0 {
                    continue;
                }
                let name = traced.names.wait_reason(reason);
                cx.store
                    .add_labelled_counter(*pid, BLOCKED_COUNT, &name, count);
                cx.store
                    .add_labelled_counter(*pid, BLOCKED_NS, &name, n.ns.wrapping_sub(b.ns));
            }
            **last = now;
            if cx.store.exited.contains(pid) {
                gone.push(*pid);
            }
        }
        self.drain_sites(cx, &gone);
        self.drain_parents(cx, &gone);
        for pid in gone {
            self.traced.remove(&pid);
            let _ = self.stats.remove(&pid);
        }
    }

    /// Creation sites: what each (process, site) count gained since the last reading;
    /// the entries of processes in `gone` are removed after it.
    fn drain_sites(&mut self, cx: &mut Context<'_>, gone: &[u32]) {
        let now: Vec<(SiteKey, u64)> = self.sites.iter().filter_map(Result::ok).collect();
        for (key, count) in now {
            let Some(traced) = self.traced.get_mut(&key.tgid) else {
                continue;
            };
            let (last, name) = self.last_sites.entry(key).or_insert_with(|| {
                let name = traced
                    .names
                    .creation_site(key.tgid, key.pc)
                    .unwrap_or_else(|| UNKNOWN_SITE.to_string());
                (0, name)
            });
            cx.store.add_labelled_counter(
                key.tgid,
                CREATED_BY_SITE,
                name,
                count.wrapping_sub(*last),
            );
            *last = count;
        }
        forget_gone(&mut self.sites, &mut self.last_sites, gone, |k| k.tgid);
    }

    /// Parent goroutines: what each (process, parent) count gained since the last reading
    /// (parents that created none since are left out); the entries of processes in `gone`
    /// are removed after it.
    fn drain_parents(&mut self, cx: &mut Context<'_>, gone: &[u32]) {
        let now: Vec<(ParentKey, u64)> = self.parents.iter().filter_map(Result::ok).collect();
        for (key, count) in now {
            if !self.traced.contains_key(&key.tgid) {
                continue;
            }
            let last = self.last_parents.entry(key).or_insert(0);
            let added = count.wrapping_sub(*last);
            *last = count;
            if added > 0 {
                let label = key.goid.to_string();
                cx.store
                    .add_labelled_counter(key.tgid, CREATED_BY_PARENT, &label, added);
            }
        }
        forget_gone(&mut self.parents, &mut self.last_parents, gone, |k| k.tgid);
    }
}

/// Removes the kernel entries of the processes in `gone`, with the last readings kept for
/// them (every entry of a traced process has been read, so `last` knows them all).
fn forget_gone<K: aya::Pod + Eq + std::hash::Hash, V>(
    map: &mut HashMap<MapData, K, u64>,
    last: &mut StdHashMap<K, V>,
    gone: &[u32],
    tgid: fn(&K) -> u32,
) {
    if gone.is_empty() {
        return;
    }
    last.retain(|key, _| {
        let stays = !gone.contains(&tgid(key));
        if !stays {
            let _ = map.remove(key);
        }
        stays
    });
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

    fn command_started(&mut self, ebpf: &mut Ebpf, pid: u32) -> Result<(), BpfError> {
        match self.command.take() {
            Some(points) => self.attach_process(ebpf, pid, &points),
            None => Ok(()),
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        super::sum_per_cpu(&self.counters, &counter::NAMES)
    }
}
