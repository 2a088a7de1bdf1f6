//! The few ELF facts the Go tables need: section bytes by name or address, and pointer-sized
//! words as the loader would see them (position-independent binaries store their pointers as
//! `R_*_RELATIVE` relocations, leaving zeros in the file).

use std::collections::HashMap;

use object::{Object, ObjectSection, RelocationFlags, SectionFlags};

use super::reader;
use super::GoError;

const SHF_WRITE: u64 = 0x1;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;

/// `R_*_RELATIVE` relocation type per ELF machine: the word at the offset becomes
/// load base + addend, i.e. the addend is the link-time address we want.
fn relative_reloc_type(arch: object::Architecture) -> Option<u32> {
    use object::Architecture as A;
    match arch {
        A::X86_64 => Some(object::elf::R_X86_64_RELATIVE),
        A::Aarch64 => Some(object::elf::R_AARCH64_RELATIVE),
        A::I386 => Some(object::elf::R_386_RELATIVE),
        A::Arm => Some(object::elf::R_ARM_RELATIVE),
        _ => None,
    }
}

pub(super) struct Section<'a> {
    pub name: String,
    pub addr: u64,
    /// File bytes (empty for NOBITS sections such as .bss).
    pub data: &'a [u8],
    pub writable: bool,
    pub executable: bool,
}

impl Section<'_> {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.addr && addr - self.addr < self.data.len() as u64
    }
}

/// A parsed ELF file, reduced to allocated sections and relative relocations.
pub(super) struct ElfImage<'a> {
    pub sections: Vec<Section<'a>>,
    /// Link-time address of each relocated word -> the address it will hold.
    relocs: HashMap<u64, u64>,
    pub ptr_size: u8,
    pub little_endian: bool,
}

impl<'a> ElfImage<'a> {
    /// Parse `data`, or Ok(None) if it has none of the `wanted` sections (cheaply: most
    /// files a profiler opens are not Go binaries, and need no relocation scan).
    pub fn parse(data: &'a [u8], wanted: &[&str]) -> Result<Option<Self>, GoError> {
        let file = object::File::parse(data).map_err(|e| GoError::Elf {
            reason: e.to_string(),
        })?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(GoError::Elf {
                reason: "not an ELF file".into(),
            });
        }
        let elf_err = |e: object::Error| GoError::Elf {
            reason: e.to_string(),
        };
        // Unreadable section names (a truncated file) are an error, not "no Go tables".
        let mut found = false;
        for s in file.sections() {
            found |= wanted.contains(&s.name().map_err(elf_err)?);
        }
        if !found {
            return Ok(None);
        }
        let mut sections = Vec::new();
        for s in file.sections() {
            let SectionFlags::Elf { sh_flags } = s.flags() else {
                continue;
            };
            if sh_flags & SHF_ALLOC == 0 {
                continue;
            }
            // A truncated file must not look like a non-Go one: fail on unreadable names
            // and contents instead of treating them as empty.
            sections.push(Section {
                name: s.name().map_err(elf_err)?.to_string(),
                addr: s.address(),
                data: s.data().map_err(elf_err)?,
                writable: sh_flags & SHF_WRITE != 0,
                executable: sh_flags & SHF_EXECINSTR != 0,
            });
        }
        let mut relocs = HashMap::new();
        if let (Some(rel_type), Some(iter)) = (
            relative_reloc_type(file.architecture()),
            file.dynamic_relocations(),
        ) {
            for (offset, r) in iter {
                // REL-style (implicit addend) relocations keep the value in the file word,
                // which plain reads already see.
                if r.flags() == (RelocationFlags::Elf { r_type: rel_type })
                    && !r.has_implicit_addend()
                {
                    relocs.insert(offset, r.addend() as u64);
                }
            }
        }
        Ok(Some(ElfImage {
            sections,
            relocs,
            ptr_size: if file.is_64() { 8 } else { 4 },
            little_endian: file.is_little_endian(),
        }))
    }

    pub fn section(&self, name: &str) -> Option<&Section<'a>> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn section_containing(&self, addr: u64) -> Option<&Section<'a>> {
        self.sections.iter().find(|s| s.contains(addr))
    }

    /// Whether `addr` is inside an allocated section with file contents.
    pub fn is_mapped(&self, addr: u64) -> bool {
        self.section_containing(addr).is_some()
    }

    pub fn is_executable(&self, addr: u64) -> bool {
        self.section_containing(addr).is_some_and(|s| s.executable)
    }

    /// The pointer-sized word at link-time address `addr`, after relative relocation.
    pub fn word(&self, addr: u64) -> Option<u64> {
        if let Some(&v) = self.relocs.get(&addr) {
            return Some(v);
        }
        let s = self.section_containing(addr)?;
        let off = usize::try_from(addr - s.addr).ok()?;
        reader::word_at(s.data, off, self.ptr_size)
    }

    /// Link-time addresses of words that hold `value` (in the file or via a relocation),
    /// in writable sections: where a pointer to `value` may be stored.
    pub fn words_equal_to(&self, value: u64) -> Vec<u64> {
        let mut found: Vec<u64> = self
            .relocs
            .iter()
            .filter(|&(_, &v)| v == value)
            .map(|(&addr, _)| addr)
            .collect();
        let step = usize::from(self.ptr_size);
        for s in self.sections.iter().filter(|s| s.writable) {
            let mut off = 0;
            while let Some(w) = reader::word_at(s.data, off, self.ptr_size) {
                if w == value {
                    found.extend(s.addr.checked_add(off as u64));
                }
                off += step;
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}
