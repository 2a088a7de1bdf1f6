//! User-stack unwinding from a copy of the stack taken at sample time.
//!
//! Go code is unwound with the frame sizes in its pclntab (exact even in frameless leaves);
//! native code with `.eh_frame` CFI through framehop (exact without frame pointers, as in
//! Debian's glibc). When the copy ends before the root, the frame-pointer stack the kernel
//! walked at the same sample supplies the remaining callers.

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    FrameAddress, Unwinder,
};

use crate::{modules::SectionBytes, process::Process};

/// Deepest user stack loupe reports.
pub const MAX_USER_FRAMES: usize = 256;

/// Nothing is ever mapped below this address (vm.mmap_min_addr is at least a page).
const NULL_PAGE_END: u64 = 4096;

/// framehop's unwinder for one address space, with its rule cache.
pub struct NativeUnwinder {
    unwinder: UnwinderX86_64<SectionBytes>,
    cache: CacheX86_64,
}

impl Default for NativeUnwinder {
    fn default() -> Self {
        NativeUnwinder {
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
        }
    }
}

impl NativeUnwinder {
    pub fn add_module(&mut self, module: framehop::Module<SectionBytes>) {
        self.unwinder.add_module(module);
    }
}

/// Registers and stack bytes of a thread at one instant.
pub struct StackSnapshot<'a> {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Memory from `sp` upward.
    pub stack: &'a [u8],
}

