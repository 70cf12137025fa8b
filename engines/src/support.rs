//! Pieces every worker-thread backend shares: checking the model file before a worker starts,
//! and turning a worker's panic payload into a message.

use std::path::Path;

use crate::EngineError;

/// Fails early with a clear error when `path` is missing, not a file, or not a GGUF.
pub(crate) fn check_model_file(path: &Path) -> Result<(), EngineError> {
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
