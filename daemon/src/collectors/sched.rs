//! Scheduling (`ebpf/src/probes/sched.rs`): BTF tracepoints on `sched_switch` and
//! `sched_wakeup`, and readers for what they record: off-CPU time by stack (with one stack
//! copy per new key on the shared event ring buffer), run-queue latency histograms per
//! process, per-thread scheduling totals, and loss counters.
//!
//! # Generations, and why reading loses nothing
//! Every map the kernel adds to comes in two (`<NAME>_0`, `<NAME>_1`); the kernel adds to
//! the one of the current generation (`generation & 1`). [`SchedCollector::rotate`] makes
//! the other one current. So a caller that, once per period,
//! 1. handles every pending ring-buffer record ([`parse_event`]),
//! 2. takes the retired maps ([`SchedCollector::take_retired`]), and
//! 3. rotates,
//!
//! drains maps the kernel stopped writing a full period earlier: no increment can land
//! between reading an entry and deleting it (a program that read the old generation just
//! before a rotation finishes within microseconds). Off-CPU time is added at wakeup under
//! the key of the switch-out that blocked, into the map current at the wakeup: a thread
//! blocked for minutes still adds its time exactly, under a key whose stacks userspace
//! resolved long ago (keep them by key: see [`SchedCollector::stack`]).

use std::collections::HashMap as StdHashMap;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, StackTraceMap},
    programs::BtfTracePoint,
    Btf, Ebpf,
};
use loupe_ebpf::sched::{
    counter, OffCpuHeader, OffCpuKey, OffCpuValue, RunqHistogram, SchedConfig, ThreadSchedStats,
    EVENT_OFFCPU_STACK, SCHED_OFFCPU_STACKS, SCHED_RUNQ_STATS,
};

use super::take_map;
use crate::{
    aggregate::RawFrame,
    bpf::BpfError,
    btf::KERNEL_BTF,
    engine::{Collector, Context, Feature, FeatureKind, HistogramKey},
    profile::ProfileType,
    stat::{counter as stat_counter, RUNQUEUE_HISTOGRAM},
    unwind::StackSnapshot,
};

/// The BTF tracepoints this capability attaches (program and tracepoint share the name),
/// with what each is for (`loupe check` reports them).
pub const FEATURES: [Feature; 3] = [
    Feature {
        kind: FeatureKind::BtfTracepoint {
            name: "sched_switch",
        },
        used_for: "off-CPU and run-queue profiles, per-thread scheduling totals (loupe stat)",
    },
    Feature {
        kind: FeatureKind::BtfTracepoint {
            name: "sched_wakeup",
        },
        used_for: "ending blocked time: off-CPU time and run-queue waits after sleeps",
    },
    Feature {
        kind: FeatureKind::BtfTracepoint {
            name: "sched_wakeup_new",
        },
        used_for: "tracking threads from their first run, not their first switch-out",
    },
];

/// What to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedOptions {
    /// Off-CPU time by (thread, kernel stack, user stack), with stack copies.
    pub offcpu_stacks: bool,
    /// Run-queue histograms per process and totals per thread.
    pub runq_stats: bool,
    /// With `offcpu_stacks`: also count each stack's blocks, in a `Lock`-typed profile
    /// (blocks, blocked ns) beside the off-CPU time (for `loupe debug-sched`).
    pub offcpu_blocks: bool,
}

/// A new off-CPU key's user stack, from the event ring buffer.
#[derive(Debug)]
pub struct OffCpuStack<'a> {
    pub header: OffCpuHeader,
    /// `header.stack_len` bytes from `header.key.user_sp` up.
    pub stack: &'a [u8],
}

impl<'a> OffCpuStack<'a> {
    /// The copy as the unwinder reads it (off-CPU copies have no second region).
    pub fn snapshot(&self) -> StackSnapshot<'a> {
        StackSnapshot {
            ip: self.header.regs.ip,
            sp: self.header.regs.sp,
            bp: self.header.regs.bp,
            stack: self.stack,
            region2: None,
            region2_used: Default::default(),
        }
    }
}

