//! `loupe profile`: sample on-CPU stacks of a target for a duration, then write the profile.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
};

use anyhow::Context;

use super::{ProfileArgs, ProfileTypeArg};

use crate::{
    collectors::cpu::UnwindMode,
    engine::Capability,
    profile::{ProfileMerger, ProfileType},
    render::{self, Format},
    symbolize::Symbolizer,
};

/// How long to profile without --duration.
const DEFAULT_DURATION: std::time::Duration = std::time::Duration::from_secs(10);

pub fn run(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    if args.types.contains(&ProfileTypeArg::Goroutines) {
        return super::goroutines::profile(&args);
    }
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let spec = args.target.spec()?;
    let format = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) => Format::from_path(path)?,
        (None, None) => Format::Top,
    };
    // Fail on an unwritable path before profiling, not after.
    let output = match &args.output {
        Some(path) => Some(
            File::create(path)
                .with_context(|| format!("cannot write the output file {}", path.display()))?,
        ),
        None => None,
    };

    let announce = format!(
        "loupe: profiling {} for {} ({}, Ctrl-C ends early)",
        spec.describe(),
        humantime::format_duration(duration),
        args.types
            .iter()
            .map(|t| match t {
                ProfileTypeArg::Cpu => format!("cpu at {} Hz", args.frequency),
                ProfileTypeArg::Offcpu => "offcpu".to_string(),
                ProfileTypeArg::Goroutines => "goroutines".to_string(),
            })
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let (profile_type, capabilities) = plan(&args.types, args.frequency, args.unwind);
    let target = spec.describe();
    let mut merged = ProfileMerger::default();
    let outcome = super::session::collect(
        &spec,
        capabilities,
        Some(duration),
        &announce,
        &mut |mut window| {
            // A fresh symbolizer per window: its caches go with the window's modules.
            merged.add(window.build_profile(
                profile_type,
                target.clone(),
                args.frequency,
                &Symbolizer::default(),
            ))
        },
    )?;
    let profile = merged
        .finish()
        .context("the session ended without a window")?;
    let collected = profile.total();
    let elapsed = profile.duration;
    let lost: u64 = profile.drops.iter().map(|(_, n)| n).sum();
    eprintln!(
        "loupe: {} of {} in {:.1}s{}",
        profile.describe_total(),
        spec.describe(),
        elapsed.as_secs_f64(),
        if lost > 0 {
            // Samples or parts of them (frames): each counter says which.
            format!("; losses: {}", describe_drops(&profile.drops))
        } else {
            String::new()
        }
    );
    eprintln!(
        "loupe: state: processes={} modules={} stacks={}",
        outcome.status.processes, outcome.status.modules, outcome.status.stacks
    );
    if collected == 0 {
        eprintln!(
            "loupe: note: nothing collected: the target {} while profiled",
            match profile_type {
                ProfileType::OffCpu => "never blocked",
                _ => "used no CPU",
            }
        );
    }
    write_profile(
        &profile,
        format,
        output.zip(args.output.as_deref()),
        args.top,
    )?;
    Ok(outcome.exit_code)
}

/// Writes `profile` to the opened output file (and its path), or to stdout; `top` sets the
/// rows of a `Top` table wherever it is written.
pub(super) fn write_profile(
    profile: &crate::profile::Profile,
    format: Format,
    output: Option<(File, &Path)>,
    top: usize,
) -> anyhow::Result<()> {
    let write = |out: &mut dyn Write| match format {
        Format::Top => render::render_top(profile, top, out),
        _ => render::render(profile, format, out),
    };
    match output {
        Some((file, path)) => {
            let mut out = BufWriter::new(file);
            write(&mut out)?;
            out.flush()
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("loupe: wrote {}", path.display());
        }
        None => {
            let mut text = Vec::new();
            write(&mut text)?;
            super::write_stdout(|out| out.write_all(&text))?;
        }
    }
    Ok(())
}

/// The profile to build and the capabilities it needs, from `--type`.
fn plan(
    types: &[ProfileTypeArg],
    frequency_hz: u64,
    unwind: UnwindMode,
) -> (ProfileType, Vec<Capability>) {
    let cpu = types.contains(&ProfileTypeArg::Cpu);
    let offcpu = types.contains(&ProfileTypeArg::Offcpu);
    let mut capabilities = Vec::new();
    if cpu {
        capabilities.push(Capability::Cpu {
            frequency_hz,
            unwind,
        });
    }
    if offcpu {
        capabilities.push(Capability::Sched {
            offcpu_stacks: true,
        });
    }
    let profile_type = match (cpu, offcpu) {
        (true, true) => ProfileType::Wall,
        (false, true) => ProfileType::OffCpu,
        _ => ProfileType::Cpu,
    };
    (profile_type, capabilities)
}

fn describe_drops(drops: &[(String, u64)]) -> String {
    drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
