//! `promptloop optimize`: the optimize loop with LLM proposers (`rewrite`, `opro`) behind an
//! OpenAI-compatible, Anthropic or in-process optimizer, the offline `demos` proposer, caps,
//! `--dry-run`, a run directory with `run.jsonl` and `best_prompt.txt`, and `--resume`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use harness::config::{Accept, DemoExcerpt, Racing, RunConfig, Schedule, SearchMode, SearchOptions};
use harness::llm::http::{Api, HttpOptimizer, RetryPolicy};
use harness::llm::local::LocalOptimizer;
use harness::llm::prices::{Price, PriceTable};
use harness::llm::{Optimizer, OptimizerSpec};
use harness::optimize::proposers::meta_prompt;
use harness::optimize::{Event, Observer, OptimizeError, BEST_PROMPT_FILE, LOG_FILE};
use harness::session::{refuse_existing, Session, StartError};
use harness::task::Task;
use indicatif::{ProgressBar, ProgressStyle};

use super::engine_args::EngineArgs;
use super::InputError;

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Task directory (holds task.toml). With --resume, only checked against the run's task.
    #[arg(long, required_unless_present = "resume")]
    pub task: Option<PathBuf>,
    /// Optimizer model: `openai:MODEL` (`OPENAI_API_KEY`, `OPENAI_BASE_URL`), `anthropic:MODEL`
    /// (`ANTHROPIC_API_KEY`), `local:PATH-or-known-name` (in-process), or `none`.
    #[arg(long, default_value_t = SearchOptions::default().optimizer)]
    pub optimizer: OptimizerSpec,
    /// How candidates are made: rewrite, opro, reflect (an LLM diagnoses failures with the
    /// scorer's feedback), demos, edits (field guidance from the feedback, no LLM), merge (two
    /// Pareto-frontier prompts combined), joint (instructions x demos by a bandit), or a
    /// schedule used in turn (e.g. edits,demos,merge). Default: rewrite with an optimizer,
    /// edits,joint without.
    #[arg(long)]
    pub proposer: Option<Schedule>,
    /// Run directory to create (`run.jsonl`, `best_prompt.txt`).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory, with the options it was started with.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    #[arg(long, default_value_t = SearchOptions::default().max_iterations)]
    pub max_iterations: usize,
    /// Candidates per iteration (one optimizer call each with an LLM proposer).
    #[arg(long, default_value_t = SearchOptions::default().candidates)]
    pub candidates: usize,
    /// Demos added per candidate (demos proposer).
    #[arg(long, default_value_t = SearchOptions::default().demos)]
    pub demos: usize,
    /// What part of its document a demo shows: head (the first 1200 characters) or evidence
    /// (the head's first third and a window around each gold value the document states).
    #[arg(long, default_value_t = SearchOptions::default().demo_excerpt, ignore_case = true)]
    pub demo_excerpt: DemoExcerpt,
    /// Where each iteration's proposals start: greedy (the best prompt kept so far) or pareto
    /// (a prompt best on some train example, drawn by how many it leads; GEPA's selection).
    /// The gate is the same either way.
    #[arg(long, default_value_t = SearchOptions::default().search, ignore_case = true)]
    pub search: SearchMode,
    /// Worst train examples shown to the optimizer.
    #[arg(long, default_value_t = SearchOptions::default().worst)]
    pub worst: usize,
    /// Sampling temperature of rewrite calls (opro uses 1.0).
    #[arg(long, default_value_t = SearchOptions::default().temperature)]
    pub temperature: f32,
    /// Output token cap of one optimizer call.
    #[arg(long, default_value_t = SearchOptions::default().optimizer_max_tokens)]
    pub optimizer_max_tokens: u32,
    /// Stop before an optimizer call that could take the spend above this many USD.
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// Stop before an optimizer call that could take the spend above this many tokens.
    #[arg(long, value_name = "N")]
    pub max_optimizer_tokens: Option<u64>,
    /// Wall-clock budget of this process, e.g. 8h, 45m, 1h30m.
    #[arg(long, value_name = "DURATION")]
    pub time_budget: Option<humantime::Duration>,
    /// Timeout of one optimizer HTTP request, e.g. 120s.
    #[arg(long, default_value = "120s", value_name = "DURATION")]
    pub optimizer_timeout: humantime::Duration,
    /// Attempts per optimizer call (retries on 429, 5xx, timeouts, broken answers).
    #[arg(long, default_value_t = 5)]
    pub optimizer_attempts: u32,
    /// Price table (TOML) instead of the built-in one.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Leakage guard: reject an LLM candidate when more than this share of its word n-grams
    /// copy train documents.
    #[arg(long, default_value_t = SearchOptions::default().leak_threshold)]
    pub leak_threshold: f64,
    /// Words per n-gram of the leakage guard.
    #[arg(long, default_value_t = SearchOptions::default().leak_ngram)]
    pub leak_ngram: usize,
    #[arg(long, default_value_t = SearchOptions::default().seed)]
    pub seed: u64,
    /// Acceptance rule: bootstrap (paired, lower bound > 0) or mean.
    #[arg(long, default_value_t = SearchOptions::default().accept, ignore_case = true)]
    pub accept: Accept,
    /// Confidence of the bootstrap interval.
    #[arg(long, default_value_t = SearchOptions::default().confidence)]
    pub confidence: f64,
    /// Held-out gate: how far a candidate's mean dev score may fall below the current prompt's
    /// (non-inferiority margin). 0: a prompt that scores lower on dev is overfit.
    #[arg(long, default_value_t = SearchOptions::default().dev_margin, value_name = "DELTA")]
    pub dev_margin: f64,
    /// Cap on evaluations (rollouts: one example under one prompt), so strategies compare at
    /// equal cost; refused when it allows fewer than 3 proposals.
    #[arg(long, value_name = "N")]
    pub max_evals: Option<usize>,
    /// Reject candidates whose instruction (demos included) takes more prompt tokens.
    #[arg(long, value_name = "N")]
    pub max_prompt_tokens: Option<usize>,
    /// Candidates on train: halving (all on a quarter of train, the better half on twice as
    /// many examples, and so on until one covers all of it) or off (all on all of train).
    #[arg(long, default_value_t = SearchOptions::default().racing, ignore_case = true)]
    pub racing: Racing,
    /// First N train examples only.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// First N dev examples only.
    #[arg(long)]
    pub limit_dev: Option<usize>,
    /// First N test examples only.
    #[arg(long)]
    pub limit_test: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print the plan (evaluations, optimizer calls, tokens, cost) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Progress as JSON lines on stdout (one per event), the summary as the last line.
    #[arg(long)]
    pub json: bool,
}

