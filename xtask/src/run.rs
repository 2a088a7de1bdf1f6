//! `cargo xtask run [--release] [-- ARGS]`: setup, build, then run loupe as root; without
//! arguments, the node daemon with its web UI on embedded defaults.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{self, is_root};
use crate::{build, setup};

/// Where `loupe daemon` serves on its defaults.
const DAEMON_URL: &str = "http://127.0.0.1:7470/";

pub fn run(release: bool, args: Vec<OsString>) -> Result<()> {
    setup::run()?;
    let binary = build::build(release)?;

    // Without arguments: the main job, the node daemon and its web UI.
    let is_default = args.is_empty();
    let args = if is_default {
        vec![OsString::from("daemon")]
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
    if is_default {
        println!("run: web UI, API and /metrics at {DAEMON_URL} (Ctrl-C stops the daemon)");
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", binary.display()))?;
    if !status.success() {
        bail!("loupe failed ({status})");
    }
    Ok(())
}
