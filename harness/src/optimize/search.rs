//! The optimize loop itself: evaluate (through the cache), propose, gate on train, gate on
//! dev, log, repeat; then baseline against best on every split.

use std::path::Path;

use engines::Engine;
use serde_json::Value;

use super::bootstrap::{self, Interval, RESAMPLES};
use super::cache::CacheKey;
use super::demos;
use super::log::{LogError, RunLog};
use super::prompt::{sha256_hex, Prompt};
use super::records::{
    CandidateEntry, DecisionEntry, EvalEntry, FinalEntry, GateEntry, IdScore, LogRecord, SplitRow,
};
use super::rng::SplitMix64;
use super::{Accept, OptimizeError, Options};
use crate::eval::{self, EvalSpec, ExampleRecord, PromptSpec, Reporter};
use crate::task::{Example, Task};

/// The best prompt so far, in the run directory.
pub const BEST_PROMPT_FILE: &str = "best_prompt.txt";

/// Everything the loop needs besides the log.
pub struct Setup<'a> {
    pub task: &'a Task,
    pub engine: &'a dyn Engine,
    /// The constraint schema (possibly hardened with bounds); `None` = unconstrained.
    pub constraint: Option<&'a Value>,
    pub validator: &'a jsonschema::Validator,
    pub max_tokens: u32,
    pub options: &'a Options,
    /// The run directory (holds `run.jsonl` and `best_prompt.txt`).
    pub out_dir: &'a Path,
}

/// Receives one line per step (evals, candidates, decisions), for the terminal.
pub trait Observer {
    fn note(&mut self, _line: &str) {}
}

/// What a finished run returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: FinalEntry,
    pub best_prompt: String,
    /// Evals run by this process (the rest came from the log).
    pub evals_run: usize,
}

/// Runs (or, on a resumed log, continues) the loop to its end.
pub fn run(setup: &Setup<'_>, log: &mut RunLog, observer: &mut dyn Observer) -> Result<Outcome, OptimizeError> {
    let engine_key = log.header().engine_key.clone();
    let batch = setup.engine.info().capabilities.max_batch.max(1);
    let mut lp = Loop { s: setup, log, obs: observer, engine_key, batch };
    lp.run()
}

struct Loop<'a, 'l> {
    s: &'a Setup<'a>,
    log: &'l mut RunLog,
    obs: &'l mut dyn Observer,
    engine_key: String,
    batch: usize,
}

