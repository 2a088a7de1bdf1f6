//! Finding `runtime.allgs` (the `[]*g` of every goroutine ever created) in a running Go
//! program: from the ELF symbol table when the binary has one, otherwise from the code of
//! runtime functions that the pclntab names even in stripped binaries and that read that
//! slice: `allgadd` appends to it (loading its pointer, length and capacity), `forEachG`
//! and `checkdead` walk it. A candidate is only accepted if the slice it points to in the
//! live process holds goroutines: main's g (goid 1) first, distinct small goids, sane
//! statuses and stack bounds.

use std::collections::{BTreeMap, HashSet};

use super::binary::{Binary, SYM_ALLGS};
use super::memory::{Memory, ReadError};
use super::{x86, GStatus, GoroutineError, RawG};

/// Runtime functions that address `allgs` directly, strongest evidence first.
const READERS: [&str; 4] = [
    "runtime.allgadd",
    "runtime.forEachG",
    "runtime.forEachGRace",
    "runtime.checkdead",
];

/// More goroutines than any program has ever had: a bound on garbage slice lengths.
pub const MAX_GOROUTINES: u64 = 50_000_000;

/// How many of the first entries are checked when validating a candidate.
const VALIDATE_ENTRIES: u64 = 64;

/// How `allgs` was found, for the census report and the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// At the ELF symbol `runtime.allgs`.
    Symbol,
    /// From RIP-relative operands in the code of the runtime functions in [`READERS`].
    Code,
}

/// Data-section addresses that the code of `functions` references RIP-relatively, each
/// with how many of those functions reference it (functions the pclntab does not name, or
/// whose code is not in the file, are passed over). Shared by every search for a runtime
/// global in a stripped binary.
pub fn referenced_data(bin: &Binary, functions: &[&str]) -> BTreeMap<u64, u32> {
    let data = bin.data_ranges();
    let in_data = |a: u64| data.iter().any(|r| r.contains(&a));
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for name in functions {
        let Some(range) = bin.table.function_range(name) else {
            continue;
        };
        let Some(code) = bin.bytes_at(range.start, range.end - range.start) else {
            continue;
        };
        let targets: HashSet<u64> = x86::rip_refs(code, range.start)
            .into_iter()
            .map(|r| r.target)
            .filter(|&t| in_data(t))
            .collect();
        for t in targets {
            *seen.entry(t).or_default() += 1;
        }
    }
    seen
}

/// Link-time address of `runtime.allgs` from the code of its readers, best candidates
/// first: targets referenced together with target+8 (pointer and length), ranked by
/// whether target+16 (capacity) is referenced too, then by how many readers use them.
pub fn candidates_from_code(bin: &Binary) -> Vec<u64> {
    let seen = referenced_data(bin, &READERS);
    let mut ranked: Vec<(bool, u32, u64)> = seen
        .iter()
        .filter(|&(&t, _)| t % 8 == 0 && seen.contains_key(&(t + 8)))
        .map(|(&t, &n)| (seen.contains_key(&(t + 16)), n, t))
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, _, t)| t).collect()
}

/// The live address of `runtime.allgs`: the symbol if there is one (validated), else the
/// first code candidate whose slice holds goroutines.
pub fn allgs(bin: &Binary, mem: &Memory, bias: u64) -> Result<(u64, Found), GoroutineError> {
    let mut rejected = Vec::new();
    let symbol = bin.symbols.get(SYM_ALLGS).map(|&(a, _)| (a, Found::Symbol));
    let from_code = candidates_from_code(bin)
        .into_iter()
        .map(|a| (a, Found::Code));
    for (addr, how) in symbol.into_iter().chain(from_code).take(16) {
        let live = addr.wrapping_add(bias);
        match validate(bin, mem, live) {
            Ok(()) => return Ok((live, how)),
            Err(Invalid::Fatal(e)) => return Err(mem.error(e, "runtime.allgs")),
            Err(Invalid::Not(why)) => rejected.push(format!("{addr:#x}: {why}")),
        }
    }
    Err(GoroutineError::AllgsNotFound {
        version: bin.version.clone(),
        tried: if rejected.is_empty() {
            "no candidate in the code of runtime.allgadd/forEachG/checkdead".into()
        } else {
            rejected.join("; ")
        },
    })
}

/// Why a candidate address was not accepted.
pub enum Invalid {
    /// The process exited, or may not be read at all.
    Fatal(ReadError),
    /// Not the variable searched for: why, for the error listing what was tried.
    Not(String),
}

impl From<ReadError> for Invalid {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unmapped => Invalid::Not("unreadable".into()),
            fatal => Invalid::Fatal(fatal),
        }
    }
}

/// Whether the slice header at live address `addr` is the goroutine list.
fn validate(bin: &Binary, mem: &Memory, addr: u64) -> Result<(), Invalid> {
    let not = |s: String| Err(Invalid::Not(s));
    let (ptr, len, cap) = (
        mem.read_u64(addr)?,
        mem.read_u64(addr + 8)?,
        mem.read_u64(addr + 16)?,
    );
    if ptr == 0 || ptr % 8 != 0 || len == 0 || len > cap || cap > MAX_GOROUTINES {
        return not(format!("not a []*g slice header ({ptr:#x}, {len}, {cap})"));
    }
    let n = len.min(VALIDATE_ENTRIES);
    let mut goids = HashSet::new();
    for i in 0..n {
        let gp = mem.read_u64(ptr + 8 * i)?;
        let g = RawG::read(mem, &bin.layout, gp)?;
        if i == 0 && g.goid != 1 {
            return not(format!("first entry's goid is {}, not main's 1", g.goid));
        }
        if GStatus::from_raw(g.status, bin.minor).is_none() {
            return not(format!("entry {i} has status {:#x}", g.status));
        }
        if !g.stack_plausible() {
            return not(format!(
                "entry {i} has stack {:#x}..{:#x}",
                g.stack_lo, g.stack_hi
            ));
        }
        if g.goid == 0 || g.goid > super::MAX_GOID || !goids.insert(g.goid) {
            return not(format!("entry {i} has goid {}", g.goid));
        }
    }
    Ok(())
}