/// Parses a ring-buffer record; None for records of other kinds (CPU samples, process
/// events) and for truncated ones.
pub fn parse_event(record: &[u8]) -> Option<OffCpuStack<'_>> {
    let kind = u32::from_ne_bytes(record.get(..4)?.try_into().ok()?);
    if kind != EVENT_OFFCPU_STACK {
        return None;
    }
    let header_len = size_of::<OffCpuHeader>();
    let header_bytes = record.get(..header_len)?;
    // SAFETY: OffCpuHeader is plain old data, and the length was checked.
    let header: OffCpuHeader = unsafe { std::ptr::read_unaligned(header_bytes.as_ptr().cast()) };
    let stack = record.get(header_len..)?;
    let len = (header.stack_len as usize).min(stack.len());
    Some(OffCpuStack {
        header,
        stack: &stack[..len],
    })
}

/// What one drain took out of the kernel's maps.
#[derive(Debug, Default)]
pub struct SchedDrain {
    /// Blocked time by key. Keys with a zero count were seen blocking but not woken in the
    /// drained period (every key shows up so in its own generation's drain, at least).
    pub offcpu: Vec<(OffCpuKey, OffCpuValue)>,
    /// Per-thread totals by tid, for the drained period.
    pub threads: Vec<(u32, ThreadSchedStats)>,
    /// Run-queue latency histograms by tgid, for the drained period.
    pub runq_histograms: Vec<(u32, Box<RunqHistogram>)>,
}

pub struct SchedCollector {
    config: SchedConfig,
    config_map: Array<MapData, SchedConfig>,
    /// By `generation & 1`.
    offcpu_counts: [HashMap<MapData, OffCpuKey, OffCpuValue>; 2],
    thread_stats: [HashMap<MapData, u32, ThreadSchedStats>; 2],
    runq_histograms: [HashMap<MapData, u32, RunqHistogram>; 2],
    user_stacks: [StackTraceMap<MapData>; 2],
    kernel_stacks: [StackTraceMap<MapData>; 2],
    counters: PerCpuArray<MapData, u64>,
    /// Frames by (kernel, generation, id), read once: a generation's ids are valid until
    /// its maps are cleared, and its cache entries go with them.
    stack_cache: StdHashMap<(bool, u32, i32), Vec<u64>>,
    /// Stack ids asked for after their generation's maps were cleared: frames lost.
    stacks_evicted: u64,
}

impl SchedCollector {
    /// Configures the maps, then loads and attaches the BTF tracepoints.
    pub fn attach(ebpf: &mut Ebpf, options: SchedOptions) -> Result<SchedCollector, BpfError> {
        // Without the layout, new threads are tracked from their first switch-out: their
        // first run-queue wait and time slice are missed, nothing else.
        let layout = crate::btf::kernel_task_layout();
        let (task_pid_offset, task_tgid_offset) = match layout {
            Ok(layout) => (layout.pid, layout.tgid),
            Err(e) => {
                log::warn!("new threads are tracked from their first switch-out: {e}");
                (0, 0)
            }
        };
        let config = SchedConfig {
            generation: 0,
            flags: if options.offcpu_stacks {
                SCHED_OFFCPU_STACKS
            } else {
                0
            } | if options.runq_stats {
                SCHED_RUNQ_STATS
            } else {
                0
            },
            stack_copy_bytes: loupe_ebpf::sched::OFFCPU_STACK_COPY_BYTES as u32,
            task_pid_offset,
            task_tgid_offset,
            _reserved: 0,
        };
        let mut config_map: Array<MapData, SchedConfig> = take_map(ebpf, "SCHED_CONFIG")?;
        config_map
            .set(0, config, 0)
            .map_err(|source| BpfError::Map {
                name: "SCHED_CONFIG",
                source,
            })?;
        let collector = SchedCollector {
            config,
            config_map,
            offcpu_counts: [
                take_map(ebpf, "OFFCPU_COUNTS_0")?,
                take_map(ebpf, "OFFCPU_COUNTS_1")?,
            ],
            thread_stats: [
                take_map(ebpf, "THREAD_STATS_0")?,
                take_map(ebpf, "THREAD_STATS_1")?,
            ],
            runq_histograms: [
                take_map(ebpf, "RUNQ_HIST_0")?,
                take_map(ebpf, "RUNQ_HIST_1")?,
            ],
            user_stacks: [
                take_map(ebpf, "OFFCPU_USER_STACKS_0")?,
                take_map(ebpf, "OFFCPU_USER_STACKS_1")?,
            ],
            kernel_stacks: [
                take_map(ebpf, "OFFCPU_KERNEL_STACKS_0")?,
                take_map(ebpf, "OFFCPU_KERNEL_STACKS_1")?,
            ],
            counters: take_map(ebpf, "SCHED_COUNTERS")?,
            stack_cache: StdHashMap::new(),
            stacks_evicted: 0,
        };
        let btf = Btf::from_sys_fs().map_err(|e| BpfError::Program {
            what: format!("reading kernel BTF ({KERNEL_BTF}) for the scheduling tracepoints"),
            source: aya::programs::ProgramError::Btf(e),
        })?;
        for feature in FEATURES {
            let FeatureKind::BtfTracepoint { name } = feature.kind else {
                continue;
            };
            load_program(ebpf, name, &btf)?
                .attach()
                .map_err(|source| BpfError::Program {
                    what: format!("attaching BTF tracepoint {name}"),
                    source,
                })?;
        }
        Ok(collector)
    }

