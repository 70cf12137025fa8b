//! Evaluation through the run log: scores a prompt on a split's examples, running only what
//! the log lacks (never evaluating twice), logging each record as it is scored, and keeping
//! each example's latest output as the draft of its next eval.

use std::collections::HashMap;

use super::cache::CacheKey;
use super::events::{Event, Observer};
use super::log::{LogError, RunLog};
use super::prompt::{sha256_hex, Prompt};
use super::records::EvalEntry;
use super::OptimizeError;
use crate::eval::{self, EvalSpec, ExampleRecord, PromptSpec, RecordSink};
use crate::overflow::Overflow;
use crate::task::{Example, Task};

/// What the evaluator runs on: the task, the engine and how outputs are constrained and cut.
#[derive(Clone, Copy)]
pub struct EvalTarget<'a> {
    pub task: &'a Task,
    pub engine: &'a dyn engines::Engine,
    /// The constraint schema (possibly hardened with bounds); `None` = unconstrained.
    pub constraint: Option<&'a serde_json::Value>,
    pub validator: &'a jsonschema::Validator,
    pub max_tokens: u32,
    pub overflow: Overflow,
}

/// Cached, logged evaluation of prompts on one engine.
pub struct Evaluator<'a> {
    s: EvalTarget<'a>,
    engine_key: String,
    batch: usize,
    /// By split, each example's latest output: the draft of its next eval (the documents stay,
    /// the prompt changes, and most of the output with it stays too). Filled from every
    /// evaluate call's records, logged or run, so a resumed run drafts as an uninterrupted one.
    drafts: HashMap<String, eval::Drafts>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `target`'s task on its engine, its records keyed by `engine_key` (the
    /// run header's).
    pub fn new(target: EvalTarget<'a>, engine_key: String) -> Self {
        let batch = target.engine.info().capabilities.max_batch.max(1);
        Evaluator { s: target, engine_key, batch, drafts: HashMap::new() }
    }

    /// Sequences the engine decodes together.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Scores `examples` under `prompt`, running only what the log lacks. Examples that see
    /// the same rendered instruction go through the engine together, in fixed batches of the
    /// group, so a resumed run batches exactly as an uninterrupted one.
    pub fn evaluate(
        &mut self,
        log: &mut RunLog,
        obs: &mut dyn Observer,
        prompt: &Prompt,
        split: &str,
        examples: &[Example],
    ) -> Result<Vec<ExampleRecord>, OptimizeError> {
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
                    .filter(|ex| log.lookup(&self.key(sha, &ex.id)).is_none())
                    .cloned()
                    .collect();
                if todo.is_empty() {
                    continue;
                }
                let s = self.s;
                let spec = EvalSpec {
                    prompt: PromptSpec { instruction: text, layout: s.task.layout, framing: &s.task.framing },
                    fields: &s.task.fields,
                    constraint: s.constraint,
                    validator: s.validator,
                    max_tokens: s.max_tokens,
                    overflow: s.overflow,
                    drafts: self.drafts.get(split),
                };
                let mut rep = LogSink {
                    log,
                    prompt_sha256: &prompt_sha,
                    instruction_sha256: sha,
                    split,
                    engine_key: &self.engine_key,
                    error: None,
                };
                let result = eval::run(s.engine, &spec, &todo, &mut rep);
                if let Some(e) = rep.error {
                    return Err(e.into());
                }
                result.map_err(LogError::Io)?;
                ran += todo.len();
            }
        }
        let mut records = Vec::with_capacity(examples.len());
        for (ex, sha) in examples.iter().zip(&shas) {
            let rec = log.lookup(&self.key(sha, &ex.id)).cloned();
            records.push(rec.ok_or_else(|| OptimizeError::Missing { id: ex.id.clone(), split: split.into() })?);
        }
        self.drafts.entry(split.to_owned()).or_default().extend(eval::drafts_from(&records));
        tracing::info!(split, prompt = &prompt_sha[..12], ran, mean = mean_score(&records), "eval");
        obs.event(&Event::Eval {
            split: split.to_owned(),
            prompt_sha256: prompt_sha.clone(),
            examples: examples.len(),
            ran,
            cached: examples.len() - ran,
            mean: mean_score(&records),
            exact: exact(&records),
        });
        Ok(records)
    }

    fn key(&self, sha: &str, id: &str) -> CacheKey {
        CacheKey { instruction_sha256: sha.to_owned(), example_id: id.to_owned(), engine_key: self.engine_key.clone() }
    }
}

/// Logs each record as it is scored.
struct LogSink<'a> {
    log: &'a mut RunLog,
    prompt_sha256: &'a str,
    instruction_sha256: &'a str,
    split: &'a str,
    engine_key: &'a str,
    error: Option<LogError>,
}

impl RecordSink for LogSink<'_> {
    fn record(&mut self, rec: &ExampleRecord) -> std::io::Result<()> {
        let entry = EvalEntry {
            prompt_sha256: self.prompt_sha256.to_owned(),
            instruction_sha256: self.instruction_sha256.to_owned(),
            split: self.split.to_owned(),
            engine_key: self.engine_key.to_owned(),
            record: rec.clone(),
            logged_at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        };
        self.log.add_eval(entry).map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            self.error = Some(e);
            io
        })
    }
}

/// Mean score of `records` (0 when empty).
pub fn mean_score(records: &[ExampleRecord]) -> f64 {
    crate::stats::mean(scores(records))
}

/// The scores of `records`, in order.
pub fn scores(records: &[ExampleRecord]) -> Vec<f64> {
    records.iter().map(|r| r.score).collect()
}

/// Examples with every field right.
pub fn exact(records: &[ExampleRecord]) -> usize {
    records.iter().filter(|r| r.is_exact()).count()
}
