//! Symbolization: addresses to frames, on the host, once per distinct address.
//!
//! One entry point for every source; callers never care where a name came from:
//! kernel addresses through kallsyms, Go code through its pclntab (stripped binaries
//! included), everything else through ELF symbols and DWARF (inline frames) via blazesym.
//! A frame that cannot be named is shown as `module+0xoffset`, never dropped.

pub mod functions;
pub mod go;
pub mod plt;

use std::{cell::RefCell, path::Path};

use blazesym::symbolize::{
    evict::{self, Evict},
    source::{Elf, Kernel, Source},
    Input, Symbolized, Symbolizer as BlazeSymbolizer,
};

use crate::{
    modules::{sigbus, Module},
    profile::{Frame, FrameKind},
};

use functions::FunctionSymbols;

pub const KERNEL_MODULE: &str = "[kernel]";

pub struct Symbolizer {
    /// In a cell so a module's cached data can be dropped after each batch (`&self` API).
    blaze: RefCell<BlazeSymbolizer>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        // blazesym maps the files it reads: answer reads past a truncated end with zeros.
        sigbus::install();
        let blaze = BlazeSymbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Symbolizer {
            blaze: RefCell::new(blaze),
        }
    }
}

impl Symbolizer {
    /// Frames for kernel addresses, one list per address.
    pub fn kernel(&self, addrs: &[u64]) -> Vec<Vec<Frame>> {
        let src = Source::Kernel(Kernel::default());
        let blaze = self.blaze.borrow();
        let results = blaze.symbolize(&src, Input::AbsAddr(addrs));
        frames_or_unknown(results, addrs, KERNEL_MODULE, FrameKind::Kernel, |a| a)
    }

    /// Frames for stated addresses (lookup addresses: return addresses already moved back
    /// into the call instruction) in `module`, innermost (inlined) first per address.
    ///
    /// A module whose file was truncated or rewritten since loupe opened it no longer holds
    /// the code that ran: its frames are `module+offset`, never names read from new bytes.
    pub fn user(&self, module: &Module, svmas: &[u64]) -> Vec<Vec<Frame>> {
        let unnamed = || {
            svmas
                .iter()
                .map(|&a| vec![unknown(&module.name, a, FrameKind::User)])
                .collect()
        };
        if module.is_damaged() {
            return unnamed();
        }
        let answered = sigbus::answered();
        let frames = self.user_from_tables(module, svmas);
        // A read past a truncated end was answered with zeros meanwhile: if the file was
        // this module's, the names came partly from zeros.
        if sigbus::answered() != answered && module.is_damaged() {
            return unnamed();
        }
        frames
    }

    fn user_from_tables(&self, module: &Module, svmas: &[u64]) -> Vec<Vec<Frame>> {
        let mut out: Vec<Option<Vec<Frame>>> = vec![None; svmas.len()];
        if let Some(go) = &module.go {
            for (slot, &svma) in out.iter_mut().zip(svmas) {
                *slot = go.symbolize(svma).map(|frames| {
                    frames
                        .into_iter()
                        .map(|f| Frame {
                            function: f.function,
                            module: module.name.clone(),
                            file: f.file,
                            line: f.line,
                            inlined: f.inlined,
                            kind: FrameKind::User,
                        })
                        .collect()
                });
            }
        }
        for (slot, &svma) in out.iter_mut().zip(svmas).filter(|(f, _)| f.is_none()) {
            *slot = module.plt.name(svma).map(|name| {
                vec![Frame {
                    function: name.to_string(),
                    module: module.name.clone(),
                    file: None,
                    line: None,
                    inlined: false,
                    kind: FrameKind::User,
                }]
            });
        }
        let rest: Vec<u64> = svmas
            .iter()
            .zip(&out)
            .filter(|(_, f)| f.is_none())
            .map(|(&a, _)| a)
            .collect();
        if !rest.is_empty() {
            let mut named = self.elf(module, &rest).into_iter();
            for slot in out.iter_mut().filter(|f| f.is_none()) {
                *slot = named.next();
            }
        }
        out.into_iter()
            .zip(svmas)
            .map(|(f, &a)| f.unwrap_or_else(|| vec![unknown(&module.name, a, FrameKind::User)]))
            .collect()
    }

    fn elf(&self, module: &Module, svmas: &[u64]) -> Vec<Vec<Frame>> {
        let path = module.symbol_path();
        let mut source = Elf::new(&path);
        source.debug_syms = reads_dwarf(module);
        let (mut frames, renamed) = {
            let blaze = self.blaze.borrow();
            let results = blaze.symbolize(&Source::Elf(source), Input::VirtOffset(svmas));
            let renamed = non_function_picks(module, svmas, &results);
            let frames = frames_or_unknown(results, svmas, &module.name, FrameKind::User, |a| a);
            (frames, renamed)
        };
        for (i, name) in renamed {
            frames[i] = vec![match name {
                Some(function) => Frame {
                    function,
                    module: module.name.clone(),
                    file: None,
                    line: None,
                    inlined: false,
                    kind: FrameKind::User,
                },
                None => unknown(&module.name, svmas[i], FrameKind::User),
            }];
        }
        // blazesym keeps every file's mapping, symbol tables and DWARF until evicted: over a
        // build that is every large library at once (librustc_driver, libLLVM), and over
        // weeks every binary ever seen. Callers pass all of a module's addresses in one
        // batch, so nothing is lost by forgetting them now.
        let evict = Evict::Elf(evict::Elf::new(path));
        if let Err(e) = self.blaze.borrow_mut().evict(&evict) {
            log::debug!("releasing symbol data of {}: {e}", module.name);
        }
        frames
    }
}

