//! Censuses of the running fixture, checked against what its own runtime reported.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::fixtures;
use super::running::{self, Running};
use crate::goroutines::{
    census, monotonic_ns, Census, Found, GStatus, GoProcess, GoroutineError, Source, StackStatus,
};

fn start(path: &Path, args: &[&str]) -> Running {
    running::start(path, args, monotonic_ns)
}

struct Group {
    count: usize,
    start: String,
    creator: String,
    /// The traceback's bracketed state -> count.
    states: BTreeMap<String, usize>,
}

fn groups(report: &Value) -> Vec<Group> {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| Group {
            count: g["count"].as_u64().expect("count") as usize,
            start: g["start"].as_str().expect("start").to_string(),
            creator: g["creator"].as_str().expect("creator").to_string(),
            states: g["states"]
                .as_object()
                .expect("states")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().expect("n") as usize))
                .collect(),
        })
        .collect()
}

/// What the runtime's traceback prints in brackets for a goroutine.
fn printed_state(g: &crate::goroutines::Goroutine) -> String {
    g.wait_reason
        .clone()
        .unwrap_or_else(|| g.state.name().to_string())
}

/// Checks one census of the fixture against its report; `exact_total`: no goroutines
/// come and go besides the fixture's groups (no churn).
fn check(tag: &str, process: &GoProcess, census: &Census, run: &Running, exact_total: bool) {
    let report = &run.report;
    assert_eq!(
        report["pid"].as_u64(),
        Some(u64::from(census.pid)),
        "{tag}: pid"
    );
    assert_eq!(
        report["go_version"].as_str(),
        Some(census.go_version.as_str()),
        "{tag}: version"
    );
    // With goroutines coming and going a g can be caught half-written: rare, and counted.
    let tolerated = if exact_total { 0 } else { 5 };
    assert!(
        census.skipped.invalid <= tolerated,
        "{tag}: {:?}",
        census.skipped
    );

    if exact_total {
        let expected = report["num_goroutine"].as_u64().expect("num_goroutine") as f64;
        let got = census.user_goroutines().count() as f64;
        assert!(
            (got - expected).abs() <= expected * 0.005,
            "{tag}: {got} user goroutines, runtime.NumGoroutine() said {expected}"
        );
    }

    // Group the census by creator function, as the traceback's "created by" line does.
    let mut by_creator: HashMap<String, Vec<&crate::goroutines::Goroutine>> = HashMap::new();
    for g in &census.goroutines {
        if let Some(pc) = g.created_by {
            let name = process
                .function(pc - 1)
                .unwrap_or_else(|| panic!("{tag}: creator pc {pc:#x} of {} unnamed", g.goid));
            by_creator.entry(name).or_default().push(g);
        }
    }
    for group in groups(report) {
        let members = by_creator
            .get(&group.creator)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert_eq!(
            members.len(),
            group.count,
            "{tag}: goroutines created by {}",
            group.creator
        );
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for g in members {
            *states.entry(printed_state(g)).or_default() += 1;
            assert_eq!(
                process.function(g.start_pc).as_deref(),
                Some(group.start.as_str()),
                "{tag}: start function of goroutine {}",
                g.goid
            );
            assert!(!g.system, "{tag}: goroutine {} counted as system", g.goid);
            // Parked since before the report's GC: the GC stamped waitsince in between.
            let since = g
                .wait_since_ns
                .unwrap_or_else(|| panic!("{tag}: goroutine {} has no waitsince", g.goid));
            assert!(
                (run.started_ns..=run.reported_ns).contains(&since),
                "{tag}: goroutine {} waits since {since}, outside {}..{}",
                g.goid,
                run.started_ns,
                run.reported_ns
            );
            // Its stack runs from where it parked down to its own function and goexit.
            assert_eq!(g.stack_status, StackStatus::Complete, "{tag}: {}", g.goid);
            let names: Vec<String> = g
                .stack_pcs
                .iter()
                .flat_map(|&pc| {
                    process
                        .stack_frame(pc)
                        .unwrap_or_else(|| panic!("{tag}: frame {pc:#x} of {} unnamed", g.goid))
                })
                .map(|f| f.function)
                .collect();
            assert_eq!(
                names.last().map(String::as_str),
                Some("runtime.goexit"),
                "{tag}: {names:?}"
            );
            assert!(
                names.contains(&group.start),
                "{tag}: stack of {} lacks {}: {names:?}",
                g.goid,
                group.start
            );
        }
        assert_eq!(
            states, group.states,
            "{tag}: states of goroutines created by {} (census vs the runtime's traceback)",
            group.creator
        );
    }

    // Every frame of every parked stack is named, whoever created it.
    for g in &census.goroutines {
        if g.state == GStatus::Running {
            assert_eq!(g.stack_status, StackStatus::Running);
            continue;
        }
        // (With churn, a goroutine may exit between its g and its stack being read.)
        if exact_total {
            assert!(
                !g.stack_pcs.is_empty(),
                "{tag}: goroutine {} has no stack",
                g.goid
            );
        }
        for &pc in &g.stack_pcs {
            assert!(
                process.stack_frame(pc).is_some(),
                "{tag}: goroutine {} frame {pc:#x} unnamed",
                g.goid
            );
        }
    }
}

