//! Token choice over raw logits: argmax, or seeded temperature/top-p sampling. Kept in Rust so
//! every backend picks tokens the same way and the constraint mask is applied once.

use crate::rng::SplitMix64;

/// The stream a request with `seed` samples from (the seed mixed with a constant first, so
/// that seed 0 does not start from state 0).
pub fn request_rng(seed: u64) -> SplitMix64 {
    SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15)
}

/// Index of the largest logit among those `allowed` (all when `allowed` is `None`).
/// Ties go to the lowest index. `None` when nothing is allowed.
pub fn argmax(logits: &[f32], allowed: Option<&dyn Fn(usize) -> bool>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_finite() || allowed.is_some_and(|ok| !ok(i)) {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i)
}

/// Natural log of `token`'s probability under softmax(`logits`) (non-finite logits count as
/// impossible); `None` when `token` is out of range or its logit is not finite.
pub fn logprob(logits: &[f32], token: usize) -> Option<f32> {
    let l = *logits.get(token)?;
    if !l.is_finite() {
        return None;
    }
    let max = logits.iter().copied().filter(|x| x.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().filter(|x| x.is_finite()).map(|&x| f64::from(x - max).exp()).sum();
    Some((f64::from(l - max) - sum.ln()) as f32)
}

/// Samples from softmax(logits / temperature) restricted to `allowed`, after a top-p cut.
pub fn sample(
    logits: &[f32],
    allowed: Option<&dyn Fn(usize) -> bool>,
    temperature: f32,
    top_p: f32,
    rng: &mut SplitMix64,
) -> Option<usize> {
    let mut cands: Vec<(usize, f32)> = logits
        .iter()
        .enumerate()
        .filter(|&(i, l)| l.is_finite() && allowed.is_none_or(|ok| ok(i)))
        .map(|(i, &l)| (i, l))
        .collect();
    if cands.is_empty() {
        return None;
    }
    cands.sort_by(|a, b| b.1.total_cmp(&a.1));
    let max = cands[0].1;
    let t = f64::from(temperature.max(1e-4));
    let mut probs: Vec<f64> = cands.iter().map(|&(_, l)| ((f64::from(l - max)) / t).exp()).collect();
    let total: f64 = probs.iter().sum();
    let mut keep = probs.len();
    if top_p < 1.0 {
        let mut acc = 0.0;
        for (k, p) in probs.iter().enumerate() {
            acc += p / total;
            if acc >= f64::from(top_p) {
                keep = k + 1;
                break;
            }
        }
    }
    probs.truncate(keep);
    let total: f64 = probs.iter().sum();
    let mut r = rng.next_f64() * total;
    for (k, p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return Some(cands[k].0);
        }
    }
    Some(cands[keep - 1].0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_respects_mask_and_ties() {
        let l = [0.5, 2.0, 2.0, f32::NEG_INFINITY, 1.0];
        assert_eq!(argmax(&l, None), Some(1));
        let odd = |i: usize| i % 2 == 0;
        assert_eq!(argmax(&l, Some(&odd)), Some(2));
        let none = |_: usize| false;
        assert_eq!(argmax(&l, Some(&none)), None);
    }

    #[test]
    fn logprob_is_the_log_softmax_of_the_raw_logits() {
        let l = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        let z: f64 = l[..3].iter().map(|&x| f64::from(x).exp()).sum();
        for (i, &x) in l[..3].iter().enumerate() {
            let want = f64::from(x) - z.ln();
            assert!((f64::from(logprob(&l, i).unwrap()) - want).abs() < 1e-6, "{i}");
        }
        let total: f64 = (0..3).map(|i| f64::from(logprob(&l, i).unwrap()).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(logprob(&l, 3), None);
        assert_eq!(logprob(&l, 9), None);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_masked() {
        let l = [1.0, 1.1, 0.9, 1.05];
        let even = |i: usize| i % 2 == 0;
        let draw = |seed| {
            let mut rng = request_rng(seed);
            (0..32).map(|_| sample(&l, Some(&even), 1.0, 1.0, &mut rng).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(draw(7).iter().all(|i| i % 2 == 0));
        assert_ne!(draw(7), draw(8));
    }
}
