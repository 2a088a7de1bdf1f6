//! Goroutine events: one uprobe at the entry of `runtime.casgstatus(gp *g, oldval, newval
//! uint32)` per traced Go process (see `loupe_ebpf::goroutines`). The function is
//! `//go:nosplit` (no stack-growth prologue that could re-run it) and is never returned
//! from through a probe: its arguments are all we need.
//!
//! It runs at every goroutine state change, so it is written for the common case: the
//! arguments come from registers (Go's register ABI on amd64: RAX, RBX, RCX), transitions
//! that are not counted return before any map is touched, and the process's totals entry
//! is created by userspace at attach, so the kernel only ever looks it up.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::ProbeContext,
};
use loupe_ebpf::{
    goroutines::{
        counter, GoroutineStats, RunnableKey, G_DEAD, G_RUNNABLE, G_RUNNING, G_WAITING,
        MAX_GO_PROCESSES, MAX_RUNNABLE,
    },
    histogram::{latency_bucket, HIST_BUCKETS},
};

#[map(name = "GOROUTINE_COUNTERS")]
static GOROUTINE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Cumulative totals by tgid; entries are inserted and removed by userspace only.
#[map(name = "GOROUTINE_STATS")]
static GOROUTINE_STATS: HashMap<u32, GoroutineStats> =
    HashMap::with_max_entries(MAX_GO_PROCESSES, 0);

/// When each runnable goroutine became runnable (`bpf_ktime_get_ns`, the clock of the
/// runtime's `nanotime`).
#[map(name = "GOROUTINE_RUNNABLE")]
static GOROUTINE_RUNNABLE: LruHashMap<RunnableKey, u64> =
    LruHashMap::with_max_entries(MAX_RUNNABLE, 0);

#[inline(always)]
fn increment(index: u32) {
    if let Some(slot) = GOROUTINE_COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot; uprobe programs do not nest on one CPU.
        unsafe { *slot += 1 };
    }
}

/// `AtomicU64::fetch_add` (absent on the BPF target): threads of one process change
/// goroutine states on several CPUs at once.
#[inline(always)]
fn add(slot: *mut u64, value: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, value) };
}

#[inline(always)]
fn stats(tgid: u32) -> Option<*mut GoroutineStats> {
    let stats = GOROUTINE_STATS.get_ptr_mut(&tgid);
    if stats.is_none() {
        increment(counter::DROP_STATS_MAP_FULL);
    }
    stats
}

#[uprobe]
pub fn go_casgstatus(ctx: ProbeContext) -> u32 {
    // SAFETY: the context of a uprobe is the user registers at the probed instruction.
    let regs = unsafe { &*ctx.regs };
    let (g, old, new) = (regs.rax, regs.rbx as u32, regs.rcx as u32);
    increment(counter::TRANSITIONS);
    let counted = new == G_RUNNABLE
        || (old == G_RUNNABLE && new == G_RUNNING)
        || (old == G_DEAD && new == G_WAITING)
        || (old == G_RUNNING && new == G_DEAD);
    if !counted {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = RunnableKey {
        g,
        tgid,
        _reserved: 0,
    };
    if new == G_RUNNABLE {
        let now = unsafe { bpf_ktime_get_ns() };
        // An LRU map never refuses an insert: a full one forgets its oldest start.
        let _ = GOROUTINE_RUNNABLE.insert(&key, &now, 0);
        if old == G_DEAD {
            if let Some(s) = stats(tgid) {
                add(unsafe { &mut (*s).created }, 1);
            }
        }
        return 0;
    }
    if old == G_DEAD {
        // A goroutine created parked (Go 1.23+ coroutines).
        if let Some(s) = stats(tgid) {
            add(unsafe { &mut (*s).created }, 1);
        }
        return 0;
    }
    if new == G_DEAD {
        if let Some(s) = stats(tgid) {
            add(unsafe { &mut (*s).exited }, 1);
        }
        return 0;
    }
    // Runnable -> running.
    let Some(since) = (unsafe { GOROUTINE_RUNNABLE.get(&key) }).copied() else {
        increment(counter::START_NOT_SEEN);
        return 0;
    };
    let _ = GOROUTINE_RUNNABLE.remove(&key);
    let waited = unsafe { bpf_ktime_get_ns() }.wrapping_sub(since);
    let Some(s) = stats(tgid) else { return 0 };
    let bucket = latency_bucket(waited) as usize;
    unsafe {
        add(&mut (*s).sched_waits, 1);
        add(&mut (*s).sched_wait_ns, waited);
        if bucket < HIST_BUCKETS as usize {
            add(&mut (*s).buckets[bucket], 1);
        }
    }
    0
}