#[test]
fn census_matches_what_the_runtime_reports() {
    for f in fixtures() {
        for (path, stripped) in f.builds() {
            let tag = format!("go{} {}", f.version, path.display());
            let run = start(path, &[]);
            let pid = run.child.id();
            let process = GoProcess::attach(pid).unwrap_or_else(|e| panic!("{tag}: {e}"));
            let (how, sources) = (process.allgs().1, process.sources());
            if stripped {
                assert_eq!(how, Found::Code, "{tag}");
                assert_eq!(
                    sources,
                    (Source::ReleaseTable, Source::ReleaseTable),
                    "{tag}"
                );
            } else {
                assert_eq!(how, Found::Symbol, "{tag}");
                assert_eq!(sources, (Source::Binary, Source::Binary), "{tag}");
            }
            let c = process.census().unwrap_or_else(|e| panic!("{tag}: {e}"));
            check(&tag, &process, &c, &run, true);
            assert_eq!(c.skipped.total(), 0, "{tag}: {:?}", c.skipped);
        }
    }
}

/// Goroutines created and ending while the list is read: every census succeeds, the
/// parked groups are still exact, and whatever was torn is counted, not reported.
#[test]
fn census_while_goroutines_come_and_go() {
    let fixtures = fixtures();
    // The oldest and the newest release (different layouts and wait reason numbering).
    for f in [fixtures.first(), fixtures.last()].into_iter().flatten() {
        let tag = format!("go{} churn", f.version);
        let run = start(&f.stripped, &["churn"]);
        let process = GoProcess::attach(run.child.id()).unwrap_or_else(|e| panic!("{tag}: {e}"));
        let mut churned = 0;
        for _ in 0..10 {
            let c = process.census().unwrap_or_else(|e| panic!("{tag}: {e}"));
            check(&tag, &process, &c, &run, false);
            churned += c.goroutines.len();
        }
        assert!(churned > 0, "{tag}");
    }
}

#[test]
fn refuses_a_process_that_is_not_go() {
    let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
    let result = census(child.id());
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Err(e @ GoroutineError::NotGo { .. }) => {
            assert!(e.to_string().contains("not a Go program"), "{e}")
        }
        other => panic!("expected NotGo, got {other:?}"),
    }
}

#[test]
fn refuses_a_process_that_exited() {
    let mut child = Command::new("true").spawn().expect("true");
    let pid = child.id();
    child.wait().expect("wait");
    match census(pid) {
        Err(GoroutineError::ProcessExited { pid: p }) => assert_eq!(p, pid),
        other => panic!("expected ProcessExited, got {other:?}"),
    }
}

/// A Go process that exits between attach and census: a typed error, not garbage.
#[test]
fn reports_a_go_process_that_exits_after_attach() {
    let f = fixtures().into_iter().last().expect("a fixture");
    let mut run = start(&f.stripped, &[]);
    let process = GoProcess::attach(run.child.id()).expect("attach");
    let _ = run.child.kill();
    let _ = run.child.wait();
    match process.census() {
        Err(GoroutineError::ProcessExited { .. }) => {}
        other => panic!("expected ProcessExited, got {other:?}"),
    }
}

#[test]
fn refuses_a_kernel_thread() {
    // kthreadd (pid 2) has no executable.
    match census(2) {
        Err(GoroutineError::NoExecutable { pid: 2 }) => {}
        other => panic!("expected NoExecutable, got {other:?}"),
    }
}
