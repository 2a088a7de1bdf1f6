//! On-CPU sampling (`ebpf/src/probes/cpu.rs`): one cpu-clock perf event per online CPU
//! running the sampler, and readers for what it records: copied samples on the ring buffer
//! (unwound here, while the process exists), in-kernel counts, stack traces and loss
//! counters. Samples go into the store's `cpu` profile as raw frames.

use std::collections::HashMap as StdHashMap;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, StackTraceMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent,
    },
    Ebpf,
};
use loupe_ebpf::cpu::{
    counter, CpuConfig, SampleHeader, StackCount, StackCountKey, EVENT_STACK_SAMPLE,
    OFFSET_UNKNOWN, SAMPLE_NO_USER_STACK, STACK_COPY_BYTES, UNWIND_COPY, UNWIND_FRAME_POINTERS,
};

use super::take_map;
use crate::{
    aggregate::RawFrame,
    bpf::BpfError,
    engine::{read_record, Collector, Context, Feature, FeatureKind},
    process::UserAddress,
    profile::ProfileType,
    unwind::StackSnapshot,
};

/// The kernel features on-CPU sampling needs.
pub const FEATURES: [Feature; 1] = [Feature {
    kind: FeatureKind::PerfCpuClock,
    used_for: "sampling on-CPU stacks",
}];

/// How user stacks are recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Copy the top of the stack and unwind with `.eh_frame` / Go pclntab (correct without
    /// frame pointers).
    Auto,
    /// Frame pointers only, counted in the kernel: cheapest, loses frames where code omits
    /// frame pointers.
    Fp,
}

pub struct CpuCollector {
    config: CpuConfig,
    /// CPU time one sample stands for, in nanoseconds.
    period_ns: u64,
    config_map: Array<MapData, CpuConfig>,
    counts: HashMap<MapData, StackCountKey, StackCount>,
    /// By epoch (see `CpuConfig::epoch`).
    user_stacks: [StackTraceMap<MapData>; 2],
    kernel_stacks: [StackTraceMap<MapData>; 2],
    counters: PerCpuArray<MapData, u64>,
    /// Thread id -> second stack region to copy (see `SampleHeader::region2_addr`).
    stack_hints: HashMap<MapData, u32, u64>,
    /// Frames by (kernel, epoch, id), read once per epoch: an epoch's ids are not reused
    /// until its maps are cleared, and the cache with them.
    stack_cache: StdHashMap<(bool, u32, i32), Vec<u64>>,
    /// Stack ids that could no longer be read (their epoch was cleared before the sample
    /// that referred to them was handled): frames lost, counted.
    stacks_evicted: u64,
}

