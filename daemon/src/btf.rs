//! Where `task_struct` keeps the few fields loupe's probes read by address, on this kernel,
//! from its BTF (`/sys/kernel/btf/vmlinux`): the layout changes with kernel version and
//! configuration, so it is read, never assumed; aya's BTF parser does not expose member
//! lookups. The scheduling probes read a new task's pid and tgid; the CPU sampler reads
//! `mm` and `in_execve` to tell tasks without user memory (exit, execve).

use std::collections::HashMap;

/// Where the kernel's BTF is.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Offsets in `task_struct`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    /// Byte offset of `pid` (the thread id).
    pub pid: u32,
    /// Byte offset of `tgid`.
    pub tgid: u32,
    /// Byte offset of `mm` (NULL once a task is past `exit_mm`).
    pub mm: Option<u32>,
    /// Bit offset of the `in_execve` bitfield (kernels before 6.8 have it).
    pub in_execve_bit: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskLayoutError {
    #[error("cannot read {KERNEL_BTF}: {0}")]
    Read(String),
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct task_struct")]
    NoTaskStruct,
    #[error("kernel BTF: struct task_struct has no member `{0}`")]
    NoMember(&'static str),
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// The running kernel's layout.
pub fn kernel_task_layout() -> Result<TaskLayout, TaskLayoutError> {
    let bytes = std::fs::read(KERNEL_BTF).map_err(|e| TaskLayoutError::Read(e.to_string()))?;
    task_layout(&bytes)
}

/// Reads the layout from raw BTF (little- or big-endian as the header says).
pub fn task_layout(btf: &[u8]) -> Result<TaskLayout, TaskLayoutError> {
    let types = Types::parse(btf)?;
    let task = types
        .by_id
        .iter()
        .position(|t| {
            t.kind == KIND_STRUCT && t.vlen > 0 && types.name(t.name_off) == Some("task_struct")
        })
        .ok_or(TaskLayoutError::NoTaskStruct)?;
    let bits = |name: &str| types.member_bits(task, name, 0);
    let bytes = |name: &str| bits(name).filter(|b| b.is_multiple_of(8)).map(|b| b / 8);
    let required = |name: &'static str| bytes(name).ok_or(TaskLayoutError::NoMember(name));
    Ok(TaskLayout {
        pid: required("pid")?,
        tgid: required("tgid")?,
        mm: bytes("mm"),
        in_execve_bit: bits("in_execve"),
    })
}

struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// Offset of the kind-specific data that follows the 12-byte header.
    data: usize,
}

struct Types<'a> {
    bytes: &'a [u8],
    big_endian: bool,
    strings: &'a [u8],
    /// Index `i` is type id `i + 1`.
    by_id: Vec<Type>,
}

