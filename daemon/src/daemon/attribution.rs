//! Who a pid is: name, executable, container and Kubernetes pod, read from what the node
//! has (`/proc/PID/{comm,exe,cgroup}` and the kubelet's `/var/log/pods/NS_NAME_UID/`); no
//! API server is asked.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// What is known of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessInfo {
    pub comm: String,
    pub exe: Option<String>,
    /// 64 hex digits, from the cgroup path.
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// `namespace/name`.
    pub pod: Option<String>,
}

impl ProcessInfo {
    /// Heap bytes held (the struct behind its Arc included).
    pub fn heap_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        size_of::<ProcessInfo>()
            + 16
            + self.comm.len()
            + text(&self.exe)
            + text(&self.container_id)
            + text(&self.pod_uid)
            + text(&self.pod)
    }
}

/// The container id in a `/proc/PID/cgroup` file: the last path segment that is, or wraps,
/// 64 hex digits (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>`, a bare
/// `<id>` under cgroupfs kubepods or docker).
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup_paths(cgroup)
        .flat_map(|path| path.split('/').rev())
        .find_map(|segment| {
            let s = segment.strip_suffix(".scope").unwrap_or(segment);
            let id = s.rsplit(['-', ':']).next().unwrap_or(s);
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| id.to_ascii_lowercase())
        })
}

/// The pod UID in a cgroup file: `.../pod<uid>/...` (cgroupfs) or
/// `kubepods-burstable-pod<uid_with_underscores>.slice` (systemd).
pub fn pod_uid(cgroup: &str) -> Option<String> {
    cgroup_paths(cgroup)
        .flat_map(|path| path.split('/'))
        .find_map(|segment| {
            let s = segment.strip_suffix(".slice").unwrap_or(segment);
            let at = s.rfind("pod")?;
            let uid = s[at + 3..].replace('_', "-");
            let is_uid = uid.len() == 36
                && uid
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) == (b == b'-'))
                && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit());
            (is_uid && (s.starts_with("kubepods") || at == 0)).then_some(uid)
        })
}

/// The path of each line (`hierarchy:controllers:path`).
fn cgroup_paths(cgroup: &str) -> impl Iterator<Item = &str> {
    cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2))
}

/// Pod UID -> `namespace/name` from the kubelet's log directories (`NS_NAME_UID`).
pub fn pods_in_log_dir(dir: &Path) -> HashMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (rest, uid) = name.rsplit_once('_')?;
            let (namespace, pod) = rest.split_once('_')?;
            Some((uid.to_string(), format!("{namespace}/{pod}")))
        })
        .collect()
}

/// Reads processes' attribution, keeping the last answer for processes that exited.
pub struct Attribution {
    proc_root: PathBuf,
    pod_log_dir: PathBuf,
    known: HashMap<u32, Arc<ProcessInfo>>,
    /// Every distinct attribution held, once: processes of one program (the many short
    /// compilers of a build) and one process's successive windows share it.
    distinct: HashSet<Arc<ProcessInfo>>,
    pods: HashMap<String, String>,
    pods_read: Option<Instant>,
}

impl Default for Attribution {
    fn default() -> Self {
        Attribution {
            proc_root: "/proc".into(),
            pod_log_dir: "/var/log/pods".into(),
            known: HashMap::new(),
            distinct: HashSet::new(),
            pods: HashMap::new(),
            pods_read: None,
        }
    }
}

impl Attribution {
    /// The process now (from `/proc`), else what was last read of it, else only `comm`.
    pub fn lookup(&mut self, pid: u32, fallback_comm: &str) -> Arc<ProcessInfo> {
        match self.read(pid) {
            Some(info) => {
                let info = self.shared(info);
                self.known.insert(pid, info.clone());
                info
            }
            None => match self.known.get(&pid) {
                Some(info) => info.clone(),
                None => self.shared(ProcessInfo {
                    comm: fallback_comm.to_string(),
                    ..ProcessInfo::default()
                }),
            },
        }
    }

    /// The held copy of `info`, added if new.
    fn shared(&mut self, info: ProcessInfo) -> Arc<ProcessInfo> {
        if let Some(held) = self.distinct.get(&info) {
            return held.clone();
        }
        let info = Arc::new(info);
        self.distinct.insert(info.clone());
        info
    }

