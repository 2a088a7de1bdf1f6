//! A library truncated while loupe reads it (rewritten in place by an upgrade or a build):
//! reads past its new end fault in loupe, which must answer them, keep profiling, show the
//! library's frames as `module+offset`, and exit 0 with the profile.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    ops::Range,
    path::Path,
    process::{Command, Stdio},
};

use common::*;
use object::{Object, ObjectSection, ObjectSymbol};

const HZ: f64 = 199.0;

/// Builds the fixture's library half into `dir` (the program half is a regular fixture).
fn build_library(dir: &Path) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/c/dlopen_truncated.c");
    let lib = dir.join("libspin.so");
    let output = Command::new("gcc")
        .args(["-O2", "-g", "-shared", "-fPIC", "-DAS_LIBRARY", "-o"])
        .arg(&lib)
        .arg(&source)
        .output()
        .expect("gcc is needed to build the test library (apt-get install build-essential)");
    assert!(
        output.status.success(),
        "building {}: {}",
        lib.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    lib
}

/// Ground truth from the library file itself, read before it is cut: where each spin
/// function is, and the page-aligned offset where its unwind tables begin (what gets cut,
/// leaving the code the program runs).
struct Layout {
    spin_before: Range<u64>,
    spin_after: Range<u64>,
    cut: u64,
}

fn layout(lib: &Path) -> Layout {
    let bytes = std::fs::read(lib).expect("read the library");
    let elf = object::File::parse(&*bytes).expect("parse the library");
    let function = |name: &str| {
        let sym = elf
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("{name} is in the library's symbol table"));
        sym.address()..sym.address() + sym.size()
    };
    let section = |name: &str| {
        let s = elf
            .section_by_name(name)
            .unwrap_or_else(|| panic!("the library has {name}"));
        let (offset, size) = s.file_range().expect("in the file");
        offset..offset + size
    };
    let text = section(".text");
    let cut = section(".eh_frame_hdr").start & !4095;
    assert!(
        text.end <= cut,
        "the library's code ({text:?}) must end before its unwind tables' page ({cut:#x})"
    );
    Layout {
        spin_before: function("spin_before"),
        spin_after: function("spin_after"),
        cut,
    }
}

/// The offset in a `libspin.so+0x...` frame.
fn unnamed_offset(frame: &str) -> Option<u64> {
    let hex = frame.strip_prefix("libspin.so+0x")?;
    u64::from_str_radix(hex, 16).ok()
}

#[test]
fn a_library_truncated_while_profiled_leaves_loupe_running_and_its_frames_unnamed() {
    assert_root();
    let _serial = serial();
    let dir = temp_dir();
    let lib = build_library(dir.path());
    let layout = layout(&lib);
    let out = dir.path().join("truncated.folded");

    let mut loupe = Command::new(loupe_bin())
        .args(["profile", "-F", "199", "-d", "60s", "-o"])
        .arg(&out)
        .arg("--")
        .arg(fixture("c/dlopen_truncated"))
        .arg(&lib)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loupe");
    let mut stdin = loupe.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(loupe.stdout.take().expect("piped stdout"));
    let stderr = loupe.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text).ok();
        text
    });

    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the program's output");
    assert_eq!(line.trim(), "loaded", "the program ran its first phase");
    // loupe has unwound the first phase's samples (it reads them as they come): the
    // library is open and mapped in loupe now. Cut it, then let the program go on.
    std::thread::sleep(SETTLE);
    std::fs::File::options()
        .write(true)
        .open(&lib)
        .and_then(|f| f.set_len(layout.cut))
        .expect("truncate the library");
    writeln!(stdin, "go").expect("let the program go on");
    line.clear();
    stdout.read_line(&mut line).expect("read the ground truth");
    let truth = ground_truth(line.as_bytes());

    let status = loupe.wait().expect("wait for loupe");
    let stderr = stderr.join().expect("stderr reader");
    assert!(status.success(), "loupe failed: {status}\n{stderr}");

    // loupe noticed, and answered reads past the new end (without that it would have died).
    let warning = stderr
        .lines()
        .find(|l| l.contains("libspin.so was truncated or rewritten"))
        .unwrap_or_else(|| panic!("no warning about the truncated library:\n{stderr}"));
    let answered: u64 = warning
        .split(" reads past the end")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of answered reads in {warning:?}"));
    assert!(answered > 0, "no read past the end was answered: {warning}");

    // Both phases were sampled, in the library, at the rate the program's own clock gives;
    // the library's frames are shown by offset (its file no longer has the code that ran).
    let stacks = read_folded(&out);
    let program: Vec<&FoldedStack> = stacks
        .iter()
        .filter(|s| s.process() == "dlopen_truncate")
        .collect();
    assert!(!program.is_empty(), "no samples of the program:\n{stderr}");
    let in_function = |range: &Range<u64>| -> u64 {
        program
            .iter()
            .filter(|s| {
                s.frames
                    .iter()
                    .filter_map(|f| unnamed_offset(f))
                    .any(|off| range.contains(&off))
            })
            .map(|s| s.count)
            .sum()
    };
    assert!(
        program
            .iter()
            .flat_map(|s| &s.frames)
            .all(|f| !f.contains("spin_before") && !f.contains("spin_after")),
        "frames of the truncated library were named from its new bytes"
    );
    for (name, range, key) in [
        ("spin_before", &layout.spin_before, "before_ns"),
        ("spin_after", &layout.spin_after, "after_ns"),
    ] {
        let ns = truth[key].as_f64().unwrap_or_else(|| panic!("{key}"));
        let expected = ns / 1e9 * HZ;
        let got = in_function(range) as f64;
        assert!(
            got >= 0.5 * expected,
            "{name}: {got} samples, the program ran it for {:.0} ms ({expected:.0} expected)",
            ns / 1e6
        );
    }
}
