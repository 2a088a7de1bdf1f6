//! Target tracking shared by every capability: which tgids are observed, children added at
//! fork (so a launched command is traced from its first instruction), and exec/exit events
//! so userspace reloads a process's mappings in order with its samples.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, RingBuf},
    programs::TracePointContext,
};
use loupe_ebpf::{
    cpu::counter,
    targets::{
        ProcessEvent, TargetConfig, EVENT_PROCESS_EXEC, EVENT_PROCESS_EXIT, MAX_TARGETS,
        TARGET_FOLLOW_CHILDREN, TARGET_OBSERVE, TARGET_OBSERVE_AFTER_EXEC,
    },
};

use crate::counters;

#[map(name = "TARGETS")]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map(name = "TARGET_CONFIG")]
static TARGET_CONFIG: Array<TargetConfig> = Array::with_max_entries(1, 0);

/// Samples and process events, in order. Sized for ~500 copied samples of slack; userspace
/// shrinks it at load for low sampling rates (`engine::map_sizes`).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Processes whose first record since exec has already woken the reader.
#[map(name = "WOKEN")]
static WOKEN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(MAX_TARGETS, 0);

/// The wake-up flag for a sample record of `tgid` in [`EVENTS`].
///
/// Waking the reader at every sample phase-locks its runs to the sampling timer: it preempts
/// the sampled task just after each sample, so a task sharing its CPU is found running at
/// sample instants more often than it runs (10-20% over its CPU time on a loaded 2-CPU host).
/// So a sample wakes the reader only when it is its process's first since exec (its mappings
/// must be read while it lives) or the ring is half full; otherwise the reader drains on its
/// own short timer, which sampling does not drive.
#[inline(always)]
pub fn sample_wakeup(tgid: u32) -> u64 {
    if unsafe { WOKEN.get(&tgid) }.is_none() {
        let _ = WOKEN.insert(&tgid, &1, 0);
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > EVENTS.query(BPF_RB_RING_SIZE as u64) / 2 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn config() -> Option<&'static TargetConfig> {
    TARGET_CONFIG.get(0)
}

/// Whether samples of process `tgid` are wanted.
#[inline(always)]
pub fn is_observed(tgid: u32) -> bool {
    match config() {
        Some(c) if c.filter != 0 => {
            matches!(unsafe { TARGETS.get(&tgid) }, Some(flags) if flags & TARGET_OBSERVE != 0)
        }
        Some(_) => true,
        // Not configured yet: observe nothing rather than everything.
        None => false,
    }
}

fn send_process_event(kind: u32, pid: u32) {
    let event = ProcessEvent { kind, pid };
    // Process events are rare and not tied to the sampling timer: wake the reader at once,
    // so it reads a new image's mappings while they exist.
    if EVENTS
        .output::<ProcessEvent>(&event, BPF_RB_FORCE_WAKEUP as u64)
        .is_err()
    {
        counters::increment(counter::DROP_PROCESS_EVENT);
    }
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.filter == 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(flags) = (unsafe { TARGETS.get(&parent) }) else {
        return 0;
    };
    if flags & TARGET_FOLLOW_CHILDREN == 0 {
        return 0;
    }
    let Ok(child) = (unsafe { ctx.read_at::<i32>(cfg.fork_child_pid_offset as usize) }) else {
        return 0;
    };
    // A new thread's tid is inserted too (we cannot tell threads from processes here);
    // sched_process_exit removes it again.
    let child_flags = if flags & TARGET_OBSERVE != 0 {
        TARGET_OBSERVE | TARGET_FOLLOW_CHILDREN
    } else {
        TARGET_OBSERVE_AFTER_EXEC
    };
    if TARGETS.insert(&(child as u32), &child_flags, 0).is_err() {
        counters::increment(counter::DROP_TARGET_MAP_FULL);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A new image: its first sample wakes the reader again.
    let _ = WOKEN.remove(&tgid);
    if let Some(flags) = TARGETS.get_ptr_mut(&tgid) {
        // SAFETY: a live map value of this tgid; only its own exec updates it.
        unsafe {
            if *flags & TARGET_OBSERVE_AFTER_EXEC != 0 {
                *flags = TARGET_OBSERVE | TARGET_FOLLOW_CHILDREN;
            }
        }
    }
    if is_observed(tgid) {
        send_process_event(EVENT_PROCESS_EXEC, tgid);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid != tgid {
        // A thread: drop the entry fork may have added for it (absent is fine).
        let _ = TARGETS.remove(&tid);
    } else {
        if is_observed(tgid) {
            send_process_event(EVENT_PROCESS_EXIT, tgid);
        }
        // The process is gone: free its slot, so the map never fills over a long run and a
        // later process reusing the pid is not mistaken for a target.
        let _ = TARGETS.remove(&tgid);
        let _ = WOKEN.remove(&tgid);
    }
    0
}
