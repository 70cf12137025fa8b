//! The optimize loop itself: evaluate (through the cache), propose, gate on train, gate on
//! dev, log, repeat; then baseline against best on every split.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use engines::Engine;
use serde::Serialize;
use serde_json::Value;

use super::bootstrap::{self, Interval, RESAMPLES};
use super::cache::CacheKey;
use super::demos;
use super::leakage::Guard;
use super::llm;
use super::log::{LogError, RunLog};
use super::prompt::{sha256_hex, Prompt};
use super::records::{
    CandidateEntry, DecisionEntry, EvalEntry, FinalEntry, GateEntry, IdScore, LogRecord, ProposalEntry, Spend, SplitRow,
};
use super::rng::SplitMix64;
use super::{parse_schedule, Accept, OptimizeError, Options, ProposerKind, Racing};
use crate::eval::{self, EvalSpec, ExampleRecord, PromptSpec, Reporter};
use crate::optimizer::prices::Price;
use crate::optimizer::{CallError, ChatRequest, Optimizer};
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
    /// Price of the optimizer model; `None` when unknown (spend then counts tokens only).
    pub price: Option<Price>,
}

/// What the loop reports as it goes (the terminal's progress bar, or `--json` lines).
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
        rejected: Option<String>,
    },
    Decision {
        iteration: usize,
        accepted: bool,
        reason: String,
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

/// Receives the loop's [`Event`]s.
pub trait Observer {
    fn event(&mut self, _event: &Event) {}
}

/// What a finished run returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: FinalEntry,
    pub best_prompt: String,
    /// Evals run by this process (the rest came from the log).
    pub evals_run: usize,
    /// Optimizer calls made by this process (the rest came from the log).
    pub calls_made: usize,
}

/// Runs (or, on a resumed log, continues) the loop to its end. `optimizer` is needed when the
/// schedule holds an LLM proposer.
pub fn run(
    setup: &Setup<'_>,
    log: &mut RunLog,
    optimizer: Option<&mut dyn Optimizer>,
    observer: &mut dyn Observer,
) -> Result<Outcome, OptimizeError> {
    let engine_key = log.header().engine_key.clone();
    let batch = setup.engine.info().capabilities.max_batch.max(1);
    let schedule = parse_schedule(&setup.options.proposer)
        .map_err(|message| OptimizeError::Optimizer { optimizer: setup.options.optimizer.clone(), message })?;
    let train_texts = setup.task.split("train")?.examples.iter().map(|e| e.text.as_str());
    let guard = Guard::new(train_texts, setup.options.leak_ngram, setup.options.leak_threshold);
    let mut lp = Loop {
        s: setup,
        log,
        obs: observer,
        optimizer,
        engine_key,
        batch,
        schedule,
        guard,
        spend: Spend { cost_usd: setup.price.map(|_| 0.0), ..Spend::default() },
        calls_made: 0,
        failures_in_row: 0,
        started: Instant::now(),
        history: Vec::new(),
        drafts: HashMap::new(),
    };
    lp.run()
}

struct Loop<'a, 'l, 'o> {
    s: &'a Setup<'a>,
    log: &'l mut RunLog,
    obs: &'l mut dyn Observer,
    optimizer: Option<&'o mut dyn Optimizer>,
    engine_key: String,
    batch: usize,
    schedule: Vec<ProposerKind>,
    guard: Guard,
    spend: Spend,
    calls_made: usize,
    /// Live calls that gave up on transport errors, in a row.
    failures_in_row: usize,
    started: Instant,
    /// Instructions tried, with their train means (for OPRO).
    history: Vec<(String, f64)>,
    /// By split, each example's latest output: the draft of its next eval (the documents stay,
    /// the prompt changes, and most of the output with it stays too). Filled from every
    /// evaluate call's records, logged or run, so a resumed run drafts as an uninterrupted one.
    drafts: HashMap<String, eval::Drafts>,
}

/// Live optimizer calls that may fail in a row (after their own retries) before the run stops.
pub const MAX_FAILED_CALLS_IN_ROW: usize = 3;

/// Candidates of one iteration, and whether a cap cut the iteration short.
struct Proposed {
    candidates: Vec<(Prompt, Option<String>)>,
    stop: Option<String>,
    failed: usize,
}

