//! bpf-linker: links the nightly's LLVM bitcode into the eBPF object, so it must be built
//! against the LLVM major of that nightly. `bpf-linker --version` does not say which LLVM it
//! has; two records do: the `libLLVM.so.N` it loads (ldd), and for a statically linked one,
//! the `llvm-N` feature cargo recorded when it installed it (`$CARGO_HOME/.crates2.json`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Result};

use super::say;
use crate::util::{self, cargo_home_bin, is_executable, try_output};

const MIN_VERSION: (u64, u64) = (0, 13);

fn find() -> Option<PathBuf> {
    let in_cargo_home = cargo_home_bin().join("bpf-linker");
    if is_executable(&in_cargo_home) {
        Some(in_cargo_home)
    } else {
        util::which("bpf-linker")
    }
}

/// The LLVM major of a `libLLVM` that ldd lists: `libLLVM.so.22.1`, `libLLVM-22.so`.
fn llvm_major_in_ldd(ldd: &str) -> Option<u32> {
    let lib = ldd.split_whitespace().find(|w| w.starts_with("libLLVM"))?;
    let digits = lib
        .strip_prefix("libLLVM.so.")
        .or_else(|| lib.strip_prefix("libLLVM-"))?;
    digits
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The `llvm-N` feature of the bpf-linker entry in cargo's install record.
fn llvm_feature_in_crates2(json: &str) -> Option<u32> {
    let record: serde_json::Value = serde_json::from_str(json).ok()?;
    let installs = record.get("installs")?.as_object()?;
    let (_, entry) = installs
        .iter()
        .find(|(key, _)| key.starts_with("bpf-linker "))?;
    entry
        .get("features")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str()?.strip_prefix("llvm-")?.parse().ok())
        .next()
}

/// The LLVM major the bpf-linker at `path` was built against, if any record says.
fn built_against(path: &Path) -> Option<u32> {
    let ldd = try_output(Command::new("ldd").arg(path)).unwrap_or_default();
    llvm_major_in_ldd(&ldd).or_else(|| {
        let crates2 = cargo_home_bin().with_file_name(".crates2.json");
        llvm_feature_in_crates2(&fs::read_to_string(crates2).ok()?)
    })
}

/// `Ok(description)` when usable with LLVM `llvm`; `Err(reason)` when it must be reinstalled.
fn check(path: &Path, llvm: u32) -> std::result::Result<String, String> {
    let version = try_output(Command::new(path).arg("--version"))
        .ok_or_else(|| "`bpf-linker --version` failed".to_string())?;
    let version = version.trim().trim_start_matches("bpf-linker").trim();
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_VERSION {
        return Err(format!("version {version} is older than 0.13"));
    }
    match built_against(path) {
        Some(built) if built == llvm => Ok(format!("{version}, LLVM {llvm}")),
        Some(built) => Err(format!(
            "version {version} is built against LLVM {built}, the nightly needs LLVM {llvm}"
        )),
        None => Err(format!(
            "version {version} links an LLVM of unknown version (no libLLVM in ldd, no llvm-N \
             feature in cargo's install record)"
        )),
    }
}

/// Makes sure a bpf-linker built against LLVM `llvm` is installed; (re)builds it otherwise.
/// `llvm-<llvm>-dev` must be installed first.
pub fn ensure(llvm: u32) -> Result<()> {
    let existing = find();
    let reason = match &existing {
        Some(path) => match check(path, llvm) {
            Ok(desc) => {
                say(format!("bpf-linker: {desc} ({})", path.display()));
                return Ok(());
            }
            Err(reason) => format!("{} is unusable: {reason}", path.display()),
        },
        None => "not installed".to_string(),
    };
    say(format!(
        "bpf-linker: {reason}; building it against LLVM {llvm} (a few minutes)"
    ));
    let llvm_bin = format!("/usr/lib/llvm-{llvm}/bin");
    if !Path::new(&llvm_bin).join("llvm-config").exists() {
        bail!("{llvm_bin}/llvm-config not found: llvm-{llvm}-dev must be installed first");
    }
    let mut path = std::ffi::OsString::from(format!("{llvm_bin}:"));
    path.push(util::path_with_cargo_bin());
    let mut cmd = util::cargo();
    cmd.env("PATH", path).args([
        "install",
        "bpf-linker",
        "--version",
        "^0.13",
        "--locked",
        "--no-default-features",
        "--features",
        &format!("llvm-{llvm}"),
    ]);
    if existing.is_some() {
        cmd.arg("--force");
    }
    util::run(&mut cmd)?;
    let installed = find().ok_or_else(|| {
        anyhow!(
            "cargo install succeeded but bpf-linker is not in {}",
            cargo_home_bin().display()
        )
    })?;
    let desc = check(&installed, llvm)
        .map_err(|e| anyhow!("freshly installed {}: {e}", installed.display()))?;
    say(format!("bpf-linker: {desc} ({})", installed.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_names_the_llvm_major() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd5b9f6000)\n\
            \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007f113b200000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f113b000000)\n";
        assert_eq!(llvm_major_in_ldd(ldd), Some(22));
        assert_eq!(
            llvm_major_in_ldd("\tlibLLVM-17.so => /usr/lib/libLLVM-17.so (0x1)\n"),
            Some(17)
        );
        assert_eq!(
            llvm_major_in_ldd("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"),
            None
        );
        assert_eq!(llvm_major_in_ldd("\tstatically linked\n"), None);
    }

    #[test]
    fn cargo_install_record_names_the_llvm_feature() {
        let json = r#"{"installs":{
            "cargo-nextest 0.9.143 (registry+https://github.com/rust-lang/crates.io-index)":
                {"features":["default"]},
            "bpf-linker 0.13.0 (registry+https://github.com/rust-lang/crates.io-index)":
                {"version_req":"^0.13","bins":["bpf-linker"],"features":["llvm-22"],
                 "all_features":false,"no_default_features":true}}}"#;
        assert_eq!(llvm_feature_in_crates2(json), Some(22));
        assert_eq!(
            llvm_feature_in_crates2(&json.replace("llvm-22", "llvm-21")),
            Some(21)
        );
        // Installed with default features (rustc's own LLVM proxy): no record of a major.
        assert_eq!(
            llvm_feature_in_crates2(&json.replace("\"llvm-22\"", "\"rust-llvm-22\"")),
            None
        );
        assert_eq!(llvm_feature_in_crates2("not json"), None);
    }

    #[test]
    fn the_installed_linker_matches_the_nightly_and_no_other_llvm() {
        // `cargo xtask test` runs setup first, which installs both.
        let path = find().expect("bpf-linker is not installed: run `cargo xtask setup`");
        let vv = super::super::rust::nightly_version_info().unwrap();
        let llvm = super::super::rust::llvm_major(&vv).unwrap();
        check(&path, llvm).unwrap();
        let err = check(&path, llvm + 1).unwrap_err();
        assert!(
            err.contains(&format!(
                "built against LLVM {llvm}, the nightly needs LLVM {}",
                llvm + 1
            )),
            "{err}"
        );
    }
}
