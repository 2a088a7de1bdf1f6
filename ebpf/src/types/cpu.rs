//! On-CPU sampling: a perf_event program on the software cpu-clock event.
//!
//! Two paths, chosen per sample:
//! - **counted** ([`StackCountKey`] -> [`StackCount`] in `CPU_COUNTS`): frame-pointer user stack
//!   and kernel stack ids, aggregated in the kernel so cost does not grow with samples. Used where
//!   frame pointers suffice: kernel threads, and every process with `--unwind fp`.
//! - **copied** ([`StackSample`] on `EVENTS`): user registers and the user stack from the stack
//!   pointer up to the stack's end (at most [`STACK_COPY_BYTES`]), unwound in userspace with
//!   `.eh_frame` and Go's pclntab, which frame pointers get wrong (frameless leaves, glibc built
//!   without frame pointers). The record is as long as the copy: shallow stacks stay cheap.

use crate::COMM_LEN;

/// Most bytes of user stack copied per sample on the copied path: enough for the deep
/// stacks of compilers (rustc's query recursion) and 300-deep Go recursions. Copies stop
/// earlier at the stack's end (the end of its mapping, or a goroutine's `stack.hi`).
pub const STACK_COPY_BYTES: usize = 256 * 1024;
const _: () = assert!(
    STACK_COPY_BYTES.is_power_of_two(),
    "the sampler masks offsets"
);
/// Copies go page by page (a read fails whole if it crosses the end of the stack mapping).
pub const STACK_COPY_PAGE: usize = 4096;
/// Threads with a second stack region to copy (see `SampleHeader::region2_addr`).
pub const MAX_STACK_HINTS: u32 = 4096;
/// `CpuConfig` task_struct offsets not found in the kernel's BTF.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;
/// Maximum distinct (pid, tid, user stack, kernel stack) keys counted in the kernel.
pub const MAX_STACK_COUNTS: u32 = 32768;
/// Entries in each stack-trace map (user and kernel).
pub const MAX_STACK_TRACES: u32 = 16384;
/// Frames per stack in the stack-trace maps (the kernel's limit for `bpf_get_stackid`).
pub const MAX_STACK_DEPTH: u32 = 127;

/// `CpuConfig::unwind`: copy user stacks for userspace unwinding (correct without frame pointers).
pub const UNWIND_COPY: u32 = 0;
/// `CpuConfig::unwind`: frame pointers only, counted in the kernel (cheapest).
pub const UNWIND_FRAME_POINTERS: u32 = 1;

/// Kind tag of a [`StackSample`] on the event ring buffer (see `targets::EVENT_*` for others).
pub const EVENT_STACK_SAMPLE: u32 = 16;

/// CPU profiler settings, index 0 of the `CPU_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuConfig {
    /// [`UNWIND_COPY`] or [`UNWIND_FRAME_POINTERS`].
    pub unwind: u32,
    /// Bytes of user stack to copy, at most [`STACK_COPY_BYTES`].
    pub stack_copy_bytes: u32,
    /// Which of the two sets of stack maps (`*_STACKS_0`/`_1`) new samples use. Userspace
    /// flips it every drain: the retired set is read, then cleared a full period later, so
    /// stack maps never fill up on long profiles and no in-flight id is ever reused.
    pub epoch: u32,
    /// Byte offset of `task_struct.mm` (from the kernel's BTF), or [`OFFSET_UNKNOWN`]:
    /// a task without one (exiting, past `exit_mm`) has no user stack to copy.
    pub task_mm_offset: u32,
    /// Bit offset of the `task_struct.in_execve` bit, or [`OFFSET_UNKNOWN`]: during execve
    /// the saved user registers may refer to the address space being replaced.
    pub task_in_execve_bit: u32,
}

/// Key of the in-kernel sample counts. A negative stack id means "none" (`-1`: not
/// collected, e.g. no user stack for a kernel thread) or a counted failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackCountKey {
    pub pid: u32,
    pub tid: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    /// The `CpuConfig::epoch` of the stack ids (and of the count: keys of a retired epoch
    /// are no longer incremented, so draining them loses nothing).
    pub epoch: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCount {
    pub count: u64,
    pub comm: [u8; COMM_LEN],
}

