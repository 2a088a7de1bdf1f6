//! Gzipped pprof protobuf (`profile.proto`), as `go tool pprof`, Pyroscope, Speedscope and
//! friends read it.
//!
//! - Sample types from the profile type (`samples/count` + `cpu/nanoseconds` for CPU,
//!   `off_cpu/nanoseconds`, `wall/nanoseconds`, `contentions/count` + `delay/nanoseconds`,
//!   `goroutine/count`). `default_sample_type` is left unset, as the Go runtime leaves it:
//!   pprof then shows the last type (time or delay rather than counts). Sampled profiles
//!   have period type `cpu/nanoseconds` with period [`Profile::period`].
//! - One `Function` per distinct (name, source file).
//! - One `Location` per distinct run of frames that share one address: the inline frames
//!   (leafward) and the frame they were inlined into. Its `Line`s go innermost first, the
//!   caller last, which is how pprof represents inlining. Locations have no addresses (0):
//!   loupe symbolizes before rendering.
//! - One `Mapping` per module name, `has_functions` set so pprof does not try to symbolize.
//! - Labels on every sample: `pid` and `tid` (numeric), `comm` (string), then the sample's
//!   own labels (strings).
//! - Comments: the target, then every drop counter as `name=count`.

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use pprof::protos::{self, Message};

use crate::profile::{FrameId, Profile};

use super::RenderError;

/// Writes `profile` as a gzipped pprof protobuf.
pub fn render(profile: &Profile, out: &mut dyn Write) -> Result<(), RenderError> {
    let bytes = build(profile)?.encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}

/// Module name used when a frame's module is empty (an empty mapping file would let pprof merge
/// it into its neighbour).
const UNKNOWN_MODULE: &str = "[unknown]";

/// The pprof message for `profile`.
pub fn build(profile: &Profile) -> Result<protos::Profile, RenderError> {
    let mut b = Builder::default();
    b.string(""); // index 0 must be ""

    let sample_types: Vec<protos::ValueType> = profile
        .sample_types()
        .iter()
        .map(|t| b.value_type(t.kind, t.unit))
        .collect();
    let period = profile
        .period()
        .map(|p| i64::try_from(p.as_nanos()).unwrap_or(i64::MAX));
    let period_type = period.map(|_| b.value_type("cpu", "nanoseconds"));
    let (pid, tid, comm) = (b.string("pid"), b.string("tid"), b.string("comm"));

    let mut pb_samples = Vec::with_capacity(profile.samples.len());
    for sample in &profile.samples {
        let mut location_id = Vec::with_capacity(sample.stack.len());
        let mut rest: &[FrameId] = &sample.stack;
        while !rest.is_empty() {
            let len = location_len(profile, rest)?;
            location_id.push(b.location(profile, &rest[..len])?);
            rest = &rest[len..];
        }
        let comm_value = b.string(&sample.comm);
        let mut label = vec![
            protos::Label {
                key: pid,
                num: i64::from(sample.pid),
                ..Default::default()
            },
            protos::Label {
                key: tid,
                num: i64::from(sample.tid),
                ..Default::default()
            },
            protos::Label {
                key: comm,
                str: comm_value,
                ..Default::default()
            },
        ];
        for (key, value) in &sample.labels {
            label.push(protos::Label {
                key: b.string(key),
                str: b.string(value),
                ..Default::default()
            });
        }
        pb_samples.push(protos::Sample {
            location_id,
            value: sample
                .values
                .iter()
                .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
            label,
        });
    }

    let mut comment = vec![b.string(&format!(
        "loupe: {} profile of {}",
        profile.profile_type.name(),
        profile.target
    ))];
    for (name, count) in &profile.drops {
        comment.push(b.string(&format!("{name}={count}")));
    }

    Ok(protos::Profile {
        sample_type: sample_types,
        default_sample_type: 0,
        sample: pb_samples,
        mapping: b.mappings,
        location: b.locations,
        function: b.functions,
        string_table: b.strings,
        time_nanos: i64::try_from(super::unix_nanos(profile.start_time)).unwrap_or(i64::MAX),
        duration_nanos: i64::try_from(profile.duration.as_nanos()).unwrap_or(i64::MAX),
        period_type,
        period: period.unwrap_or(0),
        comment,
        ..Default::default()
    })
}

/// How many frames at the start of `stack` (leaf first) make up one location: any inline frames,
/// then the frame they were inlined into. A run ends early where the module changes (inline
/// frames belong to their caller's module) or the stack ends.
fn location_len(profile: &Profile, stack: &[FrameId]) -> Result<usize, RenderError> {
    let first = super::frame(profile, stack[0])?;
    let mut len = 1;
    let mut previous = first;
    while previous.inlined && len < stack.len() {
        let next = super::frame(profile, stack[len])?;
        if next.module != first.module || next.kind != first.kind {
            break;
        }
        len += 1;
        previous = next;
    }
    Ok(len)
}

