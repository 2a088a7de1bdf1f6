//! Goroutine census of a running Go program, read from its memory without stopping it:
//! every live goroutine with its id, state, the runtime's wait reason and wait start, the
//! function that created it and the one it runs, and its stack when it is parked.
//!
//! ```ignore
//! let process = goroutines::GoProcess::attach(pid)?;
//! let census = process.census()?;
//! for g in census.goroutines.iter().filter(|g| !g.system) {
//!     let top = g.stack_pcs.first().and_then(|&pc| process.stack_frame(pc));
//!     println!("{} {} {:?} {:?}", g.goid, g.state, g.wait_reason, top);
//! }
//! ```
//!
//! How (amd64, Go 1.19-1.27, stripped or not): the executable's pclntab (`symbolize::go`)
//! gives the release and function table; `runtime.allgs` is found by symbol or by decoding
//! the runtime code that uses it (`locate`); the `runtime.g` field offsets come from DWARF
//! or a per-release table (`layout`), the wait reason names from the binary's
//! `runtime.waitReasonStrings` or a per-release table (`waitreason`). Memory is read with
//! `process_vm_readv` (`memory`): the process is never stopped or written, so goroutines
//! created or exiting meanwhile are expected; entries that do not read as goroutines are
//! skipped and counted.
//!
//! Modules: `binary` (the executable), `dwarf`, `layout`, `waitreason`, `x86` (finding
//! RIP-relative operands), `locate` (allgs), `memory`, `stack` (unwinding parked stacks);
//! then what is made of a census: `snapshot` (goroutines with names), `report` (the
//! `loupe goroutines` views and JSON, the `loupe stat` section), `profile` (the goroutine
//! profile); and `sched_latency`, the runtime's own scheduling latency histogram, read the
//! same way.

mod binary;
mod dwarf;
mod layout;
mod locate;
mod memory;
pub mod probes;
pub mod profile;
pub mod report;
pub mod sched_latency;
pub mod snapshot;
mod stack;
mod waitreason;
mod x86;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use binary::Source;
pub use locate::Found;
pub use stack::StackStatus;

use binary::Binary;
use layout::GLayout;
use memory::{Memory, ReadError};

use crate::symbolize::go::{GoError, GoFrame};

/// How many times the goroutine list is reread when the runtime replaced it meanwhile.
const LIST_READ_ATTEMPTS: usize = 3;

/// Largest goid accepted as real (goids count every goroutine ever created).
const MAX_GOID: u64 = 1 << 48;

/// Why no census could be taken. Each names the process and the reason.
#[derive(Debug, thiserror::Error)]
pub enum GoroutineError {
    #[error("process {pid} exited")]
    ProcessExited { pid: u32 },
    #[error("process {pid} has no executable (a kernel thread or a zombie)")]
    NoExecutable { pid: u32 },
    #[error("process {pid} ({}) is not a Go program: its executable has no .gopclntab", path.display())]
    NotGo { pid: u32, path: PathBuf },
    // `reason`, not `source`: the message already says it, and a chain printer (`{:#}`)
    // would repeat it.
    #[error("process {pid}: cannot read its Go tables: {reason}")]
    GoTable { pid: u32, reason: GoError },
    #[error("process {pid}: unreadable executable: {reason}")]
    Binary { pid: u32, reason: String },
    #[error(
        "Go binary built by {version}: {what} is not known for this release, refusing to guess"
    )]
    UnsupportedVersion { version: String, what: &'static str },
    #[error("Go binary built by {version}: runtime.allgs not found ({tried})")]
    AllgsNotFound { version: String, tried: String },
    #[error("Go binary built by {version}: runtime.sched not found ({tried})")]
    SchedNotFound { version: String, tried: String },
    #[error("process {pid}: the runtime's scheduling latency histogram went backwards between two reads (was the process replaced?)")]
    HistogramWentBack { pid: u32 },
    #[error(
        "not allowed to read the memory of process {pid}: run as root (or with CAP_SYS_PTRACE)"
    )]
    PermissionDenied { pid: u32 },
    #[error("process {pid}: cannot read {what} from its memory")]
    Unreadable { pid: u32, what: &'static str },
    #[error("process {pid}: cannot read {what}: {reason}")]
    Io {
        pid: u32,
        what: &'static str,
        reason: String,
    },
}

