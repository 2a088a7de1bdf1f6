//! Scheduling: BTF tracepoints on `sched_switch`, `sched_wakeup` and `sched_wakeup_new`
//! time every observed thread's on-CPU, blocked (off-CPU) and runnable (run-queue)
//! intervals in the kernel, and add them to totals userspace drains (see
//! `loupe_ebpf::sched` for the maps and events).
//!
//! Thread state is keyed by the `task_struct` address: the tracepoints hand us task
//! pointers (`next`, the woken task), the address is unique among live tasks, and using it
//! costs nothing, where reading the ids behind it would cost a probe read per event. An
//! entry is created when a new thread is first woken (its ids read once, at offsets
//! userspace found in the kernel's BTF), or, for threads that existed before, at their
//! first switch-out (then `current` is that thread); it is removed at the thread's last
//! switch-out (`TASK_DEAD`), before the address can be reused.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    },
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, PerCpuArray, StackTrace},
    programs::{tracing::StackIdContext, BtfTracePointContext},
};
use loupe_ebpf::{
    cpu::UserRegs,
    histogram::{latency_bucket, HIST_BUCKETS},
    sched::{
        counter, OffCpuHeader, OffCpuKey, OffCpuSample, OffCpuValue, RunqHistogram, SchedConfig,
        ThreadSchedStats, EVENT_OFFCPU_STACK, MAX_OFFCPU_KEYS, MAX_OFFCPU_STACK_TRACES,
        MAX_RUNQ_HISTOGRAMS, MAX_THREADS, MAX_THREAD_STATS, OFFCPU_STACK_COPY_BYTES,
        SCHED_OFFCPU_STACKS, SCHED_RUNQ_STATS,
    },
    COMM_LEN,
};

use crate::{cpu, targets};

#[map(name = "SCHED_CONFIG")]
static SCHED_CONFIG: Array<SchedConfig> = Array::with_max_entries(1, 0);

#[map(name = "SCHED_COUNTERS")]
static SCHED_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map(name = "SCHED_THREADS")]
static SCHED_THREADS: HashMap<u64, ThreadState> = HashMap::with_max_entries(MAX_THREADS, 0);

// Everything the kernel adds to comes in two, by `SchedConfig::generation & 1`.
#[map(name = "OFFCPU_COUNTS_0")]
static OFFCPU_COUNTS_0: HashMap<OffCpuKey, OffCpuValue> =
    HashMap::with_max_entries(MAX_OFFCPU_KEYS, 0);
#[map(name = "OFFCPU_COUNTS_1")]
static OFFCPU_COUNTS_1: HashMap<OffCpuKey, OffCpuValue> =
    HashMap::with_max_entries(MAX_OFFCPU_KEYS, 0);
#[map(name = "OFFCPU_USER_STACKS_0")]
static OFFCPU_USER_STACKS_0: StackTrace = StackTrace::with_max_entries(MAX_OFFCPU_STACK_TRACES, 0);
#[map(name = "OFFCPU_USER_STACKS_1")]
static OFFCPU_USER_STACKS_1: StackTrace = StackTrace::with_max_entries(MAX_OFFCPU_STACK_TRACES, 0);
#[map(name = "OFFCPU_KERNEL_STACKS_0")]
static OFFCPU_KERNEL_STACKS_0: StackTrace =
    StackTrace::with_max_entries(MAX_OFFCPU_STACK_TRACES, 0);
#[map(name = "OFFCPU_KERNEL_STACKS_1")]
static OFFCPU_KERNEL_STACKS_1: StackTrace =
    StackTrace::with_max_entries(MAX_OFFCPU_STACK_TRACES, 0);
#[map(name = "THREAD_STATS_0")]
static THREAD_STATS_0: HashMap<u32, ThreadSchedStats> =
    HashMap::with_max_entries(MAX_THREAD_STATS, 0);
#[map(name = "THREAD_STATS_1")]
static THREAD_STATS_1: HashMap<u32, ThreadSchedStats> =
    HashMap::with_max_entries(MAX_THREAD_STATS, 0);
