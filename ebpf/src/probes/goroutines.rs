//! Goroutine events: one uprobe at the entry of `runtime.casgstatus(gp *g, oldval, newval
//! uint32)` per traced Go process (see `loupe_ebpf::goroutines`). The function is
//! `//go:nosplit` (no stack-growth prologue that could re-run it) and is never returned
//! from through a probe: its arguments are all we need.
//!
//! It runs at every goroutine state change, so it is written for the common case: the
//! arguments come from registers (Go's register ABI on amd64: RAX, RBX, RCX; R14 holds the
//! current g), transitions that are not counted return before any map is touched, the
//! process's totals entry is created by userspace at attach (with the `g` field offsets of
//! its Go release), so the kernel only ever looks it up, and one entry per goroutine
//! (`GOROUTINE_SINCE`) serves both the runnable and the blocked start. Only a creation
//! (rarer) reads memory beyond the changed g: the parent goroutine's id, three reads.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::ProbeContext,
};
use loupe_ebpf::{
    goroutines::{
        counter, GKey, GoroutineStats, ParentKey, Since, SiteKey, G_DEAD, G_RUNNABLE, G_RUNNING,
        G_WAITING, MAX_CREATION_SITES, MAX_GO_PROCESSES, MAX_PARENTS, MAX_SINCE, MAX_WAIT_REASONS,
        SINCE_RUNNABLE,
    },
    histogram::{latency_bucket, HIST_BUCKETS},
};

#[map(name = "GOROUTINE_COUNTERS")]
static GOROUTINE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Cumulative totals by tgid; entries are inserted and removed by userspace only.
#[map(name = "GOROUTINE_STATS")]
static GOROUTINE_STATS: HashMap<u32, GoroutineStats> =
    HashMap::with_max_entries(MAX_GO_PROCESSES, 0);

/// When each runnable or blocked goroutine entered that state, and why it blocked.
#[map(name = "GOROUTINE_SINCE")]
static GOROUTINE_SINCE: LruHashMap<GKey, Since> = LruHashMap::with_max_entries(MAX_SINCE, 0);

/// Goroutines created per (tgid, `g.gopc`), cumulative; userspace removes a process's
/// entries when it exits.
#[map(name = "GOROUTINE_SITES")]
static GOROUTINE_SITES: HashMap<SiteKey, u64> = HashMap::with_max_entries(MAX_CREATION_SITES, 0);

/// Goroutines created per (tgid, parent goroutine id), cumulative; userspace removes a
/// process's entries when it exits.
#[map(name = "GOROUTINE_PARENTS")]
static GOROUTINE_PARENTS: HashMap<ParentKey, u64> = HashMap::with_max_entries(MAX_PARENTS, 0);

/// What a helper returns for an existing key (a negative errno).
const EEXIST: i32 = -17;

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

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// A goroutine was created (`newproc1` readying it, on the system stack: `g0` is the
/// current g): count it, by creation site and by parent goroutine.
#[inline(always)]
fn created(s: *mut GoroutineStats, g: u64, g0: u64, tgid: u32) {
    unsafe { add(&mut (*s).created, 1) };
    let offsets = unsafe { (*s).offsets };
    match read_u64(g.wrapping_add(offsets.gopc as u64)) {
        Some(pc) => {
            let key = SiteKey {
                tgid,
                _reserved: 0,
                pc,
            };
            count(&GOROUTINE_SITES, &key, counter::DROP_SITES_MAP_FULL);
        }
        None => increment(counter::DROP_G_READ_FAILED),
    }
    // The parent is the goroutine the thread runs (`g0.m.curg`); none (0) when the runtime
    // creates one from its bootstrap code.
    let parent = read_u64(g0.wrapping_add(offsets.g_m as u64))
        .and_then(|m| read_u64(m.wrapping_add(offsets.m_curg as u64)))
        .and_then(|curg| match curg {
            0 => Some(0),
            _ => read_u64(curg.wrapping_add(offsets.goid as u64)),
        });
    match parent {
        Some(goid) => {
            let key = ParentKey {
                tgid,
                _reserved: 0,
                goid,
            };
            count(&GOROUTINE_PARENTS, &key, counter::DROP_PARENTS_MAP_FULL);
        }
        None => increment(counter::DROP_G_READ_FAILED),
    }
}

#[inline(always)]
fn read_u64(at: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(at as *const u64) }.ok()
}

/// Adds one to `key`'s count in `map`, inserting it; a full map is the loss `full`.
#[inline(always)]
fn count<K>(map: &HashMap<K, u64>, key: &K, full: u32) {
    if let Some(n) = map.get_ptr_mut(key) {
        add(n, 1);
        return;
    }
    match map.insert(key, &1, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Another CPU inserted it first.
        Err(EEXIST) => {
            if let Some(n) = map.get_ptr_mut(key) {
                add(n, 1);
            }
        }
        Err(_) => increment(full),
    }
}

