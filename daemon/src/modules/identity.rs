//! Which file a mapping is, across processes and mount namespaces, and over time.
//!
//! `/proc/PID/maps` gives the device and inode of a mapped file, but an inode number is
//! reused once its file is deleted and closed, and a file can be rewritten in place under
//! the same inode. The key therefore also carries the file's size and its modification and
//! change times: a new file created on a reused inode always has a new change time (the
//! kernel sets it; no one can set it back), and rewriting one in place changes its size or
//! modification time.

use std::{
    collections::{HashSet, VecDeque},
    fs::Metadata,
    hash::Hash,
    os::unix::fs::MetadataExt,
};

use crate::process::maps::Mapping;

/// What tells apart two files that had the same device and inode number, and one file
/// before and after it was rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &Metadata) -> FileStamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file's bytes may differ from what they were at `earlier`. The change
    /// time is left out: it also moves when the file is only renamed, linked or deleted
    /// (a package upgrade replacing it), which leaves an open file's bytes intact.
    pub fn content_differs(&self, earlier: &FileStamp) -> bool {
        self.size != earlier.size || self.mtime_ns != earlier.mtime_ns
    }
}

/// Identity of a module's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKey {
    File {
        dev: (u32, u32),
        inode: u64,
        stamp: FileStamp,
    },
    /// The kernel's vDSO image: the same in every process.
    Vdso,
}

impl ModuleKey {
    pub fn file(mapping: &Mapping, stamp: FileStamp) -> ModuleKey {
        ModuleKey::File {
            dev: mapping.dev,
            inode: mapping.inode,
            stamp,
        }
    }
}

/// A set that remembers at most `capacity` items, forgetting the oldest first.
#[derive(Debug)]
pub struct RecentSet<T> {
    items: HashSet<T>,
    order: VecDeque<T>,
    capacity: usize,
}

impl<T: Clone + Eq + Hash> RecentSet<T> {
    pub fn new(capacity: usize) -> RecentSet<T> {
        RecentSet {
            items: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn contains(&self, item: &T) -> bool {
        self.items.contains(item)
    }

    pub fn insert(&mut self, item: T) {
        if self.capacity == 0 || !self.items.insert(item.clone()) {
            return;
        }
        self.order.push_back(item);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.items.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_set_forgets_the_oldest_beyond_its_capacity() {
        let mut set = RecentSet::new(3);
        for i in 0..5 {
            set.insert(i);
            set.insert(i); // repeats take no room
        }
        assert_eq!(set.len(), 3);
        assert!(!set.contains(&0) && !set.contains(&1));
        assert!(set.contains(&2) && set.contains(&3) && set.contains(&4));
    }

    #[test]
    fn a_file_rewritten_in_place_gets_a_new_stamp() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").expect("write");
        let first = FileStamp::of(&std::fs::metadata(&path).expect("stat"));
        // Same inode, same size, new bytes: only the times can tell.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"two").expect("rewrite");
        let second = FileStamp::of(&std::fs::metadata(&path).expect("stat"));
        assert_eq!(first.size, second.size);
        assert!(second.content_differs(&first));
        // A rename changes the change time only: the bytes are the same.
        let renamed = dir.path().join("g");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::rename(&path, &renamed).expect("rename");
        let third = FileStamp::of(&std::fs::metadata(&renamed).expect("stat"));
        assert!(!third.content_differs(&second));
    }
}
