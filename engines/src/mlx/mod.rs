//! The MLX backend (`mlx-rs`): Metal on macOS where a GPU is available, CPU otherwise (on Linux
//! `x86_64` the CPU build of the `mlx-cpu` wheel, see `scripts/setup.sh mlx`). The same GGUF files
//! as the llama engine, with the llama forward pass written here from MLX's fast kernels, the
//! tokenizer and llguidance constraint shared with the candle engine.
//!
//! Like the other backends, the model lives on a worker thread fed by a channel (MLX arrays and
//! streams stay on the thread that made them); the request path is [`crate::sequential`]'s,
//! shared with the candle engine.

mod model;
mod worker;

use crate::sequential::Handle;
use crate::{ChatMessage, Engine, EngineConfig, EngineError, EngineInfo, Request, Response};

/// The mlx-rs version this backend is built against (pinned in Cargo.toml), and its MLX.
pub const BACKEND_VERSION: &str = "mlx-rs 0.33.0 (mlx-c 0.7.0, MLX 0.32.2)";

/// A loaded GGUF model served by MLX in this process.
pub struct MlxEngine(Handle);

impl MlxEngine {
    /// Loads the model on a new worker thread.
    ///
    /// # Errors
    /// Missing or unreadable model file, a GGUF whose architecture, tensor types, tokenizer or
    /// chat template this engine does not support, a weight-format variant (MLX computes the
    /// GGUF's own quantization), or an unsupported constraint backend (GBNF is llama.cpp's).
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        Handle::start("mlx-engine", config, worker::run).map(Self)
    }

    /// The prompt token ids `generate` would prefill for `messages` (chat template applied).
    ///
    /// # Errors
    /// The worker is gone, or the text cannot be tokenized.
    pub fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.0.tokenize(messages)
    }

    /// Test hook: the logits (one per vocabulary entry, before any sampling or constraint) that
    /// the first decode step of `generate` would sample from for `messages`, computed from an
    /// empty KV cache. The logit-parity test compares them with llama.cpp's.
    ///
    /// # Errors
    /// The worker is gone, the prompt does not tokenize, or MLX fails.
    pub fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        self.0.first_logits(messages)
    }
}

impl Engine for MlxEngine {
    fn info(&self) -> &EngineInfo {
        self.0.info()
    }

    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        self.0.count_tokens(messages)
    }

    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        self.0.generate(requests)
    }
}