    /// Removes and returns what the retired generation's maps hold: the kernel stopped
    /// writing them at the last [`Self::rotate`], which must be a full period ago (or, at a
    /// window boundary, long enough for programs already running to return: what they
    /// add after this is taken at the next drain). The
    /// retired generation's stack ids stay readable until the next `rotate`.
    pub fn take_retired(&mut self) -> SchedDrain {
        let retired = (self.config.generation & 1) ^ 1;
        let mut drain = SchedDrain::default();
        self.drain_into(retired as usize, &mut drain);
        drain
    }

    /// Makes the programs record nothing more (they stay attached, and return at once):
    /// call it before [`Self::take_all`], so nothing is added while the maps are read.
    pub fn stop(&mut self) -> Result<(), BpfError> {
        self.config.flags = 0;
        self.config_map
            .set(0, self.config, 0)
            .map_err(|source| BpfError::Map {
                name: "SCHED_CONFIG",
                source,
            })
    }

    /// At the end: everything both generations' maps hold (after [`Self::stop`], or accept
    /// that increments made while this runs may be missed).
    pub fn take_all(&mut self) -> SchedDrain {
        let mut drain = SchedDrain::default();
        for index in [0, 1] {
            self.drain_into(index, &mut drain);
        }
        drain
    }

    fn drain_into(&mut self, index: usize, drain: &mut SchedDrain) {
        drain
            .offcpu
            .extend(take_entries(&mut self.offcpu_counts[index]));
        drain
            .threads
            .extend(take_entries(&mut self.thread_stats[index]));
        drain.runq_histograms.extend(
            take_entries(&mut self.runq_histograms[index])
                .into_iter()
                .map(|(tgid, h)| (tgid, Box::new(h))),
        );
    }

    /// Clears the retired generation's stack maps and makes it current under a new
    /// generation number. Before calling it, handle the pending ring-buffer records and
    /// [`Self::take_retired`]: they are the last to refer to those stacks.
    pub fn rotate(&mut self) -> Result<(), BpfError> {
        let next = self.config.generation.wrapping_add(1);
        let index = (next & 1) as usize;
        for map in [&mut self.user_stacks[index], &mut self.kernel_stacks[index]] {
            let ids: Vec<u32> = map.stack_ids().filter_map(Result::ok).collect();
            for id in ids {
                let _ = map.remove(&id);
            }
        }
        // Ids of the generation now reusing these maps would alias: drop what was cached.
        let retired = self.config.generation.wrapping_sub(1);
        self.stack_cache.retain(|(_, g, _), _| *g != retired);
        self.config.generation = next;
        self.config_map
            .set(0, self.config, 0)
            .map_err(|source| BpfError::Map {
                name: "SCHED_CONFIG",
                source,
            })
    }

    /// Frames (leaf first) of a stack id of `generation`; empty for "no stack" ids and for
    /// generations whose maps were cleared (counted as `drop_sched_stack_evicted`). Ids of
    /// the current and the retired generation are readable; resolve the stacks of a key
    /// when its copy event or its first drain arrives, and keep them by key.
    pub fn stack(&mut self, kernel: bool, generation: u32, id: i32) -> &[u64] {
        if id < 0 {
            return &[];
        }
        let live = generation == self.config.generation
            || generation == self.config.generation.wrapping_sub(1);
        let index = (generation & 1) as usize;
        let map = if kernel {
            &self.kernel_stacks[index]
        } else {
            &self.user_stacks[index]
        };
        let evicted = &mut self.stacks_evicted;
        self.stack_cache
            .entry((kernel, generation, id))
            .or_insert_with(|| match live.then(|| map.get(&(id as u32), 0)) {
                Some(Ok(trace)) => trace.frames().iter().map(|f| f.ip).collect(),
                _ => {
                    *evicted += 1;
                    Vec::new()
                }
            })
    }

