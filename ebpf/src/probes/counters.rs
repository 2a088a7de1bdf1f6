//! Per-CPU counters of samples and losses (indices in `loupe_ebpf::cpu::counter`).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use loupe_ebpf::cpu::counter;

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn increment(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot, and perf_event/tracepoint programs do not nest on one CPU.
        unsafe { *slot += 1 };
    }
}
