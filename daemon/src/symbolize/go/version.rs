//! Which Go release wrote a binary, and what that means for the layouts we read.
//!
//! The `.gopclntab` magic only changes when the table format changes, but the structures we
//! also need (`runtime.moduledata`, where `gofunc` and `text` live) changed in 1.20, 1.26 and
//! 1.27 without a new magic. So the exact release comes from `.go.buildinfo`, which every Go
//! executable carries even when stripped, and each supported release range has an explicit
//! [`Layout`], checked against the Go sources of that release. Anything else is refused.

use super::reader;
use super::GoError;

/// `.go.buildinfo` starts with this magic (`debug/buildinfo`).
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// Size of the build info header; since Go 1.18 the version string follows it inline.
const BUILDINFO_HEADER: usize = 32;
/// `flags & 2`: strings are inline varint-prefixed (Go 1.18+), not pointers.
const FLAGS_VERSION_INLINE: u8 = 0x2;

/// pcHeader magic of Go 1.18 and 1.19 (`internal/abi.Go118PCLnTabMagic`).
pub(super) const MAGIC_GO118: u32 = 0xffff_fff0;
/// pcHeader magic of Go 1.20 and later (`internal/abi.Go120PCLnTabMagic`), unchanged by 1.26
/// even though 1.26 stopped filling `pcHeader.textStart`.
pub(super) const MAGIC_GO120: u32 = 0xffff_fff1;

/// Oldest and newest minor release whose layouts were checked (`go1.19` .. `go1.27`).
const MIN_MINOR: u32 = 19;
const MAX_MINOR: u32 = 27;

/// Everything that differs between the supported Go releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    /// For messages: the release range sharing this layout.
    pub name: &'static str,
    /// Expected pcHeader magic.
    pub magic: u32,
    /// Size of `runtime._func` before its pcdata/funcdata arrays: nine 32-bit fields
    /// (entryOff .. cuOffset), 1.20's `startLine`, then funcID, flag, a pad byte, nfuncdata.
    pub func_header: usize,
    /// Offset inside `_func` of its flag byte (moved when `startLine` was added).
    pub func_flag_off: usize,
    /// Size of one `runtime.inlinedCall` and the offsets of its nameOff and parentPc.
    pub inl_size: usize,
    pub inl_name_off: usize,
    pub inl_parent_pc_off: usize,
    /// Word index in `runtime.moduledata` of `gofunc` (1.20 inserted covctrs/ecovctrs,
    /// 1.27 inserted typedesclen, itaboffset and itabsize before it).
    pub md_gofunc: usize,
    /// Word index of `epclntab` (added in 1.26), if any.
    pub md_epclntab: Option<usize>,
    /// Word index of the `textsectmap` slice.
    pub md_textsectmap: usize,
    /// Whether `pcHeader.textStart` is still written (no longer from 1.26 on).
    pub header_has_text_start: bool,
}

/// Go 1.19: `inlinedCall{parent int16; funcID; _; file, line, func_, parentPc int32}`.
const GO119: Layout = Layout {
    name: "1.19",
    magic: MAGIC_GO118,
    func_header: 40,
    func_flag_off: 37,
    inl_size: 20,
    inl_name_off: 12,
    inl_parent_pc_off: 16,
    md_gofunc: 38,
    md_epclntab: None,
    md_textsectmap: 39,
    header_has_text_start: true,
};

/// Go 1.20-1.25: `_func.startLine`, `inlinedCall{funcID; _ [3]; nameOff, parentPc, startLine}`.
const GO120: Layout = Layout {
    name: "1.20-1.25",
    magic: MAGIC_GO120,
    func_header: 44,
    func_flag_off: 41,
    inl_size: 16,
    inl_name_off: 4,
    inl_parent_pc_off: 8,
    md_gofunc: 40,
    md_epclntab: None,
    md_textsectmap: 41,
    header_has_text_start: true,
};

/// Go 1.26: pcHeader.textStart is written as 0; moduledata gains `epclntab`.
const GO126: Layout = Layout {
    name: "1.26",
    md_epclntab: Some(41),
    md_textsectmap: 42,
    header_has_text_start: false,
    ..GO120
};

