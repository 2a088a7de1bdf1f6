//! A small `.debug_frame` reader (test only): the CFA rule of every pc range, which is what
//! gdb and perf unwind Go code with. Supports what DWARF 2-4 call frame programs contain
//! (Go's linker uses def_cfa, def_cfa_offset_sf, offset_extended and advance_loc*); any
//! other opcode fails the test instead of being skipped.

use object::{Object, ObjectSection, SectionFlags};
use std::io::Read;

/// CFA = register + offset over [start, end).
#[derive(Clone, Copy, Debug)]
pub(super) struct Row {
    pub start: u64,
    pub end: u64,
    pub reg: u64,
    pub offset: i64,
}

const SHF_COMPRESSED: u64 = 0x800;

/// The `.debug_frame` bytes, decompressed (Go compresses DWARF with zlib).
pub(super) fn debug_frame(elf: &[u8]) -> Vec<u8> {
    let file = object::File::parse(elf).expect("parse ELF");
    let sec = file
        .section_by_name(".debug_frame")
        .expect("no .debug_frame in the .debug fixture");
    let raw = sec.data().expect(".debug_frame data");
    let SectionFlags::Elf { sh_flags } = sec.flags() else {
        unreachable!()
    };
    if sh_flags & SHF_COMPRESSED == 0 {
        return raw.to_vec();
    }
    // Elf64_Chdr: ch_type (1 = zlib), reserved, ch_size, ch_addralign; then the stream.
    assert_eq!(u32::from_le_bytes(raw[0..4].try_into().unwrap()), 1, "zlib");
    let size = u64::from_le_bytes(raw[8..16].try_into().unwrap()) as usize;
    let mut out = Vec::with_capacity(size);
    flate2::read::ZlibDecoder::new(&raw[24..])
        .read_to_end(&mut out)
        .expect("inflate .debug_frame");
    assert_eq!(out.len(), size);
    out
}

struct Cursor<'a> {
    d: &'a [u8],
    p: usize,
}

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        self.p += 1;
        self.d[self.p - 1]
    }
    fn uint(&mut self, n: usize) -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.d[self.p..self.p + n]);
        self.p += n;
        u64::from_le_bytes(b)
    }
    fn uleb(&mut self) -> u64 {
        let (mut v, mut s) = (0u64, 0);
        loop {
            let b = self.u8();
            v |= u64::from(b & 0x7f) << s;
            s += 7;
            if b & 0x80 == 0 {
                return v;
            }
        }
    }
    fn sleb(&mut self) -> i64 {
        let (mut v, mut s) = (0i64, 0);
        loop {
            let b = self.u8();
            v |= i64::from(b & 0x7f) << s;
            s += 7;
            if b & 0x80 == 0 {
                if s < 64 && b & 0x40 != 0 {
                    v |= -1i64 << s;
                }
                return v;
            }
        }
    }
}

struct Cie {
    code_align: u64,
    data_align: i64,
    initial: (u64, i64),
}

/// Run a call frame program from `state`, appending rows from `loc` until `end`.
fn run(
    prog: &[u8],
    cie: &Cie,
    mut loc: u64,
    end: u64,
    mut state: (u64, i64),
    rows: &mut Vec<Row>,
) -> (u64, i64) {
    let mut c = Cursor { d: prog, p: 0 };
    let mut stack = Vec::new();
    let mut advance = |loc: &mut u64, to: u64, state: (u64, i64)| {
        if to > *loc {
            rows.push(Row {
                start: *loc,
                end: to,
                reg: state.0,
                offset: state.1,
            });
        }
        *loc = to;
    };
    while c.p < prog.len() {
        let op = c.u8();
        match (op >> 6, op & 0x3f) {
            (1, d) => {
                let to = loc + u64::from(d) * cie.code_align;
                advance(&mut loc, to, state);
            }
            (2, _) => {
                c.uleb(); // offset(reg): a register rule, not the CFA
            }
            (3, _) => {} // restore(reg)
            (_, _) => match op {
                0x00 => {}
                0x01 => {
                    let to = c.uint(8);
                    advance(&mut loc, to, state);
                }
                0x02..=0x04 => {
                    let n = [1, 2, 4][usize::from(op - 2)];
                    let to = loc + c.uint(n) * cie.code_align;
                    advance(&mut loc, to, state);
                }
                0x05 | 0x09 | 0x14 => {
                    c.uleb();
                    c.uleb();
                }
                0x06..=0x08 => {
                    c.uleb();
                }
                0x0a => stack.push(state),
                0x0b => state = stack.pop().expect("restore_state without remember_state"),
                0x0c => state = (c.uleb(), c.uleb() as i64),
                0x0d => state.0 = c.uleb(),
                0x0e => state.1 = c.uleb() as i64,
                0x11 | 0x15 => {
                    c.uleb();
                    c.sleb();
                }
                0x12 => state = (c.uleb(), c.sleb() * cie.data_align),
                0x13 => state.1 = c.sleb() * cie.data_align,
                _ => panic!("unsupported DW_CFA opcode {op:#x}"),
            },
        }
    }
    advance(&mut loc, end, state);
    state
}

/// Every CFA row of every FDE in a 32-bit-DWARF `.debug_frame` of a 64-bit target.
pub(super) fn rows(frame: &[u8]) -> Vec<Row> {
    let mut cies = std::collections::HashMap::new();
    let mut rows = Vec::new();
    let mut off = 0;
    while off + 4 <= frame.len() {
        let mut c = Cursor { d: frame, p: off };
        let len = c.uint(4) as usize;
        assert_ne!(len, 0xffff_ffff, "64-bit DWARF not expected here");
        let end = c.p + len;
        let id = c.uint(4);
        if id == 0xffff_ffff {
            let version = c.u8();
            assert_eq!(c.u8(), 0, "CIE augmentation must be empty");
            if version >= 4 {
                c.p += 2; // address_size, segment_size
            }
            let code_align = c.uleb();
            let data_align = c.sleb();
            if version == 1 {
                c.u8();
            } else {
                c.uleb();
            }
            let mut cie = Cie {
                code_align,
                data_align,
                initial: (0, 0),
            };
            cie.initial = run(&frame[c.p..end], &cie, 0, 0, (0, 0), &mut Vec::new());
            cies.insert(off as u64, cie);
        } else {
            let cie = cies.get(&id).expect("FDE before its CIE");
            let start = c.uint(8);
            let range = c.uint(8);
            run(
                &frame[c.p..end],
                cie,
                start,
                start + range,
                cie.initial,
                &mut rows,
            );
        }
        off = end;
    }
    rows
}
