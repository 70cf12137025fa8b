//! What a run did, worked out from its log: the trajectory of scores over iterations, baseline
//! against best per split, field and failure class, speed against input length, the slowest
//! examples.
//!
//! Evals are logged once per (instruction as rendered for the example, example, engine): a
//! prompt whose rendering for an example equals one scored before was not evaluated again,
//! and its record is logged under the earlier prompt. [`Records`] finds a prompt's record of an
//! example by the prompt's hash, and failing that by the instruction it rendered for the
//! example (the prompt rebuilt from its text and demo ids, [`Prompt::parse`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::calibrate::RoutingTable;
use crate::eval::ExampleRecord;
use crate::fingerprint::sha256_hex;
use crate::optimize::prompt::Prompt;
use crate::optimize::records::{DecisionEntry, Spend};
use crate::optimize::Rejection;
use crate::score::FailureClass;

use super::RunData;

/// How a candidate fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandStatus {
    /// Beat the current prompt on train and held on dev: it became the current prompt.
    Accepted,
    /// Won on train, lost on dev (held out): rejected as overfit.
    RejectedDev,
    /// The iteration's best on train, but without evidence of a gain over the current prompt.
    NoTrainGain,
    /// Scored on train, below the iteration's best.
    NotChosen,
    /// Dropped by racing after part of train: `train_mean` covers the `evaluated` examples it
    /// ran on, out of `train`.
    Raced { evaluated: usize, train: usize, why: String },
    /// Rejected before any eval (leakage guard, duplicate); the reason.
    Unscored(String),
}

impl CandStatus {
    pub fn label(&self) -> &'static str {
        match self {
            CandStatus::Accepted => "accepted",
            CandStatus::RejectedDev => "rejected on dev (overfit)",
            CandStatus::NoTrainGain => "rejected: no gain on train",
            CandStatus::NotChosen => "not the iteration's best",
            CandStatus::Raced { .. } => "dropped by racing (partial train)",
            CandStatus::Unscored(_) => "rejected before eval",
        }
    }
}

/// One candidate on the score plot.
#[derive(Debug, Clone)]
pub struct CandPoint {
    pub iteration: usize,
    pub index: usize,
    pub proposer: String,
    pub prompt_sha256: String,
    pub demo_ids: Vec<String>,
    pub train_mean: f64,
    /// Tokens its instruction adds to every prompt (when logged).
    pub prompt_tokens: Option<usize>,
    /// Its dev mean, when it reached the dev gate.
    pub dev_mean: Option<f64>,
    pub status: CandStatus,
}

/// One iteration: its candidates, its decision, and the current prompt's means after it.
#[derive(Debug, Clone)]
pub struct Iteration {
    pub iteration: usize,
    pub candidates: Vec<CandPoint>,
    pub decision: Option<DecisionEntry>,
    pub train_after: Option<f64>,
    pub dev_after: Option<f64>,
}

/// Baseline against best on one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCompare {
    pub name: String,
    pub baseline_accuracy: f64,
    pub best_accuracy: f64,
    pub baseline_score: f64,
    pub best_score: f64,
}

/// Counts of what went wrong in one set of records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failures {
    /// Field verdicts by failure class.
    pub classes: BTreeMap<FailureClass, usize>,
    /// Examples the engine could not run, by kind (`too_long`, `engine`).
    pub errors: BTreeMap<String, usize>,
    /// Outputs that hit the token cap.
    pub truncated: usize,
    /// Field verdicts with a confidence (in-process engines only).
    pub with_confidence: usize,
    /// Wrong field verdicts the model was sure of (every chosen token p >= 0.6).
    pub wrong_and_sure: usize,
    /// Correct field verdicts on a guess (some chosen token p < 0.3).
    pub right_by_luck: usize,
}

/// Baseline against best on one split.
#[derive(Debug, Clone)]
pub struct SplitCompare {
    pub split: String,
    /// Examples of the split the baseline was scored on.
    pub examples: usize,
    /// Of those, examples whose best-prompt record the log holds (compared below).
    pub compared: usize,
    pub baseline_mean: f64,
    pub best_mean: f64,
    pub baseline_exact: usize,
    pub best_exact: usize,
    pub fields: Vec<FieldCompare>,
    pub baseline_failures: Failures,
    pub best_failures: Failures,
}

