//! Ground truth 2: the ELF symbol table of the unstripped build. Every function symbol the
//! linker wrote inside the Go text must resolve, at its address, to the same function.

use object::{Object, ObjectSymbol, SymbolKind};

use super::super::names;
use super::fixtures;

/// Function symbols of an ELF file: (address, name).
pub(super) fn functions(elf: &[u8]) -> Vec<(u64, String)> {
    let file = object::File::parse(elf).expect("parse .debug ELF");
    file.symbols()
        .filter(|s| s.kind() == SymbolKind::Text)
        .filter_map(|s| Some((s.address(), s.name().ok()?.to_string())))
        .collect()
}

/// The pclntab name of an ELF symbol: in the ELF symbol table the linker suffixes assembly
/// (ABI0) functions with `.abi0` and spells the middle dot `·` as `.`; the pclntab (and so
/// the runtime) does neither. Comparing with dots everywhere is the safe direction.
pub(super) fn go_name(sym: &str) -> String {
    sym.strip_suffix(".abi0").unwrap_or(sym).replace('·', ".")
}

pub(super) fn address_of(syms: &[(u64, String)], name: &str) -> u64 {
    syms.iter()
        .find(|(_, n)| go_name(n) == name)
        .unwrap_or_else(|| panic!("no symbol {name}"))
        .0
}

#[test]
fn every_symtab_function_resolves_to_its_name() {
    for fx in fixtures() {
        let v = fx.version;
        let bytes = fx.debug_bytes();
        let table = fx.table(&bytes);
        let syms = functions(&bytes);

        let family = match v {
            "1.19" => "1.19",
            "1.26.6" => "1.26",
            "1.27.3" => "1.27",
            _ => "1.20-1.25",
        };
        assert_eq!(table.format_name(), family, "go{v}");
        assert!(table.go_version().starts_with(&format!("go{v}")), "go{v}");

        // The text start, whichever way this release records it, is runtime.text.
        assert_eq!(
            table.text_start(),
            address_of(&syms, "runtime.text"),
            "go{v}"
        );

        let range = table.text_range();
        let mut checked = 0;
        let mut wrong = Vec::new();
        for (addr, name) in &syms {
            // runtime.text/etext are boundary markers, not functions (runtime.text shares
            // its address with the first real function).
            if !range.contains(addr) || name == "runtime.text" || name == "runtime.etext" {
                continue;
            }
            let got = table.symbolize(*addr).and_then(|f| f.last().cloned());
            let want = names::for_print(&go_name(name));
            match got {
                Some(f) if go_name(&f.function) == want && !f.inlined => checked += 1,
                other => wrong.push(format!("{addr:#x} {name}: {other:?}")),
            }
        }
        assert!(
            wrong.is_empty(),
            "go{v}: {} of {} symbols differ:\n{}",
            wrong.len(),
            checked + wrong.len(),
            wrong.join("\n")
        );
        assert!(checked > 1000, "go{v}: only {checked} functions checked");
    }
}