impl OptimizeArgs {
    /// The run's configuration, parsed and validated once (`--engine auto` routed here).
    fn config(&self, prices: &PriceTable) -> anyhow::Result<RunConfig> {
        let proposer = self.proposer.clone().unwrap_or_else(|| Schedule::default_for(&self.optimizer));
        let search = SearchOptions {
            optimizer: self.optimizer.clone(),
            proposer,
            worst: self.worst,
            temperature: self.temperature,
            optimizer_max_tokens: self.optimizer_max_tokens,
            leak_ngram: self.leak_ngram,
            leak_threshold: self.leak_threshold,
            max_cost: self.max_cost,
            max_optimizer_tokens: self.max_optimizer_tokens,
            time_budget_s: self.time_budget.map(|d| Duration::from(d).as_secs_f64()),
            max_iterations: self.max_iterations,
            candidates: self.candidates,
            demos: self.demos,
            demo_excerpt: self.demo_excerpt,
            search: self.search,
            seed: self.seed,
            accept: self.accept,
            confidence: self.confidence,
            dev_margin: self.dev_margin,
            max_evals: self.max_evals,
            max_prompt_tokens: self.max_prompt_tokens,
            racing: self.racing,
            limit_train: self.limit_train,
            limit_dev: self.limit_dev,
            limit_test: self.limit_test,
        };
        search.validate(prices).map_err(|e| InputError(e.0))?;
        let config = RunConfig { search, engine: self.engine.setup()? };
        config.validate(prices).map_err(|e| InputError(e.0))?;
        Ok(config)
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout: self.optimizer_timeout.into(),
            max_attempts: self.optimizer_attempts.max(1),
            ..RetryPolicy::default()
        }
    }
}

