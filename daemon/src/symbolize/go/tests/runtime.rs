//! Ground truth 1: the Go runtime's own symbolization of its stacks.
//!
//! The stripped fixture prints, for each stack it captures, one line per pc returned by
//! runtime.Callers with the function/file/line that runtime.CallersFrames gave it. Callers
//! returns a pc for every logical frame: real return addresses, and for frames the compiler
//! inlined, "virtual" pcs (the inline call site's parentPc + 1). So symbolizing a real
//! return address (minus 1, as CallersFrames does) must reproduce that line and the lines of
//! its inlined callers after it, and each virtual pc must reproduce the rest of the chain.

use super::super::GoFrame;
use super::fixtures;

#[derive(serde::Deserialize, Debug)]
struct Record {
    spot: String,
    pc: u64,
    function: String,
    file: String,
    line: u32,
}

fn matches(f: &GoFrame, r: &Record) -> bool {
    f.function == r.function && f.file.as_deref() == Some(&r.file) && f.line == Some(r.line)
}

fn run(path: &std::path::Path) -> Vec<Record> {
    let out = std::process::Command::new(path)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(out.status.success(), "{} failed: {:?}", path.display(), out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

#[test]
fn symbolize_matches_runtime_callers_frames() {
    for fx in fixtures() {
        let v = fx.version;
        let table = fx.table(&fx.stripped_bytes());
        let records = run(&fx.stripped);
        assert!(!records.is_empty(), "go{v}: symtest printed nothing");

        let mut i = 0;
        let mut inlined_seen = 0;
        while i < records.len() {
            let r = &records[i];
            let frames = table
                .symbolize(r.pc - 1)
                .unwrap_or_else(|| panic!("go{v}: pc {:#x} ({}) not found", r.pc, r.function));
            let rest = &records[i..];
            let same_stack = rest.iter().take_while(|x| x.spot == r.spot).count();
            assert!(
                frames.len() <= same_stack,
                "go{v}: {:#x} gives {} frames, only {same_stack} left in the stack: {frames:?}",
                r.pc,
                frames.len()
            );
            for (k, f) in frames.iter().enumerate() {
                let want = &rest[k];
                assert!(
                    matches(f, want),
                    "go{v} spot {}: frame {k} of pc {:#x}: got {f:?}, runtime says {want:?}",
                    r.spot,
                    r.pc
                );
                assert_eq!(
                    f.inlined,
                    k + 1 < frames.len(),
                    "go{v}: inlined flag of {f:?}"
                );
                // The runtime's virtual pc for this inlined caller gives the chain from here.
                let tail = table.symbolize(want.pc - 1);
                assert_eq!(
                    tail.as_deref(),
                    Some(&frames[k..]),
                    "go{v}: virtual pc {:#x}",
                    want.pc
                );
            }
            inlined_seen += frames.len() - 1;
            i += frames.len();
        }

        // The fixture's inlined chain must have been seen as such.
        let inline = records.iter().position(|r| r.spot == "inline");
        let inline = inline.unwrap_or_else(|| panic!("go{v}: no inline spot"));
        let frames = table.symbolize(records[inline].pc - 1).unwrap_or_default();
        let names: Vec<_> = frames
            .iter()
            .map(|f| (f.function.as_str(), f.inlined))
            .collect();
        assert_eq!(
            names,
            [
                ("main.inner", true),
                ("main.middle", true),
                ("main.outer", false)
            ],
            "go{v}"
        );
        assert!(inlined_seen >= 2, "go{v}: too few inlined frames checked");
    }
}
