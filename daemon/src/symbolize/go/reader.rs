//! Bounds-checked little-endian reads over untrusted bytes.
//!
//! Everything in a `.gopclntab` is an offset someone else wrote; every read here returns
//! `None` instead of panicking when it points outside the data.

/// `len` bytes at `off`, if all of them are inside `data`.
pub(super) fn bytes(data: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    data.get(off..off.checked_add(len)?)
}

pub(super) fn u8_at(data: &[u8], off: usize) -> Option<u8> {
    data.get(off).copied()
}

pub(super) fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    let b = bytes(data, off, 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(super) fn i32_at(data: &[u8], off: usize) -> Option<i32> {
    u32_at(data, off).map(|v| v as i32)
}

/// A target-sized word (`uintptr`): 4 or 8 bytes.
pub(super) fn word_at(data: &[u8], off: usize, ptr_size: u8) -> Option<u64> {
    match ptr_size {
        4 => u32_at(data, off).map(u64::from),
        8 => {
            let b = bytes(data, off, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some(u64::from_le_bytes(a))
        }
        _ => None,
    }
}

/// The NUL-terminated string at `off` (Go's funcnametab and filetab entries).
pub(super) fn cstr_at(data: &[u8], off: usize) -> Option<String> {
    let rest = data.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// An unsigned LEB128 varint as Go's runtime reads it (`readvarint`): at most 32 bits.
/// Returns the value and the number of bytes it took.
pub(super) fn uvarint32(data: &[u8], off: usize) -> Option<(u32, usize)> {
    // Bits past 32 are dropped, as the runtime's uint32 accumulator drops them.
    uvarint(data, off, 5).map(|(v, n)| (v as u32, n))
}

/// An unsigned varint of any width up to 64 bits (build info string lengths).
pub(super) fn uvarint64(data: &[u8], off: usize) -> Option<(u64, usize)> {
    uvarint(data, off, 10)
}

/// A varint of at most `max_bytes` bytes; longer is malformed.
fn uvarint(data: &[u8], off: usize, max_bytes: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    for n in 0..max_bytes {
        let b = u8_at(data, off.checked_add(n)?)?;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some((v, n + 1));
        }
        shift += 7;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stay_in_bounds() {
        let d = [1u8, 0, 0, 0, 0xff];
        assert_eq!(u32_at(&d, 0), Some(1));
        assert_eq!(u32_at(&d, 2), None);
        assert_eq!(u32_at(&d, usize::MAX), None);
        assert_eq!(word_at(&d, 0, 8), None);
        assert_eq!(word_at(&d, 0, 3), None);
        assert_eq!(cstr_at(b"ab\0c", 0).as_deref(), Some("ab"));
        assert_eq!(cstr_at(b"abc", 0), None);
    }

    #[test]
    fn varints() {
        assert_eq!(uvarint32(&[0x05], 0), Some((5, 1)));
        assert_eq!(uvarint32(&[0x80, 0x01], 0), Some((128, 2)));
        assert_eq!(uvarint32(&[0x80, 0x80], 0), None);
        assert_eq!(uvarint32(&[0xff; 6], 0), None);
        assert_eq!(uvarint64(&[0xac, 0x02], 0), Some((300, 2)));
    }
}