pub fn run(args: &OptimizeArgs, quiet: bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let prices = match &args.prices {
        Some(p) => PriceTable::load(p).map_err(|e| InputError(e.to_string()))?,
        None => PriceTable::builtin(),
    };
    if args.dry_run {
        let config = args.config(&prices)?;
        let task_dir = args.task.as_deref().context("--task is required with --dry-run")?;
        return dry_run(&Task::load(task_dir)?, &config, &prices, args.json);
    }
    // Configuration and task are checked before anything is written or loaded; a fresh run
    // checks the optimizer (canary) before it writes anything.
    let (mut session, connected) = if let Some(dir) = &args.resume {
        let session = Session::resume(dir, args.task.as_deref()).map_err(setup_error)?;
        for w in &session.warnings {
            eprintln!("warning: {w}");
        }
        session.config().validate(&prices).map_err(|e| InputError(e.0))?;
        (session, None)
    } else {
        let config = args.config(&prices)?;
        let task_dir = args.task.as_deref().context("--task is required")?;
        let out = args.out.clone().context("--out is required")?;
        refuse_existing(&out).map_err(setup_error)?;
        let task = Task::load(task_dir)?;
        let optimizer = connect(&config.search, args)?;
        (Session::start(task, &out, config).map_err(setup_error)?, Some(optimizer))
    };
    let config = session.config().clone();
    let price = prices.lookup(&config.search.optimizer);
    let optimizer = match connected {
        Some(o) => o,
        None => connect(&config.search, args)?,
    };
    let engine = session.load_engine().map_err(setup_error)?;
    let cached_before = session.log.evals_logged();
    let dir = session.dir.clone();
    let mut printer = Printer::new(quiet, args.json, config.search.max_iterations);
    let result = session.run(engine.as_ref(), optimizer, price, &mut printer);
    printer.finish();
    let outcome = result.map_err(|e| stopped(e, &dir))?;
    let task = &session.task;
    let options = &config.search;
    let wall_s = t0.elapsed().as_secs_f64();

    let mut stdout = std::io::stdout().lock();
    let s = &outcome.summary;
    if args.json {
        let line = serde_json::json!({
            "event": "summary",
            "task": task.name,
            "run": dir,
            "final": s,
            "evals_run": outcome.evals_run,
            "evals_from_log": cached_before,
            "optimizer_calls_made": outcome.calls_made,
            "best_prompt": dir.join(BEST_PROMPT_FILE),
            "wall_s": wall_s,
        });
        writeln!(stdout, "{line}")?;
        return Ok(());
    }
    writeln!(
        stdout,
        "task {} / {} iterations, {} accepted, stopped by {} / proposer {} / optimizer {}",
        task.name, s.iterations, s.accepted, s.stopped_by, options.proposer, options.optimizer
    )?;
    writeln!(stdout, "evals run {}, from the log {}", outcome.evals_run, cached_before)?;
    if s.spend.calls > 0 {
        let cost = s.spend.cost_usd.map_or_else(|| "price unknown".to_owned(), |c| format!("${c:.4}"));
        writeln!(
            stdout,
            "optimizer calls {} ({} failed, {} made now), tokens {} in / {} out, cost {cost}",
            s.spend.calls, s.spend.failed_calls, outcome.calls_made, s.spend.input_tokens, s.spend.output_tokens
        )?;
    }
    writeln!(stdout)?;
    writeln!(
        stdout,
        "{:<7} {:>8} {:>14} {:>10} {:>15} {:>11}",
        "split", "examples", "baseline mean", "best mean", "baseline exact", "best exact"
    )?;
    for r in &s.rows {
        writeln!(
            stdout,
            "{:<7} {:>8} {:>14.3} {:>10.3} {:>15} {:>11}",
            r.split, r.examples, r.baseline_mean, r.best_mean, r.baseline_exact, r.best_exact
        )?;
    }
    writeln!(stdout)?;
    let demos = if s.best_demo_ids.is_empty() { "none".to_owned() } else { s.best_demo_ids.join(", ") };
    let same = if s.best_sha256 == s.baseline_sha256 { ", the task's own prompt" } else { "" };
    writeln!(stdout, "best prompt     {} (demos: {demos}{same})", dir.join(BEST_PROMPT_FILE).display())?;
    writeln!(stdout, "run log         {}", dir.join(LOG_FILE).display())?;
    writeln!(stdout, "wall time       {wall_s:.1} s")?;
    Ok(())
}

