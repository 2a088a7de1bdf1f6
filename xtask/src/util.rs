//! Helpers shared by the xtask commands: paths, running commands, environment hygiene.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `<workspace>/target`. Always this directory, whatever CARGO_TARGET_DIR says, so that
/// paths printed and passed to tests are predictable; child cargo invocations get
/// CARGO_TARGET_DIR removed for the same reason.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// `"debug"` or `"release"`.
pub fn profile_dir(release: bool) -> &'static str {
    if release {
        "release"
    } else {
        "debug"
    }
}

/// Renders a command line for logs: `KEY=value program arg...` (only the env vars set on it).
pub fn display(cmd: &Command) -> String {
    let path = env::var_os("PATH");
    let mut parts: Vec<String> = cmd
        .get_envs()
        // PATH only when it differs from ours (it usually just gains ~/.cargo/bin).
        .filter(|(k, v)| !(*k == "PATH" && v.map(OsStr::to_os_string) == path))
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Prints the command, runs it with inherited stdio, and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    match cmd.get_current_dir() {
        Some(dir) => println!("$ (cd {} && {shown})", dir.display()),
        None => println!("$ {shown}"),
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", cmd.get_program().to_string_lossy()))?;
    if !status.success() {
        bail!("command failed ({status}): {shown}");
    }
    Ok(())
}

/// Runs the command quietly and returns its stdout; the error carries stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", cmd.get_program().to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "command failed ({}): {}\n{}{}",
            out.status,
            display(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`output`], but a command that cannot start or fails yields `None`.
pub fn try_output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds an executable in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Effective uid of this process, from /proc/self/status.
pub fn euid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub fn is_root() -> bool {
    euid() == Some(0)
}

/// A command that needs root: run directly when root, through `sudo` when not and sudo
/// exists (`sudo -n` when no terminal could answer a password prompt), otherwise an error
/// explaining what to run.
pub fn privileged(program: &str, why: &str) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    if which("sudo").is_some() {
        let mut cmd = Command::new("sudo");
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            cmd.arg("-n");
        }
        cmd.arg("--").arg(program);
        return Ok(cmd);
    }
    bail!("{why} needs root, this process is not root and `sudo` is not installed; rerun as root")
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where rustup proxies and `cargo install` live.
pub fn cargo_home_bin() -> PathBuf {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

/// PATH with `$CARGO_HOME/bin` first, so freshly `cargo install`ed tools (bpf-linker) and
/// the rustup proxies are found even when the caller's PATH lacks them.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let bin = cargo_home_bin();
    if env::split_paths(&current).any(|dir| dir == bin) {
        return current;
    }
    let dirs = std::iter::once(bin).chain(env::split_paths(&current).collect::<Vec<_>>());
    env::join_paths(dirs).expect("PATH entries contain no ':'")
}

/// Variables that `cargo run` (and the rustup proxy) set for xtask and that must not leak
/// into a nested cargo using another toolchain, target or target directory.
const LEAKY_VARS: &[&str] = &[
    "CARGO",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "RUST_RECURSION_COUNT",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "LD_LIBRARY_PATH",
];

/// Removes toolchain-selecting and build-shaping variables inherited from the outer cargo.
pub fn scrub_cargo_env(cmd: &mut Command) -> &mut Command {
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("CARGO_PKG_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A `cargo` for the workspace's own (stable) toolchain, with a scrubbed environment.
pub fn cargo() -> Command {
    let mut cmd = Command::new(cargo_proxy());
    scrub_cargo_env(&mut cmd);
    cmd.env("PATH", path_with_cargo_bin());
    cmd
}

/// The rustup `cargo` proxy (it understands `+toolchain`), falling back to PATH.
pub fn cargo_proxy() -> PathBuf {
    let proxy = cargo_home_bin().join("cargo");
    if is_executable(&proxy) {
        proxy
    } else {
        PathBuf::from("cargo")
    }
}

/// Newest modification time of any file under `path` (the path itself if a file).
pub fn newest_mtime(path: &Path) -> Result<std::time::SystemTime> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mut newest = meta.modified()?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            let t = newest_mtime(&entry?.path())?;
            newest = newest.max(t);
        }
    }
    Ok(newest)
}

/// True when `output` exists and is at least as new as every input.
pub fn up_to_date(output: &Path, inputs: &[&Path]) -> Result<bool> {
    let Ok(out) = fs::metadata(output).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    for input in inputs {
        if newest_mtime(input)? > out {
            return Ok(false);
        }
    }
    Ok(true)
}
