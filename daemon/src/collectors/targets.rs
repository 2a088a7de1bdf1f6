//! Which processes are observed (`ebpf/src/probes/targets.rs`): the target map, and the
//! fork/exec/exit tracepoints that keep it and the process mappings up to date.

use std::ffi::OsString;

use aya::{
    maps::{Array, HashMap, MapData},
    programs::TracePoint,
    Ebpf,
};
use loupe_ebpf::targets::{TargetConfig, TARGET_FOLLOW_CHILDREN, TARGET_OBSERVE};

use super::{map_mut, take_map};
use crate::{
    bpf::{self, BpfError},
    engine::{Feature, FeatureKind},
};

/// What to profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// Every process on the host.
    All,
    /// These processes (all their threads).
    Pids(Vec<u32>),
    /// A command loupe starts, with all its descendants, from its first instruction.
    Command(Vec<OsString>),
}

impl TargetSpec {
    /// For titles and messages.
    pub fn describe(&self) -> String {
        match self {
            TargetSpec::All => "all processes".to_string(),
            TargetSpec::Pids(pids) if pids.len() == 1 => format!("pid {}", pids[0]),
            TargetSpec::Pids(pids) => format!(
                "pids {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            TargetSpec::Command(argv) => format!(
                "command: {}",
                argv.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }
}

/// The attached target programs and the target map.
pub struct Targets {
    map: HashMap<MapData, u32, u8>,
}

/// Category of the tracepoints below.
const TRACEPOINT_CATEGORY: &str = "sched";

/// The tracepoints target tracking attaches (program and tracepoint share the name), with
/// what each is for (`loupe check` reports them).
pub const FEATURES: [Feature; 3] = [
    Feature {
        kind: FeatureKind::Tracepoint {
            category: TRACEPOINT_CATEGORY,
            name: "sched_process_fork",
        },
        used_for: "following a launched command's children",
    },
    Feature {
        kind: FeatureKind::Tracepoint {
            category: TRACEPOINT_CATEGORY,
            name: "sched_process_exec",
        },
        used_for: "reloading a process's mappings after exec",
    },
    Feature {
        kind: FeatureKind::Tracepoint {
            category: TRACEPOINT_CATEGORY,
            name: "sched_process_exit",
        },
        used_for: "noticing that a profiled process exited, and forgetting it",
    },
];

impl Targets {
    pub fn attach(ebpf: &mut Ebpf, spec: &TargetSpec) -> Result<Targets, BpfError> {
        let config = TargetConfig {
            filter: u32::from(*spec != TargetSpec::All),
            fork_child_pid_offset: bpf::tracepoint_field_offset(
                "sched",
                "sched_process_fork",
                "child_pid",
            )?,
        };
        let mut config_map: Array<&mut MapData, TargetConfig> = map_mut(ebpf, "TARGET_CONFIG")?;
        config_map
            .set(0, config, 0)
            .map_err(|source| BpfError::Map {
                name: "TARGET_CONFIG",
                source,
            })?;
        let mut targets = Targets {
            map: take_map(ebpf, "TARGETS")?,
        };
        match spec {
            TargetSpec::Pids(pids) => {
                for &pid in pids {
                    targets.insert(pid, TARGET_OBSERVE)?;
                }
            }
            // Our own children become targets at fork, before they exec (see `spawned`).
            TargetSpec::Command(_) => targets.insert(std::process::id(), TARGET_FOLLOW_CHILDREN)?,
            TargetSpec::All => {}
        }
        for feature in FEATURES {
            let FeatureKind::Tracepoint { name, .. } = feature.kind else {
                continue;
            };
            let what = format!("tracepoint {TRACEPOINT_CATEGORY}:{name}");
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| BpfError::Program {
                    what: what.clone(),
                    source: aya::programs::ProgramError::NotLoaded,
                })?
                .try_into()
                .map_err(|source| BpfError::Program {
                    what: what.clone(),
                    source,
                })?;
            program.load().map_err(|source| BpfError::Program {
                what: what.clone(),
                source,
            })?;
            program
                .attach(TRACEPOINT_CATEGORY, name)
                .map_err(|source| BpfError::Program { what, source })?;
        }
        Ok(targets)
    }

    /// The launched command exists: stop adopting loupe's own children.
    pub fn spawned(&mut self) {
        let _ = self.map.remove(&std::process::id());
    }

    /// Observes process `pid` from now on (the daemon adds targets while running).
    pub fn observe(&mut self, pid: u32) -> Result<(), BpfError> {
        self.insert(pid, TARGET_OBSERVE)
    }

    /// Stops observing process `pid` (absent is fine).
    pub fn forget(&mut self, pid: u32) -> Result<(), BpfError> {
        match self.map.remove(&pid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(BpfError::Map {
                name: "TARGETS",
                source,
            }),
        }
    }

    fn insert(&mut self, pid: u32, flags: u8) -> Result<(), BpfError> {
        self.map
            .insert(pid, flags, 0)
            .map_err(|source| BpfError::Map {
                name: "TARGETS",
                source,
            })
    }
}
