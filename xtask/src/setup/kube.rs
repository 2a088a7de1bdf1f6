//! `kubernetes-validate` (PyPI): validates the shipped Kubernetes manifests against the
//! API's own JSON schemas, offline (there is no API server for `kubectl --dry-run` here).
//! Installed with its dependencies into `target/toolchains/`, run as
//! `PYTHONPATH=<dir> python3 -m kubernetes_validate`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::say;
use crate::util::{self, output};

const VERSION: &str = "1.37.0";

/// The directory to put on `PYTHONPATH` (the daemon's deploy test reads it from
/// `LOUPE_KUBERNETES_VALIDATE`).
pub fn dir() -> PathBuf {
    util::target_dir()
        .join("toolchains")
        .join(format!("kubernetes-validate-{VERSION}"))
}

pub fn is_installed() -> bool {
    dir()
        .join(format!("kubernetes_validate-{VERSION}.dist-info"))
        .is_dir()
}

pub fn install(python: &Path) -> Result<()> {
    let dir = dir();
    // Next to the final directory, then renamed: an interrupted install never looks done.
    let partial = dir.with_file_name(format!("kubernetes-validate-{VERSION}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
    ])
    .arg(&partial)
    .arg(format!("kubernetes-validate=={VERSION}"));
    output(&mut cmd)?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&partial, &dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    say(format!(
        "kubernetes-validate {VERSION}: installed in {}",
        dir.display()
    ));
    Ok(())
}
