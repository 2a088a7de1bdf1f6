//! Scheduling: off-CPU profiles and `loupe stat`, against the programs' own clocks and the
//! kernel's `/proc/PID/schedstat`.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::*;

/// Runs loupe with `args`, feeding `stdin` to the launched command.
fn loupe_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(loupe_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loupe");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for loupe")
}

fn within(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= want * tolerance
}

#[test]
fn offcpu_time_is_split_between_its_blocking_functions_as_the_program_measured() {
    assert_root();
    let _serial = serial();
    let dir = temp_dir();
    let out = dir.path().join("offcpu.folded");
    let result = loupe_with_stdin(
        &[
            "profile",
            "--type",
            "offcpu",
            "-o",
            out.to_str().expect("utf-8"),
            "--",
            fixture("c/offcpu").to_str().expect("utf-8"),
            "150",
            "250",
            "4",
        ],
        "go\n",
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "loupe failed: {stderr}");
    let truth = ground_truth(&result.stdout);
    // Blocked time, as the program measured it: its wall time in each function less the
    // run-queue wait and CPU time the kernel accounted to the thread there. (Against wall
    // time, a busy host's run-queue waits after each wakeup made this miss by 5-13%.)
    let sleep_ns = truth["sleep_blocked_ns"]
        .as_f64()
        .expect("sleep_blocked_ns");
    let pipe_ns = truth["pipe_blocked_ns"].as_f64().expect("pipe_blocked_ns");
    let stacks = read_folded(&out);
    let main_thread: Vec<_> = stacks
        .iter()
        .filter(|s| s.has("main") && s.process() == "offcpu")
        .cloned()
        .collect();
    let sleeping = count_where(&main_thread, |s| s.has("sleep_part")) as f64;
    let piping = count_where(&main_thread, |s| s.has("pipe_part")) as f64;
    assert!(
        within(sleeping, sleep_ns, 0.05),
        "off-CPU under sleep_part {sleeping} ns vs the program's {sleep_ns} ns\n{stderr}"
    );
    assert!(
        within(piping, pipe_ns, 0.05),
        "off-CPU under pipe_part {piping} ns vs the program's {pipe_ns} ns\n{stderr}"
    );
    // The main thread blocks in these two functions only.
    let blocked = sleep_ns + pipe_ns;
    let total = count_where(&main_thread, |_| true) as f64;
    assert!(
        within(total, blocked, 0.05),
        "main thread off-CPU {total} ns vs its blocked time {blocked} ns"
    );
    // Callers above glibc's wrappers: every blocked stack of the main thread names its caller.
    for s in &main_thread {
        assert!(
            s.has("sleep_part") || s.has("pipe_part") || s.count < 1_000_000,
            "a blocked stack of more than 1 ms without its calling function: {:?}",
            s.frames
        );
    }
    assert!(
        stacks.iter().any(|s| s
            .caller_of("__GI___nanosleep")
            .is_some_and(|c| c == "sleep_ms")),
        "nanosleep's caller is missing"
    );
}

#[test]
fn stat_passes_the_commands_output_and_status_through_and_counts_its_blocked_time() {
    assert_root();
    let _serial = serial();
    let dir = temp_dir();
    let report_path = dir.path().join("stat.json");
    let result = loupe_with_stdin(
        &[
            "stat",
            "-o",
            report_path.to_str().expect("utf-8"),
            "--",
            fixture("c/offcpu").to_str().expect("utf-8"),
            "100",
            "100",
            "3",
        ],
        "go\n",
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // The command's stdout is its own: its two JSON lines, nothing of loupe's.
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.starts_with("{\"pid\":")),
        "{stdout}"
    );
    let truth = ground_truth(&result.stdout);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("JSON");
    assert_eq!(report["pid"], truth["pid"]);
    assert_eq!(report["exited"], true);
    // Two threads block for the whole run (the main thread and the pipe writer) apart from
    // their short CPU bursts: blocked time is at least the main thread's measured blocking.
    let blocked =
        (truth["sleep_ns"].as_f64().expect("sleep")) + truth["pipe_ns"].as_f64().expect("pipe");
    let offcpu = report["sched"]["offcpu_ns"].as_f64().expect("offcpu_ns");
    assert!(offcpu >= blocked * 0.95, "off-CPU {offcpu} vs {blocked}");
    assert!(report["sched"]["voluntary_switches"].as_u64().expect("vol") >= 6);

    // A failing command's status becomes loupe's.
    let failed = Command::new(loupe_bin())
        .args(["stat", "--", "sh", "-c", "exit 7"])
        .output()
        .expect("run loupe");
    assert_eq!(failed.status.code(), Some(7));
}