/// User registers at the sample (or at kernel entry, when the sample hit kernel code).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Fixed part of a [`StackSample`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// Always [`EVENT_STACK_SAMPLE`].
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// Kernel stack id in `KERNEL_STACKS_<epoch>`, or negative (none / failed).
    pub kernel_stack_id: i32,
    /// Unused on the copied path (always -1): a frame-pointer walk past the end of a copy
    /// invents callers for code without frame pointers, so none is spliced on.
    pub user_stack_id: i32,
    /// Valid bytes of stack after the header, starting at `regs.sp`; 0 when the copy failed.
    pub stack_len: u32,
    /// The `CpuConfig::epoch` of the stack ids.
    pub epoch: u32,
    /// `SAMPLE_*` flags.
    pub flags: u32,
    pub regs: UserRegs,
    pub comm: [u8; COMM_LEN],
    /// Where the last `region2_len` bytes of the copy come from. A thread that runs on a
    /// stack of its own making (rustc's `stacker` segments, coroutines) has its outer frames
    /// on another stack; userspace learns that address from an unwind that needed it and
    /// asks for it (`STACK_HINTS`, by thread), so later samples of the thread carry both.
    pub region2_addr: u64,
    pub region2_len: u32,
    pub _reserved: u32,
}

/// `SampleHeader::flags`: the task had no user address space to copy from (it was past
/// `exit_mm` in exit, or in execve): a kernel-only sample, not a loss.
pub const SAMPLE_NO_USER_STACK: u32 = 1;
/// `SampleHeader::flags`: the copy stopped at [`STACK_COPY_BYTES`] before the stack's end.
pub const SAMPLE_STACK_CUT: u32 = 2;

/// A sample on the copied path, as built in the per-CPU scratch map. On the ring buffer it
/// is only `header` plus `header.stack_len` bytes of `stack`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackSample {
    pub header: SampleHeader,
    /// One page of slack past [`STACK_COPY_BYTES`] lets the verifier bound page-sized reads.
    pub stack: [u8; STACK_COPY_BYTES + STACK_COPY_PAGE],
}

/// Indices of the per-CPU `CPU_COUNTERS` array. Every sample taken increments exactly one of
/// the `SAMPLES_*` counters; every loss increments a `DROP_*` counter, so nothing is silent.
pub mod counter {
    /// Samples of observed tasks, counted in the kernel.
    pub const SAMPLES_COUNTED: u32 = 0;
    /// Samples of observed tasks, sent with a stack copy.
    pub const SAMPLES_COPIED: u32 = 1;
    /// Samples that hit the idle task.
    pub const SAMPLES_IDLE: u32 = 2;
    /// Samples of tasks that are not targets.
    pub const SAMPLES_NOT_TARGET: u32 = 3;
    /// Event ring buffer full: the sample was lost.
    pub const DROP_RINGBUF_FULL: u32 = 4;
    /// The in-kernel count map was full: the sample was lost.
    pub const DROP_COUNT_MAP_FULL: u32 = 5;
    /// No kernel stack id (stack map full or collision): kernel frames lost.
    pub const DROP_KERNEL_STACK: u32 = 6;
    /// No frame-pointer user stack id: user frames lost on the counted path.
    pub const DROP_USER_STACK: u32 = 7;
    /// The user stack could not be copied though the task had user memory: user frames lost
    /// but the leaf.
    pub const DROP_STACK_COPY: u32 = 8;
    /// The target map was full when a child was forked: the child is not observed.
    pub const DROP_TARGET_MAP_FULL: u32 = 9;
    /// Process events (exec/exit) lost to a full ring buffer.
    pub const DROP_PROCESS_EVENT: u32 = 10;
    /// Copied-path samples of tasks with no user address space (exiting or in execve):
    /// kernel frames only (counted within `SAMPLES_COPIED`).
    pub const SAMPLES_KERNEL_ONLY: u32 = 11;
    pub const COUNT: u32 = 12;

    /// Human-readable names, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "samples_counted",
        "samples_copied",
        "samples_idle",
        "samples_not_target",
        "drop_ringbuf_full",
        "drop_count_map_full",
        "drop_kernel_stack",
        "drop_user_stack",
        "drop_stack_copy",
        "drop_target_map_full",
        "drop_process_event",
        "samples_kernel_only",
    ];
}

crate::user_pod!(
    CpuConfig,
    StackCountKey,
    StackCount,
    UserRegs,
    SampleHeader,
    StackSample
);
