//! `cargo xtask bench build [--rounds N]`: loupe profiling `cargo build` of a small crate
//! with one (path) dependency, the workload where librustc_driver and libLLVM, hundreds of
//! megabytes of code, have to be unwound and symbolized.
//!
//! Each round compiles from scratch (a fresh target directory) under `loupe profile`, once
//! writing pprof (`.pb.gz`) and once folded stacks. Reported per output: loupe's peak
//! resident memory (its own `VmHWM`, read from /proc while it runs: the resource usage that
//! `wait4` reports would count rustc's too, as loupe reaps cargo), the samples loupe reports,
//! and from the folded stacks the share of rustc's samples whose every frame is named.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::churn::memory_kib;
use super::median;
use crate::util::{self, target_dir};
use crate::{build, setup};

/// How often loupe's peak resident memory is read: it only grows, so the last read before
/// loupe exits misses at most what it allocated in its last few milliseconds.
const RSS_POLL: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Pprof,
    Folded,
}

impl Output {
    fn extension(self) -> &'static str {
        match self {
            Output::Pprof => "pb.gz",
            Output::Folded => "folded",
        }
    }
}

/// One profiled build.
struct Run {
    output: Output,
    peak_rss_kib: u64,
    /// What `wait4` reports for loupe: the largest of loupe's and its reaped descendants'
    /// (rustc's) peaks, the figure a `time -v loupe profile -- cargo build` shows.
    tree_rss_kib: u64,
    /// Build time (loupe's whole run, from start to written file).
    elapsed: Duration,
    /// What loupe reported on stderr: `loupe: N samples of ...`.
    samples: Option<u64>,
    /// Folded output only: rustc's samples, and those whose frames are all named.
    rustc: Option<(u64, u64)>,
}

pub fn run(rounds: usize) -> Result<()> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, true)?;
    let out_dir = target_dir().join("bench");
    let work = out_dir.join("build");
    // A leftover target directory from an interrupted run would make the build incremental.
    let _ = fs::remove_dir_all(&work);
    let manifest = write_crates(&work)?;
    // Fetch nothing during the measured builds (the crates have no registry dependency, but
    // cargo still writes the lock file once).
    util::run(
        util::cargo()
            .current_dir(&work)
            .args(["generate-lockfile", "--offline", "--manifest-path"])
            .arg(&manifest),
    )?;

    let mut runs = Vec::new();
    for round in 0..rounds {
        for output in [Output::Pprof, Output::Folded] {
            println!(
                "bench build: round {}/{rounds}: loupe profile -o build.{} -- cargo build",
                round + 1,
                output.extension()
            );
            let r = profile_build(&loupe, &work, &manifest, output, round)?;
            println!(
                "bench build:   peak RSS {:.1} MiB (wait4, with rustc: {:.1} MiB), {} samples, {:.1} s{}",
                r.peak_rss_kib as f64 / 1024.0,
                r.tree_rss_kib as f64 / 1024.0,
                r.samples.map_or("?".into(), |n| n.to_string()),
                r.elapsed.as_secs_f64(),
                r.rustc.map_or(String::new(), |(total, named)| format!(
                    ", rustc: {named} of {total} samples fully named"
                )),
            );
            runs.push(r);
        }
    }
    let report = report(&runs, rounds);
    println!("\n{report}");
    let path = out_dir.join("build.md");
    fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("bench build: report written to {}", path.display());
    Ok(())
}

