//! Launching a command that must be probed before it runs: uprobes scoped to one process
//! need its pid, which exists only after the fork, and must be in place before the exec (a
//! Go runtime starts scheduling goroutines within its first milliseconds). The child is
//! held between fork and exec, told to go on once the session has attached.

use std::{
    ffi::OsStr,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};

use crate::engine::Session;

/// Starts `command`, holding it after its fork until `session` has attached to its pid.
/// If attaching fails, the command never runs and the error is returned.
pub fn spawn_held_before_exec(
    mut command: tokio::process::Command,
    session: &Session,
) -> anyhow::Result<tokio::process::Child> {
    // started: child -> loupe, its pid once forked; go: loupe -> child, one byte to exec.
    let (started_rx, started_tx) = pipe()?;
    let (go_rx, go_tx) = pipe()?;
    let (child_started_tx, child_go_rx) = (started_tx.as_raw_fd(), go_rx.as_raw_fd());
    let (child_started_rx, child_go_tx) = (started_rx.as_raw_fd(), go_tx.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (close, getpid, write, read) on descriptors it inherited.
    unsafe {
        command.pre_exec(move || {
            // Without loupe's ends, the child sees end-of-file if loupe gives up.
            libc::close(child_started_rx);
            libc::close(child_go_tx);
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(child_started_tx, pid.as_ptr().cast(), pid.len()) != 4 {
                return Err(io::Error::last_os_error());
            }
            let mut go = 0u8;
            if libc::read(child_go_rx, (&mut go as *mut u8).cast(), 1) != 1 {
                return Err(io::Error::other("loupe could not attach its probes"));
            }
            Ok(())
        });
    }
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|scope| {
        // std's spawn returns only after the exec, so it runs beside the attach.
        let spawner = scope.spawn(move || {
            let _context = runtime.enter();
            command.spawn()
        });
        let pid = loop {
            match read_pid(&started_rx, Duration::from_millis(50))? {
                Some(pid) => break pid,
                None if spawner.is_finished() => {
                    return match spawner.join() {
                        Ok(Err(e)) => Err(e.into()),
                        _ => bail!("the command ended before it could be probed"),
                    };
                }
                None => continue,
            }
        };
        let attached = session
            .command_started(pid)
            .with_context(|| format!("attaching to the command (pid {pid})"));
        if attached.is_ok() {
            // SAFETY: writes one byte from a live u8 to a pipe we own.
            unsafe { libc::write(go_tx.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
        // Without the byte, closing our end makes the child's read fail: it exits unrun.
        drop(go_tx);
        let child = spawner
            .join()
            .map_err(|_| anyhow::anyhow!("the thread starting the command panicked"))?;
        attached?;
        Ok(child?)
    })
}

/// A pipe whose ends close at exec: (read, write).
fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child's pid from `fd` if it arrives within `timeout`.
fn read_pid(fd: &OwnedFd, timeout: Duration) -> anyhow::Result<Option<u32>> {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
    if ready <= 0 {
        return Ok(None);
    }
    let mut pid = [0u8; 4];
    // SAFETY: reads at most 4 bytes into a live array (a pipe write of 4 bytes is atomic).
    let n = unsafe { libc::read(fd.as_raw_fd(), pid.as_mut_ptr().cast(), 4) };
    if n != 4 {
        // End of file: the child failed before it could tell its pid.
        return Ok(None);
    }
    Ok(Some(u32::from_ne_bytes(pid)))
}

/// The file `execvp` runs for `program`: itself if it names a path, else the first
/// executable file of that name in `PATH`.
pub fn resolve_executable(program: &OsStr) -> Option<PathBuf> {
    let path = Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        return path.is_file().then(|| path.to_path_buf());
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_resolve_as_execvp_finds_them() {
        let sh = resolve_executable(OsStr::new("sh")).expect("sh is in PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        // A path is taken as it is, and only if it is a file.
        assert_eq!(
            resolve_executable(sh.as_os_str()).as_deref(),
            Some(sh.as_path())
        );
        assert_eq!(resolve_executable(OsStr::new("/nonexistent/loupe-x")), None);
        assert_eq!(
            resolve_executable(OsStr::new("loupe-no-such-command")),
            None
        );
        assert_eq!(resolve_executable(OsStr::new("/")), None);
    }
}
