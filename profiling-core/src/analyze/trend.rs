//! Where growth is computed: the least-squares [`regression`] of a series and the [`growth`]
//! of a memory series in MiB per hour. Pure functions of their input.

use serde::{Deserialize, Serialize};

use crate::record::memory_sample::MemorySample;

/// Bytes in a MiB: every "MB" figure of this crate and of the HTTP API is a MiB.
pub const MIB: f64 = 1_048_576.0;

/// A least-squares line `y = slope * x + intercept`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// Slope, in y units per x unit.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// Coefficient of determination in [0, 1] (1 when y is constant).
    pub r_squared: f64,
}

/// Fits `y = a x + b` by ordinary least squares. `None` for fewer than two points or when
/// every x is the same.
pub fn regression(points: &[(f64, f64)]) -> Option<Regression> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in points {
        let (dx, dy) = (x - mx, y - my);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= f64::EPSILON * nf {
        return None;
    }
    let slope = sxy / sxx;
    let r_squared = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Regression {
        slope,
        intercept: my - slope * mx,
        r_squared,
    })
}

/// Growth of a memory series, from a regression over time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    /// Slope, MiB per hour.
    pub mb_per_hour: f64,
    /// Fit quality in [0, 1].
    pub r_squared: f64,
    /// Samples used.
    pub samples: usize,
    /// Time between the first and last sample, seconds.
    pub span_secs: f64,
}

/// Growth of `series(sample)` over `samples`, by least squares. `None` for fewer than two
/// samples or samples all at the same instant.
pub fn growth(samples: &[MemorySample], series: impl Fn(&MemorySample) -> u64) -> Option<Growth> {
    let first = samples.first()?.at_unix_ms;
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                (s.at_unix_ms.saturating_sub(first)) as f64 / 3_600_000.0,
                series(s) as f64 / MIB,
            )
        })
        .collect();
    let r = regression(&points)?;
    let last = samples.last()?.at_unix_ms;
    Some(Growth {
        mb_per_hour: r.slope,
        r_squared: r.r_squared,
        samples: samples.len(),
        span_secs: last.saturating_sub(first) as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_recovers_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 2.0)).collect();
        let r = regression(&pts).unwrap();
        assert!(
            (r.slope - 3.0).abs() < 1e-9 && (r.intercept - 2.0).abs() < 1e-9,
            "{r:?}"
        );
        assert!((r.r_squared - 1.0).abs() < 1e-9);
        assert!(regression(&pts[..1]).is_none());
        assert!(regression(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
        let flat = regression(&[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]).unwrap();
        assert_eq!(flat.slope, 0.0);
    }

    #[test]
    fn noisy_flat_series_has_low_r_squared() {
        let ys = [5.0, 7.0, 4.0, 6.0, 5.0, 7.0, 4.0, 6.0];
        let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
        let r = regression(&pts).unwrap();
        assert!(r.slope.abs() < 0.2 && r.r_squared < 0.2, "{r:?}");
    }

    #[test]
    fn growth_is_in_mib_per_hour() {
        // +1 MiB every minute for 10 minutes = 60 MiB/h.
        let samples: Vec<MemorySample> = (0..=10)
            .map(|i| MemorySample {
                at_unix_ms: 1_000_000 + i * 60_000,
                rss_bytes: 100 * 1_048_576 + i * 1_048_576,
                ..Default::default()
            })
            .collect();
        let g = growth(&samples, |s| s.rss_bytes).unwrap();
        assert!((g.mb_per_hour - 60.0).abs() < 1e-6, "{g:?}");
        assert_eq!(g.samples, 11);
        assert_eq!(g.span_secs, 600.0);
    }
}
