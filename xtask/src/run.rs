//! `cargo xtask run [--release] [-- ARGS]`: setup, build, then run loupe as root.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{self, is_root, target_dir};
use crate::{build, setup};

pub fn run(release: bool, args: Vec<OsString>) -> Result<()> {
    setup::run()?;
    let binary = build::build(release)?;

    // Without arguments: the main job, a 10 s whole-system flame graph.
    let default_output = target_dir().join("loupe-profile.svg");
    let is_default = args.is_empty();
    let args = if is_default {
        let mut a: Vec<OsString> = ["profile", "--all", "--duration", "10s", "-o"]
            .iter()
            .map(OsString::from)
            .collect();
        a.push(default_output.clone().into_os_string());
        a
    } else {
        args
    };

    // loading eBPF programs needs root (perf_event_paranoid=2, unprivileged BPF disabled).
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else if util::which("sudo").is_some() {
        println!("run: not root, running loupe through sudo");
        let mut c = Command::new("sudo");
        c.arg("--").arg(&binary);
        c
    } else {
        bail!(
            "loupe must run as root (it loads eBPF programs) and `sudo` is not installed; \
             run as root: {} ...",
            binary.display()
        );
    };
    cmd.args(&args);
    println!("$ {}", util::display(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", binary.display()))?;
    if !status.success() {
        bail!("loupe failed ({status})");
    }
    if is_default {
        println!("run: flame graph written to {}", default_output.display());
    }
    Ok(())
}
