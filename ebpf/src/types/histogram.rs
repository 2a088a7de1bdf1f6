//! Log-linear latency histograms shared by the kernel (which buckets) and userspace (which
//! reads bucket bounds): 8 linear sub-buckets per power of two, so every bucket is at most
//! 12.5% wide relative to its lower bound, with no loop (the verifier needs bounded code).
//!
//! Values below 8 ns have a bucket each. Above, a value with most significant bit `msb` falls
//! in bucket `(msb - 2) * 8 + (the 3 bits below the msb)`.

/// Buckets per histogram: the last one (`HIST_BUCKETS - 1`) also holds everything from
/// 2^40 ns (about 18 minutes) up.
pub const HIST_BUCKETS: u32 = 304;

/// Index of the most significant set bit of `x` (`x` > 0): `63 - x.leading_zeros()`,
/// written as a fixed binary search so the BPF backend needs no count-leading-zeros.
#[inline(always)]
pub fn most_significant_bit(x: u64) -> u32 {
    let mut x = x;
    let mut msb = 0;
    if x >> 32 != 0 {
        x >>= 32;
        msb += 32;
    }
    if x >> 16 != 0 {
        x >>= 16;
        msb += 16;
    }
    if x >> 8 != 0 {
        x >>= 8;
        msb += 8;
    }
    if x >> 4 != 0 {
        x >>= 4;
        msb += 4;
    }
    if x >> 2 != 0 {
        x >>= 2;
        msb += 2;
    }
    if x >> 1 != 0 {
        msb += 1;
    }
    msb
}

/// The bucket of a latency of `ns` nanoseconds.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> u32 {
    if ns < 8 {
        return ns as u32;
    }
    let msb = most_significant_bit(ns);
    let bucket = (msb - 2) * 8 + ((ns >> (msb - 3)) & 7) as u32;
    if bucket >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        bucket
    }
}

/// The smallest latency (ns) in bucket `i`.
pub fn bucket_lower_bound(i: u32) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let msb = i / 8 + 2;
    (8 + (i % 8) as u64) << (msb - 3)
}

/// One past the largest latency (ns) in bucket `i`; `u64::MAX` for the last bucket, which
/// holds everything above.
pub fn bucket_upper_bound(i: u32) -> u64 {
    if i + 1 >= HIST_BUCKETS {
        u64::MAX
    } else {
        bucket_lower_bound(i + 1)
    }
}
