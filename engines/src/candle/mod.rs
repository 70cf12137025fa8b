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
use std::thread::JoinHandle;

use crate::support::{check_model_file, panic_message};
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
}

/// A loaded GGUF model served by candle in this process.
pub struct CandleEngine {
    info: EngineInfo,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl CandleEngine {
    /// Loads (and re-quantizes, for a variant) the model on a new worker thread.
    ///
    /// # Errors
    /// Missing or unreadable model file, a GGUF whose architecture, tokenizer or chat template
    /// this engine does not support, an unsupported constraint backend (GBNF is llama.cpp's),
    /// or a context longer than candle's model supports.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        check_model_file(&config.model)?;
        if config.batch_size == 0 || config.n_batch == 0 {
            return Err(EngineError::Config("batch-size and n-batch must be at least 1".into()));
        }
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<EngineInfo, EngineError>>();
        let cfg = config.clone();
        let worker = std::thread::Builder::new()
            .name("candle-engine".into())
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
}

impl Engine for CandleEngine {
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

impl Drop for CandleEngine {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
