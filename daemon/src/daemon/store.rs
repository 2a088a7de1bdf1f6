//! The profile store: symbolized windows in time order, kept for a retention period under a
//! memory cap (oldest first out, counted), queried by time range and merged on read.
//! Windows share their stacks and frames (`stored`); the cap counts those once.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{histogram::LatencyHistogram, profile::Profile, profile::ProfileType};

use super::{
    attribution::ProcessInfo,
    process_table::ProcessTable,
    stored::{Pools, StoredProfile},
};

/// One process's figures in one window.
#[derive(Clone, Debug)]
pub struct ProcessFigures {
    pub info: Arc<ProcessInfo>,
    pub cpu_samples: u64,
    /// Exact, from the scheduling collector (`None`: it is disabled).
    pub offcpu_ns: Option<u64>,
    pub runqueue: LatencyHistogram,
    pub exited: bool,
}

/// A finished, symbolized window, before the store keeps it.
#[derive(Debug)]
pub struct WindowData {
    pub start: SystemTime,
    pub duration: Duration,
    pub profiles: BTreeMap<ProfileType, Profile>,
    pub processes: HashMap<u32, ProcessFigures>,
    /// Sample and loss counters gathered during this window, by name.
    pub counters: Vec<(String, u64)>,
}

/// A window as the store keeps it.
#[derive(Debug)]
pub struct StoredWindow {
    pub start: SystemTime,
    pub duration: Duration,
    pub profiles: BTreeMap<ProfileType, StoredProfile>,
    pub processes: ProcessTable,
    /// Sample and loss counters gathered during this window, by name.
    pub counters: Vec<(String, u64)>,
    /// Estimated heap bytes held besides the pools' (what the memory cap counts).
    pub bytes: u64,
}

impl StoredWindow {
    pub fn end(&self) -> SystemTime {
        self.start + self.duration
    }

    /// Whether the window overlaps `[from, to)` (a zero-length range at a window's start
    /// counts as inside it).
    pub fn overlaps(&self, from: SystemTime, to: SystemTime) -> bool {
        self.start < to.max(from + Duration::from_nanos(1)) && self.end() > from
    }

    /// The window's profile of `profile_type` for the processes `keep` accepts.
    pub fn profile(
        &self,
        profile_type: ProfileType,
        keep: &dyn Fn(u32) -> bool,
    ) -> Option<Profile> {
        self.profiles.get(&profile_type).map(|p| p.profile(keep))
    }

    fn estimate_bytes(&self) -> u64 {
        let profiles: u64 = self.profiles.values().map(StoredProfile::bytes).sum();
        // An attribution is shared by the windows its process appears in and by processes
        // of the same program: the first window to hold it (beside the attribution's own
        // set and cache) counts it.
        let infos = self
            .processes
            .infos()
            .map(|info| {
                if Arc::strong_count(info) <= 3 {
                    info.heap_bytes()
                } else {
                    0
                }
            })
            .sum::<usize>();
        let processes = self.processes.heap_bytes() + infos;
        let counters: usize = self.counters.iter().map(|(n, _)| n.len() + 32).sum();
        profiles + (size_of::<StoredWindow>() + processes + counters) as u64
    }
}

/// Why windows left the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Older than the retention.
    pub expired: u64,
    /// Pushed out by the memory cap.
    pub memory: u64,
}

pub struct WindowStore {
    windows: VecDeque<Arc<StoredWindow>>,
    retention: Duration,
    max_bytes: u64,
    /// The windows' own bytes (without the pools').
    bytes: u64,
    pools: Pools,
    pub dropped: Dropped,
}

impl WindowStore {
    pub fn new(retention: Duration, max_bytes: u64) -> WindowStore {
        WindowStore {
            windows: VecDeque::new(),
            retention,
            max_bytes,
            bytes: 0,
            pools: Pools::default(),
            dropped: Dropped::default(),
        }
    }

