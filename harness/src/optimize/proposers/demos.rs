//! The `demos` proposer: candidates that add worked examples, drawn from the train examples
//! the current prompt gets wrong.
//!
//! Deterministic for a given seed and iteration: the pool is the failing train examples in
//! split order (minus those already shown as demos), and each candidate is a random subset of
//! size K from a stream derived from `(seed, iteration)`. Only train examples enter a prompt;
//! the function never sees dev or test.

use super::{Context, Proposed, Proposer};
use crate::config::DemoExcerpt;
use crate::eval::ExampleRecord;
use crate::optimize::events::Observer;
use crate::optimize::log::RunLog;
use crate::optimize::prompt::{Demo, Prompt};
use crate::optimize::OptimizeError;
use crate::task::Example;
use engines::SplitMix64;

/// The `demos` proposer: `candidates` prompts, each the current one plus `k` demos.
#[derive(Debug, Clone)]
pub struct DemosProposer {
    pub candidates: usize,
    pub k: usize,
    pub seed: u64,
    pub excerpt: DemoExcerpt,
}

impl Proposer for DemosProposer {
    fn propose(&mut self, ctx: &Context<'_>, _log: &mut RunLog, _obs: &mut dyn Observer) -> Result<Proposed, OptimizeError> {
        let pool = failing_pool(ctx.current, ctx.train, ctx.current_train);
        // More draws than candidates, so that a demo set drawn twice, or proposed in an earlier
        // iteration, gives way to the next draw (the first draws are the same as without).
        let draws = propose_with(ctx.current, &pool, self.candidates * 8, self.k, self.seed, ctx.iteration, self.excerpt);
        let mut seen = std::collections::HashSet::new();
        let prompts = draws
            .into_iter()
            .filter(|p| {
                let sha = p.sha256();
                !ctx.seen.contains(&sha) && seen.insert(sha)
            })
            .take(self.candidates)
            .collect();
        Ok(Proposed::offline(prompts))
    }

    fn exhausted(&self, proposed: &Proposed) -> Option<String> {
        proposed.candidates.is_empty().then(|| "no failing train example left to draw demos from".to_owned())
    }
}

/// Train examples eligible as demos: scored below 1 by the current prompt and not already one
/// of its demos. `records` are the current prompt's records of `train`, matched by id.
pub fn failing_pool<'a>(current: &Prompt, train: &'a [Example], records: &[ExampleRecord]) -> Vec<&'a Example> {
    train
        .iter()
        .filter(|ex| records.iter().any(|r| r.id == ex.id && r.score < 1.0))
        .filter(|ex| current.demos.iter().all(|d| d.id != ex.id))
        .collect()
}

/// `count` candidates, each `current` plus `k` demos drawn from `pool` (fewer when the pool is
/// smaller). Empty when the pool is empty.
pub fn propose(current: &Prompt, pool: &[&Example], count: usize, k: usize, seed: u64, iteration: usize) -> Vec<Prompt> {
    propose_with(current, pool, count, k, seed, iteration, DemoExcerpt::Head)
}

/// [`propose`] with demos showing the `excerpt` part of their documents.
pub fn propose_with(
    current: &Prompt,
    pool: &[&Example],
    count: usize,
    k: usize,
    seed: u64,
    iteration: usize,
    excerpt: DemoExcerpt,
) -> Vec<Prompt> {
    let demo = match excerpt {
        DemoExcerpt::Head => Demo::from_example,
        DemoExcerpt::Evidence => Demo::around_evidence,
    };
    if pool.is_empty() || k == 0 {
        return Vec::new();
    }
    let mut rng = SplitMix64::derive(seed, "demos", iteration as u64);
    (0..count)
        .map(|_| {
            let mut picks = rng.sample_indices(pool.len(), k);
            // Split order, so a candidate's text does not depend on draw order.
            picks.sort_unstable();
            let mut candidate = current.clone();
            candidate.demos.extend(picks.into_iter().map(|i| demo(pool[i])));
            candidate
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::eval::ExampleRecord;
    use crate::task::Framing;
    use engines::{Timings, TokenCounts};

    pub(crate) fn example(id: &str) -> Example {
        Example { id: id.into(), text: format!("text of {id}"), expected: serde_json::json!({"id": id}), line: 1 }
    }

    pub(crate) fn record(id: &str, score: f64) -> ExampleRecord {
        ExampleRecord {
            id: id.into(),
            line: 1,
            output: String::new(),
            stop: None,
            error: None,
            error_detail: None,
            score,
            format_ok: true,
            format_error: None,
            truncated: false,
            fields: Vec::new(),
            tokens: TokenCounts::default(),
            timings: Timings::default(),
            peak_rss_bytes: 0,
            batch_size: 1,
            batch_id: 0,
            input_chunks: None,
            input_truncated: false,
            prefix_cache: None,
            engine: None,
        }
    }

    #[test]
    fn demos_come_only_from_failing_train_examples() {
        let train: Vec<Example> = ["t1", "t2", "t3", "t4"].map(example).to_vec();
        let records = vec![record("t1", 1.0), record("t2", 0.5), record("t3", 0.0), record("t4", 0.75)];
        let mut current = Prompt::new("Extract.", Framing::default());
        current.demos.push(Demo::from_example(&train[3]));
        let pool = failing_pool(&current, &train, &records);
        let ids: Vec<&str> = pool.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["t2", "t3"]);
        // Dev records (other ids) never put a dev example in the pool.
        let dev_records = vec![record("d1", 0.0)];
        assert!(failing_pool(&current, &train, &dev_records).is_empty());
        for c in propose(&current, &pool, 5, 1, 0, 0) {
            assert_eq!(c.demos.len(), 2);
            assert_eq!(c.demos[0].id, "t4");
            assert!(["t2", "t3"].contains(&c.demos[1].id.as_str()));
        }
    }

    #[test]
    fn a_candidate_never_shows_the_scored_example_its_own_demo() {
        let train: Vec<Example> = (0..6).map(|i| example(&format!("t{i}"))).collect();
        let pool: Vec<&Example> = train.iter().collect();
        for c in propose(&Prompt::new("Extract.", Framing::default()), &pool, 8, 2, 42, 1) {
            for ex in &train {
                let text = c.render_for(&ex.id);
                assert!(!text.contains(&ex.text), "{} shown its own text", ex.id);
                assert!(!text.contains(&format!("\"id\":\"{}\"", ex.id)), "{} shown its own answer", ex.id);
            }
        }
    }

    #[test]
    fn proposals_are_deterministic_per_seed_and_iteration() {
        let train: Vec<Example> = (0..10).map(|i| example(&format!("t{i}"))).collect();
        let pool: Vec<&Example> = train.iter().collect();
        let p = Prompt::new("Extract.", Framing::default());
        let ids = |v: Vec<Prompt>| v.iter().map(Prompt::demo_ids).collect::<Vec<_>>();
        assert_eq!(ids(propose(&p, &pool, 4, 2, 9, 0)), ids(propose(&p, &pool, 4, 2, 9, 0)));
        assert_ne!(ids(propose(&p, &pool, 4, 2, 9, 0)), ids(propose(&p, &pool, 4, 2, 9, 1)));
        assert!(propose(&p, &[], 4, 2, 9, 0).is_empty());
    }
}
