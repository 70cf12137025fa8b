//! The engine flags `eval` and `optimize` share, and what they build: the engine configuration
//! and the constraint schema.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use clap::Args;
use engines::memory::Machine;
use engines::{ConstraintBackend, Engine, EngineConfig, EngineKind, PrefixCacheConfig, WeightFormat};
use harness::calibrate::{self, RoutingTable};
use harness::optimize::cache::model_fingerprint;
use harness::overflow::Overflow;
use harness::task::Task;
use serde_json::Value;

use super::InputError;

/// `--engine`: a kind, a kind's variant (`candle:q8_0`: the weight format it computes with),
/// or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    Auto,
    Kind(EngineKind),
    Variant(EngineKind, WeightFormat),
}

impl EngineChoice {
    /// The weight format asked for (`gguf` unless a variant names another).
    pub fn weights(self) -> WeightFormat {
        match self {
            EngineChoice::Variant(_, w) => w,
            _ => WeightFormat::Gguf,
        }
    }
}

impl FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(EngineChoice::Auto);
        }
        let Some((kind, variant)) = s.split_once(':') else {
            return s.parse().map(EngineChoice::Kind).map_err(|e| format!("{e}, or auto"));
        };
        let kind: EngineKind = kind.parse()?;
        let weights: WeightFormat = variant.parse()?;
        if !kind.weight_formats().contains(&weights) {
            let names: Vec<String> =
                EngineKind::ALL.iter().flat_map(|k| k.weight_formats().iter().skip(1).map(move |w| format!("{k}:{w}"))).collect();
            return Err(format!("engine `{kind}` has no variant `{weights}` (the variants: {})", names.join(", ")));
        }
        Ok(EngineChoice::Variant(kind, weights))
    }
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineChoice::Auto => f.write_str("auto"),
            EngineChoice::Kind(k) => write!(f, "{k}"),
            EngineChoice::Variant(k, w) => write!(f, "{k}:{w}"),
        }
    }
}

/// The engine and context `--engine` resolves to, and what the routing table said.
#[derive(Debug, Clone)]
pub struct Routed {
    pub kind: EngineKind,
    /// Context per sequence: `--ctx`, else capped so the predicted peak fits the table's
    /// budget with its margin.
    pub ctx: Option<u32>,
    pub note: Option<String>,
}

/// Resolves `--engine` for `batch` sequences. `auto` reads the routing table (`--routing`, or
/// the model's default one when it exists): a stale table is reported and ignored; a valid one
/// picks the engine predicted fastest among those compiled in that fit a typical input, and
/// caps the context so the batch fits the budget. Without a table, `auto` is llama.
pub fn route(e: &EngineArgs, model_path: &Path, batch: u32) -> anyhow::Result<Routed> {
    let kind = match e.engine {
        EngineChoice::Kind(k) | EngineChoice::Variant(k, _) => return Ok(Routed { kind: k, ctx: e.ctx, note: None }),
        EngineChoice::Auto => EngineKind::Llama,
    };
    let fingerprint = model_fingerprint(model_path).with_context(|| format!("reading {}", model_path.display()))?;
    let path = match &e.routing {
        Some(p) => p.clone(),
        None => {
            let p = calibrate::default_table_path(&fingerprint);
            if !p.exists() {
                return Ok(Routed { kind, ctx: e.ctx, note: None });
            }
            p
        }
    };
    let table = RoutingTable::load(&path).map_err(|err| InputError(format!("--routing: {err}")))?;
    let versions: Vec<(EngineKind, String)> =
        engines::compiled_engines().into_iter().filter_map(|k| engines::backend_version(k).map(|v| (k, v.to_owned()))).collect();
    let stale = table.stale_reasons(&fingerprint, &Machine::current(), &versions);
    if !stale.is_empty() {
        let note = format!(
            "routing table {} is stale ({}); ignoring it: run `promptloop calibrate` again",
            path.display(),
            stale.join("; ")
        );
        return Ok(Routed { kind, ctx: e.ctx, note: Some(note) });
    }
    let available = engines::compiled_engines();
    let calibrate::Route::Engine(kind) =
        table.route(1024.min(table.engines.iter().map(|x| x.max_input_tokens).max().unwrap_or(0)), &available)
    else {
        return Err(InputError(format!(
            "routing table {}: no engine compiled into this build fits the {} MiB budget",
            path.display(),
            table.budget_bytes >> 20
        ))
        .into());
    };
    let entry = table.engine(kind).expect("routed engines are in the table");
    let total = calibrate::max_ctx_for_budget(&entry.memory, table.budget_bytes, table.margin);
    let per_seq = (total / batch.max(1) as usize).min(16_384);
    if per_seq < 256 {
        return Err(InputError(format!(
            "routing table {}: a batch of {batch} leaves {per_seq} context tokens per sequence in the {} MiB budget; lower --batch-size",
            path.display(),
            table.budget_bytes >> 20
        ))
        .into());
    }
    let ctx = e.ctx.map_or(per_seq as u32, |c| c.min(per_seq as u32));
    let note = format!(
        "routed by {}: engine {kind}, context {} tokens per sequence x {batch} (budget {} MiB, margin {:.0}%)",
        path.display(),
        ctx,
        table.budget_bytes >> 20,
        table.margin * 100.0
    );
    Ok(Routed { kind, ctx: Some(ctx), note: Some(note) })
}