/// Writes the crate `app` (a binary) and its path dependency `shapes` (the code rustc spends
/// its time on: many types with derived and hand-written impls) under `dir`; returns app's
/// manifest.
fn write_crates(dir: &Path) -> Result<PathBuf> {
    let mut lib = String::from(
        "#![allow(dead_code)]\npub trait Shape { fn area(&self) -> f64; fn name(&self) -> String; }\n",
    );
    for i in 0..100 {
        writeln!(
            lib,
            "#[derive(Clone, Debug, PartialEq, Default)]\n\
             pub struct S{i} {{ pub a: u64, pub b: String, pub c: Vec<u32>, pub d: Option<Box<S{i}>> }}\n\
             impl Shape for S{i} {{\n\
             fn area(&self) -> f64 {{ self.c.iter().map(|x| *x as f64).sum::<f64>() * {i}.0 + self.a as f64 }}\n\
             fn name(&self) -> String {{ match self.a % 4 {{ 0 => format!(\"zero {{}}\", self.b), \
             1 => self.b.to_uppercase(), \
             2 => self.c.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(\",\"), \
             _ => format!(\"{{:?}}\", self) }} }}\n}}\n\
             pub fn make{i}(n: u64) -> Vec<S{i}> {{ (0..n).map(|k| S{i} {{ a: k, b: k.to_string(), \
             c: vec![k as u32; 3], d: None }}).filter(|s| s.area() > 1.0).collect() }}"
        )?;
    }
    let mut main = String::from("use shapes::Shape;\nfn main() {\n    let mut total = 0.0;\n");
    for i in (0..100).step_by(10) {
        writeln!(
            main,
            "    for s in shapes::make{i}(50) {{ total += s.area(); println!(\"{{}}\", s.name()); }}"
        )?;
    }
    main += "    println!(\"{total}\");\n}\n";
    let files = [
        (
            "shapes/Cargo.toml",
            "[package]\nname = \"shapes\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".to_string(),
        ),
        ("shapes/src/lib.rs", lib),
        (
            "app/Cargo.toml",
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nshapes = { path = \"../shapes\" }\n\n[workspace]\n"
                .to_string(),
        ),
        ("app/src/main.rs", main),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir.join("app/Cargo.toml"))
}

fn profile_build(
    loupe: &Path,
    work: &Path,
    manifest: &Path,
    output: Output,
    round: usize,
) -> Result<Run> {
    let file = work.join(format!("build-{round}.{}", output.extension()));
    // A fresh target directory: rustc compiles both crates every round.
    let target = work.join(format!("target-{round}-{}", output.extension()));
    let mut cmd = Command::new(loupe);
    util::scrub_cargo_env(&mut cmd);
    cmd.env("PATH", util::path_with_cargo_bin())
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(work)
        // The duration only bounds a build that hangs: loupe stops when cargo exits.
        .args(["profile", "-d", "10m", "-o"])
        .arg(&file)
        .arg("--")
        .arg(util::cargo_proxy())
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting loupe")?;
    let pid = child.id();
    let stderr = child.stderr.take().context("loupe's stderr")?;
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut peak_rss_kib = 0;
    let (status, tree_rss_kib) = loop {
        if let Some((_, hwm)) = memory_kib(pid) {
            peak_rss_kib = peak_rss_kib.max(hwm);
        }
        if let Some(ended) = try_reap(pid)? {
            break ended;
        }
        std::thread::sleep(RSS_POLL);
    };
    // Reaped above with wait4: the handle must not wait again.
    std::mem::forget(child);
    let elapsed = started.elapsed();
    let lines = lines
        .join()
        .map_err(|_| anyhow::anyhow!("loupe's stderr reader panicked"))?;
    if !status.success() {
        bail!(
            "loupe profile -- cargo build failed ({status}):\n{}",
            lines.join("\n")
        );
    }
    let _ = fs::remove_dir_all(&target);
    let samples = lines.iter().find_map(|l| reported_samples(l));
    let rustc = match output {
        Output::Folded => Some(named_share(
            &fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?,
            "rustc",
        )),
        Output::Pprof => None,
    };
    Ok(Run {
        output,
        peak_rss_kib,
        tree_rss_kib,
        elapsed,
        samples,
        rustc,
    })
}

/// Reaps `pid` if it has exited: its status and `ru_maxrss` (KiB).
fn try_reap(pid: u32) -> Result<Option<(std::process::ExitStatus, u64)>> {
    let mut status = 0;
    // SAFETY: plain syscall on our own child, into live locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, libc::WNOHANG, &mut usage) };
    match reaped {
        0 => Ok(None),
        r if r < 0 => bail!("waiting for loupe: {}", std::io::Error::last_os_error()),
        _ => Ok(Some((
            std::os::unix::process::ExitStatusExt::from_raw(status),
            usage.ru_maxrss as u64,
        ))),
    }
}

/// The count in loupe's summary line, `loupe: 1234 samples of ...`.
fn reported_samples(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("loupe: ")?;
    let (count, rest) = rest.split_once(' ')?;
    if !rest.starts_with("samples") {
        return None;
    }
    count.replace(',', "").parse().ok()
}

/// A frame loupe could not name: an address in no mapping (`[unknown]`, `[unknown]+0x...`)
/// or one named only by its module and offset (`libfoo.so+0x1234`).
fn is_unnamed(frame: &str) -> bool {
    let frame = frame.strip_suffix("_[k]").unwrap_or(frame);
    frame.starts_with("[unknown]") || frame.contains("+0x") || frame.starts_with("0x")
}

/// `process`'s samples in folded stacks, and those whose frames are all named.
fn named_share(folded: &str, process: &str) -> (u64, u64) {
    let (mut total, mut named) = (0, 0);
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let mut frames = stack.split(';');
        if frames.next() != Some(process) {
            continue;
        }
        total += count;
        if !frames.any(is_unnamed) {
            named += count;
        }
    }
    (total, named)
}

