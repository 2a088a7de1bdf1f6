//! On-CPU sampling: a perf_event program on the software cpu-clock event of every CPU.
//!
//! Each sample of an observed task takes one of two paths (see `loupe_ebpf::cpu`):
//! counted in `CPU_COUNTS` by (pid, tid, user stack id, kernel stack id) where frame
//! pointers suffice, or sent with its user registers and the top of its user stack on
//! `EVENTS` for userspace unwinding with `.eh_frame`/pclntab.

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs},
    },
    macros::{map, perf_event},
    maps::{Array, HashMap, StackTrace},
    programs::{tracing::StackIdContext, PerfEventContext},
};
use loupe_ebpf::cpu::{
    counter, CpuConfig, StackCount, StackCountKey, StackSample, UserRegs, EVENT_STACK_SAMPLE,
    MAX_STACK_COUNTS, MAX_STACK_TRACES, STACK_COPY_BYTES, UNWIND_FRAME_POINTERS,
};

use crate::{counters, targets};

#[map(name = "CPU_CONFIG")]
static CPU_CONFIG: Array<CpuConfig> = Array::with_max_entries(1, 0);

#[map(name = "CPU_COUNTS")]
static CPU_COUNTS: HashMap<StackCountKey, StackCount> =
    HashMap::with_max_entries(MAX_STACK_COUNTS, 0);

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
        Some(user_regs) if config.unwind != UNWIND_FRAME_POINTERS => send_copied(
            &ctx,
            config,
            epoch,
            tgid,
            tid,
            kernel_stack_id,
            user_regs,
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

/// The task's user registers: the sampled ones, or those saved at kernel entry.
#[inline(always)]
fn current_user_regs(regs: &pt_regs) -> Option<UserRegs> {
    if in_user_mode(regs) {
        return Some(UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        });
    }
    saved_user_regs()
}

/// The current task's user registers saved at kernel entry; None for kernel threads.
/// Shared with the scheduling probes, which run in the kernel on behalf of the task.
#[inline(always)]
pub(crate) fn saved_user_regs() -> Option<UserRegs> {
    let saved = unsafe {
        let task = bpf_get_current_task_btf();
        let ptr = bpf_task_pt_regs(task) as *const pt_regs;
        bpf_probe_read_kernel(ptr).ok()?
    };
    // Kernel threads have no user half.
    in_user_mode(&saved).then_some(UserRegs {
        ip: saved.rip,
        sp: saved.rsp,
        bp: saved.rbp,
    })
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
fn send_copied(
    ctx: &PerfEventContext,
    config: &CpuConfig,
    epoch: u32,
    pid: u32,
    tid: u32,
    kernel_stack_id: i32,
    regs: UserRegs,
    comm: [u8; 16],
) {
    let Some(mut entry) = targets::EVENTS.reserve::<StackSample>(0) else {
        counters::increment(counter::DROP_RINGBUF_FULL);
        return;
    };
    let sample = entry.as_mut_ptr();
    let stack_len =
        unsafe { copy_user_stack(&mut (*sample).stack, regs.sp, config.stack_copy_bytes) };
    if stack_len == 0 {
        counters::increment(counter::DROP_STACK_COPY);
    }
    // A copy that ended before the limit reached the top of the stack: it holds every frame.
    // Otherwise the kernel's frame-pointer walk may be needed beyond it.
    let user_stack_id = if stack_len == 0 || stack_len >= config.stack_copy_bytes {
        user_stack_id(ctx, epoch)
    } else {
        NO_STACK
    };
    unsafe {
        let header = &mut (*sample).header;
        header.kind = EVENT_STACK_SAMPLE;
        header.pid = pid;
        header.tid = tid;
        header.kernel_stack_id = kernel_stack_id;
        header.user_stack_id = user_stack_id;
        header.stack_len = stack_len;
        header.epoch = epoch;
        header.regs = regs;
        header.comm = comm;
    }
    entry.submit(targets::sample_wakeup(pid));
    counters::increment(counter::SAMPLES_COPIED);
}

/// Copies the user stack above `sp`, up to `limit` bytes. A read fails whole if it crosses
/// the end of the stack mapping, which is page-aligned: so try reads that end on each of the
/// next few page boundaries, longest first, and the one that ends at the mapping's end wins.
/// Shared with the scheduling probes' off-CPU stack copies.
#[inline(always)]
pub(crate) unsafe fn copy_user_stack(dst: &mut [u8; STACK_COPY_BYTES], sp: u64, limit: u32) -> u32 {
    const PAGE: u32 = 4096;
    let limit = if limit as usize > STACK_COPY_BYTES {
        STACK_COPY_BYTES as u32
    } else {
        limit
    };
    let to_boundary = PAGE - (sp as u32 & (PAGE - 1));
    let mut extra_pages = STACK_COPY_BYTES as u32 / PAGE;
    for _ in 0..(STACK_COPY_BYTES / 4096 + 1) {
        let mut size = to_boundary + extra_pages * PAGE;
        if size > limit {
            size = limit;
        }
        if size > 0 && size as usize <= STACK_COPY_BYTES {
            let ret = unsafe { bpf_probe_read_user(dst.as_mut_ptr().cast(), size, sp as *const _) };
            if ret == 0 {
                return size;
            }
        }
        if extra_pages == 0 {
            break;
        }
        extra_pages -= 1;
    }
    0
}
