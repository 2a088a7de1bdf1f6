//! Renderers: a finished [`crate::profile::Profile`] to a file format.
//!
//! `loupe profile -o FILE` picks the format from the file's extension ([`Format::from_path`]);
//! `--format` overrides it. Every renderer is pure: it reads the profile and writes bytes.
//!
//! | format   | module     | what                                                        |
//! |----------|------------|-------------------------------------------------------------|
//! | `svg`    | [`svg`]    | interactive flame graph (inferno)                           |
//! | `pprof`  | [`pprof`]  | gzipped pprof protobuf, for `go tool pprof` and friends     |
//! | `folded` | [`folded`] | Brendan Gregg's folded stacks, one line per distinct stack  |
//! | `json`   | [`json`]   | loupe's own stable JSON schema (documented in [`json`])     |
//! | `top`    | [`top`]    | text table of the hottest functions, like `pprof -top`      |

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::profile::{Frame, FrameId, Profile};

pub mod folded;
pub mod json;
pub mod pprof;
pub mod svg;
pub mod top;

/// Rows [`render`] shows for [`Format::Top`].
pub const DEFAULT_TOP_ROWS: usize = 20;

/// Extensions [`Format::from_path`] accepts, for messages.
pub const ACCEPTED_EXTENSIONS: &str = ".svg, .pb.gz, .pprof, .pb, .folded, .txt, .json";

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Flame graph (SVG).
    Svg,
    /// Gzipped pprof protobuf.
    Pprof,
    /// Folded stacks (`comm;root;...;leaf count`).
    Folded,
    /// loupe's JSON schema.
    Json,
    /// Text table of the top functions.
    Top,
}

impl Format {
    /// The format a file name asks for, from its extension (case-insensitive).
    ///
    /// `.svg` -> [`Svg`](Format::Svg); `.pb.gz`, `.pprof`, `.pb` -> [`Pprof`](Format::Pprof);
    /// `.folded`, `.txt` -> [`Folded`](Format::Folded); `.json` -> [`Json`](Format::Json).
    /// [`Top`](Format::Top) has no extension: ask for it with `--format top`.
    pub fn from_path(path: &Path) -> Result<Format, RenderError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        const TABLE: &[(&str, Format)] = &[
            (".svg", Format::Svg),
            (".pb.gz", Format::Pprof),
            (".pprof", Format::Pprof),
            (".pb", Format::Pprof),
            (".folded", Format::Folded),
            (".txt", Format::Folded),
            (".json", Format::Json),
        ];
        TABLE
            .iter()
            // `.svg` alone is not a file with an extension.
            .find(|(ext, _)| name.len() > ext.len() && name.ends_with(ext))
            .map(|&(_, format)| format)
            .ok_or_else(|| RenderError::UnknownExtension {
                path: path.to_path_buf(),
            })
    }
}

/// Why a profile could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "cannot tell the output format from the file name {}: use one of the extensions \
         {ACCEPTED_EXTENSIONS}, or pass --format",
        path.display()
    )]
    UnknownExtension { path: PathBuf },
    #[error("sample refers to frame {id}, but the profile has only {frames} frames")]
    BadFrameId { id: FrameId, frames: usize },
    #[error("no samples were collected, so there is no flame graph to draw")]
    NoSamples,
    #[error("drawing the flame graph: {0}")]
    FlameGraph(#[source] std::io::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `profile` to `out` as `format`. [`Format::Top`] shows [`DEFAULT_TOP_ROWS`] rows.
///
/// Output is buffered here, so `out` may be an unbuffered file; it is flushed before returning.
pub fn render(profile: &Profile, format: Format, out: &mut dyn Write) -> Result<(), RenderError> {
    validate(profile)?;
    let mut buffered = BufWriter::new(out);
    match format {
        Format::Svg => svg::render(profile, &mut buffered)?,
        Format::Pprof => pprof::render(profile, &mut buffered)?,
        Format::Folded => folded::render(profile, &mut buffered)?,
        Format::Json => json::render(profile, &mut buffered)?,
        Format::Top => top::render(profile, DEFAULT_TOP_ROWS, &mut buffered)?,
    }
    buffered.flush()?;
    Ok(())
}

/// Writes the table of the `rows` functions with the most self samples.
pub fn render_top(profile: &Profile, rows: usize, out: &mut dyn Write) -> Result<(), RenderError> {
    validate(profile)?;
    let mut buffered = BufWriter::new(out);
    top::render(profile, rows, &mut buffered)?;
    buffered.flush()?;
    Ok(())
}

/// Checks that every stack refers to existing frames, so renderers can index safely.
fn validate(profile: &Profile) -> Result<(), RenderError> {
    for sample in &profile.samples {
        for &id in &sample.stack {
            frame(profile, id)?;
        }
    }
    Ok(())
}

/// The frame `id` names, or an error rather than a panic on a malformed profile.
fn frame(profile: &Profile, id: FrameId) -> Result<&Frame, RenderError> {
    profile
        .frames
        .get(id as usize)
        .map(|f| &**f)
        .ok_or(RenderError::BadFrameId {
            id,
            frames: profile.frames.len(),
        })
}

/// What the numbers in flame graphs and tables count: `samples`, `ns`, `goroutine`.
fn unit_word(profile: &Profile) -> &'static str {
    match profile.primary().unit {
        "nanoseconds" => "ns",
        _ => profile.primary().kind,
    }
}