/// The addresses (by index) whose blazesym pick was no function, with the name of the
/// function that holds them, if any (see `functions`). Sized symbols hold the address;
/// only sizeless ones are guesses, so the file's own tables are read only for those, and
/// only for this batch (like blazesym's, they are not kept).
fn non_function_picks(
    module: &Module,
    svmas: &[u64],
    results: &Result<Vec<Symbolized<'_>>, blazesym::Error>,
) -> Vec<(usize, Option<String>)> {
    let Ok(results) = results else {
        return Vec::new();
    };
    let mut table: Option<FunctionSymbols> = None;
    let mut renamed = Vec::new();
    for (i, (result, &svma)) in results.iter().zip(svmas).enumerate() {
        let Symbolized::Sym(sym) = result else {
            continue;
        };
        if sym.size.is_some() {
            continue;
        }
        let table = table.get_or_insert_with(|| FunctionSymbols::open(&module.symbol_path()));
        if !table.starts_at(sym.addr) {
            renamed.push((i, table.containing(svma).map(demangle)));
        }
    }
    renamed
}

/// A symbol name as people read it (Rust's legacy and v0 manglings; others unchanged).
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// DWARF beyond this size is not read when the symbol table names every function: blazesym
/// touches most of it and keeps its parsed units, so a debug build of a large Rust program
/// (80 MiB of DWARF) alone took 60 MiB of loupe's memory, to add file:line and the few
/// inline frames an unoptimized build has. Below it, DWARF gives inline frames and lines.
const DWARF_BUDGET: u64 = 32 << 20;

/// Whether to symbolize `module` from DWARF (inline frames, lines) rather than only from its
/// symbol table. Go binaries never: pclntab already gave their inline frames and lines, and
/// their compressed DWARF would be inflated in memory for the few non-Go addresses. Files
/// without a `.symtab` always: their DWARF (or separate debug file, which Debian's libraries
/// point to) is the only source of names for internal functions.
fn reads_dwarf(module: &Module) -> bool {
    if !module.has_symtab {
        return true;
    }
    module.go.is_none() && module.dwarf_bytes <= DWARF_BUDGET
}

/// A frame for an address in a module without symbols for it.
pub fn unknown(module: &str, offset: u64, kind: FrameKind) -> Frame {
    Frame {
        function: format!("{module}+{offset:#x}"),
        module: module.to_string(),
        file: None,
        line: None,
        inlined: false,
        kind,
    }
}

fn frames_or_unknown(
    results: Result<Vec<Symbolized<'_>>, blazesym::Error>,
    addrs: &[u64],
    module: &str,
    kind: FrameKind,
    offset_of: impl Fn(u64) -> u64,
) -> Vec<Vec<Frame>> {
    let results = match results {
        Ok(r) if r.len() == addrs.len() => r,
        Ok(_) | Err(_) => {
            if let Err(e) = results {
                log::debug!("symbolizing {module}: {e}");
            }
            return addrs
                .iter()
                .map(|&a| vec![unknown(module, offset_of(a), kind)])
                .collect();
        }
    };
    results
        .into_iter()
        .zip(addrs)
        .map(|(result, &addr)| match result {
            Symbolized::Sym(sym) => {
                let location = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
                    let file = info.map(|c| match &c.dir {
                        Some(dir) => Path::new(dir.as_ref()).join(&c.file).display().to_string(),
                        None => c.file.to_string_lossy().into_owned(),
                    });
                    (file, info.and_then(|c| c.line))
                };
                let mut frames = Vec::with_capacity(sym.inlined.len() + 1);
                // blazesym lists inlined calls outermost first; we want innermost first.
                for inlined in sym.inlined.iter().rev() {
                    let (file, line) = location(inlined.code_info.as_ref());
                    frames.push(Frame {
                        function: inlined.name.to_string(),
                        module: module.to_string(),
                        file,
                        line,
                        inlined: true,
                        kind,
                    });
                }
                let (file, line) = location(sym.code_info.as_deref());
                frames.push(Frame {
                    function: sym.name.to_string(),
                    module: module.to_string(),
                    file,
                    line,
                    inlined: false,
                    kind,
                });
                frames
            }
            Symbolized::Unknown(_) => vec![unknown(module, offset_of(addr), kind)],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    /// What `Symbolizer::elf` does with a sizeless non-function symbol blazesym picked:
    /// the function containing the address, from the tables it checks against.
    #[test]
    fn demangles_fallback_names() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("malloc"), "malloc");
    }
}
