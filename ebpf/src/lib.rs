//! The `#[repr(C)]` types loupe's kernel programs share with userspace, and nothing else.
//!
//! One module per capability, mirroring `probes/` (kernel side) and the daemon's `collectors/`
//! (user side). Both sides compile these exact definitions, so a layout can never drift.
#![no_std]

#[path = "types/cpu.rs"]
pub mod cpu;
#[path = "types/goroutines.rs"]
pub mod goroutines;
#[path = "types/histogram.rs"]
pub mod histogram;
#[path = "types/sched.rs"]
pub mod sched;
#[path = "types/targets.rs"]
pub mod targets;

/// Length of a task's `comm` as the kernel stores it.
pub const COMM_LEN: usize = 16;

/// Implements `aya::Pod` for shared plain-old-data types in userspace builds.
#[cfg(feature = "user")]
macro_rules! user_pod {
    ($($ty:ty),* $(,)?) => { $(unsafe impl aya::Pod for $ty {})* };
}
#[cfg(not(feature = "user"))]
macro_rules! user_pod {
    ($($ty:ty),* $(,)?) => {};
}
pub(crate) use user_pod;
