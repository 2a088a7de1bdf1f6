//! Goroutine scheduling latency (runnable to running) from the Go runtime's own histogram,
//! always on: no probe, two reads of the process's memory bracketing a window.
//!
//! The runtime keeps `runtime.sched.timeToRun`, a `timeHistogram` of how long goroutines
//! waited runnable before running: what `runtime/metrics` reports as
//! `/sched/latencies:seconds`. It times one goroutine state change in eight
//! (`gTrackingPeriod`), so its count is a sample, not every wait. It has counts per bucket but
//! no sum: [`RuntimeHistogram::mean_ns`] takes each wait at its bucket's middle (see there
//! for the error bound).
//!
//! ```ignore
//! let reader = sched_latency::Reader::attach(pid)?;
//! let before = reader.read()?;
//! std::thread::sleep(window);
//! let window = reader.read()?.since(&before)?;
//! println!("{} waits, p99 {} ns", window.count(), window.quantile(0.99));
//! ```
//!
//! `runtime.sched` is found like `runtime.allgs` (see `locate`): by its ELF symbol, else in
//! a stripped binary from the code of `runtime.casgstatus` (which records into `timeToRun`)
//! and `runtime.checkmcount` (which reads `maxmcount`), then checked in live memory.
//! `runtime.schedt`'s offsets come from DWARF or a per-release table (`layout`).

use super::binary::{Binary, Source, SYM_SCHED};
use super::layout::{self, SchedLayout};
use super::locate::{self, Found, Invalid};
use super::memory::Memory;
use super::{dwarf, GoroutineError, MAX_GOID};
use crate::histogram::{bucket_lower_bound, latency_bucket, LatencyHistogram, HIST_BUCKETS};

/// How the runtime buckets `timeToRun` (`runtime/histogram.go`), which changed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Go 1.19: 45 "super-buckets" of 16 linear sub-buckets; values under 16 ns get one
    /// bucket each, then super-bucket s >= 1 covers [2^(s+3), 2^(s+4)) ns. The last
    /// sub-bucket also takes everything above (no overflow counter).
    Go119,
    /// Go 1.21 to 1.27 (read and checked; 1.20 is not, so refused): 40 buckets of 4
    /// sub-buckets; bucket 0 is [0, 256) ns in steps of 64, bucket b >= 1 covers
    /// [2^(b+7), 2^(b+8)); 2^47 ns and above go to an overflow counter.
    Go120,
}

impl Scheme {
    /// The scheme of Go `1.<minor>`, if its histogram.go was read: 1.19 and 1.21 to 1.27
    /// (1.22's is taken as 1.21's and 1.23's, which are identical). 1.20 is refused.
    pub fn for_minor(minor: u32) -> Option<Scheme> {
        match minor {
            19 => Some(Scheme::Go119),
            21..=27 => Some(Scheme::Go120),
            _ => None,
        }
    }

    /// Buckets in `timeHistogram.counts`.
    pub fn buckets(self) -> usize {
        match self {
            Scheme::Go119 => 45 * 16,
            Scheme::Go120 => 40 * 4,
        }
    }

    /// Offset of `timeHistogram.underflow` (negative durations), right after the counts.
    pub fn underflow_offset(self) -> u64 {
        8 * self.buckets() as u64
    }

    pub fn overflow_offset(self) -> Option<u64> {
        match self {
            Scheme::Go119 => None,
            Scheme::Go120 => Some(self.underflow_offset() + 8),
        }
    }

    /// Bytes of a `timeHistogram`: read at once.
    pub fn size(self) -> u64 {
        self.overflow_offset().unwrap_or(self.underflow_offset()) + 8
    }

