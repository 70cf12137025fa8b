//! What identifies the inputs of a run: SHA-256 hex digests, the model file's fingerprint and
//! the task files' hash. One low module: the cache keys, the run log, the report and the
//! engines' own prefix cache all hash through here (the digest itself lives in
//! [`engines::digest`], the lowest crate).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use engines::digest::{hex, sha256_hex};

use crate::task::Task;

/// What the model file is: path, SHA-256 of its first MiB, and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFingerprint {
    pub path: PathBuf,
    pub sha256_first_mib: String,
    pub size: u64,
}

/// Path, SHA-256 of the first MiB, and size of a model file.
///
/// # Errors
/// The file cannot be opened or read (the error names the path).
pub fn model_fingerprint(path: &Path) -> std::io::Result<ModelFingerprint> {
    let (sha256_first_mib, size) =
        engines::digest::file_head_sha256(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(ModelFingerprint { path: path.to_path_buf(), sha256_first_mib, size })
}

/// SHA-256 over the task's files: task.toml, schema, prompt and each split, each preceded by
/// its file name.
///
/// # Errors
/// A task file cannot be read.
pub fn task_sha256(task: &Task) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut paths = vec![task.dir.join("task.toml"), task.schema_path.clone(), task.prompt_path.clone()];
    paths.extend(task.splits.values().map(|s| s.path.clone()));
    let mut h = Sha256::new();
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        h.update(name.as_bytes());
        h.update([0]);
        let bytes = fs_err::read(&path)?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex(&h.finalize()))
}