/// A goroutine's scheduling state (`g.atomicstatus` without the `_Gscan` bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GStatus {
    Idle,
    Runnable,
    Running,
    Syscall,
    Waiting,
    Moribund,
    Dead,
    Enqueue,
    Copystack,
    Preempted,
    /// Go 1.26+: found leaked by the goroutine leak detector.
    Leaked,
    /// Go 1.26+: a dead g kept for a cgo callback thread.
    DeadExtra,
}

/// `_Gscan`: set while the GC or a traceback scans the goroutine's stack.
const G_SCAN: u32 = 0x1000;

impl GStatus {
    /// The state of a raw status word, if it is one that release can have.
    pub fn from_raw(raw: u32, minor: u32) -> Option<GStatus> {
        use GStatus::*;
        Some(match raw & !G_SCAN {
            0 => Idle,
            1 => Runnable,
            2 => Running,
            3 => Syscall,
            4 => Waiting,
            5 => Moribund,
            6 => Dead,
            7 => Enqueue,
            8 => Copystack,
            9 => Preempted,
            10 if minor >= 26 => Leaked,
            11 if minor >= 26 => DeadExtra,
            _ => return None,
        })
    }

    /// As the runtime's traceback prints it (`gStatusStrings`).
    pub fn name(self) -> &'static str {
        use GStatus::*;
        match self {
            Idle => "idle",
            Runnable => "runnable",
            Running => "running",
            Syscall => "syscall",
            Waiting => "waiting",
            Moribund => "moribund",
            Dead => "dead",
            Enqueue => "enqueue",
            Copystack => "copystack",
            Preempted => "preempted",
            Leaked => "leaked",
            DeadExtra => "waiting for cgo callback",
        }
    }

    /// Whether the goroutine exists (created and not exited).
    pub fn is_live(self) -> bool {
        !matches!(self, GStatus::Idle | GStatus::Dead | GStatus::DeadExtra)
    }
}

impl std::fmt::Display for GStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One live goroutine.
#[derive(Clone, Debug)]
pub struct Goroutine {
    pub goid: u64,
    pub state: GStatus,
    /// The `_Gscan` bit was set: the GC (or a traceback) was scanning its stack.
    pub scanning: bool,
    /// The runtime's wait reason (`"chan receive"`, `"sync.Mutex.Lock"`, ...), for waiting
    /// goroutines that have one.
    pub wait_reason: Option<String>,
    /// When the goroutine was first seen blocked by a GC (`g.waitsince`), in
    /// CLOCK_MONOTONIC nanoseconds (the runtime's nanotime); None if no GC has seen it
    /// blocked yet. Compare with [`Census::taken_at_ns`].
    pub wait_since_ns: Option<u64>,
    /// Return address of the `go` statement that created it (`g.gopc`; name it with
    /// [`GoProcess::stack_frame`]); None for the goroutine the runtime starts itself (main).
    pub created_by: Option<u64>,
    /// Entry of the goroutine's function (`g.startpc`).
    pub start_pc: u64,
    /// Whether the runtime counts it as a system goroutine (its function is in package
    /// runtime, except runtime.main): runtime.NumGoroutine() leaves those out.
    pub system: bool,
    /// The resume pc then return addresses, innermost first (live addresses; name them with
    /// [`GoProcess::stack_frame`]). Empty for running goroutines.
    pub stack_pcs: Vec<u64>,
    pub stack_status: StackStatus,
}

