//! A census with names: every goroutine's stack and creation site as functions, files and
//! lines, and its wait as a duration. The reports (`report`) and the goroutine profile
//! (`profile`) are pure functions of a [`Snapshot`], so they are tested without a process.

use std::time::SystemTime;

use serde::Serialize;

use super::{Census, GStatus, GoProcess, GoroutineError, StackStatus};

/// One named frame. Inlined calls come before (leafward of) the function they were
/// inlined into, as in every loupe stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NamedFrame {
    /// As Go prints it, or `executable+0xoffset` when pclntab has no function there.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub inlined: bool,
}

/// A goroutine as the reports see it.
#[derive(Clone, Debug)]
pub struct NamedGoroutine {
    pub goid: u64,
    pub state: GStatus,
    /// The runtime's wait reason, for waiting goroutines that have one.
    pub wait_reason: Option<String>,
    /// How long it has been blocked, when the runtime knows (as its traceback prints it:
    /// waiting or in a system call, and seen blocked by a GC, which stamps the start).
    pub waiting_ns: Option<u64>,
    /// The call site of the `go` statement that created it (the innermost frame there:
    /// the function the statement is written in); None for main.
    pub created_by: Option<NamedFrame>,
    /// Leaf first; empty for a running goroutine.
    pub stack: Vec<NamedFrame>,
    pub stack_status: StackStatus,
    /// One of the runtime's own goroutines, which runtime.NumGoroutine() leaves out.
    pub system: bool,
}

impl NamedGoroutine {
    /// What the runtime's traceback prints in brackets: the wait reason, else the state.
    pub fn shown_state(&self) -> &str {
        self.wait_reason.as_deref().unwrap_or(self.state.name())
    }
}

/// The named goroutines of one process at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub pid: u32,
    /// The process's name (`/proc/PID/comm`).
    pub comm: String,
    /// File name of the executable (the module of every frame).
    pub executable: String,
    pub go_version: String,
    pub taken_at: SystemTime,
    /// Live goroutines, the runtime's own included (see [`NamedGoroutine::system`]).
    pub goroutines: Vec<NamedGoroutine>,
    /// Entries of the goroutine list not read as goroutines (torn or being reused).
    pub skipped: u64,
    /// Stacks that could not be unwound to their root.
    pub truncated_stacks: u64,
}

impl Snapshot {
    /// The goroutines runtime.NumGoroutine() counts.
    pub fn user_goroutines(&self) -> impl Iterator<Item = &NamedGoroutine> {
        self.goroutines.iter().filter(|g| !g.system)
    }
}

impl GoProcess {
    /// Takes a census now and names it.
    pub fn snapshot(&self) -> Result<Snapshot, GoroutineError> {
        let census = self.census()?;
        let taken_at = SystemTime::now();
        Ok(self.name_census(census, taken_at))
    }

    fn name_census(&self, census: Census, taken_at: SystemTime) -> Snapshot {
        let executable = self
            .binary
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "[unknown]".to_string());
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|_| executable.clone());
        let goroutines = census
            .goroutines
            .iter()
            .map(|g| NamedGoroutine {
                goid: g.goid,
                state: g.state,
                wait_reason: g.wait_reason.clone(),
                waiting_ns: matches!(g.state, GStatus::Waiting | GStatus::Syscall)
                    .then_some(g.wait_since_ns)
                    .flatten()
                    .map(|since| census.taken_at_ns.saturating_sub(since)),
                created_by: g
                    .created_by
                    .map(|pc| self.named_frames(pc, &executable).swap_remove(0)),
                stack: g
                    .stack_pcs
                    .iter()
                    .flat_map(|&pc| self.named_frames(pc, &executable))
                    .collect(),
                stack_status: g.stack_status,
                system: g.system,
            })
            .collect();
        Snapshot {
            pid: census.pid,
            comm,
            executable,
            go_version: census.go_version,
            taken_at,
            goroutines,
            skipped: census.skipped.total(),
            truncated_stacks: census.truncated_stacks,
        }
    }

    /// The frames of one stack pc (see [`GoProcess::stack_frame`]), never empty: a pc
    /// pclntab does not cover is named by its offset in the executable.
    fn named_frames(&self, pc: u64, executable: &str) -> Vec<NamedFrame> {
        let frames: Vec<NamedFrame> = self
            .stack_frame(pc)
            .unwrap_or_default()
            .into_iter()
            .map(|f| NamedFrame {
                function: f.function,
                file: f.file,
                line: f.line,
                inlined: f.inlined,
            })
            .collect();
        if frames.is_empty() {
            return vec![NamedFrame {
                function: format!("{executable}+{:#x}", pc.wrapping_sub(self.bias)),
                file: None,
                line: None,
                inlined: false,
            }];
        }
        frames
    }
}
