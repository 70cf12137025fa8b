//! The llama.cpp backend (`llama-cpp-2`): a handle whose model and context live on a worker
//! thread.
//!
//! `LlamaContext` borrows `LlamaModel` and is not `Send`, so both are created and used on one
//! dedicated thread; the handle talks to it through a channel. Load errors come back through a
//! start-up handshake instead of a hang, and a panic inside the worker becomes an error.

mod constraint;
mod worker;

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

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

fn check_model_file(path: &Path) -> Result<(), EngineError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| EngineError::ModelFile { path: path.to_path_buf(), reason: e.to_string() })?;
    if !meta.is_file() {
        return Err(EngineError::ModelFile { path: path.to_path_buf(), reason: "not a file".into() });
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    match read {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(EngineError::ModelFile {
            path: path.to_path_buf(),
            reason: "not a GGUF file (missing GGUF magic)".into(),
        }),
        Err(e) => Err(EngineError::ModelFile { path: path.to_path_buf(), reason: e.to_string() }),
    }
}

fn panic_message(payload: Option<Box<dyn std::any::Any + Send>>) -> String {
    match payload {
        Some(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "unknown panic".into()),
        None => "exited without a reply".into(),
    }
}
