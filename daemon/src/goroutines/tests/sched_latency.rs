//! The runtime's scheduling latency histogram: the per-release `runtime.schedt` table and
//! bucket schemes against each real binary (DWARF, symbols, and the runtime's own
//! `runtime/metrics` bucket boundaries printed by the gevents fixture), and reads of a
//! running program, stripped and not.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use object::{Object, ObjectSymbol};
use serde_json::Value;

use super::{expected_versions, fixtures, fixtures_root};
use crate::goroutines::binary::{Binary, Source, SYM_SCHED};
use crate::goroutines::sched_latency::{self, Reader, Scheme};
use crate::goroutines::{dwarf, layout, Found, GoroutineError};
use crate::symbolize::go::minor_version;

fn minor(version: &str) -> u32 {
    minor_version(&format!("go{version}")).expect("minor")
}

fn scheme(version: &str) -> Scheme {
    Scheme::for_minor(minor(version)).unwrap_or_else(|| panic!("go{version}: no histogram scheme"))
}

/// The gevents fixture of every expected version: (version, stripped, with symbols).
fn gevents() -> Vec<(String, PathBuf, PathBuf)> {
    let root = fixtures_root();
    expected_versions()
        .into_iter()
        .map(|v| {
            let dir = root.join(format!("go{v}"));
            let (stripped, debug) = (dir.join("gevents"), dir.join("gevents.debug"));
            for p in [&stripped, &debug] {
                assert!(
                    p.is_file(),
                    "{} is missing: run `cargo xtask fixtures`",
                    p.display()
                );
            }
            (v, stripped, debug)
        })
        .collect()
}

#[test]
fn sched_layout_table_matches_dwarf_of_every_release() {
    for f in fixtures() {
        let data = std::fs::read(&f.debug).expect("read fixture");
        let elf = object::File::parse(&*data).expect("parse fixture");
        let structs = dwarf::struct_members(&elf, &layout::SCHED_DWARF_STRUCTS)
            .expect("readable DWARF")
            .unwrap_or_else(|| panic!("go{}: no DWARF", f.version));
        let from_dwarf = layout::sched_from_dwarf(&structs, &scheme(&f.version))
            .unwrap_or_else(|e| panic!("go{}: {e}", f.version));
        assert_eq!(
            layout::sched_for_minor(minor(&f.version)),
            Some(from_dwarf),
            "go{}: the runtime.schedt table disagrees with the binary's DWARF",
            f.version
        );
    }
}

/// Each scheme's bucket bounds are the ones `runtime/metrics` reports for
/// `/sched/latencies:seconds` in that release: -Inf (underflow), every bucket's lower
/// bound, the overflow's (1.20+), +Inf.
#[test]
fn bucket_schemes_match_the_runtime_metrics_of_every_release() {
    for (version, stripped, _) in gevents() {
        let out = Command::new(&stripped)
            .arg("buckets")
            .output()
            .unwrap_or_else(|e| panic!("go{version}: {e}"));
        assert!(out.status.success(), "go{version}: {}", out.status);
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let runtime: Vec<u64> = v["finite_ns"]
            .as_array()
            .expect("finite_ns")
            .iter()
            .map(|x| x.as_u64().expect("ns"))
            .collect();
        assert_eq!(v["neg_inf_first"], true, "go{version}");
        assert_eq!(v["pos_inf_last"], true, "go{version}");
        let s = scheme(&version);
        let mut ours: Vec<u64> = (0..s.buckets()).map(|i| s.bounds(i).0).collect();
        ours.extend(s.overflow_from());
        assert_eq!(ours, runtime, "go{version} ({s:?}): bucket bounds");
    }
}

/// In stripped builds the code search finds the `runtime.sched` the symbol table names.
#[test]
fn sched_found_from_code_is_the_symbol() {
    for f in fixtures() {
        let data = std::fs::read(&f.debug).expect("read fixture");
        let elf = object::File::parse(&*data).expect("parse fixture");
        let sched = elf
            .symbols()
            .find(|s| s.name() == Ok(SYM_SCHED))
            .map(|s| s.address())
            .unwrap_or_else(|| panic!("go{}: no runtime.sched symbol", f.version));
        let layout = layout::sched_for_minor(minor(&f.version)).expect("table");
        for (path, _) in f.builds() {
            let bin = Binary::from_file(path).unwrap_or_else(|e| panic!("go{}: {e}", f.version));
            let candidates = sched_latency::candidates_from_code(&bin, &layout);
            assert_eq!(
                candidates.first(),
                Some(&sched),
                "go{} {}: best of {candidates:x?} is not runtime.sched {sched:#x}",
                f.version,
                path.display()
            );
        }
    }
}

/// A started gevents fixture (killed when dropped), after its ready line: the runtime has
/// scheduled goroutines (two GCs) by then.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(path: &Path) -> (Started, u32) {
    let mut child = Command::new(path)
        .arg("window")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let started = Started(child);
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let ready: Value = serde_json::from_str(&line).expect("ready JSON");
    (started, ready["pid"].as_u64().expect("pid") as u32)
}

#[test]
fn reads_the_histogram_of_a_running_program_stripped_or_not() {
    for (version, stripped, debug) in gevents() {
        for (path, is_stripped) in [(&stripped, true), (&debug, false)] {
            let (_running, pid) = start(path);
            let attached = std::time::Instant::now();
            let reader = Reader::attach(pid).unwrap_or_else(|e| panic!("go{version}: {e}"));
            let attach_time = attached.elapsed();
            let expected = if is_stripped {
                (Found::Code, Source::ReleaseTable)
            } else {
                (Found::Symbol, Source::Binary)
            };
            assert_eq!(reader.sources(), expected, "go{version} {}", path.display());
            let read = std::time::Instant::now();
            let first = reader.read().expect("read");
            eprintln!(
                "go{version} {}: located in {attach_time:?}, read in {:?}",
                path.display(),
                read.elapsed()
            );
            assert_eq!(first.scheme, scheme(&version));
            // The runtime scheduled goroutines before its ready line (GC workers, main).
            assert!(first.count() > 0, "go{version}: empty histogram {first:?}");
            let window = reader.since(&first).expect("second read");
            assert!(window.count() <= first.count(), "go{version}: idle program");
        }
    }
}

#[test]
fn refuses_a_process_that_is_not_go() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let result = Reader::attach(sleeper.id());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        matches!(result, Err(GoroutineError::NotGo { .. })),
        "{:?}",
        result.err()
    );
}
