//! Running without root: a process with exactly the capabilities loupe documents can profile,
//! and one that lacks any of them is told which.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Output},
};

use common::*;

/// The capabilities loupe needs without root, as setpriv names them: CAP_DAC_READ_SEARCH
/// only where tracefs is readable by root alone (the kernel's default, mode 0700).
fn needed_capabilities() -> Vec<&'static str> {
    let mut caps = vec!["bpf", "perfmon", "sys_admin"];
    let mode = std::fs::metadata("/sys/kernel/tracing")
        .expect("tracefs mount point")
        .permissions()
        .mode();
    if mode & 0o005 != 0o005 {
        caps.push("dac_read_search");
    }
    caps
}

/// Runs loupe as user `nobody` with exactly `caps` (inherited across exec as ambient ones).
fn run_as_nobody_with(caps: &[&str], args: &[&str]) -> Output {
    let list = caps
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if !caps.is_empty() {
        cmd.arg(format!("--inh-caps={list}"))
            .arg(format!("--ambient-caps={list}"));
    }
    cmd.arg("--")
        .arg(loupe_bin())
        .args(args)
        .output()
        .expect("run setpriv (util-linux)")
}

fn writable_dir() -> tempfile::TempDir {
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("open the output directory to nobody");
    dir
}

#[test]
fn the_documented_capabilities_are_enough_without_root() {
    assert_root();
    let _serial = serial();
    let dir = writable_dir();
    let out = dir.path().join("split.folded");
    let split = fixture("c/split");
    let output = run_as_nobody_with(
        &needed_capabilities(),
        &[
            "profile",
            "-o",
            out.to_str().expect("utf-8 path"),
            "--",
            split.to_str().expect("utf-8 path"),
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loupe as nobody failed:\n{stderr}");
    let stacks = read_folded(&out);
    for function in ["hot_three", "cold_one", "main"] {
        let n = count_where(&stacks, |s| s.has(function));
        assert!(n > 0, "{function} missing from the profile:\n{stderr}");
    }
    // What it could not do is said, naming the capability.
    if !stderr.contains("CAP_SYS_PTRACE") {
        panic!("no warning about other users' processes:\n{stderr}");
    }
    let check = run_as_nobody_with(&needed_capabilities(), &["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check as nobody failed:\n{report}");
    assert!(report.contains("ok   root / capabilities"), "{report}");
}

#[test]
fn each_missing_capability_is_named() {
    assert_root();
    let needed = needed_capabilities();
    let dir = writable_dir();
    let out = dir.path().join("none.folded");
    for missing in &needed {
        let caps: Vec<&str> = needed.iter().copied().filter(|c| c != missing).collect();
        let name = format!("CAP_{}", missing.to_uppercase());
        let output = run_as_nobody_with(
            &caps,
            &[
                "profile",
                "-d",
                "1s",
                "-o",
                out.to_str().expect("utf-8 path"),
                "--all",
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "ran without {name}:\n{stderr}");
        assert!(
            stderr.contains(&name),
            "error does not name {name}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        for other in &caps {
            let other = format!("missing: CAP_{}", other.to_uppercase());
            assert!(
                !stderr.contains(&other),
                "names a capability it has:\n{stderr}"
            );
        }
        let check = run_as_nobody_with(&caps, &["check"]);
        let report = String::from_utf8_lossy(&check.stdout);
        assert!(!check.status.success(), "check passed without {name}");
        assert!(
            report.contains("FAIL root / capabilities") && report.contains(&name),
            "check does not name {name}:\n{report}"
        );
    }
}
