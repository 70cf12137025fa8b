//! The optimize loop itself: evaluate (through the log), propose, race on train, gate on train,
//! gate on dev, log, repeat; then baseline against best on every split. The pieces live beside
//! it: [`Evaluator`], the proposers, [`gate`] and [`racing`] (pure functions), the events.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use engines::{ChatMessage, Engine};
use serde_json::Value;

use super::evaluator::{exact, mean_score, scores, EvalTarget, Evaluator};
use super::events::{Event, Observer};
use super::frontier::{self, Member};
use super::gate::{self, GateRule};
use super::leakage::Guard;
use super::log::RunLog;
use super::outcome::{Rejection, Verdict};
use super::prompt::Prompt;
use super::proposers::{Clock, Context, Proposed, Proposer, Registry};
use super::racing;
use super::records::{CandidateEntry, DecisionEntry, FinalEntry, GateEntry, IdScore, LogRecord, Spend, SplitRow};
use super::OptimizeError;
use crate::config::{ProposerKind, RunConfig, SearchMode};
use crate::eval::ExampleRecord;
use crate::llm::prices::Price;
use crate::task::{Example, Task};

/// The best prompt so far, in the run directory.
pub const BEST_PROMPT_FILE: &str = "best_prompt.txt";

/// Everything the loop needs besides the log and the proposers.
pub struct LoopInputs<'a> {
    pub task: &'a Task,
    pub engine: &'a dyn Engine,
    /// The constraint schema (possibly hardened with bounds); `None` = unconstrained.
    pub constraint: Option<&'a Value>,
    pub validator: &'a jsonschema::Validator,
    pub max_tokens: u32,
    pub config: &'a RunConfig,
    /// The run directory (holds `run.jsonl` and `best_prompt.txt`).
    pub out_dir: &'a Path,
    /// Price of the optimizer model; `None` when unknown (spend then counts tokens only).
    pub price: Option<Price>,
}

/// What a finished run returns.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary: FinalEntry,
    pub best_prompt: String,
    /// Evals run by this process (the rest came from the log).
    pub evals_run: usize,
    /// Optimizer calls made by this process (the rest came from the log).
    pub calls_made: usize,
}

