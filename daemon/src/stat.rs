//! `loupe stat` reports: exact per-process figures of a window, one section per capability
//! (`sched`, `goroutines`; locks and TLS add theirs beside it).
//!
//! JSON schema (version 1; keys are stable, new keys and sections may be added):
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "pid": 1234,                 // the process (the launched command, or the only --pid);
//!                                // null for --all or several --pid
//!   "comm": "app",               // its name ("all processes", "pids 1,2" otherwise)
//!   "duration_ns": 2000000000,   // the window actually traced
//!   "exited": false,             // the process exited during the window (figures so far)
//!   "sched": {                   // every thread of every process below, summed
//!     "oncpu_ns": 0, "offcpu_ns": 0,            // running; blocked (sleeping, waiting on I/O)
//!     "runqueue_wait_ns": 0, "runqueue_waits": 0, // runnable but waiting for a CPU
//!     "runqueue_p50_ns": 0, "runqueue_p99_ns": 0, // quantiles of those waits
//!     "voluntary_switches": 0, "involuntary_switches": 0
//!   },
//!   "goroutines": {              // only when the process is a Go program: a census at the
//!     "live": 958,               // end of the window; live = runtime.NumGoroutine()
//!     "by_state": {"waiting": 950, "syscall": 2, "running": 1},   // the runtime's names
//!     "by_wait_reason": {"chan receive": 400, "select": 200},     // its wait reasons
//!     "sched_latency": {         // runnable -> running waits over the window
//!       "count": 80000,
//!       "mean_ns": 350000, "p50_ns": 200000, "p99_ns": 2000000,
//!       "source": "uprobe"       // --goroutine-events: every wait, exact mean; without it
//!                                // (always on, `--pid` or a command still running at the
//!                                // end): "runtime", the runtime's own histogram read at
//!                                // both ends of the window (/sched/latencies:seconds: one
//!                                // wait in eight, mean from bucket midpoints, within
//!                                // 12.5%; quantiles within a bucket, 25% wide)
//!     },
//!     // with --goroutine-events only (uprobes on the runtime), over the window:
//!     "created": 5000, "exited": 4990,   // goroutines started (`go` statements) and ended
//!     "blocked_by_wait_reason": {   // blocks that ended in the window (waiting -> runnable),
//!       "chan receive": {"count": 4000, "total_ns": 8000000000}   // by the runtime's reason
//!     },
//!     "created_by_site": {       // goroutines created, by the function whose `go` statement
//!       "main.spawn": 4990, "[other]": 3   // created them (the parent's function); top 20
//!     },
//!     "created_by_parent": [     // goroutines created, by the goroutine that executed the
//!       {"goroutine": 18, "created": 4990},  // `go` statement (its goid, the runtime's own
//!       {"goroutine": 1, "created": 10}      // id, as in a traceback's `goroutine 18 [`);
//!     ],                         // largest first, top 20; goroutine 0: created by the
//!                                // runtime with no goroutine running (runtime.main)
//!     "created_by_other_parents": 3   // the sum of those beyond the top 20
//!   },
//!   "processes": [               // one entry per process, largest on-CPU time first,
//!     {"pid": 1234, "comm": "app", "exited": false, "sched": {...}}   // same keys
//!   ],
//!   "drops": {"drop_sched_thread_map_full": 0}  // loss counters of the window
//! }
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::{
    collectors::goroutines as goroutine_events,
    engine::{HistogramKey, Window},
    histogram::LatencyHistogram,
};

/// Name of the run-queue latency histograms in the store.
pub const RUNQUEUE_HISTOGRAM: &str = "runqueue";

/// Per-thread counter names the scheduling collector fills.
pub mod counter {
    pub const ONCPU_NS: &str = "oncpu_ns";
    pub const OFFCPU_NS: &str = "offcpu_ns";
    pub const RUNQUEUE_WAIT_NS: &str = "runqueue_wait_ns";
    pub const RUNQUEUE_WAITS: &str = "runqueue_waits";
    pub const VOLUNTARY_SWITCHES: &str = "voluntary_switches";
    pub const INVOLUNTARY_SWITCHES: &str = "involuntary_switches";
}

