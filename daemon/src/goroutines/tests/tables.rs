//! The per-release tables (g layout, wait reasons) and the code-based search for
//! runtime.allgs, checked against what each real binary says about itself.

use object::{Object, ObjectSymbol};

use super::fixtures;
use crate::goroutines::binary::{self, Binary, Source};
use crate::goroutines::{dwarf, layout, locate, waitreason};
use crate::symbolize::go::minor_version;

fn symbol(elf: &object::File, name: &str) -> Option<(u64, u64)> {
    elf.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| (s.address(), s.size()))
}

#[test]
fn g_layout_table_matches_dwarf_of_every_release() {
    for f in fixtures() {
        let data = std::fs::read(&f.debug).expect("read fixture");
        let elf = object::File::parse(&*data).expect("parse fixture");
        let structs = dwarf::struct_members(&elf, &layout::DWARF_STRUCTS)
            .expect("readable DWARF")
            .unwrap_or_else(|| panic!("go{}: {} has no DWARF", f.version, f.debug.display()));
        let from_dwarf =
            layout::from_dwarf(&structs).unwrap_or_else(|e| panic!("go{}: {e}", f.version));
        let minor = minor_version(&format!("go{}", f.version)).expect("minor");
        assert_eq!(
            layout::for_minor(minor),
            Some(from_dwarf),
            "go{}: the g layout table disagrees with the binary's DWARF",
            f.version
        );
    }
}

#[test]
fn wait_reason_table_matches_every_release() {
    for f in fixtures() {
        let data = std::fs::read(&f.debug).expect("read fixture");
        let elf = object::File::parse(&*data).expect("parse fixture");
        let (addr, size) = symbol(&elf, binary::SYM_WAIT_REASONS)
            .unwrap_or_else(|| panic!("go{}: no runtime.waitReasonStrings symbol", f.version));
        let strings = binary::wait_reason_strings(&elf, addr, size)
            .unwrap_or_else(|| panic!("go{}: unreadable runtime.waitReasonStrings", f.version));
        let minor = minor_version(&format!("go{}", f.version)).expect("minor");
        let table = waitreason::for_minor(minor)
            .unwrap_or_else(|| panic!("go{}: no wait reason table", f.version));
        assert_eq!(table, strings, "go{}: wait reasons differ", f.version);
    }
}

/// The code search finds the same variable the symbol table names, in both builds (the
/// linker lays out code and data the same way with and without -s -w).
#[test]
fn allgs_found_from_code_is_the_symbol() {
    for f in fixtures() {
        let data = std::fs::read(&f.debug).expect("read fixture");
        let elf = object::File::parse(&*data).expect("parse fixture");
        let (allgs, _) = symbol(&elf, binary::SYM_ALLGS)
            .unwrap_or_else(|| panic!("go{}: no runtime.allgs symbol", f.version));
        for (path, stripped) in f.builds() {
            let bin = Binary::from_file(path).unwrap_or_else(|e| panic!("go{}: {e}", f.version));
            let candidates = locate::candidates_from_code(&bin);
            assert_eq!(
                candidates.first(),
                Some(&allgs),
                "go{} {}: best candidate of {candidates:x?} is not runtime.allgs {allgs:#x}",
                f.version,
                path.display()
            );
            let expected = if stripped {
                Source::ReleaseTable
            } else {
                Source::Binary
            };
            assert_eq!(bin.layout_source, expected, "go{}", f.version);
            assert_eq!(bin.wait_reasons_source, expected, "go{}", f.version);
        }
    }
}

#[test]
fn releases_without_checked_tables_are_refused() {
    // Go 1.20 could not be checked against a real binary, and 1.18/1.28 are unsupported.
    for minor in [18, 20, 28] {
        assert_eq!(layout::for_minor(minor), None, "1.{minor}");
        assert_eq!(waitreason::for_minor(minor), None, "1.{minor}");
    }
}
