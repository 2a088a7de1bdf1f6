//! `loupe stat --goroutine-events` (uprobes on the Go runtime), run as the real binary
//! against the gevents fixture (fixtures/go/gevents) built by every Go toolchain in
//! xtask/go-toolchains.txt, stripped and with symbols. Ground truth is the fixture's own
//! report of its window: how many goroutines it started (all of which end), the runtime's
//! own `/sched/latencies:seconds` reading over the window, and its computed output; in its
//! "block" mode, its own clock around every blocking call of each kind, and how many
//! goroutines each of its two starting functions created; in both, how many goroutines
//! each of its creating goroutines created, by the goroutine id the runtime itself gives
//! it (the header of its `runtime.Stack`).

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::Duration,
};

use common::gevents::{next_json, Gevents};
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

/// How far loupe's blocked-time figures may be from the fixture's own: the count (a
/// runtime goroutine may block for the same reason meanwhile: at least one is allowed) and
/// the total, which loupe takes from blocking to runnable and the fixture around the call
/// (adding the wake-up's scheduling latency).
const BLOCKED_COUNT_TOLERANCE: f64 = 0.02;
const BLOCKED_TIME_TOLERANCE: f64 = 0.10;

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
/// One traced window of `binary` run in `mode`: (the fixture's report, loupe's goroutines
/// section).
fn traced_window(binary: &Path, mode: &str) -> (Value, Value) {
    let dir = temp_dir();
    let report = dir.path().join("stat.json");
    let mut fixture = Gevents::start(binary, mode);
    let (loupe, stderr) = start_stat(fixture.pid, &report, &["--goroutine-events"]);
    let truth = fixture.run_window();
    // The last goroutines end microseconds after the fixture's report (they signalled
    // their end first): leave them time on a busy host.
    std::thread::sleep(Duration::from_millis(300));
    let report = stop_stat(loupe, stderr, &report);
    fixture.finish();
    (truth, report["goroutines"].clone())
}

