//! A test double: an [`Engine`] whose outputs come from a script (a closure over the request)
//! instead of a model. Always compiled, behind no feature, so the harness can unit-test its
//! loop logic (evaluation, gates, racing, proposers) in milliseconds. It never stands in for a
//! real engine in a real-model test.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{
    Capabilities, ChatMessage, ConstraintBackend, Engine, EngineError, EngineInfo, EngineKind, Request, Response, StopReason,
    Timings, TokenCounts, WeightFormat,
};

/// What a script returns for one request: the output text, or an engine error.
pub type ScriptResult = Result<String, EngineError>;

type Script = dyn Fn(&Request) -> ScriptResult + Send + Sync;

/// An engine that answers each request with `script(request)`. Token counts are whitespace
/// words; timings are zero. Clones share the script and the counters.
#[derive(Clone)]
pub struct ScriptedEngine {
    info: EngineInfo,
    script: Arc<Script>,
    requests: Arc<AtomicUsize>,
    batches: Arc<AtomicU64>,
}

impl std::fmt::Debug for ScriptedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedEngine").field("requests", &self.requests()).finish_non_exhaustive()
    }
}

impl ScriptedEngine {
    /// A scripted engine taking batches of up to 4 requests.
    pub fn new(script: impl Fn(&Request) -> ScriptResult + Send + Sync + 'static) -> Self {
        let info = EngineInfo {
            kind: EngineKind::Llama,
            weights: WeightFormat::Gguf,
            backend_version: "scripted test double".into(),
            model_path: "scripted".into(),
            model_desc: "scripted test double (no model)".into(),
            model_bytes: 0,
            n_params: 0,
            vocab_size: 0,
            chat_template: "none".into(),
            threads: 1,
            constraint_backend: ConstraintBackend::None,
            capabilities: Capabilities {
                max_context: 1 << 20,
                max_batch: 4,
                shared_prefix: false,
                prefix_cache: false,
                constraint_backends: vec![ConstraintBackend::None],
            },
            kv_cache_bytes: 0,
            train_context: 1 << 20,
            load_ms: 0.0,
        };
        Self { info, script: Arc::new(script), requests: Arc::default(), batches: Arc::default() }
    }

    /// The same engine with another batch size.
    #[must_use]
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.info.capabilities.max_batch = n.max(1);
        self
    }

    /// The same engine with another context (tokens per sequence).
    #[must_use]
    pub fn with_max_context(mut self, n: usize) -> Self {
        self.info.capabilities.max_context = n;
        self
    }

    /// Requests answered so far (by this engine and its clones).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// `generate` calls so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::SeqCst)
    }
}

fn words(messages: &[ChatMessage]) -> usize {
    messages.iter().map(|m| m.content.split_whitespace().count()).sum()
}

impl Engine for ScriptedEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        Ok(words(messages))
    }

    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        let batch_id = self.batches.fetch_add(1, Ordering::SeqCst);
        requests
            .iter()
            .map(|req| {
                self.requests.fetch_add(1, Ordering::SeqCst);
                let text = (self.script)(req)?;
                let output = text.split_whitespace().count();
                Ok(Response {
                    id: req.id.clone(),
                    text,
                    stop: StopReason::ConstraintComplete,
                    tokens: TokenCounts { input: words(&req.messages), output, ..TokenCounts::default() },
                    timings: Timings::default(),
                    peak_rss_bytes: 0,
                    batch_size: requests.len(),
                    batch_id,
                    prefix_cache: None,
                    engine: None,
                    logprobs: Vec::new(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_script_in_request_order() {
        let engine = ScriptedEngine::new(|r| {
            if r.id == "bad" {
                Err(EngineError::Decode("scripted failure".into()))
            } else {
                Ok(format!("{{\"id\": \"{}\"}}", r.id))
            }
        });
        let reqs = vec![
            Request::new("a", vec![ChatMessage::user("one two")], 8),
            Request::new("bad", vec![], 8),
            Request::new("b", vec![], 8),
        ];
        let out = engine.generate(&reqs);
        assert_eq!(out[0].as_ref().unwrap().text, "{\"id\": \"a\"}");
        assert_eq!(out[0].as_ref().unwrap().tokens.input, 2);
        assert!(matches!(out[1], Err(EngineError::Decode(_))));
        assert_eq!(out[2].as_ref().unwrap().id, "b");
        assert_eq!((engine.requests(), engine.batches()), (3, 1));
        assert_eq!(engine.with_max_batch(0).info().capabilities.max_batch, 1);
    }
}
