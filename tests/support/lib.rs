//! Workloads whose true cost is known, shared by the truth tests, examples and benchmarks.

use std::time::{Duration, Instant};

/// Burns CPU on the calling thread for `d` of wall time.
pub fn spin_for(d: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        for i in 0..64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}

/// Whether `got` is within `tol` (a fraction) of `want`.
pub fn within(got: u64, want: u64, tol: f64) -> bool {
    let (g, w) = (got as f64, want as f64);
    (g - w).abs() <= w * tol
}
