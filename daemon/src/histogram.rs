//! Latency histograms (run-queue, goroutine scheduling, TLS): log-linear buckets, 8 per power
//! of two, so any quantile read from them is within 1/16 (6%) of the true value at worst and
//! ~3% typically, with an exact count and sum. The kernel fills the same buckets
//! (`loupe_ebpf::histogram`), so its histograms merge here without conversion.

pub use loupe_ebpf::histogram::{bucket_lower_bound, latency_bucket, HIST_BUCKETS};
use prost::encoding::{decode_varint, encode_varint};

/// A latency histogram in nanoseconds.
///
/// Sparse: the daemon stores one per process per window, and most of the `HIST_BUCKETS`
/// buckets stay empty (a process's waits span a few powers of two), so only non-empty ones
/// are held: ~16 bytes each instead of 8 bytes for every bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// (bucket index as `latency_bucket` gives it, count > 0), ordered by index.
    buckets: Vec<(u16, u64)>,
    /// Exact number of observations.
    pub count: u64,
    /// Exact sum of observations.
    pub sum_ns: u64,
}

// `record`, `mean_ns` and `nonzero_buckets` serve tests now and Prometheus histograms next.
#[cfg_attr(not(test), allow(dead_code))]
impl LatencyHistogram {
    pub fn record(&mut self, ns: u64) {
        self.bump(latency_bucket(ns), 1);
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds bucket counts as the kernel keeps them (`HIST_BUCKETS` long), with their exact
    /// sum; the count is the buckets' total.
    pub fn add_buckets(&mut self, buckets: &[u64], sum_ns: u64) {
        for (i, &n) in buckets.iter().enumerate().take(HIST_BUCKETS as usize) {
            if n > 0 {
                self.bump(i as u32, n);
                self.count = self.count.saturating_add(n);
            }
        }
        self.sum_ns = self.sum_ns.saturating_add(sum_ns);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for &(i, n) in &other.buckets {
            self.bump(u32::from(i), n);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Adds `n` (> 0) to bucket `index`.
    fn bump(&mut self, index: u32, n: u64) {
        let index = index.min(HIST_BUCKETS - 1) as u16;
        match self.buckets.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(n),
            Err(at) => self.buckets.insert(at, (index, n)),
        }
    }

    pub fn mean_ns(&self) -> u64 {
        self.sum_ns.checked_div(self.count).unwrap_or(0)
    }

    /// The `q` quantile (0..=1), interpolated linearly inside its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().map(|&(_, n)| n).sum();
        if total == 0 {
            return 0;
        }
        // The rank of the wanted observation, 1-based.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for &(i, n) in &self.buckets {
            if seen + n >= rank {
                let low = bucket_lower_bound(u32::from(i));
                let high = bucket_lower_bound(u32::from(i) + 1).max(low + 1);
                let within = (rank - seen) as f64 / n as f64;
                return low + ((high - low) as f64 * within) as u64;
            }
            seen += n;
        }
        bucket_lower_bound(HIST_BUCKETS - 1)
    }

    /// Non-empty buckets as (upper bound exclusive, count), for `stat` JSON and Prometheus.
    #[allow(dead_code)]
    pub fn nonzero_buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets
            .iter()
            .map(|&(i, n)| (bucket_lower_bound(u32::from(i) + 1), n))
    }

    /// Appends the histogram to `out` as varints (count, sum, buckets, then each bucket as
    /// its index's distance from the previous one and its count): a few bytes a bucket, for
    /// histograms kept by the thousand.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_varint(self.count, out);
        encode_varint(self.sum_ns, out);
        encode_varint(self.buckets.len() as u64, out);
        let mut previous = 0;
        for &(i, n) in &self.buckets {
            encode_varint(u64::from(i - previous), out);
            encode_varint(n, out);
            previous = i;
        }
    }

    /// Reads one histogram that [`encode`](Self::encode) wrote at the start of `bytes` and
    /// moves past it; `None` when they do not hold one.
    pub fn decode(bytes: &mut &[u8]) -> Option<LatencyHistogram> {
        let count = decode_varint(bytes).ok()?;
        let sum_ns = decode_varint(bytes).ok()?;
        let len = usize::try_from(decode_varint(bytes).ok()?).ok()?;
        let mut buckets = Vec::with_capacity(len.min(HIST_BUCKETS as usize));
        let mut index = 0u64;
        for _ in 0..len {
            index += decode_varint(bytes).ok()?;
            let n = decode_varint(bytes).ok()?;
            buckets.push((u16::try_from(index).ok()?, n));
        }
        Some(LatencyHistogram {
            buckets,
            count,
            sum_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_histograms_decode_to_themselves() {
        let mut h = LatencyHistogram::default();
        for ns in [0, 1, 900, 1_500, 1_500, 3_000_000, u64::MAX / 2] {
            h.record(ns);
        }
        let empty = LatencyHistogram::default();
        let mut bytes = Vec::new();
        h.encode(&mut bytes);
        empty.encode(&mut bytes);
        h.encode(&mut bytes);
        let mut rest = bytes.as_slice();
        assert_eq!(LatencyHistogram::decode(&mut rest), Some(h.clone()));
        assert_eq!(LatencyHistogram::decode(&mut rest), Some(empty));
        assert_eq!(LatencyHistogram::decode(&mut rest), Some(h));
        assert!(rest.is_empty());
        // Truncated input is refused, not misread.
        let mut short = &bytes[..bytes.len() / 2];
        let _ = LatencyHistogram::decode(&mut short);
        assert_eq!(LatencyHistogram::decode(&mut &bytes[..2]), None);
    }

    #[test]
    fn buckets_are_ordered_and_invert() {
        let mut previous = 0;
        for i in 1..HIST_BUCKETS {
            let low = bucket_lower_bound(i);
            assert!(low > previous, "bucket {i}: {low} after {previous}");
            assert_eq!(latency_bucket(low), i, "lower bound of {i}");
            assert_eq!(latency_bucket(low - 1), i - 1, "below {i}");
            previous = low;
        }
    }

    #[test]
    fn quantiles_are_within_a_few_percent() {
        // A spread of known values: 1 us .. 10 ms, uniformly.
        let mut h = LatencyHistogram::default();
        let values: Vec<u64> = (1..=10_000u64).map(|i| i * 1_000).collect();
        for &v in &values {
            h.record(v);
        }
        assert_eq!(h.count, 10_000);
        assert_eq!(h.sum_ns, values.iter().sum::<u64>());
        for (q, exact) in [
            (0.5, 5_000_000f64),
            (0.99, 9_900_000f64),
            (0.1, 1_000_000f64),
        ] {
            let got = h.quantile(q) as f64;
            assert!(
                (got - exact).abs() / exact <= 1.0 / 16.0,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn merged_kernel_buckets_keep_count_and_sum() {
        let mut kernel = vec![0u64; HIST_BUCKETS as usize];
        kernel[latency_bucket(2_000) as usize] = 3;
        let mut h = LatencyHistogram::default();
        h.add_buckets(&kernel, 6_000);
        assert_eq!((h.count, h.sum_ns, h.mean_ns()), (3, 6_000, 2_000));
        let q = h.quantile(0.5);
        assert_eq!(latency_bucket(q), latency_bucket(2_000));
    }
}
