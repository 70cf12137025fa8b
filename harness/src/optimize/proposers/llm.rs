//! The LLM proposers, `rewrite` and `opro`: one optimizer call per candidate. The proposer
//! owns the optimizer client, the run's spend and its caps; every call is logged as a
//! `proposal` record keyed by its request, so a resumed run reuses it instead of paying again.

use super::meta_prompt;
use super::{Candidate, Context, Proposed, Proposer};
use crate::config::{ProposerKind, SearchOptions};
use crate::llm::prices::Price;
use crate::llm::{CallError, ChatRequest, Optimizer};
use crate::optimize::events::{Event, Observer};
use crate::optimize::log::RunLog;
use crate::optimize::prompt::{sha256_hex, Prompt};
use crate::optimize::records::{ProposalEntry, Spend};
use crate::optimize::OptimizeError;
use engines::SplitMix64;

/// Live optimizer calls that may fail in a row (after their own retries) before the run stops.
pub const MAX_FAILED_CALLS_IN_ROW: usize = 3;

/// `rewrite` and `opro`, over one optimizer client.
pub struct LlmProposer {
    client: Option<Box<dyn Optimizer>>,
    /// `--optimizer` as given (part of each request's key).
    optimizer: String,
    price: Option<Price>,
    opts: SearchOptions,
    spend: Spend,
    calls_made: usize,
    /// Live calls that gave up on transport errors, in a row.
    failures_in_row: usize,
    /// Instructions tried, with their train means (for OPRO).
    history: Vec<(String, f64)>,
}

impl LlmProposer {
    /// A proposer calling `client` (`None`: every call is taken from the log or fails with a
    /// clear error), priced at `price` when known.
    pub fn new(client: Option<Box<dyn Optimizer>>, price: Option<Price>, opts: &SearchOptions) -> Self {
        LlmProposer {
            client,
            optimizer: opts.optimizer.to_string(),
            price,
            opts: opts.clone(),
            spend: Spend { cost_usd: price.map(|_| 0.0), ..Spend::default() },
            calls_made: 0,
            failures_in_row: 0,
            history: Vec::new(),
        }
    }

    /// Optimizer spend so far (calls from the log counted too).
    pub fn spend(&self) -> &Spend {
        &self.spend
    }

    /// Calls made by this process (the rest came from the log).
    pub fn calls_made(&self) -> usize {
        self.calls_made
    }

    /// One live optimizer call. Per-call failures become a failed proposal; credentials or a
    /// model the API refuses, or [`MAX_FAILED_CALLS_IN_ROW`] exhausted calls, stop the run.
    fn call(
        &mut self,
        kind: ProposerKind,
        it: usize,
        index: usize,
        req: &ChatRequest,
        request_sha256: String,
    ) -> Result<ProposalEntry, OptimizeError> {
        let name = self.optimizer.clone();
        let Some(opt) = self.client.as_deref_mut() else {
            return Err(OptimizeError::Optimizer {
                optimizer: name,
                message: format!("proposer `{}` needs an optimizer model (--optimizer)", kind.as_str()),
            });
        };
        self.calls_made += 1;
        let mut entry = ProposalEntry {
            iteration: it,
            index,
            proposer: kind.as_str().to_owned(),
            request_sha256,
            answer: None,
            prompt: None,
            error: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: None,
            attempts: 0,
            latency_ms: 0.0,
        };
        match opt.complete(req) {
            Ok(reply) => {
                self.failures_in_row = 0;
                entry.input_tokens = reply.input_tokens;
                entry.output_tokens = reply.output_tokens;
                entry.cost_usd = self.price.map(|p| p.cost(reply.input_tokens, reply.output_tokens));
                entry.attempts = reply.attempts;
                entry.latency_ms = reply.latency_ms;
                match meta_prompt::parse_answer(&reply.text) {
                    Ok(p) => entry.prompt = Some(p),
                    Err(e) => entry.error = Some(format!("malformed answer: {e}")),
                }
                entry.answer = Some(reply.text);
            }
            Err(CallError::Fatal(message)) => {
                return Err(OptimizeError::Optimizer { optimizer: opt.describe(), message });
            }
            Err(e) => {
                if matches!(e, CallError::Exhausted { .. }) {
                    self.failures_in_row += 1;
                    if self.failures_in_row >= MAX_FAILED_CALLS_IN_ROW {
                        return Err(OptimizeError::Optimizer {
                            optimizer: opt.describe(),
                            message: format!("{MAX_FAILED_CALLS_IN_ROW} calls in a row failed; the last: {e}"),
                        });
                    }
                }
                if let CallError::Exhausted { attempts, .. } | CallError::Malformed { attempts, .. } = &e {
                    entry.attempts = *attempts;
                }
                entry.error = Some(e.to_string());
            }
        }
        Ok(entry)
    }

