//! The `.gopclntab` proper: pcHeader, the function table, `_func` records and the pc-value
//! tables (pcsp, pcfile, pcln, pcdata).
//!
//! Layout (Go 1.18+, `runtime/symtab.go`, `cmd/link/internal/ld/pcln.go`): a pcHeader
//! `{magic u32; pad1, pad2, minLC, ptrSize u8; nfunc, nfiles, textStart, funcnameOffset,
//! cuOffset, filetabOffset, pctabOffset, pclnOffset uintptr}` whose offsets are relative to
//! the header itself, then the tables. `pclnOffset` points at the functab: `nfunc + 1` pairs
//! `{entryOff, funcOff u32}` sorted by entry, the last one marking the end of text; each
//! `funcOff` (relative to the functab) locates a `_func`.

use super::reader::{self, u32_at, u8_at};
use super::version::Layout;
use super::GoError;

/// The parsed pcHeader. Offsets are into the section bytes.
#[derive(Clone, Debug)]
pub(super) struct Header {
    /// Instruction size quantum: pc deltas in pc-value tables are multiples of it.
    pub quantum: u8,
    pub ptr_size: u8,
    pub nfunc: usize,
    /// `textStart` as stored (0 from Go 1.26 on, and before relocation in PIE files).
    pub text_start: u64,
    pub funcname_off: usize,
    pub cu_off: usize,
    pub filetab_off: usize,
    pub pctab_off: usize,
    pub pcln_off: usize,
}

impl Header {
    /// Size of the header: 8 bytes, then 8 words.
    pub fn size(ptr_size: u8) -> usize {
        8 + 8 * usize::from(ptr_size)
    }

    /// Only the magic, for choosing (or refusing) a layout before anything else is read.
    pub fn magic(data: &[u8]) -> Result<u32, GoError> {
        u32_at(data, 0).ok_or(GoError::Truncated {
            what: "pcHeader magic",
            format: "unknown",
        })
    }

    pub fn parse(data: &[u8], layout: &Layout) -> Result<Self, GoError> {
        let truncated = |what| GoError::Truncated {
            what,
            format: layout.name,
        };
        let malformed = |what| GoError::Malformed {
            what,
            format: layout.name,
        };
        let (pad1, pad2) = (u8_at(data, 4), u8_at(data, 5));
        let quantum = u8_at(data, 6).ok_or(truncated("pcHeader"))?;
        let ptr_size = u8_at(data, 7).ok_or(truncated("pcHeader"))?;
        if pad1 != Some(0) || pad2 != Some(0) {
            return Err(malformed("pcHeader padding is not zero"));
        }
        if !matches!(quantum, 1 | 2 | 4) {
            return Err(malformed("pcHeader instruction quantum"));
        }
        if !matches!(ptr_size, 4 | 8) {
            return Err(malformed("pcHeader pointer size"));
        }
        let word = |i: usize| {
            reader::word_at(data, 8 + i * usize::from(ptr_size), ptr_size)
                .ok_or(truncated("pcHeader"))
        };
        let offset = |i: usize| -> Result<usize, GoError> {
            let v = usize::try_from(word(i)?).map_err(|_| malformed("pcHeader offset"))?;
            if v < Self::size(ptr_size) || v >= data.len() {
                return Err(truncated(
                    "table offset in pcHeader points outside .gopclntab",
                ));
            }
            Ok(v)
        };
        let nfunc = usize::try_from(word(0)?).map_err(|_| malformed("pcHeader nfunc"))?;
        let h = Header {
            quantum,
            ptr_size,
            nfunc,
            text_start: word(2)?,
            funcname_off: offset(3)?,
            cu_off: offset(4)?,
            filetab_off: offset(5)?,
            pctab_off: offset(6)?,
            pcln_off: offset(7)?,
        };
        // The functab must fit: nfunc + 1 entries of two u32 (this also bounds nfunc, so
        // nothing later allocates or loops on a forged count).
        let functab_len = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .ok_or(malformed("pcHeader nfunc"))?;
        if nfunc == 0 || reader::bytes(data, h.pcln_off, functab_len).is_none() {
            return Err(truncated("functab"));
        }
        Ok(h)
    }
}

/// Special function bits (`internal/abi.FuncFlag`, same values 1.19 through 1.27).
pub(super) const FUNC_FLAG_TOPFRAME: u8 = 1 << 0;
pub(super) const FUNC_FLAG_SPWRITE: u8 = 1 << 1;

