//! User-stack unwinding from a copy of the stack taken at sample time.
//!
//! Go code is unwound with the frame sizes in its pclntab (exact even in frameless leaves);
//! native code with `.eh_frame` CFI through framehop (exact without frame pointers, as in
//! Debian's glibc). A stack that cannot be followed to its root (the copy ended, or no unwind
//! information) is reported as truncated, never completed with guesses: the kernel's
//! frame-pointer walk invents callers for code built without frame pointers.

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    FrameAddress, Unwinder,
};

use crate::{
    modules::SectionBytes,
    process::{Process, ProcessTable},
};

/// Deepest user stack loupe reports (deeper ones end in a truncation mark): compilers and
/// recursive code go well past the hundred or so frames of shallow services.
pub const MAX_USER_FRAMES: usize = 1024;

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
    /// Memory from another address upward, for threads whose outer frames are on a second
    /// stack (see `SampleHeader::region2_addr`).
    pub region2: Option<(u64, &'a [u8])>,
    /// Whether the unwind read from `region2` (one it never reads is stale: the thread id
    /// was reused, or the thread left the stack it switched to).
    pub region2_used: std::cell::Cell<bool>,
}

impl<'a> StackSnapshot<'a> {
    /// The snapshot of a copied sample: `copy` holds the stack at `sp`, then the second
    /// region's bytes, if any.
    pub fn of_sample(header: &loupe_ebpf::cpu::SampleHeader, copy: &'a [u8]) -> Self {
        let second = (header.region2_len as usize).min(copy.len());
        let (stack, region2) = copy.split_at(copy.len() - second);
        StackSnapshot {
            ip: header.regs.ip,
            sp: header.regs.sp,
            bp: header.regs.bp,
            stack,
            region2: (second > 0).then_some((header.region2_addr, region2)),
            region2_used: Default::default(),
        }
    }

    fn read_u64(&self, addr: u64) -> Option<u64> {
        read_at(self.sp, self.stack, addr).or_else(|| {
            let (start, bytes) = self.region2?;
            let value = read_at(start, bytes, addr)?;
            self.region2_used.set(true);
            Some(value)
        })
    }
}

