//! `loupe goroutines`, `loupe profile --type goroutines` and `loupe stat`'s goroutine section,
//! run as the real binary against the goroutines fixture (fixtures/go/goroutines) built by
//! every Go toolchain in xtask/go-toolchains.txt, stripped and with symbols. Ground truth is
//! the fixture's own report: runtime.NumGoroutine(), per group its creator and the states
//! its runtime's traceback printed, and the traceback state of every other goroutine.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output},
};

use common::*;
use serde_json::Value;

/// The leak threshold used against the fixture's "leak" mode, where the leak group waits
/// `leak_age_ns` (3 s) longer than every other group: the census runs right after the
/// report, so the others have waited far less than this.
const LEAK_THRESHOLD: &str = "1500ms";
const LEAK_THRESHOLD_NS: u64 = 1_500_000_000;

#[path = "../src/goroutines/tests/running.rs"]
#[allow(dead_code)] // Its clock stamps serve the census tests.
mod running;

use running::Running as Fixture;

/// The fixture's report, read from the running program.
trait Report {
    fn pid(&self) -> String;
    fn num_goroutine(&self) -> u64;
    fn shown_states(&self) -> BTreeMap<String, u64>;
    fn creators(&self) -> Vec<(String, u64)>;
    fn leak_creator(&self) -> (String, u64);
}

/// Starts the fixture with `mode` (no clock: these tests do not compare times with it).
fn start(path: &Path, mode: &str) -> Fixture {
    running::start(path, &[mode], || 0)
}

impl Report for Fixture {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn num_goroutine(&self) -> u64 {
        self.report["num_goroutine"]
            .as_u64()
            .expect("num_goroutine")
    }

    /// What the traceback printed in brackets -> count, for every goroutine: the others,
    /// and main, parked for good in `select {}` once it printed its report.
    fn shown_states(&self) -> BTreeMap<String, u64> {
        let mut states = counts(&self.report["others"]);
        *states.entry("select (no cases)".into()).or_default() += 1;
        states
    }

    /// (creator function, count) of each group, and the leak group's creator.
    fn creators(&self) -> Vec<(String, u64)> {
        self.report["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| {
                (
                    g["creator"].as_str().expect("creator").to_string(),
                    g["count"].as_u64().expect("count"),
                )
            })
            .collect()
    }

    fn leak_creator(&self) -> (String, u64) {
        let leak = self.report["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["name"] == "leak")
            .expect("a leak group");
        (
            leak["creator"].as_str().expect("creator").to_string(),
            leak["count"].as_u64().expect("count"),
        )
    }
}