#[map(name = "RUNQ_HIST_0")]
static RUNQ_HIST_0: HashMap<u32, RunqHistogram> = HashMap::with_max_entries(MAX_RUNQ_HISTOGRAMS, 0);
#[map(name = "RUNQ_HIST_1")]
static RUNQ_HIST_1: HashMap<u32, RunqHistogram> = HashMap::with_max_entries(MAX_RUNQ_HISTOGRAMS, 0);

/// Where off-CPU stack copies are built, one slot per CPU (userspace sizes it to the
/// possible CPUs), apart from the CPU sampler's: a copy is larger than the 512-byte BPF
/// stack or a per-CPU array value may be.
#[map(name = "OFFCPU_SCRATCH")]
static OFFCPU_SCRATCH: Array<OffCpuSample> = Array::with_max_entries(1, 0);

/// An all-zero histogram to insert from: one is too large for the 512-byte BPF stack.
#[map(name = "RUNQ_HIST_ZERO")]
static RUNQ_HIST_ZERO: Array<RunqHistogram> = Array::with_max_entries(1, 0);

/// `prev_state` of a running (preempted or yielding) task.
const TASK_RUNNING: u32 = 0;
/// `prev_state` of a task's last switch-out, after it exited.
const TASK_DEAD: u32 = 0x80;

/// No stack of that kind (distinct from negative errno failures).
const NO_STACK: i32 = -1;

/// `ThreadState::status`.
const STATUS_UNKNOWN: u32 = 0;
const STATUS_ON_CPU: u32 = 1;
const STATUS_BLOCKED: u32 = 2;
const STATUS_RUNNABLE: u32 = 3;

/// What the kernel keeps per observed thread between events (never read by userspace).
#[repr(C)]
#[derive(Clone, Copy)]
struct ThreadState {
    tid: u32,
    pid: u32,
    status: u32,
    /// Whether `key` holds the stack of the current block.
    has_key: u32,
    /// When the current status began (`bpf_ktime_get_ns`).
    since: u64,
    key: OffCpuKey,
    comm: [u8; COMM_LEN],
}

#[inline(always)]
fn increment(index: u32) {
    if let Some(slot) = SCHED_COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot; these programs run with interrupts off and do not nest.
        unsafe { *slot += 1 };
    }
}

/// A copy of the settings: one invocation must use one generation throughout, even if
/// userspace rotates meanwhile (a run-queue wait's totals and histogram bucket go to the
/// same generation's maps).
#[inline(always)]
fn config() -> Option<SchedConfig> {
    match SCHED_CONFIG.get(0) {
        Some(c) if c.flags != 0 => Some(*c),
        _ => None,
    }
}

/// `sched_switch(bool preempt, task_struct *prev, task_struct *next, unsigned int prev_state)`,
/// called in `__schedule` while `current` is still `prev`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let Some(config) = config() else { return 0 };
    let preempt: u64 = ctx.arg(0);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let now = unsafe { bpf_ktime_get_ns() };
    let prev = unsafe { bpf_get_current_task() };
    switch_out(
        &ctx,
        &config,
        prev,
        preempt & 1 != 0,
        prev_state as u32,
        now,
    );
    switch_in(&config, next, now);
    0
}

/// `sched_wakeup(task_struct *p)`: `p` is runnable again (called on the waker's CPU).
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let Some(config) = config() else { return 0 };
    let task: u64 = ctx.arg(0);
    let Some(state) = SCHED_THREADS.get_ptr_mut(&task) else {
        return 0;
    };
    // SAFETY: a live entry; a thread's own events are ordered by the scheduler (its wakeup
    // follows its switch-out and precedes its switch-in), so no one else writes it now.
    let state = unsafe { &mut *state };
    // A wakeup of a thread that is not blocked (it was woken before it switched out) is
    // no transition.
    if state.status == STATUS_BLOCKED {
        let now = unsafe { bpf_ktime_get_ns() };
        end_block(&config, state, now);
        state.status = STATUS_RUNNABLE;
        state.since = now;
    }
    0
}

