//! On-CPU sampling: a perf_event program on the software cpu-clock event of every CPU.
//!
//! Each sample of an observed task takes one of two paths (see `loupe_ebpf::cpu`):
//! counted in `CPU_COUNTS` by (pid, tid, user stack id, kernel stack id) where frame
//! pointers suffice, or sent with its user registers and its user stack (up to the stack's
//! end) on `EVENTS` for userspace unwinding with `.eh_frame`/pclntab.

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task, bpf_get_current_task_btf, bpf_get_smp_processor_id,
            bpf_probe_read_user, bpf_task_pt_regs,
        },
    },
    macros::{map, perf_event},
    maps::{Array, HashMap, LruHashMap, StackTrace},
    programs::{tracing::StackIdContext, PerfEventContext},
};
use loupe_ebpf::cpu::{
    counter, CpuConfig, SampleHeader, StackCount, StackCountKey, StackSample, UserRegs,
    EVENT_STACK_SAMPLE, MAX_STACK_COUNTS, MAX_STACK_HINTS, MAX_STACK_TRACES, OFFSET_UNKNOWN,
    SAMPLE_NO_USER_STACK, SAMPLE_STACK_CUT, STACK_COPY_BYTES, STACK_COPY_PAGE,
    UNWIND_FRAME_POINTERS,
};

use crate::{counters, targets};

#[map(name = "CPU_CONFIG")]
static CPU_CONFIG: Array<CpuConfig> = Array::with_max_entries(1, 0);

#[map(name = "CPU_COUNTS")]
static CPU_COUNTS: HashMap<StackCountKey, StackCount> =
    HashMap::with_max_entries(MAX_STACK_COUNTS, 0);

/// Where copied samples are built, one slot per CPU (userspace sizes it to the possible
/// CPUs): a sample is larger than a per-CPU array value or the 512-byte BPF stack may be.
/// perf_event programs do not nest on one CPU, so a slot has one writer at a time.
#[map(name = "STACK_SCRATCH")]
static STACK_SCRATCH: Array<StackSample> = Array::with_max_entries(1, 0);

/// Thread id -> start of a second stack region to copy (see `SampleHeader::region2_addr`),
/// set by userspace.
#[map(name = "STACK_HINTS")]
static STACK_HINTS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_STACK_HINTS, 0);

// Two sets of stack maps, alternating by `CpuConfig::epoch` (see there).
#[map(name = "USER_STACKS_0")]
static USER_STACKS_0: StackTrace = StackTrace::with_max_entries(MAX_STACK_TRACES, 0);
#[map(name = "USER_STACKS_1")]
static USER_STACKS_1: StackTrace = StackTrace::with_max_entries(MAX_STACK_TRACES, 0);
#[map(name = "KERNEL_STACKS_0")]
static KERNEL_STACKS_0: StackTrace = StackTrace::with_max_entries(MAX_STACK_TRACES, 0);
#[map(name = "KERNEL_STACKS_1")]
static KERNEL_STACKS_1: StackTrace = StackTrace::with_max_entries(MAX_STACK_TRACES, 0);

/// No stack of that kind in this sample (distinct from negative errno failures).
const NO_STACK: i32 = -1;

#[inline(always)]
fn in_user_mode(regs: &pt_regs) -> bool {
    regs.cs & 3 == 3
}

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid == 0 {
        counters::increment(counter::SAMPLES_IDLE);
        return 0;
    }
    if !targets::is_observed(tgid) {
        counters::increment(counter::SAMPLES_NOT_TARGET);
        return 0;
    }
    let Some(config) = CPU_CONFIG.get(0) else {
        return 0;
    };
    let regs = unsafe { &(*ctx.ctx).regs };
    let epoch = config.epoch & 1;
    let kernel_stack_id = if in_user_mode(regs) {
        NO_STACK
    } else {
        kernel_stack_id(&ctx, epoch)
    };
    let user_regs = current_user_regs(regs);
    let comm = bpf_get_current_comm().unwrap_or_default();

    match user_regs {
        Some((user_regs, r14)) if config.unwind != UNWIND_FRAME_POINTERS => send_copied(
            config,
            epoch,
            tgid,
            tid,
            kernel_stack_id,
            user_regs,
            r14,
            comm,
        ),
        Some(_) => {
            let user_stack_id = user_stack_id(&ctx, epoch);
            count(tgid, tid, user_stack_id, kernel_stack_id, epoch, comm)
        }
        // A kernel thread: kernel frames are all there is, and frame pointers suffice.
        None => count(tgid, tid, NO_STACK, kernel_stack_id, epoch, comm),
    }
    0
}

/// The task's user registers: the sampled ones, or those saved at kernel entry; and r14
/// (Go's current goroutine in Go code).
#[inline(always)]
fn current_user_regs(regs: &pt_regs) -> Option<(UserRegs, u64)> {
    if in_user_mode(regs) {
        let user = UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        };
        return Some((user, regs.r14));
    }
    saved_user_regs()
}