/// The `sched` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SchedStat {
    pub oncpu_ns: u64,
    pub offcpu_ns: u64,
    pub runqueue_wait_ns: u64,
    pub runqueue_waits: u64,
    pub runqueue_p50_ns: u64,
    pub runqueue_p99_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl SchedStat {
    fn from_counters(values: &BTreeMap<&'static str, u64>, histogram: &LatencyHistogram) -> Self {
        let get = |name: &str| values.get(name).copied().unwrap_or(0);
        SchedStat {
            oncpu_ns: get(counter::ONCPU_NS),
            offcpu_ns: get(counter::OFFCPU_NS),
            runqueue_wait_ns: get(counter::RUNQUEUE_WAIT_NS),
            runqueue_waits: get(counter::RUNQUEUE_WAITS),
            runqueue_p50_ns: histogram.quantile(0.5),
            runqueue_p99_ns: histogram.quantile(0.99),
            voluntary_switches: get(counter::VOLUNTARY_SWITCHES),
            involuntary_switches: get(counter::INVOLUNTARY_SWITCHES),
        }
    }
}

/// The `goroutines` section: a census at the end of the window (see
/// `crate::goroutines::report`) and, with goroutine events, what happened during it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GoroutineStat {
    #[serde(flatten)]
    pub census: Option<crate::goroutines::report::Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sched_latency: Option<SchedLatency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by_wait_reason: Option<BTreeMap<String, Blocked>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_site: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_parent: Option<Vec<ParentCount>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_other_parents: Option<u64>,
}

/// Goroutines one parent goroutine created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ParentCount {
    /// The parent's goid (0: none, the runtime's bootstrap).
    pub goroutine: u64,
    pub created: u64,
}

/// Time goroutines spent blocked for one wait reason: blocks that ended, and their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub count: u64,
    pub total_ns: u64,
}

/// Creation sites kept by name in `created_by_site`; the rest are summed as [`OTHER_SITES`].
pub const TOP_SITES: usize = 20;
pub const OTHER_SITES: &str = "[other]";
/// Parent goroutines listed in `created_by_parent`; the rest are summed in
/// `created_by_other_parents`.
pub const TOP_PARENTS: usize = 20;

/// Runnable-to-running latency of goroutines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SchedLatency {
    pub count: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Where the figures come from: [`SOURCE_RUNTIME`] or [`SOURCE_UPROBE`].
    pub source: &'static str,
}

/// The runtime's own histogram (`runtime.sched.timeToRun`), read twice: a sample (one
/// wait in eight), a mean from bucket midpoints.
pub const SOURCE_RUNTIME: &str = "runtime";
/// `--goroutine-events`: every wait timed by uprobes, exact mean.
pub const SOURCE_UPROBE: &str = "uprobe";

impl SchedLatency {
    /// The figures of the runtime's histogram over a window (a difference of two reads).
    pub fn from_runtime(window: &crate::goroutines::sched_latency::RuntimeHistogram) -> Self {
        SchedLatency {
            count: window.count(),
            mean_ns: window.mean_ns(),
            p50_ns: window.quantile(0.5),
            p99_ns: window.quantile(0.99),
            source: SOURCE_RUNTIME,
        }
    }
}