/// The optimizer client for the run's options, checked with one canary call; `None` when the
/// schedule needs none.
fn connect(o: &SearchOptions, args: &OptimizeArgs) -> anyhow::Result<Option<Box<dyn Optimizer>>> {
    let spec = &o.optimizer;
    if spec.is_none() || !o.needs_llm() {
        return Ok(None);
    }
    let http = |api: Api, model: &str, policy: RetryPolicy| {
        HttpOptimizer::from_env(api, model, policy).map_err(|e| InputError(format!("--optimizer {spec}: {e}")))
    };
    // Fail fast: the canary gets at most 2 attempts of at most 30 s, whatever the run's policy.
    let policy = args.retry_policy();
    let canary_policy = RetryPolicy {
        max_attempts: policy.max_attempts.min(2),
        timeout: policy.timeout.min(Duration::from_secs(30)),
        ..policy.clone()
    };
    let (mut canary, opt): (Box<dyn Optimizer>, Option<Box<dyn Optimizer>>) = match spec {
        OptimizerSpec::None => return Ok(None),
        OptimizerSpec::OpenAi { model } => {
            (Box::new(http(Api::OpenAi, model, canary_policy)?), Some(Box::new(http(Api::OpenAi, model, policy)?)))
        }
        OptimizerSpec::Anthropic { model } => {
            (Box::new(http(Api::Anthropic, model, canary_policy)?), Some(Box::new(http(Api::Anthropic, model, policy)?)))
        }
        OptimizerSpec::Local { model } => (
            Box::new(
                LocalOptimizer::load(model, args.engine.threads).map_err(|e| InputError(format!("--optimizer {spec}: {e:#}")))?,
            ),
            None,
        ),
    };
    // One short call checks reachability and credentials before any work.
    let t = Instant::now();
    match canary.canary() {
        Ok(r) => tracing::info!(optimizer = %canary.describe(), ms = r.latency_ms, "canary call answered"),
        Err(e) => {
            return Err(InputError(format!(
                "--optimizer {spec}: the canary call to {} failed after {:.1} s: {e}",
                canary.describe(),
                t.elapsed().as_secs_f64()
            ))
            .into())
        }
    }
    // The local optimizer is its own canary (loaded once).
    let opt = opt.unwrap_or(canary);
    Ok(Some(opt))
}

/// `--dry-run`: the plan, from the task's sizes and the options; nothing is loaded or called.
fn dry_run(task: &Task, config: &RunConfig, prices: &PriceTable, json: bool) -> anyhow::Result<()> {
    let o = &config.search;
    let n = |split: &str, lim: Option<usize>| -> anyhow::Result<usize> {
        let len = task.split(split)?.examples.len();
        Ok(lim.map_or(len, |l| l.min(len)))
    };
    let (train, dev) = (n("train", o.limit_train)?, n("dev", o.limit_dev)?);
    let test = if task.splits.contains_key("test") { n("test", o.limit_test)? } else { 0 };
    o.check_budget(train, dev, test).map_err(|e| InputError(e.0))?;
    let iterations = o.iterations_within_budget(train, dev, test);
    let llm_iterations = (0..iterations).filter(|&i| o.proposer.at(i).needs_llm()).count();
    // Upper bounds: every candidate scored on train, every iteration's best on dev.
    let evals = harness::config::evals_needed(train, dev, test, o.candidates, iterations);
    let calls = llm_iterations * o.candidates;
    // Input tokens of one call: the rewrite meta-prompt with `worst` failures of full size.
    let req = meta_prompt::rewrite_request(task, &task.prompt, &[], &[], o.temperature, o.optimizer_max_tokens, 0);
    let per_failure = (meta_prompt::FAILURE_EXCERPT_CHARS + meta_prompt::OUTPUT_CHARS + 600) as u64 / 3;
    let input_per_call = meta_prompt::estimate_input_tokens(&req) + o.worst as u64 * per_failure;
    let tokens_in = calls as u64 * input_per_call;
    let tokens_out = calls as u64 * u64::from(o.optimizer_max_tokens);
    let price = prices.lookup(&o.optimizer);
    let cost = price.map(|p: Price| p.cost(tokens_in, tokens_out));
    let canary = usize::from(calls > 0);
    if json {
        let line = serde_json::json!({
            "event": "plan",
            "task": task.name,
            "optimizer": o.optimizer.to_string(),
            "proposer": o.proposer.to_string(),
            "iterations": o.max_iterations,
            "examples": {"train": train, "dev": dev, "test": test},
            "candidate_evaluations_max": evals,
            "max_evals": o.max_evals,
            "iterations_within_budget": iterations,
            "dev_margin": o.dev_margin,
            "optimizer_calls_max": calls + canary,
            "optimizer_input_tokens_max": tokens_in,
            "optimizer_output_tokens_max": tokens_out,
            "cost_usd_max": cost,
            "price": price,
        });
        println!("{line}");
        return Ok(());
    }
    println!(
        "plan for task {} ({} iterations, {} candidates each, proposer {}, optimizer {})",
        task.name, o.max_iterations, o.candidates, o.proposer, o.optimizer
    );
    println!("examples          train {train}, dev {dev}, test {test}");
    println!("evaluations       at most {evals} (baseline train+dev, every candidate on train, each iteration's best on dev, baseline and best on test)");
    if let Some(cap) = o.max_evals {
        println!(
            "eval budget       {cap} (--max-evals): at least {iterations} of {} iterations, {} proposals (evaluations actually run are counted: racing and the cache leave room for more)",
            o.max_iterations,
            iterations * o.candidates
        );
    }
    println!(
        "held-out gate     reject a candidate whose dev mean falls below the current prompt's by more than {} (--dev-margin)",
        o.dev_margin
    );
    println!("optimizer calls   at most {} ({calls} proposals + {canary} canary)", calls + canary);
    println!("optimizer tokens  at most ~{tokens_in} in, {tokens_out} out (input estimated from the meta-prompt, output at --optimizer-max-tokens)");
    match (cost, price) {
        (Some(c), Some(p)) => {
            println!("cost              at most ~${c:.4} (${}/M in, ${}/M out; {})", p.input, p.output, prices.source);
        }
        _ => println!("cost              unknown: no price for `{}` in {}", o.optimizer, prices.source),
    }
    Ok(())
}

