//! Scheduling: off-CPU time with stacks, run-queue latency, per-thread scheduling totals,
//! from the `sched_switch`, `sched_wakeup` and `sched_wakeup_new` BTF tracepoints.
//!
//! Every observed thread moves through three states, each transition timed in the kernel:
//! on-CPU (switch-in to switch-out), blocked (a voluntary switch-out, `prev_state` not
//! `TASK_RUNNING`, to its wakeup) and runnable (wakeup, or preemption, to the next switch-in).
//! Nothing is sent per switch; userspace reads totals from maps:
//! - **off-CPU stacks** ([`OffCpuKey`] -> [`OffCpuValue`] in `OFFCPU_COUNTS_<n>`): blocked time
//!   and count per (thread, kernel stack, user stack) at the switch-out that blocked. The first
//!   time a key is seen in a generation, one copy of its user stack ([`OffCpuSample`]) goes on
//!   the shared `EVENTS` ring buffer for userspace unwinding, as CPU samples do.
//! - **run-queue latency**: a log-linear histogram ([`RunqHistogram`], see `histogram`) per
//!   process in `RUNQ_HIST_<n>`.
//! - **per-thread totals** ([`ThreadSchedStats`] by tid in `THREAD_STATS_<n>`).
//!
//! `<n>` is `SchedConfig::generation & 1`: every map the kernel adds to comes in two, the
//! kernel adds to the current generation's, and userspace drains the other one a full
//! period after the kernel stopped writing it, so reading never races with an increment.

use crate::{
    cpu::{UserRegs, STACK_COPY_PAGE},
    histogram::HIST_BUCKETS,
    COMM_LEN,
};

/// Threads tracked at once (state by `task_struct` address; inserts past it are counted).
pub const MAX_THREADS: u32 = 32768;
/// Distinct off-CPU keys per generation map.
pub const MAX_OFFCPU_KEYS: u32 = 16384;
/// Entries in each off-CPU stack-trace map (user and kernel, per generation).
pub const MAX_OFFCPU_STACK_TRACES: u32 = 8192;
/// Threads with totals per generation map.
pub const MAX_THREAD_STATS: u32 = 32768;
/// Processes with a run-queue histogram per generation map.
pub const MAX_RUNQ_HISTOGRAMS: u32 = 1024;
/// Most bytes of user stack copied per new off-CPU key. Less than a CPU sample's: a thread
/// blocks in a system call made near its stack's top far more often than deep in
/// recursion, and the copy is made under the scheduler's run-queue lock. Copies stop
/// earlier at the stack's end (the end of its mapping, or a goroutine's `stack.hi`).
pub const OFFCPU_STACK_COPY_BYTES: usize = 64 * 1024;
const _: () = assert!(
    OFFCPU_STACK_COPY_BYTES.is_power_of_two(),
    "the copy masks offsets"
);

/// `SchedConfig::flags`: record off-CPU time by stack (keys, counts, stack copies).
pub const SCHED_OFFCPU_STACKS: u32 = 1;
/// `SchedConfig::flags`: record run-queue histograms and per-thread totals.
pub const SCHED_RUNQ_STATS: u32 = 2;

/// Kind tag of an [`OffCpuSample`] on the event ring buffer (CPU samples use 16).
pub const EVENT_OFFCPU_STACK: u32 = 17;

/// Scheduling settings, index 0 of the `SCHED_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedConfig {
    /// Incremented by userspace at each rotation; `generation & 1` selects the maps the kernel
    /// writes, and off-CPU keys carry it so they are unique over time.
    pub generation: u32,
    /// [`SCHED_OFFCPU_STACKS`] | [`SCHED_RUNQ_STATS`]; 0 disables everything.
    pub flags: u32,
    /// Bytes of user stack copied per new off-CPU key, at most [`OFFCPU_STACK_COPY_BYTES`].
    pub stack_copy_bytes: u32,
    /// Byte offsets of `task_struct.pid` and `.tgid` (from the kernel's BTF), to track new
    /// threads from `sched_wakeup_new` on; 0: unknown, new threads are tracked from their
    /// first switch-out.
    pub task_pid_offset: u32,
    pub task_tgid_offset: u32,
    pub _reserved: u32,
}

/// Where a thread blocked. Negative stack ids mean none (-1) or a counted failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OffCpuKey {
    pub pid: u32,
    pub tid: u32,
    /// In `OFFCPU_KERNEL_STACKS_<generation & 1>`.
    pub kernel_stack_id: i32,
    /// Frame-pointer walk in `OFFCPU_USER_STACKS_<generation & 1>`.
    pub user_stack_id: i32,
    /// User registers saved at kernel entry (0 for kernel threads): they tell apart stacks
    /// the frame-pointer walk confuses, and start userspace's unwinding of the copy.
    pub user_ip: u64,
    pub user_sp: u64,
    /// `SchedConfig::generation` at the switch-out.
    pub generation: u32,
    pub _reserved: u32,
}

