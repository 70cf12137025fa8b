//! `promptloop optimize`: the optimize loop with LLM proposers (`rewrite`, `opro`) behind an
//! OpenAI-compatible, Anthropic or in-process optimizer, the offline `demos` proposer, caps,
//! `--dry-run`, a run directory with `run.jsonl` and `best_prompt.txt`, and `--resume`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use engines::EngineConfig;
use harness::optimize::cache::{engine_key, model_fingerprint, task_sha256, EngineKeyParts};
use harness::optimize::prompt::sha256_hex;
use harness::optimize::records::{Header, ModelFingerprint, FORMAT_VERSION};
use harness::optimize::{
    self, llm, parse_schedule, Accept, Event, LogError, Observer, OptimizeError, Options, ProposerKind, RunLog, Setup,
    BEST_PROMPT_FILE, LOG_FILE,
};
use harness::optimizer::http::{Api, HttpOptimizer, RetryPolicy};
use harness::optimizer::local::LocalOptimizer;
use harness::optimizer::prices::{Price, PriceTable};
use harness::optimizer::{Optimizer, OptimizerSpec};
use harness::task::Task;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::engine_args::{constraint_schema, engine_config, load_engine, route, EngineArgs};
use super::InputError;

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Task directory (holds task.toml). With --resume, only checked against the run's task.
    #[arg(long, required_unless_present = "resume")]
    pub task: Option<PathBuf>,
    /// Optimizer model: `openai:MODEL` (`OPENAI_API_KEY`, `OPENAI_BASE_URL`), `anthropic:MODEL`
    /// (`ANTHROPIC_API_KEY`), `local:PATH-or-known-name` (in-process), or `none`.
    #[arg(long, default_value = "none")]
    pub optimizer: String,
    /// How candidates are made: rewrite, opro, demos, or a schedule used in turn
    /// (e.g. rewrite,rewrite,demos). Default: rewrite with an optimizer, demos without.
    #[arg(long)]
    pub proposer: Option<String>,
    /// Run directory to create (`run.jsonl`, `best_prompt.txt`).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory, with the options it was started with.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub max_iterations: usize,
    /// Candidates per iteration (one optimizer call each with an LLM proposer).
    #[arg(long, default_value_t = 4)]
    pub candidates: usize,
    /// Demos added per candidate (demos proposer).
    #[arg(long, default_value_t = 2)]
    pub demos: usize,
    /// Worst train examples shown to the optimizer.
    #[arg(long, default_value_t = 5)]
    pub worst: usize,
    /// Sampling temperature of rewrite calls (opro uses 1.0).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Output token cap of one optimizer call.
    #[arg(long, default_value_t = 1024)]
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
    #[arg(long, default_value_t = optimize::leakage::DEFAULT_THRESHOLD)]
    pub leak_threshold: f64,
    /// Words per n-gram of the leakage guard.
    #[arg(long, default_value_t = optimize::leakage::DEFAULT_NGRAM)]
    pub leak_ngram: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Acceptance rule: bootstrap (paired, lower bound > 0) or mean.
    #[arg(long, default_value = "bootstrap")]
    pub accept: Accept,
    /// Confidence of the bootstrap interval.
    #[arg(long, default_value_t = 0.9)]
    pub confidence: f64,
    /// Candidates on train: halving (all on a quarter of train, the better half on twice as
    /// many examples, and so on until one covers all of it) or off (all on all of train).
    #[arg(long, default_value = "halving")]
    pub racing: harness::optimize::Racing,
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
    fn options(&self) -> anyhow::Result<Options> {
        let spec = parse_spec(&self.optimizer)?;
        let proposer = self.proposer.clone().unwrap_or_else(|| if spec.is_none() { "demos" } else { "rewrite" }.to_owned());
        let e = &self.engine;
        // `--engine auto` is resolved once, at the start: a resumed run keeps its engine.
        let routed = route(e, &harness::models::resolve(&e.model)?, e.batch_size)?;
        if let Some(note) = &routed.note {
            tracing::warn!("{note}");
        }
        Ok(Options {
            optimizer: spec.to_string(),
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
            seed: self.seed,
            accept: self.accept,
            confidence: self.confidence,
            racing: self.racing,
            limit_train: self.limit_train,
            limit_dev: self.limit_dev,
            limit_test: self.limit_test,
            model: e.model.clone(),
            engine: routed.kind,
            weights: e.engine.weights(),
            on_overflow: e.on_overflow,
            constraint: e.constraint,
            batch_size: e.batch_size,
            threads: e.threads,
            ctx: routed.ctx,
            max_tokens: e.max_tokens,
            no_bounds: e.no_bounds,
            chat_template: e.chat_template.clone(),
            prefix_cache: e.prefix_cache()?,
            fast_forward: e.fast_forward(),
            speculative: e.speculative(),
        })
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout: self.optimizer_timeout.into(),
            max_attempts: self.optimizer_attempts.max(1),
            ..RetryPolicy::default()
        }
    }
}

