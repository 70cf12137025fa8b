//! Proposers: what turns the current prompt into an iteration's candidates, behind one
//! [`Proposer`] trait. [`demos::DemosProposer`] adds worked examples (no LLM);
//! [`edits::EditsProposer`] edits field guidance from the scorer's feedback (no LLM);
//! [`merge::MergeProposer`] combines two Pareto-frontier prompts (no LLM);
//! [`joint::JointProposer`] searches instructions and demos together with a bandit (no LLM);
//! [`llm::LlmProposer`] asks the optimizer model (`rewrite`, `opro`) and owns its client, its
//! spend and its caps. [`meta_prompt`] builds what the optimizer model reads.

pub mod demos;
pub mod edits;
pub mod joint;
pub mod llm;
pub mod merge;
pub mod meta_prompt;

use std::time::{Duration, Instant};

use super::events::Observer;
use super::frontier::Member;
use super::log::RunLog;
use super::prompt::Prompt;
use super::OptimizeError;
use crate::config::ProposerKind;
use crate::eval::ExampleRecord;
use crate::task::{Example, Task};

/// What a proposer sees of an iteration.
pub struct Context<'a> {
    pub iteration: usize,
    /// Which proposer of the schedule this iteration runs (an LLM proposer serves two).
    pub kind: ProposerKind,
    pub task: &'a Task,
    pub current: &'a Prompt,
    pub train: &'a [Example],
    /// The current prompt's records of `train`, in order.
    pub current_train: &'a [ExampleRecord],
    /// Every prompt scored on all of train so far (the baseline first), for the frontier.
    pub pool: &'a [Member],
    /// SHA-256 of every prompt proposed in the run so far, the task's own included: a proposer
    /// that can offer something else should (the loop rejects a repeat as a duplicate).
    pub seen: &'a std::collections::HashSet<String>,
    pub clock: Clock,
}

/// One candidate prompt, the optimizer call it came from (LLM proposers), and the prompt it
/// was made from when the proposer chose one (`merge`; else the loop fills in the parent).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub prompt: Prompt,
    pub request_sha256: Option<String>,
    pub parent_sha256: Option<String>,
}

/// An iteration's candidates, and whether a cap cut the iteration short.
#[derive(Debug, Default)]
pub struct Proposed {
    pub candidates: Vec<Candidate>,
    /// Why proposing stopped early (a cap, the time budget): the loop ends after this iteration.
    pub stop: Option<String>,
    /// Optimizer calls that gave no candidate.
    pub failed: usize,
}

impl Proposed {
    /// Candidates of an offline proposer: prompts with no optimizer call behind them.
    pub fn offline(prompts: Vec<Prompt>) -> Proposed {
        Proposed {
            candidates: prompts
                .into_iter()
                .map(|prompt| Candidate { prompt, request_sha256: None, parent_sha256: None })
                .collect(),
            ..Proposed::default()
        }
    }
}

/// Makes candidates from the current prompt.
pub trait Proposer {
    /// This iteration's candidates. Optimizer calls go to (and come back from) `log`.
    fn propose(&mut self, ctx: &Context<'_>, log: &mut RunLog, obs: &mut dyn Observer) -> Result<Proposed, OptimizeError>;

    /// Why an empty proposal ends the loop, or `None` when the loop goes on.
    fn exhausted(&self, _proposed: &Proposed) -> Option<String> {
        None
    }

    /// A prompt of this proposer was scored on train (all of it, or a racing rung).
    fn scored(&mut self, _prompt: &Prompt, _train_mean: f64) {}
}

/// Every proposer of a run, built in one place from the search options: adding a proposer is
/// one arm of [`Registry::new`]'s table (and its [`ProposerKind`]). The LLM proposer serves
/// `rewrite`, `opro` and `reflect` (one client, one spend); the offline ones are built only when
/// the schedule names them.
pub struct Registry {
    offline: Vec<(ProposerKind, Box<dyn Proposer>)>,
    llm: Option<llm::LlmProposer>,
    optimizer: String,
}

impl Registry {
    /// The proposers `opts.proposer` schedules; `optimizer` is the LLM proposers' client.
    pub fn new(
        opts: &crate::config::SearchOptions,
        optimizer: Option<Box<dyn crate::llm::Optimizer>>,
        price: Option<crate::llm::prices::Price>,
    ) -> Self {
        let mut offline: Vec<(ProposerKind, Box<dyn Proposer>)> = Vec::new();
        // `joint` learns from every scored prompt, so it is kept whenever it is scheduled.
        for &kind in &opts.proposer.0 {
            if offline.iter().any(|(k, _)| *k == kind) {
                continue;
            }
            let p: Box<dyn Proposer> = match kind {
                ProposerKind::Demos => Box::new(demos::DemosProposer {
                    candidates: opts.candidates,
                    k: opts.demos,
                    seed: opts.seed,
                    excerpt: opts.demo_excerpt,
                }),
                ProposerKind::Edits => Box::new(edits::EditsProposer { candidates: opts.candidates, seed: opts.seed }),
                ProposerKind::Merge => Box::new(merge::MergeProposer),
                ProposerKind::Joint => Box::new(joint::JointProposer::seeded(opts.candidates, opts.demos, opts.seed)),
                ProposerKind::Rewrite | ProposerKind::Opro | ProposerKind::Reflect => continue,
            };
            offline.push((kind, p));
        }
        let llm = opts.needs_llm().then(|| llm::LlmProposer::new(optimizer, price, opts));
        Registry { offline, llm, optimizer: opts.optimizer.to_string() }
    }

    /// The proposer of `kind`.
    ///
    /// # Errors
    /// An LLM proposer without an optimizer model.
    pub fn get(&mut self, kind: ProposerKind) -> Result<&mut dyn Proposer, OptimizeError> {
        if kind.needs_llm() {
            return match self.llm.as_mut() {
                Some(llm) => Ok(llm),
                None => Err(OptimizeError::Optimizer {
                    optimizer: self.optimizer.clone(),
                    message: format!("proposer `{}` needs an optimizer model (--optimizer)", kind.as_str()),
                }),
            };
        }
        match self.offline.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, p)) => Ok(p.as_mut()),
            None => Err(OptimizeError::Optimizer {
                optimizer: self.optimizer.clone(),
                message: format!("proposer `{}` is not in the schedule", kind.as_str()),
            }),
        }
    }

    /// Tells every proposer that `prompt` scored `train_mean` on train (all of it or a racing
    /// rung), whoever proposed it.
    pub fn scored(&mut self, prompt: &Prompt, train_mean: f64) {
        for (_, p) in &mut self.offline {
            p.scored(prompt, train_mean);
        }
        if let Some(llm) = self.llm.as_mut() {
            llm.scored(prompt, train_mean);
        }
    }

    /// The LLM proposers' spend, when one runs.
    pub fn spend(&self) -> Option<&crate::optimize::records::Spend> {
        self.llm.as_ref().map(llm::LlmProposer::spend)
    }

    /// Optimizer calls made by this process.
    pub fn calls_made(&self) -> usize {
        self.llm.as_ref().map_or(0, llm::LlmProposer::calls_made)
    }
}

/// The wall-clock budget of one process.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
    budget_s: Option<f64>,
}

impl Clock {
    pub fn start(budget_s: Option<f64>) -> Self {
        Clock { started: Instant::now(), budget_s }
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Why the budget is spent, when it is.
    pub fn time_up(&self) -> Option<String> {
        let budget = self.budget_s?;
        (self.elapsed_s() >= budget)
            .then(|| format!("time budget {} used", humantime::format_duration(Duration::from_secs(budget as u64))))
    }
}
