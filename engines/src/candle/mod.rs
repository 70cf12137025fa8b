//! The candle backend (`candle-core` + `candle-transformers`, CPU): the same GGUF files as the
//! llama engine, tokenized from the GGUF's own metadata, constrained with llguidance.
//!
//! Like the other backends, the model lives on a worker thread fed by a channel; the request
//! path (one sequence at a time, a group's shared prefix prefilled once) is
//! [`crate::sequential`]'s, shared with the MLX engine. Variants (`candle:q8_0`, `candle:f32`,
//! …) re-quantize the weights at load ([`crate::WeightFormat`]): candle's CPU kernels differ by
//! format.

mod model;
mod worker;

use crate::sequential::Handle;
use crate::{ChatMessage, Engine, EngineConfig, EngineError, EngineInfo, Request, Response};

/// The candle version this backend is built against (pinned in Cargo.toml).
pub const BACKEND_VERSION: &str = "candle-core 0.11.1";

/// A loaded GGUF model served by candle in this process.
pub struct CandleEngine(Handle);

impl CandleEngine {
    /// Loads (and re-quantizes, for a variant) the model on a new worker thread.
    ///
    /// # Errors
    /// Missing or unreadable model file, a GGUF whose architecture, tokenizer or chat template
    /// this engine does not support, an unsupported constraint backend (GBNF is llama.cpp's),
    /// or a context longer than candle's model supports.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        Handle::start("candle-engine", config, worker::run).map(Self)
    }

    /// The prompt token ids `generate` would prefill for `messages` (chat template applied).
    ///
    /// # Errors
    /// The worker is gone, or the text cannot be tokenized.
    pub fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.0.tokenize(messages)
    }

    /// Test hook: the logits (one per vocabulary entry, before any sampling or constraint) of
    /// the first decode step for `messages`, prefilled from an empty KV cache. The logit-parity
    /// test compares them with llama.cpp's.
    ///
    /// # Errors
    /// The worker is gone, the prompt does not tokenize, or candle fails.
    pub fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        self.0.first_logits(messages)
    }
}

impl Engine for CandleEngine {
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