/// One engine run of one example (an `eval` record), for the speed plots and tables.
#[derive(Debug, Clone)]
pub struct SpeedPoint {
    pub id: String,
    pub split: String,
    /// Which prompt: `baseline`, `it1.c0`, ...
    pub prompt: String,
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub total_ms: f64,
    pub peak_rss_bytes: u64,
    pub batch_size: usize,
    /// `eos`, `max_tokens`, ... or the engine error.
    pub outcome: String,
    /// The engine did not run it (`too_long`, `engine`).
    pub error: bool,
}

/// Everything a run report shows.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub task: String,
    pub finished: bool,
    pub baseline_sha256: String,
    pub best_sha256: String,
    pub baseline_text: Option<String>,
    pub best_text: Option<String>,
    /// Where the best prompt came from, in words.
    pub best_origin: String,
    pub best_demo_ids: Vec<String>,
    pub iterations: Vec<Iteration>,
    pub accepted: usize,
    pub stopped_by: Option<String>,
    /// The smallest mean train gain the accept rule could detect (from the final record).
    pub min_detectable_gain: Option<f64>,
    /// Prompt tokens of the baseline's and the best prompt's instructions.
    pub prompt_tokens: Option<(usize, usize)>,
    pub baseline_train: Option<f64>,
    pub baseline_dev: Option<f64>,
    pub splits: Vec<SplitCompare>,
    pub speed: Vec<SpeedPoint>,
    pub spend: Spend,
    /// Engine busy time: per batch, its slowest request (ms).
    pub engine_ms: f64,
    pub started_at: Option<String>,
    /// The last eval's time, or the log file's when evals carry none (`end_from_file`).
    pub ended_at: Option<SystemTime>,
    pub end_from_file: bool,
    /// From the header's start to the last eval, when both are known (s).
    pub elapsed_s: Option<f64>,
    pub routing: Option<(PathBuf, RoutingTable)>,
    pub warnings: Vec<String>,
}

/// Records of the log by prompt and by instruction.
struct Records<'a> {
    by_prompt: HashMap<(&'a str, &'a str), &'a ExampleRecord>,
    by_instruction: HashMap<(&'a str, &'a str), &'a ExampleRecord>,
}

impl<'a> Records<'a> {
    fn new(run: &'a RunData) -> Self {
        let mut by_prompt = HashMap::new();
        let mut by_instruction = HashMap::new();
        for e in &run.evals {
            by_prompt.entry((e.prompt_sha256.as_str(), e.record.id.as_str())).or_insert(&e.record);
            by_instruction.entry((e.instruction_sha256.as_str(), e.record.id.as_str())).or_insert(&e.record);
        }
        Records { by_prompt, by_instruction }
    }

    /// The record of example `id` under the prompt with hash `sha` (rebuilt as `prompt`, when
    /// it could be).
    fn get(&self, sha: &str, prompt: Option<&Prompt>, id: &str) -> Option<&'a ExampleRecord> {
        if let Some(r) = self.by_prompt.get(&(sha, id)) {
            return Some(r);
        }
        let instruction = sha256_hex(prompt?.render_for(id).as_bytes());
        self.by_instruction.get(&(instruction.as_str(), id)).copied()
    }
}

