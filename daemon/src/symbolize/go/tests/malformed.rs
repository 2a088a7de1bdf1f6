//! Ground truth 4: bad input gives Err or None, never a panic or a guessed layout.

use object::{Object, ObjectSection};

use super::super::{GoError, GoTable};
use super::fixtures;

/// File range of the pclntab section in an ELF file.
fn pclntab_range(elf: &[u8]) -> std::ops::Range<usize> {
    let file = object::File::parse(elf).expect("parse ELF");
    let (off, len) = file
        .section_by_name(".gopclntab")
        .and_then(|s| s.file_range())
        .expect(".gopclntab");
    off as usize..(off + len) as usize
}

/// Exercise every query at `n` pseudo-random pcs around the text, plus edge addresses.
fn query_everything(table: &GoTable, n: usize, seed: &mut u64) {
    let r = table.text_range();
    let span = (r.end - r.start).saturating_add(128);
    for _ in 0..n {
        let pc = r.start.saturating_sub(64).saturating_add(next(seed) % span);
        let _ = table.symbolize(pc);
        let _ = table.sp_delta(pc);
        let _ = table.is_stack_root(pc);
    }
    for pc in [0, 1, u64::MAX, u64::MAX - 1, r.end, r.start.wrapping_sub(1)] {
        assert!(table.symbolize(pc).is_none() || r.contains(&pc));
        let _ = table.sp_delta(pc);
    }
}

/// xorshift64: deterministic corruption without a rand dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_and_non_go_input() {
    assert!(matches!(GoTable::from_elf(b""), Err(GoError::Elf { .. })));
    assert!(GoTable::from_elf(b"\x7fELF garbage").is_err());
    assert!(GoTable::from_elf(&[0xffu8; 4096]).is_err());
    // A Rust ELF (this test binary) is not a Go binary.
    let me = std::fs::read("/proc/self/exe").expect("read own executable");
    assert!(matches!(GoTable::from_elf(&me), Ok(None)));
}

#[test]
fn unknown_magic_is_refused() {
    for fx in fixtures() {
        let v = fx.version;
        let mut elf = fx.stripped_bytes();
        let r = pclntab_range(&elf);
        // Go 1.16's magic, the byte-swapped 1.20 magic, and nonsense.
        for magic in [0xffff_fffau32, 0xf1ff_ffff, 0x1234_5678] {
            elf[r.start..r.start + 4].copy_from_slice(&magic.to_le_bytes());
            match GoTable::from_elf(&elf) {
                Err(GoError::UnsupportedMagic { magic: m }) => assert_eq!(m, magic),
                Err(e) => panic!("go{v}: {magic:#x}: wrong error {e}"),
                Ok(_) => panic!("go{v}: {magic:#x} accepted"),
            }
        }
        // The other supported magic contradicts the build info version: refused too.
        let other = if v == "1.19" {
            0xffff_fff1u32
        } else {
            0xffff_fff0
        };
        elf[r.start..r.start + 4].copy_from_slice(&other.to_le_bytes());
        assert!(
            matches!(
                GoTable::from_elf(&elf),
                Err(GoError::VersionMismatch { .. })
            ),
            "go{v}"
        );
    }
}

#[test]
fn truncated_and_forged_headers_are_errors() {
    for fx in fixtures() {
        let v = fx.version;
        let clean = fx.stripped_bytes();
        let r = pclntab_range(&clean);
        // nfunc far beyond the section; each table offset pointing past the section.
        for (field, value) in [(0usize, u64::MAX / 2), (3, 1 << 40), (7, 1 << 40), (4, 8)] {
            let mut elf = clean.clone();
            let at = r.start + 8 + 8 * field;
            elf[at..at + 8].copy_from_slice(&value.to_le_bytes());
            assert!(
                GoTable::from_elf(&elf).is_err(),
                "go{v}: header word {field} = {value:#x} accepted"
            );
        }
        // Cutting the file inside the pclntab.
        for cut in [r.start + 2, r.start + 40, r.start + (r.end - r.start) / 2] {
            assert!(
                GoTable::from_elf(&clean[..cut]).is_err(),
                "go{v}: cut at {cut}"
            );
        }
    }
}

/// File range of the funcdata (inline trees) after `moduledata.gofunc`, up to 64 KiB.
fn funcdata_range(elf: &[u8]) -> std::ops::Range<usize> {
    let gofunc = match GoTable::from_elf(elf) {
        Ok(Some(t)) => t.module.gofunc,
        _ => panic!("fixture does not load"),
    };
    let file = object::File::parse(elf).expect("parse ELF");
    let sec = file
        .sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&gofunc))
        .expect("section of gofunc");
    let (off, len) = sec.file_range().expect("gofunc in file");
    let start = (off + gofunc - sec.address()) as usize;
    start..(off + len).min(start as u64 + 0x10000) as usize
}

/// Random corruption of the pclntab (functab, _func records, pc-value tables, names) and of
/// the inline trees: the table may load or be refused, but no query may panic.
#[test]
fn corrupted_tables_never_panic() {
    for fx in fixtures() {
        let clean = fx.stripped_bytes();
        let pcln = pclntab_range(&clean);
        let inl = funcdata_range(&clean);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ pcln.len() as u64;
        let mut loaded = 0;
        for round in 0..30 {
            let mut elf = clean.clone();
            // Keep the header (round 0 damages everything) so most rounds get past it;
            // every third round damages the inline trees instead.
            let r = match round {
                0 => pcln.clone(),
                _ if round % 3 == 0 => inl.clone(),
                _ => pcln.start + 72..pcln.end,
            };
            for _ in 0..(200 + round * 50) {
                let at = r.start + (next(&mut seed) % r.len() as u64) as usize;
                elf[at] = next(&mut seed) as u8;
            }
            if let Ok(Some(t)) = GoTable::from_elf(&elf) {
                loaded += 1;
                query_everything(&t, 1500, &mut seed);
            }
        }
        assert!(
            loaded > 0,
            "go{}: every corrupted table was refused",
            fx.version
        );
    }
}
