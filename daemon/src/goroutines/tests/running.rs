//! The goroutines fixture, running: started, its one-line JSON report read, killed when
//! dropped. Shared by the census tests and the CLI tests (daemon/tests/goroutines.rs
//! includes this file by path), so it uses nothing of the crate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// How long the fixture may take to park its goroutines and report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Running {
    pub child: Child,
    pub report: Value,
    /// `clock` before it started and when its report arrived.
    pub started_ns: u64,
    pub reported_ns: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `path ARGS` and reads its report; `clock` stamps the start and the report.
pub fn start(path: &Path, args: &[&str], clock: fn() -> u64) -> Running {
    let started_ns = clock();
    // A binary a test just wrote can be briefly busy (ETXTBSY) while a process another
    // test forked meanwhile still holds its write descriptor.
    let mut attempts = 0;
    let mut child = loop {
        match Command::new(path).args(args).stdout(Stdio::piped()).spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    };
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(REPORT_TIMEOUT).unwrap_or_default();
    let reported_ns = clock();
    let mut running = Running {
        child,
        report: Value::Null,
        started_ns,
        reported_ns,
    };
    running.report = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{}: no report ({e}): {line:?}", path.display()));
    running
}