    /// Bucket `i`'s range in ns: lower bound inclusive, upper exclusive; None as upper for
    /// the open-ended last bucket of Go 1.19.
    pub fn bounds(self, i: usize) -> (u64, Option<u64>) {
        match self {
            Scheme::Go119 => {
                let (s, j) = ((i / 16) as u32, (i % 16) as u64);
                if s == 0 {
                    return (j, Some(j + 1));
                }
                let width = 1u64 << (s - 1);
                let lower = (1u64 << (s + 3)) + j * width;
                (lower, (i + 1 < self.buckets()).then_some(lower + width))
            }
            Scheme::Go120 => {
                let (b, j) = ((i / 4) as u32, (i % 4) as u64);
                if b == 0 {
                    return (j * 64, Some((j + 1) * 64));
                }
                let width = 1u64 << (b + 5);
                let lower = (1u64 << (b + 7)) + j * width;
                (lower, Some(lower + width))
            }
        }
    }

    /// Lower bound of the overflow counter (`Go120`): 2^47 ns.
    pub fn overflow_from(self) -> Option<u64> {
        self.overflow_offset().map(|_| 1 << 47)
    }
}

/// The runtime's latency histogram as read (or the difference of two reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeHistogram {
    pub scheme: Scheme,
    /// Per bucket of `scheme`, in its order.
    pub counts: Vec<u64>,
    /// Negative durations (clock skew between CPUs): counted as 0 ns.
    pub underflow: u64,
    /// Durations of 2^47 ns and more (`Go120`; always 0 for 1.19): counted as 2^47.
    pub overflow: u64,
}

impl RuntimeHistogram {
    /// Decodes a `timeHistogram` read from memory (`scheme.size()` bytes).
    fn decode(scheme: Scheme, bytes: &[u8]) -> RuntimeHistogram {
        let word = |off: u64| {
            let o = off as usize;
            bytes
                .get(o..o + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        RuntimeHistogram {
            scheme,
            counts: (0..scheme.buckets() as u64).map(|i| word(8 * i)).collect(),
            underflow: word(scheme.underflow_offset()),
            overflow: scheme.overflow_offset().map(word).unwrap_or(0),
        }
    }

    /// What was recorded after `earlier` (a read of the same process) up to this read; None
    /// if a count went down (then they are not reads of one runtime).
    pub fn since(&self, earlier: &RuntimeHistogram) -> Option<RuntimeHistogram> {
        if earlier.scheme != self.scheme {
            return None;
        }
        let sub = |a: u64, b: u64| a.checked_sub(b);
        Some(RuntimeHistogram {
            scheme: self.scheme,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(&a, &b)| sub(a, b))
                .collect::<Option<_>>()?,
            underflow: sub(self.underflow, earlier.underflow)?,
            overflow: sub(self.overflow, earlier.overflow)?,
        })
    }

    /// Every bucket with a count: (lower ns, upper ns exclusive, count). Underflow is the
    /// single value 0 and the open-ended buckets their lower bound (as `runtime/metrics`
    /// readers such as the gevents fixture take them).
    fn ranges(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let underflow = (0, 0, self.underflow);
        let buckets = self.counts.iter().enumerate().map(|(i, &n)| {
            let (lo, hi) = self.scheme.bounds(i);
            (lo, hi.unwrap_or(lo), n)
        });
        let overflow = self
            .scheme
            .overflow_from()
            .map(|lo| (lo, lo, self.overflow));
        std::iter::once(underflow)
            .chain(buckets)
            .chain(overflow)
            .filter(|&(_, _, n)| n > 0)
    }

    /// Waits recorded (the runtime's sample of them).
    pub fn count(&self) -> u64 {
        self.ranges()
            .fold(0u64, |total, (_, _, n)| total.saturating_add(n))
    }

    /// The sum of the waits, each taken at its bucket's middle (see [`Self::mean_ns`]).
    pub fn midpoint_sum_ns(&self) -> u64 {
        let sum: u128 = self
            .ranges()
            .map(|(lo, hi, n)| u128::from(n) * u128::from(lo + (hi - lo) / 2))
            .sum();
        u64::try_from(sum).unwrap_or(u64::MAX)
    }

    /// The runtime's own buckets as (inclusive upper bound in ns, count), every one from the
    /// last empty one below the first non-empty (whose bound is where that one starts) to the
    /// last non-empty, empty ones between included: with upper bounds only, a drawing needs
    /// no gaps filled and knows every non-empty bucket's range. Negative waits (underflow) are counted in the bucket holding 0, as
    /// [`Self::mean_ns`] takes them; the open-ended top bucket has no bound (None).
    pub fn own_buckets(&self) -> Vec<(Option<u64>, u64)> {
        let scheme = self.scheme;
        let mut all: Vec<(Option<u64>, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, &n)| (scheme.bounds(i).1.map(|hi| hi - 1), n))
            .collect();
        if let Some(first) = all.first_mut() {
            first.1 = first.1.saturating_add(self.underflow);
        }
        if scheme.overflow_from().is_some() {
            all.push((None, self.overflow));
        }
        let first = all.iter().position(|&(_, n)| n > 0);
        let last = all.iter().rposition(|&(_, n)| n > 0);
        match (first, last) {
            (Some(first), Some(last)) => all[first.saturating_sub(1)..=last].to_vec(),
            _ => Vec::new(),
        }
    }

