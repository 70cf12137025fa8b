//! What the loop reports as it goes ([`Event`]) and who listens ([`Observer`]): the terminal's
//! progress bar, `--json` lines, or a test.

use serde::Serialize;

use super::outcome::{Rejection, Verdict};
use super::records::{ProposalEntry, Spend};

/// One thing that happened in the loop.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Eval {
        split: String,
        prompt_sha256: String,
        examples: usize,
        ran: usize,
        cached: usize,
        mean: f64,
        exact: usize,
    },
    Proposal {
        iteration: usize,
        index: usize,
        proposer: String,
        /// Found in the log (not paid again).
        cached: bool,
        ok: bool,
        error: Option<String>,
        input_tokens: u64,
        output_tokens: u64,
    },
    Candidate {
        iteration: usize,
        index: usize,
        proposer: String,
        prompt_sha256: String,
        train_mean: f64,
        rejected: Option<Rejection>,
    },
    Decision {
        iteration: usize,
        accepted: bool,
        verdict: Verdict,
        reason: String,
    },
    /// After the baseline pass: the smallest mean gain on train the accept rule can detect.
    Power {
        train: usize,
        min_detectable_gain: Option<f64>,
    },
    /// At the start of each iteration and at the end of the loop.
    Progress {
        iteration: usize,
        max_iterations: usize,
        best_train: f64,
        best_dev: f64,
        spend: Spend,
        elapsed_s: f64,
    },
}

impl Event {
    /// The event of an optimizer call (`cached`: found in the log, not paid again).
    pub fn proposal(p: &ProposalEntry, cached: bool) -> Self {
        Event::Proposal {
            iteration: p.iteration,
            index: p.index,
            proposer: p.proposer.clone(),
            cached,
            ok: p.prompt.is_some(),
            error: p.error.clone(),
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
        }
    }
}

/// Receives the loop's [`Event`]s.
pub trait Observer {
    fn event(&mut self, _event: &Event) {}
}

/// Ignores every event.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// Keeps every event (tests, and callers that print after the run).
#[derive(Debug, Default)]
pub struct Recorder(pub Vec<Event>);

impl Observer for Recorder {
    fn event(&mut self, event: &Event) {
        self.0.push(event.clone());
    }
}