fn report(runs: &[Run], rounds: usize) -> String {
    let mut out = format!(
        "Benchmark: `loupe profile -o FILE -- cargo build` of a crate with one path dependency \
         (from scratch each time), medians of {rounds} rounds.\n\n\
         loupe's peak RSS is its own VmHWM; `wait4`'s maxrss, shown for comparison, is the \
         largest of loupe's and every process it reaped (cargo, and through it rustc).\n\n\
         | output | build time | loupe peak RSS (median) | (max) | wait4 maxrss, with rustc | samples | rustc samples fully named |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for output in [Output::Pprof, Output::Folded] {
        let of: Vec<&Run> = runs.iter().filter(|r| r.output == output).collect();
        let rss: Vec<f64> = of.iter().map(|r| r.peak_rss_kib as f64 / 1024.0).collect();
        let max = rss.iter().copied().fold(0.0, f64::max);
        let tree = median(of.iter().map(|r| r.tree_rss_kib as f64 / 1024.0).collect());
        let samples = median(
            of.iter()
                .filter_map(|r| r.samples)
                .map(|n| n as f64)
                .collect(),
        );
        let named: Vec<f64> = of
            .iter()
            .filter_map(|r| r.rustc)
            .filter(|(total, _)| *total > 0)
            .map(|(total, named)| named as f64 * 100.0 / total as f64)
            .collect();
        let _ = writeln!(
            out,
            "| .{} | {:.1} s | {:.1} MiB | {max:.1} MiB | {tree:.1} MiB | {samples:.0} | {} |",
            output.extension(),
            median(of.iter().map(|r| r.elapsed.as_secs_f64()).collect()),
            median(rss),
            if named.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}%", median(named))
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_frames_are_told_from_named_ones() {
        assert!(is_unnamed("[unknown]"));
        assert!(is_unnamed("[unknown]+0x100000000"));
        assert!(is_unnamed("librustc_driver-1234.so+0x5f00"));
        assert!(!is_unnamed("rustc_driver_impl::run_compiler"));
        assert!(!is_unnamed("do_syscall_64_[k]"));
        assert!(!is_unnamed("[truncated]"));
    }

    #[test]
    fn named_share_counts_one_process_by_stack() {
        let folded =
            "rustc;main;f 3\nrustc;main;libLLVM.so+0x10 2\ncargo;main 7\nrustc;[unknown] 1\n";
        assert_eq!(named_share(folded, "rustc"), (6, 3));
        assert_eq!(named_share(folded, "cargo"), (7, 7));
    }

    #[test]
    fn the_sample_count_is_read_from_the_summary() {
        assert_eq!(
            reported_samples("loupe: 1834 samples of cargo in 9.1s"),
            Some(1834)
        );
        assert_eq!(reported_samples("loupe: wrote x.pb.gz"), None);
    }
}