impl StackSnapshot<'_> {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let offset = usize::try_from(addr.checked_sub(self.sp)?).ok()?;
        let bytes = self.stack.get(offset..offset.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// Unwinds `snapshot` in `process`. Returns code addresses leaf first: the instruction
/// pointer, then return addresses. `fp_frames` is the kernel's frame-pointer walk of the same
/// stack (instruction pointer first), used past the end of the copy.
pub fn unwind(process: &mut Process, snapshot: &StackSnapshot, fp_frames: &[u64]) -> Vec<u64> {
    let mut frames = vec![snapshot.ip];
    let mut regs = UnwindRegsX86_64::new(snapshot.ip, snapshot.sp, snapshot.bp);
    let mut complete = false;
    while frames.len() < MAX_USER_FRAMES {
        let pc = regs.ip();
        let is_leaf = frames.len() == 1;
        let step = match go_step(process, pc, &regs, snapshot) {
            Some(step) => step,
            None => native_step(process, pc, is_leaf, regs, snapshot),
        };
        match step {
            Step::Caller { ip, sp, bp } => {
                if ip < NULL_PAGE_END {
                    // 0 ends a stack; other null-page values come from frames that are not
                    // calls (signal trampolines such as runtime.sigreturn), never from code.
                    complete = true;
                    break;
                }
                if sp <= regs.sp() {
                    break; // A caller's frame is always above its callee's: corrupt stack.
                }
                regs = UnwindRegsX86_64::new(ip, sp, bp);
                frames.push(ip);
            }
            Step::Root => {
                complete = true;
                break;
            }
            Step::Lost => break,
        }
    }
    if !complete {
        splice_frame_pointer_tail(&mut frames, fp_frames);
    }
    frames
}

enum Step {
    Caller {
        ip: u64,
        sp: u64,
        bp: u64,
    },
    /// The outermost frame of the stack.
    Root,
    /// Cannot go further (the copy ended, or no unwind information).
    Lost,
}

/// One frame of Go code: the return address sits `sp_delta` bytes above SP at any pc.
fn go_step(
    process: &Process,
    pc: u64,
    regs: &UnwindRegsX86_64,
    snapshot: &StackSnapshot,
) -> Option<Step> {
    let code = process.code_at(pc)?;
    let go = code.module.as_ref()?.go.as_ref()?;
    let svma = pc.wrapping_sub(code.base_avma);
    if !go.text_range().contains(&svma) {
        return None; // cgo or assembly outside Go's table: native rules apply.
    }
    if go.is_stack_root(svma) {
        return Some(Step::Root);
    }
    let Some(delta) = go.sp_delta(svma) else {
        return Some(Step::Lost);
    };
    let slot = regs.sp().wrapping_add(delta);
    let Some(ip) = snapshot.read_u64(slot) else {
        return Some(Step::Lost);
    };
    // Once a frame is set up, the caller's frame pointer is saved just below the return
    // address; native code called from Go (cgo) needs it.
    let bp = if delta >= 8 {
        snapshot.read_u64(slot - 8).unwrap_or(regs.bp())
    } else {
        regs.bp()
    };
    Some(Step::Caller {
        ip,
        sp: slot + 8,
        bp,
    })
}

/// One frame of native code; `regs` (a copy) becomes the caller's.
fn native_step(
    process: &mut Process,
    pc: u64,
    is_leaf: bool,
    mut regs: UnwindRegsX86_64,
    snapshot: &StackSnapshot,
) -> Step {
    let address = if is_leaf {
        FrameAddress::from_instruction_pointer(pc)
    } else {
        match FrameAddress::from_return_address(pc) {
            Some(a) => a,
            None => return Step::Lost,
        }
    };
    let mut read = |addr: u64| snapshot.read_u64(addr).ok_or(());
    let native = &mut process.unwinder;
    match native
        .unwinder
        .unwind_frame(address, &mut regs, &mut native.cache, &mut read)
    {
        Ok(Some(ip)) => Step::Caller {
            ip,
            sp: regs.sp(),
            bp: regs.bp(),
        },
        Ok(None) => {
            log::debug!(
                "native unwind at {pc:#x}: root (sp {:#x}, copy {} bytes)",
                regs.sp(),
                snapshot.stack.len()
            );
            Step::Root
        }
        Err(e) => {
            log::debug!("native unwind at {pc:#x} failed: {e}");
            Step::Lost
        }
    }
}

/// Appends the callers the frame-pointer walk found beyond our last frame. The walk has the
/// same return addresses for the outer frames, so we continue after the first match of our
/// last one; with no match (or no copy at all) the walk is all we have.
fn splice_frame_pointer_tail(frames: &mut Vec<u64>, fp_frames: &[u64]) {
    if frames.len() == 1 {
        if fp_frames.first() == frames.first() {
            frames.extend_from_slice(&fp_frames[1..]);
        }
        return;
    }
    let Some(&last) = frames.last() else { return };
    if let Some(pos) = fp_frames.iter().skip(1).position(|&a| a == last) {
        let tail = &fp_frames[pos + 2..];
        let room = MAX_USER_FRAMES.saturating_sub(frames.len());
        frames.extend(tail.iter().take(room));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_after_the_last_matching_return_address() {
        let mut frames = vec![0x10, 0x20, 0x30];
        splice_frame_pointer_tail(&mut frames, &[0x10, 0x30, 0x40, 0x50]);
        assert_eq!(frames, vec![0x10, 0x20, 0x30, 0x40, 0x50]);
    }

    #[test]
    fn uses_the_frame_pointer_walk_when_nothing_was_copied() {
        let mut frames = vec![0x10];
        splice_frame_pointer_tail(&mut frames, &[0x10, 0x30, 0x40]);
        assert_eq!(frames, vec![0x10, 0x30, 0x40]);
    }

    #[test]
    fn keeps_our_frames_when_the_walks_disagree() {
        let mut frames = vec![0x10, 0x20];
        splice_frame_pointer_tail(&mut frames, &[0x10, 0x99]);
        assert_eq!(frames, vec![0x10, 0x20]);
    }

    #[test]
    fn reads_only_inside_the_copy() {
        let stack: Vec<u8> = (0u8..16).collect();
        let snap = StackSnapshot {
            ip: 0,
            sp: 0x1000,
            bp: 0,
            stack: &stack,
        };
        assert_eq!(
            snap.read_u64(0x1000),
            Some(u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]))
        );
        assert_eq!(
            snap.read_u64(0x1008),
            Some(u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]))
        );
        assert_eq!(snap.read_u64(0x1009), None);
        assert_eq!(snap.read_u64(0xfff), None);
    }
}
