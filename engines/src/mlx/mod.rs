//! The MLX backend (`mlx-rs`): Metal on macOS where a GPU is available, CPU otherwise (on Linux
//! `x86_64` the CPU build of the `mlx-cpu` wheel, see `scripts/setup.sh mlx`). The same GGUF files
//! as the llama engine, with the llama forward pass written here from MLX's fast kernels, the
//! tokenizer and llguidance constraint shared with the candle engine.
//!
//! Like the other backends, the model lives on a worker thread fed by a channel (MLX arrays and
//! streams stay on the thread that made them), load errors come back through a start-up
//! handshake, and a panic inside the worker becomes an error.

mod model;
mod worker;

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::support::{check_model_file, panic_message};
use crate::{ChatMessage, Engine, EngineConfig, EngineError, EngineInfo, Request, Response};

/// The mlx-rs version this backend is built against (pinned in Cargo.toml), and its MLX.
pub const BACKEND_VERSION: &str = "mlx-rs 0.33.0 (mlx-c 0.7.0, MLX 0.32.2)";

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
    /// Logits after prefilling `messages` (the test hook behind [`MlxEngine::first_logits`]).
    Logits {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<Vec<f32>, EngineError>>,
    },
}

/// A loaded GGUF model served by MLX in this process.
pub struct MlxEngine {
    info: EngineInfo,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl MlxEngine {
    /// Loads the model on a new worker thread.
    ///
    /// # Errors
    /// Missing or unreadable model file, a GGUF whose architecture, tensor types, tokenizer or
    /// chat template this engine does not support, a weight-format variant (MLX computes the
    /// GGUF's own quantization), or an unsupported constraint backend (GBNF is llama.cpp's).
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        check_model_file(&config.model)?;
        if config.batch_size == 0 || config.n_batch == 0 {
            return Err(EngineError::Config("batch-size and n-batch must be at least 1".into()));
        }
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<EngineInfo, EngineError>>();
        let cfg = config.clone();
        let worker = std::thread::Builder::new()
            .name("mlx-engine".into())
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

    /// The prompt token ids `generate` would prefill for `messages` (chat template applied).
    ///
    /// # Errors
    /// The worker is gone, or the text cannot be tokenized.
    pub fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        let (reply, rx) = mpsc::channel();
        self.send(Job::Tokenize { messages: messages.to_vec(), reply })?;
        rx.recv().map_err(|_| EngineError::WorkerGone("no reply to tokenize".into()))?
    }

    /// Test hook: the logits (one per vocabulary entry, before any sampling or constraint) that
    /// the first decode step of `generate` would sample from for `messages`, computed from an
    /// empty KV cache. The logit-parity test compares them with llama.cpp's.
    ///
    /// # Errors
    /// The worker is gone, the prompt does not tokenize, or MLX fails.
    pub fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        let (reply, rx) = mpsc::channel();
        self.send(Job::Logits { messages: messages.to_vec(), reply })?;
        rx.recv().map_err(|_| EngineError::WorkerGone("no reply to first_logits".into()))?
    }
}

impl Engine for MlxEngine {
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

impl Drop for MlxEngine {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
