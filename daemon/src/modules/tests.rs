//! The module cache against real files mapped into this test process: identity across
//! rewrites and inode reuse, release, and reads after truncation.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::*;
use crate::{process::maps, profile::FrameKind, symbolize::Symbolizer};

/// A small ELF executable every Debian machine has.
const SYSTEM_ELF: &str = "/usr/bin/true";

/// A file mapped executable into this process, as a profiled process maps a library.
struct MappedHere {
    _map: memmap2::Mmap,
    mapping: Mapping,
}

fn map_exec(path: &Path) -> MappedHere {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: a private mapping of a file this test owns; it is never executed.
    let map = unsafe { memmap2::MmapOptions::new().map_exec(&file) }.expect("map");
    let start = map.as_ptr() as u64;
    let text = std::fs::read_to_string("/proc/self/maps").expect("read own maps");
    let mapping = maps::parse(&text)
        .into_iter()
        .find(|m| m.start == start)
        .expect("the new mapping is in /proc/self/maps");
    assert!(mapping.executable && mapping.is_file());
    MappedHere { _map: map, mapping }
}

fn copy_of(src: &str, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(src, &path).unwrap_or_else(|e| panic!("copy {src}: {e}"));
    path
}

fn pid() -> u32 {
    std::process::id()
}

#[test]
fn one_module_per_file_until_released_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = copy_of(SYSTEM_ELF, dir.path(), "lib.so");
    let mapped = map_exec(&path);
    let mut cache = ModuleCache::default();

    let first = cache
        .for_mapping(pid(), &mapped.mapping)
        .expect("an ELF file");
    let again = cache.for_mapping(pid(), &mapped.mapping).expect("cached");
    assert!(Arc::ptr_eq(&first, &again), "one module per file");
    assert_eq!(cache.len(), 1);
    let id = first.id;

    // Mapped by a process (an Arc outside the cache): kept whatever the caller says.
    assert_eq!(cache.release_unused(|_| false), 0);
    drop((first, again));
    // Pending frames refer to it: kept.
    assert_eq!(cache.release_unused(|needed| needed == id), 0);
    assert!(cache.get(id).is_some());
    // Neither: released, and its id finds nothing from now on.
    assert_eq!(cache.release_unused(|_| false), 1);
    assert!(cache.get(id).is_none());
    assert!(cache.is_empty());

    let reopened = cache
        .for_mapping(pid(), &mapped.mapping)
        .expect("opened again");
    assert!(
        reopened.id > id,
        "ids are not reused ({} after {id})",
        reopened.id
    );
    assert!(cache.get(id).is_none());
}

#[test]
fn a_file_rewritten_in_place_is_a_new_module_and_the_old_one_is_damaged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = copy_of(SYSTEM_ELF, dir.path(), "lib.so");
    let mapped = map_exec(&path);
    let mut cache = ModuleCache::default();
    let old = cache
        .for_mapping(pid(), &mapped.mapping)
        .expect("an ELF file");
    assert!(!old.is_damaged());

    // Same inode, new bytes (what `cp new.so lib.so` does): the maps line is unchanged.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut bytes = std::fs::read(SYSTEM_ELF).expect("read");
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, &bytes).expect("rewrite in place");
    let remapped = map_exec(&path);
    assert_eq!(remapped.mapping.inode, mapped.mapping.inode);

    let new = cache
        .for_mapping(pid(), &remapped.mapping)
        .expect("an ELF file");
    assert_ne!(new.id, old.id, "the rewritten file is another module");
    assert!(old.is_damaged(), "the old module's file changed under it");
    assert!(!new.is_damaged());
    let frames = Symbolizer::default().user(&old, &[0x1000]);
    assert_eq!(frames[0][0].function, format!("{}+0x1000", old.name));
    assert_eq!(frames[0][0].kind, FrameKind::User);
}

#[test]
fn a_reused_inode_is_not_mistaken_for_the_file_that_had_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data.bin");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write");
    let mut cache = ModuleCache::default();
    let (inode, not_elf) = {
        let mapped = map_exec(&path);
        let module = cache.for_mapping(pid(), &mapped.mapping);
        assert!(module.is_none(), "not an ELF file");
        (mapped.mapping.inode, cache.not_elf_len())
    };
    assert_eq!(not_elf, 1, "remembered as not ELF");

    // Delete it and create an ELF file, until the file system hands out the same inode
    // (ext4 reuses a freed inode at once).
    std::fs::remove_file(&path).expect("delete");
    let mut reused = None;
    for attempt in 0..8 {
        let candidate = copy_of(SYSTEM_ELF, dir.path(), &format!("lib{attempt}.so"));
        let mapped = map_exec(&candidate);
        if mapped.mapping.inode == inode {
            reused = Some(mapped);
            break;
        }
    }
    let mapped = reused.expect(
        "the file system never reused the freed inode, so this test cannot check reuse: \
         run it on a file system that does (ext4)",
    );
    let module = cache.for_mapping(pid(), &mapped.mapping);
    assert!(module.is_some(), "the new file on the reused inode is read");
}

