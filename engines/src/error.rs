//! The engines' error type: one enum, every variant says what to do next.

use std::path::PathBuf;

use crate::EngineKind;

/// Errors from loading a model or generating with it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The backend's cargo feature is off in this build.
    #[error("engine `{kind}` is not compiled into this build; rebuild with `--features {feature}`")]
    NotCompiled { kind: EngineKind, feature: &'static str },

    /// The model file does not exist or cannot be read.
    #[error("model file {path}: {reason}")]
    ModelFile { path: PathBuf, reason: String },

    /// The backend failed to load the model or open a context.
    #[error("loading {path} with the {kind} engine failed: {reason}")]
    Load { kind: EngineKind, path: PathBuf, reason: String },

    /// The GGUF has no chat template and none was chosen.
    #[error(
        "{path} has no chat template; choose a built-in one with `--chat-template NAME` \
         (e.g. chatml, gemma, llama3, phi3, mistral-v7)"
    )]
    NoChatTemplate { path: PathBuf },

    /// The chat template could not be applied to the messages.
    #[error("applying chat template `{template}` failed: {reason}")]
    ChatTemplate { template: String, reason: String },

    /// The prompt plus the output budget do not fit the context the engine was opened with.
    #[error(
        "input too long: {tokens} prompt tokens, at most {max} fit (context {context} minus \
         {max_tokens} output tokens)"
    )]
    InputTooLong { tokens: usize, max: usize, context: usize, max_tokens: usize },

    /// The JSON Schema could not be compiled into a decoding constraint.
    #[error("JSON Schema cannot be used as a {backend} constraint: {reason}")]
    Constraint { backend: crate::ConstraintBackend, reason: String },

    /// The backend failed while decoding.
    #[error("decoding failed: {0}")]
    Decode(String),

    /// The worker thread is gone (it panicked or was shut down).
    #[error("engine worker stopped: {0}")]
    WorkerGone(String),

    /// A configuration value is out of range.
    #[error("invalid engine configuration: {0}")]
    Config(String),

    /// A llama-server answered with an error, garbage or not at all (after the retries).
    #[error("llama-server at {url}: {reason}")]
    Server { url: String, reason: String },

    /// A llama-server is not what the run is configured for (another model, another build, a
    /// different context): its results must not mix with the others'.
    #[error("{0}")]
    ServerMismatch(String),

    /// Every llama-server of the fleet is down; names each and why.
    #[error("no llama-server of the fleet is usable: {0}")]
    NoServer(String),
}

impl EngineError {
    /// Whether the user's set-up is at fault (a bad value, a model file, a fleet serving
    /// something else or not there at all) rather than the machine while running.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            EngineError::NotCompiled { .. }
                | EngineError::ModelFile { .. }
                | EngineError::NoChatTemplate { .. }
                | EngineError::Config(_)
                | EngineError::ServerMismatch(_)
                | EngineError::NoServer(_)
        )
    }
}