fn parse_spec(s: &str) -> anyhow::Result<OptimizerSpec> {
    s.parse::<OptimizerSpec>().map_err(|m| InputError(format!("--optimizer: {m}")).into())
}

/// What the engine and the cache need, derived from a task and options.
struct Prepared {
    model: ModelFingerprint,
    config: EngineConfig,
    constraint: Option<Value>,
    max_tokens: u32,
    engine_key: String,
}

pub fn run(args: &OptimizeArgs, quiet: bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let prices = match &args.prices {
        Some(p) => PriceTable::load(p).map_err(|e| InputError(e.to_string()))?,
        None => PriceTable::builtin(),
    };
    if args.dry_run {
        let options = args.options()?;
        check(&options, &prices)?;
        let task_dir = args.task.as_deref().context("--task is required with --dry-run")?;
        return dry_run(&Task::load(task_dir)?, &options, &prices, args.json);
    }
    // Options and task are checked before anything is written or loaded.
    // A fresh run checks the optimizer (canary) before it writes anything.
    let (mut log, task, dir, connected) = if let Some(dir) = &args.resume {
        let (log, task) = resume(dir, args.task.as_deref())?;
        (log, task, dir.clone(), None)
    } else {
        let options = args.options()?;
        check(&options, &prices)?;
        let task_dir = args.task.as_deref().context("--task is required")?;
        let out = args.out.clone().context("--out is required")?;
        refuse_existing(&out)?;
        let task = Task::load(task_dir)?;
        let optimizer = connect(&options, args)?;
        (start(&task, &out, options)?, task, out, Some(optimizer))
    };
    let header = log.header().clone();
    let options = header.options.clone();
    check(&options, &prices)?;
    let spec = parse_spec(&options.optimizer)?;
    let price = prices.lookup(&spec);
    let prep = prepare(&task, &options)?;
    if prep.engine_key != header.engine_key {
        return Err(InputError(format!(
            "{}: the model or engine set-up differs from the run's (model {}, now {}); start a new run",
            log.path().display(),
            header.model.path.display(),
            prep.model.path.display()
        ))
        .into());
    }
    let mut optimizer = match connected {
        Some(o) => o,
        None => connect(&options, args)?,
    };
    let engine = load_engine(options.engine, &prep.config)?;
    let validator = task.validator()?;
    let setup = Setup {
        task: &task,
        engine: engine.as_ref(),
        constraint: prep.constraint.as_ref(),
        validator: &validator,
        max_tokens: prep.max_tokens,
        options: &options,
        out_dir: &dir,
        price,
    };
    let cached_before = log.evals_logged();
    let mut printer = Printer::new(quiet, args.json, options.max_iterations);
    let result = optimize::run(&setup, &mut log, optimizer.as_deref_mut().map(|o| o as &mut dyn Optimizer), &mut printer);
    printer.finish();
    let outcome = result.map_err(|e| stopped(e, &dir))?;
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

/// Everything the user can get wrong in the options, before any work.
fn check(o: &Options, prices: &PriceTable) -> anyhow::Result<()> {
    let bad = |m: String| -> anyhow::Result<()> { Err(InputError(m).into()) };
    let spec = parse_spec(&o.optimizer)?;
    let schedule = parse_schedule(&o.proposer).map_err(|m| InputError(format!("--proposer: {m}")))?;
    if spec.is_none() {
        if let Some(k) = schedule.iter().find(|k| k.needs_llm()) {
            return bad(format!(
                "--proposer {}: `{}` needs an optimizer model; pass --optimizer openai:MODEL, anthropic:MODEL or local:PATH (or use --proposer demos)",
                o.proposer,
                k.as_str()
            ));
        }
    }
    if o.candidates == 0 {
        return bad("--candidates must be at least 1".into());
    }
    if o.demos == 0 && schedule.contains(&ProposerKind::Demos) {
        return bad("--demos must be at least 1".into());
    }
    if o.batch_size == 0 {
        return bad("--batch-size must be at least 1".into());
    }
    if !(o.confidence > 0.0 && o.confidence < 1.0) {
        return bad("--confidence must be between 0 and 1 (exclusive)".into());
    }
    if !(0.0..=1.0).contains(&o.leak_threshold) {
        return bad("--leak-threshold must be between 0 and 1".into());
    }
    if !(0.0..=2.0).contains(&o.temperature) {
        return bad("--temperature must be between 0 and 2".into());
    }
    if o.optimizer_max_tokens == 0 {
        return bad("--optimizer-max-tokens must be at least 1".into());
    }
    if let Some(c) = o.max_cost {
        if !(c >= 0.0 && c.is_finite()) {
            return bad("--max-cost must be a non-negative number of USD".into());
        }
        if prices.lookup(&spec).is_none() {
            return bad(format!(
                "--max-cost: no price is known for `{spec}` in {}; add it to a price table (--prices FILE) or cap tokens with --max-optimizer-tokens",
                prices.source
            ));
        }
    }
    Ok(())
}

/// The optimizer client for the run's options, checked with one canary call; `None` when the
/// schedule needs none.
fn connect(o: &Options, args: &OptimizeArgs) -> anyhow::Result<Option<Box<dyn Optimizer>>> {
    let spec = parse_spec(&o.optimizer)?;
    let needs = parse_schedule(&o.proposer).map_err(InputError)?.iter().any(|k| k.needs_llm());
    if spec.is_none() || !needs {
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
    let (mut canary, opt): (Box<dyn Optimizer>, Option<Box<dyn Optimizer>>) = match &spec {
        OptimizerSpec::None => return Ok(None),
        OptimizerSpec::OpenAi { model } => {
            (Box::new(http(Api::OpenAi, model, canary_policy)?), Some(Box::new(http(Api::OpenAi, model, policy)?)))
        }
        OptimizerSpec::Anthropic { model } => {
            (Box::new(http(Api::Anthropic, model, canary_policy)?), Some(Box::new(http(Api::Anthropic, model, policy)?)))
        }
        OptimizerSpec::Local { model } => (
            Box::new(LocalOptimizer::load(model, o.threads).map_err(|e| InputError(format!("--optimizer {spec}: {e:#}")))?),
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
fn dry_run(task: &Task, o: &Options, prices: &PriceTable, json: bool) -> anyhow::Result<()> {
    let n = |split: &str, lim: Option<usize>| -> anyhow::Result<usize> {
        let len = task.split(split)?.examples.len();
        Ok(lim.map_or(len, |l| l.min(len)))
    };
    let (train, dev) = (n("train", o.limit_train)?, n("dev", o.limit_dev)?);
    let test = if task.splits.contains_key("test") { n("test", o.limit_test)? } else { 0 };
    let schedule = parse_schedule(&o.proposer).map_err(InputError)?;
    let llm_iterations = (0..o.max_iterations).filter(|i| schedule[i % schedule.len()].needs_llm()).count();
    // Upper bounds: every candidate scored on train, every iteration's best on dev.
    let evals = train + dev + o.max_iterations * (o.candidates * train + dev) + 2 * test;
    let calls = llm_iterations * o.candidates;
    // Input tokens of one call: the rewrite meta-prompt with `worst` failures of full size.
    let req = llm::rewrite_request(task, &task.prompt, &[], &[], o.temperature, o.optimizer_max_tokens, 0);
    let per_failure = (llm::FAILURE_EXCERPT_CHARS + llm::OUTPUT_CHARS + 600) as u64 / 3;
    let input_per_call = llm::estimate_input_tokens(&req) + o.worst as u64 * per_failure;
    let tokens_in = calls as u64 * input_per_call;
    let tokens_out = calls as u64 * u64::from(o.optimizer_max_tokens);
    let spec = parse_spec(&o.optimizer)?;
    let price = prices.lookup(&spec);
    let cost = price.map(|p: Price| p.cost(tokens_in, tokens_out));
    let canary = usize::from(calls > 0);
    if json {
        let line = serde_json::json!({
            "event": "plan",
            "task": task.name,
            "optimizer": o.optimizer,
            "proposer": o.proposer,
            "iterations": o.max_iterations,
            "examples": {"train": train, "dev": dev, "test": test},
            "candidate_evaluations_max": evals,
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
    println!("optimizer calls   at most {} ({calls} proposals + {canary} canary)", calls + canary);
    println!("optimizer tokens  at most ~{tokens_in} in, {tokens_out} out (input estimated from the meta-prompt, output at --optimizer-max-tokens)");
    match (cost, price) {
        (Some(c), Some(p)) => {
            println!("cost              at most ~${c:.4} (${}/M in, ${}/M out; {})", p.input, p.output, prices.source)
        }
        _ => println!("cost              unknown: no price for `{}` in {}", o.optimizer, prices.source),
    }
    Ok(())
}

/// A failure of the loop, with where the run is and how to continue it.
fn stopped(e: OptimizeError, dir: &Path) -> anyhow::Error {
    match e {
        OptimizeError::Optimizer { .. } => anyhow::anyhow!(
            "{e}\nthe run stopped; everything so far is in {}; continue it with `promptloop optimize --resume {}`",
            dir.join(LOG_FILE).display(),
            dir.display()
        ),
        other => input_if_log(other),
    }
}

fn refuse_existing(out: &Path) -> anyhow::Result<()> {
    let path = out.join(LOG_FILE);
    if path.exists() {
        let task = optimize::log::read_header(&path).map_or_else(|_| "?".to_owned(), |h| h.task);
        return Err(input_if_log(LogError::Exists { path, task }));
    }
    Ok(())
}

/// A fresh run: the header, written before anything is evaluated.
fn start(task: &Task, out: &Path, options: Options) -> anyhow::Result<RunLog> {
    task.split("train")?;
    task.split("dev")?;
    let prep = prepare(task, &options)?;
    let header = Header {
        format: FORMAT_VERSION,
        promptloop_version: env!("CARGO_PKG_VERSION").into(),
        task: task.name.clone(),
        task_dir: task.dir.clone(),
        task_sha256: task_sha256(task).context("hashing the task files")?,
        model: prep.model,
        engine_kind: options.engine,
        engine: prep.config,
        constraint: options.constraint,
        constraint_schema_sha256: prep.constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes())),
        max_tokens: prep.max_tokens,
        engine_key: prep.engine_key,
        seed: options.seed,
        options,
        started_at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        baseline_prompt: Some(task.prompt.clone()),
    };
    RunLog::create(out, header).map_err(input_if_log)
}

/// An existing run: recovered log and its task, checked against `--task` when given.
fn resume(dir: &Path, task_arg: Option<&Path>) -> anyhow::Result<(RunLog, Task)> {
    if !dir.join(LOG_FILE).exists() {
        return Err(InputError(format!("--resume {}: no {LOG_FILE} there (not a run directory)", dir.display())).into());
    }
    let (log, warnings) = RunLog::resume(dir).map_err(input_if_log)?;
    for w in warnings {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    let h = log.header();
    if h.format != FORMAT_VERSION {
        return Err(InputError(format!(
            "{}: log format {} is not this version's ({FORMAT_VERSION}); start a new run",
            log.path().display(),
            h.format
        ))
        .into());
    }
    if let Some(given) = task_arg {
        let task = Task::load(given)?;
        if task.name != h.task || task.dir != h.task_dir {
            return Err(InputError(format!(
                "{} is a run of task `{}` ({}), not of `{}` ({})",
                dir.display(),
                h.task,
                h.task_dir.display(),
                task.name,
                task.dir.display()
            ))
            .into());
        }
    }
    let task = Task::load(&h.task_dir).with_context(|| format!("loading the task of {}", dir.display()))?;
    let now = task_sha256(&task).context("hashing the task files")?;
    if now != h.task_sha256 {
        return Err(InputError(format!(
            "the files of task `{}` ({}) changed since {} started; start a new run",
            h.task,
            h.task_dir.display(),
            dir.display()
        ))
        .into());
    }
    Ok((log, task))
}

fn prepare(task: &Task, o: &Options) -> anyhow::Result<Prepared> {
    let model_path = harness::models::resolve(&o.model)?;
    let model = model_fingerprint(&model_path).with_context(|| format!("reading {}", model_path.display()))?;
    let mut config = engine_config(&model_path, o.ctx, o.threads, o.batch_size, o.constraint, o.chat_template.as_deref());
    config.weights = o.weights;
    config.prefix_cache.clone_from(&o.prefix_cache);
    config.fast_forward = o.fast_forward;
    config.speculative = o.speculative;
    let (constraint, _) = constraint_schema(task, o.constraint, o.no_bounds)?;
    let max_tokens = o.max_tokens.unwrap_or(task.max_tokens);
    let schema_sha = constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes()));
    let engine_key = engine_key(&EngineKeyParts {
        model: &model,
        kind: o.engine,
        overflow: o.on_overflow,
        constraint: o.constraint,
        constraint_schema_sha256: schema_sha.as_deref(),
        max_tokens,
        config: &config,
    });
    Ok(Prepared { model, config, constraint, max_tokens, engine_key })
}

/// Log errors that mean a bad run directory become input errors (exit 2).
fn input_if_log<E: Into<anyhow::Error>>(err: E) -> anyhow::Error {
    let err: anyhow::Error = err.into();
    let input = err.chain().any(|e| {
        e.downcast_ref::<LogError>().is_some_and(LogError::is_input)
            || match e.downcast_ref::<OptimizeError>() {
                Some(OptimizeError::Log(l)) => l.is_input(),
                Some(OptimizeError::Task(_)) => true,
                _ => false,
            }
    });
    if input {
        InputError(err.to_string()).into()
    } else {
        err
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
        }
    }
}