    /// Event and loss counters, summed over CPUs, by name (losses start with `drop_`).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut all = super::sum_per_cpu(&self.counters, &counter::NAMES);
        all.push(("drop_sched_stack_evicted".to_string(), self.stacks_evicted));
        all
    }
}

/// Loads one of the scheduling programs against the kernel's BTF (`loupe check` uses it
/// to prove the verifier accepts them, without attaching).
pub fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    btf: &Btf,
) -> Result<&'a mut BtfTracePoint, BpfError> {
    let what = || format!("BTF tracepoint {name}");
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| BpfError::Program {
            what: what(),
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| BpfError::Program {
            what: what(),
            source,
        })?;
    program
        .load(name, btf)
        .map_err(|source| BpfError::Program {
            what: what(),
            source,
        })?;
    Ok(program)
}

/// Reads then deletes every entry of a map the kernel no longer writes.
fn take_entries<K: aya::Pod, V: aya::Pod>(map: &mut HashMap<MapData, K, V>) -> Vec<(K, V)> {
    let entries: Vec<(K, V)> = map.iter().filter_map(Result::ok).collect();
    for (key, _) in &entries {
        let _ = map.remove(key);
    }
    entries
}

/// Off-CPU keys whose stacks were resolved, kept this many ticks after their last use: a
/// thread blocked longer than this (15 minutes) gets its time under its kernel stack only.
const RESOLVED_KEY_TICKS: u64 = 3600;
/// At most this many resolved keys are kept (oldest dropped first, counted).
const MAX_RESOLVED_KEYS: usize = 65536;

/// The engine-facing scheduling collector: resolves each new off-CPU key's stacks once, and
/// moves drained totals into the store.
pub struct SchedEngineCollector {
    inner: SchedCollector,
    /// Whether blocks are counted per stack too (`SchedOptions::offcpu_blocks`).
    blocks: bool,
    /// Raw frames and name of each off-CPU key seen, with the tick it was last used.
    resolved: StdHashMap<OffCpuKey, (Vec<RawFrame>, String, u64)>,
    tick: u64,
    resolved_evicted: u64,
}

impl SchedEngineCollector {
    pub fn attach(ebpf: &mut Ebpf, options: SchedOptions) -> Result<Self, BpfError> {
        Ok(SchedEngineCollector {
            blocks: options.offcpu_blocks,
            inner: SchedCollector::attach(ebpf, options)?,
            resolved: StdHashMap::new(),
            tick: 0,
            resolved_evicted: 0,
        })
    }

    fn kernel_frames(&mut self, generation: u32, id: i32) -> Vec<RawFrame> {
        self.inner
            .stack(true, generation, id)
            .iter()
            .map(|&a| RawFrame::Kernel(a))
            .collect()
    }

    fn add_drain(&mut self, drain: SchedDrain, cx: &mut Context<'_>) {
        let mut runq_sums: StdHashMap<u32, u64> = StdHashMap::new();
        for (tid, t) in &drain.threads {
            let comm = super::stacks::process_name(cx.processes, t.pid, &t.comm);
            for (name, value) in [
                (stat_counter::ONCPU_NS, t.oncpu_ns),
                (stat_counter::OFFCPU_NS, t.offcpu_ns),
                (stat_counter::RUNQUEUE_WAIT_NS, t.runq_wait_ns),
                (stat_counter::RUNQUEUE_WAITS, t.runq_waits),
                (stat_counter::VOLUNTARY_SWITCHES, t.voluntary_switches),
                (stat_counter::INVOLUNTARY_SWITCHES, t.involuntary_switches),
            ] {
                cx.store.add_thread_counter(t.pid, *tid, &comm, name, value);
            }
            *runq_sums.entry(t.pid).or_default() += t.runq_wait_ns;
        }
        for (pid, histogram) in &drain.runq_histograms {
            let sum = runq_sums.get(pid).copied().unwrap_or(0);
            cx.store
                .histogram(HistogramKey {
                    name: RUNQUEUE_HISTOGRAM,
                    pid: *pid,
                })
                .add_buckets(&histogram.buckets, sum);
        }
        for (key, value) in drain.offcpu {
            if value.total_ns == 0 {
                continue;
            }
            let (frames, comm) = match self.resolved.get_mut(&key) {
                Some((frames, comm, used)) => {
                    *used = self.tick;
                    (frames.clone(), comm.clone())
                }
                // No copy was handled for this key (its copy was lost, counted by the
                // kernel): its kernel stack still tells where it blocked.
                None => {
                    let frames = self.kernel_frames(key.generation, key.kernel_stack_id);
                    let comm = super::stacks::process_name(cx.processes, key.pid, &[0; 16]);
                    (frames, comm)
                }
            };
            if self.blocks {
                cx.store.profile(ProfileType::Lock).add(
                    key.pid,
                    key.tid,
                    &comm,
                    frames.clone(),
                    &[value.count, value.total_ns],
                );
            }
            cx.store.profile(ProfileType::OffCpu).add(
                key.pid,
                key.tid,
                &comm,
                frames,
                &[value.total_ns],
            );
        }
    }

