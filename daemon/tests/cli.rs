//! The CLI's contract for bad input and interruptions: a clear message naming the problem,
//! a non-zero exit, never a panic; Ctrl-C still writes the profile.

mod common;

use std::process::{Command, Output};

use common::*;

fn run_loupe(args: &[&str]) -> Output {
    Command::new(loupe_bin())
        .args(args)
        .output()
        .expect("run loupe")
}

/// Runs loupe as user `nobody` with no capabilities.
fn run_unprivileged(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(loupe_bin())
        .args(args)
        .output()
        .expect("run setpriv (util-linux)")
}

fn assert_fails_with(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "stderr lacks {expected:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "loupe panicked:\n{stderr}");
}

#[test]
fn unknown_pid_is_named() {
    assert_fails_with(
        &run_loupe(&["profile", "-p", "4194304", "-d", "1s"]),
        "no process with PID 4194304",
    );
}

#[test]
fn missing_privileges_are_named_with_the_fix() {
    assert_root();
    let out = run_unprivileged(&["profile", "--all", "-d", "1s"]);
    assert_fails_with(&out, "needs root");
    assert_fails_with(&out, "sudo");
    // `check` reports on stdout and fails; it has nothing to say on stderr but no panic.
    let check = run_unprivileged(&["check"]);
    assert!(!check.status.success(), "check passed without privileges");
    let check_stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check_stderr.contains("panicked"),
        "loupe check panicked:\n{check_stderr}"
    );
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("FAIL root / capabilities"),
        "check output:\n{report}"
    );
    assert!(
        report.contains("CPU profiling: NOT available"),
        "check output:\n{report}"
    );
}

#[test]
fn bad_values_get_clear_errors() {
    assert_fails_with(
        &run_loupe(&["profile", "--all", "-d", "10parsecs"]),
        "is not a duration like 500ms, 10s or 2m",
    );
    assert_fails_with(
        &run_loupe(&["profile", "--all", "-d", "0s"]),
        "more than zero",
    );
    assert_fails_with(&run_loupe(&["profile", "--all", "-F", "0"]), "--frequency");
    assert_fails_with(
        &run_loupe(&["profile", "--all", "-F", "lots"]),
        "--frequency",
    );
    assert_fails_with(&run_loupe(&["profile", "-d", "1s"]), "required");
    assert_fails_with(
        &run_loupe(&["profile", "--all", "-o", "profile.docx"]),
        "cannot tell the output format",
    );
    let dir = temp_dir();
    let unwritable = dir.path().join("no-such-dir/out.svg");
    assert_fails_with(
        &run_loupe(&[
            "profile",
            "--all",
            "-o",
            unwritable.to_str().expect("utf-8"),
        ]),
        "cannot write the output file",
    );
}

#[test]
fn a_command_that_cannot_start_is_named() {
    assert_root();
    assert_fails_with(
        &run_loupe(&["profile", "-d", "1s", "--", "/nonexistent/program"]),
        "cannot start /nonexistent/program",
    );
}

#[test]
fn check_reports_every_feature_and_passes_here() {
    assert_root();
    let out = loupe(&["check", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("check --json is JSON");
    assert_eq!(report["cpu_profiling"], true, "{report:#}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for expected in [
        "root / capabilities",
        "kernel BTF",
        "tracefs",
        "perf events (cpu-clock)",
        "sched_process_fork",
        "kprobes (not required)",
    ] {
        assert!(
            names.contains(&expected),
            "check lacks {expected}: {names:?}"
        );
    }
    // kprobes are absent on these kernels and nothing may require them.
    let kprobes = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "kprobes (not required)")
        .expect("kprobes");
    assert_eq!(kprobes["required_for_cpu"], false);
}

#[test]
fn ctrl_c_ends_early_and_still_writes_the_profile() {
    assert_root();
    let _serial = serial();
    let dir = temp_dir();
    // JSON, which carries pids: other programs on the host may be named split too.
    let out = dir.path().join("interrupted.json");
    let hz: u32 = 199;
    let loupe = spawn_loupe(&[
        "profile",
        "--all",
        "-F",
        &hz.to_string(),
        "-d",
        "60s",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    let started = std::time::Instant::now();
    // Something to sample: an idle host may give no sample at all in a second.
    let workload = Command::new(fixture("c/split"))
        .arg("1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run split");
    let workload_pid = workload.id();
    let workload = workload.wait_with_output().expect("wait for split");
    assert!(workload.status.success());
    unsafe { libc::kill(loupe.id() as i32, libc::SIGINT) };
    wait_success(loupe, "interrupted profile");
    assert!(
        started.elapsed().as_secs() < 30,
        "Ctrl-C did not end the profile early"
    );
    let (_, samples) = read_json(&out);
    let stacks: Vec<FoldedStack> = samples
        .into_iter()
        .filter(|(pid, _)| *pid == workload_pid)
        .map(|(_, s)| s)
        .collect();
    // Every sample of the workload, which ran entirely before Ctrl-C, is in the file.
    let truth = ground_truth(&workload.stdout);
    let cpu_ns = truth_ns(&truth, "hot_three_ns") + truth_ns(&truth, "cold_one_ns");
    let split_samples = count_where(&stacks, |s| s.has("hot_three") || s.has("cold_one"));
    assert_total(
        split_samples,
        cpu_ns,
        hz,
        "profile written after Ctrl-C: split's hot_three+cold_one",
    );
}

#[test]
fn top_table_is_the_default_output() {
    assert_root();
    let _serial = serial();
    let out = loupe(&[
        "profile",
        "-F",
        "499",
        "-d",
        "10s",
        "--",
        fixture("c/split").to_str().expect("utf-8"),
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("flat%") && stdout.contains("cum%"),
        "no top table:\n{stdout}"
    );
    assert!(
        stdout.contains("hot_three"),
        "top table lacks the hot function:\n{stdout}"
    );
}
