//! `kubernetes-validate` (PyPI): validates the shipped Kubernetes manifests against the
//! API's own JSON schemas, offline (there is no API server for `kubectl --dry-run` here).
//! Installed with its dependencies into `target/toolchains/`, run as
//! `PYTHONPATH=<dir> python3 -m kubernetes_validate`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::say;
use crate::util;

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
    super::pip::install_into(
        python,
        &format!("kubernetes-validate=={VERSION}"),
        &dir,
        false,
        |_| Ok(()),
    )?;
    say(format!(
        "kubernetes-validate {VERSION}: installed in {}",
        dir.display()
    ));
    Ok(())
}
