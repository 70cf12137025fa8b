//! The llama.cpp backend (`llama-cpp-2`): a handle whose model and context live on a worker
//! thread.
//!
//! `LlamaContext` borrows `LlamaModel` and is not `Send`, so both are created and used on one
//! dedicated thread; the handle talks to it through a channel. Load errors come back through a
//! start-up handshake instead of a hang, and a panic inside the worker becomes an error.

mod constraint;
mod logits;
mod worker;

use std::sync::mpsc;

use crate::support::Worker;
use crate::{ChatMessage, Engine, EngineConfig, EngineError, EngineInfo, Request, Response};

/// Version of the llama.cpp bindings this backend is built against (pinned in Cargo.toml).
pub const BINDINGS_VERSION: &str = "llama-cpp-2 0.1.160";

enum Job {
    Generate {
        requests: Vec<Request>,
        reply: mpsc::Sender<Vec<Result<Response, EngineError>>>,
    },
    CountTokens {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<usize, EngineError>>,
    },
    /// Logits after prefilling `messages` (the test hook behind [`LlamaEngine::first_logits`]).
    Logits {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<Vec<f32>, EngineError>>,
    },
}

/// A loaded GGUF model served by llama.cpp in this process.
pub struct LlamaEngine {
    info: EngineInfo,
    worker: Worker<Job>,
}

impl LlamaEngine {
    /// Loads the model and opens a context on a new worker thread.
    ///
    /// # Errors
    /// Missing or unreadable model file, a file llama.cpp cannot load, no usable chat template,
    /// a context that cannot be allocated, or a constraint backend that cannot be built.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        let (worker, info) = Worker::start("llama-engine", config, worker::run)?;
        Ok(Self { info, worker })
    }

    /// Test hook: the logits (one per vocabulary entry, before sampling or constraints) of the
    /// first decode step for `messages`, prefilled from an empty KV cache. The MLX engine's
    /// logit-parity test compares its forward pass with these.
    ///
    /// # Errors
    /// The worker is gone, the prompt does not tokenize, or llama.cpp fails to decode.
    pub fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        self.worker.call("first_logits", |reply| Job::Logits { messages: messages.to_vec(), reply })?
    }
}

impl Engine for LlamaEngine {
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
