//! Debian packages: which are installed, which apt can install, and installing them.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{self, privileged, try_output};

/// Packages among `wanted` that dpkg does not report as installed.
pub fn missing(wanted: &[String]) -> Result<Vec<String>> {
    // Packages dpkg has never heard of produce no line (and a non-zero exit), so read
    // stdout regardless of the status.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Abbrev}\n")
        .args(wanted)
        .output()
        .context("could not run dpkg-query (is this Debian?)")?;
    let installed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pkg, status) = l.split_once(' ')?;
            status.starts_with("ii").then(|| pkg.to_string())
        })
        .collect();
    Ok(wanted
        .iter()
        .filter(|p| !installed.contains(*p))
        .cloned()
        .collect())
}

fn hint(packages: &[String]) -> String {
    format!(
        "as root, run: apt-get update && apt-get install -y {}",
        packages.join(" ")
    )
}

/// `env DEBIAN_FRONTEND=noninteractive apt-get ARGS`, as root. Through `env`: sudo would
/// drop a DEBIAN_FRONTEND set on the command itself.
fn apt_get(args: &[&str], why: &str) -> Result<Command> {
    let mut cmd = privileged("env", why)?;
    cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
        .args(args);
    Ok(cmd)
}

/// `apt-get update`: package lists may be absent or stale on a fresh machine.
pub fn update(packages: &[String]) -> Result<()> {
    let why = format!("installing apt packages ({})", packages.join(" "));
    util::run(&mut apt_get(&["update"], &why)?).with_context(|| hint(packages))
}

/// `apt-get install -y PACKAGES` (after [`update`]), then checks they are installed.
pub fn install(packages: &[String]) -> Result<()> {
    let why = format!("installing apt packages ({})", packages.join(" "));
    let mut cmd = apt_get(&["install", "-y"], &why)?;
    cmd.args(packages);
    util::run(&mut cmd).with_context(|| hint(packages))?;
    let still = missing(packages)?;
    if !still.is_empty() {
        bail!(
            "apt-get succeeded but {} still not installed",
            still.join(" ")
        );
    }
    Ok(())
}

/// The version apt would install, or `None` when no configured source has the package.
pub fn candidate(package: &str) -> Option<String> {
    let policy = try_output(Command::new("apt-cache").args(["policy", package]))?;
    candidate_in_policy(&policy)
}

/// Reads `Candidate: <version>` from `apt-cache policy` output (`(none)` or no line: none).
fn candidate_in_policy(policy: &str) -> Option<String> {
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))?
        .trim();
    (!version.is_empty() && version != "(none)").then(|| version.to_string())
}

/// The LLVM majors apt offers `llvm-N-dev` for, ascending (for error messages).
pub fn llvm_dev_majors() -> Vec<u32> {
    let Some(list) = try_output(Command::new("apt-cache").args(["pkgnames", "llvm-"])) else {
        return Vec::new();
    };
    llvm_dev_majors_in(&list)
}

fn llvm_dev_majors_in(pkgnames: &str) -> Vec<u32> {
    let majors: BTreeSet<u32> = pkgnames
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("llvm-")?
                .strip_suffix("-dev")?
                .parse()
                .ok()
        })
        .collect();
    majors.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_tells_installed_from_missing() {
        let wanted = ["dpkg".to_string(), "loupe-no-such-package".to_string()];
        assert_eq!(missing(&wanted).unwrap(), ["loupe-no-such-package"]);
    }

    #[test]
    fn policy_candidate_is_a_version_or_none() {
        let present = "llvm-22-dev:\n  Installed: (none)\n  Candidate: 1:22.1.8-1~deb12u1\n  Version table:\n";
        assert_eq!(
            candidate_in_policy(present).as_deref(),
            Some("1:22.1.8-1~deb12u1")
        );
        let absent = "llvm-23-dev:\n  Installed: (none)\n  Candidate: (none)\n";
        assert_eq!(candidate_in_policy(absent), None);
        // apt-cache prints nothing at all for a name no source knows.
        assert_eq!(candidate_in_policy(""), None);
    }

    #[test]
    fn llvm_dev_majors_come_from_package_names() {
        let names = "llvm-15-dev\nllvm-22-tools\nllvm-22-dev\nllvm-14-dev\nllvm-dev\nllvm-22\n";
        assert_eq!(llvm_dev_majors_in(names), [14, 15, 22]);
    }
}