impl CpuCollector {
    /// Starts sampling every online CPU at `frequency_hz`.
    pub fn attach(
        ebpf: &mut Ebpf,
        frequency_hz: u64,
        unwind: UnwindMode,
    ) -> Result<CpuCollector, BpfError> {
        // Without them, samples of exiting/exec'ing tasks count as failed copies.
        let (task_mm, task_in_execve) = match crate::btf::kernel_task_layout() {
            Ok(layout) => (layout.mm, layout.in_execve_bit),
            Err(e) => {
                log::warn!("{e}: samples of exiting tasks will count as drop_stack_copy");
                (None, None)
            }
        };
        let config = CpuConfig {
            unwind: match unwind {
                UnwindMode::Auto => UNWIND_COPY,
                UnwindMode::Fp => UNWIND_FRAME_POINTERS,
            },
            stack_copy_bytes: STACK_COPY_BYTES as u32,
            epoch: 0,
            task_mm_offset: task_mm.unwrap_or(OFFSET_UNKNOWN),
            task_in_execve_bit: task_in_execve.unwrap_or(OFFSET_UNKNOWN),
        };
        let mut config_map: Array<MapData, CpuConfig> = take_map(ebpf, "CPU_CONFIG")?;
        config_map
            .set(0, config, 0)
            .map_err(|source| BpfError::Map {
                name: "CPU_CONFIG",
                source,
            })?;

        let program_error = |source| BpfError::Program {
            what: "perf_event program cpu_sample".into(),
            source,
        };
        let program: &mut PerfEvent = ebpf
            .program_mut("cpu_sample")
            .ok_or(aya::programs::ProgramError::NotLoaded)
            .map_err(program_error)?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        let cpus = aya::util::online_cpus().map_err(|(what, e)| BpfError::Program {
            what: format!("listing online CPUs ({what})"),
            source: aya::programs::ProgramError::IOError(e),
        })?;
        for cpu in cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    // A fixed period of CPU time: uniform sampling, unlike frequency mode,
                    // whose kernel-adjusted period biases shares and undershoots the rate.
                    SamplePolicy::Period(1_000_000_000 / frequency_hz.max(1)),
                    false,
                )
                .map_err(|source| BpfError::Program {
                    what: format!("cpu-clock perf event on CPU {cpu}"),
                    source,
                })?;
        }
        Ok(CpuCollector {
            config,
            period_ns: 1_000_000_000 / frequency_hz.max(1),
            config_map,
            counts: take_map(ebpf, "CPU_COUNTS")?,
            user_stacks: [
                take_map(ebpf, "USER_STACKS_0")?,
                take_map(ebpf, "USER_STACKS_1")?,
            ],
            kernel_stacks: [
                take_map(ebpf, "KERNEL_STACKS_0")?,
                take_map(ebpf, "KERNEL_STACKS_1")?,
            ],
            counters: take_map(ebpf, "COUNTERS")?,
            stack_hints: take_map(ebpf, "STACK_HINTS")?,
            stack_cache: StdHashMap::new(),
            stacks_evicted: 0,
        })
    }

    /// Removes and returns the counts of the retired epoch: the kernel stopped incrementing
    /// them a full drain period ago, so nothing is lost between reading and removing.
    /// Their stack ids are still readable until [`Self::rotate`].
    pub fn take_retired_counts(&mut self) -> Vec<(StackCountKey, StackCount)> {
        let current = self.config.epoch;
        self.take_counts_where(|key| key.epoch != current)
    }

    /// At the end of a profile: every count, of both epochs.
    pub fn take_all_counts(&mut self) -> Vec<(StackCountKey, StackCount)> {
        self.take_counts_where(|_| true)
    }

    fn take_counts_where(
        &mut self,
        wanted: impl Fn(&StackCountKey) -> bool,
    ) -> Vec<(StackCountKey, StackCount)> {
        let entries: Vec<_> = self
            .counts
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, _)| wanted(key))
            .collect();
        for (key, _) in &entries {
            let _ = self.counts.remove(key);
        }
        entries
    }

    /// Clears the retired epoch's stack maps (read by now: its last samples were handled
    /// before its counts were taken) and makes it current; the current one retires.
    /// Called once per drain period, after `take_retired_counts`.
    pub fn rotate(&mut self) -> Result<(), BpfError> {
        let retired = self.config.epoch ^ 1;
        for kernel in [true, false] {
            let map = if kernel {
                &mut self.kernel_stacks[retired as usize]
            } else {
                &mut self.user_stacks[retired as usize]
            };
            let ids: Vec<u32> = map.stack_ids().filter_map(Result::ok).collect();
            for id in ids {
                let _ = map.remove(&id);
            }
        }
        self.stack_cache
            .retain(|(_, epoch, _), _| *epoch != retired);
        self.config.epoch = retired;
        self.config_map
            .set(0, self.config, 0)
            .map_err(|source| BpfError::Map {
                name: "CPU_CONFIG",
                source,
            })
    }

    /// Frames of a stack id of `epoch` (instruction pointer first); empty for "no stack" ids.
    pub fn stack(&mut self, kernel: bool, epoch: u32, id: i32) -> &[u64] {
        if id < 0 || epoch > 1 {
            return &[];
        }
        let map = if kernel {
            &self.kernel_stacks[epoch as usize]
        } else {
            &self.user_stacks[epoch as usize]
        };
        let evicted = &mut self.stacks_evicted;
        self.stack_cache
            .entry((kernel, epoch, id))
            .or_insert_with(|| match map.get(&(id as u32), 0) {
                Ok(trace) => trace.frames().iter().map(|f| f.ip).collect(),
                Err(_) => {
                    *evicted += 1;
                    Vec::new()
                }
            })
    }

    /// Asks for the stack memory at `addr` (and above) in the next samples of thread `tid`:
    /// its unwinds need it (see `SampleHeader::region2_addr`). The map is LRU: the hints of
    /// threads that are gone make room for new ones.
    pub fn hint_stack_region(&mut self, tid: u32, addr: u64) {
        if let Err(e) = self.stack_hints.insert(tid, addr, 0) {
            log::debug!("stack hint for thread {tid}: {e}");
        }
    }

    /// Loss and sample counters, summed over CPUs, by name.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut all = super::sum_per_cpu(&self.counters, &counter::NAMES);
        all.push(("drop_stack_evicted".to_string(), self.stacks_evicted));
        all
    }
}

