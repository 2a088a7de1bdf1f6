//! Driving the gevents fixture (fixtures/go/gevents): it prints `{"pid": N, "ready": true}`,
//! waits for a line on stdin to run its window, prints its JSON report, then idles until
//! stdin closes and prints `bye` (mode `steady` answers `samples` lines meanwhile).

use std::{
    io::{BufRead, BufReader, Lines, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde_json::Value;

/// A started fixture, waiting for its start line.
pub struct Gevents {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub pid: u32,
}

impl Gevents {
    /// Starts `path` in `mode` and waits for its ready line.
    pub fn start(path: &Path, mode: &str) -> Gevents {
        let mut child = Command::new(path)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = next_json(&mut lines, "its ready line");
        let pid = ready["pid"].as_u64().expect("pid") as u32;
        Gevents {
            child,
            stdin,
            lines,
            pid,
        }
    }

    /// Runs the window and returns the fixture's report of it.
    pub fn run_window(&mut self) -> Value {
        self.ask("start", "its window report")
    }

    /// Sends `line` and returns the fixture's JSON answer (`what` names it in failures).
    pub fn ask(&mut self, line: &str, what: &str) -> Value {
        writeln!(self.stdin, "{line}").unwrap_or_else(|e| panic!("send {line:?}: {e}"));
        next_json(&mut self.lines, what)
    }

    /// Closes stdin: the fixture must say `bye` and exit 0 (a traced program keeps working).
    pub fn finish(self) {
        let Gevents {
            mut child,
            stdin,
            lines,
            ..
        } = self;
        drop(stdin);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().expect("wait for the fixture");
        assert!(status.success(), "the fixture failed: {status}");
        assert_eq!(rest, ["bye"], "the fixture's last output");
    }

    /// Ends the fixture without its window (a run that only needed it started).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next stdout line of the fixture, as JSON (`what` names it in failures).
pub fn next_json(lines: &mut impl Iterator<Item = std::io::Result<String>>, what: &str) -> Value {
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("the fixture ended before {what}"))
        .expect("read the fixture's output");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {line}"))
}
