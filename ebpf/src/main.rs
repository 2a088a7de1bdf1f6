//! loupe's kernel programs, one module per capability (`probes/`), sharing the
//! `#[repr(C)]` types of the library (`loupe_ebpf::*`) with userspace.
#![no_std]
#![no_main]
// Atomic adds (the BPF target has no `AtomicU64`): see probes/sched.rs.
#![feature(core_intrinsics)]
#![allow(internal_features)]

#[path = "probes/counters.rs"]
mod counters;
#[path = "probes/cpu.rs"]
mod cpu;
#[path = "probes/goroutines.rs"]
mod goroutines;
#[path = "probes/sched.rs"]
mod sched;
#[path = "probes/targets.rs"]
mod targets;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
