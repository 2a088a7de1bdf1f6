//! The profile store: symbolized windows in time order, kept for a retention period under a
//! memory cap (oldest first out, counted), queried by time range and merged on read.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{histogram::LatencyHistogram, profile::Profile, profile::ProfileType};

use super::attribution::ProcessInfo;

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

/// A finished, symbolized window.
#[derive(Debug)]
pub struct StoredWindow {
    pub start: SystemTime,
    pub duration: Duration,
    pub profiles: BTreeMap<ProfileType, Profile>,
    pub processes: HashMap<u32, ProcessFigures>,
    /// Sample and loss counters gathered during this window, by name.
    pub counters: Vec<(String, u64)>,
    /// Estimated heap bytes held (what the memory cap counts).
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

    /// An estimate of the heap bytes this window holds.
    pub fn estimate_bytes(
        profiles: &BTreeMap<ProfileType, Profile>,
        processes: &HashMap<u32, ProcessFigures>,
    ) -> u64 {
        let mut bytes = 0usize;
        for p in profiles.values() {
            for f in &p.frames {
                bytes += size_of_val(f)
                    + f.function.len()
                    + f.module.len()
                    + f.file.as_ref().map_or(0, String::len);
            }
            for s in &p.samples {
                bytes += size_of_val(s)
                    + s.comm.len()
                    + s.stack.len() * 4
                    + s.values.len() * 8
                    + s.labels
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>();
            }
        }
        bytes += processes
            .values()
            .map(|p| size_of::<ProcessFigures>() + 64 + p.runqueue.heap_bytes())
            .sum::<usize>();
        bytes as u64
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
    bytes: u64,
    pub dropped: Dropped,
}

impl WindowStore {
    pub fn new(retention: Duration, max_bytes: u64) -> WindowStore {
        WindowStore {
            windows: VecDeque::new(),
            retention,
            max_bytes,
            bytes: 0,
            dropped: Dropped::default(),
        }
    }

    /// Adds the newest window, then drops what the retention and the cap no longer allow
    /// (the newest window is always kept, even alone over the cap).
    pub fn push(&mut self, window: StoredWindow, now: SystemTime) {
        self.bytes += window.bytes;
        self.windows.push_back(Arc::new(window));
        let horizon = now
            .checked_sub(self.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        while self.windows.len() > 1 {
            let oldest = &self.windows[0];
            if oldest.end() <= horizon {
                self.dropped.expired += 1;
            } else if self.bytes > self.max_bytes {
                self.dropped.memory += 1;
            } else {
                break;
            }
            if let Some(w) = self.windows.pop_front() {
                self.bytes -= w.bytes;
            }
        }
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

    pub fn bytes(&self) -> u64 {
        self.bytes
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

    fn window(start_secs: u64, bytes: u64) -> StoredWindow {
        StoredWindow {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(start_secs),
            duration: Duration::from_secs(10),
            profiles: BTreeMap::new(),
            processes: HashMap::new(),
            counters: Vec::new(),
            bytes,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_cap_drops_the_oldest_first_and_counts_them() {
        let mut store = WindowStore::new(Duration::from_secs(3600), 250);
        for i in 0..5 {
            store.push(window(1000 + i * 10, 100), at(1010 + i * 10));
        }
        assert_eq!(store.len(), 2);
        assert_eq!(store.bytes(), 200);
        assert_eq!(store.oldest(), Some(at(1030)));
        assert_eq!(
            store.dropped,
            Dropped {
                expired: 0,
                memory: 3
            }
        );
        // A window alone over the cap is still kept.
        store.push(window(1050, 1000), at(1060));
        assert_eq!(store.len(), 1);
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
