//! The store of the current window: raw profiles per type, per-thread counters and latency
//! histograms. The engine swaps it out whole at each window boundary ([`Store::take_window`]),
//! so no sample falls between two windows, and hands the window (with the modules its frames
//! need) to whoever renders it, off the collection thread.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    aggregate::{Aggregator, ProfileMeta},
    histogram::LatencyHistogram,
    modules::{Module, ModuleId},
    profile::{Profile, ProfileType},
    symbolize::Symbolizer,
};

/// Named exact counters of one thread (`oncpu_ns`, `voluntary_switches`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadCounters {
    pub pid: u32,
    pub comm: String,
    pub values: BTreeMap<&'static str, u64>,
}

/// A histogram's identity: what it measures, and of which process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistogramKey {
    /// `runqueue`, later `goroutine_sched`, `tls_handshake`, ...
    pub name: &'static str,
    pub pid: u32,
}

/// What one window gathered.
pub struct Store {
    started_at: SystemTime,
    started: Instant,
    profiles: BTreeMap<ProfileType, Aggregator>,
    /// By tid.
    pub threads: HashMap<u32, ThreadCounters>,
    pub histograms: HashMap<HistogramKey, LatencyHistogram>,
    /// Counters of whole processes (goroutines created, ...), by (pid, name).
    pub process_counters: BTreeMap<(u32, &'static str), u64>,
    /// Counters of whole processes with a label (blocked time by wait reason, goroutines
    /// by creation site, ...), by (pid, name, label).
    pub labelled_counters: BTreeMap<(u32, &'static str, String), u64>,
    /// Processes that exited during the window (their figures are kept, and marked).
    pub exited: HashSet<u32>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            started_at: SystemTime::now(),
            started: Instant::now(),
            profiles: BTreeMap::new(),
            threads: HashMap::new(),
            histograms: HashMap::new(),
            process_counters: BTreeMap::new(),
            labelled_counters: BTreeMap::new(),
            exited: HashSet::new(),
        }
    }
}

impl Store {
    /// The aggregate of `profile_type`, created on first use.
    pub fn profile(&mut self, profile_type: ProfileType) -> &mut Aggregator {
        self.profiles
            .entry(profile_type)
            .or_insert_with(|| Aggregator::new(profile_type))
    }

    /// Adds `value` to counter `name` of thread `tid`.
    pub fn add_thread_counter(
        &mut self,
        pid: u32,
        tid: u32,
        comm: &str,
        name: &'static str,
        value: u64,
    ) {
        let thread = self.threads.entry(tid).or_insert_with(|| ThreadCounters {
            pid,
            comm: comm.to_string(),
            values: BTreeMap::new(),
        });
        let slot = thread.values.entry(name).or_default();
        *slot = slot.saturating_add(value);
    }

    pub fn add_process_counter(&mut self, pid: u32, name: &'static str, value: u64) {
        let slot = self.process_counters.entry((pid, name)).or_default();
        *slot = slot.saturating_add(value);
    }

    pub fn add_labelled_counter(&mut self, pid: u32, name: &'static str, label: &str, value: u64) {
        if value == 0 {
            return;
        }
        let slot = self
            .labelled_counters
            .entry((pid, name, label.to_string()))
            .or_default();
        *slot = slot.saturating_add(value);
    }

    pub fn histogram(&mut self, key: HistogramKey) -> &mut LatencyHistogram {
        self.histograms.entry(key).or_default()
    }

    /// Primary-value totals per profile type (progress lines, metrics).
    pub fn totals(&self) -> BTreeMap<ProfileType, u64> {
        self.profiles.iter().map(|(t, a)| (*t, a.total())).collect()
    }

    /// Modules the raw frames of this window refer to.
    pub fn module_ids(&self) -> HashSet<ModuleId> {
        let mut ids = HashSet::new();
        for aggregate in self.profiles.values() {
            aggregate.module_ids(&mut ids);
        }
        ids
    }

    /// Distinct stacks held, all types (a state count).
    pub fn stacks(&self) -> usize {
        self.profiles.values().map(Aggregator::len).sum()
    }

    /// Ends this window and starts the next at once: the returned window holds everything
    /// added so far, the store nothing.
    pub fn take_window(
        &mut self,
        modules: HashMap<ModuleId, Arc<Module>>,
        counters: Vec<(String, u64)>,
    ) -> Window {
        let finished = std::mem::take(self);
        Window {
            start_time: finished.started_at,
            duration: finished.started.elapsed(),
            profiles: finished.profiles,
            threads: finished.threads,
            histograms: finished.histograms,
            process_counters: finished.process_counters,
            labelled_counters: finished.labelled_counters,
            exited: finished.exited,
            modules,
            counters,
        }
    }
}

