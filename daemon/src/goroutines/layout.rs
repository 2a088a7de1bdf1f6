//! Where the fields of `runtime.g` are: from the binary's DWARF when it has some, else from
//! a per-release table that tests check against the DWARF of real binaries of every
//! installed release. A release without a checked table is refused, never guessed.

use super::dwarf::{Member, Structs};

/// Byte offsets (amd64) of the `runtime.g` fields the census reads, and of those the
/// goroutine-event probe reads to find a creation's parent goroutine (`g.m`, `m.curg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GLayout {
    /// `g.stack.lo` and `g.stack.hi`: the goroutine's stack bounds.
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// `g.sched.sp`, `g.sched.pc`: where a parked goroutine resumes.
    pub sched_sp: u64,
    pub sched_pc: u64,
    /// `g.syscallsp`, `g.syscallpc`: set while in a system call (then the unwind starts there).
    pub syscallsp: u64,
    pub syscallpc: u64,
    /// `g.atomicstatus` (uint32; `atomic.Uint32` from 1.20).
    pub atomicstatus: u64,
    /// `g.goid` (int64, uint64 from 1.20).
    pub goid: u64,
    /// `g.waitsince` (int64, nanotime()).
    pub waitsince: u64,
    /// `g.waitreason` (uint8).
    pub waitreason: u64,
    /// `g.gopc`: pc of the `go` statement that created the goroutine.
    pub gopc: u64,
    /// `g.startpc`: the goroutine function's entry.
    pub startpc: u64,
    /// `g.m` (*m): the thread running the goroutine.
    pub m: u64,
    /// `m.curg` (*g, in `runtime.m`, not in `g`): the goroutine the thread runs.
    pub m_curg: u64,
}

impl GLayout {
    /// Bytes of a g to read so that every field above is inside.
    pub fn span(&self) -> u64 {
        let ends = [
            self.stack_hi + 8,
            self.sched_sp + 8,
            self.sched_pc + 8,
            self.syscallsp + 8,
            self.syscallpc + 8,
            self.atomicstatus + 4,
            self.goid + 8,
            self.waitsince + 8,
            self.waitreason + 1,
            self.gopc + 8,
            self.startpc + 8,
            self.m + 8,
        ];
        ends.into_iter().max().unwrap_or(0)
    }
}

/// The struct types whose members [`from_dwarf`] needs.
pub const DWARF_STRUCTS: [&str; 4] = ["runtime.g", "runtime.gobuf", "runtime.stack", "runtime.m"];

/// The layout described by a binary's DWARF, or the name of the first field it lacks (or
/// whose size is not what the census reads).
pub fn from_dwarf(structs: &Structs) -> Result<GLayout, String> {
    let member = |strukt: &str, name: &str, size: Option<u64>| -> Result<u64, String> {
        let m: &Member = structs
            .get(strukt)
            .and_then(|s| s.get(name))
            .ok_or_else(|| format!("{strukt}.{name} is not in the DWARF"))?;
        if size.is_some() && m.size != size {
            return Err(format!(
                "{strukt}.{name} is {:?} bytes, expected {size:?}",
                m.size
            ));
        }
        Ok(m.offset)
    };
    let stack = member("runtime.g", "stack", Some(16))?;
    let sched = member("runtime.g", "sched", None)?;
    Ok(GLayout {
        stack_lo: stack + member("runtime.stack", "lo", Some(8))?,
        stack_hi: stack + member("runtime.stack", "hi", Some(8))?,
        sched_sp: sched + member("runtime.gobuf", "sp", Some(8))?,
        sched_pc: sched + member("runtime.gobuf", "pc", Some(8))?,
        syscallsp: member("runtime.g", "syscallsp", Some(8))?,
        syscallpc: member("runtime.g", "syscallpc", Some(8))?,
        atomicstatus: member("runtime.g", "atomicstatus", Some(4))?,
        goid: member("runtime.g", "goid", Some(8))?,
        waitsince: member("runtime.g", "waitsince", Some(8))?,
        waitreason: member("runtime.g", "waitreason", Some(1))?,
        gopc: member("runtime.g", "gopc", Some(8))?,
        startpc: member("runtime.g", "startpc", Some(8))?,
        m: member("runtime.g", "m", Some(8))?,
        m_curg: member("runtime.m", "curg", Some(8))?,
    })
}

/// Go 1.19 (DWARF of go1.19.8 binaries).
const GO19: GLayout = GLayout {
    stack_lo: 0,
    stack_hi: 8,
    sched_sp: 56,
    sched_pc: 64,
    syscallsp: 112,
    syscallpc: 120,
    atomicstatus: 144,
    goid: 152,
    waitsince: 168,
    waitreason: 176,
    gopc: 296,
    startpc: 312,
    m: 48,
    m_curg: 192,
};

/// Go 1.21 and 1.22: fields between waitreason and gopc were removed (go1.21.13, go1.22.10).
const GO21: GLayout = GLayout {
    gopc: 280,
    startpc: 296,
    ..GO19
};