/// Goroutines created per parent goroutine against the fixture's own
/// `created_by_goroutine` (goid: count). The window holds no other creation (its `created`
/// is checked exact), so each count must be exact; `whole_life`: loupe traced the program
/// from its start, when main (goroutine 1) also ran the runtime's start-up code, which
/// starts goroutines of its own: main's count may only be more.
fn check_parents(what: &str, truth: &Value, got: &Value, whole_life: bool) -> Vec<String> {
    let Some(want) = truth["created_by_goroutine"]
        .as_object()
        .filter(|w| !w.is_empty())
    else {
        return vec![format!(
            "{what}: the fixture reported no created_by_goroutine: {truth}"
        )];
    };
    let Some(have) = got["created_by_parent"].as_array() else {
        return vec![format!(
            "{what}: loupe reported no created_by_parent: {got}"
        )];
    };
    let mut errors = Vec::new();
    // Every creation has its parent counted (none lost).
    let by_parents: u64 = have
        .iter()
        .filter_map(|p| p["created"].as_u64())
        .sum::<u64>()
        + got["created_by_other_parents"].as_u64().unwrap_or(0);
    if Some(by_parents) != got["created"].as_u64() {
        errors.push(format!(
            "{what}: loupe counted {} created, {by_parents} by parent: {}",
            got["created"], got["created_by_parent"]
        ));
    }
    for (goid, n) in want {
        let (goid, n): (u64, u64) = match (goid.parse(), n.as_u64()) {
            (Ok(g), Some(n)) => (g, n),
            _ => {
                errors.push(format!("{what}: unreadable created_by_goroutine {truth}"));
                continue;
            }
        };
        let counted = have
            .iter()
            .find(|p| p["goroutine"].as_u64() == Some(goid))
            .and_then(|p| p["created"].as_u64());
        let right = match counted {
            Some(c) if whole_life && goid == 1 => c >= n,
            Some(c) => c == n,
            None => false,
        };
        if right {
            eprintln!("{what}: goroutine {goid} created {n}, loupe counted {counted:?}");
        } else {
            errors.push(format!(
                "{what}: goroutine {goid} created {n} goroutines, loupe counted {counted:?} \
                 (created_by_parent: {})",
                got["created_by_parent"]
            ));
        }
    }
    errors
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
    let parents = check_parents(what, truth, got, false);
    if !parents.is_empty() {
        return Err(Mismatch::Other(parents.join("\n")));
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
                let (truth, got) = traced_window(&binary, "window");
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

/// The runtime's wait reason for each kind of blocking call of the fixture's "block" mode in
/// Go `version`: sync.Mutex.Lock got its own reason in 1.21 (before, `semacquire`).
fn wait_reason_of(kind: &str, version: &str) -> String {
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("Go version {version} has no minor number"));
    match kind {
        "mutex" if minor >= 21 => "sync.Mutex.Lock",
        "mutex" => "semacquire",
        other => other,
    }
    .to_string()
}

/// Blocked time per wait reason and creation sites against the fixture's own figures.
/// `whole_life`: loupe traced the program from its start, so the runtime's own start-up
/// waits (runtime.gcenable waits twice on a channel) add to the counts: they may only be
/// more than the program's.
fn check_blocking(
    what: &str,
    version: &str,
    truth: &Value,
    got: &Value,
    whole_life: bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let kinds = truth["blocked"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no blocked figures in {truth}"));
    for (kind, want) in kinds {
        let reason = wait_reason_of(kind, version);
        let have = &got["blocked_by_wait_reason"][&reason];
        let (want_n, want_ns) = (
            want["count"].as_u64().unwrap_or(0),
            want["total_ns"].as_u64().unwrap_or(0),
        );
        let (n, ns) = (
            have["count"].as_u64().unwrap_or(0),
            have["total_ns"].as_u64().unwrap_or(0),
        );
        let count_slack = (want_n as f64 * BLOCKED_COUNT_TOLERANCE).max(1.0);
        let count_off = if whole_life {
            n < want_n
        } else {
            (n as f64 - want_n as f64).abs() > count_slack
        };
        let time_slack = want_ns as f64 * BLOCKED_TIME_TOLERANCE;
        if want_n == 0 || count_off || (ns as f64 - want_ns as f64).abs() > time_slack {
            errors.push(format!(
                "{what}: \"{reason}\": the fixture blocked {want_n} times for {want_ns} ns, \
                 loupe saw {n} blocks of {ns} ns in total"
            ));
        } else {
            eprintln!(
                "{what}: \"{reason}\": {n} blocks, {ns} ns (fixture: {want_n}, {want_ns} ns)"
            );
        }
    }
    errors.extend(check_parents(what, truth, got, whole_life));
    for (site, want) in truth["created_by"].as_object().into_iter().flatten() {
        let have = &got["created_by_site"][site];
        if have.as_u64() != want.as_u64() {
            errors.push(format!(
                "{what}: {site} created {want} goroutines, loupe counted {have} \
                 (created_by_site: {})",
                got["created_by_site"]
            ));
        }
    }
    errors
}

#[test]
fn goroutine_blocked_time_and_creation_sites_match_the_program_for_every_go_version() {
    assert_root();
    let _serial = serial();
    let mut failures = Vec::new();
    for (version, _) in go_toolchains() {
        for name in ["gevents", "gevents.debug"] {
            let what = format!("go{version}/{name}");
            let (truth, got) = traced_window(&fixture(&what), "block");
            failures.extend(check_blocking(&what, &version, &truth, &got, false));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `loupe stat --goroutine-events -- COMMAND`: the probe is in place before the runtime
/// starts (the two goroutines runtime.gcenable starts before main are counted), every
/// figure of the program's own window is seen, and the program runs as it does untraced.
#[test]
fn goroutine_events_of_a_launched_command() {
    assert_root();
    let _serial = serial();
    let mut failures = Vec::new();
    for (version, _) in go_toolchains() {
        let what = format!("go{version}/gevents");
        let binary = fixture(&what);
        let dir = temp_dir();
        let report = dir.path().join("stat.json");
        let report_arg = report.to_str().expect("utf-8 path");
        let binary_arg = binary.to_str().expect("utf-8 path");
        let mut loupe = Command::new(loupe_bin())
            .args(["stat", "--goroutine-events", "-o", report_arg, "--"])
            .args([binary_arg, "block"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loupe");
        let mut stdin = loupe.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(loupe.stdout.take().expect("piped stdout")).lines();
        next_json(&mut lines, "its ready line");
        writeln!(stdin, "start").expect("start the window");
        let truth = next_json(&mut lines, "its block report");
        drop(stdin);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let output = loupe.wait_with_output().expect("wait for loupe");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{what}: loupe failed: {stderr}");
        assert_eq!(rest, ["bye"], "{what}: the traced command's last output");
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: the report is not JSON ({e}): {text}\n{stderr}"));
        let got = &json["goroutines"];
        let sites = &got["created_by_site"];
        if sites["runtime.gcenable"].as_u64() != Some(2) {
            failures.push(format!(
                "{what}: runtime.gcenable starts 2 goroutines before main, loupe saw {sites}"
            ));
        }
        // The runtime's bootstrap (rt0_go) starts runtime.main with no goroutine running:
        // the only creation without a parent (goroutine 0, Go's own parentGoid for it).
        let orphans = got["created_by_parent"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["goroutine"].as_u64() == Some(0))
            .and_then(|p| p["created"].as_u64());
        if orphans != Some(1) {
            failures.push(format!(
                "{what}: runtime.main is the one goroutine created by no goroutine, loupe \
                 counted {orphans:?} (created_by_parent: {})",
                got["created_by_parent"]
            ));
        }
        let (created, exited) = (
            got["created"].as_u64().unwrap_or(0),
            got["exited"].as_u64().unwrap_or(0),
        );
        let by_sites: u64 = sites
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, n)| n.as_u64())
            .sum();
        let program = truth["created"].as_u64().unwrap_or(0);
        if created != by_sites || exited < program || created < program + 2 {
            failures.push(format!(
                "{what}: created {created} (by site {by_sites}), exited {exited}; the program \
                 created {program} after runtime.gcenable's 2"
            ));
        }
        failures.extend(check_blocking(&what, &version, &truth, got, true));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn goroutine_events_warn_about_a_command_that_is_not_go() {
    assert_root();
    let output = Command::new(loupe_bin())
        .args(["stat", "--goroutine-events", "--json", "--", "true"])
        .output()
        .expect("run loupe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no goroutine events") && stderr.contains("is not a Go program"),
        "{stderr}"
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert!(json["goroutines"].is_null(), "{json}");
    assert!(json["sched"]["oncpu_ns"].as_u64().is_some(), "{json}");
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
    assert!(
        stderr.contains("name them with --pid, or launch one"),
        "{stderr}"
    );
}