    /// Adds a call to the spend.
    fn account(&mut self, p: &ProposalEntry) {
        self.spend.calls += 1;
        self.spend.failed_calls += usize::from(p.prompt.is_none());
        self.spend.input_tokens += p.input_tokens;
        self.spend.output_tokens += p.output_tokens;
        if let (Some(total), Some(c)) = (self.spend.cost_usd.as_mut(), p.cost_usd) {
            *total += c;
        }
    }

    /// Whether the next call could cross a cap (its input estimated, its output at the cap).
    fn cap_reached(&self, req: &ChatRequest, ctx: &Context<'_>) -> Option<String> {
        if let Some(reason) = ctx.clock.time_up() {
            return Some(reason);
        }
        let next_in = meta_prompt::estimate_input_tokens(req);
        let next_out = u64::from(req.max_tokens);
        if let Some(cap) = self.opts.max_optimizer_tokens {
            if self.spend.tokens() + next_in + next_out > cap {
                return Some(format!(
                    "optimizer token cap {cap} (spent {}, the next call could take up to {})",
                    self.spend.tokens(),
                    next_in + next_out
                ));
            }
        }
        if let (Some(cap), Some(price), Some(spent)) = (self.opts.max_cost, self.price, self.spend.cost_usd) {
            let next = price.cost(next_in, next_out);
            if spent + next > cap {
                return Some(format!("cost cap ${cap:.2} (spent ${spent:.4}, the next call could cost up to ${next:.4})"));
            }
        }
        None
    }
}

impl Proposer for LlmProposer {
    /// `candidates` prompts from the optimizer (one call each), the current demos kept. Calls
    /// found in the log are reused; a cap reached stops the proposing (`stop`).
    fn propose(&mut self, ctx: &Context<'_>, log: &mut RunLog, obs: &mut dyn Observer) -> Result<Proposed, OptimizeError> {
        let opts = self.opts.clone();
        let kind = ctx.kind;
        let it = ctx.iteration;
        let mut out = Proposed::default();
        let failures = meta_prompt::worst(ctx.train, ctx.current_train, opts.worst);
        for index in 0..opts.candidates {
            let seed = SplitMix64::derive(opts.seed, kind.as_str(), (it * 1000 + index) as u64).next_u64() >> 1;
            let req = match kind {
                ProposerKind::Opro => {
                    meta_prompt::opro_request(ctx.task, &self.history, &failures, 1.0, opts.optimizer_max_tokens, seed)
                }
                ProposerKind::Reflect => {
                    // Each candidate reflects on its own random minibatch of the failures.
                    let batch = meta_prompt::minibatch(ctx.train, ctx.current_train, opts.worst, seed);
                    meta_prompt::reflect_request(
                        ctx.task,
                        &ctx.current.base,
                        &batch,
                        opts.temperature,
                        opts.optimizer_max_tokens,
                        seed,
                    )
                }
                _ => meta_prompt::rewrite_request(
                    ctx.task,
                    &ctx.current.base,
                    ctx.current_train,
                    &failures,
                    opts.temperature,
                    opts.optimizer_max_tokens,
                    seed,
                ),
            };
            let canon = serde_json::json!({ "optimizer": self.optimizer, "request": req });
            let request_sha256 = sha256_hex(canon.to_string().as_bytes());
            let entry = if let Some(p) = log.proposal(&request_sha256) {
                let p = p.clone();
                obs.event(&Event::proposal(&p, true));
                p
            } else {
                if let Some(stop) = self.cap_reached(&req, ctx) {
                    out.stop = Some(stop);
                    break;
                }
                let p = self.call(kind, it, index, &req, request_sha256.clone())?;
                log.add_proposal(p.clone())?;
                tracing::info!(iteration = p.iteration, index = p.index, ok = p.prompt.is_some(), error = ?p.error, "optimizer call");
                obs.event(&Event::proposal(&p, false));
                p
            };
            self.account(&entry);
            match entry.prompt {
                Some(text) => {
                    let mut prompt = ctx.current.clone();
                    prompt.base = text;
                    out.candidates.push(Candidate { prompt, request_sha256: Some(request_sha256), parent_sha256: None });
                }
                None => out.failed += 1,
            }
        }
        Ok(out)
    }

    fn exhausted(&self, proposed: &Proposed) -> Option<String> {
        proposed.stop.as_ref().map(|_| "a cap was reached before any candidate".to_owned())
    }

    fn scored(&mut self, prompt: &Prompt, train_mean: f64) {
        self.history.push((prompt.base.clone(), train_mean));
    }
}