/// Go 1.23 and 1.24: `g.syscallbp` added after syscallpc (go1.23.9, go1.24.11).
const GO23: GLayout = GLayout {
    atomicstatus: 152,
    goid: 160,
    waitsince: 176,
    waitreason: 184,
    gopc: 288,
    startpc: 304,
    ..GO19
};

/// Go 1.25: `gobuf.ret` removed, so everything after `sched` (in `g`, and after
/// `m.morebuf` in `m`) moved up 8 (go1.25.5).
const GO25: GLayout = GLayout {
    syscallsp: 104,
    syscallpc: 112,
    atomicstatus: 144,
    goid: 152,
    waitsince: 168,
    waitreason: 176,
    gopc: 280,
    startpc: 296,
    m_curg: 184,
    ..GO19
};

/// Go 1.26 and 1.27 (go1.26.6, go1.27.3).
const GO26: GLayout = GLayout {
    gopc: 288,
    startpc: 304,
    ..GO25
};

/// The layout of Go `1.<minor>` on amd64, if it was checked against that release's
/// DWARF. Go 1.20 was not (no 1.20 toolchain is installable here): it is refused.
pub fn for_minor(minor: u32) -> Option<GLayout> {
    match minor {
        19 => Some(GO19),
        21 | 22 => Some(GO21),
        23 | 24 => Some(GO23),
        25 => Some(GO25),
        26 | 27 => Some(GO26),
        _ => None,
    }
}

/// Byte offsets (amd64) of the `runtime.schedt` fields the scheduling latency reader uses
/// (see `sched_latency`): two to recognize the live `runtime.sched`, and the histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedLayout {
    /// `sched.goidgen` (uint64, `atomic.Uint64` from 1.20): goroutine ids handed out.
    pub goidgen: u64,
    /// `sched.maxmcount` (int32): the thread limit (10000 unless debug.SetMaxThreads).
    pub maxmcount: u64,
    /// `sched.timeToRun`: the runtime's `timeHistogram` of runnable-to-running latencies.
    pub time_to_run: u64,
}

/// The struct types whose members [`sched_from_dwarf`] needs.
pub const SCHED_DWARF_STRUCTS: [&str; 2] = ["runtime.schedt", "runtime.timeHistogram"];

/// The `runtime.schedt` offsets described by a binary's DWARF, after checking that its
/// `runtime.timeHistogram` is laid out as `histogram` says (counts, then underflow, then
/// overflow when the release has one); else the first disagreement.
pub fn sched_from_dwarf(
    structs: &Structs,
    histogram: &super::sched_latency::Scheme,
) -> Result<SchedLayout, String> {
    let member = |strukt: &str, name: &str| -> Result<Member, String> {
        structs
            .get(strukt)
            .and_then(|s| s.get(name))
            .copied()
            .ok_or_else(|| format!("{strukt}.{name} is not in the DWARF"))
    };
    let sized = |strukt: &str, name: &str, size: u64| -> Result<u64, String> {
        let m = member(strukt, name)?;
        if m.size != Some(size) {
            return Err(format!(
                "{strukt}.{name} is {:?} bytes, expected {size}",
                m.size
            ));
        }
        Ok(m.offset)
    };
    let h = "runtime.timeHistogram";
    let counts = sized(h, "counts", 8 * histogram.buckets() as u64)?;
    let underflow = sized(h, "underflow", 8)?;
    let overflow = member(h, "overflow").ok().map(|m| m.offset);
    let expected = (0, histogram.underflow_offset(), histogram.overflow_offset());
    if (counts, underflow, overflow) != expected {
        return Err(format!(
            "{h} has counts, underflow, overflow at {:?}, expected {expected:?}",
            (counts, underflow, overflow)
        ));
    }
    Ok(SchedLayout {
        goidgen: sized("runtime.schedt", "goidgen", 8)?,
        maxmcount: sized("runtime.schedt", "maxmcount", 4)?,
        time_to_run: sized("runtime.schedt", "timeToRun", histogram.size())?,
    })
}

/// Go 1.19 (go1.19.8).
const SCHED19: SchedLayout = SchedLayout {
    goidgen: 0,
    maxmcount: 56,
    time_to_run: 312,
};

/// Go 1.21, 1.23 and 1.24 (go1.21.13, go1.23.9, go1.24.11).
const SCHED21: SchedLayout = SchedLayout {
    time_to_run: 320,
    ..SCHED19
};

/// Go 1.25 (go1.25.5).
const SCHED25: SchedLayout = SchedLayout {
    goidgen: 0,
    maxmcount: 64,
    time_to_run: 344,
};

/// Go 1.26 and 1.27 (go1.26.6, go1.27.3).
const SCHED26: SchedLayout = SchedLayout {
    goidgen: 0,
    maxmcount: 80,
    time_to_run: 360,
};

/// The `runtime.schedt` offsets of Go `1.<minor>` on amd64, if they were checked against
/// that release's DWARF. Go 1.20 and 1.22 were not (no toolchain installed here): refused.
pub fn sched_for_minor(minor: u32) -> Option<SchedLayout> {
    match minor {
        19 => Some(SCHED19),
        21 | 23 | 24 => Some(SCHED21),
        25 => Some(SCHED25),
        26 | 27 => Some(SCHED26),
        _ => None,
    }
}
