//! Shared helpers for loupe's integration tests. They run the real `loupe` binary as root
//! against real programs (built by `cargo xtask fixtures`) and read what it wrote.
#![allow(dead_code)] // Each test crate uses a different subset.

pub mod gevents;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

/// The loupe binary under test: `LOUPE_BIN` (set by `cargo xtask test`), else the debug build.
pub fn loupe_bin() -> PathBuf {
    let path = std::env::var_os("LOUPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/loupe"));
    assert!(
        path.is_file(),
        "no loupe binary at {} (run `cargo xtask test`)",
        path.display()
    );
    path
}

/// A fixture binary, e.g. `c/split` or `go1.24.11/split`.
pub fn fixture(name: &str) -> PathBuf {
    let root = std::env::var_os("LOUPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"));
    let path = root.join(name);
    assert!(
        path.is_file(),
        "fixture {} is missing (run `cargo xtask fixtures`)",
        path.display()
    );
    path
}

/// The Go versions fixtures are built with, and each one's `go` binary, from
/// `LOUPE_GO_BINARIES` (`1.24.11=/path/to/go,...`, set by `cargo xtask test`).
pub fn go_toolchains() -> Vec<(String, PathBuf)> {
    let list = std::env::var("LOUPE_GO_BINARIES")
        .expect("LOUPE_GO_BINARIES is not set: run the suite with `cargo xtask test`");
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (version, path) = entry
                .split_once('=')
                .expect("LOUPE_GO_BINARIES entries are version=path");
            (version.to_string(), PathBuf::from(path))
        })
        .collect()
}

/// Profiling tests take this lock: they measure CPU shares and sample counts, and on two
/// cores two of them at once would starve each other's workloads.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the `go` binary of a toolchain with the build cache `cargo xtask` uses, so tools
/// such as pprof are built once, not per test.
pub fn go_command(go: &Path) -> Command {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let mut cmd = Command::new(go);
    cmd.env("GOCACHE", target.join("go-cache"))
        .env("GOPATH", target.join("go-path"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod");
    cmd
}

pub fn assert_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "loupe's integration tests load BPF programs: run them as root"
    );
}

/// Runs `loupe ARGS`, asserting it succeeded.
pub fn loupe(args: &[&str]) -> Output {
    let output = Command::new(loupe_bin())
        .args(args)
        .output()
        .expect("run loupe");
    assert!(
        output.status.success(),
        "loupe {args:?} failed: {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts `loupe ARGS` and waits until it reports that sampling has started.
pub fn spawn_loupe(args: &[&str]) -> Child {
    spawn_loupe_keeping_stderr(args).0
}

/// Like [`spawn_loupe`], and also returns the rest of loupe's stderr, joined once it exits.
pub fn spawn_loupe_keeping_stderr(args: &[&str]) -> (Child, std::thread::JoinHandle<String>) {
    spawn_loupe_announcing(args, "loupe: profiling")
}

/// Starts `loupe ARGS` and waits until it prints a line starting with `announce` (its probes
/// are attached then); returns it with the rest of its stderr, joined once it exits.
pub fn spawn_loupe_announcing(
    args: &[&str],
    announce: &str,
) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = Command::new(loupe_bin())
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loupe");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with(announce) => break,
            Some(Ok(_)) => continue,
            other => panic!("loupe {args:?} exited before it announced `{announce}`: {other:?}"),
        }
    }
    // Keep draining stderr so loupe never blocks on a full pipe.
    let rest = std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .map(|l| l + "\n")
            .collect::<String>()
    });
    (child, rest)
}

pub fn wait_success(child: Child, what: &str) {
    let output = child.wait_with_output().expect("wait for loupe");
    assert!(
        output.status.success(),
        "{what}: loupe failed: {}",
        output.status
    );
}

/// One line of folded output: frames root first (the process name is the first), count.
#[derive(Debug, Clone)]
pub struct FoldedStack {
    pub frames: Vec<String>,
    pub count: u64,
}

impl FoldedStack {
    pub fn process(&self) -> &str {
        &self.frames[0]
    }

    pub fn has(&self, function: &str) -> bool {
        self.frames.iter().any(|f| f == function)
    }

