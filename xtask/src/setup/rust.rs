//! Rust toolchains: the nightly that builds the eBPF object (with rust-src), the LLVM major
//! it was built with (bpf-linker must link the same one), and the pinned toolchain that
//! lints and formats.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::say;
use crate::util::{self, cargo_home_bin, is_executable, output};

/// The toolchain `cargo xtask test` runs clippy and rustfmt with.
///
/// Pinned rather than `stable`: each Rust release adds clippy lints (and now and then moves a
/// lint into a default group or adds a rustc warning), so under `-D warnings` an unchanged tree
/// would start failing the day a new stable is installed. A pinned release flags the same
/// things every day; moving to a newer one is a deliberate commit that also fixes what the new
/// lints report. Builds and tests keep using the machine's stable. Bump it when the code needs
/// a newer compiler than this.
pub const LINT_TOOLCHAIN: &str = "1.95.0";

/// The components [`LINT_TOOLCHAIN`] must have.
const LINT_COMPONENTS: [&str; 2] = ["clippy", "rustfmt"];

/// The nightly that builds the eBPF object: `$LOUPE_NIGHTLY` (e.g. `nightly-2026-05-19`, to
/// pin one whose LLVM the system offers), else `nightly`.
pub fn nightly() -> String {
    std::env::var("LOUPE_NIGHTLY")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "nightly".to_string())
}

fn rustup() -> Command {
    let mut cmd = Command::new(proxy("rustup"));
    util::scrub_cargo_env(&mut cmd);
    cmd
}

/// A rustup proxy from `$CARGO_HOME/bin`, falling back to PATH.
fn proxy(name: &str) -> PathBuf {
    let path = cargo_home_bin().join(name);
    if is_executable(&path) {
        path
    } else {
        PathBuf::from(name)
    }
}

fn installed_toolchains() -> Result<Vec<String>> {
    let list = output(rustup().args(["toolchain", "list"]))
        .context("rustup is required (https://rustup.rs)")?;
    // "stable-x86_64-unknown-linux-gnu (active, default)" -> "stable-x86_64-unknown-linux-gnu"
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// True when `name` (`nightly`, `1.95.0`, `nightly-2026-05-19`) names an installed toolchain.
fn has_toolchain(installed: &[String], name: &str) -> bool {
    installed.iter().any(|t| is_name_for_host(t, name))
}

/// rustup lists toolchains and most components with the host triple appended
/// (`stable-x86_64-unknown-linux-gnu`, `clippy-x86_64-unknown-linux-gnu`), some without
/// (`rust-src`).
fn is_name_for_host(listed: &str, name: &str) -> bool {
    listed.strip_prefix(name).is_some_and(|rest| {
        rest.is_empty() || rest.starts_with(&format!("-{}-", std::env::consts::ARCH))
    })
}

fn installed_components(toolchain: &str) -> Result<Vec<String>> {
    let list =
        output(rustup().args(["component", "list", "--installed", "--toolchain", toolchain]))?;
    Ok(list.lines().map(|l| l.trim().to_string()).collect())
}

/// True when a component (`rust-src`, `clippy`) is among `rustup component list --installed`.
fn has_component(installed: &[String], component: &str) -> bool {
    installed.iter().any(|c| is_name_for_host(c, component))
}

/// Installs `toolchain` with `components`, or adds the components it lacks.
fn ensure_toolchain(toolchain: &str, components: &[&str], why: &str) -> Result<()> {
    let installed = installed_toolchains()?;
    if !has_toolchain(&installed, toolchain) {
        say(format!("Rust {toolchain}: missing ({why}), installing it"));
        let mut cmd = rustup();
        cmd.args(["toolchain", "install", toolchain, "--profile", "minimal"]);
        for c in components {
            cmd.args(["--component", c]);
        }
        return util::run(&mut cmd);
    }
    let have = installed_components(toolchain)?;
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| !has_component(&have, c))
        .collect();
    if missing.is_empty() {
        say(format!(
            "Rust {toolchain}: present with {}",
            components.join(", ")
        ));
        return Ok(());
    }
    say(format!(
        "Rust {toolchain}: missing {} ({why})",
        missing.join(", ")
    ));
    util::run(
        rustup()
            .args(["component", "add", "--toolchain", toolchain])
            .args(&missing),
    )
}