    /// Forgets processes that are not in `live`, and attributions nothing holds any more
    /// (no process, no stored window): bounded state.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.known.retain(|pid, _| live(*pid));
        self.distinct.retain(|info| Arc::strong_count(info) > 1);
    }

    fn read(&mut self, pid: u32) -> Option<ProcessInfo> {
        let dir = self.proc_root.join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        let pod_uid = pod_uid(&cgroup);
        let pod = pod_uid.as_ref().and_then(|uid| self.pod_name(uid));
        Some(ProcessInfo {
            comm: comm.trim_end().to_string(),
            exe,
            container_id: container_id(&cgroup),
            pod_uid,
            pod,
        })
    }

    /// Re-reads the pod directories when a UID is unknown, at most every 10 s.
    fn pod_name(&mut self, uid: &str) -> Option<String> {
        if !self.pods.contains_key(uid)
            && self
                .pods_read
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            self.pods = pods_in_log_dir(&self.pod_log_dir);
            self.pods_read = Some(Instant::now());
        }
        self.pods.get(uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f9a1c0d5e7b44aa9a1c0d5e7b44aa9a1c0d5e7b44aa9a1c0d5e7b44aa9a1c0d";

    #[test]
    fn container_ids_from_the_usual_runtimes() {
        let cases = [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d7e3f2a_1b2c_4d5e_8f90_a1b2c3d4e5f6.slice/cri-containerd-{ID}.scope\n"),
            format!("12:memory:/kubepods/besteffort/pod0d7e3f2a-1b2c-4d5e-8f90-a1b2c3d4e5f6/{ID}\n0::/\n"),
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("0::/kubepods/crio-{ID}\n"),
        ];
        for cgroup in &cases {
            assert_eq!(container_id(cgroup).as_deref(), Some(ID), "{cgroup}");
        }
        for cgroup in [
            "0::/\n",
            "0::/user.slice/user-0.slice/session-3.scope\n",
            "",
            "garbage",
        ] {
            assert_eq!(container_id(cgroup), None, "{cgroup}");
        }
    }

    #[test]
    fn pod_uids_from_systemd_and_cgroupfs_paths() {
        let uid = "0d7e3f2a-1b2c-4d5e-8f90-a1b2c3d4e5f6";
        let systemd = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d7e3f2a_1b2c_4d5e_8f90_a1b2c3d4e5f6.slice/cri-containerd-{ID}.scope\n");
        let cgroupfs = format!("4:memory:/kubepods/besteffort/pod{uid}/{ID}\n");
        assert_eq!(pod_uid(&systemd).as_deref(), Some(uid));
        assert_eq!(pod_uid(&cgroupfs).as_deref(), Some(uid));
        assert_eq!(
            pod_uid(&format!("0::/system.slice/docker-{ID}.scope")),
            None
        );
        assert_eq!(pod_uid("0::/kubepods.slice/podnotauid.slice"), None);
    }

    #[test]
    fn pod_names_from_the_kubelet_log_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = "0d7e3f2a-1b2c-4d5e-8f90-a1b2c3d4e5f6";
        std::fs::create_dir(
            dir.path()
                .join(format!("shop_checkout-api-7d9f8b6c5-x2x7q_{uid}")),
        )
        .expect("mkdir");
        std::fs::create_dir(dir.path().join("junk")).expect("mkdir");
        let pods = pods_in_log_dir(dir.path());
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[uid], "shop/checkout-api-7d9f8b6c5-x2x7q");
    }

    #[test]
    fn this_process_is_read_and_exited_ones_are_remembered() {
        let mut a = Attribution::default();
        let me = std::process::id();
        let info = a.lookup(me, "x");
        assert!(!info.comm.is_empty());
        assert!(info.exe.is_some());
        let gone = a.lookup(u32::MAX - 1, "ghost");
        assert_eq!((gone.comm.as_str(), gone.exe.as_ref()), ("ghost", None));
    }

    #[test]
    fn processes_of_one_program_and_successive_windows_share_one_attribution() {
        let mut a = Attribution::default();
        let me = std::process::id();
        let first = a.lookup(me, "x");
        // The next window reads /proc again: the same attribution comes back.
        assert!(Arc::ptr_eq(&first, &a.lookup(me, "x")));
        // Two unknown pids of one name share theirs.
        let one = a.lookup(u32::MAX - 1, "ghost");
        assert!(Arc::ptr_eq(&one, &a.lookup(u32::MAX - 2, "ghost")));
        // Once no process and no window holds one, it is let go.
        drop((first, one));
        a.retain(|pid| pid == me);
        assert_eq!(a.distinct.len(), 1);
    }
}
