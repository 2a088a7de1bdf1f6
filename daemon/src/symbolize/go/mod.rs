//! Go binaries: symbolization and unwinding data from `.gopclntab`, which Go keeps even in
//! stripped binaries because its own runtime needs it for tracebacks and stack growth.
//!
//! Supported: executables written by Go 1.19 through 1.27 (checked against each release's
//! `runtime/symtab.go`, `runtime/runtime2.go`, `internal/abi/symtab.go` and linker). Any
//! other release, or a table that does not match what its release should have written, is
//! refused with a [`GoError`] rather than read with a guessed layout.
//!
//! ```ignore
//! # fn demo(elf: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
//! use crate::symbolize::go::GoTable;
//! if let Some(table) = GoTable::from_image(std::sync::Arc::new(elf))? {
//!     for frame in table.symbolize(0x4a1b2c).unwrap_or_default() {
//!         println!("{} {:?}:{:?}", frame.function, frame.file, frame.line);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Modules: `elf` (sections, relocated words), `version` (which release, which layout),
//! `pclntab` (header, functab, `_func`, pc-value tables), `moduledata` (text start and
//! funcdata base), `inline` (inline trees), `names` (printed names).

mod elf;
mod inline;
mod moduledata;
mod names;
mod pclntab;
mod reader;
pub mod runtime_threads;
mod version;

#[cfg(test)]
pub(crate) mod tests;

use std::{ops::Range, sync::Arc};

use inline::FuncData;
use moduledata::ModuleData;
use pclntab::{Func, Header, Pclntab};
use version::Layout;

