//! The executable of a Go process: its pclntab, symbols, DWARF, the runtime facts the
//! census needs from it, and where it is loaded.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::{dwarf, layout, layout::GLayout, waitreason, GoroutineError};
use crate::process::maps;
use crate::symbolize::go::GoTable;

/// Symbols looked up in the ELF symbol table when there is one.
pub const SYM_ALLGS: &str = "runtime.allgs";
pub const SYM_WAIT_REASONS: &str = "runtime.waitReasonStrings";
pub const SYM_SCHED: &str = "runtime.sched";

/// Where a fact about the runtime came from (reported with the census, for trust).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The binary's own DWARF or symbol table.
    Binary,
    /// loupe's table for the binary's Go release.
    ReleaseTable,
}

pub struct Binary {
    pub path: PathBuf,
    data: std::sync::Arc<memmap2::Mmap>,
    pub table: GoTable,
    pub version: String,
    pub minor: u32,
    /// ELF symbols we use, by name: (address, size). Empty for a stripped binary.
    pub symbols: HashMap<String, (u64, u64)>,
    pub layout: GLayout,
    pub layout_source: Source,
    pub wait_reasons: Vec<String>,
    pub wait_reasons_source: Source,
}

impl Binary {
    /// Opens `/proc/PID/exe` and reads what the census needs from it.
    pub fn open(pid: u32) -> Result<Binary, GoroutineError> {
        let exe = format!("/proc/{pid}/exe");
        let path = std::fs::read_link(&exe).map_err(|e| gone_or(pid, e, "its executable"))?;
        let file = File::open(&exe).map_err(|e| gone_or(pid, e, "its executable"))?;
        // SAFETY: read-only private mapping of the executable of a running process (which
        // the kernel keeps from being written while it runs: ETXTBSY).
        let data =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| gone_or(pid, e, "its executable"))?;
        Self::parse(pid, path, data)
    }

    /// Reads a Go executable file (no process): a command about to be launched, tests.
    pub fn from_file(path: &std::path::Path) -> Result<Binary, GoroutineError> {
        let file = File::open(path).map_err(|e| GoroutineError::Io {
            pid: 0,
            what: "the executable",
            reason: e.to_string(),
        })?;
        // SAFETY: read-only private mapping of a test binary nobody writes meanwhile.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GoroutineError::Io {
            pid: 0,
            what: "the executable",
            reason: e.to_string(),
        })?;
        Self::parse(0, path.to_path_buf(), data)
    }

    fn parse(pid: u32, path: PathBuf, data: memmap2::Mmap) -> Result<Binary, GoroutineError> {
        let data = std::sync::Arc::new(data);
        let table = match GoTable::from_image(data.clone()) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(GoroutineError::NotGo { pid, path }),
            Err(reason) => return Err(GoroutineError::GoTable { pid, reason }),
        };
        let version = table.go_version().to_string();
        let minor = crate::symbolize::go::minor_version(&version).ok_or_else(|| {
            GoroutineError::UnsupportedVersion {
                version: version.clone(),
                what: "its version string",
            }
        })?;
        let elf = object::File::parse(&data[..]).map_err(|e| GoroutineError::Binary {
            pid,
            reason: e.to_string(),
        })?;
        if elf.architecture() != object::Architecture::X86_64 {
            return Err(GoroutineError::UnsupportedVersion {
                version: format!("{version} on {:?}", elf.architecture()),
                what: "the architecture (only amd64 is supported)",
            });
        }
        let mut symbols = HashMap::new();
        for s in elf.symbols() {
            if let Ok(name) = s.name() {
                if [SYM_ALLGS, SYM_WAIT_REASONS, SYM_SCHED].contains(&name) {
                    symbols.insert(name.to_string(), (s.address(), s.size()));
                }
            }
        }

        let dwarf_layout = match dwarf::struct_members(&elf, &layout::DWARF_STRUCTS) {
            Ok(Some(structs)) => Some(layout::from_dwarf(&structs)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        };
        let (layout, layout_source) = match dwarf_layout {
            Some(Ok(l)) => (l, Source::Binary),
            Some(Err(reason)) => {
                return Err(GoroutineError::Binary {
                    pid,
                    reason: format!(
                        "its DWARF does not describe runtime.g and runtime.m: {reason}"
                    ),
                })
            }
            None => (
                layout::for_minor(minor).ok_or_else(|| GoroutineError::UnsupportedVersion {
                    version: version.clone(),
                    what: "the runtime.g layout (no DWARF, and no checked table for this release)",
                })?,
                Source::ReleaseTable,
            ),
        };

        let from_binary = symbols
            .get(SYM_WAIT_REASONS)
            .and_then(|&(addr, size)| wait_reason_strings(&elf, addr, size));
        let (wait_reasons, wait_reasons_source) = match from_binary {
            Some(v) => (v, Source::Binary),
            None => (
                waitreason::for_minor(minor)
                    .ok_or_else(|| GoroutineError::UnsupportedVersion {
                        version: version.clone(),
                        what: "the wait reason numbering (no symbol table, and no checked table for this release)",
                    })?
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                Source::ReleaseTable,
            ),
        };
        drop(elf);
        Ok(Binary {
            path,
            data,
            table,
            version,
            minor,
            symbols,
            layout,
            layout_source,
            wait_reasons,
            wait_reasons_source,
        })
    }

    /// The ELF, parsed again (cheap: headers only).
    pub fn elf(&self) -> Option<object::File<'_>> {
        object::File::parse(&self.data[..]).ok()
    }

    /// How far the process loaded the executable from its link-time addresses (0 unless
    /// position-independent), from its mappings of this file.
    pub fn load_bias(&self, pid: u32) -> Result<u64, GoroutineError> {
        let meta = std::fs::metadata(format!("/proc/{pid}/exe"))
            .map_err(|e| gone_or(pid, e, "its executable"))?;
        let dev = (libc::major(meta.dev()), libc::minor(meta.dev()));
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|e| gone_or(pid, e, "its memory map"))?;
        let elf = self.elf().ok_or_else(|| GoroutineError::Binary {
            pid,
            reason: "the executable is no longer a readable ELF file".into(),
        })?;
        for m in maps::parse(&text) {
            if m.inode != meta.ino() || m.dev != dev {
                continue;
            }
            for seg in elf.segments() {
                let (off, size) = seg.file_range();
                if (off..off + size.max(1)).contains(&m.offset) {
                    return Ok(m.start.wrapping_sub(m.offset - off + seg.address()));
                }
            }
        }
        Err(GoroutineError::Binary {
            pid,
            reason: "the executable is not mapped in the process".into(),
        })
    }

    /// The file bytes at link-time address range `range`, if a section holds them.
    pub fn bytes_at(&self, start: u64, len: u64) -> Option<&[u8]> {
        let elf = self.elf()?;
        for s in elf.sections() {
            if s.kind() == object::SectionKind::UninitializedData {
                continue;
            }
            let (addr, size) = (s.address(), s.size());
            if start >= addr && start.checked_add(len)? <= addr + size {
                let (off, fsize) = s.file_range()?;
                if fsize < size {
                    return None;
                }
                let from = usize::try_from(off + (start - addr)).ok()?;
                return self
                    .data
                    .get(from..from.checked_add(usize::try_from(len).ok()?)?);
            }
        }
        None
    }

    /// Link-time address ranges of the writable data sections (where runtime globals live).
    pub fn data_ranges(&self) -> Vec<std::ops::Range<u64>> {
        let Some(elf) = self.elf() else {
            return Vec::new();
        };
        elf.sections()
            .filter(|s| {
                matches!(
                    s.kind(),
                    object::SectionKind::Data | object::SectionKind::UninitializedData
                )
            })
            .map(|s| s.address()..s.address() + s.size())
            .collect()
    }
}

