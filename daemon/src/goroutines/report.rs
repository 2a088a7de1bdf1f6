//! `loupe goroutines` reports of a [`Snapshot`]: goroutines grouped per identical stack
//! (like Go's `debug=1` goroutine dump), or the leak view (goroutines blocked longer than a
//! threshold, grouped per creation site and wait reason), as a table or as JSON.
//!
//! JSON schema (version 1; keys are stable, new keys may be added):
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "pid": 1234,
//!   "comm": "server",
//!   "go_version": "go1.24.11",
//!   "live": 958,                  // goroutines runtime.NumGoroutine() counts
//!   "system": 4,                  // the runtime's own goroutines (GC workers, ...): not in
//!                                 // live, by_state, by_wait_reason or groups
//!   "by_state": {"waiting": 950, "syscall": 2, "running": 1, ...},  // the runtime's state names
//!   "by_wait_reason": {"chan receive": 400, "select": 200, ...},    // its wait reason strings
//!   "view": "stacks",             // "stacks": one group per identical stack, state and
//!                                 // creation site; "leaks": one per creation site and wait
//!                                 // reason, of goroutines blocked longer than older_than_ns
//!   "older_than_ns": null,        // the leak threshold (null in the stacks view)
//!   "groups": [                   // largest first
//!     {
//!       "count": 300,
//!       "state": "waiting",
//!       "wait_reason": "chan receive",  // null unless waiting with a reason
//!       "waiting_ns": {"min": 2100000000, "max": 2300000000},
//!                                 // how long its goroutines have been blocked; null when
//!                                 // the runtime does not know yet (no GC saw them blocked)
//!       "created_by": {"function": "main.spawn", "file": "/src/main.go", "line": 80,
//!                      "inlined": false},   // the `go` statement; null for main
//!       "stack": [{"function": "runtime.gopark", "file": "...", "line": 425,
//!                  "inlined": false}, ...]  // leaf first; in the leaks view the stack most
//!                                           // of the group share
//!     }
//!   ],
//!   "skipped": 0,                 // list entries not read as goroutines (torn while read)
//!   "truncated_stacks": 0         // stacks not unwound to their root
//! }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use super::snapshot::{NamedFrame, NamedGoroutine, Snapshot};
use super::{Census, GStatus};
use crate::profile::format_nanos;

pub const SCHEMA_VERSION: u32 = 1;

/// Live goroutines counted per state and per wait reason (keys are the runtime's strings).
/// Also the `goroutines` section of `loupe stat`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub live: u64,
    pub by_state: BTreeMap<String, u64>,
    pub by_wait_reason: BTreeMap<String, u64>,
}

impl Counts {
    pub fn of(snapshot: &Snapshot) -> Counts {
        Counts::from_states(
            snapshot
                .user_goroutines()
                .map(|g| (g.state, g.wait_reason.as_deref())),
        )
    }

    /// The same counts from a census whose stacks are not named (the daemon's periodic
    /// census, which needs no names).
    pub fn of_census(census: &Census) -> Counts {
        Counts::from_states(
            census
                .user_goroutines()
                .map(|g| (g.state, g.wait_reason.as_deref())),
        )
    }

    /// Counts of (state, wait reason) pairs, one per user goroutine.
    fn from_states<'a>(goroutines: impl Iterator<Item = (GStatus, Option<&'a str>)>) -> Counts {
        let mut counts = Counts::default();
        for (state, wait_reason) in goroutines {
            counts.live += 1;
            *counts.by_state.entry(state.name().to_string()).or_default() += 1;
            if let Some(reason) = wait_reason {
                *counts.by_wait_reason.entry(reason.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

/// Goroutines runtime.NumGoroutine() counts that have been blocked longer than
/// `older_than_ns`: the goroutines the leak view groups.
pub fn leak_suspects(census: &Census, older_than_ns: u64) -> u64 {
    census
        .user_goroutines()
        .filter(|g| {
            g.waiting_ns(census.taken_at_ns)
                .is_some_and(|w| w > older_than_ns)
        })
        .count() as u64
}

/// The shortest and longest wait of a group's goroutines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WaitRange {
    pub min: u64,
    pub max: u64,
}

/// Goroutines reported together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    pub count: u64,
    pub state: &'static str,
    pub wait_reason: Option<String>,
    pub waiting_ns: Option<WaitRange>,
    pub created_by: Option<NamedFrame>,
    pub stack: Vec<NamedFrame>,
}

/// Which grouping a report shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    Stacks,
    Leaks,
}

/// The JSON document (see the module documentation).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub pid: u32,
    pub comm: String,
    pub go_version: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub system: u64,
    pub view: View,
    pub older_than_ns: Option<u64>,
    pub groups: Vec<Group>,
    pub skipped: u64,
    pub truncated_stacks: u64,
}