/// Why a Go binary's tables cannot be used. Messages name the Go release or layout involved.
#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("not a readable ELF file: {reason}")]
    Elf { reason: String },
    #[error(
        "unknown .gopclntab magic {magic:#010x} (Go 1.19 wrote 0xfffffff0, 1.20-1.27 0xfffffff1): \
         refusing to guess its layout"
    )]
    UnsupportedMagic { magic: u32 },
    #[error("Go binary built by {version}: only the go1.19 to go1.27 layouts are known, refusing to guess")]
    UnsupportedVersion { version: String },
    #[error("Go binary says it was built by {version}, but its .gopclntab magic is {magic:#010x}")]
    VersionMismatch { version: String, magic: u32 },
    #[error(
        "Go binary has a .gopclntab but no .go.buildinfo: cannot tell which Go release wrote it"
    )]
    MissingBuildInfo,
    #[error("unreadable .go.buildinfo: {what}")]
    BadBuildInfo { what: &'static str },
    #[error("Go {format} .gopclntab: {what} is truncated")]
    Truncated {
        what: &'static str,
        format: &'static str,
    },
    #[error("Go {format} binary: {what}")]
    Malformed {
        what: &'static str,
        format: &'static str,
    },
    #[error("Go {format} binary: runtime.moduledata not found (it gives the text start and inline tables)")]
    ModuledataNotFound { format: &'static str },
    #[error("Go {format} binary has {count} text sections; only single-text-section binaries are supported")]
    MultipleTextSections { count: u64, format: &'static str },
    #[error("Go binary: {what} is not supported")]
    Unsupported { what: &'static str },
}

/// One source-level frame at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    /// As Go prints it (`main.(*T).M`, `pkg.F[...]` for generic instantiations).
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// True for a call the compiler inlined into the physical function.
    pub inlined: bool,
}

/// The bytes of the binary a [`GoTable`] reads, shared rather than copied: in loupe, the
/// module's file mapping, so a table of tens of megabytes costs only the pages it reads.
pub type Image = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The pclntab of one Go executable, with the moduledata facts needed to read it.
pub struct GoTable {
    image: Image,
    /// Where `.gopclntab` is in the image.
    pclntab: Range<usize>,
    header: Header,
    layout: Layout,
    module: ModuleData,
    /// Bytes from `moduledata.gofunc` to the end of its section (inline trees live there).
    funcdata: Range<usize>,
    version: String,
}

/// Section names of the pclntab: position-independent Go binaries put it in a relro section.
const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

impl GoTable {
    /// A table over a copy of `data` (tests; loupe shares its mapping via [`Self::from_image`]).
    #[cfg(test)]
    pub fn from_elf(data: &[u8]) -> Result<Option<GoTable>, GoError> {
        Self::from_image(Arc::new(data.to_vec()))
    }

    /// Ok(None) when the ELF is not a Go binary (no .gopclntab). Err for a Go binary whose
    /// pclntab we cannot read safely (unknown magic/version => refuse, never guess a layout).
    /// The table reads `image` in place whenever it is used.
    pub fn from_image(image: Image) -> Result<Option<GoTable>, GoError> {
        let data: &[u8] = (*image).as_ref();
        let Some(img) = elf::ElfImage::parse(data, &PCLNTAB_SECTIONS)? else {
            return Ok(None);
        };
        let Some(sec) = PCLNTAB_SECTIONS.iter().find_map(|n| img.section(n)) else {
            // Present but not allocated: not something a running Go program uses.
            return Ok(None);
        };
        let magic = Header::magic(sec.data)?;
        if magic != version::MAGIC_GO118 && magic != version::MAGIC_GO120 {
            return Err(GoError::UnsupportedMagic { magic });
        }
        if !img.little_endian {
            return Err(GoError::Unsupported {
                what: "a big-endian target",
            });
        }
        let buildinfo = img
            .section(".go.buildinfo")
            .ok_or(GoError::MissingBuildInfo)?;
        let version = version::buildinfo_version(buildinfo.data)?;
        let layout = version::select(&version, magic)?;
        let header = Header::parse(sec.data, &layout)?;
        let malformed = |what| GoError::Malformed {
            what,
            format: layout.name,
        };
        if header.ptr_size != img.ptr_size {
            return Err(malformed(
                "pcHeader pointer size differs from the ELF class",
            ));
        }
        let tab = Pclntab {
            data: sec.data,
            hdr: &header,
            layout: &layout,
        };
        let module = moduledata::locate(&img, &tab, sec.addr, sec.data.len() as u64)?;

        // Before 1.26 the header also records runtime.text (a relocated word in PIE files);
        // it must agree with the moduledata. From 1.26 on it is written as 0.
        let header_text = sec
            .addr
            .checked_add(8 + 2 * u64::from(header.ptr_size))
            .and_then(|a| img.word(a))
            .unwrap_or(header.text_start);
        if layout.header_has_text_start && header_text != module.text {
            return Err(malformed(
                "pcHeader.textStart disagrees with moduledata.text",
            ));
        }
        if !layout.header_has_text_start && header.text_start != 0 {
            return Err(malformed(
                "pcHeader.textStart is set, which this release never does",
            ));
        }
        if module.maxpc - module.text > u64::from(u32::MAX) {
            return Err(malformed("text larger than 4 GiB"));
        }

        let gofunc_sec = img
            .section_containing(module.gofunc)
            .ok_or(malformed("moduledata.gofunc is not in a loaded section"))?;
        let start = usize::try_from(module.gofunc - gofunc_sec.addr)
            .map_err(|_| malformed("moduledata.gofunc"))?;
        let funcdata = gofunc_sec
            .data
            .get(start..)
            .and_then(|bytes| range_in(data, bytes))
            .ok_or(malformed("moduledata.gofunc"))?;
        let pclntab = range_in(data, sec.data).ok_or(malformed(".gopclntab"))?;
        Ok(Some(GoTable {
            image: image.clone(),
            pclntab,
            header,
            layout,
            module,
            funcdata,
            version,
        }))
    }

    /// Bytes of the image in `range` (checked against the image when the table was made;
    /// empty, never a panic, if that ever failed to hold).
    fn bytes(&self, range: &Range<usize>) -> &[u8] {
        (*self.image)
            .as_ref()
            .get(range.clone())
            .unwrap_or_default()
    }

    fn tab(&self) -> Pclntab<'_> {
        Pclntab {
            data: self.bytes(&self.pclntab),
            hdr: &self.header,
            layout: &self.layout,
        }
    }

    fn funcdata(&self) -> FuncData<'_> {
        FuncData {
            bytes: self.bytes(&self.funcdata),
        }
    }

    /// The function containing `pc` and pc as a text offset.
    fn lookup(&self, pc: u64) -> Option<(Func, u32)> {
        if !self.text_range().contains(&pc) {
            return None;
        }
        let off = u32::try_from(pc - self.module.text).ok()?;
        let tab = self.tab();
        Some((tab.func(tab.find(off)?)?, off))
    }

    /// Frames at `pc` (an ELF virtual address), innermost first: inlined callees
    /// (inlined: true) then the physical function (inlined: false). None if pc is not inside
    /// a Go function. For a return address, pass `pc - 1` as the runtime does.
    pub fn symbolize(&self, pc: u64) -> Option<Vec<GoFrame>> {
        let (f, off) = self.lookup(pc)?;
        let tab = self.tab();
        let physical = names::for_print(&tab.name(f.name_off)?);
        let frame = |function, at, inlined| {
            let (file, line) = tab.file_line(&f, at);
            GoFrame {
                function,
                file,
                line,
                inlined,
            }
        };
        // An inconsistent inline table only costs the inline frames, not the function.
        let Some(chain) = self.funcdata().chain(&tab, &f, off) else {
            return Some(vec![frame(physical, off, false)]);
        };
        let mut frames = Vec::with_capacity(chain.len());
        for step in chain {
            match step.name_off {
                Some(n) => {
                    let name = tab
                        .name(n)
                        .map_or_else(|| "?".into(), |s| names::for_print(&s));
                    frames.push(frame(name, step.pc, true));
                }
                None => frames.push(frame(physical.clone(), step.pc, false)),
            }
        }
        Some(frames)
    }

    /// For unwinding: the number of bytes from SP (as it is when executing at `pc`) to the
    /// slot holding the return address, i.e. return address = *(sp + sp_delta). This is the
    /// pcsp table value at pc (0 at function entry). None if pc is not in a Go function.
    ///
    /// Also None where the function has popped its own return address (the pcsp value is
    /// negative, e.g. syscall.rawVforkSyscall around vfork): no stack slot holds it then.
    ///
    /// That reading holds on x86, where CALL pushes the return address. On link-register
    /// machines (arm64) 0 means the return address is still in LR.
    pub fn sp_delta(&self, pc: u64) -> Option<u64> {
        let (f, off) = self.lookup(pc)?;
        let v = self.tab().pcvalue(f.pcsp, f.entry_off, off)?;
        u64::try_from(v).ok()
    }

    /// True if unwinding must stop in the function containing `pc`, by the runtime's own
    /// rule (`runtime/traceback.go`): a TOPFRAME function is the outermost frame of a
    /// goroutine or thread stack (runtime.goexit, runtime.mstart, runtime.rt0_go); an
    /// SPWRITE function (runtime.mcall, runtime.morestack, runtime.systemstack, gogo, ...)
    /// switched stacks or wrote SP arbitrarily, so its caller cannot be found from pcsp.
    /// See [`GoTable::stack_end`] to tell the two apart.
    pub fn is_stack_root(&self, pc: u64) -> bool {
        self.stack_end(pc).is_some()
    }

    /// Why the stack ends at `pc`, if it does.
    pub fn stack_end(&self, pc: u64) -> Option<StackEnd> {
        let (f, _) = self.lookup(pc)?;
        if f.flag & pclntab::FUNC_FLAG_TOPFRAME != 0 {
            Some(StackEnd::Top)
        } else if f.flag & pclntab::FUNC_FLAG_SPWRITE != 0 {
            Some(StackEnd::SpWrite)
        } else {
            None
        }
    }

    /// Address range of Go text covered by the table (first function entry to end of the
    /// last function).
    pub fn text_range(&self) -> Range<u64> {
        self.module.minpc..self.module.maxpc
    }

    /// The address range (entry to the next function's entry) of the function the table
    /// names `name` exactly (its symbol name, e.g. `runtime.allgadd`), if there is one.
    /// A linear scan of the function table: for occasional lookups, not per sample.
    pub fn function_range(&self, name: &str) -> Option<Range<u64>> {
        let tab = self.tab();
        (0..self.header.nfunc).find_map(|i| {
            let f = tab.func(i)?;
            if tab.name(f.name_off)? != name {
                return None;
            }
            let end = tab.entry_off(i + 1)?;
            let text = self.module.text;
            Some(text + u64::from(f.entry_off)..text + u64::from(end))
        })
    }

    /// Entry address of the physical function containing `pc`.
    pub fn function_entry(&self, pc: u64) -> Option<u64> {
        let (f, _) = self.lookup(pc)?;
        Some(self.module.text + u64::from(f.entry_off))
    }

    /// The name of the physical (not inlined) function containing `pc`, as the runtime's
    /// `funcname` gives it (the symbol name, unlike [`GoTable::symbolize`]'s printed form).
    pub fn function_name(&self, pc: u64) -> Option<String> {
        let (f, _) = self.lookup(pc)?;
        self.tab().name(f.name_off)
    }
}

