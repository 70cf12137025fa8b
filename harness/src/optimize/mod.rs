//! `promptloop optimize`: a search over prompts, scored on train, gated on dev, logged so that
//! a stopped run continues where it left off.
//!
//! One iteration: a proposer turns the current prompt into candidates (only the offline
//! [`demos`] proposer exists so far: worked examples drawn from failing train examples), each is
//! scored on train, the best by mean must beat the current prompt on the same examples (a
//! paired [`bootstrap`] lower bound above 0, or a higher mean), and then must not lose on dev
//! (held out: never shown in a prompt). At the end, baseline and best are scored on test.
//!
//! Everything goes to `run.jsonl` (see [`log`] and [`records`]); evals are cached by the
//! instruction rendered for the example, the example and the engine ([`cache`]).

pub mod bootstrap;
pub mod cache;
pub mod demos;
pub mod leakage;
pub mod llm;
pub mod log;
pub mod prompt;
pub mod records;
pub mod rng;
mod search;

use std::fmt;
use std::str::FromStr;

use engines::{ConstraintBackend, EngineKind};
use serde::{Deserialize, Serialize};

pub use log::{LogError, RunLog, LOG_FILE};
pub use prompt::Prompt;
pub use search::{run, Event, Observer, Outcome, Setup, BEST_PROMPT_FILE};

/// How a candidate must beat the current prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    /// Paired bootstrap over per-example deltas: train lower bound > 0; dev upper bound >= 0.
    #[default]
    Bootstrap,
    /// Higher train mean; dev mean not lower.
    Mean,
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accept::Bootstrap => "bootstrap",
            Accept::Mean => "mean",
        })
    }
}

impl FromStr for Accept {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bootstrap" => Ok(Accept::Bootstrap),
            "mean" => Ok(Accept::Mean),
            other => Err(format!("unknown acceptance rule `{other}` (expected bootstrap or mean)")),
        }
    }
}

/// A way of making candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposerKind {
    /// The optimizer rewrites the prompt from the worst failures.
    Rewrite,
    /// OPRO: the optimizer sees past prompts with their scores.
    Opro,
    /// Worked examples from failing train examples (no LLM).
    Demos,
}

impl ProposerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposerKind::Rewrite => "rewrite",
            ProposerKind::Opro => "opro",
            ProposerKind::Demos => "demos",
        }
    }
    pub fn needs_llm(self) -> bool {
        !matches!(self, ProposerKind::Demos)
    }
}

/// `--proposer`: one proposer or a comma-separated schedule, used in turn (iteration i uses
/// entry i mod len), e.g. `rewrite,rewrite,demos`.
pub fn parse_schedule(s: &str) -> Result<Vec<ProposerKind>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        out.push(match part.to_ascii_lowercase().as_str() {
            "rewrite" => ProposerKind::Rewrite,
            "opro" => ProposerKind::Opro,
            "demos" => ProposerKind::Demos,
            "" => return Err(format!("--proposer `{s}`: an empty entry in the schedule")),
            other => return Err(format!(
                "unknown proposer `{other}` in `{s}`: expected rewrite, opro or demos (or a comma-separated schedule of them)"
            )),
        });
    }
    Ok(out)
}

/// The options of a run, as given on the command line; stored in the header so that
/// `--resume` continues with the same ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    pub optimizer: String,
    /// A proposer or a comma-separated schedule ([`parse_schedule`]).
    pub proposer: String,
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
    pub seed: u64,
    pub accept: Accept,
    pub confidence: f64,
    /// How candidates are evaluated on train: all on every example, or raced. Logs written
    /// before racing existed did not race.
    #[serde(default = "Racing::off")]
    pub racing: Racing,
    pub limit_train: Option<usize>,
    pub limit_dev: Option<usize>,
    pub limit_test: Option<usize>,
    /// `--model` as given (a known name or a path).
    pub model: String,
    pub engine: EngineKind,
    /// `--on-overflow`: documents longer than the context.
    pub on_overflow: crate::overflow::Overflow,
    pub constraint: ConstraintBackend,
    pub batch_size: u32,
    pub threads: Option<usize>,
    pub ctx: Option<u32>,
    pub max_tokens: Option<u32>,
    pub no_bounds: bool,
    pub chat_template: Option<String>,
    /// The engine variant's weight format (`--engine candle:q8_0`).
    #[serde(default)]
    pub weights: engines::WeightFormat,
    /// Budgets of the engine's document KV cache (`None`: off). Outputs are the same either way.
    #[serde(default)]
    pub prefix_cache: Option<engines::PrefixCacheConfig>,
    /// Forced constraint tokens appended without sampling. Logs written before it existed
    /// decoded every token (`false`), so a resumed run keeps its engine key.
    #[serde(default)]
    pub fast_forward: bool,
    /// Each example's latest output is the draft of its next eval (verified, greedy). Logs
    /// written before it existed drafted nothing (`false`), so a resumed run keeps its key.
    #[serde(default)]
    pub speculative: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            optimizer: "none".into(),
            proposer: "demos".into(),
            worst: 5,
            temperature: 0.7,
            optimizer_max_tokens: 1024,
            leak_ngram: leakage::DEFAULT_NGRAM,
            leak_threshold: leakage::DEFAULT_THRESHOLD,
            max_cost: None,
            max_optimizer_tokens: None,
            time_budget_s: None,
            max_iterations: 4,
            candidates: 4,
            demos: 2,
            seed: 0,
            accept: Accept::Bootstrap,
            confidence: 0.9,
            racing: Racing::Halving,
            limit_train: None,
            limit_dev: None,
            limit_test: None,
            model: "smollm2-135m".into(),
            engine: EngineKind::Llama,
            on_overflow: crate::overflow::Overflow::Error,
            constraint: ConstraintBackend::Llguidance,
            batch_size: 4,
            threads: None,
            ctx: None,
            max_tokens: None,
            no_bounds: false,
            chat_template: None,
            weights: engines::WeightFormat::Gguf,
            prefix_cache: None,
            fast_forward: true,
            speculative: true,
        }
    }
}

/// How an iteration's candidates share the train evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Racing {
    /// Every candidate on all of train.
    Off,
    /// Successive halving from a quarter of train: only the better half goes on at each rung.
    #[default]
    Halving,
}

impl Racing {
    fn off() -> Self {
        Racing::Off
    }
}

impl fmt::Display for Racing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Racing::Off => "off",
            Racing::Halving => "halving",
        })
    }
}

impl FromStr for Racing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Racing::Off),
            "halving" => Ok(Racing::Halving),
            other => Err(format!("unknown racing `{other}` (expected halving or off)")),
        }
    }
}

/// Errors of an optimize run.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Task(#[from] crate::task::TaskError),
    #[error("writing {path}: {error}")]
    Write { path: std::path::PathBuf, error: std::io::Error },
    #[error("no record for example `{id}` after evaluating it (split {split})")]
    Missing { id: String, split: String },
    /// The optimizer cannot go on (bad credentials, unknown model, unreachable for several
    /// calls in a row). Everything so far is in the log.
    #[error("optimizer {optimizer}: {message}")]
    Optimizer { optimizer: String, message: String },
}
