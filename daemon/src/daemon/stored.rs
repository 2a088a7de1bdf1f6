//! How the store keeps a window's profile: each sample points at a stack that every window
//! shares, and each stack at frames every window shares. Windows side by side mostly repeat
//! the same stacks (a service's request paths; every compiler process's passes), so a long
//! retention costs a few pointers per sample rather than a copy of every stack and name.
//!
//! Stacks and frames live in pools owned by the store; a window keeps references, and the
//! pools let go of whatever no window (nor a reader still holding one) uses.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::profile::{Frame, FrameId, Profile, ProfileType, Sample};

/// A stack, leaf first, of pooled frames.
type Stack = Arc<[Arc<Frame>]>;

/// One stored sample: a stack of one process with its values.
#[derive(Debug)]
struct StoredSample {
    pid: u32,
    tid: u32,
    comm: Arc<str>,
    labels: Box<[(String, String)]>,
    stack: Stack,
    values: Box<[u64]>,
}

/// A window's profile as the store keeps it; [`StoredProfile::profile`] gives it back.
#[derive(Debug)]
pub struct StoredProfile {
    pub profile_type: ProfileType,
    pub target: String,
    pub start_time: SystemTime,
    pub duration: Duration,
    pub frequency_hz: u64,
    pub drops: Vec<(String, u64)>,
    samples: Vec<StoredSample>,
}

impl StoredProfile {
    /// The profile of the samples whose process `keep` accepts, frames interned anew.
    pub fn profile(&self, keep: &dyn Fn(u32) -> bool) -> Profile {
        let mut frames: Vec<Arc<Frame>> = Vec::new();
        // Pooled frames are unique, so their address identifies them.
        let mut ids: HashMap<*const Frame, FrameId> = HashMap::new();
        let samples = self
            .samples
            .iter()
            .filter(|s| keep(s.pid))
            .map(|s| Sample {
                pid: s.pid,
                tid: s.tid,
                comm: s.comm.to_string(),
                labels: s.labels.to_vec(),
                stack: s
                    .stack
                    .iter()
                    .map(|frame| {
                        *ids.entry(Arc::as_ptr(frame)).or_insert_with(|| {
                            frames.push(Arc::clone(frame));
                            (frames.len() - 1) as FrameId
                        })
                    })
                    .collect(),
                values: s.values.to_vec(),
            })
            .collect();
        Profile {
            profile_type: self.profile_type,
            target: self.target.clone(),
            start_time: self.start_time,
            duration: self.duration,
            frequency_hz: self.frequency_hz,
            frames,
            samples,
            drops: self.drops.clone(),
        }
    }

    /// Samples kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Heap bytes of this profile itself (the pools count the stacks and frames).
    pub fn bytes(&self) -> u64 {
        let samples: usize = self
            .samples
            .iter()
            .map(|s| {
                size_of::<StoredSample>()
                    + allocation(s.values.len() * 8)
                    + allocation(size_of_val(&*s.labels))
                    + s.labels
                        .iter()
                        .map(|(k, v)| allocation(k.len()) + allocation(v.len()))
                        .sum::<usize>()
            })
            .sum();
        let drops: usize = self.drops.iter().map(|(n, _)| n.len() + 32).sum();
        (size_of::<StoredProfile>() + self.target.len() + drops + samples) as u64
    }
}

/// A pooled stack, hashed and compared by the addresses of its (pooled, unique) frames.
struct PooledStack(Stack);

impl PartialEq for PooledStack {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl Eq for PooledStack {}

impl Hash for PooledStack {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for frame in self.0.iter() {
            Arc::as_ptr(frame).hash(state);
        }
    }
}

/// The stacks and frames of every stored window, each held once.
#[derive(Default)]
pub struct Pools {
    frames: HashSet<Arc<Frame>>,
    stacks: HashSet<PooledStack>,
    comms: HashSet<Arc<str>>,
    /// Estimated heap bytes of all three.
    bytes: u64,
}

impl Pools {
    /// Keeps `profile` with its stacks, frames and process names shared with the stored
    /// windows.
    pub fn store(&mut self, profile: Profile) -> StoredProfile {
        let frames: Vec<Arc<Frame>> = profile.frames.iter().map(|f| self.frame(f)).collect();
        let samples = profile
            .samples
            .into_iter()
            .map(|s| {
                let stack: Vec<Arc<Frame>> = s
                    .stack
                    .iter()
                    .filter_map(|&id| frames.get(id as usize).cloned())
                    .collect();
                StoredSample {
                    pid: s.pid,
                    tid: s.tid,
                    comm: self.comm(&s.comm),
                    labels: s.labels.into_boxed_slice(),
                    stack: self.stack(stack),
                    values: s.values.into_boxed_slice(),
                }
            })
            .collect();
        StoredProfile {
            profile_type: profile.profile_type,
            target: profile.target,
            start_time: profile.start_time,
            duration: profile.duration,
            frequency_hz: profile.frequency_hz,
            drops: profile.drops,
            samples,
        }
    }

