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

/// Releases the fixture builder (`cargo xtask fixtures`) compiles, as directory suffixes.
const GO_VERSIONS: [&str; 5] = ["1.19", "1.21.13", "1.24.11", "1.26.6", "1.27.3"];

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

/// Every Go version whose fixture directory exists. Fails (not skips) when there is none:
/// these tests are the only check that the parser matches real binaries.
pub(super) fn fixtures() -> Vec<Fixture> {
    let root = fixtures_root();
    let found: Vec<Fixture> = GO_VERSIONS
        .iter()
        .filter(|v| root.join(format!("go{v}")).is_dir())
        .map(|&version| {
            let dir = root.join(format!("go{version}"));
            Fixture {
                version,
                stripped: dir.join("symtest"),
                debug: dir.join("symtest.debug"),
            }
        })
        .collect();
    assert!(
        !found.is_empty(),
        "no Go fixtures under {} (looked for go{{{}}}/symtest): run `cargo xtask fixtures`",
        root.display(),
        GO_VERSIONS.join(",")
    );
    found
}
