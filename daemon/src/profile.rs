//! The aggregate every renderer reads: symbolized stacks with counts.
//!
//! Collectors produce it (after unwinding and symbolization); `render::*` turn it into files.
//! Frames are interned once in `frames`; stacks refer to them by index, leaf first.

use std::time::{Duration, SystemTime};

/// Index into [`Profile::frames`].
pub type FrameId = u32;

/// Where a frame's code lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    User,
    Kernel,
}

/// One symbolized frame. Inline frames are separate `Frame`s with `inlined: true`, placed
/// leafward of the frame of the function they were inlined into.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Frame {
    /// Function name, or `module+0xoffset` when it cannot be named (never dropped).
    pub function: String,
    /// File name of the module (`libc.so.6`, `[kernel]`, ...).
    pub module: String,
    /// Source file, when debug info or pclntab gives it.
    pub file: Option<String>,
    /// Source line, when known.
    pub line: Option<u32>,
    pub inlined: bool,
    pub kind: FrameKind,
}

/// A distinct stack of one thread, with how many times it was sampled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    pub pid: u32,
    pub tid: u32,
    /// Process name (the thread group leader's comm when known, else the thread's).
    pub comm: String,
    /// Leaf first.
    pub stack: Vec<FrameId>,
    pub count: u64,
}

/// What kind of value the samples count; later capabilities add more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileType {
    Cpu,
}

/// A finished profile.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Profile {
    pub profile_type: ProfileType,
    /// What was profiled, for titles: `pid 1234`, `all processes`, `command: make -j2`.
    pub target: String,
    pub start_time: SystemTime,
    pub duration: Duration,
    /// Sampling frequency; each sample stands for `1 / frequency_hz` of CPU time.
    pub frequency_hz: u64,
    pub frames: Vec<Frame>,
    pub samples: Vec<Sample>,
    /// Loss counters by name (`drop_ringbuf_full`, ...), all reported even when zero.
    pub drops: Vec<(String, u64)>,
}

impl Profile {
    /// CPU time one sample stands for.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / self.frequency_hz.max(1))
    }

    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}