/// `sched_wakeup_new(task_struct *p)`: a new task is runnable for the first time (called by
/// its parent). Tracked from here when it belongs to an observed process, so its first
/// run-queue wait and time slice count too.
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    let Some(config) = config() else { return 0 };
    if config.task_pid_offset == 0 || config.task_tgid_offset == 0 {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    let read = |offset: u32| unsafe {
        bpf_probe_read_kernel(task.wrapping_add(offset as u64) as *const u32).ok()
    };
    let (Some(tid), Some(tgid)) = (read(config.task_pid_offset), read(config.task_tgid_offset))
    else {
        return 0;
    };
    if tid == 0 || !targets::is_observed(tgid) {
        return 0;
    }
    let state = ThreadState {
        tid,
        pid: tgid,
        status: STATUS_RUNNABLE,
        has_key: 0,
        since: unsafe { bpf_ktime_get_ns() },
        key: OffCpuKey::default(),
        // A new task starts with its parent's name, and the parent is running this.
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if SCHED_THREADS.insert(&task, &state, 0).is_err() {
        increment(counter::DROP_THREAD_MAP_FULL);
    }
    0
}

#[inline(always)]
fn switch_out(
    ctx: &BtfTracePointContext,
    config: &SchedConfig,
    task: u64,
    preempt: bool,
    prev_state: u32,
    now: u64,
) {
    if prev_state & TASK_DEAD != 0 {
        // The task exited and will never run again: forget it before its address is reused.
        let _ = SCHED_THREADS.remove(&task);
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid == 0 {
        return; // The idle task.
    }
    let comm = bpf_get_current_comm().unwrap_or_default();
    let state = match SCHED_THREADS.get_ptr_mut(&task) {
        Some(state) => state,
        None => {
            if !targets::is_observed(tgid) {
                return;
            }
            let new = ThreadState {
                tid,
                pid: tgid,
                status: STATUS_UNKNOWN,
                has_key: 0,
                since: now,
                key: OffCpuKey::default(),
                comm,
            };
            if SCHED_THREADS.insert(&task, &new, 0).is_err() {
                increment(counter::DROP_THREAD_MAP_FULL);
                return;
            }
            match SCHED_THREADS.get_ptr_mut(&task) {
                Some(state) => state,
                None => return,
            }
        }
    };
    // SAFETY: as in `sched_wakeup`; `current` is this thread, so it cannot be woken now.
    let state = unsafe { &mut *state };
    state.comm = comm;
    let stats = stats_of(config, state);
    if state.status == STATUS_ON_CPU {
        if let Some(stats) = stats {
            unsafe { (*stats).oncpu_ns += now.wrapping_sub(state.since) };
        }
    }
    // Preempted tasks are never dequeued, whatever their state; an attempt to block that
    // a pending signal cancelled is traced with TASK_RUNNING.
    let blocked = !preempt && prev_state != TASK_RUNNING;
    if let Some(stats) = stats {
        unsafe {
            if blocked {
                (*stats).voluntary_switches += 1;
            } else {
                (*stats).involuntary_switches += 1;
            }
        }
    }
    state.since = now;
    if !blocked {
        state.status = STATUS_RUNNABLE;
        return;
    }
    state.status = STATUS_BLOCKED;
    state.has_key = 0;
    if config.flags & SCHED_OFFCPU_STACKS != 0 {
        if let Some(key) = block_key(ctx, config, state) {
            state.key = key;
            state.has_key = 1;
        }
    }
}

#[inline(always)]
fn switch_in(config: &SchedConfig, task: u64, now: u64) {
    let Some(state) = SCHED_THREADS.get_ptr_mut(&task) else {
        return;
    };
    // SAFETY: as in `sched_wakeup`.
    let state = unsafe { &mut *state };
    let waited = now.wrapping_sub(state.since);
    if state.status == STATUS_RUNNABLE {
        increment(counter::RUNQ_WAITS);
        if config.flags & SCHED_RUNQ_STATS != 0 {
            if let Some(stats) = stats_of(config, state) {
                unsafe {
                    (*stats).runq_wait_ns += waited;
                    (*stats).runq_waits += 1;
                }
            }
            add_to_histogram(config, state.pid, waited);
        }
    } else if state.status == STATUS_BLOCKED {
        // Its wakeup was not seen: the blocked time runs to now.
        increment(counter::WAKEUP_NOT_SEEN);
        end_block(config, state, now);
    }
    state.status = STATUS_ON_CPU;
    state.since = now;
}

/// A blocked interval ended at `now`: add it to the thread's totals and to its stack's key.
#[inline(always)]
fn end_block(config: &SchedConfig, state: &mut ThreadState, now: u64) {
    let blocked = now.wrapping_sub(state.since);
    if let Some(stats) = stats_of(config, state) {
        unsafe { (*stats).offcpu_ns += blocked };
    }
    if state.has_key == 0 || config.flags & SCHED_OFFCPU_STACKS == 0 {
        return;
    }
    state.has_key = 0;
    // Into the current generation's map, whatever the key's generation: userspace drains
    // only maps the kernel no longer writes, so no increment is lost to a drain.
    let counts = offcpu_counts(config.generation);
    if let Some(value) = counts.get_ptr_mut(&state.key) {
        // The key holds this thread's tid: no other CPU adds to it concurrently.
        unsafe {
            (*value).total_ns += blocked;
            (*value).count += 1;
        }
    } else {
        let value = OffCpuValue {
            total_ns: blocked,
            count: 1,
        };
        if counts.insert(&state.key, &value, 0).is_err() {
            increment(counter::DROP_OFFCPU_MAP_FULL);
            return;
        }
    }
    increment(counter::OFFCPU_BLOCKS);
}

/// The key of a block starting now (`current` is the blocking thread), registered in this
/// generation's count map; the first time, its user stack is copied to userspace.
#[inline(always)]
fn block_key(
    ctx: &BtfTracePointContext,
    config: &SchedConfig,
    state: &ThreadState,
) -> Option<OffCpuKey> {
    let generation = config.generation;
    let regs = cpu::saved_user_regs();
    let kernel_stack_id = stack_id(ctx, generation, false);
    let (user_stack_id, user_ip, user_sp) = match &regs {
        // The thread blocks again from where it last blocked in this generation (a Go M
        // parking on its g0 stack, a worker thread's wait loop: most blocks of a busy host):
        // the frame-pointer walk would find the same frames, so the last one is reused and
        // only the kernel stack is walked.
        Some((regs, _))
            if state.key.generation == generation
                && state.key.user_ip == regs.ip
                && state.key.user_sp == regs.sp
                && state.key.user_stack_id >= 0 =>
        {
            (state.key.user_stack_id, regs.ip, regs.sp)
        }
        Some((regs, _)) => (stack_id(ctx, generation, true), regs.ip, regs.sp),
        None => (NO_STACK, 0, 0),
    };
    let key = OffCpuKey {
        pid: state.pid,
        tid: state.tid,
        kernel_stack_id,
        user_stack_id,
        user_ip,
        user_sp,
        generation,
        _reserved: 0,
    };
    let counts = offcpu_counts(generation);
    if counts.get_ptr_mut(&key).is_some() {
        return Some(key); // Seen in this generation: its stack was sent already.
    }
    // A zero entry marks the key as seen, so its stack is sent once.
    if counts
        .insert(&key, &OffCpuValue::default(), BPF_NOEXIST as u64)
        .is_err()
    {
        increment(counter::DROP_OFFCPU_MAP_FULL);
        return Some(key);
    }
    if let Some((regs, r14)) = regs {
        send_stack_copy(config, &key, regs, r14, &state.comm);
    }
    Some(key)
}

/// Sends the user stack of a new key: built in this CPU's scratch slot with the CPU
/// sampler's copy routine, up to the stack's end (or a goroutine's) and at most
/// `config.stack_copy_bytes`; only the bytes copied go on the ring buffer.
#[inline(always)]
fn send_stack_copy(
    config: &SchedConfig,
    key: &OffCpuKey,
    regs: UserRegs,
    r14: u64,
    comm: &[u8; COMM_LEN],
) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(sample) = OFFCPU_SCRATCH.get_ptr_mut(cpu) else {
        // Cannot happen when userspace sized the map; counted rather than silent.
        increment(counter::DROP_RINGBUF_FULL);
        return;
    };
    let limit = config.stack_copy_bytes.min(OFFCPU_STACK_COPY_BYTES as u32);
    let header = unsafe { &mut (*sample).header };
    header.kind = EVENT_OFFCPU_STACK;
    header.key = *key;
    header.regs = regs;
    header.comm = *comm;
    let max = cpu::copy_limit(regs.sp, r14, limit, &mut header.stack_len);
    let sp = unsafe { core::ptr::read_volatile(&header.regs.sp) };
    let stack = unsafe { (*sample).stack.as_mut_ptr() };
    let copied = unsafe { cpu::copy_user_stack::<OFFCPU_STACK_COPY_BYTES>(stack, 0, sp, max) };
    header.stack_len = copied;
    // Read back from the map: one loaded value, whose bound the check below proves for
    // the ring-buffer output too (as the CPU sampler does).
    let stack_len = unsafe { core::ptr::read_volatile(&header.stack_len) };
    if stack_len == 0 {
        increment(counter::DROP_STACK_COPY);
    }
    let len = size_of::<OffCpuHeader>() + stack_len as usize;
    if len > size_of::<OffCpuSample>() {
        return;
    }
    let record = unsafe { core::slice::from_raw_parts(sample as *const u8, len) };
    if targets::EVENTS
        .output::<[u8]>(record, targets::sample_wakeup(key.pid))
        .is_err()
    {
        increment(counter::DROP_RINGBUF_FULL);
        return;
    }
    increment(counter::OFFCPU_COPIES);
}

#[inline(always)]
fn stack_id(ctx: &BtfTracePointContext, generation: u32, user: bool) -> i32 {
    let flags = if user { BPF_F_USER_STACK as u64 } else { 0 };
    let id = match (generation & 1, user) {
        (0, false) => ctx.get_stackid(&OFFCPU_KERNEL_STACKS_0, flags),
        (_, false) => ctx.get_stackid(&OFFCPU_KERNEL_STACKS_1, flags),
        (0, true) => ctx.get_stackid(&OFFCPU_USER_STACKS_0, flags),
        (_, true) => ctx.get_stackid(&OFFCPU_USER_STACKS_1, flags),
    };
    match id {
        Ok(id) => id as i32,
        Err(e) => {
            increment(if user {
                counter::DROP_USER_STACK
            } else {
                counter::DROP_KERNEL_STACK
            });
            e.min(-2)
        }
    }
}

#[inline(always)]
fn offcpu_counts(generation: u32) -> &'static HashMap<OffCpuKey, OffCpuValue> {
    if generation & 1 == 0 {
        &OFFCPU_COUNTS_0
    } else {
        &OFFCPU_COUNTS_1
    }
}