#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// GGUF path or a known name (smollm2-135m, gemma3-270m).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Engine: auto (routed by the calibration table when one exists, else llama), llama,
    /// candle (its variants `candle:q4_0`, `candle:q8_0`, `candle:f16`, `candle:f32` re-quantize the
    /// weights at load) and mlx (`mlx:f32` dequantizes them) when compiled in.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
    /// Routing table for `--engine auto` (default: the model's, written by `promptloop calibrate`).
    #[arg(long, value_name = "FILE")]
    pub routing: Option<PathBuf>,
    /// A document longer than the context: error (reported as `too_long`), chunk (overlapping
    /// windows, merged field-wise) or truncate (the head; flagged).
    #[arg(long, default_value = "error")]
    pub on_overflow: Overflow,
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
    /// Keep the KV state of each document (the prompt part before the instruction, with
    /// `layout = "document-first"`) and restore it on later passes: on or off.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub prefix_cache: String,
    /// Memory the prefix cache may hold; least recently used states spill to disk.
    #[arg(long, default_value = "1GiB", value_name = "SIZE")]
    pub prefix_cache_mem: String,
    /// Disk the prefix cache may fill; the oldest files beyond it are deleted.
    #[arg(long, default_value = "8GiB", value_name = "SIZE")]
    pub prefix_cache_disk: String,
    /// Spill directory of the prefix cache (default: the cache dir's `kv/`).
    #[arg(long, value_name = "DIR")]
    pub prefix_cache_dir: Option<PathBuf>,
    /// Append the tokens the JSON-Schema constraint forces (keys, quotes, separators) several at
    /// a time instead of one decode step each (llguidance only): on or off.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub fast_forward: String,
    /// Verify drafts (an earlier output of the same document: `eval --draft`, the previous pass
    /// in `compare`, the latest output in `optimize`) several tokens per decode step, keeping the
    /// tokens greedy decoding picks anyway (llama engine, greedy): on or off.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub speculative: String,
}

impl EngineArgs {
    /// `--fast-forward on`.
    pub fn fast_forward(&self) -> bool {
        self.fast_forward == "on"
    }

    /// `--speculative on`.
    pub fn speculative(&self) -> bool {
        self.speculative == "on"
    }

    /// The prefix-cache budgets these flags ask for (`None` when off).
    pub fn prefix_cache(&self) -> anyhow::Result<Option<PrefixCacheConfig>> {
        if self.prefix_cache == "off" {
            return Ok(None);
        }
        let size = |flag: &str, v: &str| calibrate::parse_bytes(v).map_err(|e| InputError(format!("--{flag}: {e}")));
        Ok(Some(PrefixCacheConfig {
            memory_bytes: size("prefix-cache-mem", &self.prefix_cache_mem)?,
            disk_dir: Some(self.prefix_cache_dir.clone().unwrap_or_else(|| harness::models::cache_dir().join("kv"))),
            disk_bytes: size("prefix-cache-disk", &self.prefix_cache_disk)?,
            ..PrefixCacheConfig::default()
        }))
    }
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
pub fn constraint_schema(
    task: &Task,
    backend: ConstraintBackend,
    no_bounds: bool,
) -> anyhow::Result<(Option<Value>, Option<String>)> {
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