/// `10s 3ms`: humantime, rounded to milliseconds so titles stay short.
fn human_duration(duration: Duration) -> String {
    let millis = Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(millis).to_string()
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far after it).
fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Hand-built profiles for the renderers' tests.

    use std::time::{Duration, SystemTime};

    use crate::profile::{Frame, FrameKind, Profile, ProfileType, Sample};

    pub fn frame(function: &str, module: &str, kind: FrameKind) -> Frame {
        Frame {
            function: function.to_string(),
            module: module.to_string(),
            file: None,
            line: None,
            inlined: false,
            kind,
        }
    }

    pub fn user(function: &str) -> Frame {
        frame(function, "app", FrameKind::User)
    }

    pub fn kernel(function: &str) -> Frame {
        frame(function, "[kernel]", FrameKind::Kernel)
    }

    /// A CPU sample at 100 Hz (10 ms per sample).
    pub fn sample(pid: u32, tid: u32, comm: &str, stack: &[u32], count: u64) -> Sample {
        Sample {
            pid,
            tid,
            comm: comm.to_string(),
            labels: Vec::new(),
            stack: stack.to_vec(),
            values: vec![count, count * 10_000_000],
        }
    }

    pub fn profile(frames: Vec<Frame>, samples: Vec<Sample>) -> Profile {
        Profile {
            profile_type: ProfileType::Cpu,
            target: "pid 42".to_string(),
            start_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            duration: Duration::from_millis(2_500),
            frequency_hz: 100,
            frames: frames.into_iter().map(std::sync::Arc::new).collect(),
            samples,
            drops: vec![
                ("drop_ringbuf_full".to_string(), 0),
                ("drop_stack_missing".to_string(), 3),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn format_from_extension() {
        let cases = [
            ("out.svg", Format::Svg),
            ("dir/OUT.SVG", Format::Svg),
            ("cpu.pb.gz", Format::Pprof),
            ("cpu.pprof", Format::Pprof),
            ("cpu.pb", Format::Pprof),
            ("stacks.folded", Format::Folded),
            ("stacks.txt", Format::Folded),
            ("/tmp/p.json", Format::Json),
        ];
        for (path, want) in cases {
            assert_eq!(
                Format::from_path(Path::new(path)).ok(),
                Some(want),
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_extension_names_path_and_choices() {
        for path in ["profile.gz", "profile", ".svg", "x.svgz", "/"] {
            let err = Format::from_path(Path::new(path)).expect_err(path);
            assert!(
                matches!(err, RenderError::UnknownExtension { .. }),
                "{path}"
            );
            let message = err.to_string();
            assert!(message.contains(path), "{message}");
            assert!(message.contains(ACCEPTED_EXTENSIONS), "{message}");
        }
    }

    #[test]
    fn bad_frame_id_is_an_error_not_a_panic() {
        let p = profile(vec![user("main")], vec![sample(1, 1, "a", &[0, 7], 1)]);
        for format in [
            Format::Svg,
            Format::Pprof,
            Format::Folded,
            Format::Json,
            Format::Top,
        ] {
            let mut out = Vec::new();
            let err = render(&p, format, &mut out).expect_err("bad frame id");
            assert!(
                matches!(err, RenderError::BadFrameId { id: 7, frames: 1 }),
                "{err}"
            );
        }
    }

    #[test]
    fn render_dispatches() {
        let p = profile(
            vec![user("leaf"), user("main")],
            vec![sample(1, 1, "app", &[0, 1], 2)],
        );
        let mut out = Vec::new();
        render(&p, Format::Folded, &mut out).expect("folded");
        assert_eq!(String::from_utf8_lossy(&out), "app;main;leaf 2\n");
        let mut out = Vec::new();
        render(&p, Format::Top, &mut out).expect("top");
        assert!(String::from_utf8_lossy(&out).contains("leaf"));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(
            human_duration(Duration::from_nanos(10_003_234_001)),
            "10s 3ms"
        );
        assert_eq!(human_duration(Duration::from_secs(90)), "1m 30s");
    }
}
