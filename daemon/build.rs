//! Embeds the kernel programs: `cargo xtask build` compiles them (nightly, bpfel target)
//! and passes their path in `LOUPE_BPF_OBJECT`; a plain `cargo build` finds them at the
//! path xtask uses.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LOUPE_BPF_OBJECT");
    let object = match std::env::var_os("LOUPE_BPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bpf/bpfel-unknown-none/release/loupe-ebpf"),
    };
    if !object.is_file() {
        panic!(
            "loupe's eBPF object is missing at {}: build it with `cargo xtask build` \
             (or set LOUPE_BPF_OBJECT to its path)",
            object.display()
        );
    }
    let object = object
        .canonicalize()
        .expect("canonical path of an existing file");
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=LOUPE_BPF_OBJECT={}", object.display());
}