/// The report of `snapshot`: per identical stack, or (with `leaks_older_than`) the leak view.
pub fn report(snapshot: &Snapshot, leaks_older_than: Option<Duration>) -> Report {
    let (view, older_than_ns, groups) = match leaks_older_than {
        None => (View::Stacks, None, stack_groups(snapshot)),
        Some(d) => {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            (View::Leaks, Some(ns), leak_groups(snapshot, ns))
        }
    };
    Report {
        schema_version: SCHEMA_VERSION,
        pid: snapshot.pid,
        comm: snapshot.comm.clone(),
        go_version: snapshot.go_version.clone(),
        counts: Counts::of(snapshot),
        system: snapshot.goroutines.iter().filter(|g| g.system).count() as u64,
        view,
        older_than_ns,
        groups,
        skipped: snapshot.skipped,
        truncated_stacks: snapshot.truncated_stacks,
    }
}

/// Builds a group from its members (at least one); `stack` is the members' shared stack.
fn group(members: &[&NamedGoroutine], stack: Vec<NamedFrame>) -> Group {
    let first = members[0];
    let waits = members.iter().filter_map(|g| g.waiting_ns);
    let waiting_ns = waits
        .clone()
        .min()
        .zip(waits.max())
        .map(|(min, max)| WaitRange { min, max });
    Group {
        count: members.len() as u64,
        state: first.state.name(),
        wait_reason: first.wait_reason.clone(),
        waiting_ns,
        created_by: first.created_by.clone(),
        stack,
    }
}

/// Largest first; equal counts in a stable order (by wait reason, creator, stack).
fn sort_groups(groups: &mut [Group]) {
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.wait_reason.cmp(&b.wait_reason))
            .then_with(|| a.state.cmp(b.state))
            .then_with(|| a.created_by.cmp(&b.created_by))
            .then_with(|| a.stack.cmp(&b.stack))
    });
}

type StackKey<'a> = (
    &'static str,
    Option<&'a str>,
    Option<&'a NamedFrame>,
    &'a [NamedFrame],
);

/// One group per identical (state, wait reason, creation site, stack).
fn stack_groups(snapshot: &Snapshot) -> Vec<Group> {
    let mut by_key: HashMap<StackKey, Vec<&NamedGoroutine>> = HashMap::new();
    for g in snapshot.user_goroutines() {
        let key = (
            g.state.name(),
            g.wait_reason.as_deref(),
            g.created_by.as_ref(),
            g.stack.as_slice(),
        );
        by_key.entry(key).or_default().push(g);
    }
    let mut groups: Vec<Group> = by_key
        .into_values()
        .map(|members| group(&members, members[0].stack.clone()))
        .collect();
    sort_groups(&mut groups);
    groups
}