/// Works out what the run did. `routing` is the table shown next to the run's speed.
pub fn analyze(run: &RunData, routing: Option<(PathBuf, RoutingTable)>) -> Analysis {
    let records = Records::new(run);
    let fin = run.final_entry.as_ref();
    // The baseline is evaluated first, so the first eval is the baseline's.
    let baseline_sha256 =
        fin.map(|f| f.baseline_sha256.clone()).or_else(|| run.evals.first().map(|e| e.prompt_sha256.clone())).unwrap_or_default();
    let last_accepted = run.decisions.iter().rev().find(|d| d.accepted).and_then(|d| d.prompt_sha256.clone());
    let best_sha256 = fin.map(|f| f.best_sha256.clone()).or(last_accepted).unwrap_or_else(|| baseline_sha256.clone());

    // Bases a prompt may have been built on, exactly as given (parsing returns them trimmed).
    let mut bases: Vec<&str> = run.proposals.iter().filter_map(|p| p.prompt.as_deref()).collect();
    if let Some(b) = run.header.baseline_prompt.as_deref() {
        bases.push(b);
    }
    let rebuild = |text: &str, ids: &[String]| {
        Prompt::parse(text, ids).map(|mut p| {
            if let Some(b) = bases.iter().find(|b| b.trim_end() == p.base) {
                p.base = (*b).to_owned();
            }
            p
        })
    };

    let baseline_text = run
        .header
        .baseline_prompt
        .clone()
        .filter(|t| sha256_hex(t.as_bytes()) == baseline_sha256)
        .or_else(|| task_prompt(run).filter(|t| sha256_hex(t.as_bytes()) == baseline_sha256));
    let best_cand = run.candidates.iter().find(|c| c.prompt_sha256 == best_sha256);
    let (best_text, best_demo_ids, best_origin) = if best_sha256 == baseline_sha256 {
        (baseline_text.clone(), Vec::new(), "the task's own prompt (no candidate was accepted)".to_owned())
    } else if let Some(c) = best_cand {
        (
            Some(c.prompt.clone()),
            c.demo_ids.clone(),
            format!("iteration {}, candidate {} ({})", c.iteration + 1, c.index + 1, c.proposer),
        )
    } else {
        let file = run.best_prompt_file.clone().filter(|t| sha256_hex(t.as_bytes()) == best_sha256);
        (file, fin.map(|f| f.best_demo_ids.clone()).unwrap_or_default(), "best_prompt.txt".to_owned())
    };
    let best_prompt = best_text.as_deref().and_then(|t| rebuild(t, &best_demo_ids));

    // Baseline ids per split, in log order, from the baseline's own evals.
    let mut split_ids: Vec<(String, Vec<&str>)> = Vec::new();
    for e in run.evals.iter().filter(|e| e.prompt_sha256 == baseline_sha256) {
        match split_ids.iter_mut().find(|(s, _)| *s == e.split) {
            Some((_, ids)) => {
                if !ids.contains(&e.record.id.as_str()) {
                    ids.push(&e.record.id);
                }
            }
            None => split_ids.push((e.split.clone(), vec![&e.record.id])),
        }
    }
    split_ids.sort_by_key(|(s, _)| split_rank(s));
    let field_names: Vec<String> =
        run.evals.first().map(|e| e.record.fields.iter().map(|f| f.field.clone()).collect()).unwrap_or_default();
    let splits: Vec<SplitCompare> = split_ids
        .iter()
        .map(|(split, ids)| {
            let pairs: Vec<(&ExampleRecord, Option<&ExampleRecord>)> = ids
                .iter()
                .filter_map(|id| {
                    let base = records.get(&baseline_sha256, None, id)?;
                    Some((base, records.get(&best_sha256, best_prompt.as_ref(), id)))
                })
                .collect();
            compare(split, &pairs, &field_names)
        })
        .collect();
    let mean_of = |split: &str| {
        let ids = &split_ids.iter().find(|(s, _)| s == split)?.1;
        let scores: Vec<f64> = ids.iter().filter_map(|id| records.get(&baseline_sha256, None, id)).map(|r| r.score).collect();
        (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
    };
    let (baseline_train, baseline_dev) = (mean_of("train"), mean_of("dev"));

    let iterations = trajectory(run, baseline_train, baseline_dev);
    let labels = prompt_labels(run, &baseline_sha256);
    let speed_points: Vec<SpeedPoint> = run
        .evals
        .iter()
        .map(|e| {
            let r = &e.record;
            SpeedPoint {
                id: r.id.clone(),
                split: e.split.clone(),
                prompt: labels
                    .get(e.prompt_sha256.as_str())
                    .cloned()
                    .unwrap_or_else(|| e.prompt_sha256[..12.min(e.prompt_sha256.len())].to_owned()),
                input_tokens: r.tokens.input,
                output_tokens: r.tokens.output,
                prefill_ms: r.timings.prefill_ms,
                decode_ms: r.timings.decode_ms,
                total_ms: r.timings.total_ms,
                peak_rss_bytes: r.peak_rss_bytes,
                batch_size: r.batch_size,
                outcome: match (&r.error, r.stop) {
                    (Some(e), _) => e.clone(),
                    (None, Some(s)) => s.to_string(),
                    (None, None) => "merged windows".into(),
                },
                error: r.error.is_some(),
            }
        })
        .collect();

    let spend = fin.map_or_else(|| spend_of(run), |f| f.spend.clone());
    // The end: the last eval's time (the final record follows it at once); a log written before
    // evals carried one falls back on the file's time, which a copy or a checkout resets.
    let time = |s: &str| humantime::parse_rfc3339_weak(s).ok();
    let started = run.header.started_at.as_deref().and_then(time);
    let last_eval = run.evals.iter().rev().find_map(|e| e.logged_at.as_deref().and_then(time));
    let (ended, end_from_file) = match last_eval {
        Some(t) => (Some(t), false),
        None => (run.last_write, true),
    };
    let elapsed_s = match (started, ended) {
        (Some(a), Some(b)) => b.duration_since(a).ok().map(|d| d.as_secs_f64()),
        _ => None,
    };
    let mut warnings = run.warnings.clone();
    for s in &splits {
        if s.compared < s.examples {
            warnings.push(format!(
                "{}: the log holds the best prompt's records of {} of the {} examples; baseline and best are compared on those",
                s.split, s.compared, s.examples
            ));
        }
    }
    if !run.decisions.is_empty() && fin.is_none() {
        warnings.push("the run has no `final` record: it is still running or was stopped (continue it with `promptloop optimize --resume`); the report shows what the log holds".into());
    }
    Analysis {
        task: run.header.task.clone(),
        finished: fin.is_some(),
        baseline_sha256,
        best_sha256,
        baseline_text,
        best_text,
        best_origin,
        best_demo_ids,
        accepted: iterations.iter().filter(|i| i.decision.as_ref().is_some_and(|d| d.accepted)).count(),
        stopped_by: fin.map(|f| f.stopped_by.clone()),
        min_detectable_gain: fin.and_then(|f| f.min_detectable_gain),
        prompt_tokens: fin.and_then(|f| f.prompt_tokens),
        iterations,
        baseline_train,
        baseline_dev,
        splits,
        engine_ms: engine_ms(run),
        speed: speed_points,
        spend,
        started_at: run.header.started_at.clone(),
        ended_at: ended,
        end_from_file,
        elapsed_s,
        routing,
        warnings,
    }
}

/// `train`, `dev`, `test`, then the rest by name.
fn split_rank(s: &str) -> (usize, String) {
    let rank = ["train", "dev", "test"].iter().position(|x| *x == s).unwrap_or(3);
    (rank, s.to_owned())
}

/// The task's prompt file, read from the task directory of the header (older logs do not
/// hold the baseline's text).
fn task_prompt(run: &RunData) -> Option<String> {
    let dir = &run.header.task_dir;
    let cfg = crate::task::Task::load(dir).ok()?;
    Some(cfg.prompt)
}

fn compare(split: &str, pairs: &[(&ExampleRecord, Option<&ExampleRecord>)], field_names: &[String]) -> SplitCompare {
    let both: Vec<(&ExampleRecord, &ExampleRecord)> = pairs.iter().filter_map(|(a, b)| Some((*a, (*b)?))).collect();
    let n = both.len();
    let mean = |f: &dyn Fn(&(&ExampleRecord, &ExampleRecord)) -> f64| {
        if n == 0 {
            0.0
        } else {
            both.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let fields = field_names
        .iter()
        .map(|name| {
            let stat = |r: &ExampleRecord| {
                r.fields.iter().find(|f| f.field == *name).map_or((0.0, 0.0), |f| (f64::from(u8::from(f.correct)), f.score))
            };
            FieldCompare {
                name: name.clone(),
                baseline_accuracy: mean(&|(a, _)| stat(a).0),
                best_accuracy: mean(&|(_, b)| stat(b).0),
                baseline_score: mean(&|(a, _)| stat(a).1),
                best_score: mean(&|(_, b)| stat(b).1),
            }
        })
        .collect();
    SplitCompare {
        split: split.to_owned(),
        examples: pairs.len(),
        compared: n,
        baseline_mean: mean(&|(a, _)| a.score),
        best_mean: mean(&|(_, b)| b.score),
        baseline_exact: both.iter().filter(|(a, _)| a.is_exact()).count(),
        best_exact: both.iter().filter(|(_, b)| b.is_exact()).count(),
        fields,
        baseline_failures: failures(both.iter().map(|(a, _)| *a)),
        best_failures: failures(both.iter().map(|(_, b)| *b)),
    }
}

/// Failure classes, engine errors and truncations of `records`.
pub fn failures<'a>(records: impl Iterator<Item = &'a ExampleRecord>) -> Failures {
    let mut out = Failures::default();
    for r in records {
        for c in r.fields.iter().filter_map(|f| f.class) {
            *out.classes.entry(c).or_insert(0) += 1;
        }
        out.with_confidence += r.fields.iter().filter(|f| f.confidence.is_some()).count();
        out.wrong_and_sure += r.fields.iter().filter(|f| f.wrong_and_sure()).count();
        out.right_by_luck += r.fields.iter().filter(|f| f.right_by_luck()).count();
        if let Some(e) = &r.error {
            *out.errors.entry(e.clone()).or_insert(0) += 1;
        }
        out.truncated += usize::from(r.truncated);
    }
    out
}

/// Candidates and decisions by iteration; the current prompt's means after each.
fn trajectory(run: &RunData, base_train: Option<f64>, base_dev: Option<f64>) -> Vec<Iteration> {
    let last = run.candidates.iter().map(|c| c.iteration).chain(run.decisions.iter().map(|d| d.iteration)).max();
    let Some(last) = last else { return Vec::new() };
    let (mut train, mut dev) = (base_train, base_dev);
    (0..=last)
        .map(|it| {
            let decision = run.decisions.iter().find(|d| d.iteration == it).cloned();
            let candidates = run
                .candidates
                .iter()
                .filter(|c| c.iteration == it)
                .map(|c| {
                    let chosen = decision.as_ref().filter(|d| d.candidate == Some(c.index));
                    let status = match (&c.rejected, chosen) {
                        (Some(Rejection::Raced { evaluated, train, .. }), _) => CandStatus::Raced {
                            evaluated: *evaluated,
                            train: *train,
                            why: c.rejected.as_ref().map(ToString::to_string).unwrap_or_default(),
                        },
                        (Some(why), _) => CandStatus::Unscored(why.to_string()),
                        (None, Some(d)) if d.accepted => CandStatus::Accepted,
                        (None, Some(d)) if d.dev.is_some() => CandStatus::RejectedDev,
                        (None, Some(_)) => CandStatus::NoTrainGain,
                        (None, None) => CandStatus::NotChosen,
                    };
                    CandPoint {
                        iteration: it,
                        index: c.index,
                        proposer: c.proposer.clone(),
                        prompt_sha256: c.prompt_sha256.clone(),
                        demo_ids: c.demo_ids.clone(),
                        train_mean: c.train_mean,
                        prompt_tokens: c.prompt_tokens,
                        dev_mean: chosen.and_then(|d| d.dev.as_ref()).map(|g| g.candidate_mean),
                        status,
                    }
                })
                .collect();
            if let Some(d) = decision.as_ref().filter(|d| d.accepted) {
                train = d.train.as_ref().map(|g| g.candidate_mean).or(train);
                dev = d.dev.as_ref().map(|g| g.candidate_mean).or(dev);
            }
            Iteration { iteration: it, candidates, decision, train_after: train, dev_after: dev }
        })
        .collect()
}

/// `baseline` and `itN.cM` by prompt hash.
fn prompt_labels<'a>(run: &'a RunData, baseline: &'a str) -> HashMap<&'a str, String> {
    let mut out = HashMap::new();
    out.insert(baseline, "baseline".to_owned());
    for c in &run.candidates {
        out.entry(c.prompt_sha256.as_str()).or_insert_with(|| format!("it{}.c{}", c.iteration + 1, c.index + 1));
    }
    out
}

/// The spend of the proposals logged (a run without its `final` record).
fn spend_of(run: &RunData) -> Spend {
    let mut s = Spend { cost_usd: None, ..Spend::default() };
    for p in &run.proposals {
        s.calls += 1;
        s.failed_calls += usize::from(p.prompt.is_none());
        s.input_tokens += p.input_tokens;
        s.output_tokens += p.output_tokens;
        if let Some(c) = p.cost_usd {
            *s.cost_usd.get_or_insert(0.0) += c;
        }
    }
    s
}

/// Engine busy time: requests of one batch run together, so a batch counts its slowest.
/// A batch's records are consecutive in the log.
fn engine_ms(run: &RunData) -> f64 {
    let mut total = 0.0;
    let mut current: Option<(u64, f64)> = None;
    for r in run.evals.iter().map(|e| &e.record).filter(|r| r.error.is_none()) {
        match &mut current {
            Some((id, ms)) if *id == r.batch_id => *ms = ms.max(r.timings.total_ms),
            _ => {
                total += current.map_or(0.0, |c| c.1);
                current = Some((r.batch_id, r.timings.total_ms));
            }
        }
    }
    total + current.map_or(0.0, |c| c.1)
}

impl Analysis {
    /// The split baseline and best are headlined on: test when scored, else dev, else train.
    pub fn headline(&self) -> Option<&SplitCompare> {
        ["test", "dev", "train"].iter().find_map(|s| self.splits.iter().find(|c| c.split == *s && c.compared > 0))
    }

    /// The `n` slowest engine runs.
    pub fn slowest(&self, n: usize) -> Vec<&SpeedPoint> {
        let mut v: Vec<&SpeedPoint> = self.speed.iter().filter(|p| !p.error).collect();
        v.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        v.truncate(n);
        v
    }

    /// Every candidate, in log order.
    pub fn candidates(&self) -> impl Iterator<Item = &CandPoint> {
        self.iterations.iter().flat_map(|i| i.candidates.iter())
    }
}