/// A failure of the loop, with where the run is and how to continue it.
fn stopped(e: OptimizeError, dir: &std::path::Path) -> anyhow::Error {
    match e {
        OptimizeError::Optimizer { .. } => anyhow::anyhow!(
            "{e}\nthe run stopped; everything so far is in {}; continue it with `promptloop optimize --resume {}`",
            dir.join(LOG_FILE).display(),
            dir.display()
        ),
        other => input_if_log(other),
    }
}

/// Set-up errors that are the user's fault become input errors (exit 2).
fn setup_error(err: StartError) -> anyhow::Error {
    if err.is_input() {
        InputError(err.to_string()).into()
    } else {
        err.into()
    }
}

/// Log errors that mean a bad run directory become input errors (exit 2).
fn input_if_log(err: OptimizeError) -> anyhow::Error {
    let input = match &err {
        OptimizeError::Log(l) => l.is_input(),
        OptimizeError::Task(_) => true,
        _ => false,
    };
    if input {
        InputError(err.to_string()).into()
    } else {
        err.into()
    }
}

/// The terminal side of the loop: a progress bar (iteration, best train/dev, spend, ETA) and
/// one line per decision on stderr; or, with `--json`, every event as a JSON line on stdout.
struct Printer {
    json: bool,
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Printer {
    fn new(quiet: bool, json: bool, iterations: usize) -> Self {
        let show = !quiet && !json;
        let bar = (show && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(iterations as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} iteration {pos}/{len} [{bar:20}] {msg} (ETA {eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Printer { json, bar, lines: show }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(bar) => bar.println(s),
            None if self.lines => eprintln!("{s}"),
            None => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Printer {
    fn event(&mut self, e: &Event) {
        if self.json {
            if let Ok(line) = serde_json::to_string(e) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        match e {
            Event::Progress { iteration, best_train, best_dev, spend, elapsed_s, max_iterations } => {
                let cost = spend.cost_usd.map_or_else(|| format!("{} tok", spend.tokens()), |c| format!("${c:.4}"));
                let msg = format!("best train {best_train:.3} dev {best_dev:.3} | spend {cost}");
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(*iteration as u64);
                        bar.set_message(msg);
                    }
                    None => self.line(&format!("[{elapsed_s:.0}s] iteration {iteration}/{max_iterations}: {msg}")),
                }
            }
            Event::Eval { split, prompt_sha256, examples, ran, cached, mean, exact } => self.line(&format!(
                "{split}: prompt {} on {examples} examples ({ran} run, {cached} cached): mean {mean:.3}, exact {exact}",
                &prompt_sha256[..12.min(prompt_sha256.len())]
            )),
            Event::Proposal { iteration, index, proposer, cached, ok, error, input_tokens, output_tokens } => {
                let from = if *cached { " (from the log)" } else { "" };
                let what = if *ok { "ok".to_owned() } else { format!("failed: {}", error.as_deref().unwrap_or("?")) };
                self.line(&format!("iteration {iteration} {proposer} call {index}{from}: {what} ({input_tokens} in / {output_tokens} out tokens)"));
            }
            Event::Candidate { iteration, index, proposer, train_mean, rejected, .. } => match rejected {
                Some(r) => self.line(&format!("iteration {iteration} candidate {index} ({proposer}): {r}")),
                None => self.line(&format!("iteration {iteration} candidate {index} ({proposer}): train mean {train_mean:.3}")),
            },
            Event::Decision { iteration, reason, .. } => self.line(&format!("iteration {iteration}: {reason}")),
            Event::Power { train, min_detectable_gain } => self.line(&match min_detectable_gain {
                Some(g) => format!("the gate can detect a mean train gain of {g:.3} or more on these {train} train examples"),
                None => format!(
                    "the gate cannot detect any gain on these {train} train examples: add train examples or use --accept mean"
                ),
            }),
        }
    }
}