/// `PCDATA_InlTreeIndex` and `FUNCDATA_InlTree` (same in every supported release).
pub(super) const PCDATA_INL_TREE_INDEX: u32 = 2;
pub(super) const FUNCDATA_INL_TREE: u8 = 3;

/// A decoded `runtime._func`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Func {
    /// Entry pc as an offset from text start.
    pub entry_off: u32,
    pub name_off: i32,
    pub pcsp: u32,
    pub pcfile: u32,
    pub pcln: u32,
    pub npcdata: u32,
    pub cu_offset: u32,
    pub flag: u8,
    pub nfuncdata: u8,
    /// Offset in the section of the pcdata array that follows the fixed fields.
    pub tables_off: usize,
}

/// Read access to the tables of one `.gopclntab`.
pub(super) struct Pclntab<'a> {
    pub data: &'a [u8],
    pub hdr: &'a Header,
    pub layout: &'a Layout,
}

impl Pclntab<'_> {
    /// Entry offset of functab slot `i` (`i == nfunc` gives the end of text).
    pub fn entry_off(&self, i: usize) -> Option<u32> {
        u32_at(self.data, self.hdr.pcln_off.checked_add(i.checked_mul(8)?)?)
    }

    /// Index of the function whose range holds text offset `off`: the last functab entry at
    /// or before it, as the runtime's findfunc does (binary search; the table is sorted).
    pub fn find(&self, off: u32) -> Option<usize> {
        let n = self.hdr.nfunc;
        if off < self.entry_off(0)? || off >= self.entry_off(n)? {
            return None;
        }
        let (mut lo, mut hi) = (0usize, n); // invariant: entry(lo) <= off < entry(hi)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.entry_off(mid)? <= off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The `_func` of functab slot `i`.
    pub fn func(&self, i: usize) -> Option<Func> {
        if i >= self.hdr.nfunc {
            return None;
        }
        let slot = self.hdr.pcln_off.checked_add(i.checked_mul(8)?)?;
        let func_off = u32_at(self.data, slot.checked_add(4)?)?;
        let base = self
            .hdr
            .pcln_off
            .checked_add(usize::try_from(func_off).ok()?)?;
        let d = self.data;
        let f = Func {
            entry_off: u32_at(d, base)?,
            name_off: reader::i32_at(d, base + 4)?,
            pcsp: u32_at(d, base + 16)?,
            pcfile: u32_at(d, base + 20)?,
            pcln: u32_at(d, base + 24)?,
            npcdata: u32_at(d, base + 28)?,
            cu_offset: u32_at(d, base + 32)?,
            flag: u8_at(d, base + self.layout.func_flag_off)?,
            nfuncdata: u8_at(d, base + self.layout.func_header - 1)?,
            tables_off: base + self.layout.func_header,
        };
        // The runtime checks this too: a _func must describe the entry that points at it.
        (f.entry_off == self.entry_off(i)?).then_some(f)
    }

    /// NUL-terminated name at `name_off` in the funcnametab.
    pub fn name(&self, name_off: i32) -> Option<String> {
        let off = self
            .hdr
            .funcname_off
            .checked_add(usize::try_from(name_off).ok()?)?;
        reader::cstr_at(self.data, off)
    }

    /// Source file `fileno` of the compilation unit of `f` (cutab -> filetab).
    pub fn file(&self, f: &Func, fileno: i32) -> Option<String> {
        let idx = f.cu_offset.checked_add(u32::try_from(fileno).ok()?)?;
        let slot = self
            .hdr
            .cu_off
            .checked_add(usize::try_from(idx).ok()?.checked_mul(4)?)?;
        let file_off = u32_at(self.data, slot)?;
        if file_off == u32::MAX {
            return None; // the linker's marker for "no file"
        }
        let off = self
            .hdr
            .filetab_off
            .checked_add(usize::try_from(file_off).ok()?)?;
        reader::cstr_at(self.data, off)
    }

    /// Value of the pc-value table at pctab offset `table` for text offset `target` in the
    /// function starting at `entry`. Tables are (zigzag value delta, pc delta / quantum)
    /// varint pairs starting from value -1 at the entry; a zero value delta after the first
    /// pair ends the table. Returns None for no table, or a pc the table does not cover.
    pub fn pcvalue(&self, table: u32, entry: u32, target: u32) -> Option<i32> {
        if table == 0 || target < entry {
            return None;
        }
        let mut p = self
            .hdr
            .pctab_off
            .checked_add(usize::try_from(table).ok()?)?;
        let quantum = u32::from(self.hdr.quantum);
        let (mut pc, mut val) = (entry, -1i32);
        let mut first = true;
        loop {
            let (uvdelta, n) = reader::uvarint32(self.data, p)?;
            if uvdelta == 0 && !first {
                return None; // end of table before reaching target
            }
            first = false;
            p += n;
            let vdelta = ((uvdelta >> 1) as i32) ^ -((uvdelta & 1) as i32);
            val = val.wrapping_add(vdelta);
            let (pcdelta, n) = reader::uvarint32(self.data, p)?;
            p += n;
            // The compiler only emits a pair at a real instruction boundary, so every pc
            // delta is positive (none of ~600k pairs in the 1.19-1.27 fixtures is zero). A
            // zero one is corruption, and refusing it bounds this loop by target - entry
            // rather than by the size of the section.
            if pcdelta == 0 {
                return None;
            }
            pc = pc.checked_add(pcdelta.checked_mul(quantum)?)?;
            if target < pc {
                return Some(val);
            }
        }
    }

    /// `pcdata[idx]` of `f` at text offset `target`.
    pub fn pcdata(&self, f: &Func, idx: u32, target: u32) -> Option<i32> {
        if idx >= f.npcdata {
            return None;
        }
        let slot = f.tables_off.checked_add(usize::try_from(idx).ok()? * 4)?;
        self.pcvalue(u32_at(self.data, slot)?, f.entry_off, target)
    }

    /// `funcdata[idx]` of `f`: an offset from moduledata.gofunc, if present.
    pub fn funcdata(&self, f: &Func, idx: u8) -> Option<u32> {
        if idx >= f.nfuncdata {
            return None;
        }
        let slot = f
            .tables_off
            .checked_add(usize::try_from(f.npcdata).ok()?.checked_mul(4)?)?
            .checked_add(usize::from(idx) * 4)?;
        let off = u32_at(self.data, slot)?;
        (off != u32::MAX).then_some(off)
    }

    /// File and line at text offset `target` inside `f` (the innermost inlined body's).
    pub fn file_line(&self, f: &Func, target: u32) -> (Option<String>, Option<u32>) {
        let file = self
            .pcvalue(f.pcfile, f.entry_off, target)
            .and_then(|n| self.file(f, n));
        let line = self
            .pcvalue(f.pcln, f.entry_off, target)
            .and_then(|l| u32::try_from(l).ok());
        (file, line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::go::version::layout_for;

    /// A one-function table built by hand, to pin down the pc-value decoding rules.
    #[test]
    fn pcvalue_steps() {
        let layout = layout_for(24).expect("layout");
        let hdr = Header {
            quantum: 1,
            ptr_size: 8,
            nfunc: 1,
            text_start: 0,
            funcname_off: 72,
            cu_off: 72,
            filetab_off: 72,
            pctab_off: 72,
            pcln_off: 72,
        };
        // pctab at 72: a dummy byte (offset 0 means "no table"), then the table at offset 1:
        // value +8 (zigzag 16) for 4 bytes, then +16 (32) for 10 bytes, then -24 (47) for 2.
        let mut data = vec![0u8; 72];
        data.extend_from_slice(&[0, 16, 4, 32, 10, 47, 2, 0]);
        let t = Pclntab {
            data: &data,
            hdr: &hdr,
            layout: &layout,
        };
        assert_eq!(t.pcvalue(1, 100, 100), Some(7));
        assert_eq!(t.pcvalue(1, 100, 103), Some(7));
        assert_eq!(t.pcvalue(1, 100, 104), Some(23));
        assert_eq!(t.pcvalue(1, 100, 113), Some(23));
        assert_eq!(t.pcvalue(1, 100, 114), Some(-1));
        assert_eq!(t.pcvalue(1, 100, 116), None); // past the end of the table
        assert_eq!(t.pcvalue(1, 100, 99), None); // before the entry
        assert_eq!(t.pcvalue(0, 100, 100), None); // no table
        assert_eq!(t.pcvalue(7, 100, 100), None); // runs off the data
    }
}