/// A finished window: raw data plus the modules needed to name it. Symbolizing and rendering
/// it never touches the collection thread.
pub struct Window {
    pub start_time: SystemTime,
    pub duration: Duration,
    pub profiles: BTreeMap<ProfileType, Aggregator>,
    pub threads: HashMap<u32, ThreadCounters>,
    pub histograms: HashMap<HistogramKey, LatencyHistogram>,
    pub process_counters: BTreeMap<(u32, &'static str), u64>,
    pub labelled_counters: BTreeMap<(u32, &'static str, String), u64>,
    pub exited: HashSet<u32>,
    pub modules: HashMap<ModuleId, Arc<Module>>,
    /// Sample and loss counters gathered during this window only, by name.
    pub counters: Vec<(String, u64)>,
}

impl Window {
    /// Adds a later window's counters, histograms and exits to this one (raw profiles are
    /// merged too; callers that symbolize per window take them out first).
    pub fn absorb(&mut self, later: Window) {
        for (tid, thread) in later.threads {
            let mine = self.threads.entry(tid).or_insert_with(|| ThreadCounters {
                pid: thread.pid,
                comm: thread.comm.clone(),
                values: BTreeMap::new(),
            });
            for (name, value) in thread.values {
                let slot = mine.values.entry(name).or_default();
                *slot = slot.saturating_add(value);
            }
        }
        for (key, value) in later.process_counters {
            let slot = self.process_counters.entry(key).or_default();
            *slot = slot.saturating_add(value);
        }
        for (key, value) in later.labelled_counters {
            let slot = self.labelled_counters.entry(key).or_default();
            *slot = slot.saturating_add(value);
        }
        for (key, histogram) in later.histograms {
            self.histograms.entry(key).or_default().merge(&histogram);
        }
        for (profile_type, aggregate) in later.profiles {
            self.profiles
                .entry(profile_type)
                .or_insert_with(|| Aggregator::new(profile_type))
                .merge(aggregate);
        }
        self.exited.extend(later.exited);
        self.modules.extend(later.modules);
        for (name, value) in later.counters {
            match self.counters.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total = total.saturating_add(value),
                None => self.counters.push((name, value)),
            }
        }
        self.duration += later.duration;
    }

    /// Loss counters of this window (`drop_*`), zero ones included.
    pub fn drops(&self) -> Vec<(String, u64)> {
        self.counters
            .iter()
            .filter(|(name, _)| name.starts_with("drop_"))
            .cloned()
            .collect()
    }

    /// Takes the raw profile of `profile_type` (empty when nothing was gathered). A wall-clock
    /// profile is built from the on-CPU and off-CPU ones, told apart by a root frame.
    pub fn take_profile(&mut self, profile_type: ProfileType, cpu_period_ns: u64) -> Aggregator {
        if profile_type == ProfileType::Wall {
            let mut wall = Aggregator::new(ProfileType::Wall);
            if let Some(cpu) = self.profiles.remove(&ProfileType::Cpu) {
                wall.merge(cpu.retyped(ProfileType::Wall, "[on-cpu]", |v| {
                    vec![v
                        .first()
                        .copied()
                        .unwrap_or(0)
                        .saturating_mul(cpu_period_ns)]
                }));
            }
            if let Some(off) = self.profiles.remove(&ProfileType::OffCpu) {
                wall.merge(off.retyped(ProfileType::Wall, "[off-cpu]", |v| v.to_vec()));
            }
            return wall;
        }
        self.profiles
            .remove(&profile_type)
            .unwrap_or_else(|| Aggregator::new(profile_type))
    }

    /// Symbolizes and finishes one profile of this window.
    pub fn build_profile(
        &mut self,
        profile_type: ProfileType,
        target: String,
        frequency_hz: u64,
        symbolizer: &Symbolizer,
    ) -> Profile {
        let period = 1_000_000_000 / frequency_hz.max(1);
        let aggregate = self.take_profile(profile_type, period);
        let frequency_hz = if profile_type == ProfileType::Cpu {
            frequency_hz
        } else {
            0
        };
        let meta = ProfileMeta {
            target,
            start_time: self.start_time,
            duration: self.duration,
            frequency_hz,
            drops: self.drops(),
        };
        aggregate.finish(&self.modules, symbolizer, meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::RawFrame, process::UserAddress};

    fn frames() -> Vec<RawFrame> {
        vec![RawFrame::User(UserAddress::unknown(0x1000))]
    }

    #[test]
    fn taking_a_window_leaves_an_empty_store_and_loses_nothing() {
        let mut store = Store::default();
        store
            .profile(ProfileType::Cpu)
            .add(1, 1, "a", frames(), &[3, 30]);
        store.add_thread_counter(1, 1, "a", "oncpu_ns", 5);
        store.add_thread_counter(1, 1, "a", "oncpu_ns", 7);
        store
            .histogram(HistogramKey {
                name: "runqueue",
                pid: 1,
            })
            .record(100);
        let first = store.take_window(HashMap::new(), vec![("drop_x".into(), 1)]);
        store
            .profile(ProfileType::Cpu)
            .add(1, 1, "a", frames(), &[2, 20]);
        let second = store.take_window(HashMap::new(), vec![]);
        assert_eq!(first.profiles[&ProfileType::Cpu].total(), 3);
        assert_eq!(second.profiles[&ProfileType::Cpu].total(), 2);
        assert_eq!(first.threads[&1].values["oncpu_ns"], 12);
        assert!(second.threads.is_empty());
        assert_eq!(first.histograms.len(), 1);
        assert_eq!(first.drops(), vec![("drop_x".to_string(), 1)]);
    }

    #[test]
    fn wall_profiles_join_on_and_off_cpu_time() {
        let mut store = Store::default();
        store
            .profile(ProfileType::Cpu)
            .add(1, 1, "a", frames(), &[3, 30]);
        store
            .profile(ProfileType::OffCpu)
            .add(1, 1, "a", frames(), &[500]);
        let mut window = store.take_window(HashMap::new(), vec![]);
        let wall = window.take_profile(ProfileType::Wall, 10);
        // 3 samples of 10 ns on CPU, 500 ns off it.
        assert_eq!(wall.total(), 530);
        assert_eq!(wall.len(), 2);
    }
}
