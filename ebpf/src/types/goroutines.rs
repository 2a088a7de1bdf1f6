//! Goroutine events: a uprobe at the entry of the Go runtime's `runtime.casgstatus(gp, old,
//! new)` in each traced Go process sees every goroutine state change the scheduler makes,
//! and keeps per process (key: tgid, in `GOROUTINE_STATS`) cumulative totals:
//! - goroutines created (`_Gdead` -> `_Grunnable` or `_Gwaiting`: `newproc1` readying a
//!   fresh or reused g) and exited (`_Grunning` -> `_Gdead`: `goexit0`);
//! - scheduling latency: the time from a goroutine becoming `_Grunnable` to it becoming
//!   `_Grunning`, what the runtime's `/sched/latencies:seconds` samples, as an exact count,
//!   sum and log-linear histogram (`histogram`);
//! - time blocked per wait reason: from `_Grunning` (or `_Gdead`, a goroutine created
//!   parked) -> `_Gwaiting` to `_Gwaiting` -> `_Grunnable`, by `g.waitreason` (which the
//!   runtime sets before that `casgstatus` in every supported release);
//! - in `GOROUTINE_SITES`, goroutines created per creation site (`g.gopc`, the return
//!   address of the `go` statement, which `newproc1` sets before readying the g);
//! - and, in `GOROUTINE_PARENTS`, goroutines created per parent goroutine (the `goid` of
//!   the goroutine that executed the `go` statement). `newproc1` runs on the system stack
//!   (`systemstack`), so the current g (R14) is the thread's g0 and the parent is
//!   `g0.m.curg`, which `systemstack` checks is the caller before it switches: one path for
//!   every release (Go 1.21+ also stores `newg.parentGoid`, 1.19 does not). A creation with
//!   no `curg` (the runtime's bootstrap starting `runtime.main`) counts under goroutine 0,
//!   as Go's own `parentGoid` (g0's goid) does.
//!
//! Totals are never reset by the kernel: userspace reads them and takes differences, so a
//! read can never race with an increment it would lose.

use crate::histogram::HIST_BUCKETS;

/// Goroutines runnable or blocked at once whose start can be remembered (LRU: the oldest
/// start is forgotten, and its end is then counted as [`counter::START_NOT_SEEN`] or
/// [`counter::BLOCK_START_NOT_SEEN`]).
pub const MAX_SINCE: u32 = 65536;
/// Go processes traced at once.
pub const MAX_GO_PROCESSES: u32 = 1024;
/// Distinct (process, creation site) pairs counted at once; a new site beyond it is a
/// counted loss ([`counter::DROP_SITES_MAP_FULL`]).
pub const MAX_CREATION_SITES: u32 = 16384;
/// Distinct (process, parent goroutine) pairs counted at once; a new parent beyond it is a
/// counted loss ([`counter::DROP_PARENTS_MAP_FULL`]). Entries last until their process
/// exits, so a long trace of a program whose goroutines each start others can fill it.
pub const MAX_PARENTS: u32 = 8192;
/// Wait reasons counted (`runtime.waitReason` is a uint8 whose values stay below 64 in every
/// release 1.19 to 1.27); a larger one is a counted loss.
pub const MAX_WAIT_REASONS: usize = 64;

/// `runtime.g.atomicstatus` values (`runtime/runtime2.go`, the same in every release since
/// Go 1.0 for these).
pub const G_RUNNABLE: u32 = 1;
pub const G_RUNNING: u32 = 2;
pub const G_WAITING: u32 = 4;
pub const G_DEAD: u32 = 6;

/// One goroutine of one process: its `g` address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GKey {
    pub g: u64,
    pub tgid: u32,
    pub _reserved: u32,
}

/// [`Since::reason`] of a goroutine that became runnable (not blocked).
pub const SINCE_RUNNABLE: u32 = u32::MAX;

/// When a goroutine entered its current state (runnable, or blocked for `reason`), by
/// `bpf_ktime_get_ns`, the clock of the runtime's `nanotime`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Since {
    pub ns: u64,
    /// The wait reason it blocked for, or [`SINCE_RUNNABLE`].
    pub reason: u32,
    pub _reserved: u32,
}

