//! Flame graph SVG, drawn by inferno from the [folded](super::folded) stacks.
//!
//! User frames use inferno's "hot" palette, colored by a hash of the function name so the same
//! function has the same color in every graph. Kernel frames (`_[k]` in the folded stacks; the
//! suffix is not shown) get a fixed aqua family instead, so they stand out from the hot tones.

use std::io::Write;

use inferno::flamegraph::color::{BasicPalette, Color, PaletteMap};
use inferno::flamegraph::{self, Options, Palette};

use crate::profile::Profile;

use super::folded::{self, KERNEL_SUFFIX};
use super::RenderError;

/// Writes `profile` as a flame graph. A profile without samples is [`RenderError::NoSamples`]:
/// there is nothing to draw.
pub fn render(profile: &Profile, out: &mut dyn Write) -> Result<(), RenderError> {
    let stacks = folded::lines(profile)?;
    if stacks.is_empty() {
        return Err(RenderError::NoSamples);
    }
    let lines: Vec<String> = stacks
        .iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();

    // Kernel frames get their color from the map; inferno computes (and caches) the others.
    let mut palette_map = PaletteMap::default();
    for (stack, _) in &stacks {
        for name in stack
            .split(';')
            .filter(|name| name.ends_with(KERNEL_SUFFIX))
        {
            if palette_map.get(name).is_none() {
                palette_map.insert(name, kernel_color(name));
            }
        }
    }

    let mut options = Options::default();
    options.title = title(profile);
    options.subtitle = Some(subtitle(profile));
    options.count_name = super::unit_word(profile).to_string();
    options.colors = Palette::Basic(BasicPalette::Hot);
    options.hash = true;
    options.palette_map = Some(&mut palette_map);
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
        .map_err(RenderError::FlameGraph)
}

/// `loupe: cpu profile of pid 1234, 10s`.
pub fn title(profile: &Profile) -> String {
    format!(
        "loupe: {} profile of {}, {}",
        profile.profile_type.name(),
        profile.target,
        super::human_duration(profile.duration)
    )
}

/// `1234 samples at 99 Hz` or `3.200 s off_cpu`, plus any nonzero drop counters.
fn subtitle(profile: &Profile) -> String {
    let mut subtitle = profile.describe_total();
    for (name, count) in profile.drops.iter().filter(|(_, count)| *count > 0) {
        subtitle.push_str(&format!(", {name}={count}"));
    }
    subtitle
}

/// An aqua shade (inferno's aqua ranges), chosen by an FNV-1a hash of the name so it is stable.
fn kernel_color(name: &str) -> Color {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let v = (hash >> 56) as f32 / 255.0;
    let shade = |base: u8, range: f32| base.saturating_add((range * v) as u8);
    Color {
        r: shade(50, 60.0),
        g: shade(165, 55.0),
        b: shade(165, 55.0),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn svg(profile: &Profile) -> String {
        let mut out = Vec::new();
        render(profile, &mut out).expect("render");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn draws_title_and_functions() {
        let p = profile(
            vec![
                user("compute_hash"),
                user("main"),
                kernel("do_syscall_64"),
                user("write_all"),
            ],
            vec![
                sample(1, 1, "app", &[0, 1], 30),
                sample(1, 2, "app", &[2, 3, 1], 10),
            ],
        );
        let out = svg(&p);
        assert!(out.starts_with("<?xml"), "{}", &out[..out.len().min(200)]);
        assert!(out.contains("<svg"));
        assert!(out.trim_end().ends_with("</svg>"));
        assert!(
            out.contains("loupe: cpu profile of pid 42, 2s 500ms"),
            "title"
        );
        assert!(
            out.contains("40 samples at 100 Hz, drop_stack_missing=3"),
            "subtitle"
        );
        for name in ["compute_hash", "main", "write_all", "app", "do_syscall_64"] {
            assert!(out.contains(name), "{name} missing");
        }
        // The annotation is only for coloring.
        assert!(!out.contains("_[k]"));
        assert!(out.contains("samples"));
        // Kernel frames use the kernel color.
        let c = kernel_color("do_syscall_64_[k]");
        assert!(
            out.contains(&format!("rgb({},{},{})", c.r, c.g, c.b)),
            "kernel color"
        );
    }

    #[test]
    fn output_is_deterministic() {
        let p = profile(
            vec![user("a"), user("b"), kernel("k")],
            vec![sample(1, 1, "x", &[0, 1], 3), sample(1, 1, "x", &[2, 1], 4)],
        );
        assert_eq!(svg(&p), svg(&p));
    }

    #[test]
    fn empty_profile_is_an_error() {
        let mut out = Vec::new();
        let err = render(&profile(vec![], vec![]), &mut out).expect_err("empty");
        assert!(matches!(err, RenderError::NoSamples));
        assert!(out.is_empty());
    }
}
