//! The Pareto frontier over train examples (as in GEPA): every prompt scored on all of train
//! is kept with its per-example scores, and a prompt is on the frontier when it is best on at
//! least one example (ties shared) and no other prompt dominates it. With `--search pareto` the
//! parent of each iteration's proposals is drawn from the frontier, weighted by the examples it
//! leads, instead of always being the incumbent; the `merge` proposer combines two members.
//! The gate is unchanged: the frontier chooses what to try, the gate chooses what to keep.
//!
//! Pure functions over scores; deterministic for a seed and an iteration.

use crate::eval::ExampleRecord;
use crate::optimize::prompt::Prompt;
use engines::SplitMix64;

/// A prompt scored on all of train: its records in train order.
#[derive(Debug, Clone)]
pub struct Member {
    pub prompt: Prompt,
    pub train: Vec<ExampleRecord>,
}

/// Per-example scores of each member, in train order.
fn table(pool: &[Member]) -> Vec<Vec<f64>> {
    pool.iter().map(|m| m.train.iter().map(|r| r.score).collect()).collect()
}

/// For each member, the indices of the train examples it leads: its score is the best on the
/// example (ties shared) and above 0 (an example nobody gets any credit on is led by no one).
pub fn leads(scores: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = scores.iter().map(Vec::len).min().unwrap_or(0);
    let mut out = vec![Vec::new(); scores.len()];
    for e in 0..n {
        let best = scores.iter().map(|s| s[e]).fold(f64::NEG_INFINITY, f64::max);
        if best <= 0.0 {
            continue;
        }
        for (m, s) in scores.iter().enumerate() {
            if s[e] >= best {
                out[m].push(e);
            }
        }
    }
    out
}

/// Whether `a` is dominated by `b`: no better anywhere and worse somewhere.
fn dominated(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// The members on the frontier with the examples each leads, in pool order: those that lead
/// at least one example and are dominated by no other member. Of members with identical
/// scores only the first stays (the later ones add nothing to choose from).
pub fn frontier_of(scores: &[Vec<f64>]) -> Vec<(usize, Vec<usize>)> {
    leads(scores)
        .into_iter()
        .enumerate()
        .filter(|(m, led)| {
            !led.is_empty()
                && !scores.iter().enumerate().any(|(o, s)| o != *m && dominated(&scores[*m], s))
                && !scores[..*m].iter().any(|s| s == &scores[*m])
        })
        .collect()
}

/// [`frontier_of`] a pool.
pub fn frontier(pool: &[Member]) -> Vec<(usize, Vec<usize>)> {
    frontier_of(&table(pool))
}

/// The parent of iteration `iteration`'s proposals: a frontier member drawn with probability
/// proportional to the examples it leads. The first member (the baseline) when the frontier is
/// empty (nothing scores above 0 yet).
pub fn pick_parent(pool: &[Member], seed: u64, iteration: usize) -> usize {
    pick_weighted(&frontier(pool), seed, iteration)
}

fn pick_weighted(front: &[(usize, Vec<usize>)], seed: u64, iteration: usize) -> usize {
    let total: usize = front.iter().map(|(_, led)| led.len()).sum();
    if total == 0 {
        return 0;
    }
    let mut rng = SplitMix64::derive(seed, "parent", iteration as u64);
    let mut draw = (rng.next_u64() % total as u64) as usize;
    for (m, led) in front {
        if draw < led.len() {
            return *m;
        }
        draw -= led.len();
    }
    front[front.len() - 1].0
}

/// The two frontier members that lead the most examples (ties in pool order), when there are
/// two.
pub fn merge_pair(pool: &[Member]) -> Option<(usize, usize)> {
    let mut front = frontier(pool);
    front.sort_by_key(|(m, led)| (std::cmp::Reverse(led.len()), *m));
    match front.as_slice() {
        [a, b, ..] => Some((a.0, b.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_best_on_one_example_is_on_the_frontier_and_a_dominated_one_is_not() {
        let scores = vec![
            vec![0.5, 0.5, 0.0], // baseline
            vec![1.0, 0.0, 0.0], // leads example 0
            vec![0.5, 0.5, 1.0], // leads 1 (shared with baseline) and 2; dominates the baseline
            vec![0.0, 0.0, 0.0], // leads nothing
        ];
        assert_eq!(leads(&scores), vec![vec![1], vec![0], vec![1, 2], vec![]]);
        assert_eq!(frontier_of(&scores), vec![(1, vec![0]), (2, vec![1, 2])]);
    }

    #[test]
    fn identical_members_count_once_and_nobody_leads_an_example_nobody_gets() {
        let scores = vec![vec![0.0, 1.0], vec![0.0, 1.0]];
        assert_eq!(leads(&scores), vec![vec![1], vec![1]]);
        assert_eq!(frontier_of(&scores), vec![(0, vec![1])]);
        assert!(frontier_of(&[vec![0.0, 0.0]]).is_empty());
        assert_eq!(pick_weighted(&[], 1, 0), 0);
    }

    #[test]
    fn parents_are_drawn_in_proportion_to_the_examples_they_lead_and_repeat_for_a_seed() {
        let front = vec![(1, vec![0, 1, 2]), (4, vec![3])];
        let draws: Vec<usize> = (0..4000).map(|it| pick_weighted(&front, 7, it)).collect();
        let ones = draws.iter().filter(|&&m| m == 1).count();
        assert!((2800..3200).contains(&ones), "{ones} of 4000 draws for the member leading 3 of 4");
        assert!(draws.iter().all(|m| [1, 4].contains(m)));
        assert_eq!(draws, (0..4000).map(|it| pick_weighted(&front, 7, it)).collect::<Vec<_>>());
    }
}
