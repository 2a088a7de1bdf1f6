//! Member offsets of kernel structs, read from the kernel's own type information
//! (`/sys/kernel/btf/vmlinux`), for the few fields a probe reads by address: layouts differ
//! between kernels and configurations, so offsets are never assumed.
//!
//! Only what finding a struct's members needs is parsed: the header, the string section, and
//! each type's length (to step to the next one).

use std::path::Path;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// The parsed type section: each type's start, by type id (id 0 is `void`).
pub struct KernelBtf {
    data: Vec<u8>,
    types: Vec<usize>,
    strings: std::ops::Range<usize>,
}

impl KernelBtf {
    pub fn load() -> Result<KernelBtf, BtfError> {
        let data =
            std::fs::read(Path::new(VMLINUX)).map_err(|e| BtfError::Read(VMLINUX.into(), e))?;
        KernelBtf::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<KernelBtf, BtfError> {
        let u16_at = |at: usize| {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr = |i: usize| read_u32(&data, 8 + 4 * i).ok_or(BtfError::Malformed("short header"));
        let (hdr_len, type_off, type_len, str_off, str_len) = (
            read_u32(&data, 4).ok_or(BtfError::Malformed("short header"))?,
            hdr(0)?,
            hdr(1)?,
            hdr(2)?,
            hdr(3)?,
        );
        let base = hdr_len as usize;
        let types_range = base + type_off as usize..base + type_off as usize + type_len as usize;
        let strings = base + str_off as usize..base + str_off as usize + str_len as usize;
        if types_range.end > data.len() || strings.end > data.len() {
            return Err(BtfError::Malformed("sections past the end"));
        }
        let mut types = vec![0];
        let mut at = types_range.start;
        while at < types_range.end {
            types.push(at);
            let info = read_u32(&data, at + 4).ok_or(BtfError::Malformed("truncated type"))?;
            at += 12 + extra_len(info).ok_or(BtfError::Malformed("unknown type kind"))?;
        }
        Ok(KernelBtf {
            data,
            types,
            strings,
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = self.strings.start + offset as usize;
        let rest = self.data.get(start..self.strings.end).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Bit offset of `member` in struct `name` (looking into anonymous structs and unions).
    pub fn member_bit_offset(&self, name: &str, member: &str) -> Result<Option<u32>, BtfError> {
        let id = (1..self.types.len())
            .find(|&id| {
                let at = self.types[id];
                let info = read_u32(&self.data, at + 4).unwrap_or(0);
                kind(info) == KIND_STRUCT
                    && self.name(read_u32(&self.data, at).unwrap_or(0)) == name.as_bytes()
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        Ok(self.find_member(id, member, 0))
    }

    fn find_member(&self, id: usize, member: &str, base_bits: u32) -> Option<u32> {
        let at = *self.types.get(id)?;
        let info = read_u32(&self.data, at + 4)?;
        if !matches!(kind(info), KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let bitfields = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let m = at + 12 + 12 * i;
            let (name_off, type_id, offset) = (
                read_u32(&self.data, m)?,
                read_u32(&self.data, m + 4)?,
                read_u32(&self.data, m + 8)?,
            );
            // With the kind flag, the top 8 bits hold a bitfield's size.
            let bits = base_bits
                + if bitfields {
                    offset & 0xff_ffff
                } else {
                    offset
                };
            let name = self.name(name_off);
            if name == member.as_bytes() {
                return Some(bits);
            }
            if name.is_empty() {
                if let Some(found) = self.find_member(self.resolve(type_id)?, member, bits) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<usize> {
        for _ in 0..16 {
            let at = *self.types.get(id as usize)?;
            let info = read_u32(&self.data, at + 4)?;
            match kind(info) {
                // typedef, volatile, const, restrict, type tag
                8..=11 | 18 => id = read_u32(&self.data, at + 8)?,
                _ => return Some(id as usize),
            }
        }
        None
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn kind(info: u32) -> u32 {
    (info >> 24) & 0x1f
}

/// Bytes that follow a type's 12-byte common part, by kind.
fn extra_len(info: u32) -> Option<usize> {
    let vlen = (info & 0xffff) as usize;
    Some(match kind(info) {
        1 => 4,                    // int
        2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, qualifiers, func, float, type tag
        3 => 12,                   // array
        4 | 5 => 12 * vlen,        // struct, union
        6 => 8 * vlen,             // enum
        13 => 8 * vlen,            // func proto
        14 => 4,                   // var
        15 => 12 * vlen,           // datasec
        17 => 4,                   // decl tag
        19 => 12 * vlen,           // enum64
        _ => return None,
    })
}

/// Where the CPU sampler finds a task's `mm` and `in_execve` (see `CpuConfig`).
pub struct TaskOffsets {
    pub mm_bytes: Option<u32>,
    pub in_execve_bit: Option<u32>,
}

impl TaskOffsets {
    pub fn from_kernel() -> Result<TaskOffsets, BtfError> {
        let btf = KernelBtf::load()?;
        let mm_bits = btf.member_bit_offset("task_struct", "mm")?;
        Ok(TaskOffsets {
            mm_bytes: mm_bits.filter(|b| b.is_multiple_of(8)).map(|b| b / 8),
            in_execve_bit: btf.member_bit_offset("task_struct", "in_execve")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_struct_members_in_the_running_kernel() {
        let btf = KernelBtf::load().expect("kernel BTF (CONFIG_DEBUG_INFO_BTF)");
        // `pid` and `tgid` are adjacent ints: the parser sees real layout, not guesses.
        let pid = btf
            .member_bit_offset("task_struct", "pid")
            .unwrap()
            .expect("pid");
        let tgid = btf
            .member_bit_offset("task_struct", "tgid")
            .unwrap()
            .expect("tgid");
        assert_eq!(tgid, pid + 32);
        let offsets = TaskOffsets::from_kernel().unwrap();
        let mm = offsets.mm_bytes.expect("task_struct.mm");
        assert!(mm > 0 && mm.is_multiple_of(8), "mm at {mm}");
        assert_eq!(
            btf.member_bit_offset("task_struct", "no_such_member")
                .unwrap(),
            None
        );
        assert!(btf.member_bit_offset("no_such_struct_here", "mm").is_err());
    }
}
