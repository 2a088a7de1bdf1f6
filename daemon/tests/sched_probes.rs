//! The scheduling probes per thread, through the hidden `loupe debug-sched`: real BTF
//! tracepoints on the real kernel, against fixtures that measure themselves (off-CPU) and
//! the kernel's own per-thread schedstat (run-queue waits).

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
};

use common::*;
use serde_json::Value;

/// Runs `loupe debug-sched --pid PID` and returns its report, after calling `started`
/// once the probes are attached.
fn debug_sched(pid: u32, args: &[&str], started: impl FnOnce()) -> Value {
    let mut loupe = Command::new(loupe_bin())
        .args(["debug-sched", "--pid", &pid.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loupe debug-sched");
    let mut stderr = BufReader::new(loupe.stderr.take().expect("piped stderr")).lines();
    loop {
        match stderr.next() {
            Some(Ok(line)) if line == "loupe: attached" => break,
            Some(Ok(_)) => continue,
            other => panic!("loupe debug-sched exited before attaching: {other:?}"),
        }
    }
    let drain = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<_>>());
    started();
    let output = loupe.wait_with_output().expect("wait for loupe");
    let messages = drain.join().unwrap_or_default();
    assert!(
        output.status.success(),
        "loupe debug-sched failed: {}\n{}",
        output.status,
        messages.join("\n")
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from loupe debug-sched ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn u64_at(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {value}"))
}

fn assert_within(what: &str, measured: u64, truth: u64, tolerance: f64, context: &str) {
    let error = (measured as f64 - truth as f64).abs() / truth as f64;
    assert!(
        error <= tolerance,
        "{what}: measured {measured} ns, truth {truth} ns ({:.1}% off, more than {:.0}%)\n{context}",
        error * 100.0,
        tolerance * 100.0
    );
}

/// What a failure message needs to tell a probe bug from a bad truth.
fn summary(report: &Value, truth: &Value) -> String {
    let stacks: Vec<String> = report["offcpu"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let frames: Vec<&str> = s["frames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|f| !f.starts_with("bpf_") && !f.starts_with("__"))
                .collect();
            format!(
                "tid {} {} ns in {} blocks: {}",
                s["tid"],
                s["total_ns"],
                s["blocks"],
                frames.join(";")
            )
        })
        .collect();
    format!(
        "truth: {truth}\nthreads: {}\ncounters: {}\nstacks:\n{}",
        report["threads"],
        report["counters"],
        stacks.join("\n")
    )
}

/// No time was lost. (Frame-pointer stack ids may fail on a busy host, when other
/// profilers hold the kernel's callchain buffers: those losses are counted, and the
/// stacks here come from the copies.)
fn assert_no_time_lost(report: &Value) {
    let counters = report["counters"].as_object().expect("counters");
    let losses: Vec<_> = counters
        .iter()
        .filter(|(name, n)| name.ends_with("_map_full") && n.as_u64() != Some(0))
        .collect();
    assert!(losses.is_empty(), "losses: {losses:?}");
    assert_eq!(report["counters"]["wakeup_not_seen"], 0);
}

#[test]
fn offcpu_time_by_stack_matches_the_programs_own_clocks() {
    assert_root();
    let _serial = serial();
    let (sleep_ms, pipe_ms, rounds) = (40, 60, 8);
    let mut fixture = Command::new(fixture("c/offcpu"))
        .args([sleep_ms, pipe_ms, rounds].map(|n| n.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start offcpu");
    let mut stdout = BufReader::new(fixture.stdout.take().expect("piped stdout")).lines();
    let hello: Value = serde_json::from_str(&stdout.next().expect("a first line").expect("read"))
        .expect("pid JSON");
    let pid = u64_at(&hello, "pid") as u32;
    let mut stdin = fixture.stdin.take().expect("piped stdin");

    let report = debug_sched(pid, &["-d", "60s"], || {
        writeln!(stdin, "go").expect("start the fixture");
    });
    let truth: Value = serde_json::from_str(&stdout.next().expect("a result").expect("read"))
        .expect("ground-truth JSON");
    assert!(fixture.wait().expect("wait").success());
    let tid = u64_at(&truth, "tid");

    // Off-CPU time by stack: every block of the main thread in each function, exactly.
    let offcpu = report["offcpu"].as_array().expect("offcpu");
    // The fixture's blocked time is its wall time in the function less what the kernel
    // accounted to the thread as run-queue wait and CPU there: on a busy host a wakeup may
    // wait long for a CPU, and that is not off-CPU (blocked) time.
    for (function, wrapper, truth_ns) in [
        (
            "sleep_part",
            "nanosleep",
            u64_at(&truth, "sleep_blocked_ns"),
        ),
        ("pipe_part", "read", u64_at(&truth, "pipe_blocked_ns")),
    ] {
        let stacks: Vec<&Value> = offcpu
            .iter()
            .filter(|s| u64_at(s, "tid") == tid)
            .filter(|s| {
                s["frames"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == function))
            })
            .collect();
        assert!(
            !stacks.is_empty(),
            "no off-CPU stack through {function}: {offcpu:#?}"
        );
        let total: u64 = stacks.iter().map(|s| u64_at(s, "total_ns")).sum();
        let blocks: u64 = stacks.iter().map(|s| u64_at(s, "blocks")).sum();
        let context = summary(&report, &truth);
        assert_eq!(blocks, rounds as u64, "blocks in {function}\n{context}");
        let what = format!("off-CPU time in {function}");
        assert_within(&what, total, truth_ns, 0.05, &context);
        // Unwound from the copied stack through glibc (no frame pointers): the kernel's
        // schedule, then glibc's wrapper, then our function, then main, leaf first.
        for stack in stacks {
            let frames: Vec<&str> = stack["frames"]
                .as_array()
                .expect("frames")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let at = |pred: &dyn Fn(&str) -> bool| frames.iter().position(|f| pred(f));
            let schedule = at(&|f| f == "schedule");
            let libc = at(&|f| f.contains(wrapper) && f.starts_with("__"));
            let ours = at(&|f| f == function);
            let main = at(&|f| f == "main");
            assert!(
                matches!((schedule, libc, ours, main), (Some(a), Some(b), Some(c), Some(d)) if a < b && b < c && c < d),
                "{function}: expected schedule < glibc {wrapper} < {function} < main in {frames:?}"
            );
        }
    }

    // The thread's totals: blocked in the two functions only, and blocked, waiting or
    // running for the whole run.
    let thread = report["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .find(|t| u64_at(t, "tid") == tid)
        .expect("totals of the main thread");
    let blocked = u64_at(&truth, "sleep_blocked_ns") + u64_at(&truth, "pipe_blocked_ns");
    let context = summary(&report, &truth);
    let offcpu_total = u64_at(thread, "offcpu_ns");
    assert_within(
        "the thread's off-CPU total",
        offcpu_total,
        blocked,
        0.05,
        &context,
    );
    let accounted = ["offcpu_ns", "runq_wait_ns", "oncpu_ns"]
        .iter()
        .map(|k| u64_at(thread, k))
        .sum();
    let wall = u64_at(&truth, "wall_ns");
    assert_within(
        "the thread's accounted time",
        accounted,
        wall,
        0.05,
        &context,
    );
    assert!(u64_at(thread, "voluntary_switches") >= 2 * rounds as u64);
    assert_no_time_lost(&report);
}

#[test]
fn run_queue_waits_match_the_kernels_schedstat() {
    assert_root();
    let _serial = serial();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = 2 * cpus;
    let mut hogs = Command::new(fixture("c/hogs"))
        .args([threads.to_string(), "8".to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hogs");
    let mut stdout = BufReader::new(hogs.stdout.take().expect("piped stdout")).lines();
    let started: Value =
        serde_json::from_str(&stdout.next().expect("a line").expect("read")).expect("hogs JSON");
    let pid = u64_at(&started, "pid") as u32;
    let tids: Vec<u64> = started["tids"]
        .as_array()
        .expect("tids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();

    // Waits are added at switch-in, by both: after a warm-up in which every hog switched
    // out once (and so is tracked), the two count the same waits.
    let report = debug_sched(pid, &["--warmup", "1s", "-d", "4s"], || {});
    let _ = hogs.kill();
    let _ = hogs.wait();

    let totals = report["threads"].as_array().expect("threads");
    let mut waits = 0;
    for tid in &tids {
        let ours = totals
            .iter()
            .find(|t| u64_at(t, "tid") == *tid)
            .unwrap_or_else(|| panic!("no totals for hog thread {tid}"));
        // /proc/PID/task/TID/schedstat, read by loupe when it attached and when it drained.
        let truth = &report["schedstat"][tid.to_string()];
        let truth_wait = u64_at(truth, "runq_wait_ns");
        // More runnable threads than CPUs: each one waits a good part of the time.
        assert!(truth_wait > 100_000_000, "hog {tid} hardly waited: {truth}");
        assert_within(
            &format!("run-queue wait of hog {tid}"),
            u64_at(ours, "runq_wait_ns"),
            truth_wait,
            0.10,
            &format!("ours: {ours}\ntruth: {truth}"),
        );
        assert_within(
            &format!("on-CPU time of hog {tid}"),
            u64_at(ours, "oncpu_ns"),
            u64_at(truth, "oncpu_ns"),
            0.10,
            &format!("ours: {ours}\ntruth: {truth}"),
        );
        waits += u64_at(ours, "runq_waits");
    }
    // The process histogram holds exactly the waits of its threads.
    let histogram = report["runq_histograms"]
        .as_array()
        .expect("histograms")
        .iter()
        .find(|h| u64_at(h, "pid") == pid as u64)
        .expect("a histogram of the hogs");
    let all_waits: u64 = totals.iter().map(|t| u64_at(t, "runq_waits")).sum();
    assert_eq!(u64_at(histogram, "waits"), all_waits);
    assert!(waits > 0);
    assert_no_time_lost(&report);
}

#[test]
fn threads_born_while_traced_are_tracked_from_their_first_run() {
    assert_root();
    let _serial = serial();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    // A shell that becomes hogs on a word from us: every hog thread is born after attach.
    let mut shell = Command::new("sh")
        .args(["-c", "echo $$; read go && exec \"$0\" \"$@\""])
        .arg(fixture("c/hogs"))
        .args([(2 * cpus).to_string(), "8".to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let mut stdout = BufReader::new(shell.stdout.take().expect("piped stdout")).lines();
    let pid: u32 = stdout
        .next()
        .expect("the shell's pid")
        .expect("read")
        .trim()
        .parse()
        .expect("a pid");
    let mut stdin = shell.stdin.take().expect("piped stdin");
    let report = debug_sched(pid, &["-d", "3s"], || {
        writeln!(stdin, "go").expect("start hogs");
    });
    let started: Value =
        serde_json::from_str(&stdout.next().expect("a line").expect("read")).expect("hogs JSON");
    let _ = shell.kill();
    let _ = shell.wait();

    let totals = report["threads"].as_array().expect("threads");
    for tid in started["tids"].as_array().expect("tids") {
        let tid = tid.as_u64().expect("a tid");
        let ours = totals
            .iter()
            .find(|t| u64_at(t, "tid") == tid)
            .unwrap_or_else(|| panic!("no totals for hog thread {tid}"));
        // Born after loupe read schedstat: the thread's whole life is in the window.
        let truth = &report["schedstat"][tid.to_string()];
        let context = format!("ours: {ours}\ntruth: {truth}");
        for (what, ours_key, truth_key) in [
            ("run-queue wait", "runq_wait_ns", "runq_wait_ns"),
            ("on-CPU time", "oncpu_ns", "oncpu_ns"),
            ("time slices", "runq_waits", "timeslices"),
        ] {
            assert_within(
                &format!("{what} of new hog {tid}"),
                u64_at(ours, ours_key),
                u64_at(truth, truth_key),
                0.10,
                &context,
            );
        }
    }
    assert_no_time_lost(&report);
}
