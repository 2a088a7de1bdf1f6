//! On-CPU sampling: a perf_event program on the software cpu-clock event.
//!
//! Two paths, chosen per sample:
//! - **counted** ([`StackCountKey`] -> [`StackCount`] in `CPU_COUNTS`): frame-pointer user stack
//!   and kernel stack ids, aggregated in the kernel so cost does not grow with samples. Used where
//!   frame pointers suffice: kernel threads, and every process with `--unwind fp`.
//! - **copied** ([`StackSample`] on `CPU_EVENTS`): user registers and the top of the user stack,
//!   unwound in userspace with `.eh_frame` and Go's pclntab, which frame pointers get wrong
//!   (frameless leaves, glibc built without frame pointers).

use crate::COMM_LEN;

/// Bytes of user stack copied per sample on the copied path.
pub const STACK_COPY_BYTES: usize = 16 * 1024;
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
    /// Frame-pointer user stack id in `USER_STACKS_<epoch>`: extends the copied stack when the
    /// copy is too short to unwind to the root.
    pub user_stack_id: i32,
    /// Valid bytes in `StackSample::stack`, starting at `regs.sp`; 0 when the copy failed.
    pub stack_len: u32,
    /// The `CpuConfig::epoch` of the stack ids.
    pub epoch: u32,
    pub _reserved: u32,
    pub regs: UserRegs,
    pub comm: [u8; COMM_LEN],
}

/// A sample on the copied path.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackSample {
    pub header: SampleHeader,
    pub stack: [u8; STACK_COPY_BYTES],
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
    /// The user stack could not be copied: unwound from the frame-pointer stack only.
    pub const DROP_STACK_COPY: u32 = 8;
    /// The target map was full when a child was forked: the child is not observed.
    pub const DROP_TARGET_MAP_FULL: u32 = 9;
    /// Process events (exec/exit) lost to a full ring buffer.
    pub const DROP_PROCESS_EVENT: u32 = 10;
    pub const COUNT: u32 = 11;

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