    /// Mean wait, each taken at its bucket's middle (the runtime keeps no sum). Each
    /// midpoint is within half a bucket of the waits in it: `Go120` buckets are at most
    /// 1/4 of their lower bound wide (bucket 0: 64 ns), so the mean is within 12.5% + 32 ns
    /// of the true one; Go 1.19's (16 sub-buckets) within 3.2% + 1 ns. Waits of 2^47 ns
    /// (39 hours) and more count as 2^47.
    pub fn mean_ns(&self) -> u64 {
        let (mut sum, mut count) = (0u128, 0u128);
        for (lo, hi, n) in self.ranges() {
            sum += u128::from(n) * u128::from(lo + (hi - lo) / 2);
            count += u128::from(n);
        }
        sum.checked_div(count)
            .map_or(0, |m| u64::try_from(m).unwrap_or(u64::MAX))
    }

    /// The `q` quantile (0..=1), interpolated linearly inside its bucket as
    /// `LatencyHistogram::quantile` does; 0 when empty. Exact to the bucket it falls in.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        let mut last = 0;
        for (lo, hi, n) in self.ranges() {
            if seen + n >= rank {
                let within = (rank - seen) as f64 / n as f64;
                return lo + ((hi - lo) as f64 * within) as u64;
            }
            seen += n;
            last = hi;
        }
        last
    }

    /// In loupe's latency buckets (8 per power of two, `crate::histogram`), for merging with
    /// the kernel's histograms. Each runtime bucket's count is spread over the loupe buckets
    /// it overlaps in proportion to the overlap (the remainder to the lowest), which assumes
    /// waits spread evenly inside a bucket as interpolated quantiles do; `Go120` buckets
    /// above 256 ns are exactly two loupe buckets, Go 1.19's pairs of them one (losing half
    /// its resolution). The sum is the midpoint estimate of [`RuntimeHistogram::mean_ns`].
    pub fn to_latency_histogram(&self) -> LatencyHistogram {
        let mut loupe = vec![0u64; HIST_BUCKETS as usize];
        let mut sum = 0u128;
        for (lo, hi, n) in self.ranges() {
            sum += u128::from(n) * u128::from(lo + (hi - lo) / 2);
            let (first, last) = (latency_bucket(lo), latency_bucket(hi.max(lo + 1) - 1));
            let width = (hi - lo).max(1) as u128;
            let mut given = 0u64;
            for b in first..=last {
                let from = bucket_lower_bound(b).max(lo);
                let to = if b + 1 < HIST_BUCKETS {
                    bucket_lower_bound(b + 1).min(hi.max(lo + 1))
                } else {
                    hi.max(lo + 1)
                };
                let share = (u128::from(n) * u128::from(to.saturating_sub(from)) / width) as u64;
                loupe[b as usize] += share;
                given += share;
            }
            loupe[first as usize] += n - given.min(n);
        }
        let mut h = LatencyHistogram::default();
        h.add_buckets(&loupe, u64::try_from(sum).unwrap_or(u64::MAX));
        h
    }
}