fn counts(map: &Value) -> BTreeMap<String, u64> {
    map.as_object()
        .unwrap_or_else(|| panic!("not an object: {map}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect()
}

/// The bracketed state the runtime's traceback prints, counted from loupe's by_state and
/// by_wait_reason: the wait reason for waiting goroutines, the state otherwise.
fn shown_from(section: &Value) -> BTreeMap<String, u64> {
    let mut shown = counts(&section["by_wait_reason"]);
    let with_reason: u64 = shown.values().sum();
    for (state, n) in counts(&section["by_state"]) {
        let n = if state == "waiting" {
            n - with_reason
        } else {
            n
        };
        if n > 0 {
            *shown.entry(state).or_default() += n;
        }
    }
    shown
}

/// The versions xtask/go-toolchains.txt lists: each must have its toolchain and fixtures.
fn expected_versions() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/go-toolchains.txt");
    let text = std::fs::read_to_string(&path).expect("xtask/go-toolchains.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn loupe_json(args: &[&str]) -> Value {
    let out = loupe(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("loupe {args:?}: not JSON ({e})"))
}

#[test]
fn every_go_version_stripped_and_not_matches_the_runtime() {
    assert_root();
    let _serial = serial();
    let toolchains = go_toolchains();
    let versions: Vec<&String> = toolchains.iter().map(|(v, _)| v).collect();
    let expected = expected_versions();
    assert_eq!(
        versions,
        expected.iter().collect::<Vec<_>>(),
        "LOUPE_GO_BINARIES must name every toolchain of xtask/go-toolchains.txt"
    );
    let dir = temp_dir();
    for (version, go) in &toolchains {
        for name in ["goroutines", "goroutines.debug"] {
            let path = fixture(&format!("go{version}/{name}"));
            let tag = format!("go{version} {name}");
            let run = start(&path, "leak");
            check_leaks(&tag, &run);
            check_dump(&tag, &run);
            check_profile(&tag, &run, go, dir.path());
            check_stat(&tag, &run);
        }
    }
}

/// The leak view: the leak group, blocked 3 s longer than the rest, comes first.
fn check_leaks(tag: &str, run: &Fixture) {
    let pid = run.pid();
    let r = loupe_json(&[
        "goroutines",
        "--pid",
        &pid,
        "--leaks",
        "--older-than",
        LEAK_THRESHOLD,
        "--json",
    ]);
    assert_eq!(r["view"], "leaks", "{tag}");
    assert_eq!(
        r["older_than_ns"].as_u64(),
        Some(LEAK_THRESHOLD_NS),
        "{tag}"
    );
    let (creator, count) = run.leak_creator();
    let first = &r["groups"][0];
    assert_eq!(
        first["created_by"]["function"].as_str(),
        Some(creator.as_str()),
        "{tag}: leak view {}",
        r["groups"]
    );
    assert_eq!(first["count"].as_u64(), Some(count), "{tag}");
    assert_eq!(first["wait_reason"], "chan receive", "{tag}");
    let leak_age = run.report["leak_age_ns"].as_u64().expect("leak_age_ns");
    assert!(
        first["waiting_ns"]["min"].as_u64() >= Some(leak_age),
        "{tag}: the leak group waited {}, at least {leak_age} ns expected",
        first["waiting_ns"]
    );
    for g in r["groups"].as_array().expect("groups") {
        assert!(
            g["waiting_ns"]["min"].as_u64() > Some(LEAK_THRESHOLD_NS),
            "{tag}: a group under the threshold: {g}"
        );
    }
}

/// The dump: counts match the runtime, every goroutine is in one group, every frame named.
fn check_dump(tag: &str, run: &Fixture) {
    let r = loupe_json(&["goroutines", "--pid", &run.pid(), "--json"]);
    assert_eq!(r["schema_version"], 1, "{tag}");
    assert_eq!(r["pid"].as_u64(), Some(u64::from(run.child.id())), "{tag}");
    assert_eq!(r["go_version"], run.report["go_version"], "{tag}");
    assert_eq!(r["live"].as_u64(), Some(run.num_goroutine()), "{tag}: live");
    assert_eq!(shown_from(&r), run.shown_states(), "{tag}: states");
    let groups = r["groups"].as_array().expect("groups");
    let sizes: Vec<u64> = groups
        .iter()
        .map(|g| g["count"].as_u64().expect("n"))
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{tag}: {sizes:?}");
    assert_eq!(sizes.iter().sum::<u64>(), run.num_goroutine(), "{tag}");
    for (creator, count) in run.creators() {
        let created: u64 = groups
            .iter()
            .filter(|g| g["created_by"]["function"] == creator.as_str())
            .map(|g| g["count"].as_u64().expect("n"))
            .sum();
        assert_eq!(created, count, "{tag}: goroutines created by {creator}");
    }
    for g in groups {
        let frames = g["stack"].as_array().expect("stack");
        let names: Vec<&str> = frames
            .iter()
            .map(|f| f["function"].as_str().expect("function"))
            .collect();
        assert_eq!(names.last(), Some(&"runtime.goexit"), "{tag}: {g}");
        assert!(
            names.iter().all(|n| !n.contains("+0x")),
            "{tag}: unnamed frames in {names:?}"
        );
    }
    // The table shows the same groups.
    let text = loupe(&["goroutines", "--pid", &run.pid()]).stdout;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(&format!("{} live", run.num_goroutine())),
        "{tag}: {text}"
    );
    let (creator, count) = run.leak_creator();
    assert!(
        text.contains(&format!("created by {creator}")) && text.contains(&format!("\n{count} [")),
        "{tag}: {text}"
    );
}

/// The goroutine profile: go tool pprof reads it, its total is the live count, labels on.
fn check_profile(tag: &str, run: &Fixture, go: &Path, dir: &Path) {
    let out = dir.join("goroutines.pb.gz");
    let out = out.to_str().expect("utf-8");
    loupe(&[
        "profile",
        "--type",
        "goroutines",
        "--pid",
        &run.pid(),
        "-o",
        out,
    ]);
    let raw: Output = go_command(go)
        .args(["tool", "pprof", "-raw", out])
        .output()
        .expect("run go tool pprof");
    assert!(
        raw.status.success(),
        "{tag}: go tool pprof -raw failed: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let text = String::from_utf8_lossy(&raw.stdout);
    let samples = text
        .split("Samples:")
        .nth(1)
        .and_then(|s| s.split("Locations").next())
        .unwrap_or_else(|| panic!("{tag}: no samples in pprof -raw:\n{text}"));
    assert!(samples.contains("goroutine/count"), "{tag}: {samples}");
    let total: u64 = samples
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter_map(|(n, _)| n.parse::<u64>().ok())
        .sum();
    assert_eq!(total, run.num_goroutine(), "{tag}: pprof total");
    for label in [
        "state:[waiting]",
        "wait_reason:[chan receive]",
        "state:[syscall]",
    ] {
        assert!(samples.contains(label), "{tag}: no {label} in {samples}");
    }
    // Folded stacks carry the same total.
    let folded = dir.join("goroutines.folded");
    loupe(&[
        "profile",
        "-t",
        "goroutines",
        "-p",
        &run.pid(),
        "-o",
        folded.to_str().expect("utf-8"),
    ]);
    let stacks = read_folded(&folded);
    assert_eq!(
        count_where(&stacks, |_| true),
        run.num_goroutine(),
        "{tag}: folded"
    );
}

/// `loupe stat`'s goroutine section: a census at the end of the window.
fn check_stat(tag: &str, run: &Fixture) {
    let r = loupe_json(&["stat", "--pid", &run.pid(), "-d", "300ms", "--json"]);
    let g = &r["goroutines"];
    assert_eq!(g["live"].as_u64(), Some(run.num_goroutine()), "{tag}: {r}");
    assert_eq!(shown_from(g), run.shown_states(), "{tag}: stat states");
}

/// Runs `loupe ARGS`, which must fail with one error line containing `expected`.
fn assert_refused(args: &[&str], expected: &str) {
    let output = Command::new(loupe_bin())
        .args(args)
        .output()
        .expect("run loupe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "loupe {args:?} succeeded");
    assert!(
        !stderr.contains("panicked"),
        "loupe {args:?} panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "loupe {args:?}: {stderr}");
    assert!(
        lines[0].starts_with("loupe: error: ") && lines[0].matches(expected).count() == 1,
        "loupe {args:?}: {stderr:?} does not say {expected:?} once"
    );
}

#[test]
fn bad_targets_get_one_named_error() {
    assert_root();
    // A PID that no longer exists.
    let mut gone = Command::new("true").spawn().expect("true");
    let gone_pid = gone.id().to_string();
    gone.wait().expect("wait");
    let no_process = format!("no process with PID {gone_pid}");
    assert_refused(&["goroutines", "--pid", &gone_pid], &no_process);
    assert_refused(
        &["profile", "--type", "goroutines", "--pid", &gone_pid],
        &no_process,
    );

    // A process that is not Go.
    let mut sleep = Command::new("sleep").arg("60").spawn().expect("sleep");
    let pid = sleep.id().to_string();
    assert_refused(&["goroutines", "--pid", &pid], "is not a Go program");
    let dir = temp_dir();
    let out = dir.path().join("not-go.pb.gz");
    let out = out.to_str().expect("utf-8");
    assert_refused(
        &["profile", "--type", "goroutines", "--pid", &pid, "-o", out],
        "is not a Go program",
    );
    assert!(!Path::new(out).exists(), "an empty output file was left");
    // stat of a non-Go process has no goroutine section, and no error.
    let r = loupe_json(&["stat", "--pid", &pid, "-d", "200ms", "--json"]);
    assert!(r.get("goroutines").is_none(), "{r}");
    let _ = sleep.kill();
    let _ = sleep.wait();
}

/// A Go binary of a release loupe has no checked tables for: refused, naming the version.
/// Made from the oldest fixture by rewriting its version strings one minor lower.
#[test]
fn an_unsupported_go_release_is_refused_by_name() {
    assert_root();
    let oldest = expected_versions()
        .into_iter()
        .next()
        .expect("a Go version");
    let minor: u32 = oldest
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("1.<minor>");
    let (from, to) = (format!("go1.{minor}"), format!("go1.{}", minor - 1));
    assert_eq!(from.len(), to.len(), "same-length rewrite");
    let mut bytes = std::fs::read(fixture(&format!("go{oldest}/goroutines"))).expect("read");
    let mut rewritten = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
    {
        bytes[i + at..i + at + to.len()].copy_from_slice(to.as_bytes());
        rewritten += 1;
        i += at + to.len();
    }
    assert!(rewritten > 0, "no {from} in the fixture");
    let dir = temp_dir();
    let path = dir.path().join("old-goroutines");
    std::fs::write(&path, &bytes).expect("write");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let run = start(&path, "");
    assert_refused(&["goroutines", "--pid", &run.pid()], &to);
    assert_refused(&["goroutines", "--pid", &run.pid()], "refusing to guess");
}
