//! Binaries and libraries seen in profiled processes, opened once and cached per file
//! identity (device, inode, size and times: see [`identity`]), shared by unwinding
//! (`.eh_frame`, pclntab) and symbolization.
//!
//! Each module keeps its file open and mapped, so samples of a process that has exited
//! (a compiler invocation during a build) can still be unwound and symbolized later. The
//! cache holds modules until the engine releases them ([`ModuleCache::release_unused`]);
//! ids are never reused, so a stale id finds nothing rather than another file.
//!
//! A file truncated or rewritten while mapped never ends loupe (see [`sigbus`]): the module
//! is marked damaged and its frames are shown as `module+offset`.

mod identity;
pub mod sigbus;

use std::{
    collections::HashMap,
    fs::File,
    ops::{Deref, Range},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use object::{Object, ObjectSection, ObjectSegment};

pub use identity::FileStamp;
use identity::{ModuleKey, RecentSet};

use crate::{
    process::maps::Mapping,
    symbolize::{go::GoTable, plt::PltNames},
};

/// Identifier of a module in its [`ModuleCache`]: assigned in increasing order, never reused.
pub type ModuleId = u32;

/// How many files that are not ELF the cache remembers (oldest forgotten first): enough for
/// the odd executable mapping of a data file, bounded for a daemon that runs for weeks.
const NOT_ELF_CAPACITY: usize = 4096;

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

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Backing {
    /// Drops the mapped pages from loupe's resident memory. They stay in the page cache and
    /// fault back in when read again, so this costs only the next reads' minor faults.
    fn release_resident_pages(&self) {
        if let Backing::Mapped(map) = self {
            // SAFETY: a private read-only file mapping never holds modified pages, so dropping
            // its pages loses nothing: a later read sees the file's bytes again (or zeros past
            // the end of a truncated file, see `sigbus`).
            if let Err(e) = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) } {
                log::debug!("madvise(DONTNEED) on a module mapping: {e}");
            }
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

/// The kernel maps a segment from its file offset rounded down to a page (x86-64 pages).
const PAGE_SIZE: u64 = 4096;

impl LoadSegment {
    /// Whether a mapping starting at file offset `offset` can be this segment's: lld packs
    /// segments without padding, so the page the executable segment is mapped from starts
    /// inside the previous segment's bytes.
    fn maps_from(&self, offset: u64) -> bool {
        let first_page = self.file_offset & !(PAGE_SIZE - 1);
        (first_page..self.file_offset + self.file_size.max(1)).contains(&offset)
    }

    /// The stated address of file offset `offset` in this segment's mapping (the ELF rule
    /// p_vaddr = p_offset modulo the page size keeps the difference constant).
    fn svma_of(&self, offset: u64) -> u64 {
        self.vaddr
            .wrapping_sub(self.file_offset)
            .wrapping_add(offset)
    }
}

/// A section's stated address range and its bytes in the file.
#[derive(Clone, Debug)]
struct SectionRef {
    svma: Range<u64>,
    file: Range<usize>,
}

/// A file opened for a module, with what identified it when it was opened.
struct OpenedFile {
    path: PathBuf,
    file: File,
    stamp: Option<FileStamp>,
    backing: Backing,
}

pub struct Module {
    pub id: ModuleId,
    /// File name, for frames that cannot be named (`libfoo.so+0x1234`).
    pub name: String,
    /// Path inside the process's mount namespace, for messages.
    pub path: PathBuf,
    key: ModuleKey,
    /// Kept open so symbolization can reopen it via `/proc/self/fd` after the process exits.
    file: Option<File>,
    /// The file's size and times when it was opened (None for the vDSO copy).
    stamp: Option<FileStamp>,
    /// Set once the file is found truncated or rewritten since it was opened.
    damaged: AtomicBool,
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
    /// Whether the file has a full symbol table (`.symtab`), not only dynamic symbols.
    pub has_symtab: bool,
    /// Bytes of DWARF in the file itself, uncompressed (0 when stripped, or when it is in a
    /// separate debug file).
    pub dwarf_bytes: u64,
}

impl Module {
    fn parse(id: ModuleId, key: ModuleKey, opened: OpenedFile) -> Result<Module, ModuleError> {
        let OpenedFile {
            path,
            file,
            stamp,
            backing,
        } = opened;
        let backing = Arc::new(backing);
        let elf = object::File::parse(&**backing)
            .map_err(|e| ModuleError::NotElf(path.clone(), e.to_string()))?;
        let segments = elf
            .segments()
            .map(|s| {
                let (file_offset, file_size) = s.file_range();
                LoadSegment {
                    file_offset,
                    vaddr: s.address(),
                    file_size,
                    executable: matches!(
                        s.flags(),
                        object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0
                    ),
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
        let has_symtab = elf.symbol_table().is_some();
        let dwarf_bytes = elf
            .sections()
            .filter(|s| {
                s.name()
                    .is_ok_and(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_"))
            })
            .map(|s| {
                s.compressed_file_range()
                    .map_or(s.size(), |r| r.uncompressed_size)
            })
            .fold(0u64, u64::saturating_add);
        let entry = elf.entry();
        let (text, eh_frame, eh_frame_hdr, got) = (
            section(".text"),
            section(".eh_frame"),
            section(".eh_frame_hdr"),
            section(".got"),
        );
        let go = match GoTable::from_image(backing.clone()) {
            Ok(go) => go,
            Err(e) => {
                // Refuse rather than guess: the frames are shown as module+offset.
                log::warn!("{}: Go symbol table unusable: {e}", path.display());
                None
            }
        };
        // Parsing touched the headers, the dynamic relocations and symbols: none of it is
        // read again, and for a large library it is megabytes of resident memory.
        backing.release_resident_pages();
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
            key,
            file: Some(file),
            stamp,
            damaged: AtomicBool::new(false),
            backing,
            segments,
            text,
            eh_frame,
            eh_frame_hdr,
            got,
            go,
            plt,
            has_symtab,
            dwarf_bytes,
            entry,
        })
    }

    /// Whether the file was truncated or rewritten since loupe opened it: then the bytes
    /// loupe reads (and blazesym maps) are no longer the ones the process ran, and its
    /// frames must not be named from them. Checked with one `fstat`; once damaged, always.
    pub fn is_damaged(&self) -> bool {
        if self.damaged.load(Ordering::Relaxed) {
            return true;
        }
        let (Some(file), Some(stamp)) = (&self.file, &self.stamp) else {
            return false;
        };
        let changed = match file.metadata() {
            Ok(meta) => FileStamp::of(&meta).content_differs(stamp),
            Err(_) => true,
        };
        if changed && !self.damaged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "{} was truncated or rewritten while loupe used it: its frames are shown as \
                 {}+offset ({} reads past the end of truncated files answered with zeros so far)",
                self.path.display(),
                self.name,
                sigbus::answered()
            );
        }
        changed
    }

    /// The module's stated address of file offset `offset` in a mapping of the file,
    /// executable or not. Where two segments share the page (see [`LoadSegment::maps_from`]),
    /// the one with the mapping's permission is the one mapped.
    pub fn svma_of_file_offset(&self, offset: u64, executable: bool) -> Option<u64> {
        let covering = || self.segments.iter().filter(|s| s.maps_from(offset));
        covering()
            .find(|s| s.executable == executable)
            .or_else(|| covering().next())
            .map(|s| s.svma_of(offset))
    }

    /// Where stated address 0 lands in a process that maps `mapping` from this module.
    pub fn base_avma(&self, mapping: &Mapping) -> Option<u64> {
        let svma = self.svma_of_file_offset(mapping.offset, mapping.executable)?;
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
    #[error("{0} is no longer the file the process mapped (inode {1}, now {2})")]
    Replaced(PathBuf, u64, u64),
    #[error("module ids are exhausted: {0} not opened")]
    IdsExhausted(PathBuf),
}

/// Every module in use, by file identity.
pub struct ModuleCache {
    by_key: HashMap<ModuleKey, ModuleId>,
    /// The latest module opened per device and inode, for processes that exit before
    /// their files can be stat'ed: a cached module keeps its file open, so its inode
    /// cannot have gone to another file meanwhile (a rewrite in place shows as damage).
    by_inode: HashMap<((u32, u32), u64), ModuleId>,
    modules: HashMap<ModuleId, Arc<Module>>,
    /// Files found not to be ELF (they stay so); bounded, oldest forgotten first.
    not_elf: RecentSet<ModuleKey>,
    next_id: Option<ModuleId>,
}

impl Default for ModuleCache {
    fn default() -> Self {
        sigbus::install();
        ModuleCache {
            by_key: HashMap::new(),
            by_inode: HashMap::new(),
            modules: HashMap::new(),
            not_elf: RecentSet::new(NOT_ELF_CAPACITY),
            next_id: Some(0),
        }
    }
}

impl ModuleCache {
    pub fn get(&self, id: ModuleId) -> Option<&Arc<Module>> {
        self.modules.get(&id)
    }

    /// The module behind an executable mapping of process `pid`, opened on first use.
    /// Files that are not ELF are remembered as such (and logged once).
    pub fn for_mapping(&mut self, pid: u32, mapping: &Mapping) -> Option<Arc<Module>> {
        if mapping.is_vdso() {
            if let Some(known) = self.lookup(&ModuleKey::Vdso) {
                return known;
            }
            return self.parse_and_insert(ModuleKey::Vdso, pid, open_own_vdso());
        }
        if !mapping.is_file() {
            return None;
        }
        let source = MappedFile::new(pid, mapping);
        // The identity of the mapped file costs one stat (no open); only a new file is
        // opened. A process that exited leaves no map_files entry: its file is then opened
        // by path and checked to be the mapped one.
        match source.stamp() {
            Some(stamp) => {
                if let Some(known) = self.lookup(&ModuleKey::file(mapping, stamp)) {
                    return known;
                }
            }
            None => {
                let latest = self
                    .by_inode
                    .get(&(mapping.dev, mapping.inode))
                    .and_then(|id| self.modules.get(id))
                    .filter(|module| !module.is_damaged());
                if let Some(module) = latest {
                    return Some(module.clone());
                }
            }
        }
        let (opened, stamp) = match source.open() {
            Ok(opened) => opened,
            Err(e) => {
                // Not remembered: the next process that maps the file may open it.
                log::debug!("pid {pid}: {e}");
                return None;
            }
        };
        let key = ModuleKey::file(mapping, stamp);
        if let Some(known) = self.lookup(&key) {
            return known;
        }
        self.parse_and_insert(key, pid, Ok(opened))
    }

    /// Some(module), Some(None) for a file known not to be ELF, None if unknown.
    fn lookup(&self, key: &ModuleKey) -> Option<Option<Arc<Module>>> {
        if self.not_elf.contains(key) {
            return Some(None);
        }
        let id = self.by_key.get(key)?;
        Some(self.modules.get(id).cloned())
    }

    fn parse_and_insert(
        &mut self,
        key: ModuleKey,
        pid: u32,
        opened: Result<OpenedFile, ModuleError>,
    ) -> Option<Arc<Module>> {
        let parsed = opened.and_then(|opened| {
            let id = self
                .next_id
                .ok_or_else(|| ModuleError::IdsExhausted(opened.path.clone()))?;
            Module::parse(id, key, opened)
        });
        match parsed {
            Ok(module) => {
                self.next_id = module.id.checked_add(1);
                let module = Arc::new(module);
                self.modules.insert(module.id, module.clone());
                self.by_key.insert(key, module.id);
                if let ModuleKey::File { dev, inode, .. } = key {
                    self.by_inode.insert((dev, inode), module.id);
                }
                Some(module)
            }
            Err(e) => {
                log::debug!("pid {pid}: {e}");
                // A file that is not ELF stays so (its key changes if it is rewritten).
                if matches!(e, ModuleError::NotElf(..)) {
                    self.not_elf.insert(key);
                }
                None
            }
        }
    }
}

/// State counts and the release of what is no longer used, for the long-running engine
/// (a one-shot profile ends before anything needs releasing).
#[allow(dead_code)]
impl ModuleCache {
    /// Modules held.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Files remembered as not ELF (at most [`NOT_ELF_CAPACITY`]).
    pub fn not_elf_len(&self) -> usize {
        self.not_elf.len()
    }

    /// Drops every module that no process maps any more (no [`Arc`] to it outside the
    /// cache) and that `still_needed` does not claim (pending frames refer to it). Their
    /// files are closed and unmapped; their ids are never given out again. Returns how many
    /// were released.
    pub fn release_unused(&mut self, still_needed: impl Fn(ModuleId) -> bool) -> usize {
        let unused: Vec<ModuleId> = self
            .modules
            .iter()
            .filter(|&(&id, module)| Arc::strong_count(module) == 1 && !still_needed(id))
            .map(|(&id, _)| id)
            .collect();
        for id in &unused {
            if let Some(module) = self.modules.remove(id) {
                self.by_key.remove(&module.key);
                if let ModuleKey::File { dev, inode, .. } = module.key {
                    if self.by_inode.get(&(dev, inode)) == Some(id) {
                        self.by_inode.remove(&(dev, inode));
                    }
                }
            }
        }
        unused.len()
    }

    /// Drops every module's file pages from loupe's resident memory; unwinding faults back
    /// in the few it reads. Worth calling now and then in a long-running daemon, where the
    /// pages read for every library ever unwound would otherwise stay counted.
    pub fn release_resident_pages(&self) {
        for module in self.modules.values() {
            module.backing.release_resident_pages();
        }
    }
}

/// Where a process's mapped file can be reached: `/proc/PID/map_files` (works across mount
/// namespaces and for deleted files, while the process lives), else its path under
/// `/proc/PID/root`.
struct MappedFile<'a> {
    mapping: &'a Mapping,
    path: PathBuf,
    via_map_files: PathBuf,
    via_root: PathBuf,
}

impl<'a> MappedFile<'a> {
    fn new(pid: u32, mapping: &'a Mapping) -> MappedFile<'a> {
        let path = mapping.path.clone().unwrap_or_default();
        let via_map_files = PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            mapping.start, mapping.end
        ));
        let via_root =
            Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(&path));
        MappedFile {
            mapping,
            path,
            via_map_files,
            via_root,
        }
    }

    /// The mapped file's stamp, while the process still maps it.
    fn stamp(&self) -> Option<FileStamp> {
        std::fs::metadata(&self.via_map_files)
            .ok()
            .map(|m| FileStamp::of(&m))
    }

    /// Opens and maps the file. The stamp comes from the opened file itself, so it
    /// describes the bytes that were mapped.
    fn open(&self) -> Result<(OpenedFile, FileStamp), ModuleError> {
        let open_err = |e| ModuleError::Open(self.path.clone(), e);
        let file = match File::open(&self.via_map_files) {
            Ok(file) => file,
            Err(_) => {
                // By path, the file may have been replaced since it was mapped (a package
                // upgrade renames a new file over it): accept only the same inode.
                let file = File::open(&self.via_root).map_err(open_err)?;
                let inode = file.metadata().map_err(open_err)?.ino();
                if inode != self.mapping.inode {
                    return Err(ModuleError::Replaced(
                        self.path.clone(),
                        self.mapping.inode,
                        inode,
                    ));
                }
                file
            }
        };
        let stamp = FileStamp::of(&file.metadata().map_err(open_err)?);
        // SAFETY: read-only private mapping. A file truncated under us makes reads past its
        // new end fault; `sigbus` answers those with zeros (installed with the cache).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(open_err)?;
        let opened = OpenedFile {
            path: self.path.clone(),
            file,
            stamp: Some(stamp),
            backing: Backing::Mapped(mmap),
        };
        Ok((opened, stamp))
    }
}

/// Copies loupe's own vDSO (the kernel maps the same image into every process), also into
/// a memory file so symbolization can open it by path.
fn open_own_vdso() -> Result<OpenedFile, ModuleError> {
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
    Ok(OpenedFile {
        path: "[vdso]".into(),
        file,
        stamp: None,
        backing: Backing::Copied(bytes),
    })
}

#[cfg(test)]
mod tests;
