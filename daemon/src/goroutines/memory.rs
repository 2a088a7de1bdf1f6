//! Reading another process's memory without stopping it: `process_vm_readv`, or
//! `/proc/PID/mem` where that syscall is unavailable (seccomp, old kernels). Reads never
//! write, never attach (no ptrace stop), and are short: the target keeps running.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::GoroutineError;

/// Largest single read we ever issue (a goroutine stack copy); bounds memory use against
/// garbage lengths.
pub const MAX_READ: usize = 1 << 20;

/// Read-only view of a live process's address space.
pub struct Memory {
    pid: u32,
    /// Opened lazily, on the first `process_vm_readv` that fails with ENOSYS/EPERM.
    mem_file: std::sync::OnceLock<Option<File>>,
}

/// Why one read failed. Only `Gone` ends a census; the others mark one entry as garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The process no longer exists.
    Gone,
    /// Nothing (or not all of it) is mapped there.
    Unmapped,
    /// Not allowed to read that process (needs root or CAP_SYS_PTRACE).
    Denied,
}

impl Memory {
    pub fn new(pid: u32) -> Memory {
        Memory {
            pid,
            mem_file: std::sync::OnceLock::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fills `buf` from `addr`; partial reads are failures.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if buf.is_empty() {
            return Ok(());
        }
        if buf.len() > MAX_READ || addr.checked_add(buf.len() as u64).is_none() {
            return Err(ReadError::Unmapped);
        }
        match self.vm_readv(addr, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(ReadError::Unmapped),
            Err(e) => match e.raw_os_error() {
                Some(libc::ESRCH) => Err(ReadError::Gone),
                Some(libc::EFAULT) | Some(libc::EIO) => Err(ReadError::Unmapped),
                // ENOSYS (no such syscall), EPERM (blocked by a policy that still lets
                // root read /proc/PID/mem): fall back to the file.
                _ => self.read_mem_file(addr, buf),
            },
        }
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn vm_readv(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which we own mutably for the call; the remote
        // iovec is only an address in the other process, which the kernel checks.
        let n =
            unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn read_mem_file(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let file = self
            .mem_file
            .get_or_init(|| File::open(format!("/proc/{}/mem", self.pid)).ok());
        let Some(file) = file else {
            return Err(match self.gone_or_unmapped() {
                ReadError::Unmapped => ReadError::Denied,
                e => e,
            });
        };
        match file.read_exact_at(buf, addr) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.gone_or_unmapped()),
        }
    }

    fn gone_or_unmapped(&self) -> ReadError {
        if std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
            ReadError::Unmapped
        } else {
            ReadError::Gone
        }
    }

    /// The census-level error for a read that failed while reading `what`.
    pub fn error(&self, e: ReadError, what: &'static str) -> GoroutineError {
        match e {
            ReadError::Gone => GoroutineError::ProcessExited { pid: self.pid },
            ReadError::Unmapped => GoroutineError::Unreadable {
                pid: self.pid,
                what,
            },
            ReadError::Denied => GoroutineError::PermissionDenied { pid: self.pid },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_refuses_unmapped() {
        let value: u64 = 0x1234_5678_9abc_def0;
        let mem = Memory::new(std::process::id());
        let addr = &value as *const u64 as u64;
        assert_eq!(mem.read_u64(addr), Ok(value));
        assert_eq!(mem.read_u64(8), Err(ReadError::Unmapped));
        assert_eq!(mem.read_u64(u64::MAX - 3), Err(ReadError::Unmapped));
        let mut huge = vec![0u8; MAX_READ + 1];
        assert_eq!(mem.read(addr, &mut huge), Err(ReadError::Unmapped));
        // The /proc/PID/mem path reads the same bytes.
        let mut b = [0u8; 8];
        mem.read_mem_file(addr, &mut b)
            .expect("read /proc/self/mem");
        assert_eq!(u64::from_le_bytes(b), value);
    }
}
