//! User stacks as every collector that copies them records them: unwound against the live
//! process's mappings into raw frames (kernel stacks need no process and are read per
//! collector).

use loupe_ebpf::COMM_LEN;

use crate::{
    aggregate::RawFrame,
    process::{ProcessTable, UserAddress},
    unwind::{self, StackSnapshot},
};

/// The user frames of a copied stack of thread `tid` of `pid`, leaf first, and the name to
/// file them under. `fp_frames` is the kernel's frame-pointer walk, used past the copy and
/// when the process cannot be read.
pub fn user_frames_of(
    processes: &mut ProcessTable,
    pid: u32,
    tid: u32,
    thread_comm: &[u8; COMM_LEN],
    snapshot: &StackSnapshot<'_>,
    fp_frames: &[u64],
) -> (Vec<RawFrame>, String) {
    let thread_name = comm_str(thread_comm);
    // The leader thread named otherwise than the process we loaded: a sample taken before
    // its exec (a fork child still running its parent's code), which the current mappings
    // would misname.
    let before_exec = tid == pid && !processes.named(pid, &thread_name);
    let mut addrs = if before_exec {
        None
    } else {
        processes
            .get(pid)
            .map(|process| unwind::unwind(process, snapshot, fp_frames))
    };
    // An address outside the known mappings: a library mapped since we read them.
    if let Some(unwound) = &addrs {
        if processes.refresh_for(pid, unwound) {
            addrs = processes
                .get(pid)
                .map(|p| unwind::unwind(p, snapshot, fp_frames));
        }
    }
    let frames = match (addrs, processes.get(pid)) {
        (Some(addrs), Some(process)) => user_frames(&addrs, |a| process.resolve(a)),
        _ => user_frames(fp_frames, UserAddress::unknown),
    };
    let comm = if before_exec {
        thread_name
    } else {
        process_name(processes, pid, thread_comm)
    };
    (frames, comm)
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