impl Loop<'_, '_, '_> {
    fn run(&mut self) -> Result<Outcome, OptimizeError> {
        let opts = self.s.options;
        let task = self.s.task;
        let train = limit(&task.split("train")?.examples, opts.limit_train);
        let dev = limit(&task.split("dev")?.examples, opts.limit_dev);

        let baseline = Prompt::new(task.prompt.clone(), task.framing.clone());
        let mut current = baseline.clone();
        self.write_best(&current)?;
        let mut cur_train = self.evaluate(&current, "train", train)?;
        let mut cur_dev = self.evaluate(&current, "dev", dev)?;
        let (base_train, base_dev) = (cur_train.clone(), cur_dev.clone());
        self.history.push((baseline.base.clone(), mean_score(&base_train)));
        let (mut iterations, mut accepted) = (0, 0);
        let mut stopped_by = "max iterations".to_owned();

        for it in 0..opts.max_iterations {
            self.progress(it, &cur_train, &cur_dev);
            if let Some(reason) = self.time_up() {
                stopped_by = reason;
                break;
            }
            iterations = it + 1;
            let kind = self.schedule[it % self.schedule.len()];
            let proposed = match kind {
                ProposerKind::Demos => {
                    let pool = demos::failing_pool(&current, train, &cur_train);
                    let c = demos::propose(&current, &pool, opts.candidates, opts.demos, opts.seed, it);
                    Proposed { candidates: c.into_iter().map(|p| (p, None)).collect(), stop: None, failed: 0 }
                }
                ProposerKind::Rewrite | ProposerKind::Opro => self.propose_llm(kind, it, &current, train, &cur_train)?,
            };
            let mut best: Option<(usize, Prompt, Vec<ExampleRecord>)> = None;
            let mut entries = Vec::new();
            for (index, (cand, request_sha256)) in proposed.candidates.into_iter().enumerate() {
                let mut entry = CandidateEntry {
                    iteration: it,
                    index,
                    proposer: kind.as_str().to_owned(),
                    prompt_sha256: cand.sha256(),
                    prompt: cand.text(),
                    demo_ids: cand.demo_ids(),
                    request_sha256,
                    rejected: None,
                    overlap: None,
                    train_mean: 0.0,
                    scores: Vec::new(),
                };
                if kind.needs_llm() {
                    let (overlap, leak) = self.guard.check(&cand.base, &[&current.base, &baseline.base]);
                    entry.overlap = Some(overlap);
                    entry.rejected = leak;
                    if entry.rejected.is_none() && cand.base.trim() == current.base.trim() {
                        entry.rejected = Some("rejected: duplicate of the current prompt".into());
                    }
                }
                entries.push((entry, cand));
            }
            let finalists = self.race(&mut entries, train, &cur_train)?;
            for (entry, cand) in entries {
                let index = entry.index;
                if kind.needs_llm() && !entry.scores.is_empty() {
                    self.history.push((cand.base.clone(), entry.train_mean));
                }
                self.candidate(entry)?;
                if let Some(recs) = finalists.iter().find(|f| f.0 == index).map(|f| f.1.clone()) {
                    if best.as_ref().is_none_or(|b| mean_score(&recs) > mean_score(&b.2)) {
                        best = Some((index, cand, recs));
                    }
                }
            }
            let Some((index, cand, cand_train)) = best else {
                let reason = match (kind, proposed.stop.is_some()) {
                    (ProposerKind::Demos, _) => "stopped: no failing train example left to draw demos from".to_owned(),
                    (_, true) => "stopped: a cap was reached before any candidate".to_owned(),
                    _ => format!("rejected: no usable candidate ({} optimizer calls failed)", proposed.failed),
                };
                let stop = reason.starts_with("stopped");
                self.decide(DecisionEntry {
                    iteration: it,
                    candidate: None,
                    prompt_sha256: None,
                    accepted: false,
                    reason: reason.clone(),
                    train: None,
                    dev: None,
                })?;
                if stop {
                    stopped_by = proposed.stop.unwrap_or(reason);
                    break;
                }
                continue;
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
            if gain {
                let cand_dev = self.evaluate(&cand, "dev", dev)?;
                let (dev_gate, dev_interval) = self.gate(&cand_dev, &cur_dev, "dev-gate", it);
                let overfit = match dev_interval {
                    Some(i) => i.upper < 0.0,
                    None => dev_gate.candidate_mean < dev_gate.current_mean,
                };
                decision.dev = Some(dev_gate.clone());
                if overfit {
                    decision.reason = format!(
                        "rejected: overfit: wins on train but loses on dev (dev mean {:.4} vs {:.4})",
                        dev_gate.candidate_mean, dev_gate.current_mean
                    );
                } else {
                    decision.accepted = true;
                    decision.reason = "accepted".into();
                    current = cand;
                    cur_train = cand_train;
                    cur_dev = cand_dev;
                    accepted += 1;
                    self.write_best(&current)?;
                }
            } else {
                decision.reason = match interval {
                    Some(i) => format!(
                        "rejected: no gain on train (mean delta {:+.4}, bootstrap lower bound {:+.4} at {})",
                        i.mean_delta, i.lower, i.confidence
                    ),
                    None => format!("rejected: no gain on train (mean delta {:+.4})", gate.candidate_mean - gate.current_mean),
                };
            }
            self.decide(decision)?;
            if let Some(stop) = proposed.stop {
                stopped_by = stop;
                break;
            }
        }
        self.progress(iterations, &cur_train, &cur_dev);

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
            stopped_by,
            spend: self.spend.clone(),
            rows,
        };
        self.log.emit(&LogRecord::Final(summary.clone()))?;
        Ok(Outcome { summary, best_prompt: current.text(), evals_run: self.log.evals_run(), calls_made: self.calls_made })
    }

    /// `count` candidates from the optimizer (one call each), the current demos kept. Calls
    /// found in the log are reused; a cap reached stops the proposing (`stop`).
    fn propose_llm(
        &mut self,
        kind: ProposerKind,
        it: usize,
        current: &Prompt,
        train: &[Example],
        cur_train: &[ExampleRecord],
    ) -> Result<Proposed, OptimizeError> {
        let opts = self.s.options;
        let mut out = Proposed { candidates: Vec::new(), stop: None, failed: 0 };
        let failures = llm::worst(train, cur_train, opts.worst);
        for index in 0..opts.candidates {
            let seed = SplitMix64::derive(opts.seed, kind.as_str(), (it * 1000 + index) as u64).next_u64() >> 1;
            let req = match kind {
                ProposerKind::Opro => {
                    llm::opro_request(self.s.task, &self.history, &failures, 1.0, opts.optimizer_max_tokens, seed)
                }
                _ => llm::rewrite_request(
                    self.s.task,
                    &current.base,
                    cur_train,
                    &failures,
                    opts.temperature,
                    opts.optimizer_max_tokens,
                    seed,
                ),
            };
            let canon = serde_json::json!({ "optimizer": opts.optimizer, "request": req });
            let request_sha256 = sha256_hex(canon.to_string().as_bytes());
            let entry = if let Some(p) = self.log.proposal(&request_sha256) {
                let p = p.clone();
                self.proposal_event(&p, true);
                p
            } else {
                if let Some(stop) = self.cap_reached(&req) {
                    out.stop = Some(stop);
                    break;
                }
                let p = self.call(kind, it, index, &req, request_sha256.clone())?;
                self.log.add_proposal(p.clone())?;
                self.proposal_event(&p, false);
                p
            };
            self.account(&entry);
            match entry.prompt {
                Some(text) => {
                    let mut cand = current.clone();
                    cand.base = text;
                    out.candidates.push((cand, Some(request_sha256)));
                }
                None => out.failed += 1,
            }
        }
        Ok(out)
    }

    /// One live optimizer call. Per-call failures become a failed proposal; credentials or
    /// a model the API refuses, or [`MAX_FAILED_CALLS_IN_ROW`] exhausted calls, stop the run.
    fn call(
        &mut self,
        kind: ProposerKind,
        it: usize,
        index: usize,
        req: &ChatRequest,
        request_sha256: String,
    ) -> Result<ProposalEntry, OptimizeError> {
        let name = self.s.options.optimizer.clone();
        let Some(opt) = self.optimizer.as_deref_mut() else {
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
                entry.cost_usd = self.s.price.map(|p| p.cost(reply.input_tokens, reply.output_tokens));
                entry.attempts = reply.attempts;
                entry.latency_ms = reply.latency_ms;
                match llm::parse_answer(&reply.text) {
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
    fn cap_reached(&self, req: &ChatRequest) -> Option<String> {
        if let Some(reason) = self.time_up() {
            return Some(reason);
        }
        let opts = self.s.options;
        let next_in = llm::estimate_input_tokens(req);
        let next_out = u64::from(req.max_tokens);
        if let Some(cap) = opts.max_optimizer_tokens {
            if self.spend.tokens() + next_in + next_out > cap {
                return Some(format!(
                    "optimizer token cap {cap} (spent {}, the next call could take up to {})",
                    self.spend.tokens(),
                    next_in + next_out
                ));
            }
        }
        if let (Some(cap), Some(price), Some(spent)) = (opts.max_cost, self.s.price, self.spend.cost_usd) {
            let next = price.cost(next_in, next_out);
            if spent + next > cap {
                return Some(format!("cost cap ${cap:.2} (spent ${spent:.4}, the next call could cost up to ${next:.4})"));
            }
        }
        None
    }

    fn time_up(&self) -> Option<String> {
        let budget = self.s.options.time_budget_s?;
        let used = self.started.elapsed().as_secs_f64();
        (used >= budget)
            .then(|| format!("time budget {} used", humantime::format_duration(std::time::Duration::from_secs(budget as u64))))
    }

    fn progress(&mut self, iteration: usize, train: &[ExampleRecord], dev: &[ExampleRecord]) {
        let e = Event::Progress {
            iteration,
            max_iterations: self.s.options.max_iterations,
            best_train: mean_score(train),
            best_dev: mean_score(dev),
            spend: self.spend.clone(),
            elapsed_s: self.started.elapsed().as_secs_f64(),
        };
        self.obs.event(&e);
    }

    fn proposal_event(&mut self, p: &ProposalEntry, cached: bool) {
        if !cached {
            tracing::info!(iteration = p.iteration, index = p.index, ok = p.prompt.is_some(), error = ?p.error, "optimizer call");
        }
        self.obs.event(&Event::Proposal {
            iteration: p.iteration,
            index: p.index,
            proposer: p.proposer.clone(),
            cached,
            ok: p.prompt.is_some(),
            error: p.error.clone(),
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
        });
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

    /// Evaluates the iteration's candidates (those not already rejected) on train and returns
    /// the ones evaluated on all of it, with their records. With `--racing halving`, every
    /// candidate first runs on a minibatch of train (a quarter, at least one engine batch);
    /// at each rung the better half, by mean gain over the current prompt on the same
    /// examples, goes on to twice as many examples, until one rung covers all of train. The
    /// dropped ones are logged as rejected with their partial scores. Evals are cached, so a
    /// finalist never re-runs an example. Acceptance still uses full train and dev passes.
    fn race(
        &mut self,
        entries: &mut [(CandidateEntry, Prompt)],
        train: &[Example],
        cur_train: &[ExampleRecord],
    ) -> Result<Vec<(usize, Vec<ExampleRecord>)>, OptimizeError> {
        let n = train.len();
        let mut alive: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].0.rejected.is_none()).collect();
        let mut size = match self.s.options.racing {
            Racing::Halving if alive.len() > 1 => n.div_ceil(4).max(self.batch).min(n),
            _ => n,
        };
        loop {
            let mut rung = Vec::with_capacity(alive.len());
            for &i in &alive {
                let recs = self.evaluate(&entries[i].1, "train", &train[..size])?;
                let delta = mean_score(&recs) - mean_score(&cur_train[..size]);
                let entry = &mut entries[i].0;
                entry.train_mean = mean_score(&recs);
                entry.scores = recs.iter().map(|r| IdScore { id: r.id.clone(), score: r.score }).collect();
                rung.push((i, delta, recs));
            }
            if size == n {
                return Ok(rung.into_iter().map(|(i, _, recs)| (entries[i].0.index, recs)).collect());
            }
            // The better half by paired gain (ties: the earlier candidate) goes on.
            let mut order: Vec<usize> = (0..rung.len()).collect();
            order.sort_by(|&a, &b| rung[b].1.total_cmp(&rung[a].1).then(rung[a].0.cmp(&rung[b].0)));
            let keep = rung.len().div_ceil(2);
            for &r in &order[keep..] {
                let (i, delta, _) = &rung[r];
                entries[*i].0.rejected = Some(format!(
                    "racing: dropped after {size} of {n} train examples (mean gain {delta:+.4} over the current prompt on them; {keep} of {} went on)",
                    rung.len()
                ));
            }
            alive = order[..keep].iter().map(|&r| rung[r].0).collect();
            alive.sort_unstable();
            size = (size * 2).min(n);
        }
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
                    prompt: PromptSpec { instruction: text, layout: self.s.task.layout, framing: &self.s.task.framing },
                    fields: &self.s.task.fields,
                    constraint: self.s.constraint,
                    validator: self.s.validator,
                    max_tokens: self.s.max_tokens,
                    overflow: self.s.options.on_overflow,
                    drafts: self.drafts.get(split),
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
        self.drafts.entry(split.to_owned()).or_default().extend(eval::drafts_from(&records));
        tracing::info!(split, prompt = &prompt_sha[..12], ran, mean = mean_score(&records), "eval");
        self.obs.event(&Event::Eval {
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
        tracing::info!(iteration = d.iteration, reason = %d.reason, "decision");
        self.obs.event(&Event::Decision { iteration: d.iteration, accepted: d.accepted, reason: d.reason.clone() });
        self.log.emit(&LogRecord::Decision(d))?;
        Ok(())
    }

    fn key(&self, sha: &str, id: &str) -> CacheKey {
        CacheKey { instruction_sha256: sha.to_owned(), example_id: id.to_owned(), engine_key: self.engine_key.clone() }
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
            logged_at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
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