/// Goroutines blocked longer than `older_than_ns`, one group per (creation site, state,
/// wait reason), with the stack most of the group share.
fn leak_groups(snapshot: &Snapshot, older_than_ns: u64) -> Vec<Group> {
    type LeakKey<'a> = (Option<&'a NamedFrame>, &'static str, Option<&'a str>);
    let mut by_key: HashMap<LeakKey, Vec<&NamedGoroutine>> = HashMap::new();
    for g in snapshot.user_goroutines() {
        if g.waiting_ns.is_some_and(|w| w > older_than_ns) {
            let key = (
                g.created_by.as_ref(),
                g.state.name(),
                g.wait_reason.as_deref(),
            );
            by_key.entry(key).or_default().push(g);
        }
    }
    let mut groups: Vec<Group> = by_key
        .into_values()
        .map(|members| {
            let mut stacks: HashMap<&[NamedFrame], usize> = HashMap::new();
            for g in &members {
                *stacks.entry(g.stack.as_slice()).or_default() += 1;
            }
            let common = stacks
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(stack, _)| stack.to_vec())
                .unwrap_or_default();
            group(&members, common)
        })
        .collect();
    sort_groups(&mut groups);
    groups
}

/// The readable table: a heading, then each group with its stack.
pub fn render_table(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let live = report.counts.live;
    match report.older_than_ns {
        None => writeln!(
            out,
            "goroutines of pid {} ({}, {}): {live} live, {} system not shown",
            report.pid, report.comm, report.go_version, report.system
        )?,
        Some(ns) => {
            let leaked: u64 = report.groups.iter().map(|g| g.count).sum();
            writeln!(
                out,
                "goroutines of pid {} ({}, {}) blocked longer than {}: {leaked} of {live} live, \
                 in {} by creation site and wait reason",
                report.pid,
                report.comm,
                report.go_version,
                format_nanos(ns),
                match report.groups.len() {
                    1 => "1 group".to_string(),
                    n => format!("{n} groups"),
                }
            )?
        }
    }
    if report.skipped > 0 || report.truncated_stacks > 0 {
        writeln!(
            out,
            "losses: skipped={} (torn while read), truncated_stacks={}",
            report.skipped, report.truncated_stacks
        )?;
    }
    for g in &report.groups {
        writeln!(out)?;
        let waiting = match g.waiting_ns {
            Some(w) if w.min == w.max => format!(", {}", format_nanos(w.min)),
            Some(w) => format!(", {} to {}", format_nanos(w.min), format_nanos(w.max)),
            None => String::new(),
        };
        let shown = g.wait_reason.as_deref().unwrap_or(g.state);
        writeln!(out, "{} [{shown}{waiting}]", g.count)?;
        if report.view == View::Leaks {
            writeln!(out, "  most common stack:")?;
        }
        for frame in &g.stack {
            writeln!(out, "    {}", describe(frame))?;
        }
        match &g.created_by {
            Some(site) => writeln!(out, "  created by {}", describe(site))?,
            None => writeln!(out, "  (started by the runtime)")?,
        }
    }
    Ok(())
}

