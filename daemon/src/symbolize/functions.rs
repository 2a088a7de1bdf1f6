//! The function symbols of an ELF file (`.symtab` and `.dynsym`), to check blazesym's
//! picks. blazesym names an address after the nearest `.symtab` symbol below it when that
//! symbol has no size, whatever its type: code that only `.dynsym` describes (jemalloc's
//! `malloc` in `rustc`) would be named after a data object such as `__FRAME_END__`.

use std::{collections::HashMap, fs::File, path::Path};

use object::{
    Object, ObjectSection, ObjectSymbol, SectionFlags, SectionIndex, SymbolKind, SymbolSection,
};

/// A function: code of a `STT_FUNC`/`STT_GNU_IFUNC` symbol, or an untyped symbol (assembly
/// labels) in an executable section.
#[derive(Debug)]
struct Function {
    start: u64,
    /// From the symbol's size; for symbols without one, the end of their section (the next
    /// function bounds them too).
    end: u64,
    sized: bool,
    name: String,
}

#[derive(Debug, Default)]
pub struct FunctionSymbols {
    /// By start address.
    functions: Vec<Function>,
}

impl FunctionSymbols {
    /// Reads the symbol tables of the ELF file at `path`; an unreadable file has none.
    pub fn open(path: &Path) -> FunctionSymbols {
        let Ok(file) = File::open(path) else {
            return FunctionSymbols::default();
        };
        // SAFETY: read-only mapping of a file that a profiled process maps executable.
        let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
            return FunctionSymbols::default();
        };
        match object::File::parse(&*map) {
            Ok(elf) => FunctionSymbols::parse(&elf),
            Err(_) => FunctionSymbols::default(),
        }
    }

    pub fn parse(elf: &object::File<'_>) -> FunctionSymbols {
        let executable: HashMap<SectionIndex, u64> = elf
            .sections()
            .filter(|s| {
                matches!(s.flags(), SectionFlags::Elf { sh_flags }
                    if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0)
            })
            .map(|s| (s.index(), s.address() + s.size()))
            .collect();
        let mut functions: Vec<Function> = elf
            .symbols()
            .chain(elf.dynamic_symbols())
            .filter_map(|sym| {
                let SymbolSection::Section(section) = sym.section() else {
                    return None;
                };
                let section_end = executable.get(&section).copied();
                let is_function = match sym.kind() {
                    SymbolKind::Text => true,
                    SymbolKind::Unknown | SymbolKind::Label => section_end.is_some(),
                    _ => false,
                };
                let name = sym.name().ok().filter(|n| !n.is_empty())?;
                let start = sym.address();
                let sized = sym.size() > 0;
                let end = if sized {
                    start.saturating_add(sym.size())
                } else {
                    section_end.unwrap_or(start)
                };
                is_function.then(|| Function {
                    start,
                    end,
                    sized,
                    name: name.to_string(),
                })
            })
            .collect();
        // The two tables repeat exported functions; keep one of each, the sized one.
        functions.sort_by(|a, b| (a.start, b.sized, &a.name).cmp(&(b.start, a.sized, &b.name)));
        functions.dedup_by(|later, earlier| later.start == earlier.start);
        FunctionSymbols { functions }
    }

    /// Whether a function starts at `svma` (a symbol blazesym picked is one).
    pub fn starts_at(&self, svma: u64) -> bool {
        self.functions
            .binary_search_by_key(&svma, |f| f.start)
            .is_ok()
    }

    /// The function whose code holds `svma`: sized functions by their size, unsized ones up
    /// to the next function or the end of their section.
    pub fn containing(&self, svma: u64) -> Option<&str> {
        let i = self
            .functions
            .partition_point(|f| f.start <= svma)
            .checked_sub(1)?;
        let f = &self.functions[i];
        (svma < f.end).then_some(f.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_of_this_test() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn functions_of_a_real_binary_exclude_data_symbols() {
        let exe = std::fs::read("/proc/self/exe").expect("read own executable");
        let elf = object::File::parse(&*exe).expect("parse own executable");
        let table = FunctionSymbols::parse(&elf);
        // No data object (a `static`, a marker such as `__FRAME_END__`) names code.
        let objects: Vec<_> = elf
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Data && s.is_definition())
            .collect();
        assert!(!objects.is_empty(), "no data symbols in the test binary");
        for object in objects {
            assert!(
                !table.starts_at(object.address()) && table.containing(object.address()).is_none(),
                "data symbol {:?} at {:#x} taken for a function",
                object.name(),
                object.address()
            );
        }
        // This very function is found from an address inside it.
        let ours = elf
            .symbols()
            .find(|s| {
                s.name()
                    .is_ok_and(|n| n.contains("a_function_of_this_test"))
            })
            .expect("the test function's symbol");
        assert_eq!(a_function_of_this_test(), 7);
        assert!(table.starts_at(ours.address()));
        assert_eq!(
            table.containing(ours.address() + ours.size() / 2),
            ours.name().ok()
        );
    }
}
