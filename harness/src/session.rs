//! A session: an optimize run started or resumed from a [`RunConfig`], without the command
//! line. It checks the task and the run directory, resolves the engine set-up once (engine
//! configuration, constraint schema, token cap, engine key), writes or recovers the run log,
//! and runs the loop. The binary only parses arguments, connects the optimizer and shows
//! progress; tests start and resume runs through here with any [`Engine`].

use std::path::{Path, PathBuf};

use engines::{ConstraintBackend, Engine, EngineConfig, EngineError, EngineKind};
use serde_json::Value;

use crate::config::{ConfigError, EngineSetup, RunConfig};
use crate::fingerprint::{model_fingerprint, sha256_hex, task_sha256, ModelFingerprint};
use crate::llm::prices::Price;
use crate::llm::Optimizer;
use crate::models::ModelError;
use crate::optimize::cache::{engine_key, EngineKeyParts};
use crate::optimize::log::read_header;
use crate::optimize::records::{Header, FORMAT_VERSION};
use crate::optimize::{self, LogError, Observer, OptimizeError, Outcome, RunLog, Setup, LOG_FILE};
use crate::task::{Task, TaskError};

/// Why a run could not be set up. [`SetupError::is_input`] tells the user's fault (exit 2)
/// from the machine's.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Log(#[from] LogError),
    /// A bad run directory or one that does not match (foreign task, changed files, another
    /// format or engine set-up).
    #[error("{0}")]
    Run(String),
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("loading {path}: {error}")]
    Engine { path: PathBuf, error: EngineError },
}

impl SetupError {
    /// Whether the user's input is at fault (exit code 2).
    pub fn is_input(&self) -> bool {
        match self {
            SetupError::Config(_) | SetupError::Task(_) | SetupError::Model(_) | SetupError::Run(_) => true,
            SetupError::Log(e) => e.is_input(),
            // A bad engine set-up (a fleet serving another model, no server there, a value out
            // of range) is input; a backend failing to load is the machine's.
            SetupError::Engine { error, .. } => error.is_setup(),
            SetupError::Io { .. } => false,
        }
    }
}

/// What the engine and the cache need, resolved from a task and an engine set-up.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub model: ModelFingerprint,
    pub config: EngineConfig,
    /// The constraint schema (bounds applied unless turned off); `None` when unconstrained.
    pub constraint: Option<Value>,
    /// What the bounds did, in words (when applied).
    pub bounds_note: Option<String>,
    pub max_tokens: u32,
    pub engine_key: String,
}

/// Resolves `setup` for `task`: the model file, the engine configuration, the constraint and
/// the engine key. For the `server` engine this asks the servers what they serve.
///
/// # Errors
/// The model name or file is bad, the task lacks the split the bounds come from, or the
/// servers are not usable or serve something else.
pub fn prepare(task: &Task, setup: &EngineSetup) -> Result<Prepared, SetupError> {
    let model_path = crate::models::resolve(&setup.model)?;
    let model = model_fingerprint(&model_path).map_err(|error| SetupError::Io { what: "reading the model".into(), error })?;
    let config = setup.engine_config(&model_path);
    let (constraint, bounds_note) = constraint_schema(task, setup.constraint, setup.no_bounds)?;
    let max_tokens = setup.max_tokens.unwrap_or(task.max_tokens);
    let schema_sha = constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes()));
    // A fleet's results are keyed by what its servers serve (build and model), not by URL.
    let identity = |cfg: &EngineConfig| {
        engines::server_identity(cfg).map_err(|error| SetupError::Engine { path: model_path.clone(), error })
    };
    let server = if setup.engine == EngineKind::Server {
        Some(identity(&config)?)
    } else if let Some(per) = &setup.per_example {
        // Routed per example: every member's part of the key, a server member by what it serves.
        let mut parts = Vec::new();
        for m in &per.members {
            let served = if m.servers.is_empty() { String::new() } else { identity(&setup.member_config(&model_path, m))? };
            parts.push(format!("{} ctx {:?} up to {} {served}", m.label(), m.ctx, m.max_input_tokens));
        }
        Some(format!("per example: {}", parts.join("; ")))
    } else {
        None
    };
    let engine_key = engine_key(&EngineKeyParts {
        model: &model,
        kind: setup.engine,
        overflow: setup.on_overflow,
        constraint: setup.constraint,
        constraint_schema_sha256: schema_sha.as_deref(),
        max_tokens,
        config: &config,
        server: server.as_deref(),
    });
    Ok(Prepared { model, config, constraint, bounds_note, max_tokens, engine_key })
}