impl<'a> Types<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Types<'a>, TaskLayoutError> {
        let malformed = TaskLayoutError::Malformed;
        let magic = bytes.get(..2).ok_or(malformed("truncated header"))?;
        let big_endian = match [magic[0], magic[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            _ => return Err(malformed("bad magic")),
        };
        let mut types = Types {
            bytes,
            big_endian,
            strings: &[],
            by_id: Vec::new(),
        };
        let hdr_len = types.u32_at(4).ok_or(malformed("truncated header"))? as usize;
        let field = |i: usize| types.u32_at(8 + 4 * i).map(|v| v as usize);
        let (Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (field(0), field(1), field(2), field(3))
        else {
            return Err(malformed("truncated header"));
        };
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            Some(start..start.checked_add(len)?)
        };
        let type_range = section(type_off, type_len)
            .filter(|r| r.end <= bytes.len())
            .ok_or(malformed("type section out of bounds"))?;
        let str_range = section(str_off, str_len)
            .filter(|r| r.end <= bytes.len())
            .ok_or(malformed("string section out of bounds"))?;
        types.strings = &bytes[str_range];

        let mut at = type_range.start;
        while at < type_range.end {
            let (Some(name_off), Some(info)) = (types.u32_at(at), types.u32_at(at + 4)) else {
                return Err(malformed("truncated type"));
            };
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(malformed("unknown type kind")),
            };
            types.by_id.push(Type {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 != 0,
                data: at + 12,
            });
            at += 12 + extra;
        }
        if at != type_range.end {
            return Err(malformed("type section ends inside a type"));
        }
        Ok(types)
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn name(&self, off: u32) -> Option<&str> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Bit offset of member `name` of struct/union `index`, looking into anonymous struct
    /// and union members (randomized or grouped layouts put fields there).
    fn member_bits(&self, index: usize, name: &str, depth: u32) -> Option<u32> {
        let t = self.by_id.get(index)?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return None;
        }
        let mut anonymous = HashMap::new();
        for i in 0..t.vlen as usize {
            let m = t.data + 12 * i;
            let (name_off, type_id, offset) =
                (self.u32_at(m)?, self.u32_at(m + 4)?, self.u32_at(m + 8)?);
            // With the kind flag, the top 8 bits hold a bitfield's size.
            let bits = if t.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            };
            if name_off == 0 {
                anonymous.insert(type_id, bits);
            } else if self.name(name_off) == Some(name) {
                return Some(bits);
            }
        }
        anonymous.into_iter().find_map(|(type_id, bits)| {
            let inner = self.member_bits(type_id.checked_sub(1)? as usize, name, depth + 1)?;
            Some(bits + inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: `int`, and `struct task_struct { long state; int pid;
    /// union { int tgid; long other; }; long mm; int :3, in_execve:1; }` with tgid at 16
    /// through the anonymous union, and bitfields (the kind flag: sizes in the top 8 bits).
    fn sample_btf() -> Vec<u8> {
        let strings =
            b"\0int\0task_struct\0state\0pid\0tgid\0other\0long\0mm\0in_execve\0".to_vec();
        let off = |s: &str| {
            let needle = [s.as_bytes(), b"\0"].concat();
            strings
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap() as u32
        };
        let mut types: Vec<u32> = Vec::new();
        // [1] int: size 4, then its encoding word.
        types.extend([off("int"), KIND_INT << 24, 4, 32]);
        // [2] long.
        types.extend([off("long"), KIND_INT << 24, 8, 64]);
        // [3] the anonymous union.
        types.extend([0, KIND_UNION << 24 | 2, 8]);
        types.extend([off("tgid"), 1, 0, off("other"), 2, 0]);
        // [4] task_struct: state at 0, pid at 8 bytes, the union at 16 bytes, mm at 24,
        // in_execve one bit at bit 259.
        types.extend([off("task_struct"), 1 << 31 | KIND_STRUCT << 24 | 5, 40]);
        types.extend([off("state"), 2, 0, off("pid"), 1, 64, 0, 3, 128]);
        types.extend([off("mm"), 2, 192, off("in_execve"), 1, 1 << 24 | 259]);
        let type_bytes: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut btf = Vec::new();
        btf.extend(MAGIC.to_le_bytes());
        btf.extend([1, 0]);
        btf.extend(24u32.to_le_bytes());
        btf.extend(0u32.to_le_bytes());
        btf.extend((type_bytes.len() as u32).to_le_bytes());
        btf.extend((type_bytes.len() as u32).to_le_bytes());
        btf.extend((strings.len() as u32).to_le_bytes());
        btf.extend(type_bytes);
        btf.extend(strings);
        btf
    }

    #[test]
    fn finds_members_directly_and_inside_anonymous_unions() {
        assert_eq!(
            task_layout(&sample_btf()),
            Ok(TaskLayout {
                pid: 8,
                tgid: 16,
                mm: Some(24),
                in_execve_bit: Some(259)
            })
        );
    }

    #[test]
    fn refuses_malformed_or_foreign_btf() {
        let btf = sample_btf();
        assert!(matches!(
            task_layout(&btf[..30]),
            Err(TaskLayoutError::Malformed(_))
        ));
        let mut bad_magic = btf.clone();
        bad_magic[0] = 0;
        assert_eq!(
            task_layout(&bad_magic),
            Err(TaskLayoutError::Malformed("bad magic"))
        );
        // Rename the struct: no task_struct any more.
        let renamed: Vec<u8> = {
            let text = b"task_struct";
            let at = btf.windows(text.len()).position(|w| w == text).unwrap();
            let mut b = btf.clone();
            b[at] = b'x';
            b
        };
        assert_eq!(task_layout(&renamed), Err(TaskLayoutError::NoTaskStruct));
        assert_eq!(
            task_layout(&[]),
            Err(TaskLayoutError::Malformed("truncated header"))
        );
    }

    /// The running kernel's BTF (world-readable): pid and tgid are adjacent `pid_t`s in
    /// every kernel since 2.6, and every task has an `mm` pointer.
    #[test]
    fn reads_the_running_kernels_task_struct() {
        let layout = kernel_task_layout()
            .expect("kernel BTF (/sys/kernel/btf/vmlinux) is required by loupe's tests");
        assert_eq!(layout.tgid, layout.pid + 4, "{layout:?}");
        assert!(layout.pid > 0);
        // `mm` is a pointer: 8-byte aligned, and not the struct's first member (state is).
        let mm = layout.mm.expect("task_struct.mm");
        assert!(mm > 0 && mm.is_multiple_of(8), "{layout:?}");
    }
}
