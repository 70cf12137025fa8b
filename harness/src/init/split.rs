//! The deterministic train/dev/test split of `init`.
//!
//! Records are ordered by the SHA-256 of their id (so the split depends on the ids only, not on
//! the file order or the machine), grouped by the value of the stratification field when there
//! is one, and dealt out so that every prefix of that order is split as close to the target
//! proportions as whole records allow: each stratum ends up split about 60/20/20 too.
//!
//! The stratification field is the most informative categorical one: among enum and boolean
//! fields whose values (null included) each occur at least twice, the one with the highest
//! entropy of its value distribution (the first such field on a tie).

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::infer::{FieldPlan, Kind, Matcher};
use super::{InitError, Record};

/// Explicit split sizes (`--train N --dev N --test N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub train: usize,
    pub dev: usize,
    pub test: usize,
}

/// Split names, in the order of [`assign`]'s result.
pub const SPLITS: [&str; 3] = ["train", "dev", "test"];

/// The default proportions, in percent.
const DEFAULT_PERCENT: [usize; 3] = [60, 20, 20];

/// Which field to stratify by, if any (see the module docs).
pub fn stratum_field(plan: &[FieldPlan], records: &[Record]) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for f in plan {
        let categorical = f.matcher == Matcher::Enum || f.kind == Some(Kind::Boolean);
        if !categorical {
            continue;
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in records {
            *counts.entry(stratum_value(r, &f.name)).or_default() += 1;
        }
        if counts.len() < 2 || counts.values().any(|&n| n < 2) {
            continue;
        }
        let n = records.len() as f64;
        let entropy: f64 = counts.values().map(|&c| -(c as f64 / n) * (c as f64 / n).log2()).sum();
        if best.is_none_or(|(e, _)| entropy > e + 1e-12) {
            best = Some((entropy, &f.name));
        }
    }
    best.map(|(_, name)| name.to_owned())
}

fn stratum_value(r: &Record, field: &str) -> String {
    r.gold.get(field).map_or_else(|| "null".to_owned(), ToString::to_string)
}

/// The split (index into [`SPLITS`]) of each record, in record order.
pub fn assign(
    records: &[Record],
    sizes: Option<Sizes>,
    stratum: Option<&str>,
    path: &Path,
) -> Result<Vec<Option<usize>>, InitError> {
    let n = records.len();
    let error = |message: String| InitError::Split { path: path.to_path_buf(), message };
    let targets = match sizes {
        Some(s) => {
            let want = [s.train, s.dev, s.test];
            if want.contains(&0) {
                return Err(error(format!(
                    "--train, --dev and --test must each be at least 1, got {}/{}/{}",
                    s.train, s.dev, s.test
                )));
            }
            let total: usize = want.iter().sum();
            if total > n {
                return Err(error(format!(
                    "--train {} --dev {} --test {} asks for {total} records, the file has {n}",
                    s.train, s.dev, s.test
                )));
            }
            want
        }
        None if n < 3 => return Err(error(format!("{n} records; a task needs at least 3 (one each for train, dev and test)"))),
        None => default_targets(n),
    };
    let used: usize = targets.iter().sum();

    let mut order: Vec<(String, [u8; 32], usize)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (stratum.map(|f| stratum_value(r, f)).unwrap_or_default(), hash(&r.id), i))
        .collect();
    // With explicit sizes, the records used are the first `used` by hash (whatever their stratum).
    order.sort_by_key(|a| a.1);
    order.truncate(used);
    order.sort();

    let mut out = vec![None; n];
    let mut counts = [0usize; 3];
    for (k, (_, _, i)) in order.iter().enumerate() {
        // The split furthest behind its share of the first k + 1 records, among those not full.
        let behind = |s: usize| (targets[s] * (k + 1)) as f64 / used as f64 - counts[s] as f64;
        let s = (0..3).filter(|&s| counts[s] < targets[s]).max_by(|&a, &b| behind(a).total_cmp(&behind(b)).then(b.cmp(&a)));
        let s = s.unwrap_or(0);
        counts[s] += 1;
        out[*i] = Some(s);
    }
    Ok(out)
}

/// 60/20/20 of `n` (n >= 3) by largest remainder, at least one record each.
fn default_targets(n: usize) -> [usize; 3] {
    let mut t = DEFAULT_PERCENT.map(|p| n * p / 100);
    let rest = n - t.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..3).collect();
    by_remainder.sort_by_key(|&s| std::cmp::Reverse((n * DEFAULT_PERCENT[s]) % 100));
    for &s in by_remainder.iter().cycle().take(rest) {
        t[s] += 1;
    }
    for s in 0..3 {
        if t[s] == 0 {
            let from = (0..3).max_by_key(|&x| t[x]).unwrap_or(0);
            t[from] -= 1;
            t[s] += 1;
        }
    }
    t
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_targets_cover_every_split() {
        assert_eq!(default_targets(3), [1, 1, 1]);
        assert_eq!(default_targets(5), [3, 1, 1]);
        assert_eq!(default_targets(10), [6, 2, 2]);
        assert_eq!(default_targets(38), [23, 8, 7]);
        for n in 3..200 {
            let t = default_targets(n);
            assert_eq!(t.iter().sum::<usize>(), n);
            assert!(t.iter().all(|&x| x >= 1), "{n}: {t:?}");
        }
    }
}