/// A Go process whose `runtime.sched.timeToRun` has been located: each [`Reader::read`]
/// is then one read of its memory.
pub struct Reader {
    pid: u32,
    mem: Memory,
    version: String,
    scheme: Scheme,
    /// Live address of `sched.timeToRun`.
    histogram: u64,
    found: Found,
    layout_source: Source,
}

/// One read of process `pid`'s histogram (locating it first). To read twice, keep a
/// [`Reader`].
pub fn read(pid: u32) -> Result<RuntimeHistogram, GoroutineError> {
    Reader::attach(pid)?.read()
}

impl Reader {
    pub fn attach(pid: u32) -> Result<Reader, GoroutineError> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(GoroutineError::ProcessExited { pid });
        }
        let bin = Binary::open(pid)?;
        let unsupported = |what| GoroutineError::UnsupportedVersion {
            version: bin.version.clone(),
            what,
        };
        let scheme = Scheme::for_minor(bin.minor)
            .ok_or_else(|| unsupported("the bucket scheme of its scheduling latency histogram"))?;
        let (layout, layout_source) = sched_layout(&bin, scheme, pid)?;
        let layout = layout.ok_or_else(|| {
            unsupported(
                "the runtime.schedt layout (no DWARF, and no checked table for this release)",
            )
        })?;
        let bias = bin.load_bias(pid)?;
        let mem = Memory::new(pid);
        let (sched, found) = locate_sched(&bin, &mem, bias, &layout, scheme)?;
        Ok(Reader {
            pid,
            mem,
            version: bin.version.clone(),
            scheme,
            histogram: sched + layout.time_to_run,
            found,
            layout_source,
        })
    }

    pub fn go_version(&self) -> &str {
        &self.version
    }

    /// How `runtime.sched` was found, and where its layout came from.
    pub fn sources(&self) -> (Found, Source) {
        (self.found, self.layout_source)
    }

    /// The histogram now: one read of the process's memory.
    pub fn read(&self) -> Result<RuntimeHistogram, GoroutineError> {
        let mut buf = vec![0u8; self.scheme.size() as usize];
        self.mem
            .read(self.histogram, &mut buf)
            .map_err(|e| self.mem.error(e, "runtime.sched.timeToRun"))?;
        Ok(RuntimeHistogram::decode(self.scheme, &buf))
    }

    /// What the runtime recorded between `before` and a read now.
    pub fn since(&self, before: &RuntimeHistogram) -> Result<RuntimeHistogram, GoroutineError> {
        self.read()?
            .since(before)
            .ok_or(GoroutineError::HistogramWentBack { pid: self.pid })
    }
}

/// `runtime.schedt`'s offsets from the binary's DWARF, else the release table (None when
/// it has neither).
fn sched_layout(
    bin: &Binary,
    scheme: Scheme,
    pid: u32,
) -> Result<(Option<SchedLayout>, Source), GoroutineError> {
    let elf = bin.elf().ok_or_else(|| GoroutineError::Binary {
        pid,
        reason: "the executable is no longer a readable ELF file".into(),
    })?;
    let bad_dwarf = |reason: String| GoroutineError::Binary {
        pid,
        reason: format!("its DWARF does not describe runtime.sched.timeToRun: {reason}"),
    };
    match dwarf::struct_members(&elf, &layout::SCHED_DWARF_STRUCTS).map_err(bad_dwarf)? {
        Some(structs) => Ok((
            Some(layout::sched_from_dwarf(&structs, &scheme).map_err(bad_dwarf)?),
            Source::Binary,
        )),
        None => Ok((layout::sched_for_minor(bin.minor), Source::ReleaseTable)),
    }
}

/// Runtime functions whose code addresses `sched.timeToRun` (casgstatus records into it)
/// and `sched.maxmcount` (checkmcount compares the thread count with it).
const RECORDS_TIME_TO_RUN: &str = "runtime.casgstatus";
const READS_MAXMCOUNT: &str = "runtime.checkmcount";