/// The thread's totals in this generation's map, created on first use.
#[inline(always)]
fn stats_of(config: &SchedConfig, state: &ThreadState) -> Option<*mut ThreadSchedStats> {
    if config.flags & SCHED_RUNQ_STATS == 0 {
        return None;
    }
    let map = if config.generation & 1 == 0 {
        &THREAD_STATS_0
    } else {
        &THREAD_STATS_1
    };
    if let Some(stats) = map.get_ptr_mut(&state.tid) {
        return Some(stats);
    }
    let new = ThreadSchedStats {
        pid: state.pid,
        comm: state.comm,
        ..ThreadSchedStats::default()
    };
    // NOEXIST: never reset totals another CPU just created.
    let _ = map.insert(&state.tid, &new, BPF_NOEXIST as u64);
    let stats = map.get_ptr_mut(&state.tid);
    if stats.is_none() {
        increment(counter::DROP_STATS_MAP_FULL);
    }
    stats
}

#[inline(always)]
fn add_to_histogram(config: &SchedConfig, tgid: u32, ns: u64) {
    let map = if config.generation & 1 == 0 {
        &RUNQ_HIST_0
    } else {
        &RUNQ_HIST_1
    };
    let histogram = match map.get_ptr_mut(&tgid) {
        Some(h) => h,
        None => {
            let Some(zero) = RUNQ_HIST_ZERO.get(0) else {
                return;
            };
            let _ = map.insert(&tgid, zero, BPF_NOEXIST as u64);
            match map.get_ptr_mut(&tgid) {
                Some(h) => h,
                None => {
                    increment(counter::DROP_HIST_MAP_FULL);
                    return;
                }
            }
        }
    };
    let bucket = latency_bucket(ns) as usize;
    if bucket < HIST_BUCKETS as usize {
        // Threads of one process switch in on several CPUs at once: add atomically.
        unsafe {
            let slot = &mut (*histogram).buckets[bucket] as *mut u64;
            // `AtomicU64` does not exist on the BPF target; this is its `fetch_add`
            // (a BPF atomic add, its result unused).
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1);
        }
    }
}
