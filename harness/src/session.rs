//! A session: an optimize run started or resumed from a [`RunConfig`], without the command
//! line: start, resume and run. It checks the task and the run directory, prepares the engine
//! set-up once (see [`crate::engine_setup`]) and keys it, writes or recovers the run log, and
//! runs the loop. The binary only parses arguments, connects the optimizer and shows
//! progress; tests start and resume runs through here with any [`Engine`].

use std::path::{Path, PathBuf};

use engines::Engine;

use crate::config::{ConfigError, RunConfig};
use crate::engine_setup::{load_setup_engine, prepare, EngineSetup, PrepareError, Prepared};
use crate::fingerprint::{sha256_hex, task_sha256};
use crate::llm::prices::Price;
use crate::llm::Optimizer;
use crate::optimize::cache::{engine_key, EngineKeyParts};
use crate::optimize::log::read_header;
use crate::optimize::records::{Header, FORMAT_VERSION};
use crate::optimize::{self, LogError, LoopInputs, Observer, OptimizeError, RunLog, RunOutcome, LOG_FILE};
use crate::task::{Task, TaskError};

/// Why a run could not be started or resumed. [`StartError::is_input`] tells the user's fault
/// (exit 2) from the machine's.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Log(#[from] LogError),
    /// A bad run directory or one that does not match (foreign task, changed files, another
    /// format or engine set-up).
    #[error("{0}")]
    Run(String),
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
}

impl StartError {
    /// Whether the user's input is at fault (exit code 2).
    pub fn is_input(&self) -> bool {
        match self {
            StartError::Config(_) | StartError::Task(_) | StartError::Run(_) => true,
            StartError::Prepare(e) => e.is_input(),
            StartError::Log(e) => e.is_input(),
            StartError::Io { .. } => false,
        }
    }
}

/// The engine key of a prepared set-up: what identifies its outputs in the run log's cache.
fn prepared_engine_key(setup: &EngineSetup, p: &Prepared) -> String {
    let schema_sha = p.constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes()));
    engine_key(&EngineKeyParts {
        model: &p.model,
        kind: setup.engine,
        overflow: setup.on_overflow,
        constraint: setup.constraint,
        constraint_schema_sha256: schema_sha.as_deref(),
        max_tokens: p.max_tokens,
        config: &p.config,
        server: p.served.as_deref(),
    })
}

/// Refuses a run directory that already holds a run (before anything is loaded or called).
///
/// # Errors
/// [`LogError::Exists`], naming the run's task.
pub fn refuse_existing(out: &Path) -> Result<(), StartError> {
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
    /// The engine key of `prepared` (as in the log's header).
    pub engine_key: String,
    /// What recovering the log found (a torn last line dropped, …).
    pub warnings: Vec<String>,
}

impl Session {
    /// Starts a run of `task` in `out` with `config`: checks it, writes the header. Nothing
    /// is evaluated yet.
    ///
    /// # Errors
    /// A bad configuration, task or model, or `out` already holds a run.
    pub fn start(task: Task, out: &Path, config: RunConfig) -> Result<Session, StartError> {
        let s = &config.search;
        let size = |split: &str, lim: Option<usize>| -> Result<usize, TaskError> {
            let n = task.split(split)?.examples.len();
            Ok(lim.map_or(n, |l| l.min(n)))
        };
        let (train, dev) = (size("train", s.limit_train)?, size("dev", s.limit_dev)?);
        let test = if task.splits.contains_key("test") { size("test", s.limit_test)? } else { 0 };
        s.check_budget(train, dev, test)?;
        let prepared = prepare(&task, &config.engine)?;
        let engine_key = prepared_engine_key(&config.engine, &prepared);
        let header = Header {
            format: FORMAT_VERSION,
            promptloop_version: env!("CARGO_PKG_VERSION").into(),
            task: task.name.clone(),
            task_dir: task.dir.clone(),
            task_sha256: task_sha256(&task).map_err(|error| StartError::Io { what: "hashing the task files".into(), error })?,
            model: prepared.model.clone(),
            engine: prepared.config.clone(),
            constraint_schema_sha256: prepared.constraint.as_ref().map(|s| sha256_hex(s.to_string().as_bytes())),
            max_tokens: prepared.max_tokens,
            engine_key: engine_key.clone(),
            options: config,
            started_at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
            baseline_prompt: Some(task.prompt.clone()),
        };
        let log = RunLog::create(out, header)?;
        Ok(Session { task, dir: out.to_path_buf(), log, prepared, engine_key, warnings: Vec::new() })
    }

    /// Reopens the run in `dir` with the configuration it started with. `task_dir`, when given,
    /// must be the run's task.
    ///
    /// # Errors
    /// Not a run directory, a log of another format, a foreign task, task files or an engine
    /// set-up that changed since the run started.
    pub fn resume(dir: &Path, task_dir: Option<&Path>) -> Result<Session, StartError> {
        if !dir.join(LOG_FILE).exists() {
            return Err(StartError::Run(format!("--resume {}: no {LOG_FILE} there (not a run directory)", dir.display())));
        }
        let (log, warnings) = RunLog::resume(dir)?;
        // Said at once: what recovery did stands even if the checks below refuse the run.
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let h = log.header().clone();
        if h.format != FORMAT_VERSION {
            return Err(StartError::Run(format!(
                "{}: log format {} is not this version's ({FORMAT_VERSION}); start a new run",
                log.path().display(),
                h.format
            )));
        }
        if let Some(given) = task_dir {
            let task = Task::load(given)?;
            if task.name != h.task || task.dir != h.task_dir {
                return Err(StartError::Run(format!(
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
        let now = task_sha256(&task).map_err(|error| StartError::Io { what: "hashing the task files".into(), error })?;
        if now != h.task_sha256 {
            return Err(StartError::Run(format!(
                "the files of task `{}` ({}) changed since {} started; start a new run",
                h.task,
                h.task_dir.display(),
                dir.display()
            )));
        }
        let prepared = prepare(&task, &h.options.engine)?;
        let engine_key = prepared_engine_key(&h.options.engine, &prepared);
        if engine_key != h.engine_key {
            return Err(StartError::Run(format!(
                "{}: the model or engine set-up differs from the run's (model {}, now {}); start a new run",
                log.path().display(),
                h.model.path.display(),
                prepared.model.path.display()
            )));
        }
        Ok(Session { task, dir: dir.to_path_buf(), log, prepared, engine_key, warnings })
    }

    /// The run's configuration (as stored in its header).
    pub fn config(&self) -> &RunConfig {
        &self.log.header().options
    }

    /// Loads the engine the run's configuration names.
    ///
    /// # Errors
    /// The backend is not compiled in or cannot load the model.
    pub fn load_engine(&self) -> Result<Box<dyn Engine>, StartError> {
        Ok(load_setup_engine(&self.config().engine, &self.prepared.config)?)
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
    ) -> Result<RunOutcome, OptimizeError> {
        let config = self.config().clone();
        let validator = self.task.validator()?;
        let setup = LoopInputs {
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