/// Link-time candidates for `runtime.sched` from code, best first: each target of
/// casgstatus taken as `&sched.timeToRun`, ranked first when checkmcount references the
/// same base's `maxmcount`.
pub fn candidates_from_code(bin: &Binary, layout: &SchedLayout) -> Vec<u64> {
    let records = locate::referenced_data(bin, &[RECORDS_TIME_TO_RUN]);
    let reads = locate::referenced_data(bin, &[READS_MAXMCOUNT]);
    let mut ranked: Vec<(bool, u64)> = records
        .keys()
        .filter_map(|&t| t.checked_sub(layout.time_to_run))
        .filter(|base| base % 8 == 0)
        .map(|base| (reads.contains_key(&(base + layout.maxmcount)), base))
        .collect();
    // Bases confirmed by checkmcount first, then by address (stable, for the tests).
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, base)| base).collect()
}

/// The live address of `runtime.sched`: the symbol if there is one (validated), else the
/// first code candidate that reads as the scheduler.
fn locate_sched(
    bin: &Binary,
    mem: &Memory,
    bias: u64,
    layout: &SchedLayout,
    scheme: Scheme,
) -> Result<(u64, Found), GoroutineError> {
    let mut rejected = Vec::new();
    let symbol = bin.symbols.get(SYM_SCHED).map(|&(a, _)| (a, Found::Symbol));
    let from_code = candidates_from_code(bin, layout)
        .into_iter()
        .map(|a| (a, Found::Code));
    for (addr, how) in symbol.into_iter().chain(from_code).take(16) {
        let live = addr.wrapping_add(bias);
        match validate(mem, live, layout, scheme) {
            Ok(()) => return Ok((live, how)),
            Err(Invalid::Fatal(e)) => return Err(mem.error(e, "runtime.sched")),
            Err(Invalid::Not(why)) => rejected.push(format!("{addr:#x}: {why}")),
        }
    }
    Err(GoroutineError::SchedNotFound {
        version: bin.version.clone(),
        tried: if rejected.is_empty() {
            format!("no candidate in the code of {RECORDS_TIME_TO_RUN}")
        } else {
            rejected.join("; ")
        },
    })
}

/// More waits than a runtime records in centuries: a bound on garbage counts.
const MAX_COUNT: u64 = 1 << 56;

