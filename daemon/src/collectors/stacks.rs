//! User stacks as every collector that copies them records them: unwound against the live
//! process's mappings into raw frames (kernel stacks need no process and are read per
//! collector).

use loupe_ebpf::COMM_LEN;

use crate::{
    aggregate::RawFrame,
    process::{ProcessTable, UserAddress},
    unwind::{self, StackSnapshot},
};

/// The frame that ends a user stack that could not be followed to its root: its callers
/// are unknown, and never guessed (a frame-pointer walk invents them for code built
/// without frame pointers).
pub const TRUNCATED: &str = "[truncated]";

/// A copied stack, unwound.
pub struct CopiedStack {
    /// User frames, leaf first, ending in [`TRUNCATED`] when the root was not reached.
    pub frames: Vec<RawFrame>,
    /// The name to file the stack under.
    pub comm: String,
    /// The stack address the unwind stopped at for want of its bytes, above the copy (see
    /// `unwind::UserStack::missing`).
    pub missing: Option<u64>,
}

/// The user frames of a copied stack of thread `tid` of `pid`, and the name to file them
/// under.
pub fn user_frames_of(
    processes: &mut ProcessTable,
    pid: u32,
    tid: u32,
    thread_comm: &[u8; COMM_LEN],
    snapshot: &StackSnapshot<'_>,
) -> CopiedStack {
    let thread_name = comm_str(thread_comm);
    // The leader thread named otherwise than the process we loaded: a sample taken before
    // its exec (a fork child still running its parent's code), which the current mappings
    // would misname.
    let before_exec = tid == pid && !processes.named(pid, &thread_name);
    let user = match before_exec {
        true => None,
        false => unwind::unwind_in(processes, pid, snapshot),
    };
    let (mut frames, truncated, missing) = match (user, processes.get(pid)) {
        (Some(user), Some(process)) => (
            user_frames(&user.frames, |a| process.resolve(a)),
            user.truncated,
            user.missing,
        ),
        _ => {
            let leaf = unwind::leaf_only(snapshot.ip);
            (user_frames(&leaf.frames, UserAddress::unknown), true, None)
        }
    };
    if truncated {
        frames.push(RawFrame::Synthetic(TRUNCATED));
    }
    let comm = if before_exec {
        thread_name
    } else {
        process_name(processes, pid, thread_comm)
    };
    CopiedStack {
        frames,
        comm,
        missing,
    }
}

/// The group leader's name when known (threads may be named otherwise), else the thread's.
pub fn process_name(processes: &ProcessTable, pid: u32, thread_comm: &[u8; COMM_LEN]) -> String {
    match processes.comm(pid) {
        Some(comm) => comm.to_string(),
        None => comm_str(thread_comm),
    }
}

/// A kernel `comm` (NUL-padded) as text.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// Raw frames for user addresses, leaf first: return addresses are looked up one byte back,
/// inside the call instruction.
pub fn user_frames(addrs: &[u64], resolve: impl Fn(u64) -> UserAddress) -> Vec<RawFrame> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| RawFrame::User(resolve(if i == 0 { a } else { a.wrapping_sub(1) })))
        .collect()
}
