//! The aggregate of one profile type: distinct raw stacks with their values, symbolized once
//! when the profile is built.
//!
//! Samples are unwound as they arrive (while the process and its stack exist) into module +
//! address frames; names are looked up once per distinct address when the profile is built,
//! from modules the window holds open, so processes that exited meanwhile are still named.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    modules::{Module, ModuleId},
    process::UserAddress,
    profile::{Frame, FrameId, FrameKind, Profile, ProfileType, Sample},
    symbolize::{self, go::runtime_threads as go_runtime, Symbolizer},
};

/// A frame before symbolization. User addresses are lookup addresses: for return addresses,
/// one byte back into the call instruction, so the caller's line (and inlining) is right.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RawFrame {
    Kernel(u64),
    User(UserAddress),
    /// A frame loupe adds (`[truncated]`, `[off-cpu]`).
    Synthetic(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StackKey {
    pid: u32,
    tid: u32,
    comm: Arc<str>,
    /// Leaf first.
    frames: Vec<RawFrame>,
}

/// Distinct stacks of one profile type with one value per sample type.
pub struct Aggregator {
    profile_type: ProfileType,
    stacks: HashMap<StackKey, Vec<u64>>,
    comms: HashMap<String, Arc<str>>,
}

/// What the profile was of, for the finished [`Profile`].
pub struct ProfileMeta {
    pub target: String,
    pub start_time: SystemTime,
    pub duration: Duration,
    pub frequency_hz: u64,
    pub drops: Vec<(String, u64)>,
}

impl Aggregator {
    pub fn new(profile_type: ProfileType) -> Aggregator {
        Aggregator {
            profile_type,
            stacks: HashMap::new(),
            comms: HashMap::new(),
        }
    }

    /// Adds `values` (one per sample type of the profile type) to a stack of thread `tid`.
    pub fn add(&mut self, pid: u32, tid: u32, comm: &str, frames: Vec<RawFrame>, values: &[u64]) {
        let comm = match self.comms.get(comm) {
            Some(c) => c.clone(),
            None => {
                let c: Arc<str> = comm.into();
                self.comms.insert(comm.to_string(), c.clone());
                c
            }
        };
        let n = self.profile_type.sample_types().len();
        let entry = self
            .stacks
            .entry(StackKey {
                pid,
                tid,
                comm,
                frames,
            })
            .or_insert_with(|| vec![0; n]);
        for (total, v) in entry.iter_mut().zip(values) {
            *total = total.saturating_add(*v);
        }
    }

    /// Adds every stack of `other` (of the same profile type) to this one.
    pub fn merge(&mut self, other: Aggregator) {
        for (key, values) in other.stacks {
            let comm = key.comm.to_string();
            self.add(key.pid, key.tid, &comm, key.frames, &values);
        }
    }

    /// Sum of the primary value over every stack.
    pub fn total(&self) -> u64 {
        let i = self.profile_type.primary_index();
        self.stacks
            .values()
            .map(|v| v.get(i).copied().unwrap_or(0))
            .fold(0, u64::saturating_add)
    }

    /// Distinct stacks held (a state count).
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// The modules this aggregate's frames refer to.
    pub fn module_ids(&self, into: &mut HashSet<ModuleId>) {
        for key in self.stacks.keys() {
            for frame in &key.frames {
                if let RawFrame::User(UserAddress::Module { module, .. }) = frame {
                    into.insert(*module);
                }
            }
        }
    }

    /// Re-types every stack as `into`, mapping values with `convert` and adding `marker` at the
    /// root end of each stack (a wall-clock view made of on-CPU and off-CPU parts).
    pub fn retyped(
        self,
        into: ProfileType,
        marker: &'static str,
        convert: impl Fn(&[u64]) -> Vec<u64>,
    ) -> Aggregator {
        let mut out = Aggregator::new(into);
        for (mut key, values) in self.stacks {
            key.frames.push(RawFrame::Synthetic(marker));
            let comm = key.comm.to_string();
            out.add(key.pid, key.tid, &comm, key.frames, &convert(&values));
        }
        out
    }

    /// Symbolizes every distinct address once and builds the profile.
    pub fn finish(
        self,
        modules: &HashMap<ModuleId, Arc<Module>>,
        symbolizer: &Symbolizer,
        meta: ProfileMeta,
    ) -> Profile {
        let names = name_frames(
            self.stacks.keys().flat_map(|k| &k.frames),
            modules,
            symbolizer,
        );
        let mut frames: Vec<Frame> = Vec::new();
        let mut frame_ids: HashMap<Frame, FrameId> = HashMap::new();
        let mut intern = |frame: &Frame| -> FrameId {
            if let Some(&id) = frame_ids.get(frame) {
                return id;
            }
            let id = frames.len() as FrameId;
            frames.push(frame.clone());
            frame_ids.insert(frame.clone(), id);
            id
        };
        let primary = self.profile_type.primary_index();
        let mut samples: Vec<Sample> = self
            .stacks
            .into_iter()
            .map(|(key, values)| {
                let mut named: Vec<&Frame> = key
                    .frames
                    .iter()
                    .flat_map(|raw| names.get(raw).map(Vec::as_slice).unwrap_or(&[]))
                    .collect();
                named.drain(..probe_frames(&named));
                let role = go_runtime::thread_role(named.iter().map(|f| f.function.as_str()));
                let mut stack: Vec<FrameId> = named.into_iter().map(&mut intern).collect();
                let mut labels = Vec::new();
                // A Go runtime thread with nothing to run: told apart at the root, so its
                // waiting is not read as the program's.
                if let Some(role) = role {
                    stack.push(intern(&synthetic_frame(role.frame())));
                    labels.push(("go_thread".to_string(), role.label().to_string()));
                }
                Sample {
                    pid: key.pid,
                    tid: key.tid,
                    comm: key.comm.to_string(),
                    labels,
                    stack,
                    values,
                }
            })
            .collect();
        samples.sort_by(|a, b| {
            b.values[primary]
                .cmp(&a.values[primary])
                .then(a.pid.cmp(&b.pid))
                .then(a.tid.cmp(&b.tid))
                .then(a.stack.cmp(&b.stack))
        });
        Profile {
            profile_type: self.profile_type,
            target: meta.target,
            start_time: meta.start_time,
            duration: meta.duration,
            frequency_hz: meta.frequency_hz,
            frames: frames.into_iter().map(std::sync::Arc::new).collect(),
            samples,
            drops: meta.drops,
        }
    }
}

/// How many leaf frames belong to loupe's own probe, not to the traced task: a stack taken
/// in a tracepoint program starts with the program and the kernel's `bpf_trace_run<N>`
/// that called it (perf-event samples start at the interrupted code and have none).
fn probe_frames(leaf_first: &[&Frame]) -> usize {
    leaf_first
        .iter()
        .take(4)
        .position(|f| f.kind == FrameKind::Kernel && f.function.starts_with("bpf_trace_run"))
        .map_or(0, |i| i + 1)
}

/// A frame loupe adds, in module `[loupe]`.
fn synthetic_frame(name: &str) -> Frame {
    Frame {
        function: name.to_string(),
        module: "[loupe]".to_string(),
        file: None,
        line: None,
        inlined: false,
        kind: FrameKind::Synthetic,
    }
}

/// Names for each distinct raw frame, batched per source.
fn name_frames<'a>(
    raw: impl Iterator<Item = &'a RawFrame>,
    modules: &HashMap<ModuleId, Arc<Module>>,
    symbolizer: &Symbolizer,
) -> HashMap<RawFrame, Vec<Frame>> {
    let mut kernel: Vec<u64> = Vec::new();
    let mut by_module: HashMap<ModuleId, Vec<u64>> = HashMap::new();
    let mut names: HashMap<RawFrame, Vec<Frame>> = HashMap::new();
    for frame in raw {
        if names.contains_key(frame) {
            continue;
        }
        match frame {
            RawFrame::Kernel(addr) => kernel.push(*addr),
            RawFrame::User(UserAddress::Module { module, svma }) => {
                by_module.entry(*module).or_default().push(*svma)
            }
            RawFrame::User(UserAddress::Unnamed { label, offset }) => {
                names.insert(
                    frame.clone(),
                    vec![symbolize::unknown(label, *offset, FrameKind::User)],
                );
                continue;
            }
            RawFrame::Synthetic(name) => {
                names.insert(frame.clone(), vec![synthetic_frame(name)]);
                continue;
            }
        }
        names.insert(frame.clone(), Vec::new()); // placeholder, filled below
    }
    kernel.sort_unstable();
    for (addr, frames) in kernel.iter().zip(symbolizer.kernel(&kernel)) {
        names.insert(RawFrame::Kernel(*addr), frames);
    }
    for (id, mut svmas) in by_module {
        svmas.sort_unstable();
        let Some(module) = modules.get(&id) else {
            continue;
        };
        for (svma, frames) in svmas.iter().zip(symbolizer.user(module, &svmas)) {
            names.insert(
                RawFrame::User(UserAddress::Module {
                    module: id,
                    svma: *svma,
                }),
                frames,
            );
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(offset: u64) -> RawFrame {
        RawFrame::User(UserAddress::Unnamed {
            label: "app".into(),
            offset,
        })
    }

    #[test]
    fn same_stack_adds_values_and_totals_use_the_primary_value() {
        let mut a = Aggregator::new(ProfileType::Cpu);
        a.add(1, 1, "app", vec![user(1), user(2)], &[1, 10]);
        a.add(1, 1, "app", vec![user(1), user(2)], &[2, 20]);
        a.add(1, 2, "app", vec![user(1), user(2)], &[1, 10]);
        assert_eq!(a.len(), 2);
        assert_eq!(a.total(), 4);
        let mut b = Aggregator::new(ProfileType::Cpu);
        b.add(1, 1, "app", vec![user(1), user(2)], &[5, 50]);
        a.merge(b);
        assert_eq!(a.total(), 9);
    }

    #[test]
    fn lock_profiles_total_their_delay() {
        let mut a = Aggregator::new(ProfileType::Lock);
        a.add(1, 1, "app", vec![user(1)], &[3, 900]);
        assert_eq!(a.total(), 900);
    }

    #[test]
    fn retyping_marks_the_root_and_converts_values() {
        let mut a = Aggregator::new(ProfileType::Cpu);
        a.add(1, 1, "app", vec![user(1)], &[2, 20]);
        let wall = a.retyped(ProfileType::Wall, "[on-cpu]", |v| vec![v[1]]);
        assert_eq!(wall.total(), 20);
        let key = wall.stacks.keys().next().expect("one stack");
        assert_eq!(key.frames.last(), Some(&RawFrame::Synthetic("[on-cpu]")));
    }
}
