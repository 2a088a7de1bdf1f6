//! Just enough x86-64 decoding to find which global variables a function's code reads and
//! writes: the RIP-relative memory operands (`mov rax, [rip+disp32]` and kin) through
//! which Go's compiler addresses every global on amd64.
//!
//! Why not a full disassembler (iced-x86): this needs a handful of instruction forms, and
//! its answer is never trusted alone: every candidate address is then checked against
//! the live process (see `locate`). So instead of decoding instruction boundaries we try
//! every byte offset for those forms. A match that starts mid-instruction yields a random
//! target, which the data-section filter and the memory validation throw away; a missed
//! form only costs a candidate that the other references to the same variable supply.

/// One RIP-relative operand: the address of the instruction's end and the address it
/// refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RipRef {
    pub next_ip: u64,
    pub target: u64,
}

/// Size of the immediate after the ModRM+disp32 for the one-byte opcodes we recognize,
/// which all take a ModRM operand: ALU r/m,r and r,r/m (add, or, and, sub, xor, cmp),
/// test, xchg, mov r/m,r and r,r/m, lea (no immediate); group-1 ALU with imm8 (0x83) or
/// imm32 (0x81); mov r/m,imm8 (0xc6) and imm32 (0xc7).
fn one_byte_imm(op: u8) -> Option<u64> {
    match op {
        0x01 | 0x03 | 0x09 | 0x0b | 0x21 | 0x23 | 0x29 | 0x2b | 0x31 | 0x33 | 0x39 | 0x3b
        | 0x85 | 0x87 | 0x88 | 0x89 | 0x8a | 0x8b | 0x8d => Some(0),
        0x80 | 0x83 | 0xc6 => Some(1),
        0x81 | 0xc7 => Some(4),
        _ => None,
    }
}

/// Two-byte (0x0f-prefixed) opcodes with a ModRM operand and no immediate: movups/movsd
/// loads and stores (Go zeroes and copies pairs of words with them), movzx.
fn two_byte(op: u8) -> bool {
    matches!(op, 0x10 | 0x11 | 0x6f | 0x7f | 0xb6 | 0xb7 | 0xd6)
}

/// Every RIP-relative operand found in `code`, which starts at address `base`.
pub fn rip_refs(code: &[u8], base: u64) -> Vec<RipRef> {
    let mut out = Vec::new();
    for start in 0..code.len() {
        let mut i = start;
        // An optional operand-size or SSE prefix, then an optional REX prefix.
        if matches!(code[i], 0x66 | 0xf2 | 0xf3) {
            i += 1;
        }
        if code.get(i).is_some_and(|b| (0x40..=0x4f).contains(b)) {
            i += 1;
        }
        let Some(&op) = code.get(i) else { continue };
        let (modrm_at, imm) = if op == 0x0f {
            match code.get(i + 1) {
                Some(&op2) if two_byte(op2) => (i + 2, 0),
                _ => continue,
            }
        } else {
            match one_byte_imm(op) {
                Some(imm) => (i + 1, imm),
                None => continue,
            }
        };
        // mod = 00, r/m = 101: [rip + disp32].
        if code.get(modrm_at).is_none_or(|m| m & 0xc7 != 0x05) {
            continue;
        }
        let Some(d) = code.get(modrm_at + 1..modrm_at + 5) else {
            continue;
        };
        let disp = i32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let next_ip = base + (modrm_at + 5) as u64 + imm;
        out.push(RipRef {
            next_ip,
            target: next_ip.wrapping_add_signed(i64::from(disp)),
        });
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_forms_go_uses_for_globals() {
        // mov rcx, [rip+0x10]; lea rax, [rip-0x20]; cmp dword [rip+0x8], 0;
        // movups [rip+0x4], xmm15; mov qword [rip+0], 1
        let code = [
            0x48, 0x8b, 0x0d, 0x10, 0, 0, 0, // 0..7
            0x48, 0x8d, 0x05, 0xe0, 0xff, 0xff, 0xff, // 7..14
            0x83, 0x3d, 0x08, 0, 0, 0, 0x00, // 14..21
            0x44, 0x0f, 0x11, 0x3d, 0x04, 0, 0, 0, // 21..29
            0x48, 0xc7, 0x05, 0, 0, 0, 0, 1, 0, 0, 0, // 29..40
        ];
        let targets: Vec<u64> = rip_refs(&code, 0x1000)
            .into_iter()
            .map(|r| r.target)
            .collect();
        for want in [
            0x1000 + 7 + 0x10,
            0x1000 + 14 - 0x20,
            0x1000 + 21 + 8,
            0x1000 + 29 + 4,
            0x1000 + 40,
        ] {
            assert!(targets.contains(&want), "{want:#x} not in {targets:x?}");
        }
    }

    #[test]
    fn never_reads_past_the_code() {
        assert!(rip_refs(&[0x48, 0x8b, 0x05, 0x01], 0).is_empty());
        assert!(rip_refs(&[], 0).is_empty());
    }
}