fn read_at(start: u64, bytes: &[u8], addr: u64) -> Option<u64> {
    let offset = usize::try_from(addr.checked_sub(start)?).ok()?;
    let bytes = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A user stack, leaf first: the instruction pointer, then return addresses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UserStack {
    pub frames: Vec<u64>,
    /// The root was not reached: callers beyond the last frame are unknown.
    pub truncated: bool,
    /// The stack address the unwind stopped at for want of its bytes, above the copy: the
    /// memory to ask the kernel for in the thread's next samples.
    pub missing: Option<u64>,
}

/// Unwinds `snapshot` in `process` as far as the copied stack and the unwind information
/// allow.
pub fn unwind(process: &mut Process, snapshot: &StackSnapshot) -> UserStack {
    let mut frames = vec![snapshot.ip];
    let mut regs = UnwindRegsX86_64::new(snapshot.ip, snapshot.sp, snapshot.bp);
    let mut complete = false;
    let mut missing = None;
    while frames.len() < MAX_USER_FRAMES {
        let pc = regs.ip();
        let is_leaf = frames.len() == 1;
        let step = match go_step(process, pc, &regs, snapshot) {
            Some(step) => step,
            None => native_step(process, pc, is_leaf, regs, snapshot),
        };
        match step {
            Step::Caller { ip, sp, bp } => {
                if ip == 0 {
                    complete = true; // A zero return address ends a stack.
                    break;
                }
                if ip < NULL_PAGE_END {
                    // Other null-page values come from Go frames that are not calls (signal
                    // trampolines such as runtime.sigreturn); anywhere else they are garbage
                    // read through a wrong rule, and the unwind cannot go on.
                    let in_go = process
                        .code_at(pc)
                        .and_then(|c| c.module.as_ref())
                        .is_some_and(|m| m.go.is_some());
                    complete = in_go;
                    if !in_go {
                        log::debug!(
                            "unwind at {pc:#x} ({}): caller {ip:#x} is no code",
                            describe_pc(process, pc)
                        );
                    }
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
            Step::Lost { missing: m } => {
                // Above the stack copy; and when a second region helped, below it (a
                // shortfall at its end is the room, not the place, being wrong).
                let region2 = match snapshot.region2 {
                    Some((start, _)) if snapshot.region2_used.get() => start,
                    _ => u64::MAX,
                };
                missing = m.filter(|&a| a > snapshot.sp && a < region2);
                break;
            }
        }
    }
    UserStack {
        frames,
        truncated: !complete,
        missing,
    }
}

/// Unwinds a sample of process `pid`, rereading the process's mappings when the stack leads
/// into code mapped since they were read. None if the process was never read (it exited
/// first).
pub fn unwind_in(
    processes: &mut ProcessTable,
    pid: u32,
    snapshot: &StackSnapshot,
) -> Option<UserStack> {
    let mut stack = unwind(processes.get(pid)?, snapshot);
    if processes.refresh_for(pid, &stack.frames) {
        stack = unwind(processes.get(pid)?, snapshot);
    }
    // A return address in no mapping is no code: the unwind went wrong there, so it ends
    // before it rather than naming garbage.
    let process = processes.get(pid)?;
    while stack.frames.len() > 1
        && stack
            .frames
            .last()
            .is_some_and(|&a| process.code_at(a).is_none())
    {
        stack.frames.pop();
        stack.truncated = true;
    }
    Some(stack)
}

/// The user stack of a sample whose stack was not copied: its leaf only.
pub fn leaf_only(ip: u64) -> UserStack {
    UserStack {
        frames: vec![ip],
        truncated: true,
        missing: None,
    }
}

enum Step {
    Caller {
        ip: u64,
        sp: u64,
        bp: u64,
    },
    /// The outermost frame of the stack.
    Root,
    /// Cannot go further (the copy ended, or no unwind information); `missing`: the
    /// address whose bytes were not copied, if that was why.
    Lost {
        missing: Option<u64>,
    },
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
        return Some(Step::Lost { missing: None });
    };
    let slot = regs.sp().wrapping_add(delta);
    let Some(ip) = snapshot.read_u64(slot) else {
        return Some(Step::Lost {
            missing: Some(slot),
        });
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
            None => return Step::Lost { missing: None },
        }
    };
    let mut missing = None;
    let mut read = |addr: u64| {
        snapshot.read_u64(addr).ok_or_else(|| {
            missing.get_or_insert(addr);
        })
    };
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
                "native unwind at {pc:#x} ({}): root (sp {:#x}, copy {} bytes)",
                describe_pc(process, pc),
                regs.sp(),
                snapshot.stack.len()
            );
            Step::Root
        }
        Err(_) if in_entry_code(process, pc) => Step::Root,
        Err(e) => {
            log::debug!(
                "native unwind at {pc:#x} ({}) failed: {e} (copy {:#x}..{:#x})",
                describe_pc(process, pc),
                snapshot.sp,
                snapshot.sp + snapshot.stack.len() as u64
            );
            Step::Lost { missing }
        }
    }
}

/// `module+0xsvma`, for debug messages.
fn describe_pc(process: &Process, pc: u64) -> String {
    match process.code_at(pc) {
        Some(code) => format!(
            "{}+{:#x}",
            code.module.as_ref().map_or("?", |m| m.name.as_str()),
            pc.wrapping_sub(code.base_avma)
        ),
        None => "no mapping".into(),
    }
}

/// Bytes after an ELF entry point that belong to the entry code (the dynamic loader's
/// `_start` and `_dl_start_user` are 61 bytes of assembly in glibc 2.36).
const ENTRY_CODE_LEN: u64 = 64;

/// Whether `pc` is in a module's entry code, which nothing calls: the process's first
/// frame. The dynamic loader's entry code has no unwind information saying so, unlike
/// the executable's `_start`.
fn in_entry_code(process: &Process, pc: u64) -> bool {
    let Some(code) = process.code_at(pc) else {
        return false;
    };
    let Some(module) = &code.module else {
        return false;
    };
    let svma = pc.wrapping_sub(code.base_avma);
    module.entry != 0 && (module.entry..module.entry + ENTRY_CODE_LEN).contains(&svma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_inside_the_copy() {
        let stack: Vec<u8> = (0u8..16).collect();
        let snap = StackSnapshot {
            ip: 0,
            sp: 0x1000,
            bp: 0,
            stack: &stack,
            region2: Some((0x8000, &stack[..8])),
            region2_used: Default::default(),
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
        assert!(!snap.region2_used.get());
        assert_eq!(
            snap.read_u64(0x8000),
            Some(u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]))
        );
        assert_eq!(snap.read_u64(0x8001), None);
        assert!(snap.region2_used.get());
    }
}
