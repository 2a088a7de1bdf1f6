//! Where goroutine events are probed in a Go executable: the entry of `runtime.casgstatus`,
//! found by name in the pclntab (so stripped binaries too), as a file offset for a uprobe;
//! the `g` and `m` fields the probe reads (from the release's layout, never guessed); and
//! the names of what it counts (wait reasons, creation sites) from the same executable.

use std::path::{Path, PathBuf};

use loupe_ebpf::goroutines::GOffsets;
use object::{Object, ObjectSegment};

use super::{binary::Binary, GoroutineError};

/// The function every goroutine state change goes through.
pub const CASGSTATUS: &str = "runtime.casgstatus";

/// Releases whose `casgstatus(gp *g, oldval, newval uint32)` signature, register ABI and
/// status numbering the kernel program relies on were checked (by tests over every one).
const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 19..=27;

/// The uprobe target of one Go process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoints {
    /// `/proc/PID/exe`: the running executable, even if its path was replaced since.
    pub exe: PathBuf,
    pub go_version: String,
    /// File offset of the first instruction of `runtime.casgstatus`.
    pub casgstatus: u64,
    /// Whether that instruction is one the kernel must single-step out of line rather than
    /// emulate (it emulates `push rbp`, how Go 1.21+ functions start; Go 1.19's
    /// `casgstatus` starts with `sub rsp`): every probe hit then costs several times more.
    pub single_stepped: bool,
    /// Where `g.waitreason`, `g.gopc`, `g.m`, `g.goid` and `m.curg` are in this release.
    pub offsets: GOffsets,
}

/// The probe points of process `pid`, or why it cannot be probed.
pub fn probe_points(pid: u32) -> Result<ProbePoints, GoroutineError> {
    let binary = Binary::open(pid)?;
    points(&binary, pid, PathBuf::from(format!("/proc/{pid}/exe")))
}

/// The probe points of the executable file `path` (a command not started yet).
pub fn probe_points_of_file(path: &Path) -> Result<ProbePoints, GoroutineError> {
    let binary = Binary::from_file(path)?;
    points(&binary, 0, path.to_path_buf())
}

fn points(binary: &Binary, pid: u32, exe: PathBuf) -> Result<ProbePoints, GoroutineError> {
    if !SUPPORTED_MINORS.contains(&binary.minor) {
        return Err(GoroutineError::UnsupportedVersion {
            version: binary.version.clone(),
            what: "runtime.casgstatus's arguments (goroutine events)",
        });
    }
    let not_found = |what: String| GoroutineError::Binary { pid, reason: what };
    let range = binary
        .table
        .function_range(CASGSTATUS)
        .ok_or_else(|| not_found(format!("its pclntab names no {CASGSTATUS}")))?;
    let code = binary
        .bytes_at(range.start, 4)
        .ok_or_else(|| not_found(format!("{CASGSTATUS} is not in the file")))?;
    if has_stack_check(code) {
        // A probe at an entry that morestack re-runs would count some changes twice.
        return Err(GoroutineError::UnsupportedVersion {
            version: binary.version.clone(),
            what: "runtime.casgstatus with a stack-growth prologue",
        });
    }
    let elf = binary
        .elf()
        .ok_or_else(|| not_found("the executable is no longer a readable ELF file".into()))?;
    let casgstatus = file_offset(&elf, range.start)
        .ok_or_else(|| not_found(format!("{CASGSTATUS} is in no loaded segment")))?;
    let offset = |at: u64, field: &str| {
        u32::try_from(at).map_err(|_| not_found(format!("runtime.g.{field} at offset {at}")))
    };
    let layout = &binary.layout;
    let offsets = GOffsets {
        waitreason: offset(layout.waitreason, "waitreason")?,
        gopc: offset(layout.gopc, "gopc")?,
        g_m: offset(layout.m, "m")?,
        m_curg: offset(layout.m_curg, "m.curg (runtime.m)")?,
        goid: offset(layout.goid, "goid")?,
        _reserved: 0,
    };
    Ok(ProbePoints {
        exe,
        go_version: binary.version.clone(),
        casgstatus,
        single_stepped: code.first() != Some(&PUSH_RBP),
        offsets,
    })
}

/// Names for what the probe counts in one process: its release's wait reason strings and
/// the functions of its creation sites. Read from the executable when the probe is
/// attached, as the process may be gone (with `/proc/PID/exe`) by the time it is reported.
pub struct EventNames {
    binary: Binary,
    /// Load bias of the executable in the process, once it is mapped (a launched command is
    /// probed before its exec).
    bias: Option<u64>,
}

impl EventNames {
    pub fn open(points: &ProbePoints) -> Result<EventNames, GoroutineError> {
        Ok(EventNames {
            binary: Binary::from_file(&points.exe)?,
            bias: None,
        })
    }

    /// The runtime's string for wait reason `index` (`"chan receive"`, ...).
    pub fn wait_reason(&self, index: usize) -> String {
        match self.binary.wait_reasons.get(index) {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!("[wait reason {index}]"),
        }
    }

    /// The function that executed the `go` statement whose return address (`g.gopc`) is
    /// `gopc` in process `pid`, as the census names creation sites: looked up at `gopc - 1`,
    /// innermost inlined function first.
    pub fn creation_site(&mut self, pid: u32, gopc: u64) -> Option<String> {
        let bias = match self.bias {
            Some(b) => b,
            None => {
                // A position-dependent executable (Go's default) is where it was linked,
                // even once the process is gone.
                let fixed = self
                    .binary
                    .elf()
                    .is_some_and(|elf| elf.kind() == object::ObjectKind::Executable);
                let b = if fixed {
                    0
                } else {
                    self.binary.load_bias(pid).ok()?
                };
                self.bias = Some(b);
                b
            }
        };
        let frames = self
            .binary
            .table
            .symbolize(gopc.wrapping_sub(1).wrapping_sub(bias))?;
        frames.into_iter().next().map(|f| f.function)
    }
}

/// `push rbp`, which x86 uprobes emulate without leaving the trap handler.
const PUSH_RBP: u8 = 0x55;

/// Whether code starts with the amd64 stack-bound check (`cmp rsp, [r14+16]`, or for
/// large frames `lea r12, [rsp-N]`) that `//go:nosplit` functions lack.
fn has_stack_check(code: &[u8]) -> bool {
    code.starts_with(&[0x49, 0x3b, 0x66, 0x10])
        || code.starts_with(&[0x4c, 0x8d, 0x64, 0x24])
        || code.starts_with(&[0x4c, 0x8d, 0xa4, 0x24])
}

fn file_offset(elf: &object::File<'_>, addr: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        let start = seg.address();
        (addr >= start && addr < start + size).then(|| addr - start + offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_split_prologues() {
        // cmp rsp, [r14+0x10]; jbe ...
        assert!(has_stack_check(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x30]));
        // lea r12, [rsp-0x98]
        assert!(has_stack_check(&[0x4c, 0x8d, 0x64, 0x24, 0x68]));
        // sub rsp, 0x28 (a nosplit function's frame setup)
        assert!(!has_stack_check(&[0x48, 0x83, 0xec, 0x28]));
        assert!(!has_stack_check(&[]));
    }
}