impl Goroutine {
    /// How long it has been blocked at `taken_at_ns`, when the runtime knows: the rule of
    /// [`snapshot::NamedGoroutine::waiting_ns`] (waiting or in a system call, and stamped).
    pub fn waiting_ns(&self, taken_at_ns: u64) -> Option<u64> {
        matches!(self.state, GStatus::Waiting | GStatus::Syscall)
            .then_some(self.wait_since_ns)
            .flatten()
            .map(|since| taken_at_ns.saturating_sub(since))
    }
}

/// Entries of the goroutine list that were not read as goroutines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Null entries, or pointers into memory we could not read.
    pub unreadable: u64,
    /// Entries whose status, goid or stack bounds are impossible (a g being reused or
    /// torn while we read it).
    pub invalid: u64,
}

impl Skipped {
    pub fn total(&self) -> u64 {
        self.unreadable + self.invalid
    }
}

/// The goroutines of a process at one moment (approximately: the process kept running).
#[derive(Clone, Debug)]
pub struct Census {
    pub pid: u32,
    /// `go1.24.11`.
    pub go_version: String,
    /// Live goroutines, in the runtime's list order (creation order of their g).
    pub goroutines: Vec<Goroutine>,
    /// Exited goroutines whose g waits for reuse.
    pub dead: u64,
    pub skipped: Skipped,
    /// Stacks that could not be unwound to their root.
    pub truncated_stacks: u64,
    /// CLOCK_MONOTONIC when the list was read.
    pub taken_at_ns: u64,
}

impl Census {
    /// Goroutines runtime.NumGoroutine() counts (not the runtime's own).
    pub fn user_goroutines(&self) -> impl Iterator<Item = &Goroutine> {
        self.goroutines.iter().filter(|g| !g.system)
    }
}

/// The fields of one g, as read at once.
pub(crate) struct RawG {
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub syscallsp: u64,
    pub syscallpc: u64,
    pub status: u32,
    pub goid: u64,
    pub waitsince: i64,
    pub waitreason: u8,
    pub gopc: u64,
    pub startpc: u64,
}

impl RawG {
    /// Reads the g at live address `gp` with one read (so its fields are from one instant,
    /// as far as a running process allows).
    pub fn read(mem: &Memory, layout: &GLayout, gp: u64) -> Result<RawG, ReadError> {
        if gp == 0 || !gp.is_multiple_of(8) {
            return Err(ReadError::Unmapped);
        }
        let mut buf = vec![0u8; layout.span() as usize];
        mem.read(gp, &mut buf)?;
        let u64_at = |off: u64| {
            let o = off as usize;
            u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or([0; 8]))
        };
        let o = layout.atomicstatus as usize;
        Ok(RawG {
            stack_lo: u64_at(layout.stack_lo),
            stack_hi: u64_at(layout.stack_hi),
            sched_sp: u64_at(layout.sched_sp),
            sched_pc: u64_at(layout.sched_pc),
            syscallsp: u64_at(layout.syscallsp),
            syscallpc: u64_at(layout.syscallpc),
            status: u32::from_le_bytes(buf[o..o + 4].try_into().unwrap_or([0; 4])),
            goid: u64_at(layout.goid),
            waitsince: u64_at(layout.waitsince) as i64,
            waitreason: buf[layout.waitreason as usize],
            gopc: u64_at(layout.gopc),
            startpc: u64_at(layout.startpc),
        })
    }

    /// No stack (a dead g whose stack was freed), or a power-of-two sized one, as the
    /// runtime's stack allocator always gives.
    pub fn stack_plausible(&self) -> bool {
        if self.stack_lo == 0 && self.stack_hi == 0 {
            return true;
        }
        let size = self.stack_hi.wrapping_sub(self.stack_lo);
        self.stack_lo < self.stack_hi && size.is_power_of_two() && (2048..=1 << 30).contains(&size)
    }
}

