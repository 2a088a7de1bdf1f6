//! Tests against real Go binaries: the `symtest` fixture (fixtures/go/symtest) built by every
//! supported toolchain, stripped (`<dir>/symtest`) and with symbols and DWARF
//! (`<dir>/symtest.debug`). Ground truth comes from the binaries themselves: what the Go
//! runtime prints about its own stacks, the ELF symbol table, and the DWARF call frame
//! information the Go linker writes.

mod cfa;
mod malformed;
mod runtime;
mod symtab;
mod unwind;

use std::path::{Path, PathBuf};

use super::GoTable;

/// The Go toolchains `cargo xtask setup` installs and `cargo xtask fixtures` builds with: the
/// same file xtask reads, so a version added there is tested here, or these tests fail.
const GO_TOOLCHAINS: &str = include_str!("../../../../../xtask/go-toolchains.txt");

/// The versions in [`GO_TOOLCHAINS`] (`<version> <source>` lines, `#` comments), as the
/// fixture directories name them (`go1.19`, `go1.24.11`).
pub(crate) fn go_versions() -> Vec<&'static str> {
    let versions: Vec<&str> = GO_TOOLCHAINS
        .lines()
        .filter_map(|l| l.split('#').next()?.split_whitespace().next())
        .collect();
    assert!(
        !versions.is_empty(),
        "xtask/go-toolchains.txt lists no Go toolchain"
    );
    versions
}

/// `$LOUPE_FIXTURES`, or `<workspace>/target/fixtures`.
fn fixtures_root() -> PathBuf {
    match std::env::var_os("LOUPE_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"),
    }
}

/// One toolchain's build of the fixture.
pub(super) struct Fixture {
    pub version: &'static str,
    pub stripped: PathBuf,
    pub debug: PathBuf,
}

impl Fixture {
    pub fn stripped_bytes(&self) -> Vec<u8> {
        read(&self.stripped)
    }

    pub fn debug_bytes(&self) -> Vec<u8> {
        read(&self.debug)
    }

    pub fn table(&self, bytes: &[u8]) -> GoTable {
        match GoTable::from_elf(bytes) {
            Ok(Some(t)) => t,
            Ok(None) => panic!("go{}: symtest has no .gopclntab", self.version),
            Err(e) => panic!("go{}: cannot read symtest: {e}", self.version),
        }
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The fixture of every Go version setup installs. Fails (not skips) when any is missing:
/// these tests are the only check that the parser matches real binaries of each release.
pub(super) fn fixtures() -> Vec<Fixture> {
    let root = fixtures_root();
    let versions = go_versions();
    let fixtures: Vec<Fixture> = versions
        .iter()
        .map(|&version| {
            let dir = root.join(format!("go{version}"));
            Fixture {
                version,
                stripped: dir.join("symtest"),
                debug: dir.join("symtest.debug"),
            }
        })
        .collect();
    let missing: Vec<String> = fixtures
        .iter()
        .flat_map(|f| [&f.stripped, &f.debug])
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "Go fixtures missing for versions in xtask/go-toolchains.txt ({}): {}; \
         run `cargo xtask fixtures`",
        versions.join(", "),
        missing.join(", ")
    );
    fixtures
}

#[test]
fn every_listed_go_version_has_its_fixture_built_by_that_release() {
    // The Go linker embeds the toolchain's version (runtime.buildVersion, "go1.24.11") even in
    // stripped binaries: a directory holding another release's build would test the wrong one.
    for fx in fixtures() {
        for path in [&fx.stripped, &fx.debug] {
            let bytes = read(path);
            let tag = format!("go{}", fx.version);
            let found = bytes.windows(tag.len()).any(|w| w == tag.as_bytes());
            assert!(found, "{} does not carry {tag}", path.display());
        }
    }
}
