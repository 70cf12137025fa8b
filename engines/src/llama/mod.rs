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
use std::thread::JoinHandle;

use crate::support::{check_model_file, panic_message};
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
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl LlamaEngine {
    /// Loads the model and opens a context on a new worker thread.
    ///
    /// # Errors
    /// Missing or unreadable model file, a file llama.cpp cannot load, no usable chat template,
    /// a context that cannot be allocated, or a constraint backend that cannot be built.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        check_model_file(&config.model)?;
        if config.batch_size == 0 || config.n_batch == 0 {
            return Err(EngineError::Config("batch-size and n-batch must be at least 1".into()));
        }
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<EngineInfo, EngineError>>();
        let cfg = config.clone();
        let worker = std::thread::Builder::new()
            .name("llama-engine".into())
            .spawn(move || worker::run(&cfg, &jobs_rx, &ready_tx))
            .map_err(|e| EngineError::WorkerGone(format!("cannot spawn worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok(Self { info, jobs: Some(jobs_tx), worker: Some(worker) }),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => {
                let why = panic_message(worker.join().err());
                Err(EngineError::WorkerGone(format!("worker died while loading: {why}")))
            }
        }
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        self.jobs
            .as_ref()
            .ok_or_else(|| EngineError::WorkerGone("engine is shut down".into()))?
            .send(job)
            .map_err(|_| EngineError::WorkerGone("worker thread exited".into()))
    }

    /// Test hook: the logits (one per vocabulary entry, before sampling or constraints) of the
    /// first decode step for `messages`, prefilled from an empty KV cache. The MLX engine's
    /// logit-parity test compares its forward pass with these.
    ///
    /// # Errors
    /// The worker is gone, the prompt does not tokenize, or llama.cpp fails to decode.
    pub fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        let (reply, rx) = mpsc::channel();
        self.send(Job::Logits { messages: messages.to_vec(), reply })?;
        rx.recv().map_err(|_| EngineError::WorkerGone("no reply to first_logits".into()))?
    }
}

impl Engine for LlamaEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        let (reply, rx) = mpsc::channel();
        self.send(Job::CountTokens { messages: messages.to_vec(), reply })?;
        rx.recv().map_err(|_| EngineError::WorkerGone("no reply to count_tokens".into()))?
    }

    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        let (reply, rx) = mpsc::channel();
        let gone = |why: &str| requests.iter().map(|_| Err(EngineError::WorkerGone(why.to_string()))).collect();
        if let Err(e) = self.send(Job::Generate { requests: requests.to_vec(), reply }) {
            return gone(&e.to_string());
        }
        rx.recv().unwrap_or_else(|_| gone("worker thread exited during generate"))
    }
}

impl Drop for LlamaEngine {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; join so the model is freed before return.
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