impl Loop<'_, '_> {
    fn run(&mut self) -> Result<Outcome, OptimizeError> {
        let opts = self.s.options;
        let task = self.s.task;
        let train = limit(&task.split("train")?.examples, opts.limit_train);
        let dev = limit(&task.split("dev")?.examples, opts.limit_dev);

        let baseline = Prompt::new(task.prompt.clone());
        let mut current = baseline.clone();
        self.write_best(&current)?;
        let mut cur_train = self.evaluate(&current, "train", train)?;
        let mut cur_dev = self.evaluate(&current, "dev", dev)?;
        let (base_train, base_dev) = (cur_train.clone(), cur_dev.clone());
        let (mut iterations, mut accepted) = (0, 0);

        for it in 0..opts.max_iterations {
            iterations = it + 1;
            let pool = demos::failing_pool(&current, train, &cur_train);
            let candidates = demos::propose(&current, &pool, opts.candidates, opts.demos, opts.seed, it);
            let mut best: Option<(usize, Prompt, Vec<ExampleRecord>)> = None;
            for (index, cand) in candidates.into_iter().enumerate() {
                let recs = self.evaluate(&cand, "train", train)?;
                let entry = CandidateEntry {
                    iteration: it,
                    index,
                    proposer: opts.proposer.clone(),
                    prompt_sha256: cand.sha256(),
                    prompt: cand.text(),
                    demo_ids: cand.demo_ids(),
                    train_mean: mean_score(&recs),
                    scores: recs.iter().map(|r| IdScore { id: r.id.clone(), score: r.score }).collect(),
                };
                self.note(&format!(
                    "iteration {it} candidate {index}: demos [{}], train mean {:.3}",
                    entry.demo_ids.join(", "),
                    entry.train_mean
                ));
                self.log.emit(&LogRecord::Candidate(entry))?;
                if best.as_ref().is_none_or(|b| mean_score(&recs) > mean_score(&b.2)) {
                    best = Some((index, cand, recs));
                }
            }
            let Some((index, cand, cand_train)) = best else {
                let reason = "stopped: no failing train example left to draw demos from".to_owned();
                self.decide(DecisionEntry { iteration: it, candidate: None, prompt_sha256: None, accepted: false, reason, train: None, dev: None })?;
                break;
            };
            let mut decision = DecisionEntry {
                iteration: it,
                candidate: Some(index),
                prompt_sha256: Some(cand.sha256()),
                accepted: false,
                reason: String::new(),
                train: None,
                dev: None,
            };
            let (gate, interval) = self.gate(&cand_train, &cur_train, "train-gate", it);
            let gain = match interval {
                Some(i) => i.lower > 0.0,
                None => gate.candidate_mean > gate.current_mean,
            };
            decision.train = Some(gate.clone());
            if !gain {
                decision.reason = match interval {
                    Some(i) => format!(
                        "rejected: no gain on train (mean delta {:+.4}, bootstrap lower bound {:+.4} at {})",
                        i.mean_delta, i.lower, i.confidence
                    ),
                    None => format!("rejected: no gain on train (mean delta {:+.4})", gate.candidate_mean - gate.current_mean),
                };
                self.decide(decision)?;
                continue;
            }
            let cand_dev = self.evaluate(&cand, "dev", dev)?;
            let (dev_gate, dev_interval) = self.gate(&cand_dev, &cur_dev, "dev-gate", it);
            let overfit = match dev_interval {
                Some(i) => i.upper < 0.0,
                None => dev_gate.candidate_mean < dev_gate.current_mean,
            };
            decision.dev = Some(dev_gate);
            if overfit {
                decision.reason = "rejected: overfit on dev".into();
                self.decide(decision)?;
                continue;
            }
            decision.accepted = true;
            decision.reason = "accepted".into();
            current = cand;
            cur_train = cand_train;
            cur_dev = cand_dev;
            accepted += 1;
            self.write_best(&current)?;
            self.decide(decision)?;
        }

        let mut rows = vec![row("train", &base_train, &cur_train), row("dev", &base_dev, &cur_dev)];
        if let Some(test) = task.splits.get("test") {
            let test = limit(&test.examples, opts.limit_test);
            let base_test = self.evaluate(&baseline, "test", test)?;
            let best_test = self.evaluate(&current, "test", test)?;
            rows.push(row("test", &base_test, &best_test));
        }
        let summary = FinalEntry {
            iterations,
            accepted,
            baseline_sha256: baseline.sha256(),
            best_sha256: current.sha256(),
            best_demo_ids: current.demo_ids(),
            rows,
        };
        self.log.emit(&LogRecord::Final(summary.clone()))?;
        Ok(Outcome { summary, best_prompt: current.text(), evals_run: self.log.evals_run() })
    }

    /// Scores `examples` under `prompt`, running only what the cache lacks. Examples that see
    /// the same rendered instruction go through the engine together, in fixed batches of the
    /// group, so a resumed run batches exactly as an uninterrupted one.
    fn evaluate(&mut self, prompt: &Prompt, split: &str, examples: &[Example]) -> Result<Vec<ExampleRecord>, OptimizeError> {
        let prompt_sha = prompt.sha256();
        let mut shas = Vec::with_capacity(examples.len());
        let mut groups: Vec<(String, String, Vec<usize>)> = Vec::new();
        for (i, ex) in examples.iter().enumerate() {
            let text = prompt.render_for(&ex.id);
            let sha = sha256_hex(text.as_bytes());
            match groups.iter_mut().find(|g| g.1 == sha) {
                Some(g) => g.2.push(i),
                None => groups.push((text, sha.clone(), vec![i])),
            }
            shas.push(sha);
        }
        let mut ran = 0;
        for (text, sha, idx) in &groups {
            for chunk in idx.chunks(self.batch) {
                let todo: Vec<Example> = chunk
                    .iter()
                    .map(|&i| &examples[i])
                    .filter(|ex| self.log.lookup(&self.key(sha, &ex.id)).is_none())
                    .cloned()
                    .collect();
                if todo.is_empty() {
                    continue;
                }
                let spec = EvalSpec {
                    prompt: PromptSpec { instruction: text, layout: self.s.task.layout },
                    fields: &self.s.task.fields,
                    constraint: self.s.constraint,
                    validator: self.s.validator,
                    max_tokens: self.s.max_tokens,
                };
                let mut rep = LogReporter {
                    log: self.log,
                    prompt_sha256: &prompt_sha,
                    instruction_sha256: sha,
                    split,
                    engine_key: &self.engine_key,
                    error: None,
                };
                let result = eval::run(self.s.engine, &spec, &todo, &mut rep);
                if let Some(e) = rep.error {
                    return Err(e.into());
                }
                result.map_err(LogError::Io)?;
                ran += todo.len();
            }
        }
        let mut records = Vec::with_capacity(examples.len());
        for (ex, sha) in examples.iter().zip(&shas) {
            let rec = self.log.lookup(&self.key(sha, &ex.id)).cloned();
            records.push(rec.ok_or_else(|| OptimizeError::Missing { id: ex.id.clone(), split: split.into() })?);
        }
        self.note(&format!(
            "{split}: prompt {} on {} examples ({ran} run, {} cached): mean {:.3}, exact {}",
            &prompt_sha[..12],
            examples.len(),
            examples.len() - ran,
            mean_score(&records),
            exact(&records)
        ));
        Ok(records)
    }