/// A Go process prepared for censuses: its executable analysed and its goroutine list
/// located, once. Each [`GoProcess::census`] then reads the current goroutines.
pub struct GoProcess {
    pid: u32,
    binary: Binary,
    mem: Memory,
    bias: u64,
    allgs: u64,
    allgs_found: Found,
}

/// One census of process `pid`. To take several, keep a [`GoProcess`].
pub fn census(pid: u32) -> Result<Census, GoroutineError> {
    GoProcess::attach(pid)?.census()
}

impl GoProcess {
    pub fn attach(pid: u32) -> Result<GoProcess, GoroutineError> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(GoroutineError::ProcessExited { pid });
        }
        let binary = Binary::open(pid)?;
        let bias = binary.load_bias(pid)?;
        let mem = Memory::new(pid);
        let (allgs, allgs_found) = locate::allgs(&binary, &mem, bias)?;
        Ok(GoProcess {
            pid,
            binary,
            mem,
            bias,
            allgs,
            allgs_found,
        })
    }

    pub fn go_version(&self) -> &str {
        &self.binary.version
    }

    /// How `runtime.allgs` was found, and its link-time address.
    pub fn allgs(&self) -> (u64, Found) {
        (self.allgs.wrapping_sub(self.bias), self.allgs_found)
    }

    /// Where the g layout and the wait reason names came from.
    pub fn sources(&self) -> (Source, Source) {
        (self.binary.layout_source, self.binary.wait_reasons_source)
    }

    /// Frames at live address `pc`, innermost first (inlined calls, then the function).
    /// Pass `pc - 1` for a return address.
    pub fn symbolize(&self, pc: u64) -> Option<Vec<GoFrame>> {
        self.binary.table.symbolize(pc.wrapping_sub(self.bias))
    }

    /// Frames of one pc of a goroutine's stack, named as the runtime's traceback names
    /// them: a return address is looked up at pc - 1 (inside the call), except a function's
    /// entry (where a goroutine that has not run yet resumes).
    pub fn stack_frame(&self, pc: u64) -> Option<Vec<GoFrame>> {
        let at = pc.wrapping_sub(self.bias);
        if self.binary.table.function_entry(at) == Some(at) {
            self.symbolize(pc)
        } else {
            self.symbolize(pc.wrapping_sub(1))
        }
    }

    /// The printed name of the innermost function at live address `pc`.
    pub fn function(&self, pc: u64) -> Option<String> {
        self.symbolize(pc)?.into_iter().next().map(|f| f.function)
    }

    /// Reads the goroutine list now.
    pub fn census(&self) -> Result<Census, GoroutineError> {
        let taken_at_ns = monotonic_ns();
        let mem = &self.mem;
        let gps = self.read_list()?;

        let mut census = Census {
            pid: self.pid,
            go_version: self.binary.version.clone(),
            goroutines: Vec::new(),
            dead: 0,
            skipped: Skipped::default(),
            truncated_stacks: 0,
            taken_at_ns,
        };
        let mut seen = std::collections::HashSet::new();
        for gp in gps {
            let g = match RawG::read(mem, &self.binary.layout, gp) {
                Ok(g) => g,
                Err(ReadError::Unmapped) => {
                    census.skipped.unreadable += 1;
                    continue;
                }
                Err(e) => return Err(mem.error(e, "a goroutine")),
            };
            let Some(state) = GStatus::from_raw(g.status, self.binary.minor) else {
                census.skipped.invalid += 1;
                continue;
            };
            if !state.is_live() {
                census.dead += 1;
                continue;
            }
            if g.goid == 0 || g.goid > MAX_GOID || !g.stack_plausible() || !seen.insert(g.goid) {
                census.skipped.invalid += 1;
                continue;
            }
            let goroutine = self.goroutine(&g, state)?;
            if matches!(goroutine.stack_status, StackStatus::Truncated) {
                census.truncated_stacks += 1;
            }
            census.goroutines.push(goroutine);
        }
        Ok(census)
    }

    /// The g pointers of `runtime.allgs`. The slice header is read in one piece; if the
    /// array cannot be read (the runtime grew it and freed the old one meanwhile), the
    /// header is read again, a few times.
    fn read_list(&self) -> Result<Vec<u64>, GoroutineError> {
        let mem = &self.mem;
        let mut last = None;
        for _ in 0..LIST_READ_ATTEMPTS {
            let mut header = [0u8; 16];
            mem.read(self.allgs, &mut header)
                .map_err(|e| mem.error(e, "the runtime.allgs slice header"))?;
            let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
            let (ptr, len) = (word(0), word(8));
            if ptr == 0 || len == 0 || len > locate::MAX_GOROUTINES {
                return Err(mem.error(ReadError::Unmapped, "a valid runtime.allgs slice"));
            }
            match self.read_pointers(ptr, len) {
                Ok(gps) => return Ok(gps),
                Err(e @ ReadError::Unmapped) => last = Some(e),
                Err(e) => return Err(mem.error(e, "the goroutine list (runtime.allgs)")),
            }
        }
        Err(mem.error(
            last.unwrap_or(ReadError::Unmapped),
            "the goroutine list (runtime.allgs)",
        ))
    }

    /// The `len` g pointers at `ptr`, in bounded chunks.
    fn read_pointers(&self, ptr: u64, len: u64) -> Result<Vec<u64>, ReadError> {
        let mut out = Vec::with_capacity(len as usize);
        let chunk = (memory::MAX_READ / 8) as u64;
        let mut i = 0;
        while i < len {
            let n = chunk.min(len - i);
            let mut buf = vec![0u8; (n * 8) as usize];
            self.mem.read(ptr + i * 8, &mut buf)?;
            out.extend(
                buf.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            );
            i += n;
        }
        Ok(out)
    }

    fn goroutine(&self, g: &RawG, state: GStatus) -> Result<Goroutine, GoroutineError> {
        let wait_reason = matches!(state, GStatus::Waiting | GStatus::Leaked)
            .then(|| self.binary.wait_reasons.get(usize::from(g.waitreason)))
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned();
        let (stack_pcs, stack_status) = match state {
            GStatus::Running => (Vec::new(), StackStatus::Running),
            _ => {
                // The runtime's own rule (traceback's unwinder.initAt): a goroutine in a
                // system call is unwound from where it entered it.
                let (pc, sp) = if g.syscallsp != 0 {
                    (g.syscallpc, g.syscallsp)
                } else {
                    (g.sched_pc, g.sched_sp)
                };
                match stack::unwind(
                    &self.mem,
                    &self.binary.table,
                    self.bias,
                    pc,
                    sp,
                    (g.stack_lo, g.stack_hi),
                ) {
                    Ok(r) => r,
                    Err(ReadError::Unmapped) => (Vec::new(), StackStatus::Truncated),
                    Err(e) => return Err(self.mem.error(e, "a goroutine stack")),
                }
            }
        };
        Ok(Goroutine {
            goid: g.goid,
            state,
            scanning: g.status & G_SCAN != 0,
            wait_reason,
            wait_since_ns: u64::try_from(g.waitsince).ok().filter(|&t| t != 0),
            created_by: (g.gopc != 0).then_some(g.gopc),
            start_pc: g.startpc,
            system: self.is_system(g.startpc),
            stack_pcs,
            stack_status,
        })
    }

    /// The runtime's isSystemGoroutine (without its dynamic finalizer/cleanup cases): a
    /// goroutine whose function is in package runtime, except runtime.main and the two
    /// that run user code.
    fn is_system(&self, startpc: u64) -> bool {
        let Some(name) = self
            .binary
            .table
            .function_name(startpc.wrapping_sub(self.bias))
        else {
            return false;
        };
        name.starts_with("runtime.")
            && !matches!(
                name.as_str(),
                "runtime.main" | "runtime.handleAsyncEvent" | "runtime.corostart"
            )
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the Go runtime's nanotime().
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