    /// Adds the newest window, then drops what the retention and the cap no longer allow
    /// (the newest window is always kept, even alone over the cap).
    pub fn push(&mut self, data: WindowData, now: SystemTime) -> Arc<StoredWindow> {
        let profiles = data
            .profiles
            .into_iter()
            .map(|(t, p)| (t, self.pools.store(p)))
            .collect();
        let mut window = StoredWindow {
            start: data.start,
            duration: data.duration,
            profiles,
            processes: ProcessTable::pack(data.processes),
            counters: data.counters,
            bytes: 0,
        };
        window.bytes = window.estimate_bytes();
        log::debug!(
            "stored window: {} bytes ({} in profiles, {} samples; {} processes), pools now {} bytes",
            window.bytes,
            window.profiles.values().map(StoredProfile::bytes).sum::<u64>(),
            window.profiles.values().map(StoredProfile::len).sum::<usize>(),
            window.processes.len(),
            self.pools.bytes()
        );
        self.bytes += window.bytes;
        let window = Arc::new(window);
        self.windows.push_back(Arc::clone(&window));
        let horizon = now
            .checked_sub(self.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        while self.windows.len() > 1 {
            let oldest = &self.windows[0];
            if oldest.end() <= horizon {
                self.dropped.expired += 1;
            } else if self.bytes() > self.max_bytes {
                self.dropped.memory += 1;
            } else {
                break;
            }
            if let Some(w) = self.windows.pop_front() {
                self.bytes -= w.bytes;
                drop(w);
                self.pools.release_unused();
            }
        }
        window
    }

    /// Windows overlapping `[from, to)`, oldest first.
    pub fn range(&self, from: SystemTime, to: SystemTime) -> Vec<Arc<StoredWindow>> {
        self.windows
            .iter()
            .filter(|w| w.overlaps(from, to))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Estimated heap bytes held: the windows and the stacks and frames they share.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.pools.bytes()
    }

    /// Distinct (frames, stacks) the stored windows hold.
    pub fn shared_counts(&self) -> (usize, usize) {
        self.pools.counts()
    }

    pub fn oldest(&self) -> Option<SystemTime> {
        self.windows.front().map(|w| w.start)
    }

    pub fn newest(&self) -> Option<SystemTime> {
        self.windows.back().map(|w| w.start)
    }
}

/// The span covered by `windows` clipped to `[from, to)`; `(to, to)` when empty (API.md).
pub fn covered(
    windows: &[Arc<StoredWindow>],
    from: SystemTime,
    to: SystemTime,
) -> (SystemTime, SystemTime) {
    let start = windows.iter().map(|w| w.start).min();
    let end = windows.iter().map(|w| w.end()).max();
    match (start, end) {
        (Some(s), Some(e)) => (s.max(from), e.min(to).max(s.max(from))),
        _ => (to, to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window whose estimate is `bytes`: its counters' names make up the difference.
    fn window(start_secs: u64, bytes: u64) -> WindowData {
        let base = (size_of::<StoredWindow>() + 32) as u64;
        WindowData {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(start_secs),
            duration: Duration::from_secs(10),
            profiles: BTreeMap::new(),
            processes: HashMap::new(),
            counters: vec![("x".repeat(bytes.saturating_sub(base) as usize), 0)],
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_cap_drops_the_oldest_first_and_counts_them() {
        let mut store = WindowStore::new(Duration::from_secs(3600), 2500);
        for i in 0..5 {
            store.push(window(1000 + i * 10, 1000), at(1010 + i * 10));
        }
        assert_eq!(store.len(), 2);
        assert_eq!(store.bytes(), 2000);
        assert_eq!(store.oldest(), Some(at(1030)));
        assert_eq!(
            store.dropped,
            Dropped {
                expired: 0,
                memory: 3
            }
        );
        // A window alone over the cap is still kept.
        store.push(window(1050, 10_000), at(1060));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn the_cap_counts_the_shared_stacks_once_and_releases_them_with_their_windows() {
        use crate::render::testutil::{profile, sample, user};
        let with_stack = |start: u64, functions: &[&str]| {
            let mut w = window(start, 1000);
            let frames = functions.iter().map(|f| user(f)).collect();
            let stack: Vec<u32> = (0..functions.len() as u32).collect();
            w.profiles.insert(
                ProfileType::Cpu,
                profile(frames, vec![sample(1, 1, "app", &stack, 1)]),
            );
            w
        };
        let mut store = WindowStore::new(Duration::from_secs(15), u64::MAX);
        let first = store.push(with_stack(1000, &["main", "gone"]), at(1010));
        let one_window = store.bytes();
        store.push(with_stack(1010, &["main", "gone"]), at(1020));
        // The second window's stack and frames are the first's.
        assert!(store.bytes() < 2 * one_window);
        assert_eq!(store.shared_counts(), (2, 1));
        drop(first);
        store.push(with_stack(1020, &["main"]), at(1030));
        // The first window expired; its stack lives on in the second.
        assert_eq!(store.len(), 2);
        assert_eq!(store.shared_counts(), (2, 2));
        store.push(with_stack(1030, &["main"]), at(1040));
        assert_eq!(store.shared_counts(), (1, 1));
        let newest = store.range(at(1030), at(1040));
        let p = newest[0]
            .profile(ProfileType::Cpu, &|_| true)
            .expect("cpu profile");
        assert_eq!(p.frames[p.samples[0].stack[0] as usize].function, "main");
    }

    #[test]
    fn retention_expires_windows_and_ranges_select_overlaps() {
        let mut store = WindowStore::new(Duration::from_secs(30), u64::MAX);
        for i in 0..6 {
            store.push(window(1000 + i * 10, 1), at(1010 + i * 10));
        }
        // now = 1060: windows ending at or before 1030 are gone.
        assert_eq!(store.oldest(), Some(at(1030)));
        assert_eq!(store.dropped.expired, 3);
        let got = store.range(at(1035), at(1045));
        assert_eq!(
            got.iter().map(|w| w.start).collect::<Vec<_>>(),
            [at(1030), at(1040)]
        );
        assert_eq!(covered(&got, at(1035), at(1045)), (at(1035), at(1045)));
        let none = store.range(at(2000), at(2010));
        assert!(none.is_empty());
        assert_eq!(covered(&none, at(2000), at(2010)), (at(2010), at(2010)));
        let all = store.range(at(0), at(5000));
        assert_eq!(covered(&all, at(0), at(5000)), (at(1030), at(1060)));
    }
}