    /// The frame just above (rootward of) the first occurrence of `function`.
    pub fn caller_of(&self, function: &str) -> Option<&str> {
        let i = self.frames.iter().position(|f| f == function)?;
        i.checked_sub(1).map(|j| self.frames[j].as_str())
    }
}

pub fn read_folded(path: &Path) -> Vec<FoldedStack> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let (stack, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad folded line {line:?}"));
            FoldedStack {
                frames: stack.split(';').map(str::to_string).collect(),
                count: count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad count in {line:?}")),
            }
        })
        .collect()
}

/// A JSON profile (`-o NAME.json`): the document, and each sample as a stack like a folded
/// line's (root first, the process name first) with its pid.
pub fn read_json(path: &Path) -> (serde_json::Value, Vec<(u32, FoldedStack)>) {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let profile: serde_json::Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let frames = profile["frames"].as_array().expect("frames");
    let name = |id: &serde_json::Value| -> String {
        let frame = id.as_u64().and_then(|i| frames.get(i as usize));
        match frame.and_then(|f| f["function"].as_str()) {
            Some(function) => function.to_string(),
            None => panic!("bad frame reference {id} in {}", path.display()),
        }
    };
    let samples = profile["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            let comm = s["comm"].as_str().expect("comm").to_string();
            let stack = s["stack"].as_array().expect("stack");
            let pid = s["pid"].as_u64().expect("pid") as u32;
            let frames = std::iter::once(comm)
                .chain(stack.iter().rev().map(name))
                .collect();
            let count = s["values"][0].as_u64().expect("sample count (values[0])");
            (pid, FoldedStack { frames, count })
        })
        .collect();
    (profile, samples)
}

/// Samples in `stacks` whose stack satisfies `pred`.
pub fn count_where(stacks: &[FoldedStack], pred: impl Fn(&FoldedStack) -> bool) -> u64 {
    stacks.iter().filter(|s| pred(s)).map(|s| s.count).sum()
}

/// The fixtures' own ground truth: a one-line JSON object of nanosecond counters (the last
/// such line of `stdout`).
pub fn ground_truth(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    ground_truths(stdout)
        .pop()
        .unwrap_or_else(|| panic!("no ground-truth JSON in fixture output {text:?}"))
}

/// Every ground-truth line in `stdout`, in order (several fixtures may share one stdout).
pub fn ground_truths(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad ground truth {line:?}: {e}"))
        })
        .collect()
}

/// A nanosecond counter of a ground-truth object, which must be there.
pub fn truth_ns(truth: &serde_json::Value, key: &str) -> f64 {
    truth[key]
        .as_f64()
        .unwrap_or_else(|| panic!("ground truth lacks {key}: {truth}"))
}

/// How far a sample total may stray from the workload's CPU time x the sampling frequency.
/// cpu-clock sampling fires once per 1/HZ of CPU time on each CPU, so a program's samples are
/// its CPU time x HZ up to phase quantization (at most a sample per process and function
/// boundary) and whatever the sampler loses or counts twice: 10% absorbs the first and
/// catches any systematic loss.
pub const TOTAL_TOLERANCE: f64 = 0.10;

/// Asserts that `samples` is `cpu_ns` of CPU time x `hz`, within [`TOTAL_TOLERANCE`].
pub fn assert_total(samples: u64, cpu_ns: f64, hz: u32, what: &str) {
    assert!(
        cpu_ns > 0.0,
        "{what}: the workload reports no CPU time ({cpu_ns} ns)"
    );
    let expected = cpu_ns * f64::from(hz) / 1e9;
    let off = samples as f64 / expected - 1.0;
    assert!(
        off.abs() <= TOTAL_TOLERANCE,
        "{what}: {samples} samples, expected {expected:.0} ({:.1} ms of CPU x {hz} Hz) within \
         {:.0}%: off by {:+.1}%",
        cpu_ns / 1e6,
        TOTAL_TOLERANCE * 100.0,
        off * 100.0
    );
}

/// CPU time a live (or not yet reaped) process has had, from /proc/PID/schedstat.
pub fn schedstat_cpu_ns(pid: u32) -> f64 {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad {path}: {text:?}"))
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub const SETTLE: Duration = Duration::from_millis(300);
