//! The leakage guard: an LLM-written instruction that copies long spans of train documents
//! verbatim would teach the answers of those documents, not the task. Candidates whose word
//! n-grams overlap the train documents above a threshold are rejected (and logged) before any
//! eval.
//!
//! Words are lower-cased runs of letters and digits; an n-gram already in the current or the
//! baseline instruction does not count (the task's own prompt may quote a clause title).
//! Demos are exempt: they are shown on purpose, and never to their own example.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::outcome::Rejection;

/// How much of a candidate was found in the train documents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Overlap {
    /// The candidate's n-grams (not counting those of the allowed texts).
    pub ngrams: usize,
    /// Of those, found in a train document.
    pub copied: usize,
    /// `copied / ngrams` (0 when there are none).
    pub fraction: f64,
    /// The longest run of consecutive words found verbatim in train documents.
    pub longest_copied_words: usize,
}

/// N-grams of the train documents.
#[derive(Debug)]
pub struct Guard {
    n: usize,
    threshold: f64,
    train: HashSet<u64>,
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn grams(words: &[String], n: usize) -> impl Iterator<Item = u64> + '_ {
    words.windows(n).map(|w| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        w.hash(&mut h);
        h.finish()
    })
}

impl Guard {
    pub fn new<'a>(train_texts: impl IntoIterator<Item = &'a str>, n: usize, threshold: f64) -> Self {
        let n = n.max(2);
        let mut train = HashSet::new();
        for t in train_texts {
            train.extend(grams(&words(t), n));
        }
        Guard { n, threshold, train }
    }

    /// Overlap of `candidate` with the train documents, n-grams of `allowed` texts excluded.
    pub fn overlap(&self, candidate: &str, allowed: &[&str]) -> Overlap {
        let ok: HashSet<u64> = allowed.iter().flat_map(|a| grams(&words(a), self.n).collect::<Vec<_>>()).collect();
        let w = words(candidate);
        let hits: Vec<Option<bool>> = grams(&w, self.n).map(|g| (!ok.contains(&g)).then(|| self.train.contains(&g))).collect();
        let ngrams = hits.iter().filter(|h| h.is_some()).count();
        let copied = hits.iter().filter(|h| **h == Some(true)).count();
        // A run of k consecutive copied n-grams covers k + n - 1 words.
        let mut longest = 0;
        let mut run = 0;
        for h in &hits {
            run = if *h == Some(true) { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        Overlap {
            ngrams,
            copied,
            fraction: if ngrams == 0 { 0.0 } else { copied as f64 / ngrams as f64 },
            longest_copied_words: if longest == 0 { 0 } else { longest + self.n - 1 },
        }
    }

    /// The overlap, and a [`Rejection::Leakage`] when the candidate copies too much.
    pub fn check(&self, candidate: &str, allowed: &[&str]) -> (Overlap, Option<Rejection>) {
        let o = self.overlap(candidate, allowed);
        let leaks = o.copied > 0 && o.fraction > self.threshold;
        (o, leaks.then_some(Rejection::Leakage { fraction: o.fraction, ngram: self.n, threshold: self.threshold }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "This Distributor Agreement is made on March 3, 2015 between Acme Corporation, a Delaware \
        corporation, and Widget Holdings LLC, and shall be governed by the laws of the State of New York.";

    #[test]
    fn copied_spans_are_rejected_rules_are_not() {
        let d = crate::config::SearchOptions::default();
        let g = Guard::new([DOC], d.leak_ngram, d.leak_threshold);
        let rules = "Extract the parties as they sign. Write the agreement date as YYYY-MM-DD and use null when absent.";
        let (o, reason) = g.check(rules, &[]);
        assert_eq!(o.copied, 0);
        assert!(reason.is_none());
        let leaky = format!("Extract the fields. For example: {DOC} Output the JSON.");
        let (o, reason) = g.check(&leaky, &[]);
        assert!(o.copied > 10 && o.longest_copied_words >= 30, "{o:?}");
        assert!(matches!(reason, Some(Rejection::Leakage { ngram: 8, .. })), "{reason:?}");
        // Case and punctuation do not hide a copy.
        let (o, _) = g.check(&DOC.to_uppercase().replace(',', ";"), &[]);
        assert!((o.fraction - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ngrams_of_allowed_texts_do_not_count() {
        let g = Guard::new([DOC], 4, 0.1);
        let base = "shall be governed by the laws of the State";
        let cand = "Note: shall be governed by the laws of the State means governing law.";
        assert!(g.check(cand, &[]).1.is_some());
        let (o, reason) = g.check(cand, &[base]);
        assert!(reason.is_none(), "{o:?}");
    }
}
