//! The latency histogram: log-linear buckets, lock-free to record, merged by readers.
//!
//! Values below 16 ns have a bucket each; above, every power of two is split into 16 equal
//! sub-buckets, so a bucket is at most 1/16 of its lower bound wide. A quantile is reported
//! as the midpoint of the bucket it falls in, clamped to the observed min and max: the
//! error is at most 3.2% of the true value. Values from 2^48 ns (about 78 hours) up share
//! the last bucket.
//!
//! Why not `hdrhistogram`: recording must be a single-writer relaxed store into memory a
//! snapshotting thread may read at the same moment, with no lock and no phase swap on the
//! hot path; `hdrhistogram::Histogram` needs `&mut` to record. The bucket layout is the
//! same idea (HDR with 4 bits of sub-bucket precision).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::record::storage::{bump, Chunked};

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const MAX_EXP: u32 = 47;
/// Number of buckets.
pub(crate) const BUCKETS: usize = SUB + (MAX_EXP as usize - SUB_BITS as usize + 1) * SUB;

/// Index of the bucket holding `v`.
#[inline(always)]
pub(crate) fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    SUB + (exp - SUB_BITS) as usize * SUB + sub
}

/// Inclusive lower and exclusive upper bound of bucket `i`, in ns.
pub(crate) fn bucket_bounds(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64 + 1);
    }
    let k = i - SUB;
    let exp = (k / SUB) as u32 + SUB_BITS;
    let sub = (k % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    let lo = (1u64 << exp) + sub * width;
    if i == BUCKETS - 1 {
        return (lo, u64::MAX);
    }
    (lo, lo + width)
}

/// Per-thread atomic buckets, written by one thread, read by any. Sparse: the buckets of one
/// power of two (16 counters, 128 bytes) are allocated on its first value, so a function
/// whose calls span a few powers of two keeps a few hundred bytes per thread instead of the
/// 5.6 KiB of the full table (see `docs/performance.md`, memory).
pub(crate) struct AtomicHistogram {
    buckets: Chunked<AtomicU64, SUB>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            buckets: Chunked::new(BUCKETS),
        }
    }
}

impl AtomicHistogram {
    /// Records one value. Single writer: a load and a store, no locked instruction (plus one
    /// allocation the first time a power of two is seen).
    #[inline(always)]
    pub(crate) fn record(&self, v: u64) {
        if let Some(b) = self.buckets.get_or_alloc(bucket_of(v)) {
            bump(b, 1);
        }
    }

    pub(crate) fn add_into(&self, out: &mut [u64]) {
        self.buckets.for_each(|i, b| out[i] += b.load(Relaxed));
    }

    pub(crate) fn clear(&self) {
        self.buckets.for_each(|_, b| b.store(0, Relaxed));
    }
}

/// The value at quantile `q` (0..=1) of merged bucket counts, clamped to `[min, max]`.
pub(crate) fn quantile(counts: &[u64], q: f64, min: u64, max: u64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    // Rank of the wanted value, 1-based: the smallest value with at least q*total below or at it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let (lo, hi) = bucket_bounds(i);
            let mid = if hi == u64::MAX { lo } else { lo + (hi - 1 - lo) / 2 };
            return mid.clamp(min, max.max(min));
        }
    }
    max
}

/// Sparse form of merged counts: `(upper bound exclusive, count)` for non-empty buckets.
pub(crate) fn sparse(counts: &[u64]) -> Vec<(u64, u64)> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| (bucket_bounds(i).1, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_contiguously() {
        let mut prev_hi = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(lo, prev_hi, "bucket {i} does not start where {} ended", i.max(1) - 1);
            assert!(hi > lo);
            assert_eq!(bucket_of(lo), i);
            if hi != u64::MAX {
                assert_eq!(bucket_of(hi - 1), i);
            }
            prev_hi = hi;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_is_at_most_a_sixteenth() {
        for i in SUB..BUCKETS - 1 {
            let (lo, hi) = bucket_bounds(i);
            assert!((hi - lo) * 16 <= lo, "bucket {i}: {lo}..{hi}");
        }
    }

    #[test]
    fn only_the_powers_of_two_seen_are_allocated() {
        let h = AtomicHistogram::default();
        h.record(3);
        h.record(1000);
        h.record(1001);
        let mut allocated = 0;
        h.buckets.for_each(|_, _| allocated += 1);
        assert_eq!(allocated, 2 * SUB, "one group for 3, one for 1000 and 1001");
        let mut counts = vec![0; BUCKETS];
        h.add_into(&mut counts);
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert_eq!(counts[bucket_of(1000)], 2);
    }

    #[test]
    fn quantiles_of_uniform_values_are_within_bucket_error() {
        let h = AtomicHistogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let mut counts = vec![0; BUCKETS];
        h.add_into(&mut counts);
        for (q, truth) in [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = quantile(&counts, q, 1000, 10_000_000) as f64;
            assert!((got - truth).abs() / truth < 0.035, "q{q}: {got} vs {truth}");
        }
        assert_eq!(quantile(&counts, 1.0, 1000, 10_000_000), 10_000_000);
        assert_eq!(quantile(&[0; BUCKETS], 0.5, 0, 0), 0);
    }
}