/// The task's schema, hardened with bounds from the gold values of `bounds.from_split` unless
/// turned off; `None` when unconstrained. Also returns the bounds' description.
///
/// # Errors
/// The bounds' split is missing.
pub fn constraint_schema(
    task: &Task,
    backend: ConstraintBackend,
    no_bounds: bool,
) -> Result<(Option<Value>, Option<String>), TaskError> {
    if backend == ConstraintBackend::None {
        return Ok((None, None));
    }
    if task.bounds.enabled && !no_bounds {
        let from = task.split(&task.bounds.from_split)?;
        let (schema, notes) = crate::bounds::harden_schema(&task.schema, &from.examples, &task.bounds);
        let about = format!("bounds from {} gold values:\n{}", from.name, crate::bounds::describe(&notes));
        return Ok((Some(schema), Some(about)));
    }
    Ok((Some(task.schema.clone()), None))
}

/// Loads the engine of `setup` (`config` being its [`EngineSetup::engine_config`]): one engine,
/// or the members of its per-example routing behind one [`engines::RoutedEngine`].
///
/// # Errors
/// A backend is not compiled in or cannot load the model.
pub fn load_setup_engine(setup: &EngineSetup, config: &EngineConfig) -> Result<Box<dyn Engine>, SetupError> {
    let Some(per) = &setup.per_example else {
        return load_engine(setup.engine, config);
    };
    let mut members = Vec::with_capacity(per.members.len());
    for m in &per.members {
        let cfg = setup.member_config(&config.model, m);
        members.push(engines::Member { label: m.label(), engine: load_engine(m.engine, &cfg)? });
    }
    let rule = per.clone();
    let routed = engines::RoutedEngine::new(members, Box::new(move |tokens| rule.pick(tokens)))
        .map_err(|error| SetupError::Engine { path: config.model.clone(), error })?;
    tracing::info!("{}", per.describe());
    Ok(Box::new(routed))
}

/// Loads one engine and logs what it is.
///
/// # Errors
/// The backend is not compiled in or cannot load the model.
pub fn load_engine(kind: EngineKind, config: &EngineConfig) -> Result<Box<dyn Engine>, SetupError> {
    let engine = engines::load(kind, config).map_err(|error| SetupError::Engine { path: config.model.clone(), error })?;
    let info = engine.info();
    tracing::info!(model = %info.model_desc, load_ms = info.load_ms, template = %info.chat_template, "engine ready");
    Ok(engine)
}

/// Refuses a run directory that already holds a run (before anything is loaded or called).
///
/// # Errors
/// [`LogError::Exists`], naming the run's task.
pub fn refuse_existing(out: &Path) -> Result<(), SetupError> {
    let path = out.join(LOG_FILE);
    if path.exists() {
        let task = read_header(&path).map_or_else(|_| "?".to_owned(), |h| h.task);
        return Err(LogError::Exists { path, task }.into());
    }
    Ok(())
}

/// An optimize run: its task, its run directory and its open log.
#[derive(Debug)]
pub struct Session {
    pub task: Task,
    pub dir: PathBuf,
    pub log: RunLog,
    pub prepared: Prepared,
    /// What recovering the log found (a torn last line dropped, …).
    pub warnings: Vec<String>,
}

