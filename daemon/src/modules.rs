//! Binaries and libraries seen in profiled processes, opened once and cached per file
//! (device + inode), shared by unwinding (`.eh_frame`, pclntab) and symbolization.
//!
//! Each module keeps its file open and mapped, so samples of a process that has exited
//! (a compiler invocation during a build) can still be unwound and symbolized later.

use std::{
    collections::HashMap,
    fs::File,
    ops::{Deref, Range},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSection, ObjectSegment};

use crate::{
    process::maps::Mapping,
    symbolize::{go::GoTable, plt::PltNames},
};

/// Index of a module in its [`ModuleCache`].
pub type ModuleId = u32;

/// Bytes of a module: the file mapped read-only, or a copy (the vDSO).
pub enum Backing {
    Mapped(memmap2::Mmap),
    Copied(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Copied(v) => v,
        }
    }
}

/// A slice of a module's bytes that owns its backing (what framehop's modules hold).
#[derive(Clone)]
pub struct SectionBytes {
    backing: Arc<Backing>,
    range: Range<usize>,
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.backing[self.range.clone()]
    }
}

/// A `PT_LOAD` segment: where file offsets land in the module's own (stated) addresses.
#[derive(Clone, Copy, Debug)]
struct LoadSegment {
    file_offset: u64,
    vaddr: u64,
    file_size: u64,
    executable: bool,
}

/// A section's stated address range and its bytes in the file.
#[derive(Clone, Debug)]
struct SectionRef {
    svma: Range<u64>,
    file: Range<usize>,
}

pub struct Module {
    pub id: ModuleId,
    /// File name, for frames that cannot be named (`libfoo.so+0x1234`).
    pub name: String,
    /// Path inside the process's mount namespace, for messages.
    pub path: PathBuf,
    /// Kept open so symbolization can reopen it via `/proc/self/fd` after the process exits.
    file: Option<File>,
    backing: Arc<Backing>,
    segments: Vec<LoadSegment>,
    text: Option<SectionRef>,
    eh_frame: Option<SectionRef>,
    eh_frame_hdr: Option<SectionRef>,
    got: Option<SectionRef>,
    /// Go's tables, when this is a Go binary we can read.
    pub go: Option<GoTable>,
    /// Stated address of the ELF entry point (`_start`): the outermost frame of a process.
    pub entry: u64,
    /// Names of the PLT stubs.
    pub plt: PltNames,
}

impl Module {
    fn parse(
        id: ModuleId,
        path: PathBuf,
        file: Option<File>,
        backing: Backing,
    ) -> Result<Module, ModuleError> {
        let backing = Arc::new(backing);
        let elf = object::File::parse(&**backing)
            .map_err(|e| ModuleError::NotElf(path.clone(), e.to_string()))?;
        let segments = elf
            .segments()
            .map(|s| {
                let (file_offset, file_size) = s.file_range();
                let executable = matches!(
                    s.flags(),
                    object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0
                );
                LoadSegment {
                    file_offset,
                    vaddr: s.address(),
                    file_size,
                    executable,
                }
            })
            .collect();
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            let (offset, size) = s.file_range()?;
            Some(SectionRef {
                svma: s.address()..s.address() + s.size(),
                file: usize::try_from(offset).ok()?..usize::try_from(offset + size).ok()?,
            })
        };
        let plt = PltNames::parse(&elf);
        let entry = elf.entry();
        let (text, eh_frame, eh_frame_hdr, got) = (
            section(".text"),
            section(".eh_frame"),
            section(".eh_frame_hdr"),
            section(".got"),
        );
        let go = match GoTable::from_elf(&backing) {
            Ok(go) => go,
            Err(e) => {
                // Refuse rather than guess: the frames are shown as module+offset.
                log::warn!("{}: Go symbol table unusable: {e}", path.display());
                None
            }
        };
        let name = path
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_else(|| path.display().to_string());
        Ok(Module {
            id,
            name,
            path,
            file,
            backing,
            segments,
            text,
            eh_frame,
            eh_frame_hdr,
            got,
            go,
            plt,
            entry,
        })
    }

    /// Where stated address 0 lands in a process that maps `mapping` from this module.
    ///
    /// Two segments can share a file page (lld packs a read-only segment and the code that
    /// follows it into one page, at different addresses): the page's address then depends on
    /// which segment the mapping is, so an executable mapping is matched with the executable
    /// segment, whose address is taken from the segment's own page-aligned start.
    pub fn base_avma(&self, mapping: &Mapping) -> Option<u64> {
        const PAGE: u64 = 4096;
        let covers = |s: &&LoadSegment| {
            (s.file_offset & !(PAGE - 1)..s.file_offset + s.file_size.max(1))
                .contains(&mapping.offset)
        };
        let segment = self
            .segments
            .iter()
            .filter(covers)
            .find(|s| s.executable == mapping.executable)
            .or_else(|| self.segments.iter().find(covers))?;
        // Page-aligned file offset and address move together (p_vaddr = p_offset mod page).
        let svma = (mapping.offset + segment.vaddr).checked_sub(segment.file_offset)?;
        mapping.start.checked_sub(svma)
    }

    /// A path blazesym can open for this module, valid while the module lives.
    pub fn symbol_path(&self) -> PathBuf {
        match &self.file {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
            None => self.path.clone(),
        }
    }

    fn slice(&self, section: &Option<SectionRef>) -> Option<SectionBytes> {
        let s = section.as_ref()?;
        (s.file.end <= self.backing.len()).then(|| SectionBytes {
            backing: self.backing.clone(),
            range: s.file.clone(),
        })
    }

    /// This module as framehop needs it to unwind native code mapped at `avma_range`.
    pub fn unwind_module(
        &self,
        avma_range: Range<u64>,
        base_avma: u64,
    ) -> framehop::Module<SectionBytes> {
        let info = framehop::ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.as_ref().map(|s| s.svma.clone()),
            text: self.slice(&self.text),
            eh_frame_svma: self.eh_frame.as_ref().map(|s| s.svma.clone()),
            eh_frame: self.slice(&self.eh_frame),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
            eh_frame_hdr: self.slice(&self.eh_frame_hdr),
            got_svma: self.got.as_ref().map(|s| s.svma.clone()),
            stubs_svma: None,
            stub_helper_svma: None,
            unwind_info: None,
            debug_frame: None,
            text_segment_svma: None,
            text_segment: None,
        };
        framehop::Module::new(self.name.clone(), avma_range, base_avma, info)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, std::io::Error),
    #[error("{0} is not an ELF file we can read: {1}")]
    NotElf(PathBuf, String),
}