    /// Candidate against current on the same examples, with a bootstrap when `--accept
    /// bootstrap` (seeded from the run's seed, the gate and the iteration).
    fn gate(&self, cand: &[ExampleRecord], cur: &[ExampleRecord], stream: &str, it: usize) -> (GateEntry, Option<Interval>) {
        let c: Vec<f64> = cand.iter().map(|r| r.score).collect();
        let b: Vec<f64> = cur.iter().map(|r| r.score).collect();
        let opts = self.s.options;
        let interval = (opts.accept == Accept::Bootstrap).then(|| {
            let mut rng = SplitMix64::derive(opts.seed, stream, it as u64);
            bootstrap::paired(&bootstrap::deltas(&c, &b), opts.confidence, RESAMPLES, &mut rng)
        });
        let gate = GateEntry { current_mean: bootstrap::mean(&b), candidate_mean: bootstrap::mean(&c), bootstrap: interval };
        (gate, interval)
    }

    fn decide(&mut self, d: DecisionEntry) -> Result<(), OptimizeError> {
        self.note(&format!("iteration {}: {}", d.iteration, d.reason));
        self.log.emit(&LogRecord::Decision(d))?;
        Ok(())
    }

    fn key(&self, sha: &str, id: &str) -> CacheKey {
        CacheKey { instruction_sha256: sha.to_owned(), example_id: id.to_owned(), engine_key: self.engine_key.clone() }
    }

    fn note(&mut self, line: &str) {
        tracing::info!("{line}");
        self.obs.note(line);
    }

    /// Writes `best_prompt.txt` through a temp file and a rename.
    fn write_best(&self, prompt: &Prompt) -> Result<(), OptimizeError> {
        let path = self.s.out_dir.join(BEST_PROMPT_FILE);
        let tmp = self.s.out_dir.join(format!("{BEST_PROMPT_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            fs_err::write(&tmp, prompt.text())?;
            fs_err::rename(&tmp, &path)
        };
        write().map_err(|error| OptimizeError::Write { path: path.clone(), error })
    }
}

/// Logs each record as it is scored.
struct LogReporter<'a> {
    log: &'a mut RunLog,
    prompt_sha256: &'a str,
    instruction_sha256: &'a str,
    split: &'a str,
    engine_key: &'a str,
    error: Option<LogError>,
}

impl Reporter for LogReporter<'_> {
    fn record(&mut self, rec: &ExampleRecord) -> std::io::Result<()> {
        let entry = EvalEntry {
            prompt_sha256: self.prompt_sha256.to_owned(),
            instruction_sha256: self.instruction_sha256.to_owned(),
            split: self.split.to_owned(),
            engine_key: self.engine_key.to_owned(),
            record: rec.clone(),
        };
        self.log.add_eval(entry).map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            self.error = Some(e);
            io
        })
    }
}

fn limit(examples: &[Example], n: Option<usize>) -> &[Example] {
    match n {
        Some(n) => &examples[..n.min(examples.len())],
        None => examples,
    }
}

fn mean_score(records: &[ExampleRecord]) -> f64 {
    bootstrap::mean(&records.iter().map(|r| r.score).collect::<Vec<_>>())
}

/// Examples with every field right.
fn exact(records: &[ExampleRecord]) -> usize {
    records.iter().filter(|r| r.error.is_none() && r.format_ok && r.fields.iter().all(|f| f.correct)).count()
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