    fn evict_resolved(&mut self) {
        let horizon = self.tick.saturating_sub(RESOLVED_KEY_TICKS);
        let before = self.resolved.len();
        self.resolved.retain(|_, (_, _, used)| *used >= horizon);
        if self.resolved.len() > MAX_RESOLVED_KEYS {
            let mut ages: Vec<u64> = self.resolved.values().map(|(_, _, used)| *used).collect();
            ages.sort_unstable();
            let cut = ages[self.resolved.len() - MAX_RESOLVED_KEYS];
            self.resolved.retain(|_, (_, _, used)| *used > cut);
        }
        self.resolved_evicted += (before - self.resolved.len()) as u64;
    }
}

impl Collector for SchedEngineCollector {
    fn name(&self) -> &'static str {
        "sched"
    }

    fn handles(&self, kind: u32) -> bool {
        kind == EVENT_OFFCPU_STACK
    }

    fn on_record(&mut self, _kind: u32, record: &[u8], cx: &mut Context<'_>) {
        let Some(event) = parse_event(record) else {
            return;
        };
        let key = event.header.key;
        let mut frames = self.kernel_frames(key.generation, key.kernel_stack_id);
        let snapshot = event.snapshot();
        let user = super::stacks::user_frames_of(
            cx.processes,
            key.pid,
            key.tid,
            &event.header.comm,
            &snapshot,
        );
        frames.extend(user.frames);
        let comm = user.comm;
        self.resolved.insert(key, (frames, comm, self.tick));
    }

    fn tick(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        self.tick += 1;
        let drain = self.inner.take_retired();
        self.add_drain(drain, cx);
        self.evict_resolved();
        self.inner.rotate()
    }

    fn drain_sealed(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        // The generation retired by `seal` (a tick): its stacks stay readable until the next
        // rotation, and whatever the kernel still adds to it is taken by the next tick.
        let drain = self.inner.take_retired();
        self.add_drain(drain, cx);
        Ok(())
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        // Nothing is added while both generations' maps are read.
        self.inner.stop()?;
        let drain = self.inner.take_all();
        self.add_drain(drain, cx);
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut all = self.inner.counters();
        all.push((
            "drop_sched_resolved_key_evicted".into(),
            self.resolved_evicted,
        ));
        all
    }
}