#[test]
fn runqueue_wait_of_a_hog_matches_the_kernels_schedstat() {
    assert_root();
    let _serial = serial();
    // More busy threads than CPUs, so they queue behind each other.
    let threads = (std::thread::available_parallelism().map_or(2, |n| n.get()) * 2).to_string();
    let mut hogs = Command::new(fixture("c/hogs"))
        .args([threads.as_str(), "8"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hogs");
    std::thread::sleep(SETTLE);
    let pid = hogs.id();
    let schedstat = |pid: u32| -> u64 {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("tasks")
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    let (before, started) = (schedstat(pid), std::time::Instant::now());
    let out = loupe(&["stat", "--json", "--pid", &pid.to_string(), "-d", "2s"]);
    let (after, elapsed) = (schedstat(pid), started.elapsed());
    let _ = hogs.kill();
    let _ = hogs.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // loupe's window starts after it attached and ends before it exits, so compare rates:
    // waiting per second of window, against the kernel's over the time around loupe's run.
    let wait = report["sched"]["runqueue_wait_ns"].as_f64().expect("wait");
    let window = report["duration_ns"].as_f64().expect("duration_ns");
    let kernel_rate = (after - before) as f64 / elapsed.as_nanos() as f64;
    let loupe_rate = wait / window;
    assert!(
        within(loupe_rate, kernel_rate, 0.10),
        "run-queue wait {loupe_rate:.3} s/s vs schedstat {kernel_rate:.3} s/s"
    );
    let p50 = report["sched"]["runqueue_p50_ns"].as_u64().expect("p50");
    let p99 = report["sched"]["runqueue_p99_ns"].as_u64().expect("p99");
    let waits = report["sched"]["runqueue_waits"].as_u64().expect("waits");
    assert!(
        waits > 0 && p50 > 0 && p50 <= p99,
        "p50 {p50} p99 {p99} waits {waits}"
    );
    // The mean lies between the quantiles' extremes.
    let mean = wait / waits as f64;
    assert!(mean <= p99 as f64 * 1.07, "mean {mean} above p99 {p99}");
}

/// A Go program blocking its threads in system calls while other goroutines wait on channels
/// and timers, built by every Go toolchain: off-CPU time under each blocking function matches
/// what the program measured around its calls, every such stack reaches the program's root
/// through its Go callers, and the runtime's idle threads are marked as such, never the
/// program's own blocking.
#[test]
fn go_threads_blocking_in_syscalls_are_named_and_idle_runtime_threads_are_marked() {
    assert_root();
    let _serial = serial();
    let dir = temp_dir();
    for (version, _) in go_toolchains() {
        let out = dir.path().join(format!("go{version}-offcpu.json"));
        let result = loupe_with_stdin(
            &[
                "profile",
                "--type",
                "offcpu",
                "-o",
                out.to_str().expect("utf-8"),
                "--",
                fixture(&format!("go{version}/offcpu"))
                    .to_str()
                    .expect("utf-8"),
                "10",
                "30",
                "20",
            ],
            "go\n",
        );
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(
            result.status.success(),
            "go{version}: loupe failed: {stderr}"
        );
        let truth = ground_truth(&result.stdout);
        let (_, samples) = read_json(&out);
        let stacks: Vec<FoldedStack> = samples
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.process() == "offcpu")
            .collect();
        for (function, key) in [
            ("main.sleepInSyscall", "sleep_syscall_ns"),
            ("main.readPipe", "pipe_read_ns"),
        ] {
            let want = truth_ns(&truth, key);
            let got = count_where(&stacks, |s| s.has(function)) as f64;
            // The program's clock also counts the run-queue wait after each wakeup, which
            // is not off-CPU time: loupe may be a little under it, never over.
            assert!(
                got <= want * 1.02 && got >= want * 0.9,
                "go{version}: off-CPU under {function} {got} ns vs the program's {want} ns\n{stderr}"
            );
            let without_callers = count_where(&stacks, |s| {
                s.has(function) && !(s.has("main.main") && s.has("runtime.main"))
            });
            assert_eq!(
                without_callers, 0,
                "go{version}: {function} blocked without main.main/runtime.main above it"
            );
        }
        let idle_marker = "[go runtime: idle worker]";
        let program_marked = count_where(&stacks, |s| {
            s.has(idle_marker) && (s.has("main.sleepInSyscall") || s.has("main.readPipe"))
        });
        assert_eq!(
            program_marked, 0,
            "go{version}: the program's blocking marked idle"
        );
        let in_scheduler = |s: &FoldedStack| {
            s.has("runtime.findRunnable") || s.has("runtime.findrunnable") || s.has("runtime.stopm")
        };
        let idle = count_where(&stacks, in_scheduler);
        assert!(idle > 0, "go{version}: no idle runtime thread seen");
        let unmarked = count_where(&stacks, |s| in_scheduler(s) && !s.has(idle_marker));
        assert_eq!(unmarked, 0, "go{version}: idle runtime threads not marked");
        let probe_frames = count_where(&stacks, |s| {
            s.frames.iter().any(|f| f.starts_with("bpf_trace_run"))
        });
        assert_eq!(
            probe_frames, 0,
            "go{version}: loupe's own probe frames in stacks"
        );
    }
}
