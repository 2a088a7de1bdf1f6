//! `loupe stat --pid P` without `--goroutine-events`: goroutine scheduling latency from the Go
//! runtime's own histogram (`runtime.sched.timeToRun`, read at both ends of the window), no
//! probes. Run as the real binary against the gevents fixture (fixtures/go/gevents) built by
//! every Go toolchain in xtask/go-toolchains.txt, stripped and with symbols. Ground truth is
//! the fixture's own `/sched/latencies:seconds` reading over its window, which loupe's window
//! encloses (the fixture idles before and after it: blocked reading stdin).

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::gevents::Gevents;
use common::*;
use serde_json::Value;

/// How many more waits loupe's window may hold than the fixture's: it is the same histogram,
/// and loupe's window encloses the fixture's, whose program is idle outside it; the runtime
/// may still schedule a few goroutines of its own there (a GC worker, the scavenger).
const COUNT_TOLERANCE: f64 = 0.02;
const COUNT_SLACK: u64 = 10;

/// How far loupe's mean may be from the runtime's (the issue asks for 25%; both take waits
/// at their bucket's middle, so only the waits at the window's edges differ).
const MEAN_TOLERANCE: f64 = 0.25;

/// One window of `binary` under `loupe stat --pid`: (the fixture's report, loupe's report).
fn window(binary: &Path) -> (Value, Value) {
    let dir = temp_dir();
    let report = dir.path().join("stat.json");
    let mut fixture = Gevents::start(binary, "window");
    let pid = fixture.pid.to_string();
    let path = report.to_str().expect("utf-8 path");
    let (loupe, stderr) = spawn_loupe_announcing(
        &["stat", "--pid", &pid, "-o", path, "--duration", "60s"],
        "loupe: tracing",
    );
    let truth = fixture.run_window();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain syscall on the pid of a child we have not reaped.
    unsafe { libc::kill(loupe.id() as i32, libc::SIGINT) };
    let output = loupe.wait_with_output().expect("wait for loupe");
    let stderr = stderr.join().unwrap_or_default();
    assert!(output.status.success(), "loupe stat failed: {stderr}");
    assert!(
        !stderr.contains("warning"),
        "loupe warned about a supported program: {stderr}"
    );
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let got = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("loupe's report is not JSON ({e}): {text}\n{stderr}"));
    fixture.finish();
    (truth, got)
}

fn check(what: &str, truth: &Value, report: &Value) -> Result<(), String> {
    let g = &report["goroutines"];
    let latency = &g["sched_latency"];
    if latency["source"] != "runtime" {
        return Err(format!("{what}: no runtime scheduling latency in {g}"));
    }
    if g["live"].as_u64().is_none() {
        return Err(format!("{what}: the census is missing beside it: {g}"));
    }
    let n = |v: &Value, key: &str| v[key].as_u64().ok_or(format!("{what}: no {key} in {v}"));
    let want_count = n(truth, "runtime_latency_count")?;
    let want_mean = truth["runtime_latency_mean_ns"].as_f64().unwrap_or(0.0);
    let (count, mean) = (n(latency, "count")?, n(latency, "mean_ns")? as f64);
    let max_count = (want_count as f64 * (1.0 + COUNT_TOLERANCE)) as u64 + COUNT_SLACK;
    if want_count < 100 || count < want_count || count > max_count {
        return Err(format!(
            "{what}: loupe read {count} waits, the program's runtime {want_count} in its window"
        ));
    }
    if (mean - want_mean).abs() > want_mean * MEAN_TOLERANCE {
        return Err(format!(
            "{what}: mean scheduling latency {mean} ns, the program's runtime {want_mean:.0} ns"
        ));
    }
    // p99 in the bucket the program's own reading puts it in, or a neighbour (waits at the
    // window's edges can move it by one).
    let bucket: Vec<f64> = truth["runtime_latency_p99_bucket_ns"]
        .as_array()
        .ok_or(format!("{what}: no p99 bucket in {truth}"))?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let [lo, hi] = bucket[..] else {
        return Err(format!("{what}: bad p99 bucket {bucket:?}"));
    };
    let p99 = n(latency, "p99_ns")? as f64;
    let width = (hi - lo).max(1.0);
    if p99 < lo - width || p99 > hi + width {
        return Err(format!(
            "{what}: p99 {p99} ns, the program's runtime puts it in {lo}..{hi} ns"
        ));
    }
    if n(latency, "p50_ns")? > n(latency, "p99_ns")? {
        return Err(format!("{what}: p50 above p99: {latency}"));
    }
    eprintln!(
        "{what}: {count} waits (runtime {want_count}), mean {mean} ns (runtime {want_mean:.0}), \
         p99 {p99} ns (runtime's bucket {lo}..{hi})"
    );
    Ok(())
}

#[test]
fn goroutine_sched_latency_from_the_runtime_matches_its_own_reading_for_every_go_version() {
    assert_root();
    let _serial = serial();
    let mut failures = Vec::new();
    for (version, _) in go_toolchains() {
        for name in ["gevents", "gevents.debug"] {
            let what = format!("go{version}/{name}");
            let (truth, report) = window(&fixture(&what));
            if let Err(e) = check(&what, &truth, &report) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A Go release whose histogram loupe has not checked (a real binary relabelled go1.20: its
/// DWARF still gives the census what it needs) gets a message naming the version, and the
/// rest of the report.
#[test]
fn goroutine_sched_latency_of_an_unsupported_release_is_refused_by_name() {
    assert_root();
    let (version, _) = go_toolchains()
        .into_iter()
        .find(|(v, _)| v.starts_with("1.21."))
        .expect("a Go 1.21 toolchain (xtask/go-toolchains.txt)");
    let dir = temp_dir();
    let relabelled = dir.path().join("gevents-go1.20");
    let original = std::fs::read(fixture(&format!("go{version}/gevents.debug"))).expect("read");
    let (from, to) = (format!("go{version}"), format!("go1.20.{}", &version[5..]));
    let patched = replace_all(&original, from.as_bytes(), to.as_bytes());
    assert_ne!(patched, original, "no {from} in the binary");
    std::fs::write(&relabelled, &patched).expect("write");
    std::fs::set_permissions(
        &relabelled,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let fixture = Gevents::start(&relabelled, "window");
    let pid = fixture.pid.to_string();
    let output = loupe(&["stat", "--pid", &pid, "-d", "1s", "--json"]);
    fixture.kill();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no goroutine scheduling latency: Go binary built by {to}"
        )) && stderr.contains("refusing to guess"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert!(report["goroutines"]["live"].as_u64().is_some(), "{report}");
    assert!(
        report["goroutines"].get("sched_latency").is_none(),
        "{report}"
    );
    assert!(report["sched"]["oncpu_ns"].as_u64().is_some(), "{report}");
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "same length keeps the ELF intact");
    let mut out = data.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// A process that is not Go: no goroutines section and no warning, the scheduling figures
/// as ever.
#[test]
fn goroutine_sched_latency_leaves_out_a_process_that_is_not_go() {
    assert_root();
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    let pid = sleeper.id().to_string();
    let output = loupe(&["stat", "--pid", &pid, "-d", "1s", "--json"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert!(report.get("goroutines").is_none(), "{report}");
    assert_eq!(report["pid"].as_u64(), Some(u64::from(sleeper.id())));
}