    fn frame(&mut self, frame: &Arc<Frame>) -> Arc<Frame> {
        if let Some(shared) = self.frames.get(&**frame) {
            return Arc::clone(shared);
        }
        self.bytes += frame_bytes(frame);
        self.frames.insert(Arc::clone(frame));
        Arc::clone(frame)
    }

    fn stack(&mut self, frames: Vec<Arc<Frame>>) -> Stack {
        let candidate = PooledStack(frames.into());
        if let Some(shared) = self.stacks.get(&candidate) {
            return Arc::clone(&shared.0);
        }
        self.bytes += stack_bytes(&candidate.0);
        let stack = Arc::clone(&candidate.0);
        self.stacks.insert(candidate);
        stack
    }

    fn comm(&mut self, comm: &str) -> Arc<str> {
        if let Some(shared) = self.comms.get(comm) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = comm.into();
        self.bytes += str_bytes(&shared);
        self.comms.insert(Arc::clone(&shared));
        shared
    }

    /// Lets go of what no stored window (nor a reader still holding one) uses: stacks
    /// first, as they hold the frames.
    pub fn release_unused(&mut self) {
        let mut released = 0;
        self.stacks.retain(|s| {
            let used = Arc::strong_count(&s.0) > 1;
            if !used {
                released += stack_bytes(&s.0);
            }
            used
        });
        self.frames.retain(|f| {
            let used = Arc::strong_count(f) > 1;
            if !used {
                released += frame_bytes(f);
            }
            used
        });
        self.comms.retain(|c| {
            let used = Arc::strong_count(c) > 1;
            if !used {
                released += str_bytes(c);
            }
            used
        });
        self.bytes -= released;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Distinct (frames, stacks) held.
    pub fn counts(&self) -> (usize, usize) {
        (self.frames.len(), self.stacks.len())
    }
}

/// What malloc adds to each allocation (its header and rounding), so that the cap bounds
/// the memory really held rather than the bytes asked for.
const ALLOCATION_OVERHEAD: usize = 16;

/// Bytes of an allocation of `len` bytes (none when empty).
fn allocation(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len + ALLOCATION_OVERHEAD
    }
}

/// Bytes of a pooled frame: itself behind its Arc (two counters), its strings, its slot.
fn frame_bytes(frame: &Frame) -> u64 {
    (allocation(size_of::<Frame>() + 16)
        + allocation(frame.function.len())
        + allocation(frame.module.len())
        + allocation(frame.file.as_ref().map_or(0, String::len))
        + size_of::<Arc<Frame>>()) as u64
}

fn stack_bytes(stack: &[Arc<Frame>]) -> u64 {
    (allocation(16 + std::mem::size_of_val(stack)) + size_of::<PooledStack>()) as u64
}

fn str_bytes(s: &str) -> u64 {
    (allocation(16 + s.len()) + size_of::<Arc<str>>()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::{profile, sample, user};

    #[test]
    fn windows_share_stacks_and_frames_and_give_back_the_same_profile() {
        let mut pools = Pools::default();
        let first = profile(
            vec![user("work"), user("main"), user("other")],
            vec![
                sample(1, 1, "app", &[0, 1], 3),
                sample(2, 2, "tool", &[2, 1], 1),
            ],
        );
        // The same stack of another window, its frames interned in another order.
        let second = profile(
            vec![user("main"), user("work")],
            vec![sample(3, 3, "app", &[1, 0], 5)],
        );
        let a = pools.store(first.clone());
        let b = pools.store(second);
        assert_eq!(pools.counts(), (3, 2));
        assert!(Arc::ptr_eq(&a.samples[0].stack, &b.samples[0].stack));
        assert!(Arc::ptr_eq(&a.samples[0].comm, &b.samples[0].comm));

        // Given back: the same samples, frames and values.
        let back = a.profile(&|_| true);
        let names = |p: &Profile, s: &Sample| -> Vec<String> {
            s.stack
                .iter()
                .map(|&id| p.frames[id as usize].function.clone())
                .collect()
        };
        assert_eq!(back.samples.len(), first.samples.len());
        for (got, want) in back.samples.iter().zip(&first.samples) {
            assert_eq!(names(&back, got), names(&first, want));
            assert_eq!(
                (got.pid, &got.comm, &got.values),
                (want.pid, &want.comm, &want.values)
            );
        }
        assert_eq!(back.drops, first.drops);
        // Only one process's samples, with only the frames they use.
        let one = a.profile(&|pid| pid == 2);
        assert_eq!(one.samples.len(), 1);
        assert_eq!(one.frames.len(), 2);

        // Dropping the first window releases what only it used ("other", its stack, "tool").
        let before = pools.bytes();
        drop((first, a, back, one));
        pools.release_unused();
        assert_eq!(pools.counts(), (2, 1));
        assert!(pools.bytes() < before);
        drop(b);
        pools.release_unused();
        assert_eq!(pools.counts(), (0, 0));
        assert_eq!(pools.bytes(), 0);
    }
}
