//! How the search runs ([`SearchOptions`]: optimizer, proposer schedule, caps, gates), its
//! defaults (what `promptloop optimize` runs without flags), its checks, and the eval budget.

use serde::{Deserialize, Serialize};

use super::{Accept, ConfigError, DemoExcerpt, ProposerKind, Racing, Schedule, SearchMode};
use crate::llm::prices::PriceTable;
use crate::llm::OptimizerSpec;

/// How the search runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default = "super::legacy::search_options")]
pub struct SearchOptions {
    #[serde(with = "super::legacy::as_text")]
    pub optimizer: OptimizerSpec,
    /// Proposers used in turn (iteration i uses entry i mod len).
    #[serde(with = "super::legacy::as_text")]
    pub proposer: Schedule,
    /// Worst train examples shown to the optimizer.
    pub worst: usize,
    /// Sampling temperature of `rewrite` calls (`opro` uses 1.0).
    pub temperature: f32,
    /// Output token cap of one optimizer call.
    pub optimizer_max_tokens: u32,
    /// Leakage guard: words per n-gram and the share of copied n-grams that rejects.
    pub leak_ngram: usize,
    pub leak_threshold: f64,
    /// Caps: the loop stops before a call that could cross them.
    pub max_cost: Option<f64>,
    pub max_optimizer_tokens: Option<u64>,
    /// Wall-clock budget of one process (seconds), checked before each iteration and call.
    pub time_budget_s: Option<f64>,
    pub max_iterations: usize,
    /// Candidates per iteration.
    pub candidates: usize,
    /// Demos added per candidate (K).
    pub demos: usize,
    /// What part of its document a demo shows.
    pub demo_excerpt: DemoExcerpt,
    /// Where each iteration's proposals start from: the incumbent, or a Pareto-frontier member.
    pub search: SearchMode,
    pub seed: u64,
    pub accept: Accept,
    pub confidence: f64,
    /// Dev (held out): how far a candidate's mean may fall below the current prompt's and
    /// still be accepted (non-inferiority margin; 0: not at all).
    pub dev_margin: f64,
    /// Cap on evaluations (rollouts: one example scored under one prompt, logged or run): the
    /// loop stops before an iteration that could cross it, keeping room for the test split.
    pub max_evals: Option<usize>,
    /// Candidates whose instruction takes more prompt tokens are rejected before any eval.
    pub max_prompt_tokens: Option<usize>,
    /// How candidates are evaluated on train.
    pub racing: Racing,
    pub limit_train: Option<usize>,
    pub limit_dev: Option<usize>,
    pub limit_test: Option<usize>,
}

impl Default for SearchOptions {
    /// What `promptloop optimize` runs when no flag says otherwise (the CLI reads these).
    fn default() -> Self {
        let optimizer = OptimizerSpec::None;
        SearchOptions {
            proposer: Schedule::default_for(&optimizer),
            optimizer,
            worst: 5,
            temperature: 0.7,
            optimizer_max_tokens: 1024,
            leak_ngram: 8,
            leak_threshold: 0.10,
            max_cost: None,
            max_optimizer_tokens: None,
            time_budget_s: None,
            max_iterations: 4,
            candidates: 4,
            demos: 2,
            demo_excerpt: DemoExcerpt::Evidence,
            search: SearchMode::Greedy,
            seed: 0,
            accept: Accept::Bootstrap,
            confidence: 0.9,
            dev_margin: 0.0,
            max_evals: None,
            max_prompt_tokens: None,
            racing: Racing::Halving,
            limit_train: None,
            limit_dev: None,
            limit_test: None,
        }
    }
}

impl SearchOptions {
    /// Whether some iteration calls the optimizer model.
    pub fn needs_llm(&self) -> bool {
        self.proposer.0.iter().any(|k| k.needs_llm())
    }

    /// The search half of [`RunConfig::validate`].
    ///
    /// # Errors
    /// The first bad value, naming its flag.
    pub fn validate(&self, prices: &PriceTable) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.optimizer.is_none() {
            if let Some(k) = self.proposer.0.iter().find(|k| k.needs_llm()) {
                return bad(format!(
                    "--proposer {}: `{}` needs an optimizer model; pass --optimizer openai:MODEL, anthropic:MODEL or local:PATH (or use --proposer demos)",
                    self.proposer,
                    k.as_str()
                ));
            }
        }
        if self.candidates == 0 {
            return bad("--candidates must be at least 1".into());
        }
        if self.demos == 0 && self.proposer.0.contains(&ProposerKind::Demos) {
            return bad("--demos must be at least 1".into());
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return bad("--confidence must be between 0 and 1 (exclusive)".into());
        }
        if !(0.0..=1.0).contains(&self.dev_margin) {
            return bad("--dev-margin must be between 0 and 1 (a drop in mean dev score)".into());
        }
        if self.max_prompt_tokens == Some(0) {
            return bad("--max-prompt-tokens must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.leak_threshold) {
            return bad("--leak-threshold must be between 0 and 1".into());
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("--temperature must be between 0 and 2".into());
        }
        if self.optimizer_max_tokens == 0 {
            return bad("--optimizer-max-tokens must be at least 1".into());
        }
        if let Some(c) = self.max_cost {
            if !(c >= 0.0 && c.is_finite()) {
                return bad("--max-cost must be a non-negative number of USD".into());
            }
            if prices.lookup(&self.optimizer).is_none() {
                return bad(format!(
                    "--max-cost: no price is known for `{}` in {}; add it to a price table (--prices FILE) or cap tokens with --max-optimizer-tokens",
                    self.optimizer, prices.source
                ));
            }
        }
        Ok(())
    }
}

