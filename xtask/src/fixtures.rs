//! `cargo xtask fixtures`: builds every test program once into `target/fixtures/`.
//!
//! - `fixtures/c/<name>.c` -> `target/fixtures/c/<name>` (gcc -O2 -g; frame pointers
//!   omitted, as gcc does by default: loupe must unwind without them).
//! - `fixtures/go/<name>/` (main.go + go.mod, standard library only), for every Go
//!   version -> `target/fixtures/go<version>/<name>` (stripped) and `<name>.debug`.
//!
//! Outputs newer than all of their inputs are left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::setup::{go_binary, go_versions};
use crate::util::{self, target_dir, up_to_date, workspace_root};

pub fn fixtures_dir() -> PathBuf {
    target_dir().join("fixtures")
}

/// The directory of one Go version's fixtures, e.g. `target/fixtures/go1.24.11`.
pub fn go_fixtures_dir(version: &str) -> PathBuf {
    fixtures_dir().join(format!("go{version}"))
}

enum Job {
    C {
        source: PathBuf,
        output: PathBuf,
    },
    /// All Go packages for one version, one after the other: the first build compiles the
    /// runtime and standard library into the cache, the others reuse it.
    Go {
        version: &'static str,
        packages: Vec<PathBuf>,
    },
}

impl Job {
    fn name(&self) -> String {
        match self {
            Job::C { output, .. } => format!("c/{}", file_name(output)),
            Job::Go { version, packages } => format!(
                "go{version}/{{{}}}",
                packages
                    .iter()
                    .map(|p| file_name(p))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn output_dir(&self) -> PathBuf {
        match self {
            Job::C { output, .. } => output.parent().unwrap().to_path_buf(),
            Job::Go { version, .. } => go_fixtures_dir(version),
        }
    }

    /// Builds what is out of date; returns how many programs were built.
    fn run(&self) -> Result<usize> {
        match self {
            Job::C { source, output } => {
                if up_to_date(output, &[source])? {
                    return Ok(0);
                }
                let mut cmd = Command::new("gcc");
                cmd.args(["-O2", "-g", "-Wall", "-Wextra", "-o"])
                    .arg(output)
                    .arg(source);
                quiet(&mut cmd)?;
                Ok(1)
            }
            Job::Go { version, packages } => {
                let go = go_binary(version);
                if !util::is_executable(&go) {
                    bail!("{} is missing: run `cargo xtask setup`", go.display());
                }
                let mut built = 0;
                for package in packages {
                    let output = go_fixtures_dir(version).join(file_name(package));
                    let debug = output.with_file_name(format!("{}.debug", file_name(package)));
                    let inputs: [&Path; 2] = [package, &go];
                    if up_to_date(&output, &inputs)? && up_to_date(&debug, &inputs)? {
                        continue;
                    }
                    // Stripped, as shipped binaries usually are (loupe must symbolize from
                    // .gopclntab), and a twin with DWARF and the symbol table as reference.
                    quiet(
                        go_build(&go, package)
                            .arg("-ldflags=-s -w")
                            .arg("-o")
                            .arg(&output)
                            .arg("."),
                    )
                    .with_context(|| format!("building {}", package.display()))?;
                    quiet(go_build(&go, package).arg("-o").arg(&debug).arg("."))
                        .with_context(|| format!("building {}", package.display()))?;
                    built += 2;
                }
                Ok(built)
            }
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn go_build(go: &Path, package: &Path) -> Command {
    let mut cmd = Command::new(go);
    cmd.current_dir(package)
        // Hermetic: this toolchain, no downloads, no user or workspace configuration.
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOCACHE", target_dir().join("go-cache"))
        .env("GOPATH", target_dir().join("go-path"))
        .env("GOENV", "off")
        .env("GOWORK", "off")
        .env_remove("GOROOT")
        .env_remove("GOBIN")
        .env_remove("GOOS")
        .env_remove("GOARCH")
        .args(["build", "-trimpath"]);
    cmd
}

/// Runs with captured output; on failure the error carries the command and its output.
fn quiet(cmd: &mut Command) -> Result<()> {
    util::output(cmd).map(|_| ())
}

fn collect_jobs() -> Result<Vec<Job>> {
    let root = workspace_root().join("fixtures");
    let mut jobs = Vec::new();

    // Go first: those are the long jobs (the first build per version compiles the runtime).
    let go_root = root.join("go");
    let mut packages: Vec<PathBuf> = match fs::read_dir(&go_root) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .filter(|p| p.join("go.mod").is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    packages.sort();
    if !packages.is_empty() {
        for version in go_versions() {
            jobs.push(Job::Go {
                version,
                packages: packages.clone(),
            });
        }
    }

    let c_root = root.join("c");
    let mut sources: Vec<PathBuf> = match fs::read_dir(&c_root) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "c"))
            .collect(),
        Err(_) => Vec::new(),
    };
    sources.sort();
    for source in sources {
        let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
        jobs.push(Job::C {
            source,
            output: fixtures_dir().join("c").join(stem),
        });
    }
    Ok(jobs)
}

/// Builds every fixture that is out of date; returns `target/fixtures`.
pub fn build_all() -> Result<PathBuf> {
    let start = Instant::now();
    let jobs = collect_jobs()?;
    if jobs.is_empty() {
        bail!(
            "no fixtures found under {}",
            workspace_root().join("fixtures").display()
        );
    }
    for job in &jobs {
        let dir = job.output_dir();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(jobs.len());
    println!(
        "fixtures: {} job(s) into {} ({workers} at a time)",
        jobs.len(),
        fixtures_dir().display()
    );
    let queue = Mutex::new(jobs.iter());
    let failures = Mutex::new(Vec::new());
    let (built, fresh) = (Mutex::new(0usize), Mutex::new(0usize));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(job) = queue.lock().unwrap().next() else {
                    return;
                };
                let t = Instant::now();
                match job.run() {
                    Ok(0) => *fresh.lock().unwrap() += 1,
                    Ok(n) => {
                        println!(
                            "fixtures: built {} ({n} program(s), {:.1}s)",
                            job.name(),
                            t.elapsed().as_secs_f64()
                        );
                        *built.lock().unwrap() += n;
                    }
                    Err(e) => {
                        eprintln!("fixtures: FAILED {}: {e:#}", job.name());
                        failures.lock().unwrap().push(job.name());
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    if !failures.is_empty() {
        return Err(anyhow!(
            "{} fixture build(s) failed: {}",
            failures.len(),
            failures.join(", ")
        ));
    }
    println!(
        "fixtures: {} program(s) built, {} job(s) up to date, in {:.1}s: {}",
        built.into_inner().unwrap(),
        fresh.into_inner().unwrap(),
        start.elapsed().as_secs_f64(),
        fixtures_dir().display()
    );
    Ok(fixtures_dir())
}