/// Go 1.27: moduledata gains typedesclen, itaboffset and itabsize before `gofunc`.
const GO127: Layout = Layout {
    name: "1.27",
    md_gofunc: 43,
    md_epclntab: Some(44),
    md_textsectmap: 45,
    ..GO126
};

/// The layout for Go `1.<minor>`, if it is one we checked.
pub(super) fn layout_for(minor: u32) -> Option<Layout> {
    match minor {
        MIN_MINOR => Some(GO119),
        20..=25 => Some(GO120),
        26 => Some(GO126),
        MAX_MINOR => Some(GO127),
        _ => None,
    }
}

/// The Go version string from `.go.buildinfo` (e.g. `go1.24.11`), or why it is unreadable.
pub(super) fn buildinfo_version(section: &[u8]) -> Result<String, GoError> {
    let bad = |what| GoError::BadBuildInfo { what };
    if !section.starts_with(BUILDINFO_MAGIC) {
        return Err(bad("missing magic in .go.buildinfo"));
    }
    let flags = reader::u8_at(section, 15).ok_or(bad("short .go.buildinfo header"))?;
    if flags & FLAGS_VERSION_INLINE == 0 {
        // Pointer-style build info: written only by Go before 1.18.
        return Err(GoError::UnsupportedVersion {
            version: "older than go1.18".into(),
        });
    }
    let (len, n) = reader::uvarint64(section, BUILDINFO_HEADER)
        .ok_or(bad("version length in .go.buildinfo"))?;
    let len = usize::try_from(len).map_err(|_| bad("version length in .go.buildinfo"))?;
    let s = reader::bytes(section, BUILDINFO_HEADER + n, len)
        .ok_or(bad("version string runs past .go.buildinfo"))?;
    Ok(String::from_utf8_lossy(s).into_owned())
}

/// The minor release number of a Go 1.x version string: `go1.24.11` -> 24. Also accepts
/// `go1.26rc1`, `devel go1.27-abcdef ...` and trailing experiment tags.
pub(super) fn minor_of(version: &str) -> Option<u32> {
    let rest = &version[version.find("go1.")? + 4..];
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    digits.parse().ok()
}

/// Version and layout of a binary, refusing anything we have not checked.
pub(super) fn select(version: &str, magic: u32) -> Result<Layout, GoError> {
    let layout =
        minor_of(version)
            .and_then(layout_for)
            .ok_or_else(|| GoError::UnsupportedVersion {
                version: version.to_string(),
            })?;
    if layout.magic != magic {
        return Err(GoError::VersionMismatch {
            version: version.to_string(),
            magic,
        });
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions() {
        assert_eq!(minor_of("go1.19.8"), Some(19));
        assert_eq!(minor_of("go1.24.11"), Some(24));
        assert_eq!(minor_of("go1.26rc1"), Some(26));
        assert_eq!(minor_of("devel go1.27-abc123 Tue"), Some(27));
        assert_eq!(minor_of("go2"), None);
        assert_eq!(minor_of(""), None);
    }

    #[test]
    fn refuses_unchecked_releases() {
        assert!(select("go1.18.10", MAGIC_GO118).is_err());
        assert!(select("go1.28.0", MAGIC_GO120).is_err());
        assert!(select("go1.21.13", MAGIC_GO118).is_err()); // magic contradicts version
        assert_eq!(
            select("go1.19.8", MAGIC_GO118).map(|l| l.name).ok(),
            Some("1.19")
        );
        assert_eq!(
            select("go1.26.6", MAGIC_GO120).map(|l| l.name).ok(),
            Some("1.26")
        );
    }

    #[test]
    fn buildinfo_parsing() {
        let mut b = BUILDINFO_MAGIC.to_vec();
        b.resize(BUILDINFO_HEADER, 0);
        b[14] = 8;
        b[15] = FLAGS_VERSION_INLINE;
        b.push(9);
        b.extend_from_slice(b"go1.24.11");
        assert_eq!(buildinfo_version(&b).ok().as_deref(), Some("go1.24.11"));
        assert!(buildinfo_version(&b[..b.len() - 1]).is_err());
        assert!(buildinfo_version(b"garbage").is_err());
    }
}
