//! Loading loupe's kernel programs, and the kernel facilities they need (tracefs).

use std::path::{Path, PathBuf};

use aya::{Ebpf, EbpfLoader};

/// The eBPF object built by `cargo xtask build`, embedded in the binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("LOUPE_BPF_OBJECT"));

pub const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loupe needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN): run it with sudo")]
    NotPrivileged,
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

/// Whether this process has what loading BPF programs needs.
pub fn is_privileged() -> bool {
    // Effective uid 0 carries every capability loupe uses; non-root capability sets are
    // checked by the kernel itself, with an error we translate in `load`.
    unsafe { libc::geteuid() == 0 }
}

/// Loads every program and map of the object (programs still need `load` + `attach`).
pub fn load() -> Result<Ebpf, BpfError> {
    if !is_privileged() {
        return Err(BpfError::NotPrivileged);
    }
    ensure_tracefs()?;
    // One stack-copy slot per CPU the kernel may ever run the sampler on.
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| BpfError::Program {
        what: format!("counting possible CPUs ({what})"),
        source: aya::programs::ProgramError::IOError(e),
    })?;
    EbpfLoader::new()
        .map_max_entries("STACK_SCRATCH", cpus as u32)
        .load(OBJECT)
        .map_err(|e| match &e {
            aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EPERM) =>
            {
                BpfError::NotPrivileged
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