#[cfg(test)]
fn histogram_quantile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in buckets
        .iter()
        .enumerate()
        .take(loupe_ebpf::histogram::HIST_BUCKETS as usize)
    {
        seen += n;
        if seen >= wanted {
            return Some(loupe_ebpf::histogram::bucket_upper_bound(i as u32));
        }
    }
    Some(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loupe_ebpf::{
        cpu::UserRegs,
        histogram::{bucket_lower_bound, latency_bucket},
    };

    fn record(header: &OffCpuHeader, stack: &[u8]) -> Vec<u8> {
        // SAFETY: OffCpuHeader is plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (header as *const OffCpuHeader).cast::<u8>(),
                size_of::<OffCpuHeader>(),
            )
        };
        [bytes, stack].concat()
    }

    #[test]
    fn parses_an_offcpu_stack_record_and_ignores_others() {
        let header = OffCpuHeader {
            kind: EVENT_OFFCPU_STACK,
            stack_len: 4,
            key: OffCpuKey {
                pid: 10,
                tid: 11,
                kernel_stack_id: 3,
                user_stack_id: -1,
                user_ip: 0x401000,
                user_sp: 0x7ff0,
                generation: 7,
                _reserved: 0,
            },
            regs: UserRegs {
                ip: 0x401000,
                sp: 0x7ff0,
                bp: 0,
            },
            comm: *b"offcpu\0\0\0\0\0\0\0\0\0\0",
        };
        // The ring buffer pads records: bytes past stack_len are not stack.
        let bytes = record(&header, &[1, 2, 3, 4, 0, 0, 0, 0]);
        let event = parse_event(&bytes).expect("an off-CPU record");
        assert_eq!(event.header, header);
        assert_eq!(event.stack, &[1, 2, 3, 4]);

        // CPU samples (kind 16) and process events (1, 2) belong to other readers.
        let mut other = bytes.clone();
        other[..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(parse_event(&other).is_none());
        // Truncated records are refused, not read past their end.
        assert!(parse_event(&bytes[..size_of::<OffCpuHeader>() - 1]).is_none());
        assert!(parse_event(&[]).is_none());
        // A stack_len larger than the record is cut to what is there.
        let mut long = header;
        long.stack_len = 100;
        assert_eq!(parse_event(&record(&long, &[9; 8])).unwrap().stack.len(), 8);
    }

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let mut h = RunqHistogram::default();
        assert_eq!(histogram_quantile(&h.buckets, 0.5), None);
        // 90 waits of 1 us, 10 of 1 ms.
        h.buckets[latency_bucket(1_000) as usize] = 90;
        h.buckets[latency_bucket(1_000_000) as usize] = 10;
        let p50 = histogram_quantile(&h.buckets, 0.5).unwrap();
        assert!(p50 > 1_000 && p50 <= 1_000 + 1_000 / 8, "{p50}");
        let p99 = histogram_quantile(&h.buckets, 0.99).unwrap();
        assert!(p99 > 1_000_000 && p99 <= 1_000_000 + 1_000_000 / 8, "{p99}");
        assert_eq!(
            histogram_quantile(&h.buckets, 0.9),
            Some(bucket_lower_bound(latency_bucket(1_000) + 1))
        );
    }

    /// The bucket math both sides share (`loupe_ebpf::histogram`), tested here because the
    /// kernel crate has no host test run.
    mod histogram {
        use loupe_ebpf::histogram::*;

        #[test]
        fn msb_matches_leading_zeros() {
            for shift in 0..64 {
                for x in [1u64 << shift, (1u64 << shift) | 1, u64::MAX >> (63 - shift)] {
                    assert_eq!(
                        loupe_ebpf::histogram::most_significant_bit(x),
                        63 - x.leading_zeros(),
                        "{x:#x}"
                    );
                }
            }
        }

        #[test]
        fn bounds_are_exact_inverses_of_bucketing() {
            for i in 0..HIST_BUCKETS {
                let lo = bucket_lower_bound(i);
                assert_eq!(latency_bucket(lo), i, "lower bound of {i}");
                if i + 1 < HIST_BUCKETS {
                    let hi = bucket_upper_bound(i);
                    assert!(hi > lo);
                    assert_eq!(latency_bucket(hi - 1), i, "last value of {i}");
                    assert_eq!(latency_bucket(hi), i + 1, "first value after {i}");
                }
            }
        }

        #[test]
        fn small_values_have_their_own_buckets_and_widths_stay_within_an_eighth() {
            for ns in 0..16 {
                assert_eq!(latency_bucket(ns), ns as u32);
            }
            for i in 8..HIST_BUCKETS - 1 {
                let (lo, hi) = (bucket_lower_bound(i), bucket_upper_bound(i));
                assert!((hi - lo) * 8 <= lo, "bucket {i}: [{lo}, {hi})");
            }
        }

        #[test]
        fn covers_2_to_the_40_and_clamps_beyond() {
            assert_eq!(latency_bucket((1 << 40) - 1), HIST_BUCKETS - 1);
            assert_eq!(
                bucket_lower_bound(HIST_BUCKETS - 1),
                (1u64 << 40) - (1 << 36)
            );
            assert_eq!(latency_bucket(1 << 40), HIST_BUCKETS - 1);
            assert_eq!(latency_bucket(u64::MAX), HIST_BUCKETS - 1);
            assert_eq!(bucket_upper_bound(HIST_BUCKETS - 1), u64::MAX);
            // 1 ms = 0xF4240: msb 19, next three bits 0b111.
            assert_eq!(latency_bucket(1_000_000), (19 - 2) * 8 + 7);
        }
    }
}