/// The strings of `runtime.waitReasonStrings` (a `[N]string` array: pointer and length
/// pairs into read-only data), read from the file.
pub fn wait_reason_strings(elf: &object::File, addr: u64, size: u64) -> Option<Vec<String>> {
    if size == 0 || !size.is_multiple_of(16) || size > 16 * 256 {
        return None;
    }
    let word = |a: u64| -> Option<u64> {
        let b = read_elf(elf, a, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    (0..size / 16)
        .map(|i| {
            let ptr = word(addr + 16 * i)?;
            let len = word(addr + 16 * i + 8)?;
            if len == 0 {
                return Some(String::new());
            }
            if len > 256 {
                return None;
            }
            Some(String::from_utf8_lossy(read_elf(elf, ptr, len)?).into_owned())
        })
        .collect()
}

fn read_elf<'a>(elf: &object::File<'a>, addr: u64, len: u64) -> Option<&'a [u8]> {
    elf.sections().find_map(|s| {
        let end = addr.checked_add(len)?;
        if addr < s.address() || end > s.address() + s.size() {
            return None;
        }
        let data = s.data().ok()?;
        let from = usize::try_from(addr - s.address()).ok()?;
        data.get(from..from + usize::try_from(len).ok()?)
    })
}

/// An I/O error on a process file: the process exited, or `what` could not be read.
fn gone_or(pid: u32, e: std::io::Error, what: &'static str) -> GoroutineError {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        GoroutineError::ProcessExited { pid }
    } else if e.kind() == std::io::ErrorKind::NotFound && what == "its executable" {
        // A kernel thread, or a zombie: no executable.
        GoroutineError::NoExecutable { pid }
    } else {
        GoroutineError::Io {
            pid,
            what,
            reason: e.to_string(),
        }
    }
}