/// Whether live address `addr` holds the scheduler: goroutine ids handed out, a positive
/// thread limit, and a histogram of plausible counts.
fn validate(mem: &Memory, addr: u64, layout: &SchedLayout, scheme: Scheme) -> Result<(), Invalid> {
    let not = |s: String| Err(Invalid::Not(s));
    let goidgen = mem.read_u64(addr + layout.goidgen)?;
    if goidgen == 0 || goidgen > MAX_GOID {
        return not(format!("goidgen is {goidgen}"));
    }
    let mut limit = [0u8; 4];
    mem.read(addr + layout.maxmcount, &mut limit)?;
    let maxmcount = i32::from_le_bytes(limit);
    if maxmcount <= 0 {
        return not(format!("maxmcount is {maxmcount}"));
    }
    let mut buf = vec![0u8; scheme.size() as usize];
    mem.read(addr + layout.time_to_run, &mut buf)?;
    let h = RuntimeHistogram::decode(scheme, &buf);
    let counts = h.counts.iter().chain([&h.underflow, &h.overflow]);
    if let Some(n) = counts.clone().find(|&&n| n > MAX_COUNT) {
        return not(format!("a timeToRun count is {n}"));
    }
    if counts.fold(0u64, |t, &n| t.saturating_add(n)) > MAX_COUNT {
        return not("timeToRun counts add up to an impossible total".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime's `timeHistogram.record` bucket choice, as histogram.go describes it
    /// (bucket index; None for overflow), written from that description.
    fn runtime_bucket(scheme: Scheme, d: u64) -> Option<usize> {
        let len = 64 - d.leading_zeros();
        match scheme {
            Scheme::Go119 => {
                if d < 16 {
                    return Some(d as usize);
                }
                let s = len - 4;
                if s as usize * 16 >= scheme.buckets() {
                    return Some(scheme.buckets() - 1);
                }
                Some(s as usize * 16 + ((d >> (s - 1)) % 16) as usize)
            }
            Scheme::Go120 => {
                let (bit, b) = if len < 9 { (9, 0) } else { (len, len - 8) };
                if b >= 40 {
                    return None;
                }
                Some(b as usize * 4 + ((d >> (bit - 3)) % 4) as usize)
            }
        }
    }

    fn samples() -> Vec<u64> {
        let mut v: Vec<u64> = (0..2048).collect();
        for shift in 11..50 {
            for k in [0u64, 1, 3, 7, 100, 12345] {
                let base = 1u64 << shift;
                v.extend([
                    base - 1,
                    base,
                    base + (k << (shift / 3)),
                    base + base / 2 + k,
                ]);
            }
        }
        v
    }

    #[test]
    fn bucket_bounds_hold_what_the_runtime_puts_there() {
        for scheme in [Scheme::Go119, Scheme::Go120] {
            let mut previous_upper = Some(0);
            for i in 0..scheme.buckets() {
                let (lo, hi) = scheme.bounds(i);
                assert_eq!(
                    Some(lo),
                    previous_upper,
                    "{scheme:?} bucket {i} is not contiguous"
                );
                previous_upper = hi;
            }
            assert_eq!(previous_upper, scheme.overflow_from(), "{scheme:?} top");
            for d in samples() {
                match runtime_bucket(scheme, d) {
                    Some(i) => {
                        let (lo, hi) = scheme.bounds(i);
                        assert!(
                            lo <= d && hi.is_none_or(|hi| d < hi),
                            "{scheme:?}: {d} ns is in bucket {i} = {lo}..{hi:?}"
                        );
                    }
                    None => assert!(d >= scheme.overflow_from().unwrap_or(u64::MAX), "{d}"),
                }
            }
        }
    }

    fn histogram_of(scheme: Scheme, values: &[u64]) -> RuntimeHistogram {
        let mut h = RuntimeHistogram {
            scheme,
            counts: vec![0; scheme.buckets()],
            underflow: 0,
            overflow: 0,
        };
        for &d in values {
            match runtime_bucket(scheme, d) {
                Some(i) => h.counts[i] += 1,
                None => h.overflow += 1,
            }
        }
        h
    }

    #[test]
    fn count_mean_and_quantiles_are_within_the_bucket_resolution() {
        // 1 us .. 10 ms, uniformly: mean 5.0005 ms.
        let values: Vec<u64> = (1..=10_000u64).map(|i| i * 1_000).collect();
        let exact_mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        for (scheme, width) in [(Scheme::Go119, 1.0 / 16.0), (Scheme::Go120, 1.0 / 4.0)] {
            let h = histogram_of(scheme, &values);
            assert_eq!(h.count(), 10_000);
            let mean = h.mean_ns() as f64;
            assert!(
                (mean - exact_mean).abs() <= exact_mean * width / 2.0,
                "{scheme:?}: mean {mean} vs {exact_mean}"
            );
            for (q, exact) in [
                (0.5, 5_000_000f64),
                (0.99, 9_900_000f64),
                (0.1, 1_000_000f64),
            ] {
                let got = h.quantile(q) as f64;
                assert!(
                    (got - exact).abs() <= exact * width,
                    "{scheme:?} q{q}: {got} vs {exact}"
                );
            }
            // Into loupe's buckets: same count, same quantiles within loupe's resolution too.
            let loupe = h.to_latency_histogram();
            assert_eq!(loupe.count, 10_000, "{scheme:?}");
            assert_eq!(loupe.mean_ns(), h.mean_ns(), "{scheme:?}");
            for (q, exact) in [(0.5, 5_000_000f64), (0.99, 9_900_000f64)] {
                let got = loupe.quantile(q) as f64;
                assert!(
                    (got - exact).abs() <= exact * (width + 1.0 / 8.0),
                    "{scheme:?} loupe q{q}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_reads() {
        let scheme = Scheme::Go120;
        let before = histogram_of(scheme, &[300, 5_000, 5_000]);
        let mut after = histogram_of(scheme, &[300, 5_000, 5_000, 70_000, 70_000, 1 << 48]);
        after.underflow = 2;
        let window = after.since(&before).expect("counts only grew");
        // Two 70 us waits, the overflow (counted at 2^47) and two negative ones (at 0).
        assert_eq!(window.count(), 5);
        assert_eq!(window.quantile(0.2), 0);
        let (lo, hi) = scheme.bounds(runtime_bucket(scheme, 70_000).expect("in range"));
        assert!((lo..hi.expect("closed")).contains(&window.quantile(0.6)));
        assert_eq!(window.quantile(1.0), 1 << 47);
        assert_eq!(window.mean_ns(), ((lo + hi.unwrap_or(lo)) + (1 << 47)) / 5);
        // Reads of another process (or swapped): refused.
        assert_eq!(before.since(&after), None);
        assert_eq!(before.since(&histogram_of(Scheme::Go119, &[])), None);
        // Empty: zeros, no division by zero.
        let empty = before.since(&before).expect("same");
        assert_eq!(
            (empty.count(), empty.mean_ns(), empty.quantile(0.99)),
            (0, 0, 0)
        );
    }

    #[test]
    fn own_buckets_keep_the_runtimes_bounds_and_counts() {
        let scheme = Scheme::Go120;
        let mut h = histogram_of(scheme, &[10, 70_000, 70_000, 300_000, 1 << 48]);
        h.underflow = 2;
        let buckets = h.own_buckets();
        // Every bucket from [0, 64) (with the negative waits) to the overflow, contiguous.
        assert_eq!(buckets.first(), Some(&(Some(63), 3)));
        assert_eq!(buckets.last(), Some(&(None, 1)));
        assert_eq!(buckets.len(), scheme.buckets() + 1);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), h.count());
        let i = runtime_bucket(scheme, 70_000).expect("in range");
        let (lo, hi) = scheme.bounds(i);
        assert_eq!(buckets[i], (hi.map(|hi| hi - 1), 2));
        assert_eq!(buckets[i - 1].0, Some(lo - 1), "contiguous below");
        assert_eq!(h.midpoint_sum_ns() / h.count(), h.mean_ns());
        // Only the span holding waits, and nothing for an empty histogram.
        let one = histogram_of(scheme, &[70_000]);
        assert_eq!(
            one.own_buckets(),
            vec![(Some(lo - 1), 0), (hi.map(|hi| hi - 1), 1)]
        );
        assert_eq!(histogram_of(Scheme::Go119, &[]).own_buckets(), vec![]);
        let top = histogram_of(Scheme::Go119, &[u64::MAX / 2]);
        let below = Scheme::Go119.bounds(Scheme::Go119.buckets() - 1).0 - 1;
        assert_eq!(
            top.own_buckets(),
            vec![(Some(below), 0), (None, 1)],
            "Go 1.19's open-ended top"
        );
    }

    #[test]
    fn decodes_the_runtime_struct() {
        for scheme in [Scheme::Go119, Scheme::Go120] {
            let mut bytes = vec![0u8; scheme.size() as usize];
            bytes[8..16].copy_from_slice(&3u64.to_le_bytes());
            let under = scheme.underflow_offset() as usize;
            bytes[under..under + 8].copy_from_slice(&5u64.to_le_bytes());
            if let Some(over) = scheme.overflow_offset() {
                let o = over as usize;
                bytes[o..o + 8].copy_from_slice(&7u64.to_le_bytes());
            }
            let h = RuntimeHistogram::decode(scheme, &bytes);
            assert_eq!((h.counts[1], h.underflow), (3, 5), "{scheme:?}");
            assert_eq!(h.overflow, if scheme == Scheme::Go120 { 7 } else { 0 });
            assert_eq!(h.counts.iter().sum::<u64>(), 3);
        }
    }

    #[test]
    fn releases_without_a_read_histogram_are_refused() {
        for minor in [18, 20, 28] {
            assert_eq!(Scheme::for_minor(minor), None, "1.{minor}");
        }
        for minor in [20, 22, 28] {
            assert_eq!(layout::sched_for_minor(minor), None, "1.{minor}");
        }
    }
}
