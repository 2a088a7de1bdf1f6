//! loupe's JSON profile format: the [`Profile`] as it is, frames interned once.
//!
//! Schema version 2. Within a version, fields may be added; none will be renamed, removed or
//! change meaning. Version 1 (loupe before the engine) had one `count` per sample and
//! `total_samples`; version 2 has one value per sample type, as pprof does.
//!
//! ```json
//! {
//!   "schema_version": 2,
//!   "type": "cpu",                      // "cpu", "offcpu", "wall", "lock", "goroutines"
//!   "target": "pid 1234",               // what was profiled
//!   "start_time_unix_ms": 1700000000123,// when profiling started, ms since the Unix epoch
//!   "duration_ms": 10000,               // how long it ran
//!   "frequency_hz": 99,                 // sampled types: a sample is 1/frequency_hz of CPU;
//!                                       // 0 for exact (event-based) types
//!   "sample_types": [                   // what each sample's "values" hold, in order
//!     {"type": "samples", "unit": "count"},
//!     {"type": "cpu", "unit": "nanoseconds"}
//!   ],
//!   "primary": 0,                       // the value flame graphs and tables show
//!   "totals": [1234, 12464646000],      // sums of each value over all samples
//!   "drops": {"drop_ringbuf_full": 0},  // loss counters by name, zero ones included
//!   "frames": [                         // every distinct frame, referred to by index
//!     {
//!       "function": "main",             // name, or "module+0xoffset" when it has none
//!       "module": "app",                // file name of the module ("[kernel]" for the kernel)
//!       "file": "src/main.rs",          // source file, or null
//!       "line": 12,                     // source line, or null
//!       "inlined": false,               // inlined into the next frame rootward in the stack
//!       "kind": "user"                  // "user", "kernel", or "synthetic" (added by loupe:
//!                                       // "[truncated]", "[on-cpu]", "[off-cpu]")
//!     }
//!   ],
//!   "samples": [                        // one per distinct (thread, stack, labels)
//!     {
//!       "pid": 1234, "tid": 1235,
//!       "comm": "app",                  // process name
//!       "labels": {},                   // further labels (e.g. "state"), strings
//!       "values": [17, 171717000],      // one per sample type
//!       "stack": [0, 3, 5]              // indices into "frames", leaf first
//!     }
//!   ]
//! }
//! ```
//!
//! Output is compact (one line) and ends with a newline; `drops` and `labels` keys are sorted.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::profile::{Frame, FrameId, FrameKind, Profile};

use super::RenderError;

/// Writes `profile` as JSON (see the module documentation for the schema).
pub fn render(profile: &Profile, out: &mut dyn Write) -> Result<(), RenderError> {
    serde_json::to_writer(&mut *out, &Document::new(profile))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// The top-level object of the schema.
#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    #[serde(rename = "type")]
    profile_type: &'static str,
    target: &'a str,
    start_time_unix_ms: u64,
    duration_ms: u64,
    frequency_hz: u64,
    sample_types: Vec<ValueTypeJson>,
    primary: usize,
    totals: Vec<u64>,
    drops: BTreeMap<&'a str, u64>,
    frames: Vec<FrameJson<'a>>,
    samples: Vec<SampleJson<'a>>,
}

/// A frame. This and [`SampleJson`] are spelled out rather than reusing the model's `Serialize`
/// derives, so renaming a model field cannot change the schema by accident.
#[derive(Serialize)]
struct FrameJson<'a> {
    function: &'a str,
    module: &'a str,
    file: Option<&'a str>,
    line: Option<u32>,
    inlined: bool,
    kind: &'static str,
}

/// A sample.
#[derive(Serialize)]
struct SampleJson<'a> {
    pid: u32,
    tid: u32,
    comm: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    values: &'a [u64],
    stack: &'a [FrameId],
}

/// What one value measures.
#[derive(Serialize)]
struct ValueTypeJson {
    #[serde(rename = "type")]
    kind: &'static str,
    unit: &'static str,
}