/// Where the probe reads a process's `runtime.g` (and `runtime.m`) fields: written by
/// userspace at attach from the layout of that process's Go release (never guessed),
/// read-only in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GOffsets {
    /// `g.waitreason` (uint8).
    pub waitreason: u32,
    /// `g.gopc` (uintptr).
    pub gopc: u32,
    /// `g.m` (*m), `m.curg` (*g) and `g.goid` (uint64): the parent goroutine's id.
    pub g_m: u32,
    pub m_curg: u32,
    pub goid: u32,
    pub _reserved: u32,
}

/// Blocked time for one wait reason: how many blocks ended, and their sum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    pub count: u64,
    pub ns: u64,
}

/// Cumulative goroutine totals of one process since its probes were attached, with the
/// offsets the probe needs for it (one lookup serves both).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineStats {
    pub offsets: GOffsets,
    pub created: u64,
    pub exited: u64,
    /// Runnable-to-running waits: how many, and their sum.
    pub sched_waits: u64,
    pub sched_wait_ns: u64,
    /// The same waits by `histogram` bucket.
    pub buckets: [u64; HIST_BUCKETS as usize],
    /// Blocked time by wait reason (`g.waitreason`).
    pub blocked: [Blocked; MAX_WAIT_REASONS],
}

impl GoroutineStats {
    /// Zero totals for a process whose `g` fields are at `offsets`.
    pub fn new(offsets: GOffsets) -> Self {
        GoroutineStats {
            offsets,
            created: 0,
            exited: 0,
            sched_waits: 0,
            sched_wait_ns: 0,
            buckets: [0; HIST_BUCKETS as usize],
            blocked: [Blocked { count: 0, ns: 0 }; MAX_WAIT_REASONS],
        }
    }
}

/// A creation site of one process: the `g.gopc` of the goroutines it created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    pub tgid: u32,
    pub _reserved: u32,
    pub pc: u64,
}

/// A parent goroutine of one process: the `goid` of the goroutine whose `go` statements
/// created the goroutines counted (0: created with no goroutine running, by the runtime).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentKey {
    pub tgid: u32,
    pub _reserved: u32,
    pub goid: u64,
}

/// Indices of the per-CPU `GOROUTINE_COUNTERS` array.
pub mod counter {
    /// `runtime.casgstatus` calls seen.
    pub const TRANSITIONS: u32 = 0;
    /// A goroutine started running without its becoming runnable seen (it was runnable
    /// before the probes were attached, or its start was evicted): no latency recorded.
    pub const START_NOT_SEEN: u32 = 1;
    /// The process had no totals entry and the map was full: an event was lost.
    pub const DROP_STATS_MAP_FULL: u32 = 2;
    /// A goroutine woke without its blocking seen (it blocked before the probes were
    /// attached, or its start was evicted): no blocked time recorded.
    pub const BLOCK_START_NOT_SEEN: u32 = 3;
    /// A `g.waitreason` of 64 or more: its blocked time was not recorded.
    pub const DROP_WAIT_REASON_OUT_OF_RANGE: u32 = 4;
    /// A `g` or `m` field could not be read: a blocked time, a creation site or a
    /// creation's parent goroutine was lost.
    pub const DROP_G_READ_FAILED: u32 = 5;
    /// A new creation site did not fit in `GOROUTINE_SITES`: its creation went uncounted
    /// by site (it still counts in `created`).
    pub const DROP_SITES_MAP_FULL: u32 = 6;
    /// A new parent goroutine did not fit in `GOROUTINE_PARENTS`: its creation went
    /// uncounted by parent (it still counts in `created`).
    pub const DROP_PARENTS_MAP_FULL: u32 = 7;
    pub const COUNT: u32 = 8;

    pub const NAMES: [&str; COUNT as usize] = [
        "goroutine_transitions",
        "goroutine_start_not_seen",
        "drop_goroutine_stats_map_full",
        "goroutine_block_start_not_seen",
        "drop_goroutine_wait_reason_out_of_range",
        "drop_goroutine_g_read_failed",
        "drop_goroutine_sites_map_full",
        "drop_goroutine_parents_map_full",
    ];
}

crate::user_pod!(
    GKey,
    Since,
    GOffsets,
    Blocked,
    GoroutineStats,
    SiteKey,
    ParentKey
);