impl Session {
    /// Starts a run of `task` in `out` with `config`: checks it, writes the header. Nothing
    /// is evaluated yet.
    ///
    /// # Errors
    /// A bad configuration, task or model, or `out` already holds a run.
    pub fn start(task: Task, out: &Path, config: RunConfig) -> Result<Session, SetupError> {
        let s = &config.search;
        let size = |split: &str, lim: Option<usize>| -> Result<usize, TaskError> {
            let n = task.split(split)?.examples.len();
            Ok(lim.map_or(n, |l| l.min(n)))
        };
        let (train, dev) = (size("train", s.limit_train)?, size("dev", s.limit_dev)?);
        let test = if task.splits.contains_key("test") { size("test", s.limit_test)? } else { 0 };
        s.check_budget(train, dev, test)?;
        let prepared = prepare(&task, &config.engine)?;
        let header = Header {
            format: FORMAT_VERSION,
            promptloop_version: env!("CARGO_PKG_VERSION").into(),
            task: task.name.clone(),
            task_dir: task.dir.clone(),
            task_sha256: task_sha256(&task).map_err(|error| SetupError::Io { what: "hashing the task files".into(), error })?,
            model: prepared.model.clone(),
            engine: prepared.config.clone(),
            constraint_schema_sha256: prepared.constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes())),
            max_tokens: prepared.max_tokens,
            engine_key: prepared.engine_key.clone(),
            options: config,
            started_at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
            baseline_prompt: Some(task.prompt.clone()),
        };
        let log = RunLog::create(out, header)?;
        Ok(Session { task, dir: out.to_path_buf(), log, prepared, warnings: Vec::new() })
    }

    /// Reopens the run in `dir` with the configuration it started with. `task_dir`, when given,
    /// must be the run's task.
    ///
    /// # Errors
    /// Not a run directory, a log of another format, a foreign task, task files or an engine
    /// set-up that changed since the run started.
    pub fn resume(dir: &Path, task_dir: Option<&Path>) -> Result<Session, SetupError> {
        if !dir.join(LOG_FILE).exists() {
            return Err(SetupError::Run(format!("--resume {}: no {LOG_FILE} there (not a run directory)", dir.display())));
        }
        let (log, warnings) = RunLog::resume(dir)?;
        // Said at once: what recovery did stands even if the checks below refuse the run.
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let h = log.header().clone();
        if h.format != FORMAT_VERSION {
            return Err(SetupError::Run(format!(
                "{}: log format {} is not this version's ({FORMAT_VERSION}); start a new run",
                log.path().display(),
                h.format
            )));
        }
        if let Some(given) = task_dir {
            let task = Task::load(given)?;
            if task.name != h.task || task.dir != h.task_dir {
                return Err(SetupError::Run(format!(
                    "{} is a run of task `{}` ({}), not of `{}` ({})",
                    dir.display(),
                    h.task,
                    h.task_dir.display(),
                    task.name,
                    task.dir.display()
                )));
            }
        }
        let task = Task::load(&h.task_dir)?;
        let now = task_sha256(&task).map_err(|error| SetupError::Io { what: "hashing the task files".into(), error })?;
        if now != h.task_sha256 {
            return Err(SetupError::Run(format!(
                "the files of task `{}` ({}) changed since {} started; start a new run",
                h.task,
                h.task_dir.display(),
                dir.display()
            )));
        }
        let prepared = prepare(&task, &h.options.engine)?;
        if prepared.engine_key != h.engine_key {
            return Err(SetupError::Run(format!(
                "{}: the model or engine set-up differs from the run's (model {}, now {}); start a new run",
                log.path().display(),
                h.model.path.display(),
                prepared.model.path.display()
            )));
        }
        Ok(Session { task, dir: dir.to_path_buf(), log, prepared, warnings })
    }

    /// The run's configuration (as stored in its header).
    pub fn config(&self) -> &RunConfig {
        &self.log.header().options
    }

    /// Loads the engine the run's configuration names.
    ///
    /// # Errors
    /// The backend is not compiled in or cannot load the model.
    pub fn load_engine(&self) -> Result<Box<dyn Engine>, SetupError> {
        load_setup_engine(&self.config().engine, &self.prepared.config)
    }

    /// Runs (or continues) the loop to its end on `engine`. `optimizer` is the LLM proposers'
    /// client; `price` its price when known.
    ///
    /// # Errors
    /// The task's splits, the log, or the optimizer fail; everything so far is in the log.
    pub fn run(
        &mut self,
        engine: &dyn Engine,
        optimizer: Option<Box<dyn Optimizer>>,
        price: Option<Price>,
        observer: &mut dyn Observer,
    ) -> Result<Outcome, OptimizeError> {
        let config = self.config().clone();
        let validator = self.task.validator()?;
        let setup = Setup {
            task: &self.task,
            engine,
            constraint: self.prepared.constraint.as_ref(),
            validator: &validator,
            max_tokens: self.prepared.max_tokens,
            config: &config,
            out_dir: &self.dir,
            price,
        };
        optimize::run(&setup, &mut self.log, optimizer, observer)
    }
}
