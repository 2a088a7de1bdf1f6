//! Latency histograms (run-queue, goroutine scheduling, TLS): log-linear buckets, 8 per power
//! of two, so any quantile read from them is within 1/16 (6%) of the true value at worst and
//! ~3% typically, with an exact count and sum. The kernel fills the same buckets
//! (`loupe_ebpf::histogram`), so its histograms merge here without conversion.

pub use loupe_ebpf::histogram::{bucket_lower_bound, latency_bucket, HIST_BUCKETS};

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

    /// Heap bytes held (for the daemon's memory cap).
    /// Gives back spare capacity (a histogram about to be kept a long time).
    pub fn shrink_to_fit(&mut self) {
        self.buckets.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u16, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