/// `main.worker  /src/main.go:42` (inlined calls marked).
fn describe(frame: &NamedFrame) -> String {
    let place = match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("  {file}:{line}"),
        (Some(file), None) => format!("  {file}"),
        _ => String::new(),
    };
    let inlined = if frame.inlined { " (inlined)" } else { "" };
    format!("{}{inlined}{place}", frame.function)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::goroutines::{GStatus, StackStatus};

    pub fn frame(name: &str) -> NamedFrame {
        NamedFrame {
            function: name.into(),
            file: Some("/src/main.go".into()),
            line: Some(7),
            inlined: false,
        }
    }

    pub fn goroutine(
        state: GStatus,
        reason: Option<&str>,
        waiting_s: Option<u64>,
        creator: &str,
        stack: &[&str],
    ) -> NamedGoroutine {
        NamedGoroutine {
            goid: 1,
            state,
            wait_reason: reason.map(str::to_string),
            waiting_ns: waiting_s.map(|s| s * 1_000_000_000),
            created_by: Some(frame(creator)),
            stack: stack.iter().map(|f| frame(f)).collect(),
            stack_status: StackStatus::Complete,
            system: false,
        }
    }

    pub fn snapshot(goroutines: Vec<NamedGoroutine>) -> Snapshot {
        Snapshot {
            pid: 42,
            comm: "app".into(),
            executable: "app".into(),
            go_version: "go1.24.11".into(),
            taken_at: std::time::SystemTime::UNIX_EPOCH,
            goroutines,
            skipped: 0,
            truncated_stacks: 0,
        }
    }

    fn sample() -> Snapshot {
        use GStatus::*;
        let recv = ["runtime.gopark", "main.recv", "runtime.goexit"];
        let mut gs = vec![
            goroutine(Waiting, Some("chan receive"), Some(90), "main.leak", &recv),
            goroutine(Waiting, Some("chan receive"), Some(120), "main.leak", &recv),
            goroutine(
                Waiting,
                Some("chan receive"),
                Some(70),
                "main.leak",
                &["main.other"],
            ),
            goroutine(Waiting, Some("chan receive"), Some(5), "main.spawn", &recv),
            goroutine(Waiting, Some("chan receive"), Some(6), "main.spawn", &recv),
            goroutine(Waiting, Some("chan receive"), None, "main.spawn", &recv),
            goroutine(Waiting, Some("chan receive"), None, "main.spawn", &recv),
            goroutine(
                Waiting,
                Some("select"),
                Some(61),
                "main.sel",
                &["main.sel2"],
            ),
            goroutine(Running, None, None, "main.spin", &[]),
        ];
        let mut system = goroutine(Waiting, Some("GC worker (idle)"), None, "runtime.gc", &[]);
        system.system = true;
        gs.push(system);
        snapshot(gs)
    }

    #[test]
    fn counts_leave_out_the_runtimes_own_goroutines() {
        let c = Counts::of(&sample());
        assert_eq!(c.live, 9);
        assert_eq!(c.by_state["waiting"], 8);
        assert_eq!(c.by_state["running"], 1);
        assert_eq!(c.by_wait_reason["chan receive"], 7);
        assert!(!c.by_wait_reason.contains_key("GC worker (idle)"));
    }

    #[test]
    fn identical_stacks_group_largest_first() {
        let r = report(&sample(), None);
        assert_eq!(r.system, 1);
        let counts: Vec<u64> = r.groups.iter().map(|g| g.count).collect();
        assert_eq!(counts, [4, 2, 1, 1, 1]);
        let top = &r.groups[0];
        assert_eq!(top.created_by, Some(frame("main.spawn")));
        // Two of its four have a known wait.
        assert_eq!(
            top.waiting_ns,
            Some(WaitRange {
                min: 5_000_000_000,
                max: 6_000_000_000
            })
        );
        assert_eq!(r.groups.iter().map(|g| g.count).sum::<u64>(), r.counts.live);
    }

    #[test]
    fn leaks_group_by_creation_site_and_reason_above_the_threshold() {
        let r = report(&sample(), Some(Duration::from_secs(60)));
        assert_eq!(r.view, View::Leaks);
        assert_eq!(r.groups.len(), 2);
        let leak = &r.groups[0];
        assert_eq!(leak.count, 3);
        assert_eq!(leak.created_by, Some(frame("main.leak")));
        assert_eq!(leak.stack[1], frame("main.recv"), "most common stack");
        assert_eq!(
            leak.waiting_ns.map(|w| (w.min, w.max)),
            Some((70e9 as u64, 120e9 as u64))
        );
        assert_eq!(r.groups[1].wait_reason.as_deref(), Some("select"));
        // Unknown waits are never called leaks; a threshold above every wait leaves none.
        assert!(report(&sample(), Some(Duration::from_secs(200)))
            .groups
            .is_empty());
    }

    #[test]
    fn table_and_json_show_every_group() {
        let r = report(&sample(), Some(Duration::from_secs(60)));
        let mut text = Vec::new();
        render_table(&r, &mut text).expect("table");
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("3 [chan receive, 70.000 s to 120.000 s]"),
            "{text}"
        );
        assert!(
            text.contains("created by main.leak  /src/main.go:7"),
            "{text}"
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["view"], "leaks");
        assert_eq!(json["live"], 9);
        assert_eq!(json["by_wait_reason"]["select"], 1);
        assert_eq!(json["groups"][0]["created_by"]["function"], "main.leak");
    }
}
