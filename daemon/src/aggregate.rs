//! The aggregate store: distinct raw stacks with counts, symbolized once at the end.
//!
//! Samples are unwound as they arrive (while the process and its stack exist) into module +
//! address frames; names are looked up once per distinct address when the profile is built,
//! from modules kept open, so processes that exited meanwhile are still fully named.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    modules::ModuleCache,
    process::UserAddress,
    profile::{Frame, FrameId, FrameKind, Profile, ProfileType, Sample},
    symbolize::{self, Symbolizer},
};

/// A frame before symbolization. User addresses are lookup addresses: for return addresses,
/// one byte back into the call instruction, so the caller's line (and inlining) is right.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RawFrame {
    Kernel(u64),
    User(UserAddress),
    /// The outermost frame of a user stack that could not be followed to its root.
    Truncated,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StackKey {
    pid: u32,
    tid: u32,
    comm: Arc<str>,
    /// Leaf first.
    frames: Vec<RawFrame>,
}

#[derive(Default)]
pub struct Aggregator {
    counts: HashMap<StackKey, u64>,
    comms: HashMap<String, Arc<str>>,
}

/// What the profile was of, for the finished [`Profile`].
pub struct ProfileMeta {
    pub profile_type: ProfileType,
    pub target: String,
    pub start_time: SystemTime,
    pub duration: Duration,
    pub frequency_hz: u64,
    pub drops: Vec<(String, u64)>,
}

impl Aggregator {
    pub fn add(&mut self, pid: u32, tid: u32, comm: &str, frames: Vec<RawFrame>, count: u64) {
        let comm = match self.comms.get(comm) {
            Some(c) => c.clone(),
            None => {
                let c: Arc<str> = comm.into();
                self.comms.insert(comm.to_string(), c.clone());
                c
            }
        };
        *self
            .counts
            .entry(StackKey {
                pid,
                tid,
                comm,
                frames,
            })
            .or_default() += count;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Symbolizes every distinct address once and builds the profile.
    pub fn finish(
        self,
        modules: &ModuleCache,
        symbolizer: &Symbolizer,
        meta: ProfileMeta,
    ) -> Profile {
        let names = name_frames(
            self.counts.keys().flat_map(|k| &k.frames),
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
        let mut samples: Vec<Sample> = self
            .counts
            .into_iter()
            .map(|(key, count)| {
                let stack = key
                    .frames
                    .iter()
                    .flat_map(|raw| names.get(raw).map(Vec::as_slice).unwrap_or(&[]))
                    .map(&mut intern)
                    .collect();
                Sample {
                    pid: key.pid,
                    tid: key.tid,
                    comm: key.comm.to_string(),
                    stack,
                    count,
                }
            })
            .collect();
        samples.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.pid.cmp(&b.pid))
                .then(a.tid.cmp(&b.tid))
                .then(a.stack.cmp(&b.stack))
        });
        Profile {
            profile_type: meta.profile_type,
            target: meta.target,
            start_time: meta.start_time,
            duration: meta.duration,
            frequency_hz: meta.frequency_hz,
            frames,
            samples,
            drops: meta.drops,
        }
    }
}

/// Names for each distinct raw frame, batched per source.
fn name_frames<'a>(
    raw: impl Iterator<Item = &'a RawFrame>,
    modules: &ModuleCache,
    symbolizer: &Symbolizer,
) -> HashMap<RawFrame, Vec<Frame>> {
    let mut kernel: Vec<u64> = Vec::new();
    let mut by_module: HashMap<u32, Vec<u64>> = HashMap::new();
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
            RawFrame::Truncated => {
                names.insert(frame.clone(), vec![symbolize::truncated()]);
                continue;
            }
            RawFrame::User(UserAddress::Unnamed { label, offset }) => {
                names.insert(
                    frame.clone(),
                    vec![symbolize::unknown(label, *offset, FrameKind::User)],
                );
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
        let Some(module) = modules.get(id) else {
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