/// Interning tables for the message under construction. Ids are 1-based, as pprof wants.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<protos::Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<protos::Location>,
    location_ids: HashMap<Vec<FrameId>, u64>,
    mappings: Vec<protos::Mapping>,
    mapping_ids: HashMap<String, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
        protos::ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (name.to_string(), file.map(str::to_string));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name = self.string(name);
        let filename = self.string(file.unwrap_or(""));
        self.functions.push(protos::Function {
            id,
            name,
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    fn mapping(&mut self, module: &str) -> u64 {
        let module = if module.is_empty() {
            UNKNOWN_MODULE
        } else {
            module
        };
        if let Some(&id) = self.mapping_ids.get(module) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        let filename = self.string(module);
        self.mappings.push(protos::Mapping {
            id,
            filename,
            has_functions: true,
            ..Default::default()
        });
        self.mapping_ids.insert(module.to_string(), id);
        id
    }

    /// The location for `frames` (leaf first: inline frames, then their caller).
    fn location(&mut self, profile: &Profile, frames: &[FrameId]) -> Result<u64, RenderError> {
        if let Some(&id) = self.location_ids.get(frames) {
            return Ok(id);
        }
        let id = self.locations.len() as u64 + 1;
        let mut line = Vec::with_capacity(frames.len());
        let mut mapping_id = 0;
        for &frame_id in frames {
            let frame = super::frame(profile, frame_id)?;
            mapping_id = self.mapping(&frame.module);
            let mapping = &mut self.mappings[mapping_id as usize - 1];
            mapping.has_filenames |= frame.file.is_some();
            mapping.has_line_numbers |= frame.line.is_some();
            mapping.has_inline_frames |= frame.inlined;
            line.push(protos::Line {
                function_id: self.function(&frame.function, frame.file.as_deref()),
                line: frame.line.map_or(0, i64::from),
            });
        }
        self.locations.push(protos::Location {
            id,
            mapping_id,
            line,
            ..Default::default()
        });
        self.location_ids.insert(frames.to_vec(), id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::super::testutil::*;
    use super::*;
    use crate::profile::Frame;

    /// Renders, gunzips and decodes.
    fn round_trip(profile: &Profile) -> protos::Profile {
        let mut gz = Vec::new();
        render(profile, &mut gz).expect("render");
        let mut bytes = Vec::new();
        GzDecoder::new(&gz[..])
            .read_to_end(&mut bytes)
            .expect("gunzip");
        protos::Profile::decode(&bytes[..]).expect("decode")
    }

    fn str_at(p: &protos::Profile, index: i64) -> &str {
        &p.string_table[index as usize]
    }

    /// Function names of a location's lines, innermost first.
    fn line_names(p: &protos::Profile, location_id: u64) -> Vec<(String, i64)> {
        let location = &p.location[location_id as usize - 1];
        assert_eq!(location.id, location_id);
        location
            .line
            .iter()
            .map(|line| {
                let function = &p.function[line.function_id as usize - 1];
                assert_eq!(function.id, line.function_id);
                (str_at(p, function.name).to_string(), line.line)
            })
            .collect()
    }

    fn inline_profile() -> Profile {
        let at = |f: Frame, file: &str, line: u32| Frame {
            file: Some(file.to_string()),
            line: Some(line),
            ..f
        };
        let inlined = |f: Frame| Frame { inlined: true, ..f };
        let frames = vec![
            inlined(at(user("memchr"), "memchr.rs", 10)), // 0
            inlined(at(user("find"), "find.rs", 20)),     // 1
            at(user("parse"), "parse.rs", 30),            // 2
            at(user("main"), "main.rs", 40),              // 3
            kernel("do_syscall_64"),                      // 4
            frame("write", "libc.so.6", FrameKind::User), // 5
            frame("helper", "", FrameKind::User),         // 6
        ];
        let samples = vec![
            sample(7, 7, "app", &[0, 1, 2, 3], 5),
            sample(7, 8, "app-worker", &[2, 3], 2),
            sample(7, 7, "app", &[4, 5, 3], 1),
            sample(7, 8, "app-worker", &[6, 1, 2, 3], 4),
        ];
        profile(frames, samples)
    }

    use crate::profile::FrameKind;

    #[test]
    fn header_values() {
        let p = round_trip(&inline_profile());
        assert_eq!(p.string_table[0], "");
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (str_at(&p, t.ty), str_at(&p, t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = p.period_type.clone().expect("period type");
        assert_eq!(str_at(&p, period_type.ty), "cpu");
        assert_eq!(str_at(&p, period_type.unit), "nanoseconds");
        assert_eq!(p.period, 10_000_000); // 100 Hz
        assert_eq!(p.duration_nanos, 2_500_000_000);
        assert_eq!(p.time_nanos, 1_700_000_000_123_000_000);
        let comments: Vec<&str> = p.comment.iter().map(|&c| str_at(&p, c)).collect();
        assert_eq!(
            comments,
            [
                "loupe: cpu profile of pid 42",
                "drop_ringbuf_full=0",
                "drop_stack_missing=3"
            ]
        );
    }

    #[test]
    fn samples_values_and_labels() {
        let p = round_trip(&inline_profile());
        assert_eq!(p.sample.len(), 4);
        let s = &p.sample[1];
        assert_eq!(s.value, [2, 20_000_000]);
        let labels: Vec<(&str, i64, &str)> = s
            .label
            .iter()
            .map(|l| (str_at(&p, l.key), l.num, str_at(&p, l.str)))
            .collect();
        assert_eq!(
            labels,
            [("pid", 7, ""), ("tid", 8, ""), ("comm", 0, "app-worker")]
        );
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 12);
    }

    #[test]
    fn inline_frames_fold_into_one_location() {
        let p = round_trip(&inline_profile());
        // Sample 0: [memchr, find (both inlined into parse), parse], then main.
        let s = &p.sample[0];
        assert_eq!(s.location_id.len(), 2);
        assert_eq!(
            line_names(&p, s.location_id[0]),
            [
                ("memchr".to_string(), 10),
                ("find".to_string(), 20),
                ("parse".to_string(), 30)
            ]
        );
        assert_eq!(line_names(&p, s.location_id[1]), [("main".to_string(), 40)]);
        // Sample 1: parse without inlines is a different location; main is shared.
        let s1 = &p.sample[1];
        assert_eq!(
            line_names(&p, s1.location_id[0]),
            [("parse".to_string(), 30)]
        );
        assert_ne!(s1.location_id[0], s.location_id[0]);
        assert_eq!(s1.location_id[1], s.location_id[1]);
        // Sample 3: `find` inlined into parse under a different leaf.
        let s3 = &p.sample[3];
        assert_eq!(s3.location_id.len(), 3);
        assert_eq!(
            line_names(&p, s3.location_id[0]),
            [("helper".to_string(), 0)]
        );
        assert_eq!(
            line_names(&p, s3.location_id[1]),
            [("find".to_string(), 20), ("parse".to_string(), 30)]
        );
        // One function per distinct name and file, shared across locations.
        let names: Vec<&str> = p.function.iter().map(|f| str_at(&p, f.name)).collect();
        for name in ["memchr", "find", "parse", "main", "do_syscall_64", "write"] {
            assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name}");
        }
        let parse = p
            .function
            .iter()
            .find(|f| str_at(&p, f.name) == "parse")
            .expect("parse");
        assert_eq!(str_at(&p, parse.filename), "parse.rs");
    }

    #[test]
    fn mappings_per_module() {
        let p = round_trip(&inline_profile());
        let files: Vec<&str> = p.mapping.iter().map(|m| str_at(&p, m.filename)).collect();
        assert_eq!(files, ["app", "[kernel]", "libc.so.6", "[unknown]"]);
        assert!(p.mapping.iter().all(|m| m.has_functions));
        assert!(p.mapping[0].has_inline_frames && p.mapping[0].has_line_numbers);
        assert!(!p.mapping[1].has_inline_frames);
        for (i, m) in p.mapping.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
        }
        // Every location points at its frame's mapping.
        let s = &p.sample[2];
        let kernel_loc = &p.location[s.location_id[0] as usize - 1];
        assert_eq!(
            str_at(&p, p.mapping[kernel_loc.mapping_id as usize - 1].filename),
            "[kernel]"
        );
    }

    #[test]
    fn empty_profile_decodes() {
        let p = round_trip(&profile(vec![], vec![]));
        assert!(p.sample.is_empty());
        assert_eq!(p.sample_type.len(), 2);
    }

    /// `go tool pprof` itself parses the file. Needs Go 1.19 at the Debian path
    /// (package `golang-1.19-go`).
    #[test]
    fn go_tool_pprof_reads_it() {
        const GO: &str = "/usr/lib/go-1.19/bin/go";
        assert!(
            std::path::Path::new(GO).exists(),
            "{GO} is missing: install the Debian package golang-1.19-go to run this test"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cpu.pb.gz");
        let mut file = std::fs::File::create(&path).expect("create");
        super::super::render(&inline_profile(), super::super::Format::Pprof, &mut file)
            .expect("render");
        drop(file);
        let output = std::process::Command::new(GO)
            .args(["tool", "pprof", "-raw"])
            .arg(&path)
            .env("HOME", dir.path())
            .env("PPROF_TMPDIR", dir.path())
            .output()
            .expect("run go tool pprof");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "go tool pprof failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        for needle in [
            "samples/count",
            "cpu/nanoseconds",
            "memchr",
            "find",
            "parse",
            "main",
            "do_syscall_64",
            "write",
            "helper",
            "drop_stack_missing=3",
        ] {
            assert!(
                stdout.contains(needle),
                "{needle} missing from go tool pprof -raw output:\n{stdout}\nstderr:\n{stderr}"
            );
        }
    }
}
