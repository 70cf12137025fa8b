//! `promptloop optimize`: the offline optimize loop (`--optimizer none --proposer demos`), a
//! run directory with `run.jsonl` and `best_prompt.txt`, and `--resume`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use engines::{ConstraintBackend, Engine, EngineConfig, EngineKind};
use harness::optimize::cache::{engine_key, model_fingerprint, task_sha256, EngineKeyParts};
use harness::optimize::prompt::sha256_hex;
use harness::optimize::records::{Header, ModelFingerprint, FORMAT_VERSION};
use harness::optimize::{self, Accept, LogError, Observer, OptimizeError, Options, RunLog, Setup, BEST_PROMPT_FILE, LOG_FILE};
use harness::task::Task;
use serde_json::Value;

use super::InputError;

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Task directory (holds task.toml). With --resume, only checked against the run's task.
    #[arg(long, required_unless_present = "resume")]
    pub task: Option<PathBuf>,
    /// Optimizer LLM: `none` (the only one built so far).
    #[arg(long, default_value = "none")]
    pub optimizer: String,
    /// How candidates are made: `demos` (worked examples from failing train examples).
    #[arg(long, default_value = "demos")]
    pub proposer: String,
    /// Run directory to create (`run.jsonl`, `best_prompt.txt`).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory, with the options it was started with.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub max_iterations: usize,
    /// Candidates per iteration.
    #[arg(long, default_value_t = 4)]
    pub candidates: usize,
    /// Demos added per candidate.
    #[arg(long, default_value_t = 2)]
    pub demos: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Acceptance rule: bootstrap (paired, lower bound > 0) or mean.
    #[arg(long, default_value = "bootstrap")]
    pub accept: Accept,
    /// Confidence of the bootstrap interval.
    #[arg(long, default_value_t = 0.9)]
    pub confidence: f64,
    /// First N train examples only.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// First N dev examples only.
    #[arg(long)]
    pub limit_dev: Option<usize>,
    /// First N test examples only.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// GGUF path or a known name (smollm2-135m, gemma3-270m).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    #[arg(long, default_value = "llama")]
    pub engine: EngineKind,
    /// How the JSON Schema is enforced: llguidance, gbnf or none.
    #[arg(long, default_value = "llguidance")]
    pub constraint: ConstraintBackend,
    #[arg(long, default_value_t = 4)]
    pub batch_size: u32,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub ctx: Option<u32>,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub no_bounds: bool,
    #[arg(long)]
    pub chat_template: Option<String>,
    /// Print the final summary as one JSON object (the last line on stdout).
    #[arg(long)]
    pub json: bool,
}

impl OptimizeArgs {
    fn options(&self) -> Options {
        Options {
            optimizer: self.optimizer.clone(),
            proposer: self.proposer.clone(),
            max_iterations: self.max_iterations,
            candidates: self.candidates,
            demos: self.demos,
            seed: self.seed,
            accept: self.accept,
            confidence: self.confidence,
            limit_train: self.limit_train,
            limit_dev: self.limit_dev,
            limit_test: self.limit_test,
            model: self.model.clone(),
            engine: self.engine,
            constraint: self.constraint,
            batch_size: self.batch_size,
            threads: self.threads,
            ctx: self.ctx,
            max_tokens: self.max_tokens,
            no_bounds: self.no_bounds,
            chat_template: self.chat_template.clone(),
        }
    }
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
    let chatty = !quiet && !args.json;
    let (mut log, dir) = if let Some(dir) = &args.resume {
        (resume(dir, args.task.as_deref())?, dir.clone())
    } else {
        let options = args.options();
        check(&options)?;
        let task_dir = args.task.as_deref().context("--task is required")?;
        let out = args.out.clone().context("--out is required")?;
        (start(task_dir, &out, options)?, out)
    };
    let header = log.header().clone();
    let options = header.options.clone();
    check(&options)?;
    let task = Task::load(&header.task_dir)?;
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
    };
    let cached_before = log.evals_logged();
    let outcome = optimize::run(&setup, &mut log, &mut Printer { on: chatty }).map_err(input_if_log)?;
    let wall_s = t0.elapsed().as_secs_f64();

    let mut stdout = std::io::stdout().lock();
    if args.json {
        let line = serde_json::json!({
            "task": task.name,
            "run": dir,
            "final": outcome.summary,
            "evals_run": outcome.evals_run,
            "evals_from_log": cached_before,
            "best_prompt": dir.join(BEST_PROMPT_FILE),
            "wall_s": wall_s,
        });
        writeln!(stdout, "{line}")?;
        return Ok(());
    }
    let s = &outcome.summary;
    writeln!(stdout, "task {} / {} iterations, {} accepted / proposer {}", task.name, s.iterations, s.accepted, options.proposer)?;
    writeln!(stdout, "evals run {}, from the log {}", outcome.evals_run, cached_before)?;
    writeln!(stdout)?;
    writeln!(stdout, "{:<7} {:>8} {:>14} {:>10} {:>15} {:>11}", "split", "examples", "baseline mean", "best mean", "baseline exact", "best exact")?;
    for r in &s.rows {
        writeln!(
            stdout,
            "{:<7} {:>8} {:>14.3} {:>10.3} {:>15} {:>11}",
            r.split, r.examples, r.baseline_mean, r.best_mean, r.baseline_exact, r.best_exact
        )?;
    }
    writeln!(stdout)?;
    let demos = if s.best_demo_ids.is_empty() { "none (the task's prompt)".to_owned() } else { s.best_demo_ids.join(", ") };
    writeln!(stdout, "best prompt     {} (demos: {demos})", dir.join(BEST_PROMPT_FILE).display())?;
    writeln!(stdout, "run log         {}", dir.join(LOG_FILE).display())?;
    writeln!(stdout, "wall time       {wall_s:.1} s")?;
    Ok(())
}

