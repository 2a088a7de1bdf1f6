//! On-CPU sampling (`ebpf/src/probes/cpu.rs`): one cpu-clock perf event per online CPU
//! running the sampler, and readers for what it records: copied samples and process events
//! on the ring buffer, in-kernel counts, stack traces and loss counters.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd, OwnedFd},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent,
    },
    Ebpf,
};
use loupe_ebpf::{
    cpu::{
        counter, CpuConfig, SampleHeader, StackCount, StackCountKey, EVENT_STACK_SAMPLE,
        OFFSET_UNKNOWN, STACK_COPY_BYTES, UNWIND_COPY, UNWIND_FRAME_POINTERS,
    },
    targets::{ProcessEvent, EVENT_PROCESS_EXEC, EVENT_PROCESS_EXIT},
};

use super::take_map;
use crate::bpf::BpfError;

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

/// One record from the event ring buffer.
pub enum CpuEvent<'a> {
    Sample {
        header: SampleHeader,
        stack: &'a [u8],
    },
    ProcessExec(u32),
    ProcessExit(u32),
}

pub struct CpuCollector {
    config: CpuConfig,
    config_map: Array<MapData, CpuConfig>,
    events: RingBuf<MapData>,
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
        let task = crate::btf::TaskOffsets::from_kernel().unwrap_or_else(|e| {
            log::warn!("{e}: samples of exiting tasks will count as drop_stack_copy");
            crate::btf::TaskOffsets {
                mm_bytes: None,
                in_execve_bit: None,
            }
        });
        let config = CpuConfig {
            unwind: match unwind {
                UnwindMode::Auto => UNWIND_COPY,
                UnwindMode::Fp => UNWIND_FRAME_POINTERS,
            },
            stack_copy_bytes: STACK_COPY_BYTES as u32,
            epoch: 0,
            task_mm_offset: task.mm_bytes.unwrap_or(OFFSET_UNKNOWN),
            task_in_execve_bit: task.in_execve_bit.unwrap_or(OFFSET_UNKNOWN),
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
            config_map,
            events: take_map(ebpf, "EVENTS")?,
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

    /// A descriptor that is readable when the ring buffer has records.
    pub fn events_fd(&self) -> std::io::Result<OwnedFd> {
        self.events.as_fd().try_clone_to_owned()
    }

    /// Hands every pending ring-buffer record to `handle`, in order.
    pub fn read_events(&mut self, mut handle: impl FnMut(&mut Self, CpuEvent<'_>)) -> usize {
        let mut n = 0;
        // Records are copied out so `handle` may read the stack maps through `self`.
        let mut record = Vec::new();
        loop {
            record.clear();
            match self.events.next() {
                Some(item) => record.extend_from_slice(&item),
                None => break,
            }
            n += 1;
            if let Some(event) = parse_event(&record) {
                handle(self, event);
            }
        }
        n
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
        (0..counter::COUNT)
            .map(|i| {
                let total = self
                    .counters
                    .get(&i, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (counter::NAMES[i as usize].to_string(), total)
            })
            .chain([("drop_stack_evicted".to_string(), self.stacks_evicted)])
            .collect()
    }
}

fn parse_event(record: &[u8]) -> Option<CpuEvent<'_>> {
    let kind = u32::from_ne_bytes(record.get(..4)?.try_into().ok()?);
    match kind {
        EVENT_STACK_SAMPLE => {
            let header_len = size_of::<SampleHeader>();
            let header_bytes = record.get(..header_len)?;
            // SAFETY: SampleHeader is plain old data, and the length was checked.
            let header: SampleHeader =
                unsafe { std::ptr::read_unaligned(header_bytes.as_ptr().cast()) };
            let stack = record.get(header_len..)?;
            let len = (header.stack_len as usize).min(stack.len());
            Some(CpuEvent::Sample {
                header,
                stack: &stack[..len],
            })
        }
        EVENT_PROCESS_EXEC | EVENT_PROCESS_EXIT => {
            let bytes = record.get(..size_of::<ProcessEvent>())?;
            // SAFETY: ProcessEvent is plain old data, and the length was checked.
            let event: ProcessEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Some(if kind == EVENT_PROCESS_EXEC {
                CpuEvent::ProcessExec(event.pid)
            } else {
                CpuEvent::ProcessExit(event.pid)
            })
        }
        _ => None,
    }
}
