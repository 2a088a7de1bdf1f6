//! Which processes a capability observes; shared by every capability.
//!
//! The kernel keeps a `TARGETS` hash map from tgid to flags. With `TargetConfig::filter` off,
//! every process is observed (`--all`). Children of a process with `FOLLOW_CHILDREN` are added
//! as targets at fork, in the kernel, so a launched command is traced from its first
//! instruction and its descendants are never missed.

/// Maximum number of target processes (bounded map; inserts past it are counted drops).
pub const MAX_TARGETS: u32 = 16384;

/// Flag: observe this process.
pub const TARGET_OBSERVE: u8 = 1;
/// Flag: every child this process forks becomes a target (observed, and following its own
/// children), or, if this process is not observed itself (loupe launching a command), a
/// target from its exec on, so loupe's own code before the exec is never sampled.
pub const TARGET_FOLLOW_CHILDREN: u8 = 2;
/// Flag: becomes `TARGET_OBSERVE | TARGET_FOLLOW_CHILDREN` when the process execs.
pub const TARGET_OBSERVE_AFTER_EXEC: u8 = 4;

/// Global target settings, index 0 of the `TARGET_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetConfig {
    /// 0: observe every process; 1: only those in `TARGETS` with `TARGET_OBSERVE`.
    pub filter: u32,
    /// Byte offset of `child_pid` in the `sched:sched_process_fork` record (read from tracefs).
    pub fork_child_pid_offset: u32,
}

/// Kind tag of a process lifecycle event (first field of [`ProcessEvent`]).
pub const EVENT_PROCESS_EXEC: u32 = 1;
pub const EVENT_PROCESS_EXIT: u32 = 2;

/// A process exec'd or exited, sent on the capability's event ring buffer so userspace
/// reloads (or stops expecting) its memory mappings in order with its samples.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessEvent {
    pub kind: u32,
    pub pid: u32,
}

crate::user_pod!(TargetConfig, ProcessEvent);
