//! The profile model every renderer reads: symbolized stacks, each with one value per sample
//! type (pprof's model), plus labels.
//!
//! Collectors produce it through the engine (`engine::`) and the aggregate (`aggregate`);
//! `render::*` turn it into files. Frames are interned once in `frames`; stacks refer to them
//! by index, leaf first.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

/// Index into [`Profile::frames`].
pub type FrameId = u32;

/// Where a frame's code lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    User,
    Kernel,
    /// A frame loupe adds to tell stacks apart (`[off-cpu]` in a wall-clock profile,
    /// `[truncated]` where a stack could not be completed).
    Synthetic,
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

/// What one value of a sample measures, as pprof spells it (`cpu`/`nanoseconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ValueType {
    pub kind: &'static str,
    pub unit: &'static str,
}

const SAMPLES: ValueType = ValueType {
    kind: "samples",
    unit: "count",
};
const CPU_NS: ValueType = ValueType {
    kind: "cpu",
    unit: "nanoseconds",
};
const OFF_CPU_NS: ValueType = ValueType {
    kind: "off_cpu",
    unit: "nanoseconds",
};
const WALL_NS: ValueType = ValueType {
    kind: "wall",
    unit: "nanoseconds",
};
const CONTENTIONS: ValueType = ValueType {
    kind: "contentions",
    unit: "count",
};
const DELAY_NS: ValueType = ValueType {
    kind: "delay",
    unit: "nanoseconds",
};
const GOROUTINES: ValueType = ValueType {
    kind: "goroutine",
    unit: "count",
};

/// What a profile's samples measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileType {
    /// Sampled on-CPU stacks: `[samples/count, cpu/nanoseconds]`.
    Cpu,
    /// Time blocked off-CPU, per stack at the moment the thread blocked: `[off_cpu/nanoseconds]`.
    OffCpu,
    /// On-CPU and off-CPU time in one view, told apart by an `[on-cpu]`/`[off-cpu]` frame
    /// below the process name: `[wall/nanoseconds]`.
    Wall,
    /// Lock contention: `[contentions/count, delay/nanoseconds]`.
    #[allow(dead_code)] // The lock capability (a later issue) produces it.
    Lock,
    /// Live goroutines per stack: `[goroutine/count]`.
    #[allow(dead_code)] // The goroutine capability (a later issue) produces it.
    Goroutines,
}

impl ProfileType {
    /// The name used on the command line, in JSON and in URLs.
    pub fn name(self) -> &'static str {
        match self {
            ProfileType::Cpu => "cpu",
            ProfileType::OffCpu => "offcpu",
            ProfileType::Wall => "wall",
            ProfileType::Lock => "lock",
            ProfileType::Goroutines => "goroutines",
        }
    }

    /// The values each sample carries, in order.
    pub fn sample_types(self) -> &'static [ValueType] {
        match self {
            ProfileType::Cpu => &[SAMPLES, CPU_NS],
            ProfileType::OffCpu => &[OFF_CPU_NS],
            ProfileType::Wall => &[WALL_NS],
            ProfileType::Lock => &[CONTENTIONS, DELAY_NS],
            ProfileType::Goroutines => &[GOROUTINES],
        }
    }

    /// The value flame graphs, folded stacks and tables show (index into `sample_types`).
    pub fn primary_index(self) -> usize {
        match self {
            ProfileType::Lock => 1,
            _ => 0,
        }
    }
}

/// A distinct stack of one thread, with its values (one per sample type).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    pub pid: u32,
    pub tid: u32,
    /// Process name (the thread group leader's comm when known, else the thread's).
    pub comm: String,
    /// Further labels (`state`, `wait_reason`, `container`, ...), written as pprof labels.
    pub labels: Vec<(String, String)>,
    /// Leaf first.
    pub stack: Vec<FrameId>,
    /// One per [`ProfileType::sample_types`].
    pub values: Vec<u64>,
}

/// A finished profile.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Profile {
    pub profile_type: ProfileType,
    /// What was profiled, for titles: `pid 1234`, `all processes`, `command: make -j2`.
    pub target: String,
    pub start_time: SystemTime,
    pub duration: Duration,
    /// Sampling frequency for sampled types (each sample stands for `1 / frequency_hz` of CPU
    /// time); 0 for exact (event-based) types.
    pub frequency_hz: u64,
    /// Shared, so windows kept side by side (the daemon's store) hold each frame once.
    pub frames: Vec<Arc<Frame>>,
    pub samples: Vec<Sample>,
    /// Loss counters by name (`drop_ringbuf_full`, ...), all reported even when zero.
    pub drops: Vec<(String, u64)>,
}

impl Profile {
    pub fn sample_types(&self) -> &'static [ValueType] {
        self.profile_type.sample_types()
    }

    /// The primary value's type: what flame graphs and tables count.
    pub fn primary(&self) -> ValueType {
        self.sample_types()[self.profile_type.primary_index()]
    }

    /// A sample's primary value.
    pub fn value(&self, sample: &Sample) -> u64 {
        sample
            .values
            .get(self.profile_type.primary_index())
            .copied()
            .unwrap_or(0)
    }

    /// Sum of every sample's primary value.
    pub fn total(&self) -> u64 {
        self.samples
            .iter()
            .map(|s| self.value(s))
            .fold(0u64, u64::saturating_add)
    }

    /// CPU time one sample stands for (sampled types only).
    pub fn period(&self) -> Option<Duration> {
        (self.frequency_hz > 0).then(|| Duration::from_nanos(1_000_000_000 / self.frequency_hz))
    }

    /// `1234 samples at 99 Hz`, `3.20 s off-CPU`: the total in the profile's own unit.
    pub fn describe_total(&self) -> String {
        let total = self.total();
        match self.primary().unit {
            "nanoseconds" => format!("{} {}", format_nanos(total), self.primary().kind),
            _ if self.frequency_hz > 0 => format!(
                "{total} {} at {} Hz",
                self.primary().kind,
                self.frequency_hz
            ),
            _ => format!("{total} {}", self.primary().kind),
        }
    }
}