impl GoroutineStat {
    /// The event figures of `pid` in `window`, if goroutine events traced it.
    pub fn events(window: &Window, pid: u32) -> Option<GoroutineStat> {
        let histogram = window.histograms.get(&HistogramKey {
            name: goroutine_events::SCHED_LATENCY_HISTOGRAM,
            pid,
        })?;
        let counter = |name| {
            window
                .process_counters
                .get(&(pid, name))
                .copied()
                .unwrap_or(0)
        };
        let labelled = |name: &'static str| {
            window
                .labelled_counters
                .iter()
                .filter(move |((p, n, _), _)| *p == pid && *n == name)
                .map(|((_, _, label), value)| (label.clone(), *value))
        };
        let mut blocked: BTreeMap<String, Blocked> = BTreeMap::new();
        for (reason, count) in labelled(goroutine_events::BLOCKED_COUNT) {
            blocked.entry(reason).or_default().count = count;
        }
        for (reason, ns) in labelled(goroutine_events::BLOCKED_NS) {
            blocked.entry(reason).or_default().total_ns = ns;
        }
        let parents = top_parents(labelled(goroutine_events::CREATED_BY_PARENT));
        Some(GoroutineStat {
            census: None,
            created: Some(counter(goroutine_events::CREATED)),
            exited: Some(counter(goroutine_events::EXITED)),
            sched_latency: Some(SchedLatency {
                count: histogram.count,
                mean_ns: histogram.mean_ns(),
                p50_ns: histogram.quantile(0.5),
                p99_ns: histogram.quantile(0.99),
                source: SOURCE_UPROBE,
            }),
            blocked_by_wait_reason: Some(blocked),
            created_by_site: Some(top_sites(labelled(goroutine_events::CREATED_BY_SITE))),
            created_by_parent: Some(parents.0),
            created_by_other_parents: Some(parents.1),
        })
    }
}

/// The [`TOP_PARENTS`] parent goroutines that created the most goroutines, largest first,
/// and the others' sum. Labels are goids in decimal (a label that is not one is left out).
fn top_parents(labels: impl Iterator<Item = (String, u64)>) -> (Vec<ParentCount>, u64) {
    let mut all: Vec<ParentCount> = labels
        .filter_map(|(goid, created)| {
            let goroutine = goid.parse().ok()?;
            (created > 0).then_some(ParentCount { goroutine, created })
        })
        .collect();
    all.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(a.goroutine.cmp(&b.goroutine))
    });
    let rest = all.iter().skip(TOP_PARENTS).map(|p| p.created).sum();
    all.truncate(TOP_PARENTS);
    (all, rest)
}

