//! Inlined calls: the FUNCDATA_InlTree table of a function and its PCDATA_InlTreeIndex.
//!
//! At a pc, `pcdata[InlTreeIndex]` is the index of the innermost inlined call whose body the
//! pc belongs to (-1: the function's own code). That entry's `parentPc` is a pc (offset from
//! the function entry) whose own index and file/line describe the call site in the caller,
//! and so on outwards, exactly as the runtime's `inlineUnwinder` walks it. Only the record
//! layout differs by release (see [`Layout`](super::version::Layout)).

use super::pclntab::{Func, Pclntab, FUNCDATA_INL_TREE, PCDATA_INL_TREE_INDEX};
use super::reader::{i32_at, u32_at};
use super::version::Layout;

/// Inline chains longer than this are treated as corrupt (a forged parentPc could loop).
const MAX_INLINE_DEPTH: usize = 256;

/// One step of the walk: the function whose body `pc` (a text offset) is in.
pub(super) struct InlineStep {
    /// `nameOff` of the inlined callee; None for the physical function.
    pub name_off: Option<i32>,
    pub pc: u32,
}

/// The bytes at `moduledata.gofunc` onwards, where funcdata offsets point.
pub(super) struct FuncData<'a> {
    pub bytes: &'a [u8],
}

impl FuncData<'_> {
    /// `nameOff` and `parentPc` of entry `ix` of the inline tree at funcdata offset `tree`.
    fn call(&self, layout: &Layout, tree: u32, ix: i32) -> Option<(i32, i32)> {
        let ix = usize::try_from(ix).ok()?;
        let rec = usize::try_from(tree)
            .ok()?
            .checked_add(ix.checked_mul(layout.inl_size)?)?;
        let name = i32_at(self.bytes, rec.checked_add(layout.inl_name_off)?)?;
        let parent_pc = u32_at(self.bytes, rec.checked_add(layout.inl_parent_pc_off)?)?;
        Some((name, parent_pc as i32))
    }

    /// The inline chain at text offset `pc` of `f`, innermost first, ending with the
    /// physical function. None if the tables are inconsistent.
    pub fn chain(&self, tab: &Pclntab, f: &Func, pc: u32) -> Option<Vec<InlineStep>> {
        let tree = tab.funcdata(f, FUNCDATA_INL_TREE);
        let index_at = |pc| match tree {
            Some(_) => tab.pcdata(f, PCDATA_INL_TREE_INDEX, pc).unwrap_or(-1),
            None => -1,
        };
        let mut steps = Vec::new();
        let (mut pc, mut ix) = (pc, index_at(pc));
        while ix >= 0 {
            let (name_off, parent_pc) = self.call(tab.layout, tree?, ix)?;
            steps.push(InlineStep {
                name_off: Some(name_off),
                pc,
            });
            if steps.len() > MAX_INLINE_DEPTH {
                return None;
            }
            pc = f.entry_off.checked_add(u32::try_from(parent_pc).ok()?)?;
            ix = index_at(pc);
        }
        steps.push(InlineStep { name_off: None, pc });
        Some(steps)
    }
}
