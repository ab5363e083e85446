//! Where a bottleneck's impact score is computed: the weighted mean of its shares of the
//! window's wall time, CPU time and allocated bytes.

use crate::analyze::ranking::classify::thresholds::{IMPACT_WEIGHT_ALLOC, IMPACT_WEIGHT_CPU, IMPACT_WEIGHT_WALL};

/// Weighted shares of one function, each in [0, 1]; `None` when the window has none of that
/// resource (so the metric cannot tell functions apart).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Shares {
    /// Self wall time / profiled wall time.
    pub wall: Option<f64>,
    /// Self CPU time / all self CPU time.
    pub cpu: Option<f64>,
    /// Self allocated bytes / all self allocated bytes.
    pub alloc: Option<f64>,
}

/// The impact score: the mean of the available shares weighted by
/// [`IMPACT_WEIGHT_WALL`], [`IMPACT_WEIGHT_CPU`] and [`IMPACT_WEIGHT_ALLOC`]:
///
/// `impact = (0.6·wall + 0.25·cpu + 0.15·alloc) / (sum of the weights of available shares)`
///
/// A function that does all the work of the window scores 1; one that does none scores 0.
/// Shares are clamped to [0, 1], so the score is too. Rounded to 4 decimals.
pub fn impact_score(s: Shares) -> f64 {
    let parts = [
        (IMPACT_WEIGHT_WALL, s.wall),
        (IMPACT_WEIGHT_CPU, s.cpu),
        (IMPACT_WEIGHT_ALLOC, s.alloc),
    ];
    let (num, den) = parts.iter().fold((0.0, 0.0), |(n, d), &(w, x)| match x {
        Some(x) => (n + w * x.clamp(0.0, 1.0), d + w),
        None => (n, d),
    });
    if den == 0.0 {
        0.0
    } else {
        round4(num / den)
    }
}

/// `x` rounded to 4 decimals, as every share and score is served.
pub(crate) fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// `part / whole` clamped to [0, 1]; `None` when `whole` is 0.
pub(crate) fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impact_score_formula() {
        let all = Shares {
            wall: Some(1.0),
            cpu: Some(1.0),
            alloc: Some(1.0),
        };
        assert_eq!(impact_score(all), 1.0);
        assert_eq!(impact_score(Shares::default()), 0.0);
        let s = Shares {
            wall: Some(0.5),
            cpu: Some(0.2),
            alloc: Some(0.0),
        };
        // 0.6*0.5 + 0.25*0.2 + 0.15*0 = 0.35
        assert_eq!(impact_score(s), 0.35);
        // Without allocation figures the weights renormalize: (0.3 + 0.05) / 0.85.
        let s = Shares { alloc: None, ..s };
        assert_eq!(impact_score(s), round4(0.35 / 0.85));
        // Out-of-range inputs are clamped.
        let s = Shares {
            wall: Some(3.0),
            cpu: Some(-1.0),
            alloc: None,
        };
        assert_eq!(impact_score(s), round4(0.6 / 0.85));
    }

    #[test]
    fn ratio_is_none_without_a_whole() {
        assert_eq!(ratio(1, 0), None);
        assert_eq!(ratio(3, 4), Some(0.75));
        assert_eq!(ratio(5, 4), Some(1.0));
    }
}
