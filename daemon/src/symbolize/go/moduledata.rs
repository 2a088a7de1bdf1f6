//! Finding `runtime.firstmoduledata` in a stripped binary, for the two addresses the
//! pclntab alone does not give: `text` (the base of every `_func.entryOff`; the pcHeader
//! stopped carrying it in Go 1.26) and `gofunc` (the base of funcdata such as inline trees).
//!
//! The moduledata is found as the word that points at the pcHeader (its first field) and is
//! accepted only if its other pclntab fields agree with the header, and its text section
//! map describes exactly the text it claims. That cross-check is what makes the per-release
//! word indices in [`Layout`] safe to use.

use super::elf::ElfImage;
use super::pclntab::{Header, Pclntab};
use super::version::Layout;
use super::GoError;

/// Word indices shared by every supported release (`runtime/symtab.go`): pcHeader, then the
/// funcnametab, cutab, filetab, pctab, pclntable and ftab slices (3 words each), then
/// findfunctab, minpc, maxpc, text, etext.
const MD_PCHEADER: usize = 0;
const MD_FUNCNAMETAB: usize = 1;
const MD_CUTAB: usize = 4;
const MD_FILETAB: usize = 7;
const MD_PCTAB: usize = 10;
const MD_PCLNTABLE: usize = 13;
const MD_FTAB: usize = 16;
const MD_FTAB_LEN: usize = 17;
const MD_MINPC: usize = 20;
const MD_MAXPC: usize = 21;
const MD_TEXT: usize = 22;
const MD_ETEXT: usize = 23;

/// What we use from the moduledata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ModuleData {
    /// Link-time address of `runtime.text`: `_func.entryOff` is relative to it.
    pub text: u64,
    pub etext: u64,
    /// Start and end of the functions in the functab.
    pub minpc: u64,
    pub maxpc: u64,
    /// Base address of funcdata offsets (the `go:func.*` symbol).
    pub gofunc: u64,
}

/// Locate and validate the moduledata for the pclntab at `pclntab_addr`.
pub(super) fn locate(
    img: &ElfImage,
    tab: &Pclntab,
    pclntab_addr: u64,
    pclntab_len: u64,
) -> Result<ModuleData, GoError> {
    let mut last_err = None;
    for md in img.words_equal_to(pclntab_addr) {
        match check(img, tab, md, pclntab_addr, pclntab_len) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            // A candidate that looks like the moduledata but fails a later check: keep the
            // reason in case nothing else matches.
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or(GoError::ModuledataNotFound {
        format: tab.layout.name,
    }))
}

/// Ok(None): not the moduledata. Err: it is (its pclntab fields match), but inconsistent.
fn check(
    img: &ElfImage,
    tab: &Pclntab,
    md: u64,
    pcaddr: u64,
    pclntab_len: u64,
) -> Result<Option<ModuleData>, GoError> {
    let layout: &Layout = tab.layout;
    let hdr: &Header = tab.hdr;
    let ps = u64::from(img.ptr_size);
    let w = |i: usize| img.word(md.checked_add(i as u64 * ps)?);
    let at = |off: usize| pcaddr.checked_add(off as u64);
    let nfunc1 = (hdr.nfunc as u64).checked_add(1);
    let signature = w(MD_PCHEADER) == Some(pcaddr)
        && w(MD_FUNCNAMETAB) == at(hdr.funcname_off)
        && w(MD_CUTAB) == at(hdr.cu_off)
        && w(MD_FILETAB) == at(hdr.filetab_off)
        && w(MD_PCTAB) == at(hdr.pctab_off)
        && w(MD_PCLNTABLE) == at(hdr.pcln_off)
        && w(MD_FTAB) == at(hdr.pcln_off)
        && w(MD_FTAB_LEN) == nfunc1;
    if !signature {
        return Ok(None);
    }
    let bad = |what| GoError::Malformed {
        what,
        format: layout.name,
    };
    let word = |i: usize, what| {
        w(i).ok_or(GoError::Truncated {
            what,
            format: layout.name,
        })
    };
    let m = ModuleData {
        text: word(MD_TEXT, "moduledata.text")?,
        etext: word(MD_ETEXT, "moduledata.etext")?,
        minpc: word(MD_MINPC, "moduledata.minpc")?,
        maxpc: word(MD_MAXPC, "moduledata.maxpc")?,
        gofunc: word(layout.md_gofunc, "moduledata.gofunc")?,
    };

    // One text section: textsectmap == [{vaddr: 0, end: .text length, baseaddr: text}]. The
    // runtime maps entry offsets through it only when there are several (large arm64/ppc64
    // binaries); we refuse those rather than mis-map them. Checking the single entry also
    // proves that `md_textsectmap` (and so the word indices before it) fit this release.
    let sects = word(layout.md_textsectmap, "moduledata.textsectmap")?;
    let nsects = word(layout.md_textsectmap + 1, "moduledata.textsectmap")?;
    if nsects > 1 {
        return Err(GoError::MultipleTextSections {
            count: nsects,
            format: layout.name,
        });
    }
    let sect = |i: u64| img.word(sects.checked_add(i * ps)?);
    // `end` is the section length, which can exceed etext - text by alignment padding.
    let covers_text = sect(1)
        .and_then(|len| m.text.checked_add(len))
        .is_some_and(|end| {
            end >= m.etext && end.checked_sub(1).is_some_and(|l| img.is_executable(l))
        });
    if nsects != 1 || sect(0) != Some(0) || !covers_text || sect(2) != Some(m.text) {
        return Err(bad("moduledata.textsectmap does not describe its text"));
    }
    if !(m.text <= m.minpc && m.minpc < m.maxpc && m.maxpc <= m.etext) {
        return Err(bad("moduledata text bounds"));
    }
    if !img.is_executable(m.text) {
        return Err(bad("moduledata.text is not in an executable section"));
    }
    // minpc/maxpc are the first and last functab entries, resolved against text.
    let resolve = |i| {
        tab.entry_off(i)
            .and_then(|o| m.text.checked_add(u64::from(o)))
    };
    if resolve(0) != Some(m.minpc) || resolve(hdr.nfunc) != Some(m.maxpc) {
        return Err(bad("functab bounds disagree with moduledata.minpc/maxpc"));
    }
    if !img.is_mapped(m.gofunc) {
        return Err(bad("moduledata.gofunc is not in a loaded section"));
    }
    if let Some(i) = layout.md_epclntab {
        // 1.26+: the end of the pclntab symbol; it cannot be past the section.
        let end = word(i, "moduledata.epclntab")?;
        if end <= pcaddr || end > pcaddr.saturating_add(pclntab_len) {
            return Err(bad("moduledata.epclntab is outside .gopclntab"));
        }
    }
    Ok(Some(m))
}