/// Evaluations a run needs at most, by the sizes of its splits (after the limits): the
/// baseline on train and dev, `iterations` iterations of every candidate on all of train plus
/// one finalist on dev, and baseline and best on test. Racing and the eval cache only lower it.
pub fn evals_needed(train: usize, dev: usize, test: usize, candidates: usize, iterations: usize) -> usize {
    train + dev + iterations * (candidates * train + dev) + 2 * test
}

impl SearchOptions {
    /// How many iterations `--max-evals` allows on splits of these sizes (all when uncapped).
    pub fn iterations_within_budget(&self, train: usize, dev: usize, test: usize) -> usize {
        let Some(cap) = self.max_evals else { return self.max_iterations };
        let fixed = evals_needed(train, dev, test, self.candidates, 0);
        let per = self.candidates * train + dev;
        if cap < fixed || per == 0 {
            return 0;
        }
        ((cap - fixed) / per).min(self.max_iterations)
    }

    /// Whether another iteration fits `--max-evals` after `used` evaluations (those the run log
    /// holds, so a resumed run counts what it ran before): its worst case (every candidate on
    /// all of train, the finalist on dev) plus baseline and best on test. The budget counts
    /// evaluations actually run, so racing, the eval cache and candidates dropped unscored
    /// leave room for more iterations; the run never exceeds the cap.
    pub fn next_iteration_fits(&self, used: usize, train: usize, dev: usize, test: usize) -> bool {
        self.max_evals.is_none_or(|cap| used + self.candidates * train + dev + 2 * test <= cap)
    }

    /// With `--max-evals`: an error when the budget allows fewer than 3 proposals (candidates
    /// evaluated) on splits of these sizes, naming the budget it needs.
    ///
    /// # Errors
    /// The budget is too small.
    pub fn check_budget(&self, train: usize, dev: usize, test: usize) -> Result<(), ConfigError> {
        let Some(cap) = self.max_evals else { return Ok(()) };
        let iterations = 3usize.div_ceil(self.candidates.max(1));
        let needed = evals_needed(train, dev, test, self.candidates, iterations);
        if cap < needed {
            return Err(ConfigError(format!(
                "--max-evals {cap} allows fewer than 3 proposals here (train {train}, dev {dev}, test {test}, {} candidates per iteration); it needs at least {needed}",
                self.candidates
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eval_budget_is_counted_in_rollouts_and_refused_below_three_proposals() {
        let mut s = SearchOptions { candidates: 2, max_iterations: 10, ..SearchOptions::default() };
        // Baseline 8 + 4, test 2 x 3, one iteration 2 x 8 + 4 = 20.
        assert_eq!(evals_needed(8, 4, 3, 2, 1), 8 + 4 + 20 + 6);
        assert_eq!(s.iterations_within_budget(8, 4, 3), 10);
        s.max_evals = Some(18 + 2 * 20 + 5);
        assert_eq!(s.iterations_within_budget(8, 4, 3), 2);
        assert_eq!(s.check_budget(8, 4, 3), Ok(()), "2 iterations of 2 candidates: 4 proposals");
        s.max_evals = Some(18 + 20);
        let err = s.check_budget(8, 4, 3).unwrap_err().0;
        assert!(err.contains("fewer than 3 proposals") && err.contains("it needs at least 58"), "{err}");
        s.max_evals = Some(10);
        assert_eq!(s.iterations_within_budget(8, 4, 3), 0);
        // The loop counts evaluations actually run: 2 candidates on 8 train + 4 dev + 6 test.
        let s = SearchOptions { max_evals: Some(100), candidates: 2, ..SearchOptions::default() };
        assert!(s.next_iteration_fits(74, 8, 4, 3));
        assert!(!s.next_iteration_fits(75, 8, 4, 3));
        assert!(SearchOptions { max_evals: None, ..s }.next_iteration_fits(usize::MAX / 2, 8, 4, 3));
    }
}
