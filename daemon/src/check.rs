//! `loupe check`: the kernel features loupe uses, and what each missing one disables.

use std::process::ExitCode;

pub fn run(_json: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check: not yet implemented")
}