/// Only the offline loop exists so far.
fn check(o: &Options) -> anyhow::Result<()> {
    if o.optimizer != "none" {
        return Err(InputError(format!(
            "--optimizer {}: LLM optimizers are not built yet; use --optimizer none",
            o.optimizer
        ))
        .into());
    }
    if o.proposer != "demos" {
        return Err(InputError(format!(
            "--proposer {}: only the offline `demos` proposer is built; LLM proposers are not built yet",
            o.proposer
        ))
        .into());
    }
    let bad = |m: &str| Err(InputError(m.to_owned()).into());
    if o.candidates == 0 {
        return bad("--candidates must be at least 1");
    }
    if o.demos == 0 {
        return bad("--demos must be at least 1");
    }
    if o.batch_size == 0 {
        return bad("--batch-size must be at least 1");
    }
    if !(o.confidence > 0.0 && o.confidence < 1.0) {
        return bad("--confidence must be between 0 and 1 (exclusive)");
    }
    Ok(())
}

/// A fresh run: the header, written before anything is evaluated.
fn start(task_dir: &Path, out: &Path, options: Options) -> anyhow::Result<RunLog> {
    let task = Task::load(task_dir)?;
    task.split("train")?;
    task.split("dev")?;
    let prep = prepare(&task, &options)?;
    let header = Header {
        format: FORMAT_VERSION,
        promptloop_version: env!("CARGO_PKG_VERSION").into(),
        task: task.name.clone(),
        task_dir: task.dir.clone(),
        task_sha256: task_sha256(&task).context("hashing the task files")?,
        model: prep.model,
        engine_kind: options.engine,
        engine: prep.config,
        constraint: options.constraint,
        constraint_schema_sha256: prep.constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes())),
        max_tokens: prep.max_tokens,
        engine_key: prep.engine_key,
        seed: options.seed,
        options,
    };
    RunLog::create(out, header).map_err(input_if_log)
}

/// An existing run: recovered log, checked against its task and `--task` when given.
fn resume(dir: &Path, task_arg: Option<&Path>) -> anyhow::Result<RunLog> {
    let (log, warnings) = RunLog::resume(dir).map_err(input_if_log)?;
    for w in warnings {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    let h = log.header();
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
    Ok(log)
}

fn prepare(task: &Task, o: &Options) -> anyhow::Result<Prepared> {
    let model_path = harness::models::resolve(&o.model)?;
    let model = model_fingerprint(&model_path).with_context(|| format!("reading {}", model_path.display()))?;
    let mut config = EngineConfig::new(&model_path);
    config.n_ctx = o.ctx;
    config.threads = o.threads;
    config.batch_size = o.batch_size;
    config.constraint_backend = o.constraint;
    config.chat_template.clone_from(&o.chat_template);
    let constraint = constraint_schema(task, o.constraint, o.no_bounds)?;
    let max_tokens = o.max_tokens.unwrap_or(task.max_tokens);
    let schema_sha = constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes()));
    let engine_key = engine_key(&EngineKeyParts {
        model: &model,
        kind: o.engine,
        constraint: o.constraint,
        constraint_schema_sha256: schema_sha.as_deref(),
        max_tokens,
        config: &config,
    });
    Ok(Prepared { model, config, constraint, max_tokens, engine_key })
}

/// The task's schema, hardened with bounds from train gold values unless turned off (as in
/// `promptloop eval`).
fn constraint_schema(task: &Task, backend: ConstraintBackend, no_bounds: bool) -> anyhow::Result<Option<Value>> {
    if backend == ConstraintBackend::None {
        return Ok(None);
    }
    if task.bounds.enabled && !no_bounds {
        let from = task.split(&task.bounds.from_split)?;
        let (schema, _) = harness::bounds::harden_schema(&task.schema, &from.examples, &task.bounds);
        return Ok(Some(schema));
    }
    Ok(Some(task.schema.clone()))
}

fn load_engine(kind: EngineKind, config: &EngineConfig) -> anyhow::Result<Box<dyn Engine>> {
    let engine = engines::load(kind, config).with_context(|| format!("loading {}", config.model.display()))?;
    let info = engine.info();
    tracing::info!(model = %info.model_desc, load_ms = info.load_ms, template = %info.chat_template, "engine ready");
    Ok(engine)
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

/// Step lines on stderr, unless `--quiet` or `--json`.
struct Printer {
    on: bool,
}

impl Observer for Printer {
    fn note(&mut self, line: &str) {
        if self.on {
            eprintln!("{line}");
        }
    }
}
