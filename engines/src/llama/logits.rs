//! Test hook: the raw logits of the first decode step for a prompt, so other engines' forward
//! passes can be compared with llama.cpp's (`engines/tests/mlx.rs`). Not used by `generate`.

use llama_cpp_2::llama_batch::LlamaBatch;

use super::worker::Worker;
use crate::{ChatMessage, EngineError};

impl Worker<'_> {
    /// Clears the KV cache, prefills `messages` (chat template applied) on sequence 0 in
    /// `n_batch` chunks, and returns the logits after the last prompt token.
    pub(super) fn first_logits(&mut self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        let tokens = self.tokenize(messages)?;
        let n_batch = self.n_batch.max(1);
        self.ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(n_batch, 1);
        let mut pos = 0;
        let mut last_idx = 0;
        for chunk in tokens.chunks(n_batch) {
            batch.clear();
            for (i, &tok) in chunk.iter().enumerate() {
                let last = pos + i + 1 == tokens.len();
                batch.add(tok, (pos + i) as i32, &[0], last).map_err(|e| EngineError::Decode(format!("batch: {e}")))?;
                if last {
                    last_idx = i as i32;
                }
            }
            self.ctx.decode(&mut batch).map_err(|e| EngineError::Decode(e.to_string()))?;
            pos += chunk.len();
        }
        if tokens.is_empty() {
            return Err(EngineError::Decode("empty prompt".into()));
        }
        let logits = self.ctx.get_logits_ith(last_idx).to_vec();
        self.ctx.clear_kv_cache();
        Ok(logits)
    }
}
