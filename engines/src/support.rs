//! Pieces every worker-thread backend shares: the worker thread and its job channel, checking
//! the model file before a worker starts, and turning a worker's panic payload into a message.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{EngineConfig, EngineError, EngineInfo, Request, Response};

/// Fails early with a clear error when `path` is missing, not a file, or not a GGUF.
pub(crate) fn check_model_file(path: &Path) -> Result<(), EngineError> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::ModelFile { path: path.to_path_buf(), reason: e.to_string() })?;
    if !meta.is_file() {
        return Err(EngineError::ModelFile { path: path.to_path_buf(), reason: "not a file".into() });
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    match read {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(EngineError::ModelFile { path: path.to_path_buf(), reason: "not a GGUF file (missing GGUF magic)".into() }),
        Err(e) => Err(EngineError::ModelFile { path: path.to_path_buf(), reason: e.to_string() }),
    }
}

/// The message of a panic payload (`String` or `&str`), for an error instead of a crash.
pub(crate) fn panic_message(payload: Option<Box<dyn std::any::Any + Send>>) -> String {
    match payload {
        Some(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "unknown panic".into()),
        None => "exited without a reply".into(),
    }
}

/// Where a worker reports its loaded model's info, or why it failed to load.
pub(crate) type Ready = mpsc::Sender<Result<EngineInfo, EngineError>>;

/// The thread a backend's model lives on, and the channel that feeds it jobs.
///
/// Every backend keeps its model on one dedicated thread (llama.cpp's context borrows its model
/// and is not `Send`; MLX arrays stay on the thread that made them), so the engine handle the
/// callers hold is only this channel. Load errors come back through a start-up handshake instead
/// of a hang, a panic inside the worker becomes an error, and dropping the handle closes the
/// channel and joins the thread, so the model is freed before `drop` returns.
pub(crate) struct Worker<J> {
    jobs: Option<mpsc::Sender<J>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static> Worker<J> {
    /// Checks `config`, starts thread `name` running `run(config, jobs, ready)`, and waits until
    /// `run` reports the loaded model's info on `ready` (or fails, or dies).
    pub(crate) fn start(
        name: &str,
        config: &EngineConfig,
        run: fn(&EngineConfig, &mpsc::Receiver<J>, &Ready),
    ) -> Result<(Self, EngineInfo), EngineError> {
        check_model_file(&config.model)?;
        if config.batch_size == 0 || config.n_batch == 0 {
            return Err(EngineError::Config("batch-size and n-batch must be at least 1".into()));
        }
        let (jobs_tx, jobs_rx) = mpsc::channel::<J>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let cfg = config.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&cfg, &jobs_rx, &ready_tx))
            .map_err(|e| EngineError::WorkerGone(format!("cannot spawn worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok((Self { jobs: Some(jobs_tx), thread: Some(thread) }, info)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let why = panic_message(thread.join().err());
                Err(EngineError::WorkerGone(format!("worker died while loading: {why}")))
            }
        }
    }

    /// Sends the job `make` builds around a fresh reply channel and waits for the reply; `what`
    /// names the call in the error when the worker is gone.
    pub(crate) fn call<R>(&self, what: &str, make: impl FnOnce(mpsc::Sender<R>) -> J) -> Result<R, EngineError> {
        let (reply, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .ok_or_else(|| EngineError::WorkerGone("engine is shut down".into()))?
            .send(make(reply))
            .map_err(|_| EngineError::WorkerGone("worker thread exited".into()))?;
        rx.recv().map_err(|_| EngineError::WorkerGone(format!("worker thread exited during {what}")))
    }

    /// [`Worker::call`] for a batch of requests: when the worker is gone, every request gets
    /// the error.
    pub(crate) fn generate(
        &self,
        requests: &[Request],
        make: impl FnOnce(Vec<Request>, mpsc::Sender<Vec<Result<Response, EngineError>>>) -> J,
    ) -> Vec<Result<Response, EngineError>> {
        self.call("generate", |reply| make(requests.to_vec(), reply)).unwrap_or_else(|e| {
            let why = e.to_string();
            requests.iter().map(|_| Err(EngineError::WorkerGone(why.clone()))).collect()
        })
    }
}

impl<J> Drop for Worker<J> {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; join so the model is freed before return.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