/// The current task's user registers saved at kernel entry, and its r14; None for kernel
/// threads. Shared with the scheduling probes, which run in the kernel on behalf of the task.
#[inline(always)]
pub(crate) fn saved_user_regs() -> Option<(UserRegs, u64)> {
    let saved = unsafe {
        let task = bpf_get_current_task_btf();
        let ptr = bpf_task_pt_regs(task) as *const pt_regs;
        bpf_probe_read_kernel(ptr).ok()?
    };
    // Kernel threads have no user half.
    let user = UserRegs {
        ip: saved.rip,
        sp: saved.rsp,
        bp: saved.rbp,
    };
    in_user_mode(&saved).then_some((user, saved.r14))
}

#[inline(always)]
fn kernel_stack_id(ctx: &PerfEventContext, epoch: u32) -> i32 {
    let id = if epoch == 0 {
        ctx.get_stackid(&KERNEL_STACKS_0, 0)
    } else {
        ctx.get_stackid(&KERNEL_STACKS_1, 0)
    };
    match id {
        Ok(id) => id as i32,
        Err(e) => {
            counters::increment(counter::DROP_KERNEL_STACK);
            e.min(-2)
        }
    }
}

#[inline(always)]
fn user_stack_id(ctx: &PerfEventContext, epoch: u32) -> i32 {
    let flags = BPF_F_USER_STACK as u64;
    let id = if epoch == 0 {
        ctx.get_stackid(&USER_STACKS_0, flags)
    } else {
        ctx.get_stackid(&USER_STACKS_1, flags)
    };
    match id {
        Ok(id) => id as i32,
        Err(e) => {
            counters::increment(counter::DROP_USER_STACK);
            e.min(-2)
        }
    }
}

#[inline(always)]
fn count(pid: u32, tid: u32, user_stack_id: i32, kernel_stack_id: i32, epoch: u32, comm: [u8; 16]) {
    let key = StackCountKey {
        pid,
        tid,
        user_stack_id,
        kernel_stack_id,
        epoch,
    };
    if let Some(value) = CPU_COUNTS.get_ptr_mut(&key) {
        // Racing increments of one key from two CPUs may lose a count; an atomic add would
        // cost more than the rare loss is worth on a sampling profiler.
        unsafe { (*value).count += 1 };
    } else if CPU_COUNTS
        .insert(&key, &StackCount { count: 1, comm }, 0)
        .is_err()
    {
        counters::increment(counter::DROP_COUNT_MAP_FULL);
        return;
    }
    counters::increment(counter::SAMPLES_COUNTED);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn send_copied(
    config: &CpuConfig,
    epoch: u32,
    pid: u32,
    tid: u32,
    kernel_stack_id: i32,
    regs: UserRegs,
    r14: u64,
    comm: [u8; 16],
) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(sample) = STACK_SCRATCH.get_ptr_mut(cpu) else {
        // Cannot happen when userspace sized the map; counted rather than silent.
        counters::increment(counter::DROP_RINGBUF_FULL);
        return;
    };
    let limit = config.stack_copy_bytes.min(STACK_COPY_BYTES as u32);
    let header = unsafe { &mut (*sample).header };
    header.kind = EVENT_STACK_SAMPLE;
    header.pid = pid;
    header.tid = tid;
    header.kernel_stack_id = kernel_stack_id;
    header.user_stack_id = NO_STACK;
    header.epoch = epoch;
    header.flags = 0;
    header.regs = regs;
    header.comm = comm;
    let max = copy_limit(regs.sp, r14, limit, &mut header.stack_len);
    // Through the map too, for the same reason (see `copy_limit`).
    let sp = unsafe { core::ptr::read_volatile(&header.regs.sp) };
    // With a second region to copy, each gets half of the room.
    let region2 = unsafe { STACK_HINTS.get(tid) }.copied().unwrap_or(0);
    let max = if region2 != 0 { max / 2 } else { max };
    let stack = unsafe { (*sample).stack.as_mut_ptr() };
    let copied = unsafe { copy_user_stack::<STACK_COPY_BYTES>(stack, 0, sp, max) };
    header.stack_len = copied;
    header.region2_addr = 0;
    header.region2_len = 0;
    if copied != 0 && region2 > sp + copied as u64 {
        header.region2_addr = region2;
        let first = unsafe { core::ptr::read_volatile(&header.stack_len) };
        if (first as usize) < STACK_COPY_BYTES {
            let room = limit - first;
            let copied2 =
                unsafe { copy_user_stack::<STACK_COPY_BYTES>(stack, first, region2, room) };
            header.region2_len = copied2;
            header.stack_len = first + copied2;
        }
    }
    let stack_len = unsafe { core::ptr::read_volatile(&header.stack_len) };
    if stack_len == 0 {
        if has_no_user_memory(config) {
            header.flags = SAMPLE_NO_USER_STACK;
            counters::increment(counter::SAMPLES_KERNEL_ONLY);
        } else {
            counters::increment(counter::DROP_STACK_COPY);
        }
    } else if stack_len >= limit {
        header.flags = SAMPLE_STACK_CUT;
    }
    // Only the header and the bytes copied go on the ring buffer.
    let len = size_of::<SampleHeader>() + stack_len as usize;
    if len > size_of::<StackSample>() {
        return;
    }
    let record = unsafe { core::slice::from_raw_parts(sample as *const u8, len) };
    if targets::EVENTS
        .output::<[u8]>(record, targets::sample_wakeup(pid))
        .is_err()
    {
        counters::increment(counter::DROP_RINGBUF_FULL);
        return;
    }
    counters::increment(counter::SAMPLES_COPIED);
}

