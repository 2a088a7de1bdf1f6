//! Surviving files truncated while mapped.
//!
//! loupe maps the binaries it reads (its own module mappings, and blazesym maps them again
//! while symbolizing). When such a file is truncated (a library rewritten in place, a build
//! overwriting its output), reading a page past the new end of file raises SIGBUS, whose
//! default action would kill loupe. The handler installed here answers such a fault by
//! mapping a page of zeros over the faulting page and returning, so the read is retried and
//! sees zeros: the parsers over those bytes are all bounds-checked and treat zeros as
//! malformed data. The module is then found changed by [`super::FileStamp`] comparison and its
//! frames are shown as `module+offset`.
//!
//! Only kernel-raised "address beyond the object" faults (`BUS_ADRERR`) are answered;
//! anything else (a hardware memory error, a SIGBUS sent by `kill`) goes to the handler that
//! was installed before (Rust's own, or the default action).

use std::{
    mem::MaybeUninit,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Once, OnceLock,
    },
};

/// Faults answered with zeros since loupe started.
static ANSWERED: AtomicU64 = AtomicU64::new(0);
/// The page size, read once outside the handler (sysconf is not async-signal-safe).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
/// The disposition we replaced, to chain to for faults we do not answer.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: Once = Once::new();

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf and sigaction are called with valid arguments; the handler only
        // makes async-signal-safe calls (mmap, sigaction) and atomic updates.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE_SIZE.store(page as usize, Ordering::Relaxed);
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous = MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, previous.as_mut_ptr()) != 0 {
                log::warn!(
                    "cannot install the SIGBUS handler ({}): a binary truncated while loupe \
                     reads it would end loupe",
                    std::io::Error::last_os_error()
                );
                return;
            }
            let _ = PREVIOUS.set(previous.assume_init());
        }
    });
}

/// How many reads past the end of a truncated file were answered with zeros so far.
pub fn answered() -> u64 {
    ANSWERED.load(Ordering::Relaxed)
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == libc::BUS_ADRERR && addr != 0 {
        let page_size = PAGE_SIZE.load(Ordering::Relaxed);
        let page = addr & !(page_size - 1);
        // SAFETY: replaces exactly the one page that faulted, inside a mapping that exists
        // (the kernel only reports BUS_ADRERR for mapped addresses) and that loupe only
        // reads: a private read-only page of zeros keeps every reader in bounds.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                page_size,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
            return; // the faulting read is retried and now sees zeros
        }
    }
    chain(sig, info, context);
}

/// Hands a fault we do not answer to the previous disposition.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS.get().map(|p| (p.sa_sigaction, p.sa_flags));
    match previous {
        Some((handler, flags)) if handler != libc::SIG_DFL && handler != libc::SIG_IGN => {
            if flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed as an SA_SIGINFO handler.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(handler) };
                f(sig, info, context);
            } else {
                // SAFETY: the previous handler was installed as a plain handler.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                f(sig);
            }
        }
        _ => {
            // Default action: restore it and return; the fault repeats and ends the process
            // as it would have without us.
            // SAFETY: a zeroed sigaction with SIG_DFL is a valid disposition.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write, os::fd::AsRawFd};

    /// A real truncation: map a file, shrink it to nothing, read the mapping.
    #[test]
    fn reads_past_a_truncated_end_see_zeros() {
        install();
        let page = PAGE_SIZE.load(Ordering::Relaxed);
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&vec![0xabu8; 3 * page]).expect("write");
        // SAFETY: a private read-only mapping of a file this test owns.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
        assert_eq!(map[2 * page], 0xab);
        // Truncation removes the file's pages from every mapping, including ours.
        assert_eq!(unsafe { libc::ftruncate(file.as_raw_fd(), page as i64) }, 0);
        let before = answered();
        assert_eq!(map[0], 0xab, "the page before the new end is intact");
        // Without the handler this read ends the test process with SIGBUS.
        let past_end = std::hint::black_box(&map[..])[2 * page + 5];
        assert_eq!(past_end, 0);
        assert!(answered() > before, "the fault was answered by the handler");
        drop(map); // unmapping covers the zero pages too
    }
}
