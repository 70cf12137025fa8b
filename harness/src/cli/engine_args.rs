//! The engine flags `eval` and `optimize` share, and what they build: the engine configuration
//! and the constraint schema.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use engines::{ConstraintBackend, Engine, EngineConfig, EngineKind};
use harness::task::Task;
use serde_json::Value;

#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// GGUF path or a known name (smollm2-135m, gemma3-270m).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Engine: llama (candle and mlx when compiled in).
    #[arg(long, default_value = "llama")]
    pub engine: EngineKind,
    /// How the JSON Schema is enforced: llguidance, gbnf or none.
    #[arg(long, default_value = "llguidance")]
    pub constraint: ConstraintBackend,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Examples decoded together.
    #[arg(long, default_value_t = 4)]
    pub batch_size: u32,
    /// Context per sequence in tokens (default: the model's, capped at 16384).
    #[arg(long)]
    pub ctx: Option<u32>,
    /// Output token cap (default: the task's max-tokens).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Do not add maxItems/maxLength bounds from the train split to the constraint.
    #[arg(long)]
    pub no_bounds: bool,
    /// Built-in chat template to use instead of the model's own (chatml, gemma, llama3, …).
    #[arg(long)]
    pub chat_template: Option<String>,
}

/// The engine configuration for a model file.
pub fn engine_config(
    model_path: &Path,
    ctx: Option<u32>,
    threads: Option<usize>,
    batch_size: u32,
    constraint: ConstraintBackend,
    chat_template: Option<&str>,
) -> EngineConfig {
    let mut cfg = EngineConfig::new(model_path);
    cfg.n_ctx = ctx;
    cfg.threads = threads;
    cfg.batch_size = batch_size;
    cfg.constraint_backend = constraint;
    cfg.chat_template = chat_template.map(str::to_owned);
    cfg
}

/// The task's schema, hardened with bounds from the gold values of `bounds.from_split` unless
/// turned off; `None` when unconstrained. Also returns the bounds' description.
pub fn constraint_schema(task: &Task, backend: ConstraintBackend, no_bounds: bool) -> anyhow::Result<(Option<Value>, Option<String>)> {
    if backend == ConstraintBackend::None {
        return Ok((None, None));
    }
    if task.bounds.enabled && !no_bounds {
        let from = task.split(&task.bounds.from_split)?;
        let (schema, notes) = harness::bounds::harden_schema(&task.schema, &from.examples, &task.bounds);
        let about = format!("bounds from {} gold values:\n{}", from.name, harness::bounds::describe(&notes));
        return Ok((Some(schema), Some(about)));
    }
    Ok((Some(task.schema.clone()), None))
}

/// Loads the engine and logs what it is.
pub fn load_engine(kind: EngineKind, config: &EngineConfig) -> anyhow::Result<Box<dyn Engine>> {
    let engine = engines::load(kind, config).with_context(|| format!("loading {}", config.model.display()))?;
    let info = engine.info();
    tracing::info!(model = %info.model_desc, load_ms = info.load_ms, template = %info.chat_template, "engine ready");
    Ok(engine)
}