/// How many bytes of stack to copy from `sp`: `limit`, or up to the top of the current
/// goroutine's stack when that is nearer. The value passes through `slot` (map memory;
/// volatile: not forwarded by the compiler) so the verifier sees one unknown value where
/// each way of computing it would be a state of its own; otherwise the page loop of
/// [`copy_user_stack`] is verified once per combination and exceeds its limit.
#[inline(always)]
pub(crate) fn copy_limit(sp: u64, r14: u64, limit: u32, slot: &mut u32) -> u32 {
    let max = match goroutine_stack_end(sp, r14) {
        Some(end) if end - sp < limit as u64 => (end - sp) as u32,
        _ => limit,
    };
    unsafe {
        core::ptr::write_volatile(slot, max);
        core::ptr::read_volatile(slot)
    }
}

/// The top of the current goroutine's stack, when the sample is in Go code: there r14 holds
/// the goroutine (`g`), whose first fields are its stack bounds `lo` and `hi`. Bounds that do
/// not enclose the stack pointer mean r14 is something else (native code).
#[inline(always)]
fn goroutine_stack_end(sp: u64, r14: u64) -> Option<u64> {
    if r14 < 4096 {
        return None;
    }
    let mut bounds = [0u64; 2];
    let ret = unsafe {
        bpf_probe_read_user(
            bounds.as_mut_ptr().cast(),
            size_of::<[u64; 2]>() as u32,
            r14 as *const _,
        )
    };
    let [lo, hi] = bounds;
    // Go stacks are at most 1 GiB (runtime.maxstacksize on 64-bit).
    (ret == 0 && lo < sp && sp < hi && hi - lo <= 1 << 30 && hi % 8 == 0).then_some(hi)
}

/// Whether the current task has no user address space: past `exit_mm` in exit, or in
/// execve (whose saved user registers may point into the address space it replaced).
#[inline(always)]
fn has_no_user_memory(config: &CpuConfig) -> bool {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if config.task_mm_offset != OFFSET_UNKNOWN {
        let mm = unsafe {
            bpf_probe_read_kernel(task.add(config.task_mm_offset as usize).cast::<u64>())
        };
        if mm == Ok(0) {
            return true;
        }
    }
    let bit = config.task_in_execve_bit;
    if bit != OFFSET_UNKNOWN {
        let byte = unsafe { bpf_probe_read_kernel(task.add((bit / 8) as usize)) };
        if let Ok(byte) = byte {
            let byte: u8 = byte;
            return byte >> (bit % 8) & 1 != 0;
        }
    }
    false
}

/// Copies the user stack from `sp` up, page by page, into `stack` from byte `start`: until
/// at least `max` bytes or the first page that cannot be read (the end of the stack
/// mapping). Returns the bytes copied, at most `max`. `stack` holds `CAP` bytes (a power of
/// two) and one page of slack: whole pages are read even past `max`, so each iteration has
/// one verifier state. Shared with the scheduling probes' off-CPU stack copies.
#[inline(always)]
pub(crate) unsafe fn copy_user_stack<const CAP: usize>(
    stack: *mut u8,
    start: u32,
    sp: u64,
    max: u32,
) -> u32 {
    const PAGE: u32 = STACK_COPY_PAGE as u32;
    // The first read ends at the page boundary above sp; then whole pages.
    let mut size = PAGE - (sp as u32 & (PAGE - 1));
    let mut copied: u32 = 0;
    for _ in 0..(CAP / STACK_COPY_PAGE + 1) {
        let at = start + copied;
        if copied >= max || at as usize >= CAP {
            break;
        }
        // The offset goes through an opaque load and a mask (a no-op after the check above:
        // the size is a power of two) so the compiler cannot add `start` to the pointer
        // outside the loop, where the verifier could not bound it.
        let opaque = at as usize;
        let at = unsafe { core::ptr::read_volatile(&opaque) } & (CAP - 1);
        let ret = unsafe {
            bpf_probe_read_user(stack.add(at).cast(), size, (sp + copied as u64) as *const _)
        };
        if ret != 0 {
            break;
        }
        copied += size;
        size = PAGE;
    }
    if copied > max {
        max
    } else {
        copied
    }
}
