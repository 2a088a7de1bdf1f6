//! Log-linear latency buckets shared by the kernel (which counts into them) and userspace
//! (which reads quantiles from them): 8 linear sub-buckets per power of two, so a bucket is at
//! most 1/8 of its lower bound wide. Values below 8 ns have a bucket each.

/// Buckets per histogram: enough for values up to 2^41 ns (~37 minutes); larger values land
/// in the last bucket.
pub const HIST_BUCKETS: u32 = 320;

/// The bucket of a latency in nanoseconds.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> u32 {
    if ns < 8 {
        return ns as u32;
    }
    let msb = 63 - ns.leading_zeros();
    let bucket = (msb - 2) * 8 + ((ns >> (msb - 3)) & 7) as u32;
    if bucket >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        bucket
    }
}

/// The smallest latency in bucket `i` (the exclusive upper bound of bucket `i - 1`).
pub fn bucket_lower_bound(i: u32) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let msb = i / 8 + 2;
    let sub = (i % 8) as u64;
    (8 + sub) << (msb - 3)
}
