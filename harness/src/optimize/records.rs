//! The records of `run.jsonl`, one JSON object per line tagged by `type`: a `header`, then
//! `eval`, `candidate` and `decision` records as the loop goes, and a `final` record.
//!
//! Only `eval` records carry timings (inside the example record); `candidate`, `decision` and
//! `final` depend on scores alone, so a resumed run writes them identically.
//!
//! Format 3 logs typed outcomes ([`Rejection`], [`Verdict`]) and stores the run's
//! [`RunConfig`] once in the header. Logs of format 2 still read: their free-text reasons are
//! read back into the typed outcomes, and the header's duplicated fields are ignored.

use std::path::PathBuf;

use engines::{ConstraintBackend, EngineConfig, EngineKind};
use serde::{Deserialize, Serialize};

use super::bootstrap::Interval;
use super::outcome::{Rejection, Verdict};
use crate::config::RunConfig;
use crate::eval::ExampleRecord;
pub use crate::fingerprint::ModelFingerprint;

/// Version of the log format, in the header.
pub const FORMAT_VERSION: u32 = 3;

/// One line of `run.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogRecord {
    Header(Box<Header>),
    Eval(Box<EvalEntry>),
    Proposal(Box<ProposalEntry>),
    Candidate(CandidateEntry),
    Decision(DecisionEntry),
    Final(FinalEntry),
}

impl LogRecord {
    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            LogRecord::Header(_) => "header",
            LogRecord::Eval(_) => "eval",
            LogRecord::Proposal(_) => "proposal",
            LogRecord::Candidate(_) => "candidate",
            LogRecord::Decision(_) => "decision",
            LogRecord::Final(_) => "final",
        }
    }
}

/// The first record: what is optimized, on what, with which configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub promptloop_version: String,
    pub task: String,
    pub task_dir: PathBuf,
    /// SHA-256 over the task's files (task.toml, schema, prompt, splits).
    pub task_sha256: String,
    pub model: ModelFingerprint,
    /// The engine configuration the run's [`RunConfig`] resolves to for this model file.
    pub engine: EngineConfig,
    /// SHA-256 of the constraint schema (after bounds), when constrained.
    pub constraint_schema_sha256: Option<String>,
    /// The output token cap in force (`--max-tokens`, else the task's).
    pub max_tokens: u32,
    /// The cache key part shared by every eval of this run.
    pub engine_key: String,
    /// The run's configuration, stored once.
    pub options: RunConfig,
    /// When the run started (RFC 3339, UTC). Absent in logs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The task's prompt the run started from (the baseline), for the report's prompt diff.
    /// Absent in logs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_prompt: Option<String>,
}

impl Header {
    pub fn engine_kind(&self) -> EngineKind {
        self.options.engine.engine
    }
    pub fn constraint(&self) -> ConstraintBackend {
        self.options.engine.constraint
    }
    pub fn seed(&self) -> u64 {
        self.options.search.seed
    }
}

/// One scored example under one rendered instruction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalEntry {
    /// SHA-256 of the full prompt being evaluated.
    pub prompt_sha256: String,
    /// SHA-256 of the instruction as rendered for this example (its own demo left out).
    pub instruction_sha256: String,
    pub split: String,
    pub engine_key: String,
    pub record: ExampleRecord,
    /// When the record was logged (RFC 3339, UTC): with the header's `started_at`, the run's
    /// wall time. Absent in logs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_at: Option<String>,
}

/// One example's score, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdScore {
    pub id: String,
    pub score: f64,
}

/// One call to the optimizer model, successful or not. Keyed by `request_sha256` (the
/// optimizer spec and the canonical request), so a resumed run reuses it instead of paying
/// again. A failed call is kept too: the resumed run takes the same path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalEntry {
    pub iteration: usize,
    pub index: usize,
    pub proposer: String,
    pub request_sha256: String,
    /// The optimizer's answer (raw), when one arrived.
    pub answer: Option<String>,
    /// The instruction extracted from the answer.
    pub prompt: Option<String>,
    /// Why there is no instruction: the call failed, or the answer held none.
    pub error: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the model's price is unknown.
    pub cost_usd: Option<f64>,
    pub attempts: u32,
    pub latency_ms: f64,
}