/// The [`TOP_SITES`] sites that created the most goroutines, and the others' sum.
fn top_sites(sites: impl Iterator<Item = (String, u64)>) -> BTreeMap<String, u64> {
    let mut all: Vec<(String, u64)> = sites.collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: u64 = all.iter().skip(TOP_SITES).map(|(_, n)| n).sum();
    let mut top: BTreeMap<String, u64> = all.into_iter().take(TOP_SITES).collect();
    if rest > 0 {
        *top.entry(OTHER_SITES.to_string()).or_default() += rest;
    }
    top
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcessStat {
    pub pid: u32,
    pub comm: String,
    pub exited: bool,
    pub sched: SchedStat,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatReport {
    pub schema_version: u32,
    pub pid: Option<u32>,
    pub comm: String,
    pub duration_ns: u64,
    pub exited: bool,
    pub sched: SchedStat,
    /// The subject's goroutines, when it is a Go program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<GoroutineStat>,
    pub processes: Vec<ProcessStat>,
    pub drops: BTreeMap<String, u64>,
}

/// Builds the report of a window. `subject` is the process the report is about (its pid and
/// name head the report), or none with a description (`all processes`).
pub fn report(window: &Window, subject: Option<u32>, description: &str) -> StatReport {
    // Sum thread counters per process.
    let mut per_process: HashMap<u32, (String, BTreeMap<&'static str, u64>)> = HashMap::new();
    for thread in window.threads.values() {
        let entry = per_process
            .entry(thread.pid)
            .or_insert_with(|| (thread.comm.clone(), BTreeMap::new()));
        for (name, value) in &thread.values {
            let slot = entry.1.entry(name).or_default();
            *slot = slot.saturating_add(*value);
        }
    }
    let histogram_of = |pid: u32| {
        window
            .histograms
            .get(&HistogramKey {
                name: RUNQUEUE_HISTOGRAM,
                pid,
            })
            .cloned()
            .unwrap_or_default()
    };
    let mut all_counters: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut all_histogram = LatencyHistogram::default();
    let mut processes: Vec<ProcessStat> = per_process
        .into_iter()
        .map(|(pid, (comm, values))| {
            let histogram = histogram_of(pid);
            for (name, value) in &values {
                let slot = all_counters.entry(name).or_default();
                *slot = slot.saturating_add(*value);
            }
            all_histogram.merge(&histogram);
            ProcessStat {
                pid,
                comm,
                exited: window.exited.contains(&pid),
                sched: SchedStat::from_counters(&values, &histogram),
            }
        })
        .collect();
    processes.sort_by(|a, b| {
        b.sched
            .oncpu_ns
            .cmp(&a.sched.oncpu_ns)
            .then(a.pid.cmp(&b.pid))
    });
    let comm = subject
        .and_then(|pid| processes.iter().find(|p| p.pid == pid))
        .map(|p| p.comm.clone())
        .unwrap_or_else(|| description.to_string());
    StatReport {
        schema_version: 1,
        pid: subject,
        comm,
        duration_ns: u64::try_from(window.duration.as_nanos()).unwrap_or(u64::MAX),
        exited: subject.is_some_and(|pid| window.exited.contains(&pid)),
        sched: SchedStat::from_counters(&all_counters, &all_histogram),
        goroutines: subject.and_then(|pid| GoroutineStat::events(window, pid)),
        processes,
        drops: window.drops().into_iter().collect(),
    }
}

/// The readable table: one line per process, then the total.
pub fn render_table(
    report: &StatReport,
    rows: usize,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use crate::profile::format_nanos as t;
    writeln!(
        out,
        "loupe: scheduling of {} over {}",
        report.comm,
        t(report.duration_ns)
    )?;
    writeln!(
        out,
        "{:>8}  {:<16} {:>11} {:>11} {:>11} {:>10} {:>10} {:>8} {:>8}",
        "pid",
        "comm",
        "on-cpu",
        "off-cpu",
        "runq wait",
        "runq p50",
        "runq p99",
        "vol sw",
        "invol sw"
    )?;
    let line = |out: &mut dyn std::io::Write, pid: String, comm: &str, s: &SchedStat| {
        writeln!(
            out,
            "{pid:>8}  {comm:<16} {:>11} {:>11} {:>11} {:>10} {:>10} {:>8} {:>8}",
            t(s.oncpu_ns),
            t(s.offcpu_ns),
            t(s.runqueue_wait_ns),
            t(s.runqueue_p50_ns),
            t(s.runqueue_p99_ns),
            s.voluntary_switches,
            s.involuntary_switches
        )
    };
    for p in report.processes.iter().take(rows) {
        let pid = if p.exited {
            format!("{}*", p.pid)
        } else {
            p.pid.to_string()
        };
        line(out, pid, &p.comm, &p.sched)?;
    }
    if report.processes.len() > rows {
        writeln!(
            out,
            "  ... {} more processes",
            report.processes.len() - rows
        )?;
    }
    if report.processes.len() != 1 {
        line(out, "all".into(), "", &report.sched)?;
    }
    if report.processes.iter().any(|p| p.exited) {
        writeln!(out, "* exited during the window: figures until its exit")?;
    }
    if let Some(g) = &report.goroutines {
        render_goroutines(g, out)?;
    }
    let lost: Vec<String> = report
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if !lost.is_empty() {
        writeln!(out, "losses: {}", lost.join(", "))?;
    }
    Ok(())
}

fn render_goroutines(g: &GoroutineStat, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use crate::profile::format_nanos as t;
    match &g.census {
        Some(c) => {
            let counts = |map: &BTreeMap<String, u64>| {
                let mut v: Vec<_> = map.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                v.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(out, "goroutines: {} live ({})", c.live, counts(&c.by_state))?;
            if !c.by_wait_reason.is_empty() {
                writeln!(out, "  waiting on: {}", counts(&c.by_wait_reason))?;
            }
        }
        None => writeln!(out, "goroutines:")?,
    }
    if let (Some(created), Some(exited)) = (g.created, g.exited) {
        writeln!(
            out,
            "  during the window: {created} created, {exited} exited"
        )?;
    }
    if let Some(l) = &g.sched_latency {
        let source = if l.source == SOURCE_RUNTIME {
            "the runtime's 1-in-8 sample"
        } else {
            "every wait"
        };
        writeln!(
            out,
            "  scheduling latency (runnable to running, {source}): {} waits, mean {}, p50 {}, p99 {}",
            l.count,
            t(l.mean_ns),
            t(l.p50_ns),
            t(l.p99_ns)
        )?;
    }
    if let Some(blocked) = g.blocked_by_wait_reason.as_ref().filter(|b| !b.is_empty()) {
        let mut by_time: Vec<_> = blocked.iter().collect();
        by_time.sort_by(|a, b| b.1.total_ns.cmp(&a.1.total_ns).then(a.0.cmp(b.0)));
        writeln!(out, "  blocked (waiting to runnable), by wait reason:")?;
        for (reason, b) in by_time {
            writeln!(
                out,
                "    {reason:<28} {:>8} blocks {:>11} total, mean {}",
                b.count,
                t(b.total_ns),
                t(b.total_ns / b.count.max(1))
            )?;
        }
    }
    if let Some(sites) = g.created_by_site.as_ref().filter(|s| !s.is_empty()) {
        let mut by_count: Vec<_> = sites.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = by_count.iter().map(|(f, n)| format!("{f} {n}")).collect();
        writeln!(out, "  created by: {}", list.join(", "))?;
    }
    if let Some(parents) = g.created_by_parent.as_ref().filter(|p| !p.is_empty()) {
        let mut list: Vec<String> = parents
            .iter()
            .map(|p| format!("goroutine {} {}", p.goroutine, p.created))
            .collect();
        if let Some(rest) = g.created_by_other_parents.filter(|n| *n > 0) {
            list.push(format!("others {rest}"));
        }
        writeln!(out, "  created by parent: {}", list.join(", "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Store;

    #[test]
    fn processes_sum_their_threads_and_the_total_sums_processes() {
        let mut store = Store::default();
        store.add_thread_counter(10, 10, "app", counter::ONCPU_NS, 100);
        store.add_thread_counter(10, 11, "app", counter::ONCPU_NS, 50);
        store.add_thread_counter(10, 11, "app", counter::RUNQUEUE_WAITS, 2);
        store.add_thread_counter(20, 20, "other", counter::ONCPU_NS, 400);
        for ns in [1_000, 3_000] {
            store
                .histogram(HistogramKey {
                    name: RUNQUEUE_HISTOGRAM,
                    pid: 10,
                })
                .record(ns);
        }
        store.exited.insert(20);
        let window = store.take_window(HashMap::new(), vec![("drop_x".into(), 0)]);
        let r = report(&window, Some(10), "pid 10");
        assert_eq!(r.comm, "app");
        assert_eq!(r.sched.oncpu_ns, 550);
        assert_eq!(r.processes.len(), 2);
        assert_eq!(r.processes[0].pid, 20, "largest on-CPU first");
        assert!(r.processes[0].exited);
        let app = &r.processes[1];
        assert_eq!((app.sched.oncpu_ns, app.sched.runqueue_waits), (150, 2));
        assert!(app.sched.runqueue_p50_ns >= 1_000 && app.sched.runqueue_p99_ns < 3_200);
        assert!(!r.exited);
        let mut text = Vec::new();
        render_table(&r, 10, &mut text).expect("table");
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("20*"), "{text}");
    }

    #[test]
    fn goroutine_events_of_the_subject_fill_the_goroutines_section() {
        let mut store = Store::default();
        store.add_thread_counter(10, 10, "app", counter::ONCPU_NS, 100);
        store.add_process_counter(10, goroutine_events::CREATED, 7);
        store.add_process_counter(10, goroutine_events::CREATED, 3);
        store.add_process_counter(10, goroutine_events::EXITED, 9);
        let latency = HistogramKey {
            name: goroutine_events::SCHED_LATENCY_HISTOGRAM,
            pid: 10,
        };
        for ns in [1_000, 2_000, 3_000, 100_000] {
            store.histogram(latency).record(ns);
        }
        let window = store.take_window(HashMap::new(), Vec::new());
        let g = report(&window, Some(10), "pid 10")
            .goroutines
            .expect("events were traced");
        assert_eq!((g.created, g.exited), (Some(10), Some(9)));
        let l = g.sched_latency.clone().expect("latency");
        assert_eq!((l.count, l.mean_ns), (4, 26_500));
        assert!(l.p50_ns >= 2_000 && l.p50_ns < 2_300, "{l:?}");
        assert!(l.p99_ns >= 100_000, "{l:?}");
        // Without a census, the section has no census keys.
        let json = serde_json::to_value(&g).expect("json");
        assert!(
            json.get("live").is_none() && json["created"] == 10,
            "{json}"
        );
        let mut text = Vec::new();
        render_goroutines(&g, &mut text).expect("table");
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("10 created, 9 exited"), "{text}");
        // Blocked time and creation sites: absent labels are empty maps, not missing keys.
        assert_eq!(g.blocked_by_wait_reason, Some(BTreeMap::new()));
        assert_eq!(json["created_by_site"], serde_json::json!({}));
        assert_eq!(json["created_by_parent"], serde_json::json!([]));
        assert_eq!(json["created_by_other_parents"], 0);
        // Another process, or a window without events: no section.
        assert!(report(&window, Some(11), "pid 11").goroutines.is_none());
        assert!(GoroutineStat::events(&window, 11).is_none());
    }

    #[test]
    fn runtime_sched_latency_is_marked_as_the_runtimes_sample() {
        use crate::goroutines::sched_latency::{RuntimeHistogram, Scheme};
        let scheme = Scheme::Go120;
        let mut counts = vec![0; scheme.buckets()];
        // Sub-bucket 0 of bucket 1 ([256, 320) ns) and of bucket 5 ([4096, 5120) ns).
        counts[4] = 3;
        counts[20] = 1;
        let h = RuntimeHistogram {
            scheme,
            counts,
            underflow: 0,
            overflow: 0,
        };
        let l = SchedLatency::from_runtime(&h);
        assert_eq!((l.count, l.source), (4, SOURCE_RUNTIME));
        assert_eq!(l.mean_ns, (3 * 288 + 4608) / 4);
        assert!((256..320).contains(&l.p50_ns) && (4096..=5120).contains(&l.p99_ns));
        let g = GoroutineStat {
            sched_latency: Some(l),
            ..Default::default()
        };
        let json = serde_json::to_value(&g).expect("json");
        assert_eq!(json["sched_latency"]["source"], "runtime", "{json}");
        let mut text = Vec::new();
        render_goroutines(&g, &mut text).expect("table");
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("the runtime's 1-in-8 sample): 4 waits"),
            "{text}"
        );
    }

    #[test]
    fn blocked_time_by_reason_and_the_top_creation_sites() {
        let mut store = Store::default();
        store
            .histogram(HistogramKey {
                name: goroutine_events::SCHED_LATENCY_HISTOGRAM,
                pid: 10,
            })
            .record(1_000);
        for (reason, n, ns) in [
            ("chan receive", 3, 300),
            ("sleep", 1, 50),
            ("chan receive", 1, 20),
        ] {
            store.add_labelled_counter(10, goroutine_events::BLOCKED_COUNT, reason, n);
            store.add_labelled_counter(10, goroutine_events::BLOCKED_NS, reason, ns);
        }
        // Another process's figures stay out of pid 10's section.
        store.add_labelled_counter(11, goroutine_events::BLOCKED_COUNT, "select", 9);
        for i in 0..TOP_SITES as u64 + 2 {
            let site = format!("main.f{i:02}");
            store.add_labelled_counter(10, goroutine_events::CREATED_BY_SITE, &site, 100 - i);
        }
        let window = store.take_window(HashMap::new(), Vec::new());
        let g = report(&window, Some(10), "pid 10")
            .goroutines
            .expect("events");
        let json = serde_json::to_value(&g).expect("json");
        assert_eq!(
            json["blocked_by_wait_reason"],
            serde_json::json!({
                "chan receive": {"count": 4, "total_ns": 320},
                "sleep": {"count": 1, "total_ns": 50}
            })
        );
        let sites = g.created_by_site.clone().expect("sites");
        assert_eq!(sites.len(), TOP_SITES + 1);
        assert_eq!(sites["main.f00"], 100);
        // The two smallest (main.f20: 80, main.f21: 79) are summed.
        assert_eq!(sites[OTHER_SITES], 80 + 79);
        assert!(!sites.contains_key("main.f20"));
        let mut text = Vec::new();
        render_goroutines(&g, &mut text).expect("table");
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("chan receive") && text.contains("main.f00 100"),
            "{text}"
        );
    }

    #[test]
    fn the_top_parent_goroutines_largest_first_and_the_others_summed() {
        let mut store = Store::default();
        store
            .histogram(HistogramKey {
                name: goroutine_events::SCHED_LATENCY_HISTOGRAM,
                pid: 10,
            })
            .record(1_000);
        // Goroutine 100 + i created 10 + i; two readings of goroutine 7 add up: 22 parents.
        for i in 0..TOP_PARENTS as u64 + 1 {
            let goid = (100 + i).to_string();
            store.add_labelled_counter(10, goroutine_events::CREATED_BY_PARENT, &goid, 10 + i);
        }
        store.add_labelled_counter(10, goroutine_events::CREATED_BY_PARENT, "7", 500);
        store.add_labelled_counter(10, goroutine_events::CREATED_BY_PARENT, "7", 1);
        store.add_labelled_counter(11, goroutine_events::CREATED_BY_PARENT, "3", 900);
        let window = store.take_window(HashMap::new(), Vec::new());
        let g = report(&window, Some(10), "pid 10")
            .goroutines
            .expect("events");
        let parents = g.created_by_parent.clone().expect("parents");
        assert_eq!(parents.len(), TOP_PARENTS);
        assert_eq!(
            parents[..2],
            [
                ParentCount {
                    goroutine: 7,
                    created: 501
                },
                ParentCount {
                    goroutine: 120,
                    created: 30
                }
            ]
        );
        assert!(parents.windows(2).all(|w| w[0].created >= w[1].created));
        // Left out: goroutines 100 (10) and 101 (11), the smallest.
        assert_eq!(g.created_by_other_parents, Some(10 + 11));
        assert!(parents
            .iter()
            .all(|p| ![3, 100, 101].contains(&p.goroutine)));
        let json = serde_json::to_value(&g).expect("json");
        assert_eq!(
            json["created_by_parent"][0],
            serde_json::json!({"goroutine": 7, "created": 501})
        );
        let mut text = Vec::new();
        render_goroutines(&g, &mut text).expect("table");
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("created by parent: goroutine 7 501, goroutine 120 30")
                && text.contains("others 21"),
            "{text}"
        );
    }
}
