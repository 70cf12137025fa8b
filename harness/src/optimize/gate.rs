//! The accept gate as pure functions over per-example scores: a candidate against the current
//! prompt on the same examples (paired), with a bootstrap interval under `--accept bootstrap`.
//! On train a candidate must show a gain; on dev (held out) it must not lose.

use super::bootstrap::{self, RESAMPLES};
use super::records::GateEntry;
use crate::config::Accept;
use crate::rng::SplitMix64;

/// How the gate decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateRule {
    pub accept: Accept,
    /// Of the bootstrap interval.
    pub confidence: f64,
    /// The run's seed: each gate's resamples come from a stream of (seed, gate, iteration).
    pub seed: u64,
}

/// Candidate against current on the same examples (`candidate[i]` and `current[i]` score the
/// same example); `stream` names the gate (`train-gate`, `dev-gate`).
pub fn compare(rule: &GateRule, candidate: &[f64], current: &[f64], stream: &str, iteration: usize) -> GateEntry {
    let interval = (rule.accept == Accept::Bootstrap).then(|| {
        let mut rng = SplitMix64::derive(rule.seed, stream, iteration as u64);
        bootstrap::paired(&bootstrap::deltas(candidate, current), rule.confidence, RESAMPLES, &mut rng)
    });
    GateEntry { current_mean: bootstrap::mean(current), candidate_mean: bootstrap::mean(candidate), bootstrap: interval }
}

/// Train: evidence of a gain (bootstrap lower bound above 0, or a higher mean).
pub fn gains(g: &GateEntry) -> bool {
    match g.bootstrap {
        Some(i) => i.lower > 0.0,
        None => g.candidate_mean > g.current_mean,
    }
}

/// Dev: evidence of a loss (bootstrap upper bound below 0, or a lower mean).
pub fn overfits(g: &GateEntry) -> bool {
    match g.bootstrap {
        Some(i) => i.upper < 0.0,
        None => g.candidate_mean < g.current_mean,
    }
}

/// Why a train gate did not pass, with its numbers.
pub fn no_gain_reason(g: &GateEntry) -> String {
    match g.bootstrap {
        Some(i) => format!(
            "rejected: no gain on train (mean delta {:+.4}, bootstrap lower bound {:+.4} at {})",
            i.mean_delta, i.lower, i.confidence
        ),
        None => format!("rejected: no gain on train (mean delta {:+.4})", g.candidate_mean - g.current_mean),
    }
}

/// Why a dev gate rejected, with its numbers.
pub fn overfit_reason(dev: &GateEntry) -> String {
    format!("rejected: overfit: wins on train but loses on dev (dev mean {:.4} vs {:.4})", dev.candidate_mean, dev.current_mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEAN: GateRule = GateRule { accept: Accept::Mean, confidence: 0.9, seed: 0 };
    const BOOT: GateRule = GateRule { accept: Accept::Bootstrap, confidence: 0.9, seed: 0 };

    #[test]
    fn mean_rule_compares_means() {
        let g = compare(&MEAN, &[1.0, 0.5], &[0.5, 0.5], "train-gate", 0);
        assert!(g.bootstrap.is_none());
        assert!(gains(&g) && !overfits(&g));
        let tie = compare(&MEAN, &[0.5], &[0.5], "train-gate", 0);
        assert!(!gains(&tie) && !overfits(&tie));
        let loss = compare(&MEAN, &[0.0, 0.5], &[0.5, 0.5], "dev-gate", 0);
        assert!(overfits(&loss));
        assert!(overfit_reason(&loss).contains("dev mean 0.2500 vs 0.5000"));
    }

    #[test]
    fn bootstrap_needs_a_consistent_gain() {
        // Better on every example: the lower bound is above 0.
        let cand = vec![1.0; 12];
        let cur = vec![0.5; 12];
        let g = compare(&BOOT, &cand, &cur, "train-gate", 3);
        assert!(gains(&g), "{g:?}");
        // One big win among ties: a higher mean, but the lower bound is 0.
        let mut one = vec![0.5; 12];
        one[0] = 1.0;
        let g = compare(&BOOT, &one, &cur, "train-gate", 3);
        assert!(g.candidate_mean > g.current_mean && !gains(&g), "{g:?}");
        assert!(no_gain_reason(&g).contains("bootstrap lower bound"));
        // Worse everywhere on dev: overfit.
        let g = compare(&BOOT, &cur, &cand, "dev-gate", 3);
        assert!(overfits(&g));
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let cand = [1.0, 0.0, 1.0, 0.5, 0.25, 1.0];
        let cur = [0.5, 0.5, 0.0, 0.5, 0.5, 0.0];
        assert_eq!(compare(&BOOT, &cand, &cur, "train-gate", 1), compare(&BOOT, &cand, &cur, "train-gate", 1));
    }
}
