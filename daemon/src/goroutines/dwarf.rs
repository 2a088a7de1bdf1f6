//! Struct member offsets from the DWARF a Go linker writes (unless `-ldflags=-w`).
//!
//! Go compresses its DWARF sections (`SHF_COMPRESSED`, zlib); they are inflated here with
//! flate2, which loupe already uses, rather than through `object`'s optional codecs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use object::{Object, ObjectSection};

/// One member of a struct: byte offset and the byte size of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: Option<u64>,
}

/// Members of the requested struct types, by struct name then member name.
pub type Structs = HashMap<String, HashMap<String, Member>>;

/// Largest DWARF section we inflate (the runtime's own DWARF is a few MiB at most).
const MAX_SECTION: u64 = 512 << 20;
const ELFCOMPRESS_ZLIB: u32 = 1;

/// The members of each struct in `wanted` found in `elf`'s DWARF. Ok(None) when the file
/// has no DWARF; Err for DWARF that is present but unreadable.
pub fn struct_members(elf: &object::File, wanted: &[&str]) -> Result<Option<Structs>, String> {
    if elf.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let load = |id: gimli::SectionId| -> Result<Cow<[u8]>, String> {
        match elf.section_by_name(id.name()) {
            Some(s) if s.kind() != object::SectionKind::UninitializedData => section_bytes(&s),
            _ => Ok(Cow::Borrowed(&[][..])),
        }
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let err = |e: gimli::Error| format!("DWARF: {e}");

    let mut found: Structs = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(err)? {
        let unit = dwarf.unit(header).map_err(err)?;
        let mut entries = unit.entries();
        // Depth-first walk; a struct's members are its direct children.
        let mut current: Option<(isize, String)> = None;
        while let Some(entry) = entries.next_dfs().map_err(err)? {
            let depth = entry.depth();
            if current.as_ref().is_some_and(|(d, _)| depth <= *d) {
                current = None;
            }
            match entry.tag() {
                gimli::DW_TAG_structure_type => {
                    let name = attr_string(&dwarf, &unit, entry, gimli::DW_AT_name);
                    current = name
                        .filter(|n| wanted.contains(&n.as_str()) && !found.contains_key(n))
                        .map(|n| (depth, n));
                    if let Some((_, n)) = &current {
                        found.insert(n.clone(), HashMap::new());
                    }
                }
                gimli::DW_TAG_member => {
                    let Some((d, strukt)) = &current else {
                        continue;
                    };
                    if depth != d + 1 {
                        continue;
                    }
                    let Some(name) = attr_string(&dwarf, &unit, entry, gimli::DW_AT_name) else {
                        continue;
                    };
                    let offset = entry
                        .attr_value(gimli::DW_AT_data_member_location)
                        .and_then(|v| v.udata_value());
                    let Some(offset) = offset else { continue };
                    let size = member_type_size(&dwarf, &unit, entry);
                    if let Some(m) = found.get_mut(strukt) {
                        m.insert(name, Member { offset, size });
                    }
                }
                _ => {}
            }
        }
        if wanted.iter().all(|w| found.contains_key(*w)) {
            break;
        }
    }
    Ok(Some(found))
}

type Slice<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

fn attr_string(
    dwarf: &gimli::Dwarf<Slice>,
    unit: &gimli::Unit<Slice>,
    entry: &gimli::DebuggingInformationEntry<Slice>,
    at: gimli::DwAt,
) -> Option<String> {
    let v = entry.attr_value(at)?;
    let s = dwarf.attr_string(unit, v).ok()?;
    Some(String::from_utf8_lossy(s.slice()).into_owned())
}

/// Byte size of a member's type, following typedefs (a pointer is the address size). Go's linker refers to types by
/// absolute `.debug_info` offset, often in another unit than the struct's.
fn member_type_size(
    dwarf: &gimli::Dwarf<Slice>,
    unit: &gimli::Unit<Slice>,
    member: &gimli::DebuggingInformationEntry<Slice>,
) -> Option<u64> {
    let mut target = member.attr_value(gimli::DW_AT_type)?;
    let mut owner: Option<gimli::Unit<Slice>> = None;
    for _ in 0..8 {
        let u = owner.as_ref().unwrap_or(unit);
        let (u, offset) = match target {
            gimli::AttributeValue::UnitRef(o) => (u, o),
            gimli::AttributeValue::DebugInfoRef(o) => {
                if let Some(local) = o.to_unit_offset(&u.header) {
                    (u, local)
                } else {
                    owner = Some(unit_containing(dwarf, o)?);
                    let u = owner.as_ref()?;
                    (u, o.to_unit_offset(&u.header)?)
                }
            }
            _ => return None,
        };
        let ty = u.entry(offset).ok()?;
        // Go writes no byte size on pointer types: their target's is not theirs.
        if ty.tag() == gimli::DW_TAG_pointer_type {
            return Some(u64::from(u.encoding().address_size));
        }
        if let Some(v) = ty.attr_value(gimli::DW_AT_byte_size) {
            return v.udata_value();
        }
        target = ty.attr_value(gimli::DW_AT_type)?;
    }
    None
}

fn unit_containing<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    offset: gimli::DebugInfoOffset,
) -> Option<gimli::Unit<Slice<'a>>> {
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        if offset.to_unit_offset(&header).is_some() {
            return dwarf.unit(header).ok();
        }
    }
    None
}

/// A section's bytes, inflated if the ELF says it is compressed.
fn section_bytes<'a>(s: &object::Section<'a, '_>) -> Result<Cow<'a, [u8]>, String> {
    let data = s
        .data()
        .map_err(|e| format!("{}: {e}", s.name().unwrap_or("?")))?;
    let object::SectionFlags::Elf { sh_flags } = s.flags() else {
        return Ok(Cow::Borrowed(data));
    };
    if sh_flags & u64::from(object::elf::SHF_COMPRESSED) == 0 {
        return Ok(Cow::Borrowed(data));
    }
    // Elf64_Chdr: ch_type u32, reserved u32, ch_size u64, ch_addralign u64.
    let name = s.name().unwrap_or("?").to_string();
    let header = data
        .get(..24)
        .ok_or_else(|| format!("{name}: truncated compression header"))?;
    let ch_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut size_bytes = [0u8; 8];
    size_bytes.copy_from_slice(&header[8..16]);
    let size = u64::from_le_bytes(size_bytes);
    if ch_type != ELFCOMPRESS_ZLIB {
        return Err(format!("{name}: compression type {ch_type} is not zlib"));
    }
    if size > MAX_SECTION {
        return Err(format!("{name}: {size} bytes uncompressed is implausible"));
    }
    let mut out = Vec::with_capacity(size as usize);
    flate2::read::ZlibDecoder::new(&data[24..])
        .take(size)
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    if out.len() as u64 != size {
        return Err(format!("{name}: inflated to {} of {size} bytes", out.len()));
    }
    Ok(Cow::Owned(out))
}
