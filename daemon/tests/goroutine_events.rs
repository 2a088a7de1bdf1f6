//! `loupe stat --goroutine-events` (uprobes on the Go runtime), run as the real binary
//! against the gevents fixture (fixtures/go/gevents) built by every Go toolchain in
//! xtask/go-toolchains.txt, stripped and with symbols. Ground truth is the fixture's own
//! report of its window: how many goroutines it started (all of which end), the runtime's
//! own `/sched/latencies:seconds` reading over the window, and its computed output.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    thread::JoinHandle,
    time::Duration,
};

use common::*;
use serde_json::Value;

/// How far loupe's mean scheduling latency may be from the runtime's (which samples one
/// wait in eight and reports them in buckets up to 25% wide).
const MEAN_TOLERANCE: f64 = 0.25;

/// Windows run per binary before a mean outside the tolerance fails the test. The runtime's
/// reading is a one-in-eight sample of waits whose tail comes from the host's own scheduling
/// (other programs on two shared cores stall a thread for tens of milliseconds, and every
/// goroutine queued behind it waits as long): now and then the sample's mean strays by more
/// than the tolerance. Counts and output must be right in every window.
const MEAN_ATTEMPTS: usize = 2;

/// Why a window did not match its ground truth.
enum Mismatch {
    /// Only the mean latency, which a second window may settle.
    Mean(String),
    Other(String),
}

/// The fixture's count of short-lived goroutines (`short` in main.go): its output is the
/// sum of their squares.
const SHORT: u64 = 500;

/// A started fixture, waiting for its start line.
struct Fixture {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pid: u32,
}

fn start_fixture(path: &Path, mode: &str) -> Fixture {
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
    Fixture {
        child,
        stdin,
        lines,
        pid,
    }
}

fn next_json(lines: &mut impl Iterator<Item = std::io::Result<String>>, what: &str) -> Value {
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("the fixture ended before {what}"))
        .expect("read the fixture's output");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {line}"))
}

/// Starts `loupe stat --pid P -o report` with `extra` arguments, once its probes are
/// attached; returns it with a thread collecting the rest of its stderr.
fn start_stat(pid: u32, report: &Path, extra: &[&str]) -> (Child, JoinHandle<String>) {
    let pid = pid.to_string();
    let report = report.to_str().expect("utf-8 path");
    let mut args = vec!["stat", "--pid", &pid, "-o", report, "--duration", "60s"];
    args.extend_from_slice(extra);
    spawn_loupe_announcing(&args, "loupe: tracing")
}

/// Ends loupe as Ctrl-C would and returns its JSON report.
fn stop_stat(child: Child, stderr: JoinHandle<String>, report: &Path) -> Value {
    // SAFETY: plain syscall on the pid of a child we have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().expect("wait for loupe");
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        output.status.success(),
        "loupe stat failed: {}\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(report).unwrap_or_default();
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("loupe's report is not JSON ({e}): {text}\n{stderr}"))
}

/// Closes the fixture's stdin and checks it ended as it does untraced: "bye", exit 0.
fn finish_fixture(fixture: Fixture) {
    let Fixture {
        mut child,
        stdin,
        lines,
        ..
    } = fixture;
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait for the fixture");
    assert!(status.success(), "the traced fixture failed: {status}");
    assert_eq!(rest, ["bye"], "the traced fixture's last output");
}

/// One traced window of `binary`: (the fixture's report, loupe's goroutines section).
fn traced_window(binary: &Path) -> (Value, Value) {
    let dir = temp_dir();
    let report = dir.path().join("stat.json");
    let mut fixture = start_fixture(binary, "window");
    let (loupe, stderr) = start_stat(fixture.pid, &report, &["--goroutine-events"]);
    writeln!(fixture.stdin, "start").expect("start the window");
    let truth = next_json(&mut fixture.lines, "its window report");
    // The last goroutines end microseconds after the fixture's report (they signalled
    // their end first): leave them time on a busy host.
    std::thread::sleep(Duration::from_millis(300));
    let report = stop_stat(loupe, stderr, &report);
    finish_fixture(fixture);
    (truth, report["goroutines"].clone())
}