/// The nightly with rust-src (`-Z build-std=core` needs it).
pub fn ensure_nightly() -> Result<()> {
    ensure_toolchain(&nightly(), &["rust-src"], "it builds the eBPF object")
}

/// The pinned lint toolchain with clippy and rustfmt.
pub fn ensure_lint_toolchain() -> Result<()> {
    ensure_toolchain(
        LINT_TOOLCHAIN,
        &LINT_COMPONENTS,
        "clippy and rustfmt run with it",
    )
}

/// The nightly's `rustc -vV`.
pub fn nightly_version_info() -> Result<String> {
    let mut cmd = Command::new(proxy("rustc"));
    util::scrub_cargo_env(&mut cmd);
    cmd.arg(format!("+{}", nightly())).arg("-vV");
    output(&mut cmd)
}

/// The LLVM major version in `rustc -vV` output (`LLVM version: 22.1.4` -> 22).
pub fn llvm_major(rustc_vv: &str) -> Result<u32> {
    let Some(line) = rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))
    else {
        bail!("no `LLVM version:` line in `rustc -vV` output:\n{rustc_vv}");
    };
    let version = line.trim();
    let major = version.split('.').next().unwrap_or("");
    major
        .parse::<u32>()
        .ok()
        .filter(|&m| m > 0)
        .with_context(|| format!("`LLVM version: {version}` in `rustc -vV` has no major number"))
}

/// The `release:` line of `rustc -vV`, for messages (`1.97.0-nightly`).
pub fn release(rustc_vv: &str) -> &str {
    rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("release:"))
        .map(str::trim)
        .unwrap_or("unknown release")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIGHTLY_VV: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\n\
        binary: rustc\n\
        commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\n\
        commit-date: 2026-05-19\n\
        host: x86_64-unknown-linux-gnu\n\
        release: 1.97.0-nightly\n\
        LLVM version: 22.1.4\n";

    #[test]
    fn llvm_major_is_read_from_rustc_vv() {
        assert_eq!(llvm_major(NIGHTLY_VV).unwrap(), 22);
        assert_eq!(release(NIGHTLY_VV), "1.97.0-nightly");
        assert_eq!(
            llvm_major(&NIGHTLY_VV.replace("22.1.4", "23.0.0")).unwrap(),
            23
        );
        // A major alone, as some distribution builds print it.
        assert_eq!(llvm_major("LLVM version: 19\n").unwrap(), 19);
    }

    #[test]
    fn llvm_major_errors_name_the_problem() {
        let no_line = NIGHTLY_VV.replace("LLVM version: 22.1.4\n", "");
        let err = llvm_major(&no_line).unwrap_err().to_string();
        assert!(err.contains("no `LLVM version:` line"), "{err}");
        for bad in [
            "LLVM version: \n",
            "LLVM version: x.1\n",
            "LLVM version: 0.1\n",
        ] {
            let err = llvm_major(bad).unwrap_err().to_string();
            assert!(err.contains("has no major number"), "{bad:?}: {err}");
        }
    }

    /// `name-<host triple>`, as rustup lists it.
    fn for_host(name: &str) -> String {
        format!("{name}-{}-unknown-linux-gnu", std::env::consts::ARCH)
    }

    #[test]
    fn toolchain_names_match_with_or_without_the_host_triple() {
        let installed = ["stable", "nightly-2026-05-19", "1.95.0"].map(for_host);
        assert!(has_toolchain(&installed, "stable"));
        assert!(has_toolchain(&installed, "1.95.0"));
        assert!(has_toolchain(&installed, "nightly-2026-05-19"));
        // A dated nightly is not `nightly`, and 1.95 is not 1.95.0.
        assert!(!has_toolchain(&installed, "nightly"));
        assert!(!has_toolchain(&installed, "1.95"));
    }

    #[test]
    fn components_match_with_or_without_the_host_triple() {
        let installed = [
            "rust-src".to_string(),
            for_host("rust-std"),
            for_host("clippy"),
        ];
        assert!(has_component(&installed, "rust-src"));
        assert!(has_component(&installed, "clippy"));
        assert!(!has_component(&installed, "rustfmt"));
        // `rust` is a prefix of both listed rust-* components, and neither is it.
        assert!(!has_component(&installed, "rust"));
    }
}
