//! Loading loupe's kernel programs, and the kernel facilities they need (tracefs).

use std::path::{Path, PathBuf};

use aya::{Ebpf, EbpfLoader};

/// The eBPF object built by `cargo xtask build`, embedded in the binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("LOUPE_BPF_OBJECT"));

pub const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loupe needs root, or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN (+ CAP_DAC_READ_SEARCH while tracefs is root-only) ({}): run it with sudo", describe_missing(.0))]
    NotPrivileged(Vec<&'static str>),
    #[error("loading loupe's eBPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed ({0}); mount it with `mount -t tracefs tracefs {TRACEFS}`")]
    Tracefs(std::io::Error),
    #[error("cannot read the format of tracepoint {0}: {1}")]
    TracepointFormat(String, String),
    #[error("{what}: {source}")]
    Program {
        what: String,
        source: aya::programs::ProgramError,
    },
    #[error("map {name} is missing or of the wrong type: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// Linux capability numbers loupe uses (`linux/capability.h`).
pub mod caps {
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYSLOG: u32 = 34;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
}

/// What loading and attaching loupe's programs needs, by name: `CAP_BPF` (programs and
/// maps), `CAP_PERFMON` (perf events, tracing programs, reading kernel memory) and
/// `CAP_SYS_ADMIN` (mounting tracefs; `/proc/PID/map_files` to open binaries in other
/// mount namespaces).
pub const REQUIRED_CAPS: [(u32, &str); 3] = [
    (caps::BPF, "CAP_BPF"),
    (caps::PERFMON, "CAP_PERFMON"),
    (caps::SYS_ADMIN, "CAP_SYS_ADMIN"),
];

/// Needed, without root, to read tracefs (tracepoint ids and formats) where only root may
/// (the kernel's default mode is 0700).
pub const TRACEFS_CAP: (u32, &str) = (caps::DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH");

/// Capabilities that name frames rather than let loupe run, with what is lost without them.
pub const NAMING_CAPS: [(u32, &str, &str); 2] = [
    (
        caps::SYS_PTRACE,
        "CAP_SYS_PTRACE",
        "the processes of other users cannot be unwound or named (their /proc/PID/maps is closed)",
    ),
    (
        caps::SYSLOG,
        "CAP_SYSLOG",
        "kernel frames are not named (/proc/kallsyms shows zero addresses)",
    ),
];

fn describe_missing(missing: &[&str]) -> String {
    if missing.is_empty() {
        "the kernel refused them".into()
    } else {
        format!("missing: {}", missing.join(", "))
    }
}

/// This process's effective capability set, as a bit mask.
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The required capabilities this process lacks, by name (root has them all).
pub fn missing_capabilities() -> Vec<&'static str> {
    let effective = effective_capabilities().unwrap_or(0);
    let has = |bit: u32| effective & (1u64 << bit) != 0;
    let mut missing: Vec<&str> = REQUIRED_CAPS
        .iter()
        .filter(|(bit, _)| !has(*bit))
        .map(|&(_, name)| name)
        .collect();
    let tracefs_readable = std::fs::read_dir(Path::new(TRACEFS).join("events")).is_ok();
    if !tracefs_readable && !has(TRACEFS_CAP.0) && unsafe { libc::geteuid() } != 0 {
        missing.push(TRACEFS_CAP.1);
    }
    missing
}

/// The naming capabilities this process lacks, each with what is lost without it.
pub fn missing_naming_capabilities() -> Vec<(&'static str, &'static str)> {
    let effective = effective_capabilities().unwrap_or(0);
    NAMING_CAPS
        .iter()
        .filter(|(bit, _, _)| effective & (1u64 << bit) == 0)
        .filter(|(bit, _, _)| *bit != caps::SYSLOG || !kallsyms_shows_addresses())
        .map(|&(_, name, lost)| (name, lost))
        .collect()
}

/// Whether `/proc/kallsyms` shows this process real addresses (kernel.kptr_restrict and
/// perf_event_paranoid may allow it without CAP_SYSLOG).
fn kallsyms_shows_addresses() -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open("/proc/kallsyms") else {
        return false;
    };
    let mut first = String::new();
    let _ = std::io::BufReader::new(file).read_line(&mut first);
    first
        .split_whitespace()
        .next()
        .and_then(|a| u64::from_str_radix(a, 16).ok())
        .is_some_and(|a| a != 0)
}

/// Whether this process has what loading BPF programs needs.
pub fn is_privileged() -> bool {
    missing_capabilities().is_empty()
}

/// Loads every program and map of the object (programs still need `load` + `attach`), at
/// the object's own map sizes.
pub fn load() -> Result<Ebpf, BpfError> {
    load_sized(&[])
}

/// CPUs the kernel may ever run the probes on (per-CPU maps and scratch slots).
pub fn possible_cpus() -> Result<u32, BpfError> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| BpfError::Program {
        what: format!("counting possible CPUs ({what})"),
        source: aya::programs::ProgramError::IOError(e),
    })?;
    Ok(cpus as u32)
}

/// [`load`], with the maps named in `sizes` created with those entries (ring buffers: bytes).
pub fn load_sized(sizes: &[(&str, u32)]) -> Result<Ebpf, BpfError> {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(BpfError::NotPrivileged(missing));
    }
    for (name, lost) in missing_naming_capabilities() {
        eprintln!("loupe: warning: without {name}, {lost}");
    }
    ensure_tracefs()?;
    // One stack-copy slot per CPU the kernel may ever run the probes on.
    let cpus = possible_cpus()?;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries("STACK_SCRATCH", cpus)
        .map_max_entries("OFFCPU_SCRATCH", cpus);
    for (name, entries) in sizes {
        loader.map_max_entries(name, *entries);
    }
    loader.load(OBJECT).map_err(|e| match &e {
        aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            BpfError::NotPrivileged(missing_capabilities())
        }
        _ => BpfError::Load(e),
    })
}

/// Mounts tracefs when it is not mounted (fresh machines), saying so on stderr.
pub fn ensure_tracefs() -> Result<PathBuf, BpfError> {
    let root = Path::new(TRACEFS);
    if root.join("events").is_dir() {
        return Ok(root.to_path_buf());
    }
    let (source, target, fstype) = (c"tracefs", c"/sys/kernel/tracing", c"tracefs");
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(BpfError::Tracefs(std::io::Error::last_os_error()));
    }
    eprintln!("loupe: mounted tracefs at {TRACEFS}");
    Ok(root.to_path_buf())
}

/// Byte offset of `field` in the records of tracepoint `category:name`, read from tracefs
/// (layouts change between kernels; never assume one).
pub fn tracepoint_field_offset(category: &str, name: &str, field: &str) -> Result<u32, BpfError> {
    let what = format!("{category}:{name}");
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BpfError::TracepointFormat(what.clone(), e.to_string()))?;
    parse_field_offset(&text, field)
        .ok_or_else(|| BpfError::TracepointFormat(what, format!("no field `{field}`")))
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_field_offsets_in_a_tracepoint_format() {
        let format = "name: sched_process_fork\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
            \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(super::parse_field_offset(format, "child_pid"), Some(20));
        assert_eq!(super::parse_field_offset(format, "parent_comm"), Some(8));
        assert_eq!(super::parse_field_offset(format, "missing"), None);
    }
}