/// Identity of a module's file across processes and mount namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ModuleKey {
    File { dev: (u32, u32), inode: u64 },
    Vdso,
}

/// Every module opened during a profile, by file identity.
#[derive(Default)]
pub struct ModuleCache {
    by_key: HashMap<ModuleKey, Option<ModuleId>>,
    modules: Vec<Arc<Module>>,
}

impl ModuleCache {
    pub fn get(&self, id: ModuleId) -> Option<&Arc<Module>> {
        self.modules.get(id as usize)
    }

    /// The module behind an executable mapping of process `pid`, opened on first use.
    /// Files that cannot be opened or parsed are remembered as such (and logged once).
    pub fn for_mapping(&mut self, pid: u32, mapping: &Mapping) -> Option<Arc<Module>> {
        let key = if mapping.is_vdso() {
            ModuleKey::Vdso
        } else if mapping.is_file() {
            ModuleKey::File {
                dev: mapping.dev,
                inode: mapping.inode,
            }
        } else {
            return None;
        };
        if let Some(id) = self.by_key.get(&key) {
            return id.and_then(|id| self.get(id).cloned());
        }
        let id = self.modules.len() as ModuleId;
        let opened = match key {
            ModuleKey::Vdso => open_own_vdso()
                .and_then(|(file, bytes)| Module::parse(id, "[vdso]".into(), Some(file), bytes)),
            ModuleKey::File { .. } => open_mapped_file(pid, mapping)
                .and_then(|(path, file, backing)| Module::parse(id, path, Some(file), backing)),
        };
        match opened {
            Ok(module) => {
                let module = Arc::new(module);
                self.modules.push(module.clone());
                self.by_key.insert(key, Some(id));
                Some(module)
            }
            Err(e) => {
                log::debug!("pid {pid}: {e}");
                // A file that is not ELF stays so; one we could not open (its process
                // exited first) may open through the next process that maps it.
                if matches!(e, ModuleError::NotElf(..)) {
                    self.by_key.insert(key, None);
                }
                None
            }
        }
    }
}

/// Opens a mapped file through `/proc/PID/map_files` (works across mount namespaces and for
/// deleted files), falling back to the path under `/proc/PID/root`.
fn open_mapped_file(pid: u32, mapping: &Mapping) -> Result<(PathBuf, File, Backing), ModuleError> {
    let path = mapping.path.clone().unwrap_or_default();
    let via_map_files = PathBuf::from(format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.start, mapping.end
    ));
    let via_root =
        Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(&path));
    let file = File::open(&via_map_files)
        .or_else(|_| File::open(&via_root))
        .map_err(|e| ModuleError::Open(path.clone(), e))?;
    // SAFETY: read-only private mapping; a file truncated under us can fault, which is why
    // loupe only maps files that are mapped executable by a running process.
    let mmap =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModuleError::Open(path.clone(), e))?;
    Ok((path, file, Backing::Mapped(mmap)))
}

/// Copies loupe's own vDSO (the kernel maps the same image into every process), also into
/// a memory file so symbolization can open it by path.
fn open_own_vdso() -> Result<(File, Backing), ModuleError> {
    let err = |e: &str| ModuleError::Open("[vdso]".into(), std::io::Error::other(e.to_string()));
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| ModuleError::Open("/proc/self/maps".into(), e))?;
    let vdso = crate::process::maps::parse(&maps)
        .into_iter()
        .find(Mapping::is_vdso)
        .ok_or_else(|| err("no vDSO mapped"))?;
    let len = usize::try_from(vdso.end - vdso.start).map_err(|_| err("vDSO too large"))?;
    // SAFETY: the vDSO mapping of our own process is readable for its whole length.
    let bytes = unsafe { std::slice::from_raw_parts(vdso.start as *const u8, len) }.to_vec();
    let fd = unsafe { libc::memfd_create(c"loupe-vdso".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(ModuleError::Open(
            "[vdso]".into(),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh descriptor we own.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::io::Write::write_all(&mut file, &bytes)
        .map_err(|e| ModuleError::Open("[vdso]".into(), e))?;
    Ok((file, Backing::Copied(bytes)))
}
