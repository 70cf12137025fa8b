//! The candle worker thread: loads the model and tokenizer, builds the llguidance tables once,
//! and serves jobs until the handle is dropped (the request path is [`crate::sequential`]'s).
//!
//! candle's quantized llama keeps one KV cache per model value and decodes one sequence at a
//! time (a batch would need per-sequence positions and padding masks it does not have), so
//! requests run one after another. What it does allow is cloning the model, KV cache included
//! (tensors are reference-counted): that clone is a sequence's state, so a group's common
//! prefix is prefilled once and each request continues from a clone of it.

use std::sync::mpsc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use rayon::ThreadPool;

use super::model::{self, LLAMA_MAX_POSITIONS};
use super::BACKEND_VERSION;
use crate::sequential::{self, load_err, ms, Job, SeqModel, Sequential};
use crate::{EngineConfig, EngineError, EngineInfo, EngineKind};

const KIND: EngineKind = EngineKind::Candle;

/// Entry point of the worker thread.
pub(super) fn run(cfg: &EngineConfig, jobs: &mpsc::Receiver<Job>, ready: &mpsc::Sender<Result<EngineInfo, EngineError>>) {
    let threads = cfg.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    // candle's CPU kernels run on rayon: a pool of `threads` makes `--threads` hold for them.
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("candle-{i}")).build() {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Config(format!("cannot start {threads} threads: {e}"))));
            return;
        }
    };
    sequential::serve(KIND, cfg, || load(cfg, pool, threads), jobs, ready);
}

/// candle's llama with the pool its kernels run on.
struct Candle {
    weights: ModelWeights,
    pool: ThreadPool,
}

impl SeqModel for Candle {
    /// The model with its KV cache, and the tokens that cache holds.
    type State = (ModelWeights, usize);

    fn empty(&self) -> Self::State {
        let mut weights = self.weights.clone();
        weights.clear_kv_cache();
        (weights, 0)
    }

    fn len(state: &Self::State) -> usize {
        state.1
    }

    fn forward(&self, state: &mut Self::State, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let err = |e: candle_core::Error| EngineError::Decode(format!("candle: {e}"));
        let (weights, pos) = state;
        let logits = self.pool.install(|| {
            let input = Tensor::new(tokens, &Device::Cpu).and_then(|t| t.unsqueeze(0))?;
            weights.forward(&input, *pos)?.squeeze(0)?.to_vec1::<f32>()
        });
        *pos += tokens.len();
        logits.map_err(err)
    }
}

fn load(cfg: &EngineConfig, pool: ThreadPool, threads: usize) -> Result<(Sequential<Candle>, EngineInfo), EngineError> {
    let t0 = Instant::now();
    let (content, _) = crate::gguf_header::read_header(&cfg.model).map_err(|e| load_err(KIND, cfg, e))?;
    let arch = crate::gguf_header::check_architecture(&content, "candle").map_err(|e| load_err(KIND, cfg, e))?;
    let (tokenizer, compiler) = sequential::tokenizer_and_compiler(KIND, cfg, &content, &arch)?;
    let meta_u = |k: &str| content.metadata.get(k).and_then(|v| v.to_u32().ok()).map(|v| v as usize);
    let train_context = meta_u(&format!("{arch}.context_length")).unwrap_or(LLAMA_MAX_POSITIONS);
    let n_ctx = match cfg.n_ctx {
        Some(n) if n as usize > LLAMA_MAX_POSITIONS => {
            return Err(EngineError::Config(format!(
                "context of {n} tokens: candle's llama model precomputes rotary tables for {LLAMA_MAX_POSITIONS} positions"
            )))
        }
        Some(n) => n as usize,
        None => train_context.min(16_384).min(LLAMA_MAX_POSITIONS),
    };
    if n_ctx < 16 {
        return Err(EngineError::Config(format!("context of {n_ctx} tokens is too small")));
    }
    // Re-quantizing a variant runs candle's kernels: in the pool too.
    let loaded = pool.install(|| model::load(&cfg.model, cfg.weights)).map_err(|e| load_err(KIND, cfg, e))?;
    let meta_s = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
    let name = meta_s("general.name").unwrap_or_else(|| "unnamed".into());
    let n_layer = meta_u(&format!("{arch}.block_count")).unwrap_or(0) as u64;
    let n_head = meta_u(&format!("{arch}.attention.head_count")).unwrap_or(1).max(1) as u64;
    let n_head_kv = meta_u(&format!("{arch}.attention.head_count_kv")).unwrap_or(n_head as usize) as u64;
    let n_embd = meta_u(&format!("{arch}.embedding_length")).unwrap_or(0) as u64;
    // f32 K and V for every layer, one sequence (plus a shared prefix's while it is reused).
    let kv_cache_bytes = n_layer * n_ctx as u64 * n_head_kv * (n_embd / n_head) * 2 * 4;
    let info = EngineInfo {
        kind: KIND,
        weights: cfg.weights,
        backend_version: BACKEND_VERSION.into(),
        model_path: cfg.model.clone(),
        model_desc: format!("{name} ({arch}, {:.0}M params, computed as {})", loaded.n_params as f64 / 1e6, loaded.compute_dtype),
        model_bytes: std::fs::metadata(&cfg.model).map_or(0, |m| m.len()),
        n_params: loaded.n_params,
        vocab_size: tokenizer.vocab_size(),
        chat_template: tokenizer.format_name.clone(),
        threads,
        constraint_backend: cfg.constraint_backend,
        capabilities: sequential::capabilities(n_ctx),
        kv_cache_bytes,
        train_context,
        load_ms: ms(t0),
    };
    let model = Candle { weights: loaded.weights, pool };
    Ok((Sequential::new(model, tokenizer, compiler, n_ctx, cfg), info))
}
