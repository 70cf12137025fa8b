//! `promptloop optimize`: a search over prompts, scored on train, gated on dev, logged so that
//! a stopped run continues where it left off.
//!
//! One iteration: a [`proposers::Proposer`] turns the current prompt into candidates (`demos`:
//! worked examples drawn from failing train examples; `rewrite` and `opro`: the optimizer
//! model), the [`leakage`] guard screens them, [`racing`] scores them on train, the best by mean
//! must beat the current prompt on the same examples ([`gate`]: a paired [`bootstrap`] lower
//! bound above 0, or a higher mean), and then must not lose on dev (held out: never shown in a
//! prompt). At the end, baseline and best are scored on test. Outcomes are typed
//! ([`outcome`]).
//!
//! Everything goes to `run.jsonl` (see [`log`] and [`records`]); evals go through the
//! [`evaluator::Evaluator`], cached by the instruction rendered for the example, the example and
//! the engine ([`cache`]).

pub mod bootstrap;
pub mod cache;
pub mod evaluator;
pub mod events;
pub mod frontier;
pub mod gate;
pub mod leakage;
pub mod log;
pub mod outcome;
pub mod prompt;
pub mod proposers;
pub mod racing;
pub mod records;
mod search;
#[cfg(test)]
mod tests;

pub use events::{Event, Observer};
pub use log::{LogError, RunLog, LOG_FILE};
pub use outcome::{Rejection, Verdict};
pub use prompt::Prompt;
pub use search::{run, LoopInputs, RunOutcome, BEST_PROMPT_FILE};

/// Errors of an optimize run.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Task(#[from] crate::task::TaskError),
    #[error("writing {path}: {error}")]
    Write { path: std::path::PathBuf, error: std::io::Error },
    /// The engine could not count a prompt's tokens.
    #[error("counting prompt tokens: {0}")]
    Engine(engines::EngineError),
    #[error("no record for example `{id}` after evaluating it (split {split})")]
    Missing { id: String, split: String },
    /// The optimizer cannot go on (bad credentials, unknown model, unreachable for several
    /// calls in a row). Everything so far is in the log.
    #[error("optimizer {optimizer}: {message}")]
    Optimizer { optimizer: String, message: String },
}