/// A copied sample: its header and the stack bytes that were copied.
fn parse_sample(record: &[u8]) -> Option<(SampleHeader, &[u8])> {
    let header: SampleHeader = read_record(record)?;
    let stack = record.get(size_of::<SampleHeader>()..)?;
    let len = (header.stack_len as usize).min(stack.len());
    Some((header, &stack[..len]))
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn handles(&self, kind: u32) -> bool {
        kind == EVENT_STACK_SAMPLE
    }

    fn on_record(&mut self, _kind: u32, record: &[u8], cx: &mut Context<'_>) {
        if let Some((header, stack)) = parse_sample(record) {
            self.on_copied_sample(&header, stack, cx);
        }
    }

    fn tick(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        let counts = self.take_retired_counts();
        self.add_counts(counts, cx);
        self.rotate()
    }

    fn drain_sealed(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        // The epoch `seal` (a tick) retired: its stacks stay readable until the next rotation.
        let counts = self.take_retired_counts();
        self.add_counts(counts, cx);
        Ok(())
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        let counts = self.take_all_counts();
        self.add_counts(counts, cx);
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        CpuCollector::counters(self)
    }
}

impl CpuCollector {
    /// Unwinds a copied sample against its process's mappings into raw frames.
    fn on_copied_sample(&mut self, header: &SampleHeader, stack: &[u8], cx: &mut Context<'_>) {
        let mut frames = self.kernel_frames(header.epoch, header.kernel_stack_id);
        // A task with no user address space (exiting, or in execve): kernel frames only.
        let comm = if header.flags & SAMPLE_NO_USER_STACK != 0 {
            super::stacks::process_name(cx.processes, header.pid, &header.comm)
        } else {
            let snapshot = StackSnapshot::of_sample(header, stack);
            let user = super::stacks::user_frames_of(
                cx.processes,
                header.pid,
                header.tid,
                &header.comm,
                &snapshot,
            );
            if let Some(addr) = user.missing {
                self.hint_stack_region(header.tid, addr & !0xfff);
            }
            frames.extend(user.frames);
            user.comm
        };
        cx.store.profile(ProfileType::Cpu).add(
            header.pid,
            header.tid,
            &comm,
            frames,
            &[1, self.period_ns],
        );
    }

    /// Adds in-kernel counts; their stack ids stay readable until the next rotation.
    fn add_counts(&mut self, counts: Vec<(StackCountKey, StackCount)>, cx: &mut Context<'_>) {
        for (key, value) in counts {
            let mut frames = self.kernel_frames(key.epoch, key.kernel_stack_id);
            let user = self.stack(false, key.epoch, key.user_stack_id).to_vec();
            if !user.is_empty() {
                match cx.processes.get(key.pid) {
                    Some(process) => {
                        frames.extend(super::stacks::user_frames(&user, |a| process.resolve(a)))
                    }
                    None => frames.extend(super::stacks::user_frames(&user, UserAddress::unknown)),
                }
            }
            let comm = super::stacks::process_name(cx.processes, key.pid, &value.comm);
            cx.store.profile(ProfileType::Cpu).add(
                key.pid,
                key.tid,
                &comm,
                frames,
                &[value.count, value.count.saturating_mul(self.period_ns)],
            );
        }
    }

    /// Raw frames of a kernel stack id, leaf first.
    fn kernel_frames(&mut self, epoch: u32, stack_id: i32) -> Vec<RawFrame> {
        self.stack(true, epoch, stack_id)
            .iter()
            .map(|&a| RawFrame::Kernel(a))
            .collect()
    }
}