#[test]
fn the_not_elf_memory_is_bounded() {
    let mut cache = ModuleCache::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data.bin");
    std::fs::write(&path, vec![b'x'; 4096]).expect("write");
    let mapped = map_exec(&path);
    for size in 0..(NOT_ELF_CAPACITY as u64 + 10) {
        let stamp = FileStamp {
            size,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        cache
            .not_elf
            .insert(ModuleKey::file(&mapped.mapping, stamp));
    }
    assert_eq!(cache.not_elf_len(), NOT_ELF_CAPACITY);
    assert!(cache.for_mapping(pid(), &mapped.mapping).is_none());
    assert_eq!(cache.not_elf_len(), NOT_ELF_CAPACITY);
}

/// A stripped Go fixture: its pclntab is read in place from the mapping, so truncating the
/// file under a live module makes those reads fault; they must see zeros, not end loupe.
#[test]
fn a_go_module_truncated_under_loupe_reads_zeros_and_is_named_by_offset() {
    let fixtures = std::env::var_os("LOUPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"));
    let go = fixtures.join("go1.24.11/symtest");
    assert!(
        go.is_file(),
        "{} is missing: run `cargo xtask fixtures`",
        go.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = copy_of(go.to_str().expect("utf-8 path"), dir.path(), "symtest");
    let mapped = map_exec(&path);
    let mut cache = ModuleCache::default();
    let module = cache
        .for_mapping(pid(), &mapped.mapping)
        .expect("an ELF file");
    let table = module.go.as_ref().expect("a Go table");
    // The last function: its pclntab entries are far from the start of the file.
    let pc = table.text_range().end - 1;
    let named = table.symbolize(pc).expect("named before truncation");
    assert!(!named.is_empty());

    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(4096))
        .expect("truncate");
    let answered = sigbus::answered();
    // Without the SIGBUS handler this ends the test process.
    assert_eq!(table.symbolize(pc), None, "zeros name nothing");
    assert!(
        sigbus::answered() > answered,
        "the read faulted and was answered"
    );
    assert!(module.is_damaged());
    let frames = Symbolizer::default().user(&module, &[pc]);
    assert_eq!(frames[0][0].function, format!("symtest+{pc:#x}"));
}

/// A process that exited before its mappings were opened (a compiler invocation lasting
/// milliseconds) still finds the modules other processes opened for the same files.
#[test]
fn a_process_gone_before_its_files_were_opened_finds_the_cached_module() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = copy_of(SYSTEM_ELF, dir.path(), "lib.so");
    let mapped = map_exec(&path);
    let mut cache = ModuleCache::default();
    let module = cache
        .for_mapping(pid(), &mapped.mapping)
        .expect("an ELF file");

    let mut child = std::process::Command::new(SYSTEM_ELF)
        .spawn()
        .expect("spawn");
    let gone = child.id();
    child.wait().expect("wait");
    assert!(!Path::new(&format!("/proc/{gone}")).exists());
    let found = cache
        .for_mapping(gone, &mapped.mapping)
        .expect("the cached module");
    assert!(Arc::ptr_eq(&found, &module));

    // Not once the cached module's file was rewritten: that inode now holds other bytes.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, std::fs::read(SYSTEM_ELF).expect("read")).expect("rewrite");
    assert!(cache.for_mapping(gone, &mapped.mapping).is_none());
}

#[inline(never)]
fn a_function_to_find() -> u64 {
    std::hint::black_box(42)
}

/// This test binary is linked by rust-lld, which maps its executable segment from a page
/// that starts inside the read-only segment before it: the base must come from the
/// executable segment, or every address is off by that page.
#[test]
fn addresses_in_an_lld_linked_binary_resolve_to_their_own_function() {
    let avma = a_function_to_find as *const () as u64;
    std::hint::black_box(a_function_to_find());
    let text = std::fs::read_to_string("/proc/self/maps").expect("read own maps");
    let mapping = maps::parse(&text)
        .into_iter()
        .find(|m| m.contains(avma))
        .expect("the function is mapped");
    let mut cache = ModuleCache::default();
    let module = cache
        .for_mapping(pid(), &mapping)
        .expect("this test binary");
    let svma = avma - module.base_avma(&mapping).expect("a base");

    // Ground truth: the ELF symbol table of the file itself.
    let bytes = std::fs::read("/proc/self/exe").expect("read own binary");
    let elf = object::File::parse(&*bytes).expect("parse own binary");
    let symbol = object::Object::symbols(&elf)
        .find(|s| {
            object::ObjectSymbol::address(s) <= svma
                && svma < object::ObjectSymbol::address(s) + object::ObjectSymbol::size(s)
        })
        .expect("a symbol covers the address");
    let name = object::ObjectSymbol::name(&symbol).expect("a name");
    assert!(
        name.contains("a_function_to_find"),
        "{svma:#x} is in {name}"
    );
    let frames = Symbolizer::default().user(&module, &[svma]);
    let outer = frames[0].last().expect("a frame");
    assert!(
        outer.function.ends_with("a_function_to_find"),
        "named {}",
        outer.function
    );
}
