//! Ground truth 3: sp_delta against the DWARF call frame information of the `.debug` build.
//!
//! On amd64 the Go linker writes one FDE per function, CFA = RSP + offset, with the return
//! address at CFA - 8; so at every pc the DWARF answer for "where is the return address" is
//! RSP + (offset - 8), which must be our sp_delta. The linker derives those rows from the
//! same compiler-produced pcsp data, but re-encodes them in a different format (DWARF
//! opcodes over absolute ranges, read here by an independent parser), and gdb/perf rely on
//! them: checking every pc of every function catches any decoding error on our side
//! (varint, zigzag, quantum, table offsets, entry mapping). Independently of DWARF: every
//! function entry has delta 0 (only the CALL's return address is on the stack), and the
//! fixture's frameless leaf stays at 0 throughout.

use super::super::StackEnd;
use super::cfa;
use super::fixtures;
use super::symtab::{address_of, functions};

/// DWARF register number of RSP on x86-64.
const DWARF_RSP: u64 = 7;

#[test]
fn sp_delta_matches_dwarf_cfa_at_every_pc() {
    for fx in fixtures() {
        let v = fx.version;
        let bytes = fx.debug_bytes();
        let table = fx.table(&bytes);
        let rows = cfa::rows(&cfa::debug_frame(&bytes));
        assert!(rows.len() > 1000, "go{v}: only {} CFA rows", rows.len());

        let mut checked = 0u64;
        for row in &rows {
            if !table.text_range().contains(&row.start) {
                continue;
            }
            assert_eq!(row.reg, DWARF_RSP, "go{v}: CFA not based on RSP: {row:?}");
            // Below 8: the return address was popped (syscall.rawVforkSyscall does that to
            // survive vfork), so no slot holds it and sp_delta must say None.
            let want = u64::try_from(row.offset - 8).ok();
            for pc in row.start..row.end {
                assert_eq!(
                    table.sp_delta(pc),
                    want,
                    "go{v}: pc {pc:#x} in {:?}",
                    table.symbolize(pc).and_then(|f| f.last().cloned())
                );
                checked += 1;
            }
        }
        assert!(checked > 100_000, "go{v}: only {checked} pcs checked");
    }
}

#[test]
fn sp_delta_is_zero_at_entries_and_in_the_frameless_leaf() {
    for fx in fixtures() {
        let v = fx.version;
        let bytes = fx.debug_bytes();
        let table = fx.table(&bytes);
        let syms = functions(&bytes);
        for (addr, name) in &syms {
            // Markers, not functions: runtime.text shares the first function's address,
            // go:textfipsstart/end (1.24+) bracket the FIPS module and have no pcsp table.
            let marker = name == "runtime.text" || name.starts_with("go:textfips");
            if table.text_range().contains(addr) && !marker {
                assert_eq!(table.sp_delta(*addr), Some(0), "go{v}: entry of {name}");
            }
        }

        // main.leaf: its whole body, up to the next function, keeps SP where CALL left it.
        let leaf = address_of(&syms, "main.leaf");
        let frames = |pc| table.symbolize(pc).and_then(|f| f.last().cloned());
        let name = |pc| frames(pc).map(|f| f.function);
        let mut pc = leaf;
        while name(pc).as_deref() == Some("main.leaf") && table.sp_delta(pc).is_some() {
            assert_eq!(
                table.sp_delta(pc),
                Some(0),
                "go{v}: main.leaf+{:#x}",
                pc - leaf
            );
            pc += 1;
        }
        assert!(
            pc - leaf >= 4,
            "go{v}: main.leaf is only {} bytes",
            pc - leaf
        );
        // ...while a function with a frame does move SP.
        let outer = address_of(&syms, "main.outer");
        assert!(
            (outer..outer + 64).any(|pc| table.sp_delta(pc).unwrap_or(0) > 0),
            "go{v}: main.outer never has a frame"
        );
    }
}

#[test]
fn stack_roots_follow_the_runtime_flags() {
    for fx in fixtures() {
        let v = fx.version;
        let bytes = fx.debug_bytes();
        let table = fx.table(&bytes);
        let syms = functions(&bytes);
        let end = |name| table.stack_end(address_of(&syms, name));
        // TOPFRAME in runtime/asm_amd64.s of every supported release.
        for top in ["runtime.goexit", "runtime.mstart", "runtime.rt0_go"] {
            assert_eq!(end(top), Some(StackEnd::Top), "go{v}: {top}");
            assert!(
                table.is_stack_root(address_of(&syms, top) + 1),
                "go{v}: {top}"
            );
        }
        // Stack switchers: the assembler marks them SPWRITE.
        for switch in ["runtime.mcall", "runtime.morestack"] {
            assert_eq!(end(switch), Some(StackEnd::SpWrite), "go{v}: {switch}");
        }
        for normal in ["main.main", "main.outer", "runtime.main", "main.leaf"] {
            assert_eq!(end(normal), None, "go{v}: {normal}");
            assert!(!table.is_stack_root(address_of(&syms, normal)), "go{v}");
        }
        assert!(
            !table.is_stack_root(table.text_range().end),
            "go{v}: past text"
        );
    }
}
