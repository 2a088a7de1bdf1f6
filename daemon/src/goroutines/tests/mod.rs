//! Tests against real Go programs: the `goroutines` fixture (fixtures/go/goroutines) built
//! by every Go toolchain `cargo xtask setup` installs, stripped (`goroutines`) and with
//! symbols and DWARF (`goroutines.debug`). Ground truth comes from the binaries (DWARF,
//! symbol table, `runtime.waitReasonStrings`) and from the running program itself
//! (runtime.NumGoroutine(), the states and creators its own runtime.Stack traceback prints).

mod census;
mod tables;

use std::path::{Path, PathBuf};

/// `$LOUPE_FIXTURES`, or `<workspace>/target/fixtures`.
fn fixtures_root() -> PathBuf {
    match std::env::var_os("LOUPE_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"),
    }
}

/// The Go versions setup installs, read from its source (`xtask/src/setup.rs`) so that a
/// toolchain added there is expected here too: `DEBIAN_GO_VERSION` and `PYPI_GO_VERSIONS`.
fn expected_versions() -> Vec<String> {
    let setup = include_str!("../../../../xtask/src/setup.rs");
    // From `pub const NAME` to the `;` that ends it (the list may span lines).
    let value = |name: &str| -> &str {
        let start = setup
            .find(&format!("pub const {name}"))
            .unwrap_or_else(|| panic!("xtask/src/setup.rs has no `pub const {name}`"));
        let rest = &setup[start..];
        let body = &rest[..rest.find(';').unwrap_or(rest.len())];
        body.split_once('=').map(|(_, v)| v).unwrap_or_default()
    };
    let quoted = |s: &str| -> Vec<String> {
        s.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut versions = quoted(value("DEBIAN_GO_VERSION"));
    versions.extend(quoted(value("PYPI_GO_VERSIONS")));
    assert!(
        versions.len() >= 2,
        "could not read the Go versions from xtask/src/setup.rs: {versions:?}"
    );
    versions
}

/// One toolchain's builds of the fixture.
pub(super) struct Fixture {
    pub version: String,
    pub stripped: PathBuf,
    pub debug: PathBuf,
}

impl Fixture {
    pub fn builds(&self) -> [(&Path, bool); 2] {
        [(&self.stripped, true), (&self.debug, false)]
    }
}

/// Every expected version's fixture. Fails (never skips) when one is missing: these tests
/// are what checks the per-release tables against real binaries.
pub(super) fn fixtures() -> Vec<Fixture> {
    let root = fixtures_root();
    let fixtures: Vec<Fixture> = expected_versions()
        .into_iter()
        .map(|version| {
            let dir = root.join(format!("go{version}"));
            Fixture {
                stripped: dir.join("goroutines"),
                debug: dir.join("goroutines.debug"),
                version,
            }
        })
        .collect();
    for f in &fixtures {
        for (p, _) in f.builds() {
            assert!(
                p.is_file(),
                "go{}: {} is missing: run `cargo xtask fixtures` (after `cargo xtask setup`)",
                f.version,
                p.display()
            );
        }
    }
    fixtures
}
