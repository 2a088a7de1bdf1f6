//! Stacks of goroutines that are not running, from their saved registers: the pc and sp
//! the scheduler saved in `g.sched` when the goroutine parked (or `g.syscallpc/sp` when it
//! entered a system call), unwound with the pclntab's frame sizes as the runtime's own
//! traceback does. The stack can change under us (the goroutine may be woken): every step
//! is checked (pc in Go code, sp rising inside the stack bounds), so a torn read ends the
//! stack early rather than producing garbage.

use crate::symbolize::go::{GoTable, StackEnd};
use crate::unwind::MAX_USER_FRAMES;

use super::memory::{Memory, ReadError, MAX_READ};

/// Most stack bytes copied per goroutine (deeper stacks are reported truncated).
const MAX_STACK_COPY: u64 = 256 << 10;

/// How a goroutine's stack ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackStatus {
    /// Unwound to the goroutine's first function (runtime.goexit).
    Complete,
    /// Stopped at a function that switched stacks (the runtime's SPWRITE functions), as
    /// the runtime's own traceback does.
    StackSwitch,
    /// Stopped early: a frame could not be unwound (no frame size for its pc, a return
    /// address outside Go code, the stack changed while it was read, too deep).
    Truncated,
    /// Not unwound: the goroutine is running, so its saved registers are stale.
    Running,
    /// Not unwound: the goroutine is dead or not started.
    None,
}

/// Unwinds from `pc`/`sp` (live addresses) within stack bounds `lo..hi`. Returns the pcs
/// (the resume pc, then return addresses) and how the stack ended.
pub fn unwind(
    mem: &Memory,
    table: &GoTable,
    bias: u64,
    pc: u64,
    sp: u64,
    (lo, hi): (u64, u64),
) -> Result<(Vec<u64>, StackStatus), ReadError> {
    let mut pcs = Vec::new();
    if !(lo..hi).contains(&sp) {
        return Ok((pcs, StackStatus::Truncated));
    }
    let len = (hi - sp).min(MAX_STACK_COPY).min(MAX_READ as u64);
    let mut copy = vec![0u8; len as usize];
    match mem.read(sp, &mut copy) {
        Ok(()) => {}
        Err(ReadError::Unmapped) => return Ok((pcs, StackStatus::Truncated)),
        Err(e) => return Err(e),
    }
    let word = |addr: u64| -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(sp)?).ok()?;
        let b = copy.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let (mut pc, mut cur_sp) = (pc, sp);
    while pcs.len() < MAX_USER_FRAMES {
        let lpc = pc.wrapping_sub(bias);
        if !table.text_range().contains(&lpc) {
            return Ok((pcs, StackStatus::Truncated));
        }
        pcs.push(pc);
        match table.stack_end(lpc) {
            Some(StackEnd::Top) => return Ok((pcs, StackStatus::Complete)),
            Some(StackEnd::SpWrite) => return Ok((pcs, StackStatus::StackSwitch)),
            None => {}
        }
        let Some(delta) = table.sp_delta(lpc) else {
            return Ok((pcs, StackStatus::Truncated));
        };
        let slot = cur_sp.wrapping_add(delta);
        let Some(ret) = word(slot) else {
            return Ok((pcs, StackStatus::Truncated));
        };
        let next_sp = slot + 8;
        if next_sp <= cur_sp || next_sp > hi {
            return Ok((pcs, StackStatus::Truncated));
        }
        pc = ret;
        cur_sp = next_sp;
    }
    Ok((pcs, StackStatus::Truncated))
}
