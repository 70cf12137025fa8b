//! What runs the target model: [`EngineSetup`], the engine flags of `eval`, `compare` and
//! `optimize` resolved (an `--engine auto` is routed before it lands here), and the one
//! engine-configuration recipe they share.

use std::path::{Path, PathBuf};

use engines::{ConstraintBackend, EngineConfig, EngineKind, PrefixCacheConfig, WeightFormat};
use serde::{Deserialize, Serialize};

use crate::overflow::Overflow;
use crate::router::{PerExample, RouteMember};

/// What runs the target model: the engine flags of `eval`, `compare` and `optimize`, resolved
/// (an `--engine auto` is routed before it lands here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default = "super::legacy::engine_setup")]
#[allow(clippy::struct_excessive_bools)] // independent switches, each its own flag
pub struct EngineSetup {
    /// `--model` as given (a known name or a path).
    pub model: String,
    pub engine: EngineKind,
    /// `--on-overflow`: documents longer than the context.
    pub on_overflow: Overflow,
    pub constraint: ConstraintBackend,
    pub batch_size: u32,
    pub threads: Option<usize>,
    pub ctx: Option<u32>,
    pub max_tokens: Option<u32>,
    pub no_bounds: bool,
    pub chat_template: Option<String>,
    /// The engine variant's weight format (`--engine candle:q8_0`).
    pub weights: WeightFormat,
    /// Budgets of the engine's document KV cache (`None`: off). Outputs are the same either way.
    pub prefix_cache: Option<PrefixCacheConfig>,
    /// Forced constraint tokens appended without sampling.
    pub fast_forward: bool,
    /// Each example's latest output is the draft of its next eval (verified, greedy).
    pub speculative: bool,
    /// The llama-servers of `--engine server:URL,...` (empty otherwise, and then not written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// The API of `servers` (`openai:`; native otherwise, and then not written).
    #[serde(default, skip_serializing_if = "engines::ServerApi::is_native")]
    pub server_api: engines::ServerApi,
    /// `--engine auto` over a routing table that holds endpoints: the engines each example is
    /// routed among (`None`: one engine, `engine`, runs every example). Stored in the header,
    /// so a resumed run routes as it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_example: Option<PerExample>,
}

impl Default for EngineSetup {
    /// What `eval`, `compare` and `optimize` run when no flag says otherwise (the CLI reads
    /// these): the engine's own defaults ([`EngineConfig::new`]) and the prefix cache on, with
    /// its default budgets, spilling to [`EngineSetup::default_kv_dir`].
    fn default() -> Self {
        let engine = EngineConfig::new("");
        EngineSetup {
            model: "smollm2-135m".into(),
            engine: EngineKind::Llama,
            on_overflow: Overflow::Error,
            constraint: engine.constraint_backend,
            batch_size: engine.batch_size,
            threads: None,
            ctx: None,
            max_tokens: None,
            no_bounds: false,
            chat_template: None,
            weights: engine.weights,
            prefix_cache: Some(PrefixCacheConfig { disk_dir: Some(Self::default_kv_dir()), ..PrefixCacheConfig::default() }),
            fast_forward: engine.fast_forward,
            speculative: engine.speculative,
            servers: Vec::new(),
            server_api: engines::ServerApi::Native,
            per_example: None,
        }
    }
}

impl EngineSetup {
    /// The engine configuration for the model file at `model_path` (the one recipe `eval`,
    /// `compare` and `optimize` share).
    pub fn engine_config(&self, model_path: &Path) -> EngineConfig {
        let mut cfg = EngineConfig::new(model_path);
        cfg.n_ctx = self.ctx;
        cfg.threads = self.threads;
        cfg.batch_size = self.batch_size;
        cfg.constraint_backend = self.constraint;
        cfg.chat_template.clone_from(&self.chat_template);
        cfg.weights = self.weights;
        cfg.prefix_cache.clone_from(&self.prefix_cache);
        cfg.fast_forward = self.fast_forward;
        cfg.speculative = self.speculative;
        cfg.servers.clone_from(&self.servers);
        cfg.server_api = self.server_api;
        cfg
    }

    /// The configuration of one member of [`Self::per_example`]: this set-up's, with the
    /// member's context and endpoints.
    pub fn member_config(&self, model_path: &Path, member: &RouteMember) -> EngineConfig {
        let mut cfg = self.engine_config(model_path);
        cfg.n_ctx = member.ctx;
        cfg.servers.clone_from(&member.servers);
        cfg.server_api = member.server_api;
        cfg
    }

    /// The prefix cache's default spill directory.
    pub fn default_kv_dir() -> PathBuf {
        crate::models::cache_dir().join("kv")
    }
}