/// Records that a goroutine entered a state at `ns` (blocked for `reason`, or not blocked:
/// [`SINCE_RUNNABLE`]), in place when it has an entry: a lookup costs less than an LRU
/// update, and the runtime changes one g's state from one thread at a time.
#[inline(always)]
fn set_since(entry: Option<*mut Since>, key: &GKey, ns: u64, reason: u32) {
    match entry {
        Some(p) => unsafe {
            (*p).ns = ns;
            (*p).reason = reason;
        },
        None => {
            let since = Since {
                ns,
                reason,
                _reserved: 0,
            };
            // An LRU map never refuses an insert: a full one forgets its oldest start.
            let _ = GOROUTINE_SINCE.insert(key, &since, 0);
        }
    }
}

/// A goroutine blocked: remember when, and its wait reason (set before this call).
#[inline(always)]
fn blocked(s: *mut GoroutineStats, entry: Option<*mut Since>, key: &GKey) {
    let at = key
        .g
        .wrapping_add(unsafe { (*s).offsets.waitreason } as u64);
    let reason = match unsafe { bpf_probe_read_user(at as *const u8) } {
        Ok(reason) if (reason as usize) < MAX_WAIT_REASONS => reason as u32,
        Ok(_) => {
            increment(counter::DROP_WAIT_REASON_OUT_OF_RANGE);
            SINCE_RUNNABLE
        }
        Err(_) => {
            increment(counter::DROP_G_READ_FAILED);
            SINCE_RUNNABLE
        }
    };
    set_since(entry, key, now(), reason);
}

/// A blocked goroutine became runnable: add its blocked time to its wait reason.
#[inline(always)]
fn woke(s: *mut GoroutineStats, entry: Option<*mut Since>, now: u64) {
    let Some(since) = entry.map(|p| unsafe { *p }) else {
        increment(counter::BLOCK_START_NOT_SEEN);
        return;
    };
    let reason = since.reason as usize;
    if reason >= MAX_WAIT_REASONS {
        // Not blocked since it last became runnable: the block itself was not seen.
        increment(counter::BLOCK_START_NOT_SEEN);
        return;
    }
    unsafe {
        let slot = &mut (*s).blocked[reason];
        add(&mut slot.count, 1);
        add(&mut slot.ns, now.wrapping_sub(since.ns));
    }
}

#[uprobe]
pub fn go_casgstatus(ctx: ProbeContext) -> u32 {
    // SAFETY: the context of a uprobe is the user registers at the probed instruction.
    let regs = unsafe { &*ctx.regs };
    let (g, old, new) = (regs.rax, regs.rbx as u32, regs.rcx as u32);
    increment(counter::TRANSITIONS);
    let counted = new == G_RUNNABLE
        || (new == G_WAITING && (old == G_RUNNING || old == G_DEAD))
        || (new == G_RUNNING && (old == G_RUNNABLE || old == G_WAITING))
        || (old == G_RUNNING && new == G_DEAD);
    if !counted {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = GKey {
        g,
        tgid,
        _reserved: 0,
    };
    // One lookup of the goroutine's entry serves the whole change.
    let entry = GOROUTINE_SINCE.get_ptr_mut(&key);
    if old == G_WAITING && new == G_RUNNING {
        // The runtime's own short waits (a GC stack scan of itself) end without the
        // goroutine becoming runnable: mark it not blocked, so no later wake-up uses it.
        if let Some(p) = entry {
            unsafe { (*p).reason = SINCE_RUNNABLE };
        }
        return 0;
    }
    let Some(s) = stats(tgid) else { return 0 };
    if new == G_RUNNABLE {
        let now = now();
        if old == G_WAITING {
            woke(s, entry, now);
        }
        set_since(entry, &key, now, SINCE_RUNNABLE);
        if old == G_DEAD {
            created(s, g, regs.r14, tgid);
        }
        return 0;
    }
    if new == G_WAITING {
        blocked(s, entry, &key);
        if old == G_DEAD {
            // A goroutine created parked (Go 1.23+ coroutines).
            created(s, g, regs.r14, tgid);
        }
        return 0;
    }
    if new == G_DEAD {
        unsafe { add(&mut (*s).exited, 1) };
        // The g is reused (or freed) after its exit: its entry is of no further use.
        let _ = GOROUTINE_SINCE.remove(&key);
        return 0;
    }
    // Runnable -> running. The entry stays, to be overwritten at the next change: no wait
    // is timed from it twice, as the goroutine must become runnable again (a new start)
    // before it runs again.
    let since = match entry {
        Some(p) if unsafe { (*p).reason } == SINCE_RUNNABLE => unsafe { (*p).ns },
        _ => {
            increment(counter::START_NOT_SEEN);
            return 0;
        }
    };
    let waited = now().wrapping_sub(since);
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
