//! The engine flags `eval`, `compare` and `optimize` share, and the [`EngineSetup`] they
//! resolve to (routing `--engine auto` through the library's router).

use std::path::PathBuf;

use clap::Args;
use engines::{ConstraintBackend, PrefixCacheConfig};
use harness::calibrate::Bytes;
use harness::config::Switch;
use harness::engine_setup::EngineSetup;
use harness::overflow::Overflow;
use harness::router::{route, EngineChoice, RouteRequest};

use super::InputError;

#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// GGUF path or a known name (smollm2-135m, gemma3-270m).
    #[arg(long, default_value_t = EngineSetup::default().model)]
    pub model: String,
    /// Engine: auto (routed by the calibration table when one exists, else llama), llama,
    /// candle (its variants `candle:q4_0`, `candle:q8_0`, `candle:f16`, `candle:f32` re-quantize the
    /// weights at load) and mlx (`mlx:f32` dequantizes them) when compiled in, or
    /// `server:URL[,URL...]`: llama-servers serving --model, or `openai:URL[,URL...]`:
    /// OpenAI-compatible servers (vLLM, `SGLang`; see docs/fleet.md).
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
    /// Routing table for `--engine auto` (default: the model's, written by `promptloop calibrate`).
    #[arg(long, value_name = "FILE")]
    pub routing: Option<PathBuf>,
    /// A document longer than the context: error (reported as `too_long`), chunk (overlapping
    /// windows, merged field-wise) or truncate (the head; flagged).
    #[arg(long, default_value_t = EngineSetup::default().on_overflow)]
    pub on_overflow: Overflow,
    /// How the JSON Schema is enforced: llguidance, gbnf or none.
    #[arg(long, default_value_t = EngineSetup::default().constraint)]
    pub constraint: ConstraintBackend,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Examples decoded together.
    #[arg(long, default_value_t = EngineSetup::default().batch_size)]
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
    #[arg(long, default_value_t = Switch::from(EngineSetup::default().prefix_cache.is_some()))]
    pub prefix_cache: Switch,
    /// Memory the prefix cache may hold; least recently used states spill to disk.
    #[arg(long, default_value_t = Bytes(PrefixCacheConfig::default().memory_bytes), value_name = "SIZE")]
    pub prefix_cache_mem: Bytes,
    /// Disk the prefix cache may fill; the oldest files beyond it are deleted.
    #[arg(long, default_value_t = Bytes(PrefixCacheConfig::default().disk_bytes), value_name = "SIZE")]
    pub prefix_cache_disk: Bytes,
    /// Spill directory of the prefix cache (default: the cache dir's `kv/`).
    #[arg(long, value_name = "DIR")]
    pub prefix_cache_dir: Option<PathBuf>,
    /// Append the tokens the JSON-Schema constraint forces (keys, quotes, separators) several at
    /// a time instead of one decode step each (llguidance only): on or off.
    #[arg(long, default_value_t = Switch::from(EngineSetup::default().fast_forward))]
    pub fast_forward: Switch,
    /// Verify drafts (an earlier output of the same document: `eval --draft`, the previous pass
    /// in `compare`, the latest output in `optimize`) several tokens per decode step, keeping the
    /// tokens greedy decoding picks anyway (llama engine, greedy): on or off.
    #[arg(long, default_value_t = Switch::from(EngineSetup::default().speculative))]
    pub speculative: Switch,
}

impl EngineArgs {
    /// The prefix-cache budgets these flags ask for (`None` when off).
    pub fn prefix_cache(&self) -> Option<PrefixCacheConfig> {
        self.prefix_cache.is_on().then(|| PrefixCacheConfig {
            memory_bytes: self.prefix_cache_mem.0,
            disk_dir: Some(self.prefix_cache_dir.clone().unwrap_or_else(EngineSetup::default_kv_dir)),
            disk_bytes: self.prefix_cache_disk.0,
            ..PrefixCacheConfig::default()
        })
    }

    /// The engine set-up these flags resolve to: `--engine auto` routed (once, here: a resumed
    /// run keeps its engine), the prefix-cache sizes parsed. The router's note is logged.
    pub fn setup(&self) -> anyhow::Result<EngineSetup> {
        let (setup, note) = self.setup_with_note()?;
        if let Some(note) = note {
            tracing::warn!("{note}");
        }
        Ok(setup)
    }

    /// [`Self::setup`], handing back the router's note instead of logging it.
    pub fn setup_with_note(&self) -> anyhow::Result<(EngineSetup, Option<String>)> {
        let model_path = harness::models::resolve(&self.model)?;
        let routed = route(&RouteRequest {
            choice: self.engine.clone(),
            table: self.routing.as_deref(),
            ctx: self.ctx,
            model_path: &model_path,
            batch: self.batch_size,
        })
        .map_err(|e| InputError(e.0))?;
        let setup = EngineSetup {
            model: self.model.clone(),
            engine: routed.kind,
            on_overflow: self.on_overflow,
            constraint: self.constraint,
            batch_size: self.batch_size,
            threads: self.threads,
            ctx: routed.ctx,
            max_tokens: self.max_tokens,
            no_bounds: self.no_bounds,
            chat_template: self.chat_template.clone(),
            weights: self.engine.weights(),
            prefix_cache: self.prefix_cache(),
            fast_forward: self.fast_forward.is_on(),
            speculative: self.speculative.is_on(),
            servers: self.engine.servers().to_vec(),
            server_api: self.engine.server_api(),
            per_example: routed.per_example,
        };
        Ok((setup, routed.note))
    }
}
