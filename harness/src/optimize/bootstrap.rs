//! The acceptance gate: a paired bootstrap over per-example score deltas.
//!
//! A candidate and the current prompt are scored on the same examples; the delta of example
//! `i` is `candidate[i] - current[i]`. Resampling the deltas with replacement (seeded) gives a
//! distribution of the mean delta; its central `confidence` interval is reported. On train a
//! candidate needs `lower > 0`; on dev it is rejected as overfit when `upper < 0`.

use serde::{Deserialize, Serialize};

use engines::SplitMix64;

/// Resamples per test.
pub const RESAMPLES: usize = 2000;

/// The result of one paired bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Mean of the observed deltas.
    pub mean_delta: f64,
    /// Quantile `(1 - confidence) / 2` of the resampled mean deltas.
    pub lower: f64,
    /// Quantile `(1 + confidence) / 2` of the resampled mean deltas.
    pub upper: f64,
    pub confidence: f64,
    pub resamples: usize,
    pub n: usize,
}

/// Paired deltas `candidate[i] - current[i]`; the slices must be in the same example order.
pub fn deltas(candidate: &[f64], current: &[f64]) -> Vec<f64> {
    candidate.iter().zip(current).map(|(c, b)| c - b).collect()
}

/// Bootstraps the mean of `deltas` with `resamples` draws from `rng`. With no deltas every bound
/// is 0, which no gate passes.
pub fn paired(deltas: &[f64], confidence: f64, resamples: usize, rng: &mut SplitMix64) -> Interval {
    let n = deltas.len();
    let mean_delta = crate::stats::mean(deltas);
    if n == 0 || resamples == 0 {
        return Interval { mean_delta, lower: 0.0, upper: 0.0, confidence, resamples, n };
    }
    let mut means: Vec<f64> = (0..resamples).map(|_| (0..n).map(|_| deltas[rng.below(n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    let at = |q: f64| {
        let rank = (q * resamples as f64).floor() as usize;
        means[rank.min(resamples - 1)]
    };
    Interval { mean_delta, lower: at(alpha), upper: at(1.0 - alpha), confidence, resamples, n }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(d: &[f64], seed: u64) -> Interval {
        paired(d, 0.9, RESAMPLES, &mut SplitMix64::derive(seed, "train-gate", 0))
    }

    #[test]
    fn a_clear_win_is_accepted() {
        let d = [0.5, 0.25, 0.5, 0.75, 0.25, 0.5, 0.0, 0.5, 0.25, 0.5];
        let i = gate(&d, 0);
        assert!(i.lower > 0.0, "{i:?}");
        assert!(i.lower <= i.mean_delta && i.mean_delta <= i.upper, "{i:?}");
    }

    #[test]
    fn noise_and_ties_are_rejected() {
        let noise = [0.25, -0.25, 0.5, -0.5, 0.25, -0.25, 0.0, 0.25, -0.25, 0.0];
        assert!(gate(&noise, 0).lower <= 0.0);
        assert!(gate(&[0.0; 8], 0).lower <= 0.0);
        // One lucky example out of many is not a win either.
        let mut lucky = [0.0; 12];
        lucky[3] = 1.0;
        assert!(gate(&lucky, 0).lower <= 0.0, "{:?}", gate(&lucky, 0));
        assert!(gate(&[], 0).lower <= 0.0);
    }

    #[test]
    fn same_seed_same_bounds_and_seed_matters() {
        let d = [0.51, -0.23, 0.27, 0.013, 0.77, -0.49, 0.31, 0.057, -0.11, 0.19];
        assert_eq!(gate(&d, 11), gate(&d, 11));
        let others: Vec<Interval> = (0..5).map(|s| gate(&d, s)).collect();
        assert!(others.iter().any(|i| i != &others[0]));
    }

    #[test]
    fn a_clear_loss_has_negative_upper_bound() {
        let d = [-0.5, -0.25, -0.5, -0.75, -0.25];
        assert!(gate(&d, 1).upper < 0.0);
    }
}
