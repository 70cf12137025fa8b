//! Inference engines for promptloop: the [`Engine`] trait and one backend per file, each behind
//! a cargo feature (`llama` on by default, `candle`, `mlx`, and `remote`: llama-servers over
//! HTTP behind the same trait).
//!
//! Engines are synchronous and own their threads: a backend runs its model on a worker thread
//! fed by a channel, so callers only ever hold a `Send + Sync` handle. A backend that was not
//! compiled in still has its [`EngineKind`] and returns [`EngineError::NotCompiled`] from
//! [`load`].

mod config;
pub mod digest;
mod error;
#[cfg(any(feature = "candle", feature = "mlx"))]
mod gguf_header;
#[cfg(any(feature = "llama", feature = "candle", feature = "mlx"))]
mod guidance;
pub mod json_grammar;
mod json_scan;
pub mod memory;
pub mod prefix_cache;
pub mod rng;
pub mod routed;
#[cfg(any(feature = "llama", feature = "candle", feature = "mlx"))]
mod sampling;
pub mod scripted;
#[cfg(any(feature = "candle", feature = "mlx"))]
mod sequential;
#[cfg(any(feature = "llama", feature = "candle", feature = "mlx"))]
mod support;
#[cfg(any(feature = "candle", feature = "mlx"))]
mod tokenizer;
mod types;

#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "llama")]
pub mod llama;
#[cfg(feature = "mlx")]
pub mod mlx;
#[cfg(feature = "remote")]
pub mod remote;

pub use config::{Capabilities, EngineConfig, EngineInfo, PrefixCacheConfig, ServerApi};
pub use error::EngineError;
pub use json_scan::JsonScanner;
pub use rng::SplitMix64;
pub use routed::{Member, RoutedEngine};
pub use scripted::ScriptedEngine;
pub use types::{
    CacheTier, ChatMessage, Constraint, ConstraintBackend, EngineKind, PrefixBoundary, PrefixCacheUse, Request, Response,
    Sampling, StopReason, Timings, TokenCounts, TokenLogprob, WeightFormat,
};

/// An inference engine serving one model: in process (`llama`, `candle`, `mlx`), on
/// llama-servers or OpenAI-compatible servers (`remote`), several behind one ([`RoutedEngine`]),
/// or a closure ([`ScriptedEngine`], the test double).
///
/// Implementations are cheap handles to a worker thread, a runtime or a closure; `generate`
/// blocks until the whole batch is done. Results come back in request order, one `Result` per request, so one
/// over-long input does not fail its neighbours.
pub trait Engine: Send + Sync {
    /// What was loaded and what this engine can do.
    fn info(&self) -> &EngineInfo;

    /// Number of tokens `messages` occupy once the chat template is applied (the exact prompt
    /// that `generate` would prefill).
    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError>;

    /// Generates one completion per request. Requests are batched internally up to
    /// [`Capabilities::max_batch`]; a shared token prefix is computed once per batch.
    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>>;
}

/// Loads `config.model` with the engine `kind`.
///
/// # Errors
/// [`EngineError::NotCompiled`] when the backend's feature is off; otherwise whatever the
/// backend reports while loading (missing file, bad GGUF, no chat template, …).
pub fn load(kind: EngineKind, config: &EngineConfig) -> Result<Box<dyn Engine>, EngineError> {
    if !kind.weight_formats().contains(&config.weights) {
        let names: Vec<&str> = kind.weight_formats().iter().map(|w| w.name()).collect();
        return Err(EngineError::Config(format!(
            "the {kind} engine has no weight format `{}` (it computes with: {})",
            config.weights,
            names.join(", ")
        )));
    }
    match kind {
        #[cfg(feature = "llama")]
        EngineKind::Llama => Ok(Box::new(llama::LlamaEngine::load(config)?)),
        #[cfg(feature = "candle")]
        EngineKind::Candle => Ok(Box::new(candle::CandleEngine::load(config)?)),
        #[cfg(feature = "mlx")]
        EngineKind::Mlx => Ok(Box::new(mlx::MlxEngine::load(config)?)),
        #[cfg(feature = "remote")]
        EngineKind::Server => Ok(Box::new(remote::RemoteEngine::connect(config)?)),
        // Reachable unless every backend is compiled in.
        #[allow(unreachable_patterns)]
        other => Err(EngineError::NotCompiled { kind: other, feature: other.feature() }),
    }
}

/// The backend library and version of a compiled engine (as in [`EngineInfo::backend_version`]),
/// without loading a model; `None` when it is not compiled in.
pub fn backend_version(kind: EngineKind) -> Option<&'static str> {
    match kind {
        #[cfg(feature = "llama")]
        EngineKind::Llama => Some(llama::BINDINGS_VERSION),
        #[cfg(feature = "candle")]
        EngineKind::Candle => Some(candle::BACKEND_VERSION),
        #[cfg(feature = "mlx")]
        EngineKind::Mlx => Some(mlx::BACKEND_VERSION),
        #[cfg(feature = "remote")]
        EngineKind::Server => Some(remote::BACKEND_VERSION),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The engines compiled into this build.
pub fn compiled_engines() -> Vec<EngineKind> {
    EngineKind::ALL.into_iter().filter(|k| k.is_compiled()).collect()
}

/// What the llama-servers of `config.servers` serve (their build and model, as identified at
/// connect): part of the engine key of `server` runs, so results of different servers never
/// mix.
///
/// # Errors
/// [`EngineError::NotCompiled`] without the `remote` feature; otherwise as
/// `remote::RemoteEngine::connect`.
pub fn server_identity(config: &EngineConfig) -> Result<String, EngineError> {
    #[cfg(feature = "remote")]
    return remote::identity(config);
    #[cfg(not(feature = "remote"))]
    {
        let _ = config;
        Err(EngineError::NotCompiled { kind: EngineKind::Server, feature: EngineKind::Server.feature() })
    }
}
