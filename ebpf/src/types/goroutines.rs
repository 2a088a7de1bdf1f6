//! Goroutine events: a uprobe at the entry of the Go runtime's `runtime.casgstatus(gp, old,
//! new)` in each traced Go process sees every goroutine state change the scheduler makes,
//! and keeps per process (key: tgid, in `GOROUTINE_STATS`) cumulative totals:
//! - goroutines created (`_Gdead` -> `_Grunnable` or `_Gwaiting`: `newproc1` readying a
//!   fresh or reused g) and exited (`_Grunning` -> `_Gdead`: `goexit0`);
//! - scheduling latency: the time from a goroutine becoming `_Grunnable` to it becoming
//!   `_Grunning`, what the runtime's `/sched/latencies:seconds` samples, as an exact count,
//!   sum and log-linear histogram (`histogram`).
//!
//! Totals are never reset by the kernel: userspace reads them and takes differences, so a
//! read can never race with an increment it would lose.

use crate::histogram::HIST_BUCKETS;

/// Goroutines runnable at once that can be timed (LRU: the oldest start is forgotten, and
/// its end is then counted as [`counter::START_NOT_SEEN`]).
pub const MAX_RUNNABLE: u32 = 65536;
/// Go processes traced at once.
pub const MAX_GO_PROCESSES: u32 = 1024;

/// `runtime.g.atomicstatus` values (`runtime/runtime2.go`, the same in every release since
/// Go 1.0 for these).
pub const G_RUNNABLE: u32 = 1;
pub const G_RUNNING: u32 = 2;
pub const G_WAITING: u32 = 4;
pub const G_DEAD: u32 = 6;

/// Where a goroutine became runnable: its `g` address in one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunnableKey {
    pub g: u64,
    pub tgid: u32,
    pub _reserved: u32,
}

/// Cumulative goroutine totals of one process since its probes were attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineStats {
    pub created: u64,
    pub exited: u64,
    /// Runnable-to-running waits: how many, and their sum.
    pub sched_waits: u64,
    pub sched_wait_ns: u64,
    /// The same waits by `histogram` bucket.
    pub buckets: [u64; HIST_BUCKETS as usize],
}

impl Default for GoroutineStats {
    fn default() -> Self {
        GoroutineStats {
            created: 0,
            exited: 0,
            sched_waits: 0,
            sched_wait_ns: 0,
            buckets: [0; HIST_BUCKETS as usize],
        }
    }
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
    pub const COUNT: u32 = 3;

    pub const NAMES: [&str; COUNT as usize] = [
        "goroutine_transitions",
        "goroutine_start_not_seen",
        "drop_goroutine_stats_map_full",
    ];
}

crate::user_pod!(RunnableKey, GoroutineStats);
