//! Engine preparation: how an [`EngineSetup`] (what runs the target model: the engine flags of
//! `eval`, `compare` and `optimize`, resolved) becomes a loaded engine for a task: [`prepare`]
//! (model file, engine configuration, constraint schema, token cap, what the servers serve),
//! [`constraint_schema`], [`load_setup_engine`]. `eval` and `compare` use it directly; an
//! optimize run's [`crate::session`] adds its run log on top.

use std::path::PathBuf;

use engines::{ConstraintBackend, Engine, EngineConfig, EngineError, EngineKind};
use serde_json::Value;

pub use crate::config::EngineSetup;
use crate::fingerprint::{model_fingerprint, ModelFingerprint};
use crate::models::ModelError;
use crate::task::{Task, TaskError};

/// Why an engine set-up could not be prepared or loaded. [`PrepareError::is_input`] tells the
/// user's fault (exit 2) from the machine's.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("loading {path}: {error}")]
    Engine { path: PathBuf, error: EngineError },
}

impl PrepareError {
    /// Whether the user's input is at fault (exit code 2).
    pub fn is_input(&self) -> bool {
        match self {
            PrepareError::Task(_) | PrepareError::Model(_) => true,
            // A bad engine set-up (a fleet serving another model, no server there, a value out
            // of range) is input; a backend failing to load is the machine's.
            PrepareError::Engine { error, .. } => error.is_setup(),
            PrepareError::Io { .. } => false,
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
    /// What the servers serve (`server` engine), or each member's part (per-example routing);
    /// `None` for one in-process engine. Part of the engine key.
    pub served: Option<String>,
}

/// Resolves `setup` for `task`: the model file, the engine configuration, the constraint and
/// what the servers serve. For the `server` engine this asks the servers.
///
/// # Errors
/// The model name or file is bad, the task lacks the split the bounds come from, or the
/// servers are not usable or serve something else.
pub fn prepare(task: &Task, setup: &EngineSetup) -> Result<Prepared, PrepareError> {
    let model_path = crate::models::resolve(&setup.model)?;
    let model = model_fingerprint(&model_path).map_err(|error| PrepareError::Io { what: "reading the model".into(), error })?;
    let config = setup.engine_config(&model_path);
    let (constraint, bounds_note) = constraint_schema(task, setup.constraint, setup.no_bounds)?;
    let max_tokens = setup.max_tokens.unwrap_or(task.max_tokens);
    // A fleet's results are keyed by what its servers serve (build and model), not by URL.
    let identity = |cfg: &EngineConfig| {
        engines::server_identity(cfg).map_err(|error| PrepareError::Engine { path: model_path.clone(), error })
    };
    let served = if setup.engine == EngineKind::Server {
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
    Ok(Prepared { model, config, constraint, bounds_note, max_tokens, served })
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
pub fn load_setup_engine(setup: &EngineSetup, config: &EngineConfig) -> Result<Box<dyn Engine>, PrepareError> {
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
        .map_err(|error| PrepareError::Engine { path: config.model.clone(), error })?;
    tracing::info!("{}", per.describe());
    Ok(Box::new(routed))
}

/// Loads one engine and logs what it is.
///
/// # Errors
/// The backend is not compiled in or cannot load the model.
pub fn load_engine(kind: EngineKind, config: &EngineConfig) -> Result<Box<dyn Engine>, PrepareError> {
    let engine = engines::load(kind, config).map_err(|error| PrepareError::Engine { path: config.model.clone(), error })?;
    let info = engine.info();
    tracing::info!(model = %info.model_desc, load_ms = info.load_ms, template = %info.chat_template, "engine ready");
    Ok(engine)
}
