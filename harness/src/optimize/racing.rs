//! Racing as a pure function: successive halving over an iteration's candidates. Every live
//! candidate runs on a first rung of train (a quarter, at least one engine batch); at each
//! rung the better half by mean gain over the current prompt on the same examples goes on to
//! twice as many examples, until a rung covers all of train. The caller scores; this decides.

use super::outcome::Rejection;
use crate::config::Racing;

/// Examples of the first rung for `alive` candidates on `n` train examples.
pub fn first_rung(racing: Racing, alive: usize, n: usize, batch: usize) -> usize {
    match racing {
        Racing::Halving if alive > 1 => n.div_ceil(4).max(batch).min(n),
        _ => n,
    }
}

/// How a race ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceResult {
    /// Candidates scored on all of train, in index order.
    pub finalists: Vec<usize>,
    /// Candidates dropped on the way, with why.
    pub dropped: Vec<(usize, Rejection)>,
}

/// Races the candidates `alive` (indices, ascending) on `n` examples from a first rung of
/// `first`. `gain(candidate, size)` scores a candidate on the first `size` examples and
/// returns its mean gain over the current prompt on them; ties keep the candidate with the
/// fewer prompt tokens (`tokens(candidate)`), then the earlier one.
///
/// # Errors
/// The first error `gain` returns.
pub fn race<E>(
    mut alive: Vec<usize>,
    n: usize,
    first: usize,
    tokens: impl Fn(usize) -> usize,
    mut gain: impl FnMut(usize, usize) -> Result<f64, E>,
) -> Result<RaceResult, E> {
    let mut dropped = Vec::new();
    let mut size = first.min(n);
    loop {
        let mut rung = Vec::with_capacity(alive.len());
        for &i in &alive {
            rung.push((i, gain(i, size)?));
        }
        if size >= n {
            return Ok(RaceResult { finalists: alive, dropped });
        }
        let mut order: Vec<usize> = (0..rung.len()).collect();
        order.sort_by(|&a, &b| {
            let (i, j) = (rung[a].0, rung[b].0);
            rung[b].1.total_cmp(&rung[a].1).then(tokens(i).cmp(&tokens(j))).then(i.cmp(&j))
        });
        let keep = rung.len().div_ceil(2);
        for &r in &order[keep..] {
            let (i, g) = rung[r];
            dropped.push((i, Rejection::Raced { evaluated: size, train: n, gain: g, went_on: keep, rung: rung.len() }));
        }
        alive = order[..keep].iter().map(|&r| rung[r].0).collect();
        alive.sort_unstable();
        size = (size * 2).min(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rung_is_a_quarter_of_train_and_at_least_a_batch() {
        assert_eq!(first_rung(Racing::Halving, 4, 16, 2), 4);
        assert_eq!(first_rung(Racing::Halving, 4, 16, 8), 8);
        assert_eq!(first_rung(Racing::Halving, 4, 3, 8), 3);
        assert_eq!(first_rung(Racing::Halving, 1, 16, 2), 16, "one candidate runs on all of train");
        assert_eq!(first_rung(Racing::Off, 4, 16, 2), 16);
    }

    #[test]
    fn halving_keeps_the_better_half_until_all_of_train() {
        // Candidate i gains i/10 on any prefix: 3 and 2 survive 4 -> 2, then 3 wins 2 -> 1.
        let mut calls = Vec::new();
        let r = race::<()>(
            vec![0, 1, 2, 3],
            16,
            4,
            |_| 0,
            |i, size| {
                calls.push((i, size));
                Ok(i as f64 / 10.0)
            },
        )
        .unwrap();
        assert_eq!(r.finalists, vec![3]);
        assert_eq!(calls, vec![(0, 4), (1, 4), (2, 4), (3, 4), (2, 8), (3, 8), (3, 16)]);
        let after: Vec<(usize, usize)> = r
            .dropped
            .iter()
            .map(|(i, why)| match why {
                Rejection::Raced { evaluated, train: 16, .. } => (*i, *evaluated),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(after, vec![(1, 4), (0, 4), (2, 8)]);
        assert!(matches!(r.dropped[0].1, Rejection::Raced { gain, went_on: 2, rung: 4, .. } if (gain - 0.1).abs() < 1e-12));
    }

    #[test]
    fn ties_keep_the_shorter_then_the_earlier_candidate_and_errors_stop_the_race() {
        let r = race::<()>(vec![0, 1, 2], 4, 1, |_| 10, |_, _| Ok(0.0)).unwrap();
        assert_eq!(r.finalists, vec![0]);
        // Equal gains: the one with the fewest prompt tokens goes on.
        let tokens = [30, 20, 25];
        let r = race::<()>(vec![0, 1, 2], 4, 1, |i| tokens[i], |_, _| Ok(0.0)).unwrap();
        assert_eq!(r.finalists, vec![1]);
        // A gain still beats a shorter prompt.
        let r = race::<()>(vec![0, 1, 2], 4, 1, |i| tokens[i], |i, _| Ok(if i == 0 { 0.1 } else { 0.0 })).unwrap();
        assert_eq!(r.finalists, vec![0]);
        let err = race(vec![0, 1], 4, 1, |_| 0, |i, _| if i == 1 { Err("engine down") } else { Ok(0.0) });
        assert_eq!(err, Err("engine down"));
        let all = race::<()>(vec![2, 5], 4, 4, |_| 0, |_, _| Ok(0.0)).unwrap();
        assert_eq!((all.finalists, all.dropped.len()), (vec![2, 5], 0));
    }
}
