//! Tests against real Go programs: the `goroutines` fixture (fixtures/go/goroutines) built
//! by every Go toolchain `cargo xtask setup` installs, stripped (`goroutines`) and with
//! symbols and DWARF (`goroutines.debug`). Ground truth comes from the binaries (DWARF,
//! symbol table, `runtime.waitReasonStrings`) and from the running program itself
//! (runtime.NumGoroutine(), the states and creators its own runtime.Stack traceback prints).

mod census;
pub(super) mod running;
mod sched_latency;
mod tables;

use std::path::{Path, PathBuf};

/// `$LOUPE_FIXTURES`, or `<workspace>/target/fixtures`.
fn fixtures_root() -> PathBuf {
    match std::env::var_os("LOUPE_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"),
    }
}

/// The Go versions setup installs and fixtures are built with (`xtask/go-toolchains.txt`).
fn expected_versions() -> Vec<String> {
    crate::symbolize::go::tests::go_versions()
        .into_iter()
        .map(str::to_string)
        .collect()
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