/// `1.234 s`, `12.3 ms`, `850 us`, `40 ns`: a duration in nanoseconds, short.
pub fn format_nanos(ns: u64) -> String {
    let n = ns as f64;
    if ns >= 1_000_000_000 {
        format!("{:.3} s", n / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1} ms", n / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} us", n / 1e3)
    } else {
        format!("{ns} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_primary_value() {
        for t in [
            ProfileType::Cpu,
            ProfileType::OffCpu,
            ProfileType::Wall,
            ProfileType::Lock,
            ProfileType::Goroutines,
        ] {
            assert!(t.primary_index() < t.sample_types().len(), "{t:?}");
        }
        assert_eq!(ProfileType::Lock.sample_types()[1].unit, "nanoseconds");
    }

    #[test]
    fn nanos_read_short() {
        assert_eq!(format_nanos(1_234_000_000), "1.234 s");
        assert_eq!(format_nanos(12_340_000), "12.3 ms");
        assert_eq!(format_nanos(850_000), "850.0 us");
        assert_eq!(format_nanos(40), "40 ns");
    }
}

/// Merges finished profiles of one type (consecutive windows) into one, re-interning frames,
/// so raw state and the modules behind it can be released after each window.
#[derive(Default)]
pub struct ProfileMerger {
    first: Option<Profile>,
    frames: Vec<Arc<Frame>>,
    frame_ids: std::collections::HashMap<Arc<Frame>, FrameId>,
    #[allow(clippy::type_complexity)]
    samples: std::collections::HashMap<
        (u32, u32, String, Vec<(String, String)>, Vec<FrameId>),
        Vec<u64>,
    >,
    drops: std::collections::BTreeMap<String, u64>,
    duration: Duration,
}

impl ProfileMerger {
    pub fn add(&mut self, profile: Profile) {
        let ids: Vec<FrameId> = profile
            .frames
            .iter()
            .map(|frame| match self.frame_ids.get(frame) {
                Some(&id) => id,
                None => {
                    let id = self.frames.len() as FrameId;
                    self.frames.push(frame.clone());
                    self.frame_ids.insert(frame.clone(), id);
                    id
                }
            })
            .collect();
        for sample in &profile.samples {
            let stack = sample
                .stack
                .iter()
                .filter_map(|&id| ids.get(id as usize).copied())
                .collect();
            let key = (
                sample.pid,
                sample.tid,
                sample.comm.clone(),
                sample.labels.clone(),
                stack,
            );
            let values = self
                .samples
                .entry(key)
                .or_insert_with(|| vec![0; sample.values.len()]);
            for (total, v) in values.iter_mut().zip(&sample.values) {
                *total = total.saturating_add(*v);
            }
        }
        for (name, n) in &profile.drops {
            let slot = self.drops.entry(name.clone()).or_default();
            *slot = slot.saturating_add(*n);
        }
        self.duration += profile.duration;
        if self.first.is_none() {
            self.first = Some(Profile {
                frames: Vec::new(),
                samples: Vec::new(),
                ..profile
            });
        }
    }

    /// The merged profile, or None if nothing was added.
    pub fn finish(self) -> Option<Profile> {
        let mut profile = self.first?;
        let primary = profile.profile_type.primary_index();
        profile.frames = self.frames;
        profile.duration = self.duration;
        profile.drops = self.drops.into_iter().collect();
        profile.samples = self
            .samples
            .into_iter()
            .map(|((pid, tid, comm, labels, stack), values)| Sample {
                pid,
                tid,
                comm,
                labels,
                stack,
                values,
            })
            .collect();
        profile.samples.sort_by(|a, b| {
            b.values[primary]
                .cmp(&a.values[primary])
                .then(a.pid.cmp(&b.pid))
                .then(a.tid.cmp(&b.tid))
                .then(a.stack.cmp(&b.stack))
        });
        Some(profile)
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn frame(name: &str) -> Frame {
        Frame {
            function: name.into(),
            module: "app".into(),
            file: None,
            line: None,
            inlined: false,
            kind: FrameKind::User,
        }
    }

    fn profile(frames: Vec<Frame>, stack: Vec<FrameId>, count: u64) -> Profile {
        Profile {
            profile_type: ProfileType::Cpu,
            target: "t".into(),
            start_time: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(1),
            frequency_hz: 100,
            frames: frames.into_iter().map(Arc::new).collect(),
            samples: vec![Sample {
                pid: 1,
                tid: 1,
                comm: "app".into(),
                labels: vec![],
                stack,
                values: vec![count, count * 10],
            }],
            drops: vec![("drop_x".into(), 1)],
        }
    }

    #[test]
    fn windows_merge_by_frame_identity_not_index() {
        let mut m = ProfileMerger::default();
        m.add(profile(vec![frame("a"), frame("main")], vec![0, 1], 2));
        // The same stack with frames interned in another order.
        m.add(profile(vec![frame("main"), frame("a")], vec![1, 0], 3));
        let p = m.finish().expect("merged");
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.samples[0].values, vec![5, 50]);
        assert_eq!(p.total(), 5);
        assert_eq!(p.duration, Duration::from_secs(2));
        assert_eq!(p.drops, vec![("drop_x".to_string(), 2)]);
        assert_eq!(p.frames[p.samples[0].stack[0] as usize].function, "a");
    }
}
