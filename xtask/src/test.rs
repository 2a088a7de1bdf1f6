//! `cargo xtask test [-- ARGS]`: setup, build (debug), fixtures, then the workspace tests,
//! `cargo fmt --check` and clippy. Every check runs even when an earlier one fails, and a
//! summary at the end names each failure, so a test failure is not buried under later
//! output nor hidden by a formatting nit.

use std::ffi::OsString;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::util::{self, workspace_root};
use crate::{build, fixtures, setup};

/// `LOUPE_GO_1_24_11`, the variable naming one Go toolchain's binary.
fn go_env_var(version: &str) -> String {
    format!("LOUPE_GO_{}", version.replace('.', "_"))
}

pub fn run(cargo_test_args: Vec<OsString>) -> Result<()> {
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, false)?;
    let fixtures = fixtures::build_all()?;

    if !util::is_root() {
        println!("test: WARNING: not root; tests that load eBPF programs will fail");
    }

    let go_binaries: Vec<(String, std::path::PathBuf)> = setup::go_versions()
        .into_iter()
        .map(|v| (v.to_string(), setup::go_binary(v)))
        .collect();

    let mut cargo_test = build::workspace_cargo(&object);
    cargo_test
        .env("LOUPE_BIN", &loupe)
        .env("LOUPE_FIXTURES", &fixtures)
        .env(
            "LOUPE_KUBERNETES_VALIDATE",
            setup::kubernetes_validate_dir(),
        )
        .env(
            "LOUPE_GO_BINARIES",
            go_binaries
                .iter()
                .map(|(v, p)| format!("{v}={}", p.display()))
                .collect::<Vec<_>>()
                .join(","),
        )
        // --no-fail-fast: run every test binary, so one failure does not hide others.
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&cargo_test_args);
    for (version, path) in &go_binaries {
        cargo_test.env(go_env_var(version), path);
    }

    // rustfmt and clippy run with the pinned lint toolchain (see setup::LINT_TOOLCHAIN): a new
    // stable release's lints must not fail an unchanged tree.
    let lint = format!("+{}", setup::LINT_TOOLCHAIN);
    let mut fmt = util::cargo();
    fmt.current_dir(workspace_root())
        .args([lint.as_str(), "fmt", "--all", "--check"]);
    // ebpf/ is outside the workspace; check its formatting separately.
    let mut fmt_ebpf = util::cargo();
    fmt_ebpf.current_dir(workspace_root()).args([
        lint.as_str(),
        "fmt",
        "--check",
        "--manifest-path",
        "ebpf/Cargo.toml",
    ]);
    let mut clippy = build::workspace_cargo(&object);
    clippy.args([
        lint.as_str(),
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);

    let steps: Vec<(&str, Command)> = vec![
        ("cargo test", cargo_test),
        ("cargo fmt --check", fmt),
        ("cargo fmt --check (ebpf)", fmt_ebpf),
        ("cargo clippy --all-targets", clippy),
    ];
    let mut results = Vec::new();
    for (name, mut cmd) in steps {
        println!("\ntest: ==> {name}");
        let start = Instant::now();
        let result = util::run(&mut cmd);
        results.push((name, result, start.elapsed()));
    }

    println!("\ntest: summary");
    let mut failed = Vec::new();
    for (name, result, took) in &results {
        match result {
            Ok(()) => println!("test:   ok      {name} ({:.1}s)", took.as_secs_f64()),
            Err(e) => {
                println!("test:   FAILED  {name} ({:.1}s): {e:#}", took.as_secs_f64());
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("failed: {} (see the output above)", failed.join(", "));
    }
    Ok(())
}
