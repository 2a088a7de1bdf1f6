//! tracefs: loupe attaches tracepoints through it, and a fresh machine has it unmounted.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::say;
use crate::util;

const TRACEFS: &str = "/sys/kernel/tracing";

fn mounted() -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == TRACEFS && f[2] == "tracefs"
        })
}

pub fn ensure() -> Result<()> {
    if mounted() {
        say(format!("tracefs: mounted at {TRACEFS}"));
        return Ok(());
    }
    let consequence = "loupe cannot attach tracepoints without it";
    if !Path::new(TRACEFS).is_dir() {
        bail!("tracefs: {TRACEFS} does not exist (kernel without CONFIG_TRACING?); {consequence}");
    }
    say(format!("tracefs: not mounted, mounting it at {TRACEFS}"));
    let hint = format!("as root, run: mount -t tracefs tracefs {TRACEFS}");
    let mut cmd = util::privileged("mount", "mounting tracefs")
        .with_context(|| format!("tracefs is not mounted and cannot be: {consequence}; {hint}"))?;
    cmd.args(["-t", "tracefs", "tracefs", TRACEFS]);
    util::run(&mut cmd)
        .with_context(|| format!("could not mount tracefs ({consequence}); {hint}"))?;
    if !mounted() {
        bail!("mount reported success but tracefs is not mounted at {TRACEFS}; {consequence}");
    }
    say(format!("tracefs: mounted at {TRACEFS}"));
    Ok(())
}