fn check_window(what: &str, truth: &Value, got: &Value) -> Result<(), Mismatch> {
    let n = |v: &Value, key: &str| {
        v[key]
            .as_u64()
            .ok_or_else(|| Mismatch::Other(format!("{what}: no {key} in {v}")))
    };
    let created = n(truth, "created")?;
    if n(got, "created")? != created || n(got, "exited")? != created {
        return Err(Mismatch::Other(format!(
            "{what}: the fixture created (and ended) {created} goroutines, loupe saw {got}"
        )));
    }
    let sum = truth["sum_of_squares"].as_u64().unwrap_or(0);
    let want_sum: u64 = (0..SHORT).map(|i| i * i).sum();
    if sum != want_sum {
        return Err(Mismatch::Other(format!(
            "{what}: the traced program computed {sum}, not {want_sum}"
        )));
    }
    let latency = &got["sched_latency"];
    let runtime_count = n(truth, "runtime_latency_count")?;
    let runtime_mean = truth["runtime_latency_mean_ns"].as_f64().unwrap_or(0.0);
    let (count, mean) = (n(latency, "count")?, n(latency, "mean_ns")? as f64);
    // The runtime times one wait in eight; loupe times each one.
    if runtime_count < 100 || count < runtime_count {
        return Err(Mismatch::Other(format!(
            "{what}: {count} waits timed by loupe, {runtime_count} sampled by the runtime"
        )));
    }
    if (mean - runtime_mean).abs() > runtime_mean * MEAN_TOLERANCE {
        return Err(Mismatch::Mean(format!(
            "{what}: mean scheduling latency {mean} ns, the runtime's {runtime_mean:.0} ns"
        )));
    }
    if n(latency, "p50_ns")? > n(latency, "p99_ns")? {
        return Err(Mismatch::Other(format!("{what}: p50 above p99: {latency}")));
    }
    eprintln!(
        "{what}: {created} created/exited; mean latency {mean} ns vs runtime {runtime_mean:.0} ns \
         ({count} waits, runtime sampled {runtime_count})"
    );
    Ok(())
}

#[test]
fn goroutine_events_match_the_runtime_for_every_go_version() {
    assert_root();
    let _serial = serial();
    let mut failures = Vec::new();
    for (version, _) in go_toolchains() {
        for name in ["gevents", "gevents.debug"] {
            let what = format!("go{version}/{name}");
            let binary = fixture(&what);
            for attempt in 1..=MEAN_ATTEMPTS {
                let (truth, got) = traced_window(&binary);
                match check_window(&what, &truth, &got) {
                    Ok(()) => break,
                    Err(Mismatch::Mean(e)) if attempt < MEAN_ATTEMPTS => {
                        eprintln!("{e} (attempt {attempt}, trying another window)")
                    }
                    Err(Mismatch::Mean(e) | Mismatch::Other(e)) => {
                        failures.push(e);
                        break;
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn goroutine_events_refuse_a_process_that_is_not_go() {
    assert_root();
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    let pid = sleeper.id().to_string();
    let output = Command::new(loupe_bin())
        .args(["stat", "--pid", &pid, "--goroutine-events", "-d", "1s"])
        .output()
        .expect("run loupe");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "loupe accepted a non-Go process");
    assert!(
        stderr.contains(&format!("process {pid}")) && stderr.contains("is not a Go program"),
        "{stderr}"
    );
}

#[test]
fn goroutine_events_need_pids() {
    assert_root();
    let output = Command::new(loupe_bin())
        .args(["stat", "--all", "--goroutine-events", "-d", "1s"])
        .output()
        .expect("run loupe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("name them with --pid"), "{stderr}");
}
