//! The candle backend (`candle-core` + `candle-transformers`, CPU): the same GGUF files as the
//! llama engine, tokenized from the GGUF's own metadata, constrained with llguidance.
//!
//! Like the llama backend, the model lives on a worker thread fed by a channel, load errors
//! come back through a start-up handshake, and a panic inside the worker becomes an error.
//! Variants (`candle:q8_0`, `candle:f32`, …) re-quantize the weights at load
//! ([`crate::WeightFormat`]): candle's CPU kernels differ by format.

mod model;
mod worker;

use std::sync::mpsc;

use crate::support::Worker;
use crate::{ChatMessage, Engine, EngineConfig, EngineError, EngineInfo, Request, Response};

/// The candle version this backend is built against (pinned in Cargo.toml).
pub const BACKEND_VERSION: &str = "candle-core 0.11.1";

enum Job {
    Generate {
        requests: Vec<Request>,
        reply: mpsc::Sender<Vec<Result<Response, EngineError>>>,
    },
    CountTokens {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<usize, EngineError>>,
    },
    /// Prompt token ids for `messages` (the parity tests compare them with llama.cpp's).
    Tokenize {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<Vec<u32>, EngineError>>,
    },
    /// Logits after prefilling `messages` (the test hook behind [`CandleEngine::first_logits`]).
    Logits {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<Vec<f32>, EngineError>>,
    },
}

/// A loaded GGUF model served by candle in this process.
pub struct CandleEngine {
    info: EngineInfo,
    worker: Worker<Job>,
}

impl CandleEngine {
    /// Loads (and re-quantizes, for a variant) the model on a new worker thread.
    ///
    /// # Errors
    /// Missing or unreadable model file, a GGUF whose architecture, tokenizer or chat template
    /// this engine does not support, an unsupported constraint backend (GBNF is llama.cpp's),
    /// or a context longer than candle's model supports.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        let (worker, info) = Worker::start("candle-engine", config, worker::run)?;
        Ok(Self { info, worker })
    }

    /// The prompt token ids `generate` would prefill for `messages` (chat template applied).
    ///
    /// # Errors
    /// The worker is gone, or the text cannot be tokenized.
    pub fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.worker.call("tokenize", |reply| Job::Tokenize { messages: messages.to_vec(), reply })?
    }

    /// Test hook: the logits (one per vocabulary entry, before any sampling or constraint) of
    /// the first decode step for `messages`, prefilled from an empty KV cache. The logit-parity
    /// test compares them with llama.cpp's.
    ///
    /// # Errors
    /// The worker is gone, the prompt does not tokenize, or candle fails.
    pub fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        self.worker.call("first_logits", |reply| Job::Logits { messages: messages.to_vec(), reply })?
    }
}

impl Engine for CandleEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        self.worker.call("count_tokens", |reply| Job::CountTokens { messages: messages.to_vec(), reply })?
    }

    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        self.worker.generate(requests, |requests, reply| Job::Generate { requests, reply })
    }
}
