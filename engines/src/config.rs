//! What to load and how to run it ([`EngineConfig`], with the prefix cache's budgets and the
//! API a `server` engine speaks), and what was loaded ([`EngineInfo`], [`Capabilities`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::{ConstraintBackend, EngineKind, WeightFormat};

/// What to load and how to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // independent switches, each its own setting
pub struct EngineConfig {
    /// GGUF file.
    pub model: PathBuf,
    /// Context per sequence in tokens; `None` = the model's training context, capped at 16384.
    pub n_ctx: Option<u32>,
    /// CPU threads; `None` = all available cores.
    pub threads: Option<usize>,
    /// Sequences decoded together (1 = one request at a time).
    pub batch_size: u32,
    /// Prompt tokens per decode call during prefill.
    pub n_batch: u32,
    /// How JSON-Schema constraints are enforced.
    pub constraint_backend: ConstraintBackend,
    /// Override the GGUF's chat template with a built-in one by name (`chatml`, `gemma`, …).
    pub chat_template: Option<String>,
    /// One KV buffer shared by all sequences instead of one per sequence.
    pub kv_unified: bool,
    /// Shortest common prefix worth prefilling once and copying to the other sequences.
    pub min_shared_prefix: usize,
    /// Fused attention kernels (faster prefill on long inputs).
    pub flash_attention: bool,
    /// Weight format to compute with (candle re-quantizes at load; llama accepts only `gguf`).
    #[serde(default)]
    pub weights: WeightFormat,
    /// Keep the KV state of requests' reusable prefixes across calls (`None`: off).
    #[serde(default)]
    pub prefix_cache: Option<PrefixCacheConfig>,
    /// Append the tokens a llguidance constraint forces (JSON keys, quotes, separators) several
    /// at a time without sampling them, instead of one decode step each.
    #[serde(default = "yes")]
    pub fast_forward: bool,
    /// Verify requests' drafts (greedy decoding only): tokens of a draft are fed several per
    /// decode step and kept while they are the model's own greedy choice.
    #[serde(default = "yes")]
    pub speculative: bool,
    /// Base URLs of the llama-servers the `server` engine routes over (empty for in-process
    /// engines, and then not written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// The API `servers` speak (native unless `openai:`; then not written).
    #[serde(default, skip_serializing_if = "ServerApi::is_native")]
    pub server_api: ServerApi,
}

fn yes() -> bool {
    true
}

/// The API a `server` engine speaks to its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerApi {
    /// llama-server's native API (`--engine server:URL`): prompts as token ids, GBNF from the
    /// JSON Schema, slots pinned by document.
    #[default]
    Native,
    /// OpenAI-compatible chat completions (`--engine openai:URL`): vLLM, `SGLang`, or
    /// llama-server's `/v1`, with the JSON Schema as `response_format`.
    OpenAi,
}

impl ServerApi {
    /// Whether this is the default (and so not written into configs and keys).
    pub fn is_native(&self) -> bool {
        *self == ServerApi::Native
    }
}

/// Budgets of the prefix cache: states live in memory up to `memory_bytes`, least recently
/// used ones spill to `disk_dir` up to `disk_bytes`, and the oldest files there are deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixCacheConfig {
    pub memory_bytes: u64,
    /// Spill directory; `None` keeps states in memory only.
    pub disk_dir: Option<PathBuf>,
    pub disk_bytes: u64,
    /// Shortest prefix worth caching, in tokens.
    pub min_tokens: usize,
}

impl Default for PrefixCacheConfig {
    fn default() -> Self {
        Self { memory_bytes: 1 << 30, disk_dir: None, disk_bytes: 8 << 30, min_tokens: 64 }
    }
}

impl EngineConfig {
    /// Defaults for `model`: llguidance, batch of 4, all cores.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            n_ctx: None,
            threads: None,
            batch_size: 4,
            n_batch: 512,
            constraint_backend: ConstraintBackend::default(),
            chat_template: None,
            kv_unified: false,
            min_shared_prefix: 16,
            flash_attention: true,
            weights: WeightFormat::Gguf,
            prefix_cache: None,
            fast_forward: true,
            speculative: true,
            servers: Vec::new(),
            server_api: ServerApi::Native,
        }
    }
}

/// What the engine can do, for the router and the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capabilities {
    /// Context per sequence (prompt + output) in tokens.
    pub max_context: usize,
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Whether a shared prompt prefix is computed once per batch.
    pub shared_prefix: bool,
    /// Whether the KV state of a request's reusable prefix persists across calls.
    pub prefix_cache: bool,
    pub constraint_backends: Vec<ConstraintBackend>,
}

/// What was loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineInfo {
    pub kind: EngineKind,
    /// The weight format computed with (`gguf`: as stored).
    #[serde(default)]
    pub weights: WeightFormat,
    /// Backend library and version, e.g. `llama-cpp-2 0.1.160`.
    pub backend_version: String,
    pub model_path: PathBuf,
    /// Human description from the GGUF (architecture, size, quantisation).
    pub model_desc: String,
    pub model_bytes: u64,
    pub n_params: u64,
    pub vocab_size: usize,
    /// Name of the chat template in use (`gguf` for the model's own).
    pub chat_template: String,
    pub threads: usize,
    pub constraint_backend: ConstraintBackend,
    pub capabilities: Capabilities,
    /// KV cache size for all sequences, computed from the model's shape (bytes).
    pub kv_cache_bytes: u64,
    /// The context the model was trained with (the most any sequence can use).
    #[serde(default)]
    pub train_context: usize,
    /// Wall time of loading the model and building the constraint tables.
    pub load_ms: f64,
}