/// One proposed prompt and its train scores; or why it was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "CandidateWire")]
pub struct CandidateEntry {
    pub iteration: usize,
    pub index: usize,
    pub proposer: String,
    pub prompt_sha256: String,
    pub prompt: String,
    pub demo_ids: Vec<String>,
    /// The `proposal` record it came from (LLM proposers).
    pub request_sha256: Option<String>,
    /// The prompt it was made from, when that is not the incumbent (`--search pareto`, and
    /// the first of the two a `merge` combines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_sha256: Option<String>,
    /// Set when the candidate was not evaluated (leakage, duplicate; `train_mean` is then 0
    /// and `scores` empty) or was dropped by racing (`train_mean` and `scores` cover the
    /// examples it ran on).
    pub rejected: Option<Rejection>,
    /// N-gram overlap with train documents (LLM proposers).
    pub overlap: Option<super::leakage::Overlap>,
    /// Tokens its instruction (demos included) adds to every example's prompt; absent in logs
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<usize>,
    pub train_mean: f64,
    pub scores: Vec<IdScore>,
}

/// A candidate as either format wrote it: `rejected` typed, or free text (format 2).
#[derive(Deserialize)]
struct CandidateWire {
    iteration: usize,
    index: usize,
    proposer: String,
    prompt_sha256: String,
    prompt: String,
    demo_ids: Vec<String>,
    request_sha256: Option<String>,
    #[serde(default)]
    parent_sha256: Option<String>,
    rejected: Option<RejectionWire>,
    overlap: Option<super::leakage::Overlap>,
    #[serde(default)]
    prompt_tokens: Option<usize>,
    train_mean: f64,
    scores: Vec<IdScore>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RejectionWire {
    Typed(Rejection),
    Text(String),
}

impl From<CandidateWire> for CandidateEntry {
    fn from(w: CandidateWire) -> Self {
        CandidateEntry {
            iteration: w.iteration,
            index: w.index,
            proposer: w.proposer,
            prompt_sha256: w.prompt_sha256,
            prompt: w.prompt,
            demo_ids: w.demo_ids,
            request_sha256: w.request_sha256,
            parent_sha256: w.parent_sha256,
            rejected: w.rejected.map(|r| match r {
                RejectionWire::Typed(t) => t,
                RejectionWire::Text(text) => Rejection::from_text(&text),
            }),
            overlap: w.overlap,
            prompt_tokens: w.prompt_tokens,
            train_mean: w.train_mean,
            scores: w.scores,
        }
    }
}

/// Optimizer spend of a run so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    pub calls: usize,
    pub failed_calls: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the price of the model is unknown.
    pub cost_usd: Option<f64>,
}

impl Spend {
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// A gate: the current prompt and the candidate on the same examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEntry {
    pub current_mean: f64,
    pub candidate_mean: f64,
    /// Paired bootstrap of the deltas (with `--accept bootstrap`).
    pub bootstrap: Option<Interval>,
}

/// The outcome of one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "DecisionWire")]
pub struct DecisionEntry {
    pub iteration: usize,
    /// Index of the best candidate, when there was one.
    pub candidate: Option<usize>,
    pub prompt_sha256: Option<String>,
    pub accepted: bool,
    /// What was decided (format 2 logs: read back from `reason`).
    pub verdict: Verdict,
    /// The decision in words, with its numbers: `accepted`, `rejected: ...` or `stopped: ...`.
    pub reason: String,
    pub train: Option<GateEntry>,
    pub dev: Option<GateEntry>,
}

#[derive(Deserialize)]
struct DecisionWire {
    iteration: usize,
    candidate: Option<usize>,
    prompt_sha256: Option<String>,
    accepted: bool,
    #[serde(default)]
    verdict: Option<Verdict>,
    reason: String,
    train: Option<GateEntry>,
    dev: Option<GateEntry>,
}

impl From<DecisionWire> for DecisionEntry {
    fn from(w: DecisionWire) -> Self {
        DecisionEntry {
            iteration: w.iteration,
            candidate: w.candidate,
            prompt_sha256: w.prompt_sha256,
            accepted: w.accepted,
            verdict: w.verdict.unwrap_or_else(|| Verdict::from_text(w.accepted, &w.reason)),
            reason: w.reason,
            train: w.train,
            dev: w.dev,
        }
    }
}

/// Baseline against best on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRow {
    pub split: String,
    pub examples: usize,
    pub baseline_mean: f64,
    pub baseline_exact: usize,
    pub best_mean: f64,
    pub best_exact: usize,
}

/// The last record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalEntry {
    pub iterations: usize,
    pub accepted: usize,
    pub baseline_sha256: String,
    pub best_sha256: String,
    pub best_demo_ids: Vec<String>,
    /// Why the loop ended: `max iterations`, a cap, or no candidates left.
    pub stopped_by: String,
    /// The smallest mean train gain the accept rule could detect on this train split (a
    /// candidate fixing k of n examples gains k/n); absent in logs written before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_detectable_gain: Option<f64>,
    /// The prompt tokens of the baseline's and the best prompt's instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<(usize, usize)>,
    pub spend: Spend,
    pub rows: Vec<SplitRow>,
}
