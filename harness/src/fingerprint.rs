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

/// SHA-256 over what the task is: task.toml, schema and prompt (each preceded by its file name),
/// then each split's name and records as loaded (id, text, expected). Records, not split files,
/// because a split may be a selection over a dataset's files under the data root.
///
/// # Errors
/// A task file cannot be read.
pub fn task_sha256(task: &Task) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut chunk = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for path in [task.dir.join("task.toml"), task.schema_path.clone(), task.prompt_path.clone()] {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        chunk(name.as_bytes());
        chunk(&fs_err::read(&path)?);
    }
    for split in task.splits.values() {
        chunk(split.name.as_bytes());
        for example in &split.examples {
            chunk(example.id.as_bytes());
            chunk(example.text.as_bytes());
            chunk(example.expected.to_string().as_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}
