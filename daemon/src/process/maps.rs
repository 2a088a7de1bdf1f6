//! `/proc/PID/maps` parsing.

use std::path::PathBuf;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub executable: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device (major, minor) and inode of the backing file; inode 0 for anonymous memory.
    pub dev: (u32, u32),
    pub inode: u64,
    /// Path as the process sees it (`[vdso]`, `[stack]`, or a file, possibly `... (deleted)`).
    pub path: Option<PathBuf>,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }

    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_ref().is_some_and(|p| p.is_absolute())
    }

    pub fn is_vdso(&self) -> bool {
        self.path.as_deref() == Some(std::path::Path::new("[vdso]"))
    }
}

/// Parses the text of a maps file; malformed lines are skipped (the kernel writes this file,
/// but a line can still be cut when a process changes its mappings while we read).
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode = fields.next()?;
    let path = fields.next().map(str::trim_start).filter(|p| !p.is_empty());
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: path.map(PathBuf::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anon_and_special_lines() {
        let text = "\
55d0c6a00000-55d0c6a02000 r--p 00000000 fd:01 1835023                    /usr/bin/cat
55d0c6a02000-55d0c6a07000 r-xp 00002000 fd:01 1835023                    /usr/bin/cat
7ffd1d5e2000-7ffd1d603000 rw-p 00000000 00:00 0                          [stack]
7ffd1d7c5000-7ffd1d7c7000 r-xp 00000000 00:00 0                          [vdso]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
7f1000000000-7f1000001000 r-xp 00001000 fd:01 42                         /tmp/my lib.so (deleted)
garbage line
";
        let maps = parse(text);
        assert_eq!(maps.len(), 6);
        assert!(maps[1].executable && maps[1].is_file());
        assert_eq!(maps[1].offset, 0x2000);
        assert_eq!(maps[1].dev, (0xfd, 1));
        assert!(maps[3].is_vdso() && !maps[3].is_file());
        assert_eq!(maps[4].path, None);
        assert_eq!(
            maps[5].path.as_deref(),
            Some(std::path::Path::new("/tmp/my lib.so (deleted)"))
        );
    }
}