/// Blocked time of one key. A key appears with zero values in its own generation's map as
/// soon as it is seen (that entry is what makes its stack copy be sent once).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuValue {
    pub total_ns: u64,
    pub count: u64,
}

/// Totals of one thread (key: tid) over the time one generation was current.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSchedStats {
    pub pid: u32,
    pub _reserved: u32,
    pub oncpu_ns: u64,
    /// Blocked time: voluntary switch-out to wakeup.
    pub offcpu_ns: u64,
    /// Runnable time: wakeup or preemption to switch-in.
    pub runq_wait_ns: u64,
    pub runq_waits: u64,
    /// Switch-outs that blocked.
    pub voluntary_switches: u64,
    /// Switch-outs that left the thread runnable (preempted, or yielded).
    pub involuntary_switches: u64,
    pub comm: [u8; COMM_LEN],
}

/// Run-queue latency histogram of one process (key: tgid), buckets of `histogram`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunqHistogram {
    pub buckets: [u64; HIST_BUCKETS as usize],
}

impl Default for RunqHistogram {
    fn default() -> Self {
        RunqHistogram {
            buckets: [0; HIST_BUCKETS as usize],
        }
    }
}

/// Fixed part of an [`OffCpuSample`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuHeader {
    /// Always [`EVENT_OFFCPU_STACK`].
    pub kind: u32,
    /// Valid bytes of stack after the header, from `key.user_sp` up; 0 when the copy failed.
    pub stack_len: u32,
    pub key: OffCpuKey,
    /// `regs.ip`/`sp` equal `key.user_ip`/`user_sp`; `bp` seeds frame-pointer unwinding.
    pub regs: UserRegs,
    pub comm: [u8; COMM_LEN],
}

/// The user stack of a new off-CPU key, sent once per key, as built in the per-CPU scratch
/// map. On the ring buffer it is only `header` plus `header.stack_len` bytes of `stack`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OffCpuSample {
    pub header: OffCpuHeader,
    /// One page of slack past [`OFFCPU_STACK_COPY_BYTES`] lets the verifier bound page-sized
    /// reads.
    pub stack: [u8; OFFCPU_STACK_COPY_BYTES + STACK_COPY_PAGE],
}

/// Indices of the per-CPU `SCHED_COUNTERS` array: what was recorded, and every loss.
pub mod counter {
    /// Blocked intervals ended by a wakeup and added to an off-CPU key.
    pub const OFFCPU_BLOCKS: u32 = 0;
    /// Stack copies sent for new off-CPU keys.
    pub const OFFCPU_COPIES: u32 = 1;
    /// Run-queue waits recorded (switch-ins of runnable threads).
    pub const RUNQ_WAITS: u32 = 2;
    /// A switch-in of a thread last seen blocking, without its wakeup: its blocked time ran
    /// to the switch-in and no run-queue wait was recorded.
    pub const WAKEUP_NOT_SEEN: u32 = 3;
    /// The thread state map was full: a thread is not tracked.
    pub const DROP_THREAD_MAP_FULL: u32 = 4;
    /// The off-CPU count map was full: a block's time was lost.
    pub const DROP_OFFCPU_MAP_FULL: u32 = 5;
    /// The histogram map was full: a run-queue wait is missing from its process histogram.
    pub const DROP_HIST_MAP_FULL: u32 = 6;
    /// The per-thread totals map was full: an update of a thread's totals was lost.
    pub const DROP_STATS_MAP_FULL: u32 = 7;
    /// No kernel stack id for an off-CPU key (stack map full or collision).
    pub const DROP_KERNEL_STACK: u32 = 8;
    /// No frame-pointer user stack id for an off-CPU key.
    pub const DROP_USER_STACK: u32 = 9;
    /// Ring buffer full: a new key's stack copy was lost (its time is still counted).
    pub const DROP_RINGBUF_FULL: u32 = 10;
    /// The user stack could not be copied (sent with `stack_len` 0).
    pub const DROP_STACK_COPY: u32 = 11;
    pub const COUNT: u32 = 12;

    /// Names, by index (`drop_` ones are losses). Prefixed `sched_` where the name would
    /// otherwise repeat a CPU profiler counter.
    pub const NAMES: [&str; COUNT as usize] = [
        "offcpu_blocks",
        "offcpu_copies",
        "runq_waits",
        "wakeup_not_seen",
        "drop_thread_map_full",
        "drop_offcpu_map_full",
        "drop_hist_map_full",
        "drop_stats_map_full",
        "drop_sched_kernel_stack",
        "drop_sched_user_stack",
        "drop_sched_ringbuf_full",
        "drop_sched_stack_copy",
    ];
}

crate::user_pod!(
    SchedConfig,
    OffCpuKey,
    OffCpuValue,
    ThreadSchedStats,
    RunqHistogram,
    OffCpuHeader,
    OffCpuSample
);