impl<'a> Document<'a> {
    fn new(profile: &'a Profile) -> Document<'a> {
        let mut drops = BTreeMap::new();
        for (name, count) in &profile.drops {
            let total: &mut u64 = drops.entry(name.as_str()).or_default();
            *total = total.saturating_add(*count);
        }
        Document {
            schema_version: 2,
            profile_type: profile.profile_type.name(),
            target: &profile.target,
            start_time_unix_ms: u64::try_from(super::unix_nanos(profile.start_time) / 1_000_000)
                .unwrap_or(u64::MAX),
            duration_ms: u64::try_from(profile.duration.as_millis()).unwrap_or(u64::MAX),
            frequency_hz: profile.frequency_hz,
            sample_types: profile
                .sample_types()
                .iter()
                .map(|t| ValueTypeJson {
                    kind: t.kind,
                    unit: t.unit,
                })
                .collect(),
            primary: profile.profile_type.primary_index(),
            totals: (0..profile.sample_types().len())
                .map(|i| {
                    profile
                        .samples
                        .iter()
                        .map(|s| s.values.get(i).copied().unwrap_or(0))
                        .fold(0, u64::saturating_add)
                })
                .collect(),
            drops,
            frames: profile
                .frames
                .iter()
                .map(|f: &'a std::sync::Arc<Frame>| FrameJson {
                    function: &f.function,
                    module: &f.module,
                    file: f.file.as_deref(),
                    line: f.line,
                    inlined: f.inlined,
                    kind: match f.kind {
                        FrameKind::User => "user",
                        FrameKind::Kernel => "kernel",
                        FrameKind::Synthetic => "synthetic",
                    },
                })
                .collect(),
            samples: profile
                .samples
                .iter()
                .map(|s| SampleJson {
                    pid: s.pid,
                    tid: s.tid,
                    comm: &s.comm,
                    labels: s
                        .labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    values: &s.values,
                    stack: &s.stack,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::testutil::*;
    use super::*;

    #[test]
    fn schema() {
        let inl = Frame {
            inlined: true,
            file: Some("src/lib.rs".to_string()),
            line: Some(7),
            ..user("helper")
        };
        let p = profile(
            vec![inl, user("main"), kernel("do_syscall_64")],
            vec![
                sample(10, 11, "app", &[0, 1], 3),
                sample(10, 10, "app", &[2, 1], 4),
            ],
        );
        let mut out = Vec::new();
        render(&p, &mut out).expect("render");
        assert_eq!(out.last(), Some(&b'\n'));
        let got: Value = serde_json::from_slice(&out).expect("valid JSON");
        let want = json!({
            "schema_version": 2,
            "type": "cpu",
            "target": "pid 42",
            "start_time_unix_ms": 1_700_000_000_123_u64,
            "duration_ms": 2500,
            "frequency_hz": 100,
            "sample_types": [{"type": "samples", "unit": "count"},
                             {"type": "cpu", "unit": "nanoseconds"}],
            "primary": 0,
            "totals": [7, 70_000_000],
            "drops": {"drop_ringbuf_full": 0, "drop_stack_missing": 3},
            "frames": [
                {"function": "helper", "module": "app", "file": "src/lib.rs", "line": 7,
                 "inlined": true, "kind": "user"},
                {"function": "main", "module": "app", "file": null, "line": null,
                 "inlined": false, "kind": "user"},
                {"function": "do_syscall_64", "module": "[kernel]", "file": null, "line": null,
                 "inlined": false, "kind": "kernel"},
            ],
            "samples": [
                {"pid": 10, "tid": 11, "comm": "app", "labels": {},
                 "values": [3, 30_000_000], "stack": [0, 1]},
                {"pid": 10, "tid": 10, "comm": "app", "labels": {},
                 "values": [4, 40_000_000], "stack": [2, 1]},
            ],
        });
        assert_eq!(got, want);
    }

    #[test]
    fn empty_profile() {
        let mut out = Vec::new();
        render(&profile(vec![], vec![]), &mut out).expect("render");
        let got: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(got["totals"], json!([0, 0]));
        assert_eq!(got["frames"], json!([]));
        assert_eq!(got["samples"], json!([]));
    }
}
