//! `cargo xtask build`: the eBPF object (nightly, bpfel-unknown-none), then the daemon,
//! which embeds the object through the `LOUPE_BPF_OBJECT` environment variable.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{self, cargo_proxy, profile_dir, target_dir, workspace_root};

/// Where the eBPF crate builds: `target/bpf`.
pub fn bpf_target_dir() -> PathBuf {
    target_dir().join("bpf")
}

/// The linked eBPF object (always built in release: the verifier wants optimised code).
pub fn bpf_object() -> PathBuf {
    bpf_target_dir()
        .join("bpfel-unknown-none")
        .join("release")
        .join("loupe-ebpf")
}

/// The daemon binary for a profile.
pub fn loupe_binary(release: bool) -> PathBuf {
    target_dir().join(profile_dir(release)).join("loupe")
}

/// Builds the eBPF object; returns its absolute path.
pub fn build_ebpf() -> Result<PathBuf> {
    let nightly = crate::setup::nightly();
    println!("build: eBPF programs ({nightly}, bpfel-unknown-none, build-std=core)");
    // ebpf/.cargo/config.toml selects the target and build-std; it only applies when
    // cargo runs inside ebpf/. The outer `cargo run` exported RUSTUP_TOOLCHAIN=stable,
    // its own CARGO, LD_LIBRARY_PATH and package variables: scrub them so that `+nightly`
    // really selects nightly. RUSTFLAGS meant for the host (e.g. target-cpu) must not
    // reach the BPF target either.
    let mut cmd = Command::new(cargo_proxy());
    util::scrub_cargo_env(&mut cmd);
    cmd.env_remove("RUSTFLAGS")
        .env("PATH", util::path_with_cargo_bin())
        .current_dir(workspace_root().join("ebpf"))
        .arg(format!("+{nightly}"))
        .args(["build", "--release", "--features", "probes"])
        .arg("--target-dir")
        .arg(bpf_target_dir());
    util::run(&mut cmd)?;
    let object = bpf_object();
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but {} does not exist",
            object.display()
        );
    }
    println!("build: eBPF object {}", object.display());
    Ok(object)
}

/// A stable-toolchain `cargo` for the workspace with `LOUPE_BPF_OBJECT` set. Every cargo
/// command that compiles the daemon (build, test, clippy) needs the variable, and the same
/// value, or it fails or rebuilds.
pub fn workspace_cargo(bpf_object: &Path) -> Command {
    let mut cmd = util::cargo();
    cmd.current_dir(workspace_root())
        .env("LOUPE_BPF_OBJECT", bpf_object);
    cmd
}

/// Builds the eBPF object and the daemon; returns the daemon's path.
pub fn build(release: bool) -> Result<PathBuf> {
    let object = build_ebpf()?;
    build_daemon(&object, release)
}

/// Builds the daemon around an already built eBPF object; returns the daemon's path.
pub fn build_daemon(bpf_object: &Path, release: bool) -> Result<PathBuf> {
    println!("build: daemon ({})", profile_dir(release));
    let mut cmd = workspace_cargo(bpf_object);
    cmd.args(["build", "-p", "loupe"]);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    let binary = loupe_binary(release);
    if !binary.is_file() {
        bail!(
            "the daemon build succeeded but {} does not exist",
            binary.display()
        );
    }
    println!("build: loupe binary {}", binary.display());
    Ok(binary)
}