/// Runs (or, on a resumed log, continues) the loop to its end. `optimizer` is the client of
/// the LLM proposers; a schedule holding one needs it unless every call is in the log.
pub fn run(
    setup: &LoopInputs<'_>,
    log: &mut RunLog,
    optimizer: Option<Box<dyn crate::llm::Optimizer>>,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, OptimizeError> {
    let search = &setup.config.search;
    let engine_key = log.header().engine_key.clone();
    let target = EvalTarget {
        task: setup.task,
        engine: setup.engine,
        constraint: setup.constraint,
        validator: setup.validator,
        max_tokens: setup.max_tokens,
        overflow: setup.config.engine.on_overflow,
    };
    let evaluator = Evaluator::new(target, engine_key);
    let train_texts = setup.task.split("train")?.examples.iter().map(|e| e.text.as_str());
    let mut lp = Loop {
        s: setup,
        log,
        obs: observer,
        evaluator,
        proposers: Registry::new(search, optimizer, setup.price),
        guard: Guard::new(train_texts, search.leak_ngram, search.leak_threshold),
        rule: GateRule { accept: search.accept, confidence: search.confidence, seed: search.seed, dev_margin: search.dev_margin },
        idle_spend: Spend { cost_usd: setup.price.map(|_| 0.0), ..Spend::default() },
        clock: Clock::start(search.time_budget_s),
        empty_prompt_tokens: None,
        seen: HashSet::new(),
    };
    lp.run()
}

struct Loop<'a, 'l> {
    s: &'a LoopInputs<'a>,
    log: &'l mut RunLog,
    obs: &'l mut dyn Observer,
    evaluator: Evaluator<'a>,
    proposers: Registry,
    guard: Guard,
    rule: GateRule,
    /// The spend when no LLM proposer runs.
    idle_spend: Spend,
    clock: Clock,
    /// Tokens of the chat template around an empty message.
    empty_prompt_tokens: Option<usize>,
    /// SHA-256 of every prompt proposed so far, the baseline's included: never scored twice.
    seen: HashSet<String>,
}

/// An iteration's finalist: its index, prompt, train records and prompt tokens.
type Finalist = (usize, Prompt, Vec<ExampleRecord>, usize);

/// The current prompt and its records.
struct Current {
    prompt: Prompt,
    train: Vec<ExampleRecord>,
    dev: Vec<ExampleRecord>,
}

impl Loop<'_, '_> {
    fn run(&mut self) -> Result<RunOutcome, OptimizeError> {
        let opts = &self.s.config.search;
        let task = self.s.task;
        let train = limit(&task.split("train")?.examples, opts.limit_train);
        let dev = limit(&task.split("dev")?.examples, opts.limit_dev);
        let test_len = task.splits.get("test").map_or(0, |t| limit(&t.examples, opts.limit_test).len());

        let baseline = Prompt::new(task.prompt.clone(), task.framing.clone());
        self.seen.insert(baseline.sha256());
        self.write_best(&baseline)?;
        let base_train = self.evaluate(&baseline, "train", train)?;
        let base_dev = self.evaluate(&baseline, "dev", dev)?;
        self.proposers.scored(&baseline, mean_score(&base_train));
        let mut cur = Current { prompt: baseline.clone(), train: base_train.clone(), dev: base_dev.clone() };
        // Every prompt scored on all of train, the baseline first: the Pareto frontier's pool.
        let mut pool = vec![Member { prompt: baseline.clone(), train: base_train.clone() }];
        // Proposers of the schedule that found nothing to propose since the last acceptance:
        // the loop stops when all of them have.
        let mut exhausted: Vec<ProposerKind> = Vec::new();
        let (mut iterations, mut accepted) = (0, 0);
        let mut stopped_by = "max iterations".to_owned();
        let min_detectable_gain = gate::min_detectable_gain(&self.rule, train.len());
        tracing::info!(train = train.len(), ?min_detectable_gain, "the gate's power");
        self.obs.event(&Event::Power { train: train.len(), min_detectable_gain });

        for it in 0..opts.max_iterations {
            self.progress(it, &cur);
            if let Some(reason) = self.out_of_budget(train.len(), dev.len(), test_len) {
                stopped_by = reason;
                break;
            }
            iterations = it + 1;
            let kind = opts.proposer.at(it);
            let proposed = self.propose(it, kind, &cur, &pool, train)?;
            let (finalist, scored_fully) = self.candidates(it, kind, &proposed, &cur, &baseline, train)?;
            for m in scored_fully {
                if pool.iter().all(|p| p.prompt != m.prompt) {
                    pool.push(m);
                }
            }
            let stop = match finalist {
                None => self.no_candidate(it, kind, &proposed, &mut exhausted)?,
                Some(finalist) => {
                    if let Some(next) = self.gate(it, finalist, &cur, dev)? {
                        cur = next;
                        accepted += 1;
                        exhausted.clear();
                        self.write_best(&cur.prompt)?;
                    }
                    proposed.stop.clone()
                }
            };
            if let Some(by) = stop {
                stopped_by = by;
                break;
            }
        }
        self.progress(iterations, &cur);
        self.finish(&baseline, &cur, (base_train, base_dev), (iterations, accepted), stopped_by, min_detectable_gain)
    }

    /// Why the loop stops before another iteration (the time budget, or `--max-evals` counted
    /// in evaluations actually run), or `None`.
    fn out_of_budget(&self, train: usize, dev: usize, test: usize) -> Option<String> {
        let opts = &self.s.config.search;
        if let Some(reason) = self.clock.time_up() {
            return Some(reason);
        }
        let used = self.log.evals_logged();
        let cap = opts.max_evals.filter(|_| !opts.next_iteration_fits(used, train, dev, test))?;
        Some(format!(
            "eval budget {cap}: {used} used, and another iteration could take {} evaluations, and baseline and best on test {}",
            opts.candidates * train + dev,
            2 * test
        ))
    }

    /// The iteration's proposal: from the current prompt, or with `--search pareto` from a
    /// frontier member (the gate still compares with the incumbent), its parent recorded.
    fn propose(
        &mut self,
        it: usize,
        kind: ProposerKind,
        cur: &Current,
        pool: &[Member],
        train: &[Example],
    ) -> Result<Proposed, OptimizeError> {
        let opts = &self.s.config.search;
        let parent = match opts.search {
            SearchMode::Greedy => None,
            SearchMode::Pareto => Some(frontier::pick_parent(pool, opts.seed, it)).filter(|&m| pool[m].prompt != cur.prompt),
        };
        let (current, current_train) = match parent {
            Some(m) => (&pool[m].prompt, pool[m].train.as_slice()),
            None => (&cur.prompt, cur.train.as_slice()),
        };
        let ctx = Context {
            iteration: it,
            kind,
            task: self.s.task,
            current,
            current_train,
            pool,
            seen: &self.seen,
            train,
            clock: self.clock,
        };
        let mut proposed = self.proposers.get(kind)?.propose(&ctx, self.log, self.obs)?;
        if let Some(m) = parent {
            let sha = pool[m].prompt.sha256();
            for c in &mut proposed.candidates {
                c.parent_sha256.get_or_insert_with(|| sha.clone());
            }
        }
        Ok(proposed)
    }

    /// An iteration without a finalist: logs its decision and returns why the loop stops, when
    /// every proposer of the schedule has run out.
    fn no_candidate(
        &mut self,
        it: usize,
        kind: ProposerKind,
        proposed: &Proposed,
        exhausted: &mut Vec<ProposerKind>,
    ) -> Result<Option<String>, OptimizeError> {
        let why = self.proposer(kind)?.exhausted(proposed);
        if why.is_some() && !exhausted.contains(&kind) {
            exhausted.push(kind);
        }
        let all_exhausted = self.s.config.search.proposer.0.iter().all(|k| exhausted.contains(k));
        let (verdict, reason) = match why {
            Some(why) if all_exhausted => {
                let reason = format!("stopped: {why}");
                (Verdict::Stopped { by: proposed.stop.clone().unwrap_or_else(|| reason.clone()) }, reason)
            }
            Some(why) => (
                Verdict::NoCandidate { failed_calls: proposed.failed },
                format!("rejected: no candidate ({why}); the other proposers of the schedule go on"),
            ),
            None => (
                Verdict::NoCandidate { failed_calls: proposed.failed },
                format!("rejected: no usable candidate ({} optimizer calls failed)", proposed.failed),
            ),
        };
        let stop = match &verdict {
            Verdict::Stopped { by } => Some(by.clone()),
            _ => None,
        };
        self.decide(DecisionEntry {
            iteration: it,
            candidate: None,
            prompt_sha256: None,
            accepted: false,
            verdict,
            reason,
            train: None,
            dev: None,
        })?;
        Ok(stop)
    }

    /// The gate on the iteration's finalist: a confirmed gain on train and no loss on dev
    /// (accepted), or, without a confirmed gain, a train mean no lower with fewer prompt tokens
    /// and a dev mean no lower at all (kept as shorter). Logs the decision; returns the new
    /// current prompt when it is kept.
    fn gate(&mut self, it: usize, finalist: Finalist, cur: &Current, dev: &[Example]) -> Result<Option<Current>, OptimizeError> {
        let (index, cand, cand_train, cand_tokens) = finalist;
        let train_gate = gate::compare(&self.rule, &scores(&cand_train), &scores(&cur.train), "train-gate", it);
        let mut decision = DecisionEntry {
            iteration: it,
            candidate: Some(index),
            prompt_sha256: Some(cand.sha256()),
            accepted: false,
            verdict: Verdict::NoTrainGain,
            reason: gate::no_gain_reason(&train_gate),
            train: Some(train_gate.clone()),
            dev: None,
        };
        let gains = gate::gains(&train_gate);
        // No gain the gate can confirm, no loss on train either, and cheaper: kept if dev does
        // not fall at all (no margin: quality is never traded for tokens).
        let shorter = if gains { None } else { self.shorter_within_noise(&train_gate, cand_tokens, &cur.prompt)? };
        let mut kept = None;
        if gains || shorter.is_some() {
            let cand_dev = self.evaluate(&cand, "dev", dev)?;
            let dev_gate = gate::compare(&self.rule, &scores(&cand_dev), &scores(&cur.dev), "dev-gate", it);
            let margin = if gains { self.rule.dev_margin } else { 0.0 };
            match (gate::overfits(&dev_gate, margin), shorter) {
                (true, None) => {
                    decision.verdict = Verdict::Overfit;
                    decision.reason = gate::overfit_reason(&dev_gate, margin);
                }
                (true, Some(was)) => {
                    decision.reason = format!(
                        "{}; {cand_tokens} prompt tokens instead of {was}, but lower on dev (dev mean {:.4} vs {:.4})",
                        decision.reason, dev_gate.candidate_mean, dev_gate.current_mean
                    );
                }
                (false, shorter) => {
                    (decision.verdict, decision.reason) = match shorter {
                        None => (Verdict::Accepted, "accepted".into()),
                        Some(was) => (
                            Verdict::Shorter { tokens: cand_tokens, was },
                            format!("accepted: as good on train and dev with {cand_tokens} prompt tokens instead of {was}"),
                        ),
                    };
                    decision.accepted = true;
                    kept = Some(Current { prompt: cand, train: cand_train, dev: cand_dev });
                }
            }
            decision.dev = Some(dev_gate);
        }
        self.decide(decision)?;
        Ok(kept)
    }

    /// Baseline against best on every split (test only now, once), the `final` record, and the
    /// run's outcome.
    fn finish(
        &mut self,
        baseline: &Prompt,
        cur: &Current,
        (base_train, base_dev): (Vec<ExampleRecord>, Vec<ExampleRecord>),
        (iterations, accepted): (usize, usize),
        stopped_by: String,
        min_detectable_gain: Option<f64>,
    ) -> Result<RunOutcome, OptimizeError> {
        let task = self.s.task;
        let mut rows = vec![row("train", &base_train, &cur.train), row("dev", &base_dev, &cur.dev)];
        if let Some(test) = task.splits.get("test") {
            let test = limit(&test.examples, self.s.config.search.limit_test);
            let base_test = self.evaluate(baseline, "test", test)?;
            let best_test = self.evaluate(&cur.prompt, "test", test)?;
            rows.push(row("test", &base_test, &best_test));
        }
        let summary = FinalEntry {
            iterations,
            accepted,
            baseline_sha256: baseline.sha256(),
            best_sha256: cur.prompt.sha256(),
            best_demo_ids: cur.prompt.demo_ids(),
            stopped_by,
            min_detectable_gain,
            prompt_tokens: Some((self.prompt_tokens(baseline)?, self.prompt_tokens(&cur.prompt)?)),
            spend: self.spend().clone(),
            rows,
        };
        self.log.emit(&LogRecord::Final(summary.clone()))?;
        Ok(RunOutcome {
            summary,
            best_prompt: cur.prompt.text(),
            evals_run: self.log.evals_run(),
            calls_made: self.proposers.calls_made(),
        })
    }

    fn proposer(&mut self, kind: ProposerKind) -> Result<&mut dyn Proposer, OptimizeError> {
        self.proposers.get(kind)
    }

    fn spend(&self) -> &Spend {
        self.proposers.spend().unwrap_or(&self.idle_spend)
    }

    /// Screens the iteration's candidates (leakage, duplicates), races the rest on train, logs
    /// every candidate, and returns the finalist with the best train mean and its records, and
    /// every candidate scored on all of train (for the frontier's pool).
    fn candidates(
        &mut self,
        it: usize,
        kind: ProposerKind,
        proposed: &Proposed,
        cur: &Current,
        baseline: &Prompt,
        train: &[Example],
    ) -> Result<(Option<Finalist>, Vec<Member>), OptimizeError> {
        let mut entries: Vec<(CandidateEntry, Prompt)> = Vec::new();
        for (index, c) in proposed.candidates.iter().enumerate() {
            let cand = &c.prompt;
            let mut entry = CandidateEntry {
                iteration: it,
                index,
                proposer: kind.as_str().to_owned(),
                prompt_sha256: cand.sha256(),
                prompt: cand.text(),
                demo_ids: cand.demo_ids(),
                request_sha256: c.request_sha256.clone(),
                parent_sha256: c.parent_sha256.clone(),
                rejected: None,
                overlap: None,
                prompt_tokens: Some(self.prompt_tokens(cand)?),
                train_mean: 0.0,
                scores: Vec::new(),
            };
            if kind.needs_llm() {
                let (overlap, leak) = self.guard.check(&cand.base, &[&cur.prompt.base, &baseline.base]);
                entry.overlap = Some(overlap);
                entry.rejected = leak;
                if entry.rejected.is_none() && cand.base.trim() == cur.prompt.base.trim() {
                    entry.rejected = Some(Rejection::Duplicate);
                }
            }
            // A prompt proposed before (in any iteration, by any proposer) is not scored again.
            if entry.rejected.is_none() && !self.seen.insert(entry.prompt_sha256.clone()) {
                entry.rejected = Some(Rejection::Duplicate);
            }
            if let (None, Some(max), Some(tokens)) =
                (&entry.rejected, self.s.config.search.max_prompt_tokens, entry.prompt_tokens)
            {
                if tokens > max {
                    entry.rejected = Some(Rejection::PromptTooLong { tokens, max });
                }
            }
            entries.push((entry, cand.clone()));
        }

        let n = train.len();
        let alive: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].0.rejected.is_none()).collect();
        let first = racing::first_rung(self.s.config.search.racing, alive.len(), n, self.evaluator.batch());
        let mut last: HashMap<usize, Vec<ExampleRecord>> = HashMap::new();
        let tokens: Vec<usize> = entries.iter().map(|(e, _)| e.prompt_tokens.unwrap_or(0)).collect();
        let result = racing::race(
            alive,
            n,
            first,
            |i| tokens[i],
            |i, size| {
                let recs = self.evaluator.evaluate(self.log, self.obs, &entries[i].1, "train", &train[..size])?;
                let entry = &mut entries[i].0;
                entry.train_mean = mean_score(&recs);
                entry.scores = recs.iter().map(|r| IdScore { id: r.id.clone(), score: r.score }).collect();
                let gain = mean_score(&recs) - mean_score(&cur.train[..size]);
                last.insert(i, recs);
                Ok::<f64, OptimizeError>(gain)
            },
        )?;
        for (i, why) in result.dropped {
            entries[i].0.rejected = Some(why);
        }

        let mut best: Option<Finalist> = None;
        let mut full = Vec::new();
        for (i, (entry, cand)) in entries.into_iter().enumerate() {
            let index = entry.index;
            if !entry.scores.is_empty() {
                // Every proposer learns from every scored candidate, whoever proposed it.
                self.proposers.scored(&cand, entry.train_mean);
            }
            self.candidate(entry)?;
            if result.finalists.contains(&i) {
                let recs = last.remove(&i).unwrap_or_default();
                if recs.len() == n {
                    full.push(Member { prompt: cand.clone(), train: recs.clone() });
                }
                // The best train mean; of equal ones, the fewest prompt tokens.
                let better = |b: &Finalist| {
                    let (m, bm) = (mean_score(&recs), mean_score(&b.2));
                    m > bm + 1e-12 || ((m - bm).abs() <= 1e-12 && tokens[i] < b.3)
                };
                if best.as_ref().is_none_or(better) {
                    best = Some((index, cand, recs, tokens[i]));
                }
            }
        }
        Ok((best, full))
    }

    /// The current prompt's tokens when a candidate that showed no confirmed gain on train
    /// (`train`) is still within noise of it (a mean no lower) and has fewer prompt tokens;
    /// `None` otherwise.
    fn shorter_within_noise(
        &mut self,
        train: &GateEntry,
        tokens: usize,
        current: &Prompt,
    ) -> Result<Option<usize>, OptimizeError> {
        if train.candidate_mean < train.current_mean - 1e-12 {
            return Ok(None);
        }
        let was = self.prompt_tokens(current)?;
        Ok((tokens < was).then_some(was))
    }

    /// Tokens the prompt's instruction (demos included) adds to a prompt: the chat template
    /// applied to it alone, less the template applied to nothing.
    fn prompt_tokens(&mut self, prompt: &Prompt) -> Result<usize, OptimizeError> {
        let count = |text: String| self.s.engine.count_tokens(&[ChatMessage::user(text)]);
        let empty = if let Some(n) = self.empty_prompt_tokens {
            n
        } else {
            let n = count(String::new()).map_err(OptimizeError::Engine)?;
            self.empty_prompt_tokens = Some(n);
            n
        };
        Ok(count(prompt.text()).map_err(OptimizeError::Engine)?.saturating_sub(empty))
    }

    fn evaluate(&mut self, prompt: &Prompt, split: &str, examples: &[Example]) -> Result<Vec<ExampleRecord>, OptimizeError> {
        self.evaluator.evaluate(self.log, self.obs, prompt, split, examples)
    }

    fn progress(&mut self, iteration: usize, cur: &Current) {
        let e = Event::Progress {
            iteration,
            max_iterations: self.s.config.search.max_iterations,
            best_train: mean_score(&cur.train),
            best_dev: mean_score(&cur.dev),
            spend: self.spend().clone(),
            elapsed_s: self.clock.elapsed_s(),
        };
        self.obs.event(&e);
    }

    fn candidate(&mut self, entry: CandidateEntry) -> Result<(), OptimizeError> {
        tracing::info!(iteration = entry.iteration, index = entry.index, train_mean = entry.train_mean, rejected = ?entry.rejected, "candidate");
        self.obs.event(&Event::Candidate {
            iteration: entry.iteration,
            index: entry.index,
            proposer: entry.proposer.clone(),
            prompt_sha256: entry.prompt_sha256.clone(),
            train_mean: entry.train_mean,
            rejected: entry.rejected.clone(),
        });
        self.log.emit(&LogRecord::Candidate(entry))?;
        Ok(())
    }

    fn decide(&mut self, d: DecisionEntry) -> Result<(), OptimizeError> {
        tracing::info!(iteration = d.iteration, reason = %d.reason, "decision");
        self.obs.event(&Event::Decision {
            iteration: d.iteration,
            accepted: d.accepted,
            verdict: d.verdict.clone(),
            reason: d.reason.clone(),
        });
        self.log.emit(&LogRecord::Decision(d))?;
        Ok(())
    }

    /// Writes `best_prompt.txt` through a temp file and a rename.
    fn write_best(&self, prompt: &Prompt) -> Result<(), OptimizeError> {
        let dir = self.s.out_dir;
        let path = dir.join(BEST_PROMPT_FILE);
        let tmp = dir.join(format!("{BEST_PROMPT_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            fs_err::write(&tmp, prompt.text())?;
            fs_err::rename(&tmp, &path)
        };
        write().map_err(|error| OptimizeError::Write { path: path.clone(), error })
    }
}

fn limit(examples: &[Example], n: Option<usize>) -> &[Example] {
    match n {
        Some(n) => &examples[..n.min(examples.len())],
        None => examples,
    }
}

fn row(split: &str, baseline: &[ExampleRecord], best: &[ExampleRecord]) -> SplitRow {
    SplitRow {
        split: split.into(),
        examples: baseline.len(),
        baseline_mean: mean_score(baseline),
        baseline_exact: exact(baseline),
        best_mean: mean_score(best),
        best_exact: exact(best),
    }
}