/// Descriptions for messages and diagnostics (the CLI does not print them yet).
#[allow(dead_code)]
impl GoTable {
    /// Go version family detected from the header and build info, e.g. "1.19",
    /// "1.20-1.25", "1.26", "1.27": the layout family the tables were read with.
    pub fn format_name(&self) -> &'static str {
        self.layout.name
    }

    /// The exact release from `.go.buildinfo`, e.g. `go1.24.11`.
    pub fn go_version(&self) -> &str {
        &self.version
    }

    /// Link-time address of `runtime.text`, the base of the function table's offsets
    /// (moduledata.text; the pcHeader no longer records it from Go 1.26 on).
    pub fn text_start(&self) -> u64 {
        self.module.text
    }
}

/// The minor release of a Go version string (`go1.24.11` -> 24), as the layout tables use it.
pub fn minor_version(version: &str) -> Option<u32> {
    version::minor_of(version)
}

/// Where `inner` (a subslice of `outer`) lies in `outer`.
fn range_in(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

/// How a stack ends, in the runtime's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackEnd {
    /// funcFlag TOPFRAME: the real top of a goroutine or thread stack; the stack is complete.
    Top,
    /// funcFlag SPWRITE: the function switched stacks; what lies beyond is not reachable
    /// from this stack, so the stack is truncated here.
    SpWrite,
}
