//! Names for PLT stubs (`getppid@plt`), which symbol tables leave unnamed, so a lookup
//! would otherwise land on whatever symbol precedes the section (often `_init`).

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget};

/// Stub start address -> `name@plt`, for the PLT sections of one ELF file.
#[derive(Debug, Default)]
pub struct PltNames {
    stubs: Vec<(u64, u64, String)>,
}

/// Stubs are 16 bytes on x86-64 (`.plt`, `.plt.sec`, `.plt.got` alike).
const STUB_SIZE: u64 = 16;

impl PltNames {
    pub fn parse(elf: &object::File<'_>) -> PltNames {
        // GOT slot address -> imported symbol, from the dynamic relocations.
        // Their symbol indices are into the dynamic symbol table, not .symtab.
        let mut slots: HashMap<u64, String> = HashMap::new();
        if let (Some(relocations), Some(dynsym)) =
            (elf.dynamic_relocations(), elf.dynamic_symbol_table())
        {
            for (slot, relocation) in relocations {
                if let RelocationTarget::Symbol(index) = relocation.target() {
                    if let Ok(name) = dynsym
                        .symbol_by_index(index)
                        .and_then(|s| s.name().map(str::to_string))
                    {
                        if !name.is_empty() {
                            slots.insert(slot, name);
                        }
                    }
                }
            }
        }
        let mut stubs = Vec::new();
        for section in elf.sections() {
            let Ok(name) = section.name() else { continue };
            if !matches!(name, ".plt" | ".plt.sec" | ".plt.got") {
                continue;
            }
            let Ok(data) = section.data() else { continue };
            for (i, stub) in data.chunks_exact(STUB_SIZE as usize).enumerate() {
                let start = section.address() + i as u64 * STUB_SIZE;
                if let Some(name) =
                    indirect_jump_target(stub, start).and_then(|slot| slots.get(&slot))
                {
                    stubs.push((start, start + STUB_SIZE, format!("{name}@plt")));
                }
            }
        }
        stubs.sort_unstable_by_key(|s| s.0);
        PltNames { stubs }
    }

    /// The stub name for a stated address inside a PLT stub.
    pub fn name(&self, svma: u64) -> Option<&str> {
        let i = self.stubs.partition_point(|s| s.0 <= svma).checked_sub(1)?;
        let (start, end, name) = &self.stubs[i];
        (*start..*end).contains(&svma).then_some(name.as_str())
    }
}

/// The GOT slot a stub jumps through: `jmp *disp32(%rip)` (`ff 25`, possibly after `endbr64`
/// and a `bnd` prefix), whose target is the next instruction's address plus disp32.
fn indirect_jump_target(stub: &[u8], stub_address: u64) -> Option<u64> {
    let at = stub.windows(2).position(|w| w == [0xff, 0x25])?;
    let disp = i32::from_le_bytes(stub.get(at + 2..at + 6)?.try_into().ok()?);
    let next = stub_address + at as u64 + 6;
    next.checked_add_signed(i64::from(disp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain_and_cet_stubs() {
        // .plt: jmp *0x2fca(%rip) at 0x1030 -> slot 0x4000.
        let plain = [
            0xff, 0x25, 0xca, 0x2f, 0, 0, 0x68, 0, 0, 0, 0, 0xe9, 0xe0, 0xff, 0xff, 0xff,
        ];
        assert_eq!(indirect_jump_target(&plain, 0x1030), Some(0x4000));
        // .plt.sec: endbr64; bnd jmp *0x2f75(%rip) at 0x1080.
        let cet = [
            0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25, 0x75, 0x2f, 0, 0, 0x0f, 0x1f, 0x44, 0, 0,
        ];
        assert_eq!(
            indirect_jump_target(&cet, 0x1080),
            Some(0x1080 + 11 + 0x2f75)
        );
        assert_eq!(indirect_jump_target(&[0x90; 16], 0), None);
    }

    #[test]
    fn names_the_stubs_of_a_real_binary() {
        // The test binary itself imports from libc through its PLT.
        let exe = std::fs::read("/proc/self/exe").expect("read own executable");
        let elf = object::File::parse(&*exe).expect("parse own executable");
        let names = PltNames::parse(&elf);
        assert!(
            !names.stubs.is_empty(),
            "no PLT stubs found in the test binary"
        );
        let (start, _, name) = &names.stubs[0];
        assert!(name.ends_with("@plt"));
        // Every stub is an import of a libc-family function, never a local helper.
        let dynamic: Vec<String> = elf
            .dynamic_symbols()
            .filter_map(|s| s.name().ok().map(|n| format!("{n}@plt")))
            .collect();
        assert!(
            names.stubs.iter().all(|(_, _, n)| dynamic.contains(n)),
            "{:?}",
            names.stubs
        );
        assert_eq!(names.name(*start + 3), Some(name.as_str()));
        assert_eq!(names.name(0), None);
    }
}
