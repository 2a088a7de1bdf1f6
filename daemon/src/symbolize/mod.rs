//! Symbolization: addresses to frames, on the host, once per distinct address.
//!
//! One entry point for every source; callers never care where a name came from:
//! kernel addresses through kallsyms, Go code through its pclntab (stripped binaries
//! included), everything else through ELF symbols and DWARF (inline frames) via blazesym.
//! A frame that cannot be named is shown as `module+0xoffset`, never dropped.

pub mod functions;
pub mod go;
pub mod plt;

use std::{cell::RefCell, collections::HashMap, path::Path};

use blazesym::symbolize::{
    source::{Elf, Kernel, Source},
    Input, Symbolized, Symbolizer as BlazeSymbolizer,
};

use crate::{
    modules::{Module, ModuleId},
    profile::{Frame, FrameKind},
};

use functions::FunctionSymbols;

pub const KERNEL_MODULE: &str = "[kernel]";

pub struct Symbolizer {
    blaze: BlazeSymbolizer,
    /// Function symbols per module, read when blazesym picks a symbol without a size.
    functions: RefCell<HashMap<ModuleId, FunctionSymbols>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        let blaze = BlazeSymbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Symbolizer {
            blaze,
            functions: RefCell::default(),
        }
    }
}

impl Symbolizer {
    /// Frames for kernel addresses, one list per address.
    pub fn kernel(&self, addrs: &[u64]) -> Vec<Vec<Frame>> {
        let src = Source::Kernel(Kernel::default());
        let results = self.blaze.symbolize(&src, Input::AbsAddr(addrs));
        frames_or_unknown(results, addrs, KERNEL_MODULE, FrameKind::Kernel, |a| a)
    }

    /// Frames for stated addresses (lookup addresses: return addresses already moved back
    /// into the call instruction) in `module`, innermost (inlined) first per address.
    pub fn user(&self, module: &Module, svmas: &[u64]) -> Vec<Vec<Frame>> {
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
        let src = Source::Elf(Elf::new(module.symbol_path()));
        let mut results = self.blaze.symbolize(&src, Input::VirtOffset(svmas));
        // Names of addresses whose blazesym symbol was no function (see `functions`).
        let mut renamed: Vec<(usize, Option<String>)> = Vec::new();
        if let Ok(results) = &mut results {
            for (i, (result, &svma)) in results.iter_mut().zip(svmas).enumerate() {
                let Symbolized::Sym(sym) = result else {
                    continue;
                };
                // Sized symbols hold the address; only sizeless ones are guesses.
                if sym.size.is_some() {
                    continue;
                }
                let mut cache = self.functions.borrow_mut();
                let table = cache
                    .entry(module.id)
                    .or_insert_with(|| FunctionSymbols::open(&module.symbol_path()));
                if !table.starts_at(sym.addr) {
                    renamed.push((i, table.containing(svma).map(demangle)));
                }
            }
        }
        let mut frames = frames_or_unknown(results, svmas, &module.name, FrameKind::User, |a| a);
        for (i, name) in renamed {
            let frame = match name {
                Some(function) => Frame {
                    function,
                    module: module.name.clone(),
                    file: None,
                    line: None,
                    inlined: false,
                    kind: FrameKind::User,
                },
                None => unknown(&module.name, svmas[i], FrameKind::User),
            };
            frames[i] = vec![frame];
        }
        frames
    }
}

/// A symbol name as people read it (Rust's legacy and v0 manglings; others unchanged).
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Name of the frame that ends a user stack whose callers are unknown.
pub const TRUNCATED: &str = "[truncated]";

/// The frame ending a user stack that could not be followed to its root.
pub fn truncated() -> Frame {
    Frame {
        function: TRUNCATED.to_string(),
        module: TRUNCATED.to_string(),
        file: None,
        line: None,
        inlined: false,
        kind: FrameKind::User,
    }
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
    use crate::{modules::ModuleCache, process::maps};

    #[inline(never)]
    fn a_named_function_of_the_test() -> u64 {
        std::hint::black_box(11)
    }

    /// The test binary is linked by lld, which puts the read-only segment and the code in
    /// one file page at different addresses: an address in the code must be named after its
    /// function, not after the data symbol 4 KiB below it (the segment's offset).
    #[test]
    fn names_code_of_a_real_process_after_its_function() {
        assert_eq!(a_named_function_of_the_test(), 11);
        let addr = a_named_function_of_the_test as *const () as u64 + 1;
        let text = std::fs::read_to_string("/proc/self/maps").expect("own maps");
        let mapping = maps::parse(&text)
            .into_iter()
            .find(|m| m.executable && m.contains(addr))
            .expect("the mapping of the test's code");
        let mut cache = ModuleCache::default();
        let module = cache
            .for_mapping(std::process::id(), &mapping)
            .expect("own executable opens");
        let base = module.base_avma(&mapping).expect("base address");
        let frames = Symbolizer::default().user(&module, &[addr - base]);
        let names: Vec<&str> = frames[0].iter().map(|f| f.function.as_str()).collect();
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("a_named_function_of_the_test")),
            "{names:?}"
        );
    }

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
